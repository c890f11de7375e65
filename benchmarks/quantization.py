"""What each quantization recipe costs and buys, per component and end to end for a few-step student.

For the student (default: the committed 4-step LCM student) the script exports one float bundle per target and one
bundle per recipe (`mobilediff.exporter.export_bundle(..., quantize=RECIPE)`, calibrated on the student's own
sampling trajectories), then measures:

- per recipe and component: file size, PSNR and max abs error against the float PyTorch component (the parity
  record the export wrote into the manifest), and host latency on the component's runtime (ONNX Runtime,
  ExecuTorch; warm median / p90 over --runs after warm-up, `mobilediff.latency`);
- end to end (ONNX and ExecuTorch; Core ML cannot predict on Linux): --n images from the fixed prompt set and
  noise seeds through `BundleRunner`, scored with the shapes evaluator (prompt accuracy, FD), and their image
  PSNR against the same runtime's float bundle, image for image;
- ablations of the keep-float defaults on ONNX int8-static (nothing kept float; the VAE decoder quantized too),
  which is where the defaults come from.

Core ML bundles are exported and checked structurally here (sizes, compressed-weight counts); their numerical
parity and latency need macOS (`benchmarks/run_device.py --device apple`).

Writes to --out (default benchmarks/results/):
  quantization.json   {"meta": machine, versions, settings, wall time; "components": rows; "end_to_end": rows;
                       "targets": the issue's int8 targets checked}
  quantization.md     the tables and targets
  quantization.png    denoiser size, denoiser latency and end-to-end prompt accuracy / FD per recipe

Run:  python benchmarks/quantization.py            (about 15 minutes on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilediff.benchmarking import library_versions, machine_info, tree_sha256  # noqa: E402
from mobilediff.io import atomic_path, atomic_write_bytes, atomic_write_json  # noqa: E402

COMPONENTS = ("text_encoder", "unet", "vae_decoder")
HOST_RUNTIMES = ("onnx", "executorch")
INT8 = {"onnx": "int8-static", "executorch": "int8"}
# the issue's targets for the int8 4-step student
MAX_ACCURACY_DROP = 0.02  # prompt accuracy within 2 points of float
MAX_FD_RATIO = 1.10  # FD within 10 %
MIN_UNET_SHRINK = 3.5  # denoiser file at least 3.5x smaller


def variants(targets: list[str]) -> list[tuple[str, str, object]]:
    """(target, label, recipe-or-None) for every bundle to export: float first, then each recipe, then ablations."""
    from mobilediff.quantize import RECIPES

    out = []
    for t in targets:
        out.append((t, "fp32", None))
        out += [(t, name, name) for name in RECIPES[t]]
        if t == "onnx":
            base = RECIPES["onnx"]["int8-static"]
            out.append((t, "int8-static, nothing kept float", dataclasses.replace(base, keep_float=())))
            out.append((t, "int8-static + VAE decoder", dataclasses.replace(
                base, components=base.components + ("vae_decoder",))))
    return out


def recipe_name(recipe) -> str | None:
    return None if recipe is None else recipe if isinstance(recipe, str) else recipe.name


def component_latency(bundle: Path, target: str, entry: dict, io: dict, spec, runs: int, warmup: int) -> dict:
    from mobilediff.latency import summarize, time_callable
    from mobilediff.runtimes import _CLASSES

    t0 = time.perf_counter()
    comp = _CLASSES[target](bundle / entry["path"], entry, io)
    load_s = time.perf_counter() - t0
    args = spec.example_inputs(0)
    if comp.static_batch is not None:
        b = comp.static_batch
        args = tuple(a[:1].expand(b, *a.shape[1:]).contiguous() for a in args)
    stats = summarize(time_callable(lambda: comp(*args), warmup=warmup, runs=runs))
    return {"load_seconds": load_s, **stats}


def image_psnr(a, b) -> float:
    """Mean per-image PSNR (dB) of images in [-1, 1] (peak-to-peak 2)."""
    import torch

    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    vals = [math.inf if m == 0 else 10 * math.log10(4.0 / m) for m in mse.tolist()]
    finite = [v for v in vals if math.isfinite(v)]
    return float(torch.tensor(finite).mean()) if finite else math.inf


def check_targets(components: list[dict], e2e: list[dict]) -> list[dict]:
    out = []
    for t, name in INT8.items():
        f = {r["component"]: r for r in components if r["target"] == t and r["variant"] == "fp32"}
        q = {r["component"]: r for r in components if r["target"] == t and r["variant"] == name}
        fe = next((r for r in e2e if r["target"] == t and r["variant"] == "fp32"), None)
        qe = next((r for r in e2e if r["target"] == t and r["variant"] == name), None)
        if "unet" not in f or "unet" not in q or fe is None or qe is None:
            continue
        checks = [
            ("prompt accuracy drop (points)", 100 * (fe["prompt_accuracy"] - qe["prompt_accuracy"]),
             100 * MAX_ACCURACY_DROP, "<="),
            ("FD ratio to float", qe["fd"] / fe["fd"], MAX_FD_RATIO, "<="),
            ("denoiser file shrink", f["unet"]["size_bytes"] / q["unet"]["size_bytes"], MIN_UNET_SHRINK, ">="),
            ("denoiser speedup over float", f["unet"]["median_ms"] / q["unet"]["median_ms"], 1.0, ">"),
            ("end-to-end speedup over float", fe["latency_ms"] / qe["latency_ms"], 1.0, ">"),
        ]
        for what, value, bar, op in checks:
            met = value <= bar if op == "<=" else value >= bar if op == ">=" else value > bar
            out.append({"target": t, "recipe": name, "check": what, "value": value, "bar": bar, "op": op, "met": met})
    return out


def _fmt_num(x, spec: str) -> str:
    return "structural only" if x is None else format(x, spec)


def _fmt_ms(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def write_markdown(res: dict, path: Path) -> None:
    m = res["meta"]
    lines = ["# Quantization: size, speed and quality per recipe", "",
             f"Student: `{m['model']}` ({m['sampling']['sampler']}, {m['sampling']['steps']} steps, guidance "
             f"{m['sampling']['guidance']}). Calibration: {m['calibration']}. Machine: {m['machine']['cpu']}, "
             f"{m['machine']['cores']} cores, {m['machine']['torch_threads']} torch threads (host latency; no phone). "
             f"Generated by `{m['command']}` in {m['wall_seconds'] / 60:.1f} min.", "",
             "## Per component", "",
             "PSNR / max abs error: the exported component against the float PyTorch component on a real calibration "
             "input (calibrated recipes) or the export's example input. Latency: warm, one call, median (p90) over "
             f"{m['runs']} runs after {m['warmup']} warm-up calls. Core ML: structural only on Linux.", "",
             "| target | variant | component | file | vs fp32 | PSNR dB | max abs err | median ms (p90) | load s | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["target"], r["component"]): r for r in res["components"] if r["variant"] == "fp32"}
    for r in res["components"]:
        f = base.get((r["target"], r["component"]))
        ratio = f"{f['size_bytes'] / r['size_bytes']:.2f}x smaller" if f and r is not f else ""
        lat = "-" if r.get("median_ms") is None else f"{r['median_ms']:.2f} ({r['p90_ms']:.2f})"
        note = "; ".join(filter(None, [r.get("quantized_note"), "spread too wide" if r.get("spread_too_wide") else ""]))
        lines.append(f"| {r['target']} | {r['variant']} | {r['component']} | {r['size_bytes'] / 1e6:.3f} MB | {ratio} | "
                     f"{_fmt_num(r['psnr_db'], '.1f')} | {_fmt_num(r['max_abs_error'], '.3g')} | {lat} | "
                     f"{'-' if r.get('load_seconds') is None else format(r['load_seconds'], '.2f')} | {note} |")
    lines += ["", f"## End to end ({m['n']} prompts, fixed prompts and noise seeds)", "",
              "Image PSNR: each image against the same runtime's float bundle at the same prompt and seed (mean over "
              "images). Latency: median of the per-image wall time (text encoder + denoiser steps + VAE decoder).", "",
              "| runtime | variant | prompt accuracy | FD | image PSNR dB vs float | ms / image |", "|---|---|---|---|---|---|"]
    for r in res["end_to_end"]:
        ps = "-" if r.get("image_psnr_db") is None else f"{r['image_psnr_db']:.1f}"
        lines.append(f"| {r['target']} | {r['variant']} | {r['prompt_accuracy']:.3f} | {r['fd']:.2f} | {ps} | "
                     f"{_fmt_ms(r.get('latency_ms'))} |")
    lines += ["", "## Targets for the int8 4-step student", "", "| runtime | recipe | check | measured | bar | met |",
              "|---|---|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['target']} | {t['recipe']} | {t['check']} | {t['value']:.3f} | {t['op']} {t['bar']} | "
                     f"{'yes' if t['met'] else '**no**'} |")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unet = [r for r in res["components"] if r["component"] == "unet"]
    labels = [f"{r['target']}\n{r['variant']}" for r in unet]
    fig, ax = plt.subplots(1, 3, figsize=(17, 5))
    ax[0].barh(labels, [r["size_bytes"] / 1e6 for r in unet], color="tab:blue")
    ax[0].set_xlabel("denoiser file (MB)")
    timed = [r for r in unet if r.get("median_ms") is not None]
    ax[1].barh([f"{r['target']}\n{r['variant']}" for r in timed], [r["median_ms"] for r in timed],
               xerr=[[0] * len(timed), [r["p90_ms"] - r["median_ms"] for r in timed]], color="tab:orange")
    ax[1].set_xlabel("denoiser step, host (ms, median; bar to p90)")
    e2e = res["end_to_end"]
    for r in e2e:
        ax[2].scatter(r["fd"], r["prompt_accuracy"], marker="o" if r["target"] == "onnx" else "s")
        ax[2].annotate(f"{r['target']} {r['variant']}", (r["fd"], r["prompt_accuracy"]), fontsize=6)
    ax[2].set_xlabel("FD (lower is better)")
    ax[2].set_ylabel("prompt accuracy")
    ax[2].set_title(f"end to end, {res['meta']['n']} prompts", fontsize=9)
    for a in ax:
        a.grid(alpha=0.3)
        a.tick_params(labelsize=7)
    fig.suptitle(f"Quantization of {res['meta']['model']} (host: {res['meta']['machine']['cpu']})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default:lcm", help="student pipeline folder or a named model")
    ap.add_argument("--targets", nargs="+", default=["onnx", "executorch", "coreml"],
                    choices=["onnx", "executorch", "coreml"])
    ap.add_argument("--n", type=int, default=256, help="prompts (images) per end-to-end row; 0 skips end to end")
    ap.add_argument("--runs", type=int, default=30, help="timed calls per component (after warm-up)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--calibration-prompts", type=int, default=32)
    ap.add_argument("--calibration-rows", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=None, help="folder for the bundles (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="with --work: measure the bundles already exported there "
                                                         "(complete ones: manifest.json is written last) again")
    args = ap.parse_args(argv)
    from mobilediff.latency import check_count

    check_count("--runs", args.runs, 1)
    check_count("--n", args.n, 0)

    import torch
    from tqdm.auto import tqdm

    from mobilediff.components import declare, latent_geometry
    from mobilediff.evaluator import Evaluator
    from mobilediff.exporter import export_bundle
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.quality import bundle_images, eval_scenes
    from mobilediff.runtimes import BundleRunner
    from mobilediff.train.distill import student_defaults

    t_start = time.time()
    model_dir = resolve_model(args.model)
    pipe = load_pipeline(args.model)
    smp = student_defaults(model_dir) or {"sampler": "ddim", "steps": 4, "guidance": 3.5}
    specs = declare(pipe, latent_geometry(pipe, None, None))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mobilediff-quant-"))
    evaluator = Evaluator.load() if args.n else None
    real = evaluator.real_features(eval_scenes(args.n)) if args.n else None
    components, e2e = [], []
    float_images: dict[str, torch.Tensor] = {}
    plan = variants(args.targets)
    try:
        bar = tqdm(plan, desc="quantization recipes", file=sys.stderr)
        for target, label, recipe in bar:
            bar.set_postfix_str(f"{target} {label}")
            slug = label.replace(" ", "_").replace(",", "").replace("+", "plus")
            out = work / f"{target}-{slug}"
            if not (args.reuse and (out / "manifest.json").is_file()):
                export_bundle(pipe, target, out, guidance=smp["guidance"], force=True, source=str(model_dir),
                              quantize=recipe, calibration_sampling=smp, calibration_prompts=args.calibration_prompts,
                              calibration_rows=args.calibration_rows)
            import json

            manifest = json.loads((out / "manifest.json").read_text())
            for name in COMPONENTS:
                comp = manifest["components"][name]
                entry = comp["files"][0]
                row = {"target": target, "variant": label, "recipe": recipe_name(recipe), "component": name,
                       "file": entry["path"], "size_bytes": entry["size_bytes"],
                       "quantized": entry["quantization"] is not None,
                       # Core ML on Linux: checked structurally, no numbers (None)
                       "psnr_db": entry["parity"].get("psnr_db"), "max_abs_error": entry["parity"].get("max_abs_error"),
                       "parity_checked": entry["parity"]["checked"], "export_seconds": entry["export_seconds"],
                       "export_facts": entry["export"]}
                if recipe is not None and entry["quantization"] is None:
                    row["quantized_note"] = "kept float by the recipe"
                if target in HOST_RUNTIMES:
                    row.update(component_latency(out, target, entry, comp, specs[name], args.runs, args.warmup))
                components.append(row)
            if target in HOST_RUNTIMES and args.n:
                runner = BundleRunner(out, target)
                times = []

                def tick(k, times=times):
                    times.append(time.perf_counter())

                t0 = time.perf_counter()
                images = bundle_images(runner, args.n, smp["sampler"], smp["steps"], smp["guidance"], progress=tick)
                per_image = torch.tensor([b - a for a, b in zip([t0] + times[:-1], times)]) * 1000
                rep = evaluator.score(images, eval_scenes(args.n), real)
                if recipe is None:
                    float_images[target] = images
                row = {"target": target, "variant": label, "recipe": recipe_name(recipe), "n": args.n,
                       "prompt_accuracy": rep.prompt_accuracy, "fd": rep.fd,
                       "attribute_accuracy": rep.attribute_accuracy,
                       "latency_ms": float(per_image.median()),
                       "image_psnr_db": None if recipe is None else image_psnr(images, float_images[target])}
                e2e.append(row)
                bar.write(f"{target} {label}: accuracy {rep.prompt_accuracy:.3f}, FD {rep.fd:.2f}, "
                          f"{row['latency_ms']:.1f} ms/image")
            if args.work is None:
                shutil.rmtree(out)
        bar.close()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    res = {"meta": {"model": args.model, "model_sha256": tree_sha256(model_dir), "sampling": smp, "n": args.n,
                    "runs": args.runs, "warmup": args.warmup,
                    "calibration": f"{args.calibration_prompts} prompts of the student's own {smp['sampler']} "
                                   f"{smp['steps']}-step trajectories, at most {args.calibration_rows} rows per "
                                   f"component",
                    "machine": machine_info(), "versions": library_versions(), "wall_seconds": time.time() - t_start,
                    "command": "python benchmarks/quantization.py " + " ".join(argv if argv is not None
                                                                                else sys.argv[1:])},
           "components": components, "end_to_end": e2e, "targets": check_targets(components, e2e)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "quantization.json", res)
    write_markdown(res, args.out / "quantization.md")
    plot(res, args.out / "quantization.png")
    for t in res["targets"]:
        print(f"{t['target']} {t['recipe']} {t['check']}: {t['value']:.3f} (bar {t['op']} {t['bar']}): "
              f"{'met' if t['met'] else 'NOT met'}")
    return res


if __name__ == "__main__":
    from mobilediff.benchmarking import run_main

    run_main(main)
