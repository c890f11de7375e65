"""`python -m mobilediff.fixtures DIR`: the real bundles, goldens and reference images the apps' tests run on.

For each fixture (the default model, its progressive 4-step student, its LCM student, the LCM student exported
at a non-square 48 x 80: every engine's geometry with height != width, the emoji model's LCM student: a model
with its own VAE and text encoder, trained on real images, a tiny inpainting UNet, and the diffusion transformer
``default:dit-l``: a format-2 bundle with the caption mask) this exports an fp32 bundle (ONNX for all;
ExecuTorch too for the progressive student and the transformer: they exercise the ExecuTorch backend, whose sampling
code is shared with ONNX Runtime's, at a fraction of the export time of all of them; ``--all-runtimes``: both runtimes for
every fixture, as benchmarks/app_parity.py uses), records its goldens (mobilediff.goldens) and generates Python's
reference images with ``generate --bundle`` semantics (the bundle's default plan) at seeds 0 and 1 on each runtime
of the bundle. Idempotent: a fixture whose entry in ``DIR/index.json`` names the same model weights and mobilediff
fixture version is skipped, so a second run takes a second.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mobilediff.targets import HOST_RUNTIMES

FIXTURE_VERSION = 10  # bump when what is written here changes


@dataclass(frozen=True)
class ImageRef:
    """A reference image made from an image: image-to-image (no mask) or inpainting, from the fixture's init image
    (a rendered shapes scene) and mask (its lower half), at ``seed``."""

    mode: str  # "img2img" | "inpaint"
    sampler: str
    steps: int
    strength: float
    seed: int


@dataclass(frozen=True)
class AdapterRef:
    """A reference image made with the bundle's run-time adapters switched on: ``mix`` ((name, scale), ...) in
    order, at ``seed``, the bundle's default plan."""

    mix: tuple
    seed: int


RANDOM_ADAPTER = "fixture-random"  # a seeded random adapter on the UNet and text encoder (mobilediff.lora.random_adapter)


@dataclass(frozen=True)
class Fixture:
    model: str  # a named model
    runtimes: tuple[str, ...]  # the host runtimes its bundle is exported for (--all-runtimes: every one)
    height: int | None = None  # the export's image size (None: the model's own)
    width: int | None = None
    prompt: str = ""  # the prompt of its reference images ("": PROMPT, the shapes domain's)
    images: tuple[ImageRef, ...] = ()  # image-to-image / inpainting references (the bundle exported --image-modes)
    adapters: tuple[str, ...] = ()  # run-time adapters (export --runtime-lora): default:NAME or RANDOM_ADAPTER
    adapter_refs: tuple[AdapterRef, ...] = ()


IMAGE_PROMPT = "a big red circle at the top left on a white background"
TINY_INPAINTING = "tiny:inpainting"  # mobilediff.tiny.tiny_inpainting_pipeline(0), written into the fixture's folder
MADE_FROM_CODE = {TINY_INPAINTING: {"inpainting": True}}  # model -> mobilediff.tiny.save_tiny_pipeline's options
# fixture name (its folder) -> what it is
FIXTURES = {"default": Fixture("default", ("onnx",), images=(
                ImageRef("img2img", "ddim", 8, 0.6, 0), ImageRef("inpaint", "dpmpp", 8, 0.75, 1),
                ImageRef("inpaint", "ddim", 8, 1.0, 0)),
                adapters=("default:swap-red-blue", RANDOM_ADAPTER),
                adapter_refs=(AdapterRef((("swap-red-blue", 1.0),), 0),
                              AdapterRef((("swap-red-blue", 0.6), (RANDOM_ADAPTER, 1.0)), 1))),
            "progressive-4": Fixture("default:progressive-4", ("onnx", "executorch")),
            "lcm": Fixture("default:lcm", ("onnx",), images=(ImageRef("inpaint", "lcm", 4, 0.75, 0),)),
            "lcm-48x80": Fixture("default:lcm", ("onnx",), height=48, width=80),
            "emoji-lcm": Fixture("default:emoji:lcm", ("onnx",), prompt="cat face"),
            # a seeded tiny random inpainting pipeline (9-channel UNet): inpainting references alone, no goldens
            "inpainting-unet": Fixture(TINY_INPAINTING, ("onnx",), images=(
                ImageRef("inpaint", "ddim", 8, 1.0, 0), ImageRef("inpaint", "dpmpp", 8, 0.6, 1))),
            # the diffusion transformer (a PixArt transformer on the default CLIP text encoder): a format-2 bundle, whose
            # text encoder and denoiser take the caption's padding mask; no goldens
            "dit": Fixture("default:dit-l", ("onnx", "executorch"))}
MODELS = tuple(FIXTURES)
SEEDS = (0, 1)
PROMPT = "a small blue triangle at the top left and a big yellow square at the bottom right on a black background"


ALL_RUNTIMES = HOST_RUNTIMES


