"""ONNX target: torch.onnx (dynamo exporter), full onnx.checker, strict shape inference, onnxruntime parity.

Named dimensions of the declaration (``"batch"``) stay dynamic in the graph, so one UNet file serves both a
classifier-free-guidance batch of 2 and a single row. fp16 graphs keep float32 inputs and outputs (casts at
the edges) so that every runtime feeds them the same tensors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mobilediff.components import Fp16IO
from mobilediff.errors import MobilediffError
from mobilediff.parity import compare

EXT = "onnx"
OPSET = 18


def _dynamic_shapes(spec) -> tuple:
    out = []
    for s in spec.inputs:
        dims = {i: torch.export.Dim(d, min=1, max=64) for i, d in enumerate(s.shape) if isinstance(d, str)}
        out.append(dims or None)
    return tuple(out)


def export(spec, path: Path, precision: str) -> dict:
    import onnx

    path = Path(path)
    names_in = [s.name for s in spec.inputs]
    names_out = [s.name for s in spec.outputs]
    module = spec.module
    # torch.export specialises dimensions whose example size is 1: trace named dimensions at size 2
    inputs = spec.example_inputs(dims={d: 2 for d in spec.dynamic_names()})
    dynamic = _dynamic_shapes(spec)
    if precision == "fp16":
        module = Fp16IO(module)
        dynamic = {"args": dynamic}  # Fp16IO.forward(*args): torch.export sees one varargs entry
    with torch.no_grad():
        program = torch.onnx.export(module, inputs, str(path), input_names=names_in, output_names=names_out,
                                    dynamic_shapes=dynamic, dynamo=True, external_data=False,
                                    opset_version=OPSET, optimize=True, verbose=False)
    del program
    model = onnx.load(str(path))
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"opset": OPSET, "exporter": "torch.onnx (dynamo)", "nodes": len(model.graph.node),
            "op_counts": dict(sorted(ops.items())), "dynamic_dims": sorted(spec.dynamic_names())}


def _check_io(spec, model) -> None:
    from onnx import TensorProto

    want_dtype = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32}
    for kind, declared, actual in (("input", spec.inputs, model.graph.input), ("output", spec.outputs, model.graph.output)):
        got = [(v.name, v.type.tensor_type.elem_type,
                tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim)) for v in actual]
        if [g[0] for g in got] != [s.name for s in declared]:
            raise MobilediffError(f"onnx {spec.name}: {kind}s {[g[0] for g in got]} != declared {[s.name for s in declared]}")
        for (name, dtype, shape), s in zip(got, declared):
            if dtype != want_dtype[s.dtype]:
                raise MobilediffError(f"onnx {spec.name}: {kind} {name} has element type {dtype}, declared {s.dtype}")
            static = [d for d in s.shape if not isinstance(d, str)]
            if [d for d in shape if isinstance(d, int)] != static or len(shape) != len(s.shape):
                raise MobilediffError(f"onnx {spec.name}: {kind} {name} has shape {shape}, declared {s.shape}")


def validate(spec, path: Path, precision: str, inputs, reference) -> dict:
    import onnx
    import onnxruntime as ort

    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise MobilediffError(f"onnx {spec.name}: {path.name} fails the ONNX checker: {str(e).splitlines()[0]}") from None
    _check_io(spec, model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {s.name: np.ascontiguousarray(x.numpy()) for s, x in zip(spec.inputs, inputs)}
    got = sess.run([s.name for s in spec.outputs], feed)
    record = compare(spec.name, [s.name for s in spec.outputs], [torch.from_numpy(g) for g in got], reference,
                     precision, "onnx")
    record["runtime"] = f"onnxruntime {ort.__version__} CPUExecutionProvider"
    record["checker"] = "onnx.checker full_check + strict shape inference"
    return record


def load_session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session for the graph at ``path``. ``threads``: intra-op threads (onnxruntime's default,
    one per physical core, when None)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
