"""Weight-only quantization of an exported ONNX graph: the weights stored as int8 (per output channel) or int4
(blocks along the reduction axis), each behind a DequantizeLinear that ONNX Runtime runs when the layer runs, so the
session never holds a float copy of all the weights at once; activations and compute stay float.

This is the lever for memory, not for arithmetic: a graph of N float weights holds N bytes (int8) or about N/2 bytes
(int4) of them instead of 4N, at the cost of dequantizing each weight once per call (benchmarks/memory.py measures
both). onnxruntime's own quantizers need the whole model in one protobuf (2 GiB) and quantize activations too; this
pass reads a graph with external data, and writes one file when the result fits.

Which weights: the second input of Conv, ConvTranspose, Gemm and MatMul when it is an initializer (of at least
``MIN_ELEMENTS`` elements) used by no other kind of node; nodes named in ``keep`` stay float. int4 applies to MatMul
and Gemm weights only (blocks of ``block_size`` along the reduction axis, DequantizeLinear opset 21); convolutions
stay int8 at ``bits=4``. Embedding tables (the data of a Gather along axis 0: a text encoder's token and
position embeddings) are stored int8 per row and dequantized after the lookup: the rows are gathered as int8, their
scales gathered beside them, and multiplied (a DequantizeLinear in front of the Gather would materialise the whole
table at every call).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilediff.errors import MobilediffError

MIN_ELEMENTS = 1024  # smaller weights (biases, norms, tiny projections) stay float: no memory to win
MAX_SINGLE_FILE = (2 << 30) - (64 << 20)  # protobuf's 2 GiB, with room for the graph itself
INT4_OPSET = 21  # DequantizeLinear with int4 and block_size


def _weight_axis(node, index: int) -> int | None:
    """Axis of the output channels of the weight at ``node.input[index]`` (None: not a weight this pass stores)."""
    if index != 1:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "MatMul":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return None


def _is_row_gather(node, index: int) -> bool:
    """``node.input[index]`` is the table a Gather looks rows up in (axis 0)."""
    return node.op_type == "Gather" and index == 0 and \
        next((a.i for a in node.attribute if a.name == "axis"), 0) == 0


def _gather_rows(node, q_name: str, s_name: str, tag: str, opset: int) -> list:
    """Rewrite a Gather of a float table into a Gather of its int8 rows times their gathered scales; the original
    output name is kept. Returns the nodes to put right after ``node``."""
    from onnx import TensorProto, helper

    out, ids = node.output[0], node.input[1]
    node.input[0] = q_name
    node.output[0] = f"{tag}_rows_q"
    nodes = [helper.make_node("Gather", [s_name, ids], [f"{tag}_rows_scale"], name=f"{tag}_GatherScale", axis=0),
             helper.make_node("Cast", [f"{tag}_rows_q"], [f"{tag}_rows_f"], name=f"{tag}_Cast", to=TensorProto.FLOAT)]
    if opset >= 13:
        nodes += [helper.make_node("Constant", [], [f"{tag}_axes"], name=f"{tag}_axes",
                                   value=helper.make_tensor(f"{tag}_axes_v", TensorProto.INT64, [1], [-1])),
                  helper.make_node("Unsqueeze", [f"{tag}_rows_scale", f"{tag}_axes"], [f"{tag}_rows_s"],
                                   name=f"{tag}_Unsqueeze")]
    else:
        nodes.append(helper.make_node("Unsqueeze", [f"{tag}_rows_scale"], [f"{tag}_rows_s"], name=f"{tag}_Unsqueeze",
                                      axes=[-1]))
    nodes.append(helper.make_node("Mul", [f"{tag}_rows_f", f"{tag}_rows_s"], [out], name=f"{tag}_Mul"))
    return nodes


def _int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 along ``axis``: (q, scale[channels])."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=other).astype(np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def _int4_tensor(name: str, q: np.ndarray):
    """An ONNX INT4 initializer of ``q`` (int8 values in [-8, 7]): two values a byte, the first in the low nibble."""
    from onnx import TensorProto

    flat = (q.reshape(-1).astype(np.int16) & 0x0F).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    t = TensorProto(name=name, data_type=TensorProto.INT4, dims=list(q.shape))
    t.raw_data = (flat[0::2] | (flat[1::2] << 4)).tobytes()
    return t


def _int4_blocked(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 of a [K, N] weight in blocks of ``block`` rows along K: (q int8 values in [-7, 7], scale
    [ceil(K / block), N])."""
    k, n = w.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), np.float32)
    padded[:k] = w
    amax = np.abs(padded.reshape(blocks, block, n)).max(axis=1)
    scale = np.where(amax > 0, amax / 7.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / np.repeat(scale, block, axis=0)[:k]), -7, 7).astype(np.int8)
    return q, scale


