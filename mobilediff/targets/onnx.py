"""ONNX target: torch.onnx (dynamo exporter), full onnx.checker, strict shape inference, onnxruntime parity.

Named dimensions of the declaration (``"batch"``) stay dynamic in the graph, so one UNet file serves both a
classifier-free-guidance batch of 2 and a single row. fp16 graphs keep float32 inputs and outputs (casts at
the edges) so that every runtime feeds them the same tensors.

A protobuf message cannot exceed 2 GiB, so a component with at least ``EXTERNAL_DATA_MIN_BYTES`` of weights
(1.5 GiB; an fp32 SD-1.5 UNet has 3.4 GB) is written as ``<name>.onnx`` (the graph) plus ``<name>.onnx.data`` (every
initializer) beside it. The export facts list those data files (``external_data``) so that the bundle
records and checks their sha256 too; onnxruntime finds them next to the graph. Checks read the graph
without its data (the data never goes through protobuf).
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
# Weights at or above this size go to an external data file: torch.onnx's own threshold (1.5 GiB of initializers),
# made explicit here so that it is ours, and testable. Which files a graph reads is always read back from the graph.
EXTERNAL_DATA_MIN_BYTES = 3 << 29
STATIC_SHAPES = False  # named dimensions stay dynamic
# ops whose weights the int8 recipes quantize: convolutions and matrix products, and Gather for the token-embedding
# table (most of a small text encoder's bytes)
QUANT_OPS = ["Conv", "MatMul", "Gemm", "Gather"]


def weight_bytes(module: torch.nn.Module, precision: str = "fp32") -> int:
    """Bytes of ``module``'s parameters and buffers as exported at ``precision`` (fp16 halves float tensors)."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        size = 2 if precision == "fp16" and t.is_floating_point() else t.element_size()
        total += t.numel() * size
    return total


def external_data_files(path: Path) -> list[str]:
    """Names (relative to the graph's folder) of the external data files that the graph at ``path`` reads."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    names = {ExternalDataInfo(t).location for t in _tensors(model.graph) if uses_external_data(t)}
    return sorted(names)


def _tensors(graph):
    """Every tensor of ``graph`` that can hold external data: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def _dynamic_shapes(spec) -> tuple:
    # at most 63: torch.export derives a guard batch <= 63 for the UNet and the VAE decoder, and a range that
    # contradicts it makes torch.onnx trace the module a second time with the suggested range (twice the time)
    out = []
    for s in spec.inputs:
        dims = {i: torch.export.Dim(d, min=1, max=63) for i, d in enumerate(s.shape) if isinstance(d, str)}
        out.append(dims or None)
    return tuple(out)


def _varargs(module: torch.nn.Module) -> bool:
    import inspect

    return any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values())


def export(spec, path: Path, precision: str, external_data_min_bytes: int | None = None,
           keep_metadata: bool = False) -> dict:
    """Write ``spec.module`` to ``path``, its weights to ``<path>.data`` when they reach ``external_data_min_bytes``
    (default :data:`EXTERNAL_DATA_MIN_BYTES`); return its facts, ``external_data`` listing the data files beside
    ``path`` (empty when there are none)."""
    import onnx

    path = Path(path)
    limit = EXTERNAL_DATA_MIN_BYTES if external_data_min_bytes is None else external_data_min_bytes
    external = weight_bytes(spec.module, precision) >= limit
    names_in = [s.name for s in spec.inputs]
    names_out = [s.name for s in spec.outputs]
    module = spec.module
    # torch.export specialises dimensions whose example size is 1: trace named dimensions at size 2
    inputs = spec.example_inputs(dims={d: 2 for d in spec.dynamic_names()})
    dynamic = _dynamic_shapes(spec)
    if precision == "fp16":
        module = Fp16IO(module)
    if _varargs(module):  # Fp16IO.forward(*args), LoraInputs.forward(*args): torch.export sees one varargs entry
        dynamic = {"args": dynamic}
    with torch.no_grad():
        # captured here, non-strict with plain symbolic sizes (torch.onnx's own capture -- strict first, sizes treated
        # as size-oblivious -- fails for some transformer denoisers at a dynamic batch, PixArt's and SANA's), then
        # two graph fixes onnx needs (see their functions); torch.onnx's own capture where this one fails
        try:
            exported = torch.export.export(module, inputs, dynamic_shapes=dynamic, strict=False)
        except Exception:  # noqa: BLE001 - the same module through torch.onnx's capture strategies instead
            exported = None
        if exported is not None:
            capture = {"capture": "torch.export (non-strict)",
                       "noop_squeezes_removed": drop_noop_squeezes(exported),
                       "tiny_constants_kept": keep_tiny_constants(exported)}
        else:
            capture = {"capture": "torch.onnx"}
        program = torch.onnx.export(exported if exported is not None else module, inputs, str(path),
                                    input_names=names_in, output_names=names_out, dynamic_shapes=dynamic, dynamo=True,
                                    external_data=external, opset_version=OPSET, optimize=True, verbose=False)
    del program
    model = onnx.load(str(path), load_external_data=False)
    if not keep_metadata and _strip_exporter_metadata(model):
        onnx.save(model, str(path))  # initializers in a data file stay there: the graph keeps their references
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"opset": OPSET, "exporter": "torch.onnx (dynamo)", "nodes": len(model.graph.node),
            "op_counts": dict(sorted(ops.items())), "dynamic_dims": sorted(spec.dynamic_names()),
            "external_data": external_data_files(path), **capture}


