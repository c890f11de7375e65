"""Core ML target: one ML program (``.mlpackage``) per component, converted by coremltools.

Every component takes the same path: ``torch.export.export(...).run_decompositions({})`` and then
``coremltools.convert`` of the ExportedProgram, at static shapes (``ComponentSpec.dims``) and a fixed
minimum deployment target. Measured with coremltools 9.0 and torch 2.13: its TorchScript path fails on
the UNet and VAE ("only 0-dimensional arrays can be converted to Python scalars", its ``int`` cast
handler), and its torch.export frontend has no handler for ``aten.alias``, which the CLIP text encoder
produces; :func:`_drop_aliases` removes those nodes before conversion.

coremltools converts on Linux but predicts only on macOS. :func:`validate` therefore always checks the
saved package's structure against the spec, and on macOS also runs it against the PyTorch reference.
"""
from __future__ import annotations

import platform
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from mobilediff import __version__
from mobilediff.errors import MobilediffError

EXT = "mlpackage"
STATIC_SHAPES = True  # every input shape is fixed at the declaration's values
DEPLOYMENT_TARGET = "iOS17"  # coremltools.target.iOS17: spec version 8, MIL opset CoreML7 (macOS 14 and later)
CONVERSION_PATH = "torch.export.export(...).run_decompositions({}) -> coremltools.convert(convert_to='mlprogram')"


def _ct():
    import coremltools

    return coremltools


def _precision(precision: str):
    ct = _ct()
    table = {"fp32": ct.precision.FLOAT32, "fp16": ct.precision.FLOAT16}
    if precision not in table:
        raise MobilediffError(f"coreml: unknown precision {precision!r}; choose one of: {', '.join(table)}")
    return table[precision]


def _drop_aliases(ep: torch.export.ExportedProgram) -> int:
    """Remove ``aten.alias`` nodes from ``ep`` in place; return how many were removed.

    CLIPTextModel slices its ``position_ids`` buffer (``position_ids[:, :seq_length]``); at the full length
    torch.export records that as ``aten.alias``, and coremltools 9.0's torch.export frontend stops on it
    ("Unsupported fx node alias"). After ``run_decompositions`` the graph is functional, so an alias is the
    identity: its users can read its input directly.
    """
    graph = ep.graph_module.graph
    aliases = [n for n in graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.alias.default]
    for node in aliases:
        node.replace_all_uses_with(node.args[0])
        graph.erase_node(node)
    if aliases:
        ep.graph_module.recompile()
    return len(aliases)


def _operations(block) -> list:
    """Every MIL operation of a proto block, nested blocks included."""
    ops = []
    for op in block.operations:
        ops.append(op)
        for inner in op.blocks:
            ops.extend(_operations(inner))
    return ops


def _program_facts(proto) -> dict[str, Any]:
    """Op counts and the float types the ML program computes in, read from a saved model's spec."""
    from coremltools.proto import MIL_pb2

    if proto.WhichOneof("Type") != "mlProgram":
        raise MobilediffError(f"coreml: expected an ML program, found a {proto.WhichOneof('Type')} model")
    main = proto.mlProgram.functions["main"]
    ops = _operations(main.block_specializations[main.opset])
    counts = Counter(op.type for op in ops)
    fp16 = fp32 = 0  # non-const ops with an fp16 / an fp32 tensor output
    for op in ops:
        if op.type == "const":
            continue
        types = {o.type.tensorType.dataType for o in op.outputs if o.type.WhichOneof("type") == "tensorType"}
        fp16 += MIL_pb2.DataType.FLOAT16 in types
        fp32 += MIL_pb2.DataType.FLOAT32 in types
    return {"mil_opset": main.opset, "ops": len(ops), "op_counts": dict(sorted(counts.items())),
            "fp16_ops": fp16, "fp32_ops": fp32}


