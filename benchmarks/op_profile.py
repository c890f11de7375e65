"""Operator profiles of exported components: where a UNet step's (or a decoder's) time goes on ONNX Runtime and
ExecuTorch, float against int8, so that "int8 that pays" is answered by measurement (mobilediff/bench/op_profile.py
has the profilers and the operator kinds).

For every --bundle and every ONNX / ExecuTorch file of each --component in it: --runs profiled calls after --warmup
on the manifest's example inputs (mobilediff.bench.bundles.component_inputs), at --threads, each row with the
median profiled call, time per operator kind (gemm, quantize, norm, elementwise, other, overhead), the top
operators, and the component's FLOPs (the manifest's gflop) as GFLOP/s and as a share of this machine's GEMM peak
(fp32 for float files, int8 for int8 ones; mobilediff.bench.peak).

Writes to --out (default benchmarks/results/):
  op_profile.json   rows {bundle, component, runtime, precision, total_ms, kernel_ms, kinds, ops, gflop,
                    gflops_per_s, peak_fraction}, gemm_peak, settings, machine, versions
  op_profile.md     per component: the kinds table (ms per call) and each row's top operators
  op_profile.png    stacked time per operator kind, one bar per row

Run:  python benchmarks/op_profile.py --bundle DIR [--bundle DIR ...] [--component unet vae_decoder] [--runs 30]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from mobilediff.bench.envelope import Parser, command_line, count, envelope, run_command, write_results

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("onnx", "executorch")  # the host runtimes whose per-operator profilers mobilediff.bench.op_profile has


def profile_rows(bundle: Path, components: list[str], runs: int, warmup: int, threads: int) -> list[dict]:
    import numpy as np

    from mobilediff.bench.bundles import component_inputs
    from mobilediff.bench.op_profile import profile_executorch, profile_onnx
    from mobilediff.bundle import read_manifest, verify_file

    m = read_manifest(bundle)
    rows = []
    for comp in components:
        entry = m.component(comp)
        inputs = component_inputs(m, comp)
        for f in entry.files:
            if f.target not in TARGETS:
                continue
            path = verify_file(bundle, f)
            if f.target == "onnx":
                feed = {s.name: np.ascontiguousarray(x.numpy()) for s, x in zip(entry.inputs, inputs)}
                prof = profile_onnx(path, feed, runs, warmup, threads)
            else:
                prof = profile_executorch(path, inputs, runs, warmup)
            rows.append({"bundle": bundle.name, "path": str(bundle), "component": comp, "runtime": f.target,
                         "precision": f.tag, "gflop": entry.gflop, **prof})
    return rows


def add_efficiency(rows: list[dict], peak: dict) -> None:
    from mobilediff.bench.peak import INT8_PRECISIONS

    for r in rows:
        r["gflops_per_s"] = r["gflop"] / (r["total_ms"] / 1000.0) if r.get("gflop") else None
        ref = peak.get("int8_gops") if r["precision"] in INT8_PRECISIONS else peak.get("fp32_gflops")
        r["peak_fraction"] = r["gflops_per_s"] / ref if r["gflops_per_s"] and ref else None


def write_markdown(res: dict) -> str:
    from mobilediff.bench.op_profile import KINDS

    peak = res["gemm_peak"]
    lines = ["# Operator profiles", "",
             f"`{res['command']}`", "",
             f"{res['settings']['runs']} profiled calls after {res['settings']['warmup']} warm-up, "
             f"{res['settings']['threads']} thread(s); machine: {res['machine'].get('cpu') or res['machine'].get('platform')} ({res['machine'].get('cores', '?')} cores). "
             f"GEMM peak at this thread count: {peak['fp32_gflops']:.1f} GFLOP/s fp32, {peak['int8_gops']:.1f} GOP/s int8. "
             "Profiled calls run slower than unprofiled ones (every kernel is timed): compare kinds within a row, take "
             "latency from run_device.", ""]
    for comp in dict.fromkeys(r["component"] for r in res["rows"]):
        rows = [r for r in res["rows"] if r["component"] == comp]
        lines += [f"## {comp}", "",
                  "| bundle | runtime | precision | total ms | " + " | ".join(KINDS) + " | GFLOP/s | % of peak |",
                  "|---|---|---|---:|" + "---:|" * len(KINDS) + "---:|---:|"]
        for r in rows:
            eff = f"{r['gflops_per_s']:.1f}" if r.get("gflops_per_s") else "-"
            frac = f"{100 * r['peak_fraction']:.1f}" if r.get("peak_fraction") else "-"
            lines.append(f"| {r['bundle']} | {r['runtime']} | {r['precision']} | {r['total_ms']:.2f} | "
                         + " | ".join(f"{r['kinds'][k]:.2f}" for k in KINDS) + f" | {eff} | {frac} |")
        lines += ["", "Top operators (ms per call):", ""]
        for r in rows:
            top = ", ".join(f"{name} {ms:.2f}" for name, ms in list(r["ops"].items())[:8])
            lines.append(f"- {r['bundle']} {r['runtime']} {r['precision']}: {top}")
        lines.append("")
    return "\n".join(lines)


def plot(res: dict):
    def draw(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from mobilediff.bench.op_profile import KINDS

        rows = res["rows"]
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows) + 2), 4.5))
        labels = [f"{r['component']}\n{r['runtime']} {r['precision']}\n{r['bundle']}" for r in rows]
        bottom = [0.0] * len(rows)
        for kind in KINDS:
            vals = [r["kinds"][kind] for r in rows]
            ax.bar(range(len(rows)), vals, bottom=bottom, label=kind)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(rows)), labels, fontsize=6, rotation=0)
        ax.set_ylabel("ms per profiled call")
        ax.set_title("Where the time goes, per operator kind")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return draw


def main(argv: list[str] | None = None) -> dict:
    ap = Parser(__doc__)
    ap.add_argument("--bundle", action="append", type=Path, required=True, help="a bundle folder (repeatable)")
    ap.add_argument("--component", nargs="+", default=["unet", "vae_decoder"],
                    help="components to profile (default: unet vae_decoder)")
    ap.add_argument("--runs", type=count(1), default=30, help="profiled calls after warm-up (default 30)")
    ap.add_argument("--warmup", type=count(0), default=5, help="untimed calls first (default 5)")
    ap.add_argument("--threads", type=count(1), default=1, help="runtime threads (default 1)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="result folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    started = time.time()

    from tqdm.auto import tqdm

    from mobilediff.bench.host import import_runtime
    from mobilediff.bench.peak import gemm_peak
    from mobilediff.bundle import read_manifest

    for b in args.bundle:  # every bundle is checked before any is profiled
        m = read_manifest(b)
        for comp in args.component:
            m.component(comp)
    import_runtime("executorch", args.threads)
    import_runtime("onnx", args.threads)
    rows = []
    for b in tqdm(args.bundle, desc="profiling bundles"):
        rows += profile_rows(b, args.component, args.runs, args.warmup, args.threads)
    peak = gemm_peak(args.threads)
    add_efficiency(rows, peak)
    res = {**envelope("op_profile", command_line("op_profile", argv), started),
           "settings": {"runs": args.runs, "warmup": args.warmup, "threads": args.threads,
                        "components": args.component},
           "gemm_peak": peak, "rows": rows}
    res["wall_seconds"] = time.time() - started
    write_results(args.out, {"op_profile.md": write_markdown(res), "op_profile.png": plot(res),
                             "op_profile.json": res})
    return res


if __name__ == "__main__":
    sys.exit(run_command(main))