def keep_tiny_constants(program) -> int:
    """Give every ``x + c`` / ``x - c`` of an exported program whose scalar ``c`` is non-zero but within 1e-8 of 0 (a
    division's guard: SANA's linear attention divides by ``sum + 1e-15``) its constant as a one-element tensor:
    onnxscript's optimizer matches scalar constants within 1e-8 of 0 as ``x + 0`` and drops them, and the division
    that guard protects then gives NaN where a sum is 0. A one-element tensor is outside that rule. Returns how many
    constants were kept."""
    graph = program.graph_module.graph
    kept = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor):
            continue
        for position, c in enumerate(node.args[:2]):
            if not isinstance(c, float) or c == 0.0 or abs(c) >= 1e-8:
                continue
            other = node.args[1 - position]
            value = other.meta.get("val") if hasattr(other, "meta") else None
            dtype = value.dtype if value is not None else torch.float32
            with graph.inserting_before(node):
                constant = graph.call_function(torch.ops.aten.full.default, ([1], c), {"dtype": dtype})
            args = list(node.args)
            args[position] = constant
            node.args = tuple(args)
            kept += 1
    if kept:
        program.graph_module.recompile()
    return kept


def drop_noop_squeezes(program) -> int:
    """Remove ``squeeze(dim)`` nodes of an exported program whose squeezed dimensions are never 1 (static sizes other
    than 1): a no-op in torch, but an ONNX Squeeze that ONNX Runtime refuses at run time (diffusers'
    BasicTransformerBlock squeezes the token axis of PixArt's adaLN-single path). Returns how many were removed."""
    graph = program.graph_module.graph
    removed = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims):
            continue
        source = node.args[0]
        dims = node.args[1] if len(node.args) > 1 else None
        value = source.meta.get("val") if hasattr(source, "meta") else None
        if dims is None or value is None:
            continue
        dims = [dims] if isinstance(dims, int) else list(dims)
        if all(isinstance(value.shape[d], int) and value.shape[d] != 1 for d in dims):
            node.replace_all_uses_with(source)
            graph.erase_node(node)
            removed += 1
    if removed:
        program.graph_module.recompile()
    return removed


def _strip_exporter_metadata(model) -> int:
    """Drop the exporter's per-node debugging metadata (the PyTorch stack trace, module path and FX node of every
    node: about 3 KB a node, as much as the weights of a small int8 UNet) from ``model``; returns how many nodes had
    any. Nothing a runtime reads is touched."""
    stripped = 0
    for graph in [model.graph] + [f for f in model.functions]:
        for node in graph.node:
            if len(node.metadata_props):
                del node.metadata_props[:]
                stripped += 1
    return stripped


