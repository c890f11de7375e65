"""Do the ecosystem's own tools read what mobilediff writes? optimum's ONNX Runtime diffusion pipeline, in a virtual
environment of its own (:mod:`mobilediff.bench.optimum_worker` runs there), loads each ONNX bundle folder as is and
samples it, compared with ``mobilediff generate --bundle``; and the default model's text encoder loaded by
transformers 4.x is compared with transformers 5's. ``benchmarks/optimum_check.py`` runs :func:`main`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mobilediff.bench.envelope import Parser, command_line, count, envelope, fmt, write_results
from mobilediff.errors import MobilediffError

WORK = Path(__file__).resolve().parents[2] / "build" / "optimum_check"  # in the checkout: the venv and the bundles
WORKER = Path(__file__).with_name("optimum_worker.py")
# what the optimum environment holds: optimum-onnx accepts transformers < 4.58; huggingface-hub < 1 for that
# transformers; diffusers at the last release that accepts that hub; onnxruntime as in mobilediff's environment
REQUIREMENTS = ["optimum-onnx[onnxruntime]==0.1.0", "transformers==4.57.6", "diffusers==0.39.0",
                "huggingface-hub==0.36.2", "onnxruntime==1.32.0", "torch==2.13.0+cpu"]
PROMPT = "a big red circle in the middle against a white background"
TEXT_PROMPTS = ["a red circle", "a small cyan square in the middle, a big green circle at the bottom right", ""]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


# ---------------------------------------------------------------------------------- the mobilediff side
def _run(cmd: list, what: str, env: dict | None = None, timeout: float = 3600) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "Error" in ln or ln.startswith("error")), lines[-1] if lines else "")
        raise MobilediffError(f"{what} failed (exit {p.returncode}): {last.strip()}")
    return p.stdout


def ensure_venv(venv: Path) -> Path:
    """The optimum environment's Python, built when missing or when REQUIREMENTS changed (a stamp records them)."""
    python, stamp = venv / "bin" / "python", venv / "mobilediff-requirements.txt"
    want = "\n".join(REQUIREMENTS) + "\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == want:
        return python
    print(f"building the optimum environment in {venv} ...", flush=True)
    _run([sys.executable, "-m", "venv", "--clear", venv], "creating the optimum virtual environment")
    constraints = venv / "constraints.txt"
    constraints.write_text("torch==2.13.0+cpu\n")  # the CPU wheel only: pip can never pick a CUDA torch
    _run([python, "-m", "pip", "install", "--quiet", "--constraint", constraints, *REQUIREMENTS],
         "installing optimum-onnx in its own environment (pip)", timeout=3600)
    _run([python, "-c", "import optimum.onnxruntime, torch; assert torch.version.cuda is None"],
         "importing optimum.onnxruntime in its environment")
    stamp.write_text(want)
    return python


def in_venv(python: Path, job: dict, path: Path) -> dict:
    import numpy as np

    path.write_text(json.dumps({**job, "out": str(path.with_suffix(".npy"))}))
    # -P: the worker's folder (this package's modules) stays off its sys.path
    _run([python, "-P", WORKER, path], f"optimum side ({job['kind']} {path.stem})", env=OFFLINE)
    return {**json.loads(path.with_suffix(".json").read_text()), "array": np.load(path.with_suffix(".npy"))}


def image_row(model: str, python: Path, work: Path, seed: int) -> dict:
    import numpy as np
    from PIL import Image

    from mobilediff.bundle import read_manifest

    slug = model.replace(":", "_")
    bundle = work / "bundles" / slug
    t0 = time.time()
    _run([sys.executable, "-m", "mobilediff", "export", "--model", model, "--target", "onnx", "--out", bundle,
          "--force"], f"mobilediff export {model}")
    export_s = time.time() - t0
    m = read_manifest(bundle)
    plan, geo = m.plan, m.geometry
    png = work / f"{slug}_mobilediff.png"
    t0 = time.time()
    _run([sys.executable, "-m", "mobilediff", "generate", "--bundle", bundle, "--runtime", "onnx", "--prompt",
          PROMPT, "--seed", seed, "--scale", 1, "--out", png], f"mobilediff generate --bundle ({model})")
    ours_s = time.time() - t0
    ours = np.asarray(Image.open(png).convert("RGB"))
    job = {"kind": "pipeline", "bundle": str(bundle), "prompt": PROMPT, "seed": seed, "steps": plan.steps,
           "guidance": plan.guidance, "height": geo.height, "width": geo.width, "latent_shape": list(geo.latent_shape)}
    theirs = in_venv(python, job, work / f"{slug}_optimum.job")
    if theirs["array"].shape != ours.shape:
        raise MobilediffError(f"{model}: optimum made a {theirs['array'].shape} image, mobilediff {ours.shape}")
    diff = np.abs(theirs["array"].astype(int) - ours.astype(int))
    return {"model": model, "role": m.role.role, "method": m.role.method, "sampler": plan.sampler,
            "steps": plan.steps, "guidance": plan.guidance, "prompt": PROMPT, "seed": seed,
            "optimum_pipeline": theirs["pipeline_class"], "optimum_scheduler": theirs["scheduler_class"],
            "graphs_loaded": theirs["graphs"], "values": int(diff.size), "differing": int((diff > 0).sum()),
            "max_abs_diff": int(diff.max()), "export_seconds": round(export_s, 1),
            "mobilediff_generate_seconds": round(ours_s, 1), "optimum_seconds": round(theirs["seconds"], 1),
            "optimum_versions": theirs["versions"]}


