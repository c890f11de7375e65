"""Where a component's time goes, operator by operator, on ONNX Runtime and ExecuTorch: the evidence for "int8 that
pays" (or why it does not).

- ONNX Runtime: the session's own profiler (``SessionOptions.enable_profiling``); only the kernel times of the timed
  calls are kept (node events inside the last ``runs`` ``model_run`` windows; warm-up calls are dropped).
- ExecuTorch: the program loaded with an ETDump (``portable_lib._load_for_executorch(..., enable_etdump=True)``) and
  read with the developer tools' ``Inspector``: XNNPACK's own per-operator events inside each delegate call (the
  kernel names say the precision: ``Convolution (NHWC, F32) IGEMM`` against ``Convolution (NHWC, QD8, F32, QC8W)
  IGEMM``), the portable kernels' ``native_call_*`` events outside them, and ``Method::execute`` as the call's total.

Every operator is put in one of a few kinds (:func:`op_kind`): ``gemm`` (convolutions and matrix multiplies, float
or integer), ``quantize`` (quantize / dequantize / dtype conversions: the cost int8 adds), ``norm`` (group and
layer norms, softmax and their reductions), ``elementwise`` and ``other``; what the call took beyond its kernels is
``overhead`` (dispatch, copies between delegate calls). A profiled call runs slower than an unprofiled one (every
kernel is timed), so compare kinds within one profile and take latency from run_device.

``benchmarks/op_profile.py`` runs :func:`main`: every ONNX and ExecuTorch file of the chosen components of each
bundle profiled, with its FLOPs as a share of this machine's GEMM peak.
"""
from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from mobilediff.bench.envelope import Parser, command_line, count, envelope, write_results

KINDS = ("gemm", "quantize", "norm", "elementwise", "other", "overhead")

# ONNX op types are matched whole; XNNPACK kernel names ("Convolution (NHWC, F32) IGEMM") and portable kernels
# ("native_call_convolution.out") by their first words
_GEMM = re.compile(r"^((Conv|QConv|ConvInteger|QLinearConv|FusedConv|NhwcFusedConv|QLinearMatMul|MatMul|MatMulInteger|"
                   r"MatMulIntegerToFloat|DynamicQuantizeMatMul|FusedMatMul|Gemm|QGemm|Attention|MultiHeadAttention|"
                   r"ConvTranspose)$|(Convolution|Deconvolution|Fully Connected|Batch Matrix Multiply)\b|"
                   r"native_call_(convolution|mm|bmm|addmm|linear)\b)", re.I)
_QUANT = re.compile(r"^((QuantizeLinear|DequantizeLinear|DynamicQuantizeLinear|QLinearSigmoid|Cast)$|Convert\b|"
                    r"native_call_(quantize|dequantize|choose_qparams|_to_copy|_to_dim_order_copy))", re.I)
_NORM = re.compile(r"^((GroupNorm|LayerNormalization|SimplifiedLayerNormalization|SkipLayerNormalization|"
                   r"InstanceNormalization|BatchNormalization|ReduceMean|ReduceSum|Softmax)$|"
                   r"(Mean|Sum|Square Root|Reciprocal Square Root|Softmax)\b|"
                   r"native_call_(native_group_norm|native_layer_norm|mean|var|_softmax|softmax))", re.I)
_ELEMENTWISE = re.compile(r"^((Add|Sub|Mul|Div|Sigmoid|QuickGelu|Gelu|BiasGelu|FastGelu|Erf|Tanh|Exp|Sqrt|Pow|Neg|Abs|"
                          r"Clip|Relu|Max|Min|Where|Sin|Cos)$|(Add|Subtract|Multiply|Divide|Sigmoid|Clamp|Square|"
                          r"Copy|Tanh|ELU|GELU|Sine|Cosine|Negate)\b|"
                          r"native_call_(add|sub|mul|div|sigmoid|silu|gelu|sin|cos|exp|where|neg))", re.I)


def op_kind(name: str) -> str:
    """The kind of one operator (an ONNX op type, an XNNPACK kernel name or a portable ``native_call_*``)."""
    for kind, rx in (("gemm", _GEMM), ("quantize", _QUANT), ("norm", _NORM), ("elementwise", _ELEMENTWISE)):
        if rx.match(name):
            return kind
    return "other"


def _kernel_name(event_name: str) -> str:
    """An XNNPACK event name without its instance number ('Convolution (NHWC, F32) IGEMM #3' -> '... IGEMM')."""
    return re.sub(r"\s*#\d+$", "", event_name).strip()


def summarize_ops(per_call_ms: dict[str, float], total_ms: float, calls: int) -> dict:
    """A profile record: ``total_ms`` (one call, the median one), ``ops`` {name: ms per call, largest first}, ``kinds``
    {kind: ms per call} with ``overhead`` = total - kernels (never below 0), and ``kernel_ms``."""
    kernel = sum(per_call_ms.values())
    kinds = dict.fromkeys(KINDS, 0.0)
    for name, ms in per_call_ms.items():
        kinds[op_kind(name)] += ms
    kinds["overhead"] = max(0.0, total_ms - kernel)
    return {"total_ms": total_ms, "kernel_ms": kernel, "calls": calls,
            "kinds": kinds, "ops": dict(sorted(per_call_ms.items(), key=lambda kv: -kv[1]))}