def build_model(name: str, folder: Path, say, runtimes: tuple[str, ...] | None = None) -> dict:
    """Bundle, goldens and reference images of fixture ``name`` in ``folder``; returns its index entry."""
    import shutil

    from PIL import Image

    from mobilediff.data import to_uint8
    from mobilediff.exporter import export_bundle
    from mobilediff.goldens import write_goldens
    from mobilediff.io import atomic_write_json, save_tensors
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.engine import BundleRunner

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    fixture = FIXTURES[name]
    model = fixture.model
    runtimes = runtimes or fixture.runtimes
    say(f"{name}: export {' + '.join(runtimes)}")
    if model in MADE_FROM_CODE:
        from mobilediff.tiny import save_tiny_pipeline

        model = str(save_tiny_pipeline(folder / "model", seed=0, **MADE_FROM_CODE[model]))
    pipe = load_pipeline(model, transformers=True)
    adapters = []
    for spec in fixture.adapters:
        from mobilediff.lora import Adapter, parse_adapter, random_adapter

        adapters.append(Adapter(random_adapter(pipe, folder / "adapters" / f"{spec}.safetensors", std=0.15))
                        if spec == RANDOM_ADAPTER else parse_adapter(spec))
    bundle = export_bundle(pipe, ",".join(runtimes), folder / "bundle", fixture.height, fixture.width, source=model,
                           model_dir=resolve_model(model), image_modes=bool(fixture.images),
                           runtime_adapters=tuple(adapters))
    manifest = BundleRunner(bundle, runtimes[0]).manifest
    inpainting_only = not manifest.supports("txt2img")
    goldens = not inpainting_only and manifest.format_version == 1  # goldens record format-1 text-to-image plans
    if goldens:
        say(f"{name}: goldens")
        write_goldens(bundle, folder / "goldens")
    refs = []
    for runtime in runtimes:
        runner = BundleRunner(bundle, runtime)
        for seed in SEEDS if not inpainting_only else ():
            t0 = time.perf_counter()
            image = runner.generate(fixture.prompt or PROMPT, seed)
            ms = (time.perf_counter() - t0) * 1000
            stem = folder / "reference" / f"{runtime}_seed{seed}"
            stem.parent.mkdir(exist_ok=True)
            Image.fromarray(to_uint8(image)[0]).save(stem.with_suffix(".png"))
            save_tensors({"image": image[0].permute(1, 2, 0).contiguous()}, stem.with_suffix(".safetensors"))
            plan = runner.manifest.plan
            row = {"runtime": runtime, "seed": seed, "prompt": fixture.prompt or PROMPT, "sampler": plan.sampler, "steps": plan.steps,
                   "guidance": plan.guidance, "ms": round(ms, 2), "png": str(stem.with_suffix(".png").relative_to(folder)),
                   "raw": str(stem.with_suffix(".safetensors").relative_to(folder))}
            atomic_write_json(stem.with_suffix(".json"), row)
            refs.append(row)
        refs += image_references(runner, fixture, folder, runtime)
        refs += adapter_references(runner, fixture, folder, runtime)
    return {"model": fixture.model, "weights_sha256": _weights_sha(fixture.model), "runtimes": list(runtimes),
            "bundle": "bundle", "goldens": "goldens" if goldens else None, "references": refs,
            "geometry": {"height": runner.geometry.height, "width": runner.geometry.width}}


