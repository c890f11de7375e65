"""Run-time LoRA adapters against adapters merged at export, per runtime and precision.

For each embedded adapter on its model, two bundles per runtime and precision: *slotted* (``export --runtime-lora``:
the adapter a separate file, the UNet taking it as its ``lora_weights`` input) and *merged* (``export --lora``: the
adapter fused into the weights, the graph of the model alone). Measured:

- parity: the export's own check of the slotted UNet fed the adapter against the PyTorch model with it merged
  (manifest ``parity.adapters``); and whole images: the slotted bundle with the adapter on against the merged bundle
  on the same runtime and against the PyTorch model with the adapter merged (``generate --model --lora``), same
  prompts and seeds, PSNR of the 8-bit images;
- sizes: the adapter's file against the UNet graph;
- switch time: ``BundleRunner.set_adapters`` (the first switch reads and checks the file; later ones repack a
  cached adapter), median over ``--runs``;
- step time: one UNet call at the plan's batch, warm, median (p90) over ``--runs``, slotted (adapter on) against
  merged: the run-time adapter's overhead per step;
- quantization (int8 base + float adapter): the int8 recipes (ONNX int8-static, ExecuTorch int8) calibrated on the
  base model with the adapter's products left in float, against the adapter merged before quantization, both against
  the float PyTorch model with the adapter merged.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mobilediff.bench.envelope import Parser, command_line, count, envelope, fmt, json_safe, savefig, write_results

# adapter -> the model it was trained on, and the plan it samples with (None: the model's own)
ADAPTERS = {"default:swap-red-blue": ("default", None), "default:emoji-monochrome": ("default:emoji", None),
            "default:lcm-lora": ("default", ("lcm", 4, 1.0))}
# (runtime, recipe): None is fp32
VARIANTS = (("onnx", None), ("executorch", None), ("onnx", "int8-static"), ("executorch", "int8"))
PROMPTS = {"default": ["a red circle and a blue square", "a big blue triangle at the top left",
                       "a small red square at the bottom right and a blue circle"],
           "default:emoji": ["cat face", "red heart", "smiling face with sunglasses"]}


def _bundle(work: Path, adapter: str, model: str, runtime: str, recipe: str | None, slotted: bool, say) -> Path:
    """The bundle of one variant in ``work`` (exported once; reused when its manifest is there)."""
    from mobilediff.exporter import ExportConfig, run_export
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.lora import apply_adapters, parse_adapter

    name = f"{adapter.split(':')[-1]}-{runtime}-{recipe or 'fp32'}-{'slotted' if slotted else 'merged'}"
    out = work / name
    if (out / "manifest.json").is_file():
        return out
    say(f"export {name}")
    pipe = load_pipeline(model)
    a = parse_adapter(adapter)
    merged = () if slotted else tuple(apply_adapters(pipe, [a]))
    cfg = ExportConfig.of(runtime, out, source=model, model_dir=resolve_model(model), quantize=recipe, force=True,
                          ort_format=False, adapters=merged, runtime_adapters=(a,) if slotted else ())
    run_export(pipe, cfg)
    return out


def _images(runner, prompts: list[str], seeds: list[int], plan) -> np.ndarray:
    from mobilediff.data import to_uint8

    return np.stack([to_uint8(runner.generate(p, s, plan.steps, plan.sampler, plan.guidance))[0]
                     for p in prompts for s in seeds])


def _plan(manifest, override):
    from mobilediff.bundle import SamplingPlan

    if override is None:
        return manifest.plan
    sampler, steps, guidance = override
    return SamplingPlan(sampler=sampler, steps=steps, guidance=guidance)


def _reference(model: str, adapter: str, prompts: list[str], seeds: list[int], plan):
    """The PyTorch model with the adapter merged (``generate --model M --lora A``), at the bundle's plan: its 8-bit
    images and the pipeline."""
    from mobilediff.data import to_uint8
    from mobilediff.loading import load_pipeline
    from mobilediff.lora import apply_adapters, parse_adapter
    from mobilediff.sampling import generate

    pipe = load_pipeline(model)
    apply_adapters(pipe, [parse_adapter(adapter)])
    out = generate(pipe, [p for p in prompts for _ in seeds], [s for _ in prompts for s in seeds], plan.steps,
                   plan.sampler, plan.guidance)
    return to_uint8(out), pipe


def _psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _psnr8_each(a: np.ndarray, b: np.ndarray) -> list[float]:
    """PSNR of each image pair: one image whose sampling took another turn dominates the pooled number."""
    return [_psnr8(x, y) for x, y in zip(a, b)]


class _Recorder:
    """A bundle's UNet runner that records the inputs of every call (the sampling trajectory)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args):
        self.calls.append([a.clone() for a in args])
        return self.inner(*args)


