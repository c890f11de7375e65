"""Operator profiles (mobilediff/bench/op_profile.py): the kinds operators are put in, and real profiles of small
graphs on ONNX Runtime (a hand-built Conv graph with quantize / dequantize nodes) and ExecuTorch (a conv + group
norm module lowered to XNNPACK, group norm left on a portable kernel)."""
from __future__ import annotations

import pytest
import torch

from mobilediff.bench.op_profile import KINDS, op_kind, summarize_ops


@pytest.mark.parametrize("name,kind", [
    ("Conv", "gemm"), ("QLinearConv", "gemm"), ("MatMulInteger", "gemm"), ("FusedConv", "gemm"),
    ("Convolution (NHWC, F32) IGEMM", "gemm"), ("Convolution (NHWC, QD8, F32, QC8W) IGEMM", "gemm"),
    ("Fully Connected (NC, F32) GEMM", "gemm"), ("Batch Matrix Multiply (NC, F32) GEMM", "gemm"),
    ("QuantizeLinear", "quantize"), ("DequantizeLinear", "quantize"), ("DynamicQuantizeLinear", "quantize"),
    ("Convert (NC, F32, QD8)", "quantize"), ("GroupNorm", "norm"), ("LayerNormalization", "norm"),
    ("native_call_native_group_norm.out", "norm"), ("Softmax (NC, F32)", "norm"), ("Sigmoid (NC)", "elementwise"),
    ("Multiply (ND)", "elementwise"), ("Add", "elementwise"), ("Transpose (ND, X32)", "other"), ("Resize", "other"),
])
def test_operator_kinds(name, kind):
    assert op_kind(name) == kind


def test_summary_accounts_for_every_millisecond():
    s = summarize_ops({"Conv": 2.0, "QuantizeLinear": 0.5, "Sigmoid": 0.25, "Transpose": 0.25}, total_ms=4.0, calls=3)
    assert s["kinds"] == {"gemm": 2.0, "quantize": 0.5, "norm": 0.0, "elementwise": 0.25, "other": 0.25,
                          "overhead": 1.0}
    assert list(s["ops"]) == ["Conv", "QuantizeLinear", "Sigmoid", "Transpose"] and s["kernel_ms"] == 3.0
    assert summarize_ops({"Conv": 2.0}, total_ms=1.5, calls=1)["kinds"]["overhead"] == 0.0  # never negative
    assert set(s["kinds"]) == set(KINDS)


def test_a_slow_call_does_not_split_the_total_from_its_kernels():
    """The total and its breakdown come from one call (the median one): a slow call among fast ones cannot make the
    kernels outweigh the total."""
    from types import SimpleNamespace

    from mobilediff.bench.op_profile import et_events_summary, ort_events_summary

    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(ts, dur, op):
        return {"cat": "Node", "name": f"n_{ts}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    # calls at 0, 1000, 2000 (warm-up at -1000 dropped); the call at 1000 is slow (900 us of Conv)
    events = [run(-1000, 500), node(-990, 400, "Conv"), run(0, 100), node(10, 80, "Conv"),
              run(1000, 1000), node(1010, 900, "Conv"), run(2000, 120), node(2010, 90, "Conv"), node(2100, 10, "Add")]
    s = ort_events_summary(events, runs=3)
    assert s["calls"] == 3 and s["total_ms"] == pytest.approx(0.12) and s["ops"] == pytest.approx(
        {"Conv": 0.09, "Add": 0.01})
    assert s["kernel_ms"] <= s["total_ms"]

    def ev(name, raw):
        return SimpleNamespace(name=name, perf_data=SimpleNamespace(raw=raw))

    et = [ev("Method::execute", [9.0, 1.0, 10.0, 1.2]), ev("Convolution (NHWC, F32) IGEMM #1", [8.0, 0.8, 9.5, 0.9]),
          ev("DELEGATE_CALL", [8.5, 0.9, 9.8, 1.0]), ev("native_call_add.out", [0.1, 0.3])]
    s = et_events_summary(et, runs=3)
    assert s["total_ms"] == 1.2 and s["ops"]["Convolution (NHWC, F32) IGEMM"] == 0.9
    assert s["ops"]["native_call_add.out"] == pytest.approx(0.2)  # not timed once per call: averaged
    assert s["kernel_ms"] <= s["total_ms"]


def _qdq_conv_graph(path):
    """x -> QuantizeLinear -> DequantizeLinear -> Conv (float weights) -> Sigmoid: one op of each kind."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8, 3, 3)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.05, dtype=np.float32), "s")
    zero = numpy_helper.from_array(np.array(128, dtype=np.uint8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Conv", ["xd", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])],
                              initializer=[w, scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model.ir_version = 9
    onnx.save(model, str(path))


def test_onnx_profile_counts_only_the_timed_calls(tmp_path):
    import numpy as np

    from mobilediff.bench.op_profile import profile_onnx

    _qdq_conv_graph(tmp_path / "g.onnx")
    feed = {"x": np.random.default_rng(1).standard_normal((1, 8, 32, 32)).astype(np.float32)}
    prof = profile_onnx(tmp_path / "g.onnx", feed, runs=4, warmup=3, threads=1)
    assert prof["calls"] == 4  # the warm-up calls are not in the profile
    assert prof["kinds"]["gemm"] > 0 and prof["total_ms"] >= prof["kernel_ms"] > 0
    # the CPU provider may fuse the quantize pair away; whatever runs is accounted for in some kind
    assert abs(sum(prof["kinds"].values()) - max(prof["total_ms"], prof["kernel_ms"])) < 1e-6


def test_executorch_profile_sees_xnnpack_kernels_and_portable_ops(tmp_path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from mobilediff.bench.op_profile import profile_executorch

    m = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.GroupNorm(4, 16), torch.nn.SiLU(),
                            torch.nn.Conv2d(16, 4, 3, padding=1)).eval()
    x = (torch.randn(1, 4, 16, 16),)
    prog = to_edge_transform_and_lower(torch.export.export(m, x), partitioner=[XnnpackPartitioner()]).to_executorch()
    (tmp_path / "m.pte").write_bytes(prog.buffer)
    prof = profile_executorch(tmp_path / "m.pte", list(x), runs=3, warmup=2)
    assert prof["calls"] == 3
    assert any(name.startswith("Convolution (NHWC, F32)") for name in prof["ops"])  # XNNPACK's own kernel names
    assert not any("#" in name for name in prof["ops"])  # instances of one kernel are summed
    assert prof["kinds"]["gemm"] > 0 and prof["total_ms"] > 0
    assert "DELEGATE_CALL" not in prof["ops"] and "Method::execute" not in prof["ops"]  # wrappers are not kernels