def _drop_value_info(path: Path) -> None:
    """Forget the intermediate shapes recorded in the graph at ``path`` (the quantizer infers them again): onnxruntime
    1.29's pre-processing can record one that its own strict re-inference then contradicts (seen on a tiny
    guidance-embedding UNet: "Inferred shape and existing shape differ")."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def _strip_metadata_file(path: Path) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if _strip_exporter_metadata(model):
        onnx.save(model, str(path))


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


# Session settings a caller may pass to load_session (benchmarks/memory.py measures each): SessionOptions attributes,
# and any "session.*" configuration entry of onnxruntime (onnxruntime_session_options_config_keys.h), as strings
SESSION_ATTRIBUTES = ("enable_cpu_mem_arena", "enable_mem_pattern", "graph_optimization_level")


def session_options(threads: int | None = None, settings: dict | None = None):
    """onnxruntime SessionOptions: CPU, quiet, ``threads`` intra-op threads, and ``settings`` ({attribute or
    "session.*" config key: value}). Raises MobilediffError for a key it does not know."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    for key, value in (settings or {}).items():
        if key in SESSION_ATTRIBUTES:
            if key == "graph_optimization_level":
                value = getattr(ort.GraphOptimizationLevel, str(value))
            setattr(opts, key, value)
        elif key.startswith("session."):
            opts.add_session_config_entry(key, str(value))
        else:
            raise MobilediffError(f"unknown onnxruntime session setting {key!r}: one of {', '.join(SESSION_ATTRIBUTES)} "
                                  f"or a 'session.*' configuration key")
    return opts


def load_session(path: Path, threads: int | None = None, settings: dict | None = None):
    """An onnxruntime CPU session for the graph at ``path`` (its external data files are read from beside it).
    ``threads``: intra-op threads (onnxruntime's default, one per physical core, when None); ``settings``: see
    :func:`session_options`."""
    import onnxruntime as ort

    opts = session_options(threads, settings)
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoSuchFile, ort_errors.Fail) as e:
        # a truncated, corrupt or foreign graph file (or its external data): onnxruntime cannot open it
        raise MobilediffError(f"cannot load ONNX graph {path}: {str(e).splitlines()[0][:200]}") from None


def prepare_runtime(threads: int | None = None) -> None:
    """Import onnxruntime (its threads are a session option: see :func:`load_session`)."""
    import onnxruntime  # noqa: F401


def runtime_threads(threads: int | None = None) -> dict:
    return {"onnxruntime intra-op": threads if threads is not None else "default (one per physical core)"}


def run(sess, spec, inputs) -> list[torch.Tensor]:
    """Outputs of ``sess`` for ``inputs`` (tensors in the order of ``spec.inputs``), in the order of ``spec.outputs``."""
    feed = {s.name: np.ascontiguousarray(x.numpy()) for s, x in zip(spec.inputs, inputs)}
    return [torch.from_numpy(o) for o in sess.run([s.name for s in spec.outputs], feed)]


def validate(spec, path: Path, precision: str, inputs, reference, quantization: str | None = None) -> dict:
    import onnx
    import onnxruntime as ort

    path = Path(path)
    try:
        # by path, and the graph without its weights: a model with external data never passes through protobuf whole
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise MobilediffError(f"onnx {spec.name}: {path.name} fails the ONNX checker: {str(e).splitlines()[0]}") from None
    _check_io(spec, model)
    got = run(load_session(path), spec, inputs)
    record = compare(spec.name, [s.name for s in spec.outputs], got, reference, precision, "onnx", quantization)
    record["runtime"] = f"onnxruntime {ort.__version__} CPUExecutionProvider"
    record["checker"] = "onnx.checker full_check + strict shape inference"
    return record


# onnxruntime's element type names ("tensor(float)") where they differ from numpy's
_ORT_DTYPES = {"float": "float32", "double": "float64"}


def graph_io(sess) -> tuple[list, list]:
    """The inputs and outputs ``sess`` (an onnxruntime session) declares, as :class:`mobilediff.bundle.GraphTensor`
    lists in call order; a symbolic or unknown dimension is None."""
    from mobilediff.bundle import GraphTensor

    def tensor(arg):
        elem = arg.type[len("tensor("):-1] if arg.type.startswith("tensor(") else arg.type
        shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or ()))
        return GraphTensor(arg.name, shape, _ORT_DTYPES.get(elem, elem))

    return [tensor(a) for a in sess.get_inputs()], [tensor(a) for a in sess.get_outputs()]


class Runner:
    """A loaded graph as the bundle runner calls it: tensors in the declared input order -> declared outputs."""

    static_batch = None  # named dimensions are dynamic

    def __init__(self, path: Path, io, threads: int | None = None, component: str = "component",
                 settings: dict | None = None):
        from mobilediff.bundle import check_graph_io

        self.sess = load_session(path, threads, settings)
        check_graph_io(component, path, io, *graph_io(self.sess))
        self.inputs = [s.name for s in io.inputs]
        self.outputs = [s.name for s in io.outputs]

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        feed = {n: np.ascontiguousarray(a.numpy()) for n, a in zip(self.inputs, args)}
        return [torch.from_numpy(o) for o in self.sess.run(self.outputs, feed)]


