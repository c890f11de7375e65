"""`python -m mobilediff.fixtures DIR`: the real bundles, goldens and reference images the apps' tests run on.

For each embedded model the apps are checked with (the default model, its progressive 4-step student and its LCM
student) this exports an fp32 bundle (ONNX for all three; ExecuTorch too for the progressive student: one model
exercises the ExecuTorch backend, whose sampling code is shared with ONNX Runtime's, at a fifth of the export time
of all three; ``--all-runtimes``: both runtimes for every model, as benchmarks/app_parity.py uses), records its goldens (mobilediff.goldens) and generates Python's reference images with
``generate --bundle`` semantics (the bundle's default plan) at seeds 0 and 1 on each runtime of the bundle. Idempotent: a model whose entry in ``DIR/index.json`` names the same model weights and mobilediff
fixture version is skipped, so a second run takes a second.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mobilediff.targets import HOST_RUNTIMES

FIXTURE_VERSION = 2  # bump when what is written here changes
RUNTIMES = {"default": ("onnx",), "default:progressive-4": ("onnx", "executorch"), "default:lcm": ("onnx",)}
MODELS = tuple(RUNTIMES)
SEEDS = (0, 1)
PROMPT = "a small blue triangle at the top left and a big yellow square at the bottom right on a black background"


def _slug(model: str) -> str:
    return model.split(":", 1)[1] if ":" in model else model


ALL_RUNTIMES = HOST_RUNTIMES


def build_model(model: str, folder: Path, say, runtimes: tuple[str, ...] | None = None) -> dict:
    """Bundle, goldens and reference images of one model in ``folder``; returns its index entry."""
    import shutil

    from PIL import Image

    from mobilediff.data import to_uint8
    from mobilediff.exporter import export_bundle
    from mobilediff.goldens import write_goldens
    from mobilediff.io import atomic_write_json, save_tensors
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.runtimes import BundleRunner

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    runtimes = runtimes or RUNTIMES[model]
    say(f"{model}: export {' + '.join(runtimes)}")
    pipe = load_pipeline(model)
    bundle = export_bundle(pipe, ",".join(runtimes), folder / "bundle", source=model, model_dir=resolve_model(model))
    say(f"{model}: goldens")
    write_goldens(bundle, folder / "goldens")
    refs = []
    for runtime in runtimes:
        runner = BundleRunner(bundle, runtime)
        for seed in SEEDS:
            t0 = time.perf_counter()
            image = runner.generate(PROMPT, seed)
            ms = (time.perf_counter() - t0) * 1000
            stem = folder / "reference" / f"{runtime}_seed{seed}"
            stem.parent.mkdir(exist_ok=True)
            Image.fromarray(to_uint8(image)[0]).save(stem.with_suffix(".png"))
            save_tensors({"image": image[0].permute(1, 2, 0).contiguous()}, stem.with_suffix(".safetensors"))
            plan = runner.manifest.plan
            row = {"runtime": runtime, "seed": seed, "prompt": PROMPT, "sampler": plan.sampler, "steps": plan.steps,
                   "guidance": plan.guidance, "ms": round(ms, 2), "png": str(stem.with_suffix(".png").relative_to(folder)),
                   "raw": str(stem.with_suffix(".safetensors").relative_to(folder))}
            atomic_write_json(stem.with_suffix(".json"), row)
            refs.append(row)
    return {"model": model, "weights_sha256": _weights_sha(model), "runtimes": list(runtimes), "bundle": "bundle",
            "goldens": "goldens", "references": refs}


def _weights_sha(model: str) -> str:
    from mobilediff.io import tree_sha256
    from mobilediff.loading import resolve_model

    return tree_sha256(resolve_model(model))


def _say_stderr(message: str) -> None:
    print(f"fixtures {message}", file=sys.stderr, flush=True)


def _worker_init(threads: int) -> None:
    import torch

    from mobilediff.quiet import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(threads)


def build(out: Path, models=MODELS, say=print, all_runtimes: bool = False, jobs: int = 1) -> Path:
    """Build (or reuse) every model's fixtures under ``out``; returns ``out/index.json``. A model's fixtures are
    reused when their weights and runtimes cover what is asked. ``jobs`` > 1 builds that many models at once, each in
    its own process with its share of the CPU threads (exporting is mostly single-threaded Python)."""
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from mobilediff.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    if index.get("fixture_version") != FIXTURE_VERSION:
        index = {"fixture_version": FIXTURE_VERSION, "models": {}}
    todo = []
    for model in models:
        name = _slug(model)
        runtimes = ALL_RUNTIMES if all_runtimes else RUNTIMES[model]
        entry = index["models"].get(name)
        if (entry is not None and entry.get("weights_sha256") == _weights_sha(model)
                and set(runtimes) <= set(entry.get("runtimes", ())) and (out / name / "bundle").is_dir()):
            say(f"{model}: up to date")
            continue
        todo.append((model, runtimes))
    jobs = max(1, min(jobs, len(todo)))
    if jobs == 1:
        for model, runtimes in todo:
            index["models"][_slug(model)] = build_model(model, out / _slug(model), say, runtimes)
            atomic_write_json(index_path, index)  # after each model: an interrupted run keeps what it finished
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            running = {pool.submit(build_model, model, out / _slug(model), _say_stderr, runtimes): model
                       for model, runtimes in todo}
            for done in as_completed(running):
                index["models"][_slug(running[done])] = done.result()
                atomic_write_json(index_path, index)
    atomic_write_json(index_path, index)
    return index_path


def main(argv: list[str] | None = None) -> int:
    from mobilediff.errors import MobilediffError
    from mobilediff.quiet import quiet_libraries

    parser = argparse.ArgumentParser(prog="python -m mobilediff.fixtures", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="fixtures folder (created; reused when up to date)")
    parser.add_argument("--model", action="append", choices=MODELS, help="only these models (repeatable)")
    parser.add_argument("--all-runtimes", action="store_true",
                        help="ONNX and ExecuTorch for every model (default: ExecuTorch for the progressive student only)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="models built at once, each in its own process (default 1; CI uses the cores it has)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    quiet_libraries()
    try:
        build(args.out, tuple(args.model or MODELS), say=_say_stderr, all_runtimes=args.all_runtimes, jobs=args.jobs)
    except MobilediffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the fixtures folder: a file in its place, not writable, a full disk
        print(f"error: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"fixtures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