# ------------------------------------------------------------------------------------------------- ONNX Runtime
def ort_events_summary(events: list[dict], runs: int) -> dict:
    """:func:`summarize_ops` of an ONNX Runtime profile (its JSON event list): the median of the last ``runs``
    ``model_run`` windows and the node kernel times (per op type, ``args.op_name``) inside that one window, so the
    total and its breakdown describe the same call (kernels averaged over calls and a median total disagree as soon as
    one call is slow)."""
    windows = sorted(((e["ts"], e["ts"] + e["dur"]) for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda w: w[0])[-runs:]
    if not windows:
        raise ValueError("the profile has no model_run events")
    a, b = _median_call(windows, lambda w: w[1] - w[0])
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if a <= e["ts"] <= b:
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1000.0
    return summarize_ops(per_op, (b - a) / 1000.0, len(windows))


def _median_call(calls: list, duration):
    """The call of median ``duration`` (the lower middle one of an even count)."""
    ordered = sorted(calls, key=duration)
    return ordered[(len(ordered) - 1) // 2]


def profile_onnx(path: Path, feed: dict, runs: int, warmup: int, threads: int | None) -> dict:
    """Profile ``runs`` calls of the ONNX graph at ``path`` (after ``warmup`` untimed ones) on the CPU provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as td:
        opts.profile_file_prefix = str(Path(td) / "ort")
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    return ort_events_summary(events, runs)


# -------------------------------------------------------------------------------------------------- ExecuTorch
_WRAPPERS = {"DELEGATE_CALL", "OPERATOR_CALL", "Method::execute", "Method::init", "Program::load_method"}


def et_events_summary(events, runs: int) -> dict:
    """:func:`summarize_ops` of ExecuTorch Inspector events (``name``, ``perf_data.raw``: one time in ms per call):
    the call of median ``Method::execute`` among the last ``runs`` and the leaf events (XNNPACK kernels, portable
    ``native_call_*``) of that call; an event not timed once per call is averaged over its last ``runs`` times."""
    execute = next((list(e.perf_data.raw)[-runs:] for e in events
                    if e.name == "Method::execute" and e.perf_data is not None and list(e.perf_data.raw)), None)
    if execute is None:
        raise ValueError("the ETDump has no Method::execute events")
    k = _median_call(list(range(len(execute))), lambda i: execute[i])
    per_op: dict[str, float] = {}
    for e in events:
        raw = list(e.perf_data.raw)[-runs:] if e.perf_data is not None else []
        if not raw or e.name in _WRAPPERS:
            continue
        name = _kernel_name(e.name)
        per_op[name] = per_op.get(name, 0.0) + (raw[k] if len(raw) == len(execute) else statistics.fmean(raw))
    return summarize_ops(per_op, execute[k], len(execute))


def profile_executorch(path: Path, inputs: list, runs: int, warmup: int) -> dict:
    """Profile ``runs`` calls of the ExecuTorch program at ``path`` (after ``warmup`` untimed ones)."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from mobilediff.quiet import quiet_stderr

    with quiet_stderr():
        module = _load_for_executorch(str(path), enable_etdump=True)
        args = [x.contiguous() for x in inputs]
        for _ in range(warmup + runs):
            module.forward(args)
    with tempfile.TemporaryDirectory() as td:
        dump = Path(td) / "run.etdp"
        module.write_etdump_result_to_file(str(dump))
        with quiet_stderr():
            inspector = Inspector(etdump_path=str(dump))
        events = [e for block in inspector.event_blocks if block.name == "Execute" for e in block.events]
    return et_events_summary(events, runs)


# ------------------------------------------------------------------------------------ the benchmark
TARGETS = ("onnx", "executorch")  # the host runtimes with a per-operator profiler here


def profile_rows(bundle: Path, components: list[str], runs: int, warmup: int, threads: int) -> list[dict]:
    """One profile row per ONNX / ExecuTorch file of each of ``components`` in ``bundle``, on the manifest's example
    inputs."""
    import numpy as np

    from mobilediff.bench.bundles import component_inputs
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


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    """The command line of ``benchmarks/op_profile.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, every bundle's
    components profiled, written to ``--out``; returns the result. ``doc``: the script's docstring (its ``--help``);
    ``results``: the default ``--out`` (None: ``--out`` is required)."""
    ap = Parser(doc)
    ap.add_argument("--bundle", action="append", type=Path, required=True, help="a bundle folder (repeatable)")
    ap.add_argument("--component", nargs="+", default=["unet", "vae_decoder"],
                    help="components to profile (default: unet vae_decoder)")
    ap.add_argument("--runs", type=count(1), default=30, help="profiled calls after warm-up (default 30)")
    ap.add_argument("--warmup", type=count(0), default=5, help="untimed calls first (default 5)")
    ap.add_argument("--threads", type=count(1), default=1, help="runtime threads (default 1)")
    ap.add_out(results, "result folder (default benchmarks/results)")
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