def _package_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def export(spec, path, precision: str) -> dict:
    """Convert ``spec.module`` to an ML program at ``path`` (a ``.mlpackage`` directory); return its facts."""
    import numpy as np

    ct = _ct()
    compute_precision = _precision(precision)
    with torch.no_grad():
        program = torch.export.export(spec.module, spec.example_inputs())
    inputs = [ct.TensorType(name=s.name, shape=s.static_shape(spec.dims), dtype=np.dtype(s.dtype).type)
              for s in spec.inputs]
    # The ExportedProgram frontend honours these names. The dtype is needed too: at FLOAT16 compute precision
    # and iOS16+ targets, an output left untyped comes out as a float16 multi-array.
    outputs = [ct.TensorType(name=s.name, dtype=np.dtype(s.dtype).type) for s in spec.outputs]
    # the graph as captured first (functional, no decomposition); where the converter lacks one of its operators
    # (a masked T5 or Gemma-2 encoder: new_ones, a tensor `and`, where with a scalar), decomposed to core ATen
    decompositions, error = "none", None
    for table in ({}, None):
        with torch.no_grad():
            ep = program.run_decompositions(table) if table is not None else program.run_decompositions()
        aliases = _drop_aliases(ep)
        try:
            mlmodel = ct.convert(ep, convert_to="mlprogram", inputs=inputs, outputs=outputs,
                                 compute_precision=compute_precision,
                                 minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET))
            break
        except Exception as e:  # noqa: BLE001 - retried decomposed; a second failure is the user's one line
            error = e
            decompositions = "core ATen"
    else:  # a converter failure is one line for the user; the cause stays chained
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise MobilediffError(f"coreml {spec.name}: coremltools could not convert it: {first}") from error

    mlmodel.author = "mobilediff"
    mlmodel.short_description = f"{spec.name} ({spec.source_class}), {precision}, exported by mobilediff"
    mlmodel.version = __version__
    mlmodel.user_defined_metadata.update({"mobilediff.component": spec.name, "mobilediff.precision": precision})
    for s in spec.inputs:
        mlmodel.input_description[s.name] = s.description
    for s in spec.outputs:
        mlmodel.output_description[s.name] = s.description
    path = Path(path)
    mlmodel.save(str(path))

    proto = mlmodel.get_spec()
    return {"minimum_deployment_target": DEPLOYMENT_TARGET, "spec_version": proto.specificationVersion,
            "conversion_path": CONVERSION_PATH, "aliases_removed": aliases, "decompositions": decompositions,
            "compute_precision": precision,
            **_program_facts(proto), "size_bytes": _package_size(path)}


def _feature(f) -> tuple[str, tuple[int, ...], str, bool]:
    """(name, shape, dtype, static) of a model description feature."""
    from coremltools.proto import FeatureTypes_pb2

    arr = f.type.multiArrayType
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType).lower()
    return f.name, tuple(arr.shape), dtype, arr.WhichOneof("ShapeFlexibility") is None


def _check_features(where: str, kind: str, features, declared, dims: dict[str, int]) -> None:
    got_names = [f.name for f in features]
    want_names = [s.name for s in declared]
    if got_names != want_names:
        raise MobilediffError(f"{where}: {kind} names {got_names} != declared {want_names}")
    for f, s in zip(features, declared):
        if f.type.WhichOneof("Type") != "multiArrayType":
            raise MobilediffError(f"{where}: {kind} {f.name} is a {f.type.WhichOneof('Type')}, not a multi-array")
        name, shape, dtype, static = _feature(f)
        if not static:
            raise MobilediffError(f"{where}: {kind} {name} has a flexible shape; the spec declares static shapes")
        if shape != s.static_shape(dims):
            raise MobilediffError(f"{where}: {kind} {name} has shape {shape}, declared {s.static_shape(dims)}")
        if dtype != s.dtype:
            raise MobilediffError(f"{where}: {kind} {name} is {dtype}, declared {s.dtype}")


