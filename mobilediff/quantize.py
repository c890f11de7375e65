"""Post-training quantization recipes per export target, calibrated on real sampling trajectories.

A recipe names, per target, how each component is stored and computed, and which layers stay in float:

- ONNX (onnxruntime's quantization tool on the exported fp32 graph):
  ``int8-static``  QDQ, int8 per-channel symmetric weights, uint8 activations whose ranges are calibrated on the
                   inputs the components see while the pipeline samples (:mod:`mobilediff.calibration`);
  ``int8-dynamic`` int8 per-channel weights, activations quantized at run time (MatMul/Gemm/Conv -> integer ops);
  ``fp16``         the fp16 export (float16 weights and compute behind float32 I/O).
- ExecuTorch (torchao's PT2E flow with executorch's XNNPACKQuantizer, then XNNPACK lowering):
  ``int8``         static int8, per-channel symmetric weights, calibrated like ONNX ``int8-static``;
  ``int4-weights`` 4-bit grouped weights with int8 dynamic activations on the Linear layers (XNNPACK's 8da4w
                   kernels); convolutions stay float (XNNPACK has no 4-bit convolution).
- Core ML (coremltools.optimize on the converted program; weights only, compute stays fp16/fp32):
  ``palettize4`` / ``palettize6`` / ``palettize8``  k-means palettization (per-tensor look-up tables);
  ``int8-weights`` linear symmetric int8 per-channel weights;
  ``mixed``        6-bit palettization of the large convolution/linear weights, 8-bit linear elsewhere.

Every recipe keeps ``keep_float`` layers in float: by default the UNet's first and last convolutions (``conv_in``
sees raw latents, ``conv_out`` writes the prediction whose error every sampling step integrates), its sinusoidal
timestep projection ``time_proj`` (timesteps up to 999 times frequencies: int8 there turns the time embedding into
noise; ExecuTorch's XNNPACKQuantizer quantizes it, ONNX's op list does not reach it) and the whole VAE decoder
(``components`` excludes it), the choices measured in benchmarks/results/quantization.md.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilediff.errors import MobilediffError

DEFAULT_COMPONENTS = ("text_encoder", "unet")
# ONNX ops whose weights are quantized: convolutions and matrix products, and Gather for the token-embedding table
# (most of a small text encoder's bytes)
QUANT_OPS = ["Conv", "MatMul", "Gemm", "Gather"]
# the UNet's first and last convolutions, and its sinusoidal timestep projection (no weights; int8 activations there
# destroy the time embedding: see _KeepFloat)
DEFAULT_KEEP_FLOAT = ("unet.conv_in", "unet.conv_out", "unet.time_proj")


@dataclass(frozen=True)
class Recipe:
    target: str
    name: str
    description: str
    calibrated: bool = False
    components: tuple[str, ...] = DEFAULT_COMPONENTS
    keep_float: tuple[str, ...] = DEFAULT_KEEP_FLOAT
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"target": self.target, "name": self.name, "description": self.description,
                "calibrated": self.calibrated, "components": list(self.components),
                "keep_float": list(self.keep_float), "options": dict(self.options)}


RECIPES: dict[str, dict[str, Recipe]] = {
    "onnx": {
        "int8-static": Recipe("onnx", "int8-static", "QDQ int8: per-channel symmetric int8 weights, uint8 activations "
                              "calibrated (MinMax) on sampling trajectories", calibrated=True),
        "int8-dynamic": Recipe("onnx", "int8-dynamic", "int8 per-channel weights, activations quantized at run time"),
        "fp16": Recipe("onnx", "fp16", "float16 weights and compute, float32 I/O", keep_float=()),
    },
    "executorch": {
        "int8": Recipe("executorch", "int8", "PT2E static int8 (XNNPACKQuantizer, per-channel symmetric weights), "
                       "calibrated on sampling trajectories", calibrated=True),
        "int4-weights": Recipe("executorch", "int4-weights", "4-bit grouped Linear weights, int8 dynamic activations "
                               "(XNNPACK 8da4w); convolutions float", options={"group_size": 32}),
    },
    "coreml": {
        **{f"palettize{b}": Recipe("coreml", f"palettize{b}", f"{b}-bit k-means weight palettization",
                                   options={"nbits": b}) for b in (4, 6, 8)},
        "int8-weights": Recipe("coreml", "int8-weights", "linear symmetric int8 per-channel weights"),
        "mixed": Recipe("coreml", "mixed", "6-bit palettization of weights >= 16k elements, int8 linear below",
                        options={"nbits": 6, "large": 16384}),
    },
}


def get_recipe(target: str, name: str) -> Recipe:
    if target not in RECIPES:
        raise MobilediffError(f"unknown target {target!r} for quantization")
    if name not in RECIPES[target]:
        raise MobilediffError(f"no quantization recipe {name!r} for {target}; valid: {', '.join(RECIPES[target])}")
    return RECIPES[target][name]


def _wrapped(names: tuple[str, ...], component: str) -> list[str]:
    """Module names of keep-float layers inside the component wrapper (``unet.conv_in`` -> ``unet.conv_in``)."""
    return [n for n in names if n.split(".")[0] == component.split("_")[0]]


# ---------------------------------------------------------------------------------------------- ONNX


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


def quantize_onnx(spec, recipe: Recipe, path: Path, calibration) -> dict:
    """Quantize the fp32 graph at ``path`` in place; returns facts for the manifest."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    keep = _onnx_float_nodes(path, _wrapped(recipe.keep_float, spec.name))
    with tempfile.TemporaryDirectory(dir=path.parent) as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
        out = Path(td) / "q.onnx"
        if recipe.name == "int8-static":
            rows = calibration.batches(spec.name)
            quantize_static(str(pre), str(out), _Reader([s.name for s in spec.inputs], rows),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=QUANT_OPS,
                            nodes_to_exclude=keep, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
            facts = {"calibration_rows": len(rows)}
        elif recipe.name == "int8-dynamic":
            quantize_dynamic(str(pre), str(out), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=QUANT_OPS, nodes_to_exclude=keep)
            facts = {}
        else:
            raise MobilediffError(f"onnx recipe {recipe.name} is an export precision, not a graph rewrite")
        shutil.move(str(out), str(path))
    return {**facts, "nodes_kept_float": keep}


# ---------------------------------------------------------------------------------------------- ExecuTorch


def _static_rows(spec, rows) -> list[tuple[torch.Tensor, ...]]:
    """Batch-1 calibration rows regrouped to the component's static batch (ExecuTorch shapes are static)."""
    b = spec.dims.get("batch", 1)
    out = []
    for i in range(0, len(rows) - b + 1, b):
        out.append(tuple(torch.cat([r[k] for r in rows[i:i + b]]) for k in range(len(rows[0]))))
    if not out:
        raise MobilediffError(f"need at least {b} calibration rows for {spec.name}")
    return out


def _shared_refs(annotation):
    """The nodes whose quantization parameters ``annotation`` (a PT2E QuantizationAnnotation) shares."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    for spec in [*annotation.input_qspec_map.values(), annotation.output_qspec]:
        if isinstance(spec, SharedQuantizationSpec):
            ref = spec.edge_or_node
            yield from (ref if isinstance(ref, tuple) else (ref,))


def _KeepFloat(inner, kept):
    """``inner`` (a PT2E quantizer) with every annotation on a node that ``kept(node)`` removed afterwards.

    XNNPACKQuantizer's filter function is not enough: after annotating the patterns it propagates annotations
    through cat, slice and friends regardless of the filter, so float-kept modules still lose precision. Worst
    of all is the UNet's sinusoidal timestep projection (``time_proj``): timesteps up to 999 times frequencies,
    quantized to int8 before sin/cos, make the time embedding noise (the broken int8 student of
    benchmarks/results/quantization.md, 19.8 dB)."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    class KeepFloat(Quantizer):
        def annotate(self, model):
            model = inner.annotate(model)
            for node in model.graph.nodes:
                if kept(node):
                    node.meta.pop("quantization_annotation", None)
            # an annotation that shares quantization parameters with a node left unannotated has nothing to share:
            # drop it too (repeat until none is left), else prepare_pt2e fails on the missing observer
            changed = True
            while changed:
                changed = False
                for node in model.graph.nodes:
                    ann = node.meta.get("quantization_annotation")
                    if ann is not None and any("quantization_annotation" not in n.meta for n in _shared_refs(ann)):
                        del node.meta["quantization_annotation"]
                        changed = True
            return model

        def transform_for_annotation(self, model):
            return inner.transform_for_annotation(model)

        def validate(self, model):
            return inner.validate(model)

    return KeepFloat()


def quantize_executorch_module(spec, recipe: Recipe, calibration):
    """The component as a quantized torch module ready for torch.export + XNNPACK lowering."""
    inputs = spec.example_inputs()
    keep = _wrapped(recipe.keep_float, spec.name)
    if recipe.name == "int8":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        def kept(node) -> bool:
            stack = node.meta.get("nn_module_stack", {}).values()
            return any(fqn == k or fqn.startswith(k + ".") for fqn, _ in stack for k in keep)

        quantizer = _KeepFloat(XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)),
                               kept)
        with torch.no_grad():
            graph = torch.export.export(spec.module, inputs, strict=False).module()
            prepared = prepare_pt2e(graph, quantizer)
            for row in _static_rows(spec, calibration.batches(spec.name)):
                prepared(*row)
            return convert_pt2e(prepared), {"calibration_batches": len(_static_rows(spec, calibration.batches(spec.name)))}
    if recipe.name == "int4-weights":
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerGroup

        module = copy.deepcopy(spec.module)
        group = recipe.options["group_size"]

        def eligible(m, fqn):
            return (isinstance(m, torch.nn.Linear) and m.in_features % group == 0
                    and not any(fqn == k or fqn.startswith(k + ".") for k in keep))

        quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                                weight_granularity=PerGroup(group)), filter_fn=eligible)
        n = sum(1 for fqn, m in spec.module.named_modules() if eligible(m, fqn))
        return module, {"linear_layers_4bit": n}
    raise MobilediffError(f"unknown executorch recipe {recipe.name}")


