"""The quantization benchmark as a library: every recipe of each target exported for one student, then per
component its size, parity and host latency, and end to end its quality, image PSNR against float and latency,
checked against the int8 bars. ``benchmarks/quantization.py`` runs :func:`main`, the command over :func:`measure`."""
from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mobilediff.bench import bars
from mobilediff.bench.bundles import COMPONENTS
from mobilediff.bench.envelope import Parser, command_line, count, pyplot, savefig, write_results
from mobilediff.bench.host import BUNDLE_RUNTIMES as HOST_RUNTIMES
from mobilediff.bench.stats import check_count
from mobilediff.targets import TARGETS as EXPORT_TARGETS

INT8 = {"onnx": "int8-static", "executorch": "int8"}  # the int8 recipe checked against the bars, per target
TARGETS = tuple(EXPORT_TARGETS)


@dataclass(frozen=True)
class QuantizationConfig:
    model: str = "default:lcm"  # student pipeline folder or a named model
    targets: tuple[str, ...] = TARGETS
    n: int = 256  # prompts (images) per end-to-end row; 0 skips end to end
    runs: int = 30  # timed calls per component, after warm-up
    warmup: int = 5
    calibration_prompts: int = 32
    calibration_rows: int = 64
    work: Path | None = None  # folder for the bundles (None: a temporary folder, removed)
    reuse: bool = False  # with work: measure the complete bundles already exported there again

    def check(self) -> None:
        check_count("--runs", self.runs, 1)
        check_count("--warmup", self.warmup, 0)
        check_count("--n", self.n, 0)


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


def image_psnr(a, b) -> float:
    """Mean per-image PSNR (dB) of images in [-1, 1] (peak-to-peak 2)."""
    import torch

    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    vals = [math.inf if m == 0 else 10 * math.log10(4.0 / m) for m in mse.tolist()]
    finite = [v for v in vals if math.isfinite(v)]
    return float(torch.tensor(finite).mean()) if finite else math.inf


def check_targets(components: list[dict], e2e: list[dict]) -> list[dict]:
    """The int8 bars (mobilediff.bench.bars) per target: the int8 recipe against the same target's float bundle."""
    out = []
    for t, name in INT8.items():
        f = {r["component"]: r for r in components if r["target"] == t and r["variant"] == "fp32"}
        q = {r["component"]: r for r in components if r["target"] == t and r["variant"] == name}
        fe = next((r for r in e2e if r["target"] == t and r["variant"] == "fp32"), None)
        qe = next((r for r in e2e if r["target"] == t and r["variant"] == name), None)
        if "unet" not in f or "unet" not in q or fe is None or qe is None:
            continue
        measured = {"int8_accuracy_drop_points": 100 * (fe["prompt_accuracy"] - qe["prompt_accuracy"]),
                    "int8_fd_ratio": qe["fd"] / fe["fd"],
                    "int8_denoiser_shrink": f["unet"]["size_bytes"] / q["unet"]["size_bytes"],
                    "int8_denoiser_speedup": f["unet"]["median_ms"] / q["unet"]["median_ms"],
                    "int8_e2e_speedup": fe["latency_ms"] / qe["latency_ms"]}
        for bar_id, value in measured.items():
            b = bars.bar(bar_id)
            out.append({"target": t, "recipe": name, "check": b.label, "bar_id": b.id, "value": value, "bar": b.value,
                        "op": b.op, "met": bars.check(bar_id, value)})
    return out


def _fmt_num(x, spec: str) -> str:
    return "structural only" if x is None else format(x, spec)