def validate(spec, path, precision: str, inputs, reference, quantization: str | None = None) -> dict:
    """Check the saved package against ``spec`` (structure everywhere, numbers on macOS); return the record.
    ``quantization``: the weight-compression recipe the package was written with, if any."""
    ct = _ct()
    recipe = quantization
    _precision(precision)
    where = f"coreml {spec.name}"
    on_mac = platform.system() == "Darwin"
    try:
        # CPU only on macOS: the check is about the conversion, not about a device's fp16 kernels
        mlmodel = ct.models.MLModel(str(path), skip_model_load=not on_mac, compute_units=ct.ComputeUnit.CPU_ONLY)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MobilediffError(f"{where}: cannot load {path}: {first}") from e
    proto = mlmodel.get_spec()

    _check_features(where, "input", proto.description.input, spec.inputs, spec.dims)
    _check_features(where, "output", proto.description.output, spec.outputs, spec.dims)
    want_version = getattr(ct.target, DEPLOYMENT_TARGET).value
    if proto.specificationVersion != want_version:
        raise MobilediffError(f"{where}: spec version {proto.specificationVersion} does not match the deployment "
                              f"target {DEPLOYMENT_TARGET} (spec version {want_version})")
    program = _program_facts(proto)
    if precision == "fp16" and not (program["fp16_ops"] and program["op_counts"].get("cast")):
        raise MobilediffError(f"{where}: expected fp16 compute, but the program has no fp16 ops")
    if precision == "fp32" and program["fp16_ops"]:
        raise MobilediffError(f"{where}: expected fp32 compute, but {program['fp16_ops']} ops compute in fp16")

    if recipe:
        record_weights = weight_facts(mlmodel)
        if not record_weights["compressed_weights"]:
            raise MobilediffError(f"{where}: recipe {recipe} left no compressed weights in the program")
    record = {"target": "coreml", "precision": precision, "quantization": quantization,
              "checked": "structure (Core ML cannot predict on Linux)",
              "minimum_deployment_target": DEPLOYMENT_TARGET, "spec_version": proto.specificationVersion,
              "inputs": [s.name for s in spec.inputs], "outputs": [s.name for s in spec.outputs],
              "mil_opset": program["mil_opset"], "fp16_ops": program["fp16_ops"], "fp32_ops": program["fp32_ops"]}
    if recipe:
        record["weights"] = record_weights
    if on_mac:
        from mobilediff.parity import compare

        feed = {s.name: x.detach().cpu().numpy().astype(s.dtype) for s, x in zip(spec.inputs, inputs)}
        pred = mlmodel.predict(feed)
        got = [pred[s.name] for s in spec.outputs]
        record.update(compare(spec.name, [s.name for s in spec.outputs], got, reference, precision, "coreml",
                              quantization))
        record["compute_units"] = "CPU_ONLY"
    return record


def quantize(spec, path: Path, recipe, precision: str, calibration) -> dict:
    """Convert ``spec`` at ``precision`` and compress its weights with ``recipe`` (coremltools.optimize: weights
    only, compute stays at ``precision``); returns the export facts, with ``quantization`` facts."""
    import shutil

    ct = _ct()
    facts = export(spec, path, precision)
    model, qfacts = _compress(ct.models.MLModel(str(path), skip_model_load=True), recipe)
    shutil.rmtree(path)
    model.save(str(path))
    return {**facts, "quantization": qfacts, "size_bytes": _package_size(Path(path))}


def load(path: Path, io, threads: int | None = None, component: str = "component"):
    """Core ML programs run on Apple platforms only (the iOS engine and benchmarks/run_device.py --device apple)."""
    raise MobilediffError("coreml bundles run on macOS/iOS only: use --runtime onnx or executorch here")


def _config(recipe):
    import coremltools.optimize.coreml as cto

    if recipe.options["method"] == "palettize":
        return cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=recipe.options["nbits"], mode="kmeans"))
    return cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                            dtype="int8", granularity="per_channel"))


def _compress(mlmodel, recipe):
    """Compress a converted Core ML model's weights with ``recipe`` (weight-only kinds: Core ML computes in float);
    returns (model, facts)."""
    import coremltools.optimize.coreml as cto

    from mobilediff.quantize import WEIGHT_ONLY

    if recipe.kind != WEIGHT_ONLY:
        raise MobilediffError(f"coreml has no quantizer for {recipe.kind} recipes ({recipe.name})")
    if recipe.options["method"] == "mixed":
        big = recipe.options["large"]
        pal = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=recipe.options["nbits"], mode="kmeans",
                                                                          weight_threshold=big))
        mlmodel = cto.palettize_weights(mlmodel, pal)
        lin = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                                              weight_threshold=2048))
        return cto.linear_quantize_weights(mlmodel, lin), {"large_weight_threshold": big}
    cfg = _config(recipe)
    if recipe.options["method"] == "palettize":
        return cto.palettize_weights(mlmodel, cfg), {}
    return cto.linear_quantize_weights(mlmodel, cfg), {}


def weight_facts(mlmodel) -> dict:
    """How many of a saved ML program's weights are stored compressed (palettized / quantized ops in its MIL)."""
    proto = mlmodel.get_spec()
    counts: dict[str, int] = {}
    for fn in proto.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                if op.type.startswith(("constexpr_",)):
                    counts[op.type] = counts.get(op.type, 0) + 1
    return {"compressed_weights": sum(counts.values()), "ops": dict(sorted(counts.items()))}
