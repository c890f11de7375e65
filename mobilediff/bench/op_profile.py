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
"""
from __future__ import annotations

import json
import re
import statistics
import tempfile
from pathlib import Path

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
    """A profile record: ``total_ms`` (median call), ``ops`` {name: ms per call, largest first}, ``kinds``
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
    """:func:`summarize_ops` of an ONNX Runtime profile (its JSON event list): the node kernel times inside the last
    ``runs`` ``model_run`` windows, per op type (``args.op_name``), averaged per call."""
    windows = sorted(((e["ts"], e["ts"] + e["dur"]) for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda w: w[0])[-runs:]
    if not windows:
        raise ValueError("the profile has no model_run events")
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if any(a <= e["ts"] <= b for a, b in windows):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1000.0
    n = len(windows)
    total = statistics.median((b - a) / 1000.0 for a, b in windows)
    return summarize_ops({k: v / n for k, v in per_op.items()}, total, n)


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
    leaf events (XNNPACK kernels, portable ``native_call_*``) averaged over the last ``runs`` calls, the total
    the median of ``Method::execute``."""
    per_op: dict[str, float] = {}
    total = None
    for e in events:
        raw = list(e.perf_data.raw) if e.perf_data is not None else []
        if not raw:
            continue
        if e.name == "Method::execute":
            total = statistics.median(raw[-runs:])
        elif e.name not in _WRAPPERS:
            name = _kernel_name(e.name)
            per_op[name] = per_op.get(name, 0.0) + statistics.fmean(raw[-runs:])
    if total is None:
        raise ValueError("the ETDump has no Method::execute events")
    return summarize_ops(per_op, total, runs)


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