def image_inputs(folder: Path, height: int, width: int) -> tuple[Path, Path]:
    """The init image (a rendered shapes scene) and the mask (its lower half: repaint) of a fixture's image
    references, as PNG files in ``folder`` (made once)."""
    import numpy as np
    from PIL import Image

    from mobilediff.data import ShapesConfig, render, sample_scene, to_uint8

    init, mask = folder / "init.png", folder / "mask.png"
    if not init.is_file():
        side = max(height, width)
        scene = render([sample_scene(0, 3, ShapesConfig(resolution=side))], ShapesConfig(resolution=side))
        Image.fromarray(to_uint8(scene)[0][:height, :width]).save(init)
        m = np.zeros((height, width), np.uint8)
        m[height // 2:] = 255
        Image.fromarray(m).save(mask)
    return init, mask


def image_references(runner, fixture: Fixture, folder: Path, runtime: str) -> list[dict]:
    """Reference images of the fixture's :class:`ImageRef` on ``runtime``: the init image and mask read as
    ``generate --init-image/--mask`` reads them, the image from :meth:`BundleRunner.generate`."""
    import time

    from PIL import Image

    from mobilediff.data import to_uint8
    from mobilediff.image_input import load_init_image, load_mask
    from mobilediff.io import atomic_write_json, save_tensors

    g = runner.geometry
    rows = []
    (folder / "reference").mkdir(exist_ok=True)
    init, mask = image_inputs(folder, g.height, g.width) if fixture.images else (None, None)
    image = load_init_image(init, g.height, g.width) if init is not None else None
    inpaint_mask = load_mask(mask, g.height, g.width, g.vae_scale_factor) if mask is not None else None
    for ref in fixture.images:
        latent_mask = inpaint_mask if ref.mode == "inpaint" else None
        t0 = time.perf_counter()
        out = runner.generate(IMAGE_PROMPT, ref.seed, ref.steps, ref.sampler, None, init_image=image,
                              mask=latent_mask, strength=ref.strength)
        ms = (time.perf_counter() - t0) * 1000
        stem = folder / "reference" / f"{runtime}_{ref.mode}_{ref.sampler}{ref.steps}_s{round(ref.strength * 100)}_seed{ref.seed}"
        Image.fromarray(to_uint8(out)[0]).save(stem.with_suffix(".png"))
        save_tensors({"image": out[0].permute(1, 2, 0).contiguous()}, stem.with_suffix(".safetensors"))
        row = {"runtime": runtime, "seed": ref.seed, "prompt": IMAGE_PROMPT, "sampler": ref.sampler,
               "steps": ref.steps, "guidance": runner.manifest.plan.guidance, "mode": ref.mode,
               "strength": ref.strength, "init_image": init.name, "mask": mask.name if ref.mode == "inpaint" else None,
               "ms": round(ms, 2), "png": str(stem.with_suffix(".png").relative_to(folder)),
               "raw": str(stem.with_suffix(".safetensors").relative_to(folder))}
        atomic_write_json(stem.with_suffix(".json"), row)
        rows.append(row)
    return rows


def adapter_references(runner, fixture: Fixture, folder: Path, runtime: str) -> list[dict]:
    """Reference images of the fixture's :class:`AdapterRef` on ``runtime``: the runner switched to each mix
    (:meth:`BundleRunner.set_adapters`), then back to the base model."""
    from PIL import Image

    from mobilediff.data import to_uint8
    from mobilediff.io import atomic_write_json, save_tensors

    rows = []
    plan = runner.manifest.plan
    prompt = fixture.prompt or PROMPT
    for ref in fixture.adapter_refs:
        runner.set_adapters(list(ref.mix))
        t0 = time.perf_counter()
        out = runner.generate(prompt, ref.seed)
        ms = (time.perf_counter() - t0) * 1000
        tag = "_".join(f"{n}{round(s * 100)}" for n, s in ref.mix)
        stem = folder / "reference" / f"{runtime}_lora_{tag}_seed{ref.seed}"
        Image.fromarray(to_uint8(out)[0]).save(stem.with_suffix(".png"))
        save_tensors({"image": out[0].permute(1, 2, 0).contiguous()}, stem.with_suffix(".safetensors"))
        vectors = stem.with_name(stem.name + "_vectors.safetensors")  # the packed lora_weights per component
        save_tensors(runner.lora_inputs(), vectors)
        row = {"runtime": runtime, "seed": ref.seed, "prompt": prompt, "sampler": plan.sampler, "steps": plan.steps,
               "guidance": plan.guidance, "adapters": [[n, s] for n, s in ref.mix],
               "ms": round(ms, 2), "png": str(stem.with_suffix(".png").relative_to(folder)),
               "raw": str(stem.with_suffix(".safetensors").relative_to(folder)),
               "lora_vectors": str(vectors.relative_to(folder))}
        atomic_write_json(stem.with_suffix(".json"), row)
        rows.append(row)
    runner.set_adapters([])
    return rows


def _weights_sha(model: str) -> str:
    from mobilediff.io import tree_sha256
    from mobilediff.loading import resolve_model

    if model in MADE_FROM_CODE:  # made from code: FIXTURE_VERSION changes with it
        return model
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
    for name in models:
        fixture = FIXTURES[name]
        runtimes = ALL_RUNTIMES if all_runtimes else fixture.runtimes
        entry = index["models"].get(name)
        if (entry is not None and entry.get("weights_sha256") == _weights_sha(fixture.model)
                and set(runtimes) <= set(entry.get("runtimes", ())) and (out / name / "bundle").is_dir()):
            say(f"{name}: up to date")
            continue
        todo.append((name, runtimes))
    jobs = max(1, min(jobs, len(todo)))
    if jobs == 1:
        for name, runtimes in todo:
            index["models"][name] = build_model(name, out / name, say, runtimes)
            atomic_write_json(index_path, index)  # after each model: an interrupted run keeps what it finished
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            running = {pool.submit(build_model, name, out / name, _say_stderr, runtimes): name
                       for name, runtimes in todo}
            for done in as_completed(running):
                index["models"][running[done]] = done.result()
                atomic_write_json(index_path, index)
    atomic_write_json(index_path, index)
    return index_path


def main(argv: list[str] | None = None) -> int:
    from mobilediff.errors import MobilediffError
    from mobilediff.quiet import quiet_libraries

    parser = argparse.ArgumentParser(prog="python -m mobilediff.fixtures", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="fixtures folder (created; reused when up to date)")
    parser.add_argument("--model", action="append", choices=MODELS, help="only these fixtures (repeatable)")
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