def _after_activation(dq, activation: str, name: str) -> list:
    """Make ``dq`` (a convolution weight's DequantizeLinear) wait for the convolution's input: its scale becomes
    ``scale + 0 * activation[first element]``. Returns the nodes that compute it. Without a data input a
    DequantizeLinear of an initializer is a root of the graph, and ONNX Runtime's topological order runs every root
    first: all the float weights would be materialised at the start of each call and held until their convolution
    (a 512 px SD-1.5 UNet peaked at 4.2 GiB with 0.8 GiB of int8 weights, graph optimizations off). Matrix-product weights need no such
    link: ONNX Runtime fuses their DequantizeLinear into MatMulNBits, which keeps the weights quantized."""
    from onnx import TensorProto, helper

    p = f"{name}_after"
    nodes = [
        helper.make_node("Flatten", [activation], [f"{p}_flat"], name=f"{p}_Flatten", axis=0),
        helper.make_node("Constant", [], [f"{p}_zeros"], name=f"{p}_zeros",
                         value=helper.make_tensor(f"{p}_zeros_v", TensorProto.INT64, [2], [0, 0])),
        helper.make_node("Constant", [], [f"{p}_ones"], name=f"{p}_ones",
                         value=helper.make_tensor(f"{p}_ones_v", TensorProto.INT64, [2], [1, 1])),
        helper.make_node("Slice", [f"{p}_flat", f"{p}_zeros", f"{p}_ones"], [f"{p}_first"], name=f"{p}_Slice"),
        helper.make_node("Constant", [], [f"{p}_shape"], name=f"{p}_shape",
                         value=helper.make_tensor(f"{p}_shape_v", TensorProto.INT64, [1], [1])),
        helper.make_node("Reshape", [f"{p}_first", f"{p}_shape"], [f"{p}_one"], name=f"{p}_Reshape"),
        helper.make_node("Constant", [], [f"{p}_zero"], name=f"{p}_zero",
                         value=helper.make_tensor(f"{p}_zero_v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("Mul", [f"{p}_one", f"{p}_zero"], [f"{p}_nil"], name=f"{p}_Mul"),
        helper.make_node("Add", [dq.input[1], f"{p}_nil"], [f"{p}_scale"], name=f"{p}_Add"),
    ]
    dq.input[1] = f"{p}_scale"
    return nodes


def quantize_weights(path: Path, bits: int = 8, block_size: int = 32, keep: list[str] | tuple = ()) -> dict:
    """Rewrite the ONNX graph at ``path`` (and its external data, if any) in place with weight-only int8 / int4
    weights; returns facts for the manifest: counts and bytes before and after, ``external_data`` of the result."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mobilediff.targets.onnx import external_data_files

    if bits not in (4, 8):
        raise MobilediffError(f"weight-only quantization: bits must be 4 or 8, got {bits}")
    if bits == 4 and (block_size < 16 or block_size & (block_size - 1)):
        raise MobilediffError(f"weight-only int4: block size must be a power of two >= 16, got {block_size}")
    path = Path(path)
    old_data = [path.parent / n for n in external_data_files(path)]
    model = onnx.load(str(path))  # with its external data
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    keep = set(keep)
    uses: dict[str, list] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in inits:
                uses.setdefault(name, []).append((node, i))
    chosen: dict[str, int | str] = {}
    for name, sites in uses.items():
        axes = {"gather" if _is_row_gather(n, i) else _weight_axis(n, i) for n, i in sites}
        if len(axes) != 1 or None in axes or any(n.name in keep for n, _ in sites):
            continue
        t = inits[name]
        if t.data_type != TensorProto.FLOAT or int(np.prod(t.dims)) < MIN_ELEMENTS:
            continue
        chosen[name] = axes.pop()
    before = after = 0
    counts = {"int8": 0, "int4": 0, "tables": 0}
    new_inits, dq_nodes = [], []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    after_node: dict[int, list] = {}
    position = {id(n): k for k, n in enumerate(graph.node)}
    for name, axis in chosen.items():
        t = inits[name]
        w = numpy_helper.to_array(t).astype(np.float32, copy=False)
        if not np.isfinite(w).all():
            raise MobilediffError(f"weight-only quantization: weight {name!r} has non-finite values")
        op = uses[name][0][0].op_type
        before += w.nbytes
        q_name, s_name, out = f"{name}_q", f"{name}_scale", f"{name}_dq"
        if axis == "gather":  # an embedding table: int8 rows, dequantized after the lookup
            q, scale = _int8(w, 0)
            new_inits += [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)]
            for j, (node, _) in enumerate(uses[name]):
                after_node.setdefault(position[id(node)], []).extend(
                    _gather_rows(node, q_name, s_name, f"{name}_{j}", opset))
            counts["tables"] += 1
            after += q.nbytes + scale.nbytes
            continue
        if bits == 4 and op in ("MatMul", "Gemm") and w.ndim == 2:
            wk = w if axis == 1 else w.T  # [K, N]: blocks along K
            q, scale = _int4_blocked(wk, block_size)
            if axis == 0:  # Gemm transB: back to [N, K], blocks along K (axis 1)
                q, scale = q.T.copy(), scale.T.copy()
            q_t = _int4_tensor(q_name, q)
            dq = helper.make_node("DequantizeLinear", [q_name, s_name], [out], name=f"{name}_DequantizeLinear",
                                  axis=0 if axis == 1 else 1, block_size=block_size)
            counts["int4"] += 1
            after += (q.size + 1) // 2 + scale.nbytes
        else:
            q, scale = _int8(w, axis)
            q_t = numpy_helper.from_array(q, q_name)
            dq = helper.make_node("DequantizeLinear", [q_name, s_name], [out], name=f"{name}_DequantizeLinear",
                                  axis=axis)
            counts["int8"] += 1
            after += q.nbytes + scale.nbytes
        new_inits += [q_t, numpy_helper.from_array(scale, s_name)]
        if op in ("Conv", "ConvTranspose"):
            dq_nodes += _after_activation(dq, uses[name][0][0].input[0], name)
        dq_nodes.append(dq)
        for node, i in uses[name]:
            node.input[i] = out
    if not chosen:
        raise MobilediffError(f"weight-only quantization: no weight of {path.name} to quantize")
    kept = [t for t in graph.initializer if t.name not in chosen]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    # each DequantizeLinear just before the first node that reads it: a runtime that follows the graph's order
    # materialises one float weight at a time, not all of them up front
    first_user = {}
    for k, node in enumerate(graph.node):
        for name in node.input:
            first_user.setdefault(name, k)
    before_node: dict[int, list] = {}
    group: list = []
    for n in dq_nodes:  # [helper nodes..., DequantizeLinear] per weight
        group.append(n)
        if n.op_type == "DequantizeLinear":
            before_node.setdefault(first_user[n.output[0]], []).extend(group)
            group = []
    nodes = list(graph.node)
    del graph.node[:]
    for k, node in enumerate(nodes):
        graph.node.extend(before_node.get(k, []))
        graph.node.append(node)
        graph.node.extend(after_node.get(k, []))
    if counts["int4"]:
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx") and o.version < INT4_OPSET:
                o.version = INT4_OPSET
    total = sum(t.ByteSize() for t in graph.initializer)
    external = total >= MAX_SINGLE_FILE
    for f in old_data:
        f.unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
              location=f"{path.name}.data", size_threshold=1024)
    return {"bits": bits, "block_size": block_size if counts["int4"] else None, "weights_int8": counts["int8"],
            "weights_int4": counts["int4"], "tables_int8": counts["tables"], "weight_bytes_before": int(before), "weight_bytes_after": int(after),
            "nodes_kept_float": sorted(keep), "external_data": external_data_files(path)}
