"""What this machine's matrix multiply reaches, so that a component's latency can be read as a share of it: the
GEMM peak measured at the run's own thread count, fp32 and int8, and each measured component's GFLOP/s as a
fraction of that peak.

The peak is the best of ONNX Runtime's CPU provider (MLAS: ``MatMul`` fp32, ``MatMulInteger`` uint8 x int8 ->
int32) and PyTorch's ``torch.mm`` (fp32) on square matrices of ``n`` (default 1024: big enough to run at full
speed, small enough to stay in the caches of a phone-class core), ``runs`` timed calls after warm-up, the fastest
kept (a peak is a best case). A component that reaches 20 % of it is bound by something else than its multiplies:
small convolutions, memory traffic, normalisations, dispatch between kernels.
"""
from __future__ import annotations

import time

INT8_PRECISIONS = ("int8", "int8-decoder", "int8-static", "int8-dynamic")


def _best_seconds(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _ort_matmul(n: int, threads: int | None, int8: bool):
    """A callable running one n x n x n MatMul (or MatMulInteger) in an ONNX Runtime session."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if int8:
        a_t, b_t, out_t, op = TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, "MatMulInteger"
        rng = np.random.default_rng(0)
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = rng.integers(-127, 127, (n, n), dtype=np.int8)
    else:
        a_t = b_t = out_t = TensorProto.FLOAT
        op = "MatMul"
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "gemm_peak",
                              [helper.make_tensor_value_info("a", a_t, [n, n]),
                               helper.make_tensor_value_info("b", b_t, [n, n])],
                              [helper.make_tensor_value_info("y", out_t, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"a": a, "b": b})


def gemm_peak(threads: int | None, n: int = 1024, runs: int = 10) -> dict:
    """{"n", "threads", "fp32_gflops", "int8_gops", "measured": {how: GFLOP/s}}: the best of each kind."""
    import torch

    flop = 2 * n ** 3 / 1e9
    measured = {}
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        a, b = torch.randn(n, n), torch.randn(n, n)
        with torch.no_grad():
            measured["torch.mm fp32"] = flop / _best_seconds(lambda: torch.mm(a, b), runs)
    finally:
        torch.set_num_threads(before)
    measured["onnxruntime MatMul fp32"] = flop / _best_seconds(_ort_matmul(n, threads, False), runs)
    measured["onnxruntime MatMulInteger int8"] = flop / _best_seconds(_ort_matmul(n, threads, True), runs)
    return {"n": n, "threads": threads, "runs": runs,
            "fp32_gflops": max(v for k, v in measured.items() if "fp32" in k),
            "int8_gops": measured["onnxruntime MatMulInteger int8"], "measured": measured}


def peak_for(precision: str, peak: dict | None) -> float | None:
    """The peak a component of ``precision`` is measured against: int8 recipes against the int8 peak, the rest
    (fp32, fp16 computed in fp32 on these CPUs, palettized weights) against fp32."""
    if not peak:
        return None
    return peak["int8_gops"] if precision in INT8_PRECISIONS else peak["fp32_gflops"]


def attach_compute(rows: list[dict], peak: dict | None) -> None:
    """Give every component row (with ``gflop``: FLOPs of one call at its shapes, None if unknown) ``gflops_per_s``
    (gflop / median latency) and ``peak_fraction`` (of :func:`gemm_peak` for its precision; None without a peak)."""
    for r in rows:
        g = r.get("gflop")
        median = (r.get("latency") or {}).get("median_ms")
        rate = g / (median / 1e3) if g is not None and median else None
        p = peak_for(r.get("precision", "fp32"), peak)
        r.update(gflop=g, gflops_per_s=rate, peak_fraction=rate / p if rate is not None and p else None)