def _trajectory(slot, merged, pipe, prompt: str, seed: int, plan) -> dict:
    """The UNet alone along a real trajectory: the merged bundle's UNet inputs at every step of one generate, fed to
    the PyTorch UNet with the adapter merged, the merged bundle's UNet and the slotted one (adapter on). Separates
    the UNet's error per step from its amplification by the sampler over the steps."""
    from mobilediff.components import UnetWrapper
    from mobilediff.parity import psnr

    unet = merged.parts["unet"]
    rec = merged.parts["unet"] = _Recorder(unet)
    try:
        merged.generate(prompt, seed, plan.steps, plan.sampler, plan.guidance)
    finally:
        merged.parts["unet"] = unet
    torch_unet = UnetWrapper(pipe.unet, bool(pipe.unet.config.time_cond_proj_dim)).eval()
    lora = slot.lora_inputs()["unet"]
    got = {"slotted": [], "merged": []}
    with torch.no_grad():
        for args in rec.calls:
            ref = torch_unet(*args)[0]
            got["merged"].append(psnr(unet(*args)[0], ref))
            got["slotted"].append(psnr(slot.parts["unet"](*args, lora)[0], ref))
    return {f"trajectory_{k}_vs_pytorch_db": {"median": float(np.median(v)), "min": float(np.min(v)), "steps": v}
            for k, v in got.items()}


def _merge_ms(runner, name: str, runs: int) -> float:
    """Host time to fold the adapter into its layers' weights (W + up @ down for each adapted layer, float32 numpy):
    what a switch by swapping weights (merged graphs, ONNX external initializers, an ExecuTorch data file) adds to
    the UNet reload when the merged weights are made on the phone."""
    from mobilediff.runtime_lora import read_bundle_adapter

    f = next(f for f in runner.manifest.adapters["files"] if f["name"] == name)
    layers = read_bundle_adapter(runner.bundle / f["path"]).get("unet", {})
    pairs = [(down.numpy(), up.numpy()) for down, up in layers.values()]
    weights = [np.zeros((up.shape[0], down.shape[1]), np.float32) for down, up in pairs]

    def merge():
        for w, (down, up) in zip(weights, pairs):
            w += up @ down
    return _median_ms(merge, runs)[0]


def _median_ms(fn, runs: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times)), float(np.percentile(times, 90))


def _unet_call(runner):
    """One UNet call of ``runner`` (resident) at the manifest's example inputs and its current adapters."""
    from mobilediff.bench.bundles import component_inputs

    args = component_inputs(runner.manifest, "unet")
    lora = runner.lora_inputs().get("unet")
    if lora is not None:
        args[-1] = lora
    unet = runner.parts["unet"]
    return lambda: unet(*args)