# ---------------------------------------------------------------------------------------------- Core ML


def coreml_config(recipe: Recipe):
    import coremltools.optimize.coreml as cto

    if recipe.name.startswith("palettize"):
        return cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=recipe.options["nbits"], mode="kmeans"))
    if recipe.name == "int8-weights":
        return cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                                dtype="int8", granularity="per_channel"))
    raise MobilediffError(f"unknown coreml recipe {recipe.name}")


def quantize_coreml(mlmodel, recipe: Recipe):
    """Compress a converted Core ML model's weights with ``recipe``; returns (model, facts)."""
    import coremltools.optimize.coreml as cto

    if recipe.name == "mixed":
        big = recipe.options["large"]
        pal = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=recipe.options["nbits"], mode="kmeans",
                                                                          weight_threshold=big))
        mlmodel = cto.palettize_weights(mlmodel, pal)
        lin = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                                              weight_threshold=2048))
        return cto.linear_quantize_weights(mlmodel, lin), {"large_weight_threshold": big}
    cfg = coreml_config(recipe)
    if recipe.name.startswith("palettize"):
        return cto.palettize_weights(mlmodel, cfg), {}
    return cto.linear_quantize_weights(mlmodel, cfg), {}


def coreml_weight_facts(mlmodel) -> dict:
    """How many of a saved ML program's weights are stored compressed (palettized / quantized ops in its MIL)."""
    proto = mlmodel.get_spec()
    counts: dict[str, int] = {}
    for fn in proto.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                if op.type.startswith(("constexpr_",)):
                    counts[op.type] = counts.get(op.type, 0) + 1
    return {"compressed_weights": sum(counts.values()), "ops": dict(sorted(counts.items()))}