def load(path: Path, io, threads: int | None = None, component: str = "component",
         settings: dict | None = None) -> Runner:
    """Open a verified bundle graph; ``io`` is the manifest entry (inputs, outputs, dims) of ``component``;
    ``settings``: session settings (:func:`session_options`). Raises MobilediffError when the graph's inputs or
    outputs disagree with it (:func:`mobilediff.bundle.check_graph_io`)."""
    return Runner(path, io, threads, component, settings)


class _Reader:
    """onnxruntime CalibrationDataReader over recorded rows."""

    def __init__(self, names: list[str], rows):
        self.names, self.rows, self.i = names, rows, 0

    def get_next(self):
        if self.i >= len(self.rows):
            return None
        row = self.rows[self.i]
        self.i += 1
        return {n: np.ascontiguousarray(t.numpy()) for n, t in zip(self.names, row)}

    def rewind(self):
        self.i = 0


def _onnx_float_nodes(path: Path, keep: list[str]) -> list[str]:
    """ONNX node names of the keep-float modules: the dynamo exporter records each node's module path in its
    ``pkg.torch.onnx.name_scopes`` metadata."""
    import onnx

    if not keep:
        return []
    model = onnx.load(str(path), load_external_data=False)
    out = []
    for node in model.graph.node:
        scopes = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes", "")
        # e.g. "['', 'unet', 'unet.conv_in']" -> the innermost module path
        path_names = [s.strip(" '\"") for s in scopes.strip("[]").split(",") if s.strip(" '\"")]
        if any(p == k or p.startswith(k + ".") for p in path_names for k in keep):
            out.append(node.name)
    return out