def text_encoder_row(python: Path, work: Path) -> dict:
    import numpy as np
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    from mobilediff.loading import resolve_model

    folder = resolve_model("default")
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    ids = tok(TEXT_PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    theirs = in_venv(python, {"kind": "text_encoder", "folder": str(folder / "text_encoder"), "ids": ids},
                     work / "text_encoder_tf4.job")
    with torch.no_grad():
        ours = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()(torch.tensor(ids)).last_hidden_state.numpy()
    info = theirs["loading_info"]
    return {"check": "default model text encoder: transformers 4.x vs 5", "folder": "default/text_encoder",
            "prompts": TEXT_PROMPTS, "tokens": int(np.asarray(ids).size),
            "transformers_4": theirs["versions"]["transformers"], "transformers_5": _version("transformers"),
            "missing_keys": len(info.get("missing_keys", [])), "unexpected_keys": len(info.get("unexpected_keys", [])),
            "max_abs_diff": float(np.abs(theirs["array"] - ours).max()), "output_abs_max": float(np.abs(ours).max()),
            "optimum_versions": theirs["versions"]}


def _version(name: str) -> str:
    import importlib.metadata as md

    return md.version(name)


def markdown(data: dict) -> str:
    v = data["optimum_environment"]
    lines = ["# optimum reads mobilediff's ONNX bundles", "", f"Command: `{data['command']}`", "",
             f"optimum-onnx {v['optimum-onnx']} (optimum {v['optimum']}), transformers {v['transformers']}, diffusers "
             f"{v['diffusers']}, onnxruntime {v['onnxruntime']}, torch {v['torch']}; mobilediff side: transformers "
             f"{data['versions'].get('transformers')}, diffusers {data['versions'].get('diffusers')}, onnxruntime "
             f"{data['versions'].get('onnxruntime')}. Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores.",
             "", "Each bundle folder loaded as is by `optimum.onnxruntime.ORTDiffusionPipeline.from_pretrained(B, "
             "export=False)`, sampled with the bundle's default plan and the same initial latents; compared with "
             "`mobilediff generate --bundle B --seed S --scale 1` as uint8 images.", "",
             "| model | optimum pipeline | plan | differing uint8 values | max abs diff |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['model']} | {r['optimum_pipeline']} ({r['optimum_scheduler']}) | {r['sampler']} / "
                     f"{r['steps']} / {fmt(r['guidance'], '.1f')} | {r['differing']} of {r['values']} | "
                     f"{r['max_abs_diff']} |")
    t = data["text_encoder"]
    lines += ["", "Text encoder of the embedded default model (a diffusers pipeline folder mobilediff writes), loaded "
              f"by transformers {t['transformers_4']} and by {t['transformers_5']}, on {len(t['prompts'])} padded "
              "prompts:", "", "| missing keys | unexpected keys | max abs diff of last_hidden_state | output abs max |",
              "|---|---|---|---|",
              f"| {t['missing_keys']} | {t['unexpected_keys']} | {t['max_abs_diff']:.3g} | {t['output_abs_max']:.3g} |",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    """The command line of ``benchmarks/optimum_check.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, every model
    exported and sampled by both sides, the text encoder compared, written to ``--out``. ``doc``: the script's
    docstring (its ``--help``); ``results``: the default ``--out`` (None: ``--out`` is required)."""
    ap = Parser(doc)
    ap.add_argument("--models", default="default,default:progressive-4,default:lcm", help="models, comma-separated")
    ap.add_argument("--seed", type=count(0, 2**63 - 1), default=0, help="noise seed (default 0)")
    ap.add_out(results, "result folder (default benchmarks/results)")
    ap.add_argument("--venv", type=Path, default=WORK / "venv", help="the optimum environment (built if needed)")
    args = ap.parse_args(argv)
    started = time.time()
    python = ensure_venv(args.venv)
    work = WORK / "work"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(f"{model}: export, generate --bundle, optimum", flush=True)
        rows.append(image_row(model, python, work, args.seed))
        print(f"  {rows[-1]['differing']} of {rows[-1]['values']} uint8 values differ, max {rows[-1]['max_abs_diff']}")
    text = text_encoder_row(python, work)
    print(f"text encoder, transformers 4 vs 5: max abs diff {text['max_abs_diff']:.3g}, missing keys "
          f"{text['missing_keys']}")
    data = {**envelope("optimum_check", command_line("optimum_check", argv), started),
            "optimum_environment": text["optimum_versions"], "rows": rows, "text_encoder": text}
    write_results(args.out, {"optimum_check.md": markdown(data), "optimum_check.json": data})