def export_quantized(target_module, target: str, spec, path: Path, recipe: Recipe, precision: str,
                     calibration) -> tuple[dict, str]:
    """Export ``spec`` to ``path`` with ``recipe``; returns (facts, the precision tag its parity is checked at)."""
    if target == "onnx":
        if recipe.name == "fp16":
            return target_module.export(spec, path, "fp16"), "fp16"
        facts = target_module.export(spec, path, "fp32")
        if facts["external_data"]:  # onnxruntime.quantization would read the whole model through protobuf (2 GiB)
            raise MobilediffError(f"onnx {recipe.name}: quantizing a graph with external data ({spec.name}, over "
                                  f"{target_module.EXTERNAL_DATA_MIN_BYTES / 2**30:g} GiB of weights) is not supported")
        facts["quantization"] = quantize_onnx(spec, recipe, path, calibration)
        return facts, recipe.name
    if target == "executorch":
        from mobilediff.io import atomic_write_bytes

        module, qfacts = quantize_executorch_module(spec, recipe, calibration)
        program, facts = target_module.lower(module, spec.example_inputs(), "fp32")
        atomic_write_bytes(Path(path), program.buffer)
        return {**facts, "quantization": qfacts}, recipe.name
    if target == "coreml":
        import coremltools as ct

        facts = target_module.export(spec, path, precision)
        model, qfacts = quantize_coreml(ct.models.MLModel(str(path), skip_model_load=True), recipe)
        shutil.rmtree(path)
        model.save(str(path))
        return {**facts, "quantization": qfacts, "size_bytes": target_module._package_size(Path(path))}, \
            f"{precision}+{recipe.name}"
    raise MobilediffError(f"unknown target {target!r}")