def _activation_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes none of whose inputs is a weight (an initializer or a Constant's output): the
    attention's query x key and weights x value products. Quantized, the CPU provider runs them as QLinearMatMul with
    a QLinearSoftmax between them, both slower than their float kernels (benchmarks/op_profile.py: 1.25 and 1.33 ms
    against 0.75 and 0.24 ms for the default student's UNet), and the activations they multiply have no fixed range
    to calibrate; they stay float, the weight-bearing projections around them are quantized."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    weights |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def quantize(spec, path: Path, recipe, precision: str, calibration) -> dict:
    """Export ``spec`` to ``path`` with ``recipe`` (onnxruntime's quantization tool on the fp32 graph, or the fp16
    export for the ``fp16`` recipe); returns the export facts, with ``quantization`` facts."""
    from mobilediff.quantize import FLOAT, WEIGHT_ONLY, kept_modules

    if recipe.kind == FLOAT:
        return export(spec, path, "fp16")
    if recipe.kind == WEIGHT_ONLY:  # reads and writes external data itself: no size limit
        from mobilediff.targets.onnx_weights import quantize_weights

        facts = export(spec, path, "fp32", keep_metadata=True)
        keep = _onnx_float_nodes(Path(path), kept_modules(recipe, spec))
        quantization = quantize_weights(Path(path), bits=recipe.options.get("weight_bits", 8),
                                        block_size=recipe.options.get("group_size", 32), keep=keep)
        _strip_metadata_file(Path(path))
        return {**facts, "external_data": quantization.pop("external_data"), "quantization": quantization}
    # refused before the export: onnxruntime.quantization would read the whole model through protobuf (2 GiB)
    if weight_bytes(spec.module, "fp32") >= EXTERNAL_DATA_MIN_BYTES:
        raise MobilediffError(f"onnx {recipe.name}: quantizing a graph with external data ({spec.name}, over "
                              f"{EXTERNAL_DATA_MIN_BYTES / 2**30:g} GiB of weights) is not supported")
    facts = export(spec, path, "fp32", keep_metadata=True)  # the quantizer finds keep-float modules by it
    quantization = _quantize_graph(spec, recipe, Path(path), calibration)
    _strip_metadata_file(Path(path))
    return {**facts, "quantization": quantization}


def _quantize_graph(spec, recipe, path: Path, calibration) -> dict:
    """Quantize the fp32 graph at ``path`` in place; returns facts for the manifest."""
    import shutil
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mobilediff.quantize import DYNAMIC_INT8, STATIC_INT8, kept_modules

    keep = _onnx_float_nodes(path, kept_modules(recipe, spec))
    with tempfile.TemporaryDirectory(dir=path.parent) as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
        _drop_value_info(pre)
        activation_products = _activation_matmuls(pre)
        keep = keep + [n for n in activation_products if n not in keep]
        out = Path(td) / "q.onnx"
        if recipe.kind == STATIC_INT8:
            rows = calibration.batches(spec.name)
            quantize_static(str(pre), str(out), _Reader([s.name for s in spec.inputs], rows),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=QUANT_OPS,
                            nodes_to_exclude=keep, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
            facts = {"calibration_rows": len(rows)}
        elif recipe.kind == DYNAMIC_INT8:
            quantize_dynamic(str(pre), str(out), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=QUANT_OPS, nodes_to_exclude=keep)
            facts = {}
        else:
            raise MobilediffError(f"onnx has no quantizer for {recipe.kind} recipes ({recipe.name})")
        shutil.move(str(out), str(path))
    return {**facts, "nodes_kept_float": keep, "activation_matmuls_kept_float": len(activation_products)}


# --- ONNX Runtime's mobile format ------------------------------------------------------------------------------
# An ORT-format graph (a flatbuffer) is what ONNX Runtime's mobile and reduced builds load: optimized once at
# conversion instead of at every session start, and the input of a build with only the operators it needs. A
# flatbuffer cannot exceed 2 GiB, so a larger graph keeps its .onnx form only.
ORT_EXT = "ort"
ORT_FORMAT_MAX_BYTES = 2 << 30
# the graph is optimized for the phone's CPUs (arm: no x86-only layouts), fully and once ("Fixed")
ORT_OPTIMIZATION = {"style": "Fixed", "level": "all", "target_platform": "arm"}
USABILITY_EPS = ("NNAPI", "CoreML MLProgram", "CoreML NeuralNetwork")


def ort_path(onnx_path: Path) -> Path:
    return Path(onnx_path).with_suffix(f".{ORT_EXT}")


def ort_format_refusal(onnx_path: Path, precision: str = "fp32") -> str | None:
    """Why ``onnx_path`` has no ORT form (None: it can have one): the format's 2 GiB limit. An fp16 graph's ORT form,
    optimized for the CPU provider, holds its weights as float32 (the provider computes in float32: casts are
    inserted and folded into the weights; a 21 MB fp16 graph of SD-1.5's blocks became a 35 MB ORT file), so its
    size counts twice."""
    total = Path(onnx_path).stat().st_size + sum((Path(onnx_path).parent / n).stat().st_size
                                                 for n in external_data_files(onnx_path))
    expected = total * (2 if precision == "fp16" else 1)
    if expected >= ORT_FORMAT_MAX_BYTES:
        what = (f"{total / 2**30:.2f} GiB of graph and weights" if expected == total else
                f"{total / 2**30:.2f} GiB of fp16 graph and weights ({expected / 2**30:.2f} GiB as the CPU provider's "
                f"float32 ORT form)")
        return f"{Path(onnx_path).name}: {what} is over the ORT format's 2 GiB limit (a flatbuffer); the .onnx form is kept"
    if _has_int4(onnx_path):
        return (f"{Path(onnx_path).name}: int4 weights, which the ORT format cannot hold (ONNX Runtime 1.29 refuses the "
                f"converted file); the .onnx form is kept")
    return None


def _has_int4(onnx_path: Path) -> bool:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(t.data_type in (TensorProto.INT4, TensorProto.UINT4) for t in model.graph.initializer)


def _parse_required_operators(text: str) -> dict[str, list[str]]:
    """``domain;opset;Op,Op`` lines of a required-operators config -> {"domain;opset": [ops]}."""
    ops: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            domain, opset, names = line.split(";", 2)
            ops.setdefault(f"{domain};{opset}", []).extend(n for n in names.split(",") if n)
    return {k: sorted(set(v)) for k, v in sorted(ops.items(), key=lambda kv: _opset_order(kv[0]))}


def _opset_order(key: str) -> tuple[str, int]:
    domain, opset = key.split(";")
    return domain, int(opset)


def required_operators_config(entries: list[dict], header: str) -> str:
    """One required-operators config (the input of ONNX Runtime's reduced build) over the ``required_operators``
    facts of several ORT graphs."""
    merged: dict[str, set[str]] = {}
    for ops in entries:
        for key, names in ops.items():
            merged.setdefault(key, set()).update(names)

    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key};{','.join(sorted(merged[key]))}" for key in sorted(merged, key=_opset_order)]
    return "\n".join(lines) + "\n"


def mobile_usability(onnx_path: Path) -> dict:
    """ONNX Runtime's mobile usability check per execution provider (onnxruntime.tools' usability checker: the
    graph optimized at the basic level, then partitioned for NNAPI and the two Core ML model types): nodes, how
    many the EP takes, in how many partitions, the ops it lacks, and its verdict as the checker gives it (YES /
    MAYBE / NO), as is and with the dynamic dimensions fixed."""
    import logging
    import tempfile

    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import optimize_model

    checks = {"NNAPI": lambda m, fixed: uc.check_nnapi_partitions(m, fixed),
              "CoreML MLProgram": lambda m, fixed: uc.check_coreml_partitions(m, fixed, "coreml_supported_mlprogram_ops.md"),
              "CoreML NeuralNetwork": lambda m, fixed: uc.check_coreml_partitions(m, fixed, "coreml_supported_neuralnetwork_ops.md")}
    logging.getLogger("usability_checker").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / Path(onnx_path).name
        optimize_model(Path(onnx_path), optimized, use_external_initializers=True)
        model = uc.ModelProtoWithShapeInfo(optimized).model_with_shape_info
        dynamic_inputs, _ = uc.check_shapes(model.graph)
        report = {}
        for ep, check in checks.items():
            info = check(model, True)
            row = {"nodes": info.num_nodes, "supported_nodes": info.num_supported_nodes,
                   "partitions": info.num_partitions, "unsupported_ops": sorted(info.unsupported_ops),
                   "verdict": info.suitability().name}
            if dynamic_inputs:
                row["verdict_with_fixed_shapes"] = check(model, False).suitability().name
            report[ep] = row
    return {"checker": "onnxruntime.tools.check_onnx_model_mobile_usability", "dynamic_inputs": bool(dynamic_inputs),
            "eps": report}


def to_ort(onnx_path: Path) -> dict:
    """Write ``onnx_path``'s ORT form beside it (:func:`ort_path`); return its facts: the optimization it was
    converted with, the operators it needs (for a reduced build) and the mobile usability report."""
    import contextlib
    import io
    import logging
    import shutil
    import tempfile

    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path = Path(onnx_path)
    for name in ("ort_format_model", "ort_format_model.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        try:  # the converter prints its progress: kept off the terminal
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(onnx_path, out, [OptimizationStyle[ORT_OPTIMIZATION["style"]]],
                                           target_platform=ORT_OPTIMIZATION["target_platform"])
        except Exception as e:  # onnxruntime's own errors (an op without an ORT-format kernel, ...)
            raise MobilediffError(f"cannot convert {onnx_path.name} to ORT format: {str(e).splitlines()[0][:200]}") from None
        written = out / f"{onnx_path.stem}.{ORT_EXT}"
        configs = list(out.glob("*.config"))
        if not written.is_file() or len(configs) != 1:
            raise MobilediffError(f"onnxruntime's ORT-format converter wrote no {written.name} for {onnx_path.name}")
        required = _parse_required_operators(configs[0].read_text())
        shutil.move(str(written), str(ort_path(onnx_path)))
    return {"format": "ORT (flatbuffer)", "onnxruntime": ort.__version__, "converter":
            "onnxruntime.tools.convert_onnx_models_to_ort", "from": onnx_path.name, "optimization": dict(ORT_OPTIMIZATION),
            "required_operators": required, "usability": mobile_usability(onnx_path)}


def validate_ort(spec, path: Path, precision: str, inputs, reference, quantization: str | None = None) -> dict:
    """Run the ORT-format graph at ``path`` on onnxruntime's CPU provider and check it against PyTorch."""
    import onnxruntime as ort

    got = run(load_session(path), spec, inputs)
    record = compare(spec.name, [s.name for s in spec.outputs], got, reference, precision, "ort", quantization)
    record["runtime"] = f"onnxruntime {ort.__version__} CPUExecutionProvider (ORT format)"
    return record