def _step_ms_pair(slot, merged, runs: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (p90) UNet call of the slotted and the merged bundle, the two calls alternating so that a slower
    stretch of the machine weighs on both alike."""
    calls = (_unet_call(slot), _unet_call(merged))
    times = ([], [])
    for _ in range(3):
        for c in calls:
            c()
    for _ in range(runs):
        for c, t in zip(calls, times):
            t0 = time.perf_counter()
            c()
            t.append((time.perf_counter() - t0) * 1000)
    return tuple((float(np.median(t)), float(np.percentile(t, 90))) for t in times)


def measure(work: Path, adapter: str, model: str, runtime: str, recipe: str | None, seeds: list[int], runs: int,
            threads: int, say, references: dict, plan_override=None) -> dict:
    from mobilediff.engine import BundleRunner

    name = adapter.split(":")[-1]
    slot_dir = _bundle(work, adapter, model, runtime, recipe, True, say)
    merged_dir = _bundle(work, adapter, model, runtime, recipe, False, say)
    slot = BundleRunner(slot_dir, runtime, threads=threads)
    merged = BundleRunner(merged_dir, runtime, threads=threads)
    m = slot.manifest
    unet_file = m.component("unet").files[0]
    adapter_file = m.adapters["files"][0]
    prompts = PROMPTS[model]
    plan = _plan(m, plan_override)
    if adapter not in references:
        say(f"{name}: PyTorch reference images (adapter merged)")
        references[adapter] = _reference(model, adapter, prompts, seeds, plan)
    ref, ref_pipe = references[adapter]
    # switch times: the first switch reads and checks the file, later ones repack the cached adapter
    t0 = time.perf_counter()
    slot.set_adapters([(name, 1.0)])
    first_ms = (time.perf_counter() - t0) * 1000
    switch_ms, _ = _median_ms(lambda: (slot.set_adapters([]), slot.set_adapters([(name, 1.0)])), runs)
    slot.set_adapters([(name, 1.0)])
    with_adapter = _images(slot, prompts, seeds, plan)
    slot.set_adapters([])
    base = _images(slot, prompts, seeds, plan)
    slot.set_adapters([(name, 1.0)])
    merged_images = _images(merged, prompts, seeds, plan)
    step_slot, step_merged = _step_ms_pair(slot, merged, runs)
    # switching by reloading instead: what a bundle whose adapter lives in the weights (merged, or swapped in as ONNX
    # external initializers / an ExecuTorch data file) pays to change adapter: the UNet loaded again
    reload_ms, _ = _median_ms(lambda: merged._load("unet"), max(3, runs // 4))
    merge_ms = _merge_ms(slot, name, max(3, runs // 4))
    trajectory = _trajectory(slot, merged, ref_pipe, prompts[0], seeds[0], plan)
    each = _psnr8_each(with_adapter, ref)
    merged_each = _psnr8_each(merged_images, ref)
    row = {"adapter": adapter, "model": model, "runtime": runtime, "precision": recipe or "fp32",
           "adapter_rank": adapter_file["rank"], "adapter_layers": adapter_file["layers"],
           "slots_rank": m.adapters["slots"]["unet"]["rank"], "slots_values": m.adapters["slots"]["unet"]["size"],
           "adapter_file_bytes": adapter_file["size_bytes"], "unet_graph_bytes": unet_file.size_bytes,
           "merged_unet_graph_bytes": merged.manifest.component("unet").files[0].size_bytes,
           "unet_parity_vs_merged_db": unet_file.parity.get("adapters", {}).get(name, {}).get("psnr_db"),
           "unet_parity_floor_db": unet_file.parity.get("min_psnr_db"),
           "image_psnr_vs_merged_bundle_db": _psnr8(with_adapter, merged_images),
           "image_psnr_vs_pytorch_merged_db": _psnr8(with_adapter, ref),
           "merged_bundle_psnr_vs_pytorch_merged_db": _psnr8(merged_images, ref),
           "adapter_effect_db": _psnr8(base, with_adapter),
           "plan": {"sampler": plan.sampler, "steps": plan.steps, "guidance": plan.guidance},
           "first_switch_ms": first_ms, "switch_ms": switch_ms / 2,
           "step_ms_slotted": step_slot[0], "step_p90_ms_slotted": step_slot[1],
           "step_ms_merged": step_merged[0], "step_p90_ms_merged": step_merged[1],
           "step_overhead": step_slot[0] / step_merged[0] - 1, "images": len(prompts) * len(seeds),
           "unet_reload_ms": reload_ms, "merge_ms": merge_ms,
           "image_psnr_each_vs_pytorch_merged_db": each, "merged_bundle_psnr_each_vs_pytorch_merged_db": merged_each,
           **trajectory}
    say(f"{name} {runtime} {recipe or 'fp32'}: step {step_slot[0]:.2f} vs {step_merged[0]:.2f} ms merged "
        f"({100 * row['step_overhead']:+.1f}%), image vs merged bundle {row['image_psnr_vs_merged_bundle_db']:.1f} dB")
    return row


def write_markdown(result: dict) -> str:
    s = result["settings"]
    lines = ["# Run-time LoRA adapters against adapters merged at export", "",
             f"Generated by `{result['command']}` ({result['created']}; load average "
             f"{result['machine'].get('load_average')}, {s['threads']} thread(s)). For each embedded adapter: a "
             f"*slotted* bundle (`export --runtime-lora`: the adapter a separate file fed as the UNet's `lora_weights` "
             f"input) and a *merged* one (`export --lora`) per runtime and precision, adapter at scale 1, the model's "
             f"plan (default:lcm-lora: LCM-4, guidance 1), {s['seeds']} seed(s) x 3 prompts. Step: one UNet call at the plan's batch, warm, median over "
             f"{s['runs']} runs, slotted and merged calls alternating. int8: calibrated on every row with the adapter off and on; the slotted adapter's products stay float.", "",
             "| adapter | runtime | precision | adapter file | UNet graph | UNet vs merged PyTorch (export check) | "
             "UNet along a trajectory, slotted / merged vs PyTorch (median, min) | "
             "image vs PyTorch merged: slotted (median, min) | merged bundle (median, min) | image vs merged bundle | "
             "step slotted | step merged | overhead | switch (first) | weight swap: merge + UNet reload |",
             "|" + "---|" * 15]

    def spread(pooled, each):
        return f"{fmt(pooled, '.1f')} ({fmt(float(np.median(each)), '.1f')}, {fmt(min(each), '.1f')}) dB"

    for r in result["rows"]:
        ts, tm = r["trajectory_slotted_vs_pytorch_db"], r["trajectory_merged_vs_pytorch_db"]
        lines.append(f"| {r['adapter']} | {r['runtime']} | {r['precision']} | {r['adapter_file_bytes'] / 1024:.0f} KiB | "
                     f"{r['unet_graph_bytes'] / 2**20:.2f} MiB | {fmt(r['unet_parity_vs_merged_db'], '.1f')} dB | "
                     f"{ts['median']:.1f}, {ts['min']:.1f} / {tm['median']:.1f}, {tm['min']:.1f} dB | "
                     f"{spread(r['image_psnr_vs_pytorch_merged_db'], r['image_psnr_each_vs_pytorch_merged_db'])} | "
                     f"{spread(r['merged_bundle_psnr_vs_pytorch_merged_db'], r['merged_bundle_psnr_each_vs_pytorch_merged_db'])} | "
                     f"{fmt(r['image_psnr_vs_merged_bundle_db'], '.1f')} dB | {r['step_ms_slotted']:.2f} ms | "
                     f"{r['step_ms_merged']:.2f} ms | {100 * r['step_overhead']:+.1f}% | "
                     f"{r['switch_ms']:.2f} ({r['first_switch_ms']:.1f}) ms | "
                     f"{r['merge_ms']:.1f} + {r['unet_reload_ms']:.1f} ms |")
    lines += ["", "PSNR of 8-bit images (inf: identical), pooled over the images and per image (median, min): one image "
              "whose sampling takes another turn (a background tone, a shape drawn or not) dominates the pooled "
              "number. *UNet along a trajectory*: the merged bundle's UNet inputs at every step of the first prompt "
              "and seed, fed to the PyTorch UNet with the adapter merged, to the merged bundle's UNet and to the "
              "slotted one with the adapter on (PSNR of the outputs per step): the UNet's own error, apart from its "
              "amplification over the sampler's steps. *adapter effect*: the slotted bundle with the adapter against "
              "itself without it (lower = a larger change), per row in the JSON (`adapter_effect_db`). *switch*: "
              "repacking the `lora_weights` vector on the host (the first switch also reads and checks the file); no "
              "graph is rebuilt or reloaded. *weight swap*: what a switch costs when the adapter lives in the weights "
              "(a merged graph per adapter, or the weights swapped as ONNX external initializers or an ExecuTorch data "
              "file): the host's merge of the adapter into its layers' weights (numpy, median) plus loading the merged "
              "bundle's UNet again (median); such a bundle then runs at the merged step time.",
              "", "`runtime_adapters.png`: step time slotted against merged per runtime and precision."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict]):
    from mobilediff.bench.envelope import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = [f"{r['adapter'].split(':')[-1]}\n{r['runtime']} {r['precision']}" for r in rows]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["step_ms_merged"] for r in rows], 0.4, label="merged at export")
    ax.bar(x + 0.2, [r["step_ms_slotted"] for r in rows], 0.4, label="run-time adapter")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("UNet step (ms, median)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    ap = Parser(doc)
    ap.add_argument("--work", type=Path, default=Path("../runs/runtime-adapters"),
                    help="Folder of the exported bundles (reused when there; default ../runs/runtime-adapters).")
    ap.add_argument("--adapter", nargs="+", default=list(ADAPTERS), choices=list(ADAPTERS),
                    help="Embedded adapters to measure (default: all; default:lcm-lora at LCM-4, guidance 1).")
    ap.add_argument("--fp32-only", action="store_true", help="Skip the int8 variants.")
    ap.add_argument("--seeds", type=count(1), default=2, help="Seeds per prompt (default 2).")
    ap.add_argument("--runs", type=count(1), default=50, help="Timed runs per step / switch (default 50).")
    ap.add_argument("--threads", type=count(1), default=1, help="Runtime threads (default 1).")
    ap.add_out(results, "result folder (default benchmarks/results)")
    a = ap.parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(a.threads)
    rows, references = [], {}
    for adapter in a.adapter:
        model, plan = ADAPTERS[adapter]
        for runtime, recipe in VARIANTS:
            if recipe is not None and (a.fp32_only or adapter != "default:swap-red-blue"):
                continue  # int8: one adapter shows what quantization does
            rows.append(measure(a.work, adapter, model, runtime, recipe, list(range(a.seeds)), a.runs, a.threads,
                                print, references, plan))
    result = {**envelope("runtime_adapters", command_line("runtime_adapters", argv), t0),
              "settings": {"seeds": a.seeds, "runs": a.runs, "threads": a.threads, "adapters": a.adapter},
              "rows": rows}
    write_results(a.out, {"runtime_adapters.md": write_markdown(result), "runtime_adapters.json": json_safe(result),
                          "runtime_adapters.png": savefig(plot(rows))})
    print(f"wrote {a.out / 'runtime_adapters.md'}, .json and .png")
    return result