def _fmt_ms(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def write_markdown(res: dict) -> str:
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
    return "\n".join(lines) + "\n"


def plot(res: dict):
    plt = pyplot()

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
    return fig


def sampling_plan(model_dir: Path) -> dict:
    """The student's own sampler, steps and guidance (its distillation record), else DDIM 4 steps at guidance 3.5."""
    from mobilediff.card import distillation_record

    record = distillation_record(model_dir)
    return dict(record["sampling"]) if record else {"sampler": "ddim", "steps": 4, "guidance": 3.5}


def component_rows(bundle: Path, target: str, label: str, recipe, runs: int, warmup: int) -> list[dict]:
    """Size, parity (as the export recorded it) and host latency of every component of one exported bundle."""
    from mobilediff.bench.host import component_latency
    from mobilediff.bundle import read_manifest

    m = read_manifest(bundle)
    rows = []
    for name in COMPONENTS:
        entry = m.component(name).files[0]
        row = {"target": target, "variant": label, "recipe": recipe_name(recipe), "component": name,
               "file": entry.path, "size_bytes": entry.size_bytes, "quantized": entry.quantization is not None,
               # Core ML on Linux: checked structurally, no numbers (None)
               "psnr_db": entry.parity.get("psnr_db"), "max_abs_error": entry.parity.get("max_abs_error"),
               "parity_checked": entry.parity["checked"], "export_seconds": entry.export_seconds,
               "export_facts": entry.export}
        if recipe is not None and entry.quantization is None:
            row["quantized_note"] = "kept float by the recipe"
        if target in HOST_RUNTIMES:
            row.update(component_latency(bundle, target, name, runs, warmup))
        rows.append(row)
    return rows


def measure(cfg: QuantizationConfig, command: str = "") -> dict:
    """Export and measure every variant (see the module docstring); returns the result, writes only bundles (into
    ``cfg.work``, or a temporary folder that is removed)."""
    import torch
    from tqdm.auto import tqdm

    from mobilediff.bench.envelope import envelope
    from mobilediff.evaluator import Evaluator
    from mobilediff.exporter import ExportConfig, run_export
    from mobilediff.io import tree_sha256
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.quality import bundle_images, eval_scenes
    from mobilediff.engine import BundleRunner

    cfg.check()
    t_start = time.time()
    model_dir = resolve_model(cfg.model)
    pipe = load_pipeline(cfg.model)
    smp = sampling_plan(model_dir)
    work = Path(cfg.work) if cfg.work else Path(tempfile.mkdtemp(prefix="mobilediff-quant-"))
    evaluator = Evaluator.load() if cfg.n else None
    real = evaluator.real_features(eval_scenes(cfg.n)) if cfg.n else None
    components, e2e = [], []
    float_images: dict[str, torch.Tensor] = {}
    try:
        bar = tqdm(variants(list(cfg.targets)), desc="quantization recipes", file=sys.stderr)
        for target, label, recipe in bar:
            bar.set_postfix_str(f"{target} {label}")
            out = work / f"{target}-{label.replace(' ', '_').replace(',', '').replace('+', 'plus')}"
            if not (cfg.reuse and (out / "manifest.json").is_file()):
                # calibrated on the trajectories measured end to end: a student's own plan (what its card gives
                # too), and for a model without a distillation record this benchmark's fallback plan
                run_export(pipe, ExportConfig.of(target, out, guidance=smp["guidance"], force=True,
                                                 source=str(model_dir), quantize=recipe, calibration_sampling=smp,
                                                 calibration_prompts=cfg.calibration_prompts,
                                                 calibration_rows=cfg.calibration_rows, model_dir=model_dir))
            components += component_rows(out, target, label, recipe, cfg.runs, cfg.warmup)
            if target in HOST_RUNTIMES and cfg.n:
                times = []
                t0 = time.perf_counter()
                images = bundle_images(BundleRunner(out, target), cfg.n, smp["sampler"], smp["steps"], smp["guidance"],
                                       progress=lambda k, times=times: times.append(time.perf_counter()))
                per_image = torch.tensor([b - a for a, b in zip([t0] + times[:-1], times)]) * 1000
                rep = evaluator.score(images, eval_scenes(cfg.n), real)
                if recipe is None:
                    float_images[target] = images
                e2e.append({"target": target, "variant": label, "recipe": recipe_name(recipe), "n": cfg.n,
                            "prompt_accuracy": rep.prompt_accuracy, "fd": rep.fd,
                            "attribute_accuracy": rep.attribute_accuracy, "latency_ms": float(per_image.median()),
                            "image_psnr_db": None if recipe is None else image_psnr(images, float_images[target])})
                bar.write(f"{target} {label}: accuracy {rep.prompt_accuracy:.3f}, FD {rep.fd:.2f}, "
                          f"{e2e[-1]['latency_ms']:.1f} ms/image")
            if cfg.work is None:
                shutil.rmtree(out)
        bar.close()
    finally:
        if cfg.work is None:
            shutil.rmtree(work, ignore_errors=True)
    meta = {"model": cfg.model, "model_sha256": tree_sha256(model_dir), "sampling": smp, "n": cfg.n, "runs": cfg.runs,
            "warmup": cfg.warmup,
            "calibration": f"{cfg.calibration_prompts} prompts of the student's own {smp['sampler']} {smp['steps']}-step "
                           f"trajectories, at most {cfg.calibration_rows} rows per component",
            **envelope("quantization", command, t_start)}
    return {"meta": meta, "components": components, "end_to_end": e2e, "targets": check_targets(components, e2e)}


def output_files(res: dict) -> dict:
    """quantization.md, .png and .json (last) for :func:`mobilediff.bench.envelope.write_results`."""
    return {"quantization.md": write_markdown(res), "quantization.png": savefig(plot(res)), "quantization.json": res}


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    """The command line of ``benchmarks/quantization.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, every variant
    exported and measured, written to ``--out``, the int8 bars printed; returns the result. ``doc``: the script's
    docstring (its ``--help``); ``results``: the default ``--out`` (None: ``--out`` is required)."""
    ap = Parser(doc)
    ap.add_argument("--model", default="default:lcm", help="Student pipeline folder or a named model.")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS, help="Targets to export.")
    ap.add_argument("--n", type=count(0), default=256, help="Prompts (images) per end-to-end row; 0 skips end to end.")
    ap.add_argument("--runs", type=count(1), default=30, help="Timed calls per component (after warm-up).")
    ap.add_argument("--warmup", type=count(0), default=5, help="Untimed calls per component first.")
    ap.add_argument("--calibration-prompts", type=count(1), default=32, help="Prompts whose trajectories calibrate.")
    ap.add_argument("--calibration-rows", type=count(1), default=64, help="Calibration rows kept per component.")
    ap.add_out(results, "Result folder (default benchmarks/results).")
    ap.add_argument("--work", type=Path, default=None, help="Folder for the bundles (default: a temporary folder).")
    ap.add_argument("--reuse", action="store_true", help="With --work: measure the bundles already exported there "
                                                         "(complete ones: manifest.json is written last) again.")
    a = ap.parse_args(argv)
    cfg = QuantizationConfig(model=a.model, targets=tuple(a.targets), n=a.n, runs=a.runs, warmup=a.warmup,
                             calibration_prompts=a.calibration_prompts, calibration_rows=a.calibration_rows,
                             work=a.work, reuse=a.reuse)
    res = measure(cfg, command_line("quantization", argv))
    write_results(a.out, output_files(res))
    for t in res["targets"]:
        print(f"{t['target']} {t['recipe']} {t['check']}: {t['value']:.3f} (bar {t['op']} {t['bar']}): "
              f"{'met' if t['met'] else 'NOT met'}")
    return res
