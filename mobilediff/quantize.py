"""The quantization recipes per export target (data); each target module applies its own (``quantize``).

A recipe names, per target, how each component is stored and computed, and which layers stay in float:

- ONNX (onnxruntime's quantization tool on the exported fp32 graph):
  ``int8-static``  QDQ, int8 per-channel symmetric weights, uint8 activations whose ranges are calibrated on the
                   inputs the components see while the pipeline samples (:mod:`mobilediff.calibration`);
  ``int8-dynamic`` int8 per-channel weights, activations quantized at run time (MatMul/Gemm/Conv -> integer ops);
  ``fp16``         the fp16 export (float16 weights and compute behind float32 I/O);
  ``int8-weights`` weight-only: int8 per-channel weights of convolutions and matrix products behind
                   DequantizeLinear, embedding tables int8 per row, float activations (:mod:`mobilediff.targets.onnx_weights`: a memory lever,
                   any graph size);
  ``int4-weights`` the same with int4 matrix products (blocks of 32 along the reduction axis), convolutions int8.
- ExecuTorch (torchao's PT2E flow with executorch's XNNPACKQuantizer, then XNNPACK lowering):
  ``int8``         static int8, per-channel symmetric weights, calibrated like ONNX ``int8-static``;
  ``int8-decoder`` ``int8`` with the VAE decoder quantized too (meant for a tiny decoder);
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
(``components`` excludes it, except in ``int8-decoder``), the choices measured in benchmarks/results/quantization.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mobilediff.errors import MobilediffError

DEFAULT_COMPONENTS = ("text_encoder", "unet")
# the UNet's first and last convolutions, and its sinusoidal timestep projection (no weights; int8 activations there
# destroy the time embedding: see _KeepFloat)
DEFAULT_KEEP_FLOAT = ("unet.conv_in", "unet.conv_out", "unet.time_proj")


# what a recipe does, whatever its target; each target maps a kind to its own quantizer
STATIC_INT8 = "static-int8"  # int8 weights and activations, activation ranges calibrated on sampling trajectories
DYNAMIC_INT8 = "dynamic-int8"  # int8 activations quantized at run time; weights int8 (or int4: options weight_bits)
WEIGHT_ONLY = "weight-only"  # compressed weights (palettized or linear), float compute
FLOAT = "float"  # a lower float precision (fp16), no integer arithmetic
KINDS = (STATIC_INT8, DYNAMIC_INT8, WEIGHT_ONLY, FLOAT)


@dataclass(frozen=True)
class Recipe:
    target: str
    name: str
    description: str
    kind: str  # one of KINDS: how the target quantizes (its quantizer is chosen by this, never by the name)
    components: tuple[str, ...] = DEFAULT_COMPONENTS
    keep_float: tuple[str, ...] = DEFAULT_KEEP_FLOAT
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise MobilediffError(f"recipe {self.name!r}: unknown kind {self.kind!r}; one of {', '.join(KINDS)}")

    @property
    def calibrated(self) -> bool:
        """Whether export records calibration inputs for it (static int8 only)."""
        return self.kind == STATIC_INT8

    def to_dict(self) -> dict:
        return {"target": self.target, "name": self.name, "description": self.description, "kind": self.kind,
                "calibrated": self.calibrated, "components": list(self.components),
                "keep_float": list(self.keep_float), "options": dict(self.options)}


RECIPES: dict[str, dict[str, Recipe]] = {
    "onnx": {
        "int8-static": Recipe("onnx", "int8-static", "QDQ int8: per-channel symmetric int8 weights, uint8 activations "
                              "calibrated (MinMax) on sampling trajectories", STATIC_INT8),
        "int8-dynamic": Recipe("onnx", "int8-dynamic", "int8 per-channel weights, activations quantized at run time",
                               DYNAMIC_INT8),
        "fp16": Recipe("onnx", "fp16", "float16 weights and compute, float32 I/O", FLOAT, keep_float=()),
        "int8-weights": Recipe("onnx", "int8-weights", "weight-only int8: per-channel symmetric int8 weights of the "
                               "convolutions and matrix products, each dequantized when its layer runs, and of the "
                               "embedding tables, dequantized after the lookup; float "
                               "activations and compute", WEIGHT_ONLY, options={"weight_bits": 8}),
        "int4-weights": Recipe("onnx", "int4-weights", "weight-only int4 matrix products (blocks of 32 along the "
                               "reduction axis) and int8 convolutions, dequantized when each layer runs; float "
                               "activations and compute", WEIGHT_ONLY, options={"weight_bits": 4, "group_size": 32}),
    },
    "executorch": {
        "int8": Recipe("executorch", "int8", "PT2E static int8 (XNNPACKQuantizer, per-channel symmetric weights), "
                       "calibrated on sampling trajectories", STATIC_INT8),
        "int8-decoder": Recipe("executorch", "int8-decoder", "int8 as above, the VAE decoder too (for a tiny decoder, "
                               "whose float convolutions are a third of a slim student's image)", STATIC_INT8,
                               components=DEFAULT_COMPONENTS + ("vae_decoder",)),
        "int4-weights": Recipe("executorch", "int4-weights", "4-bit grouped Linear weights, int8 dynamic activations "
                               "(XNNPACK 8da4w); convolutions float", DYNAMIC_INT8,
                               options={"weight_bits": 4, "group_size": 32}),
    },
    "coreml": {
        **{f"palettize{b}": Recipe("coreml", f"palettize{b}", f"{b}-bit k-means weight palettization", WEIGHT_ONLY,
                                   options={"method": "palettize", "nbits": b}) for b in (4, 6, 8)},
        "int8-weights": Recipe("coreml", "int8-weights", "linear symmetric int8 per-channel weights", WEIGHT_ONLY,
                               options={"method": "linear"}),
        "mixed": Recipe("coreml", "mixed", "6-bit palettization of weights >= 16k elements, int8 linear below",
                        WEIGHT_ONLY, options={"method": "mixed", "nbits": 6, "large": 16384}),
    },
}


def get_recipe(target: str, name: str) -> Recipe:
    if target not in RECIPES:
        raise MobilediffError(f"unknown target {target!r} for quantization")
    if name not in RECIPES[target]:
        raise MobilediffError(f"no quantization recipe {name!r} for {target}; valid: {', '.join(RECIPES[target])}")
    return RECIPES[target][name]


def kept_modules(recipe: Recipe, spec) -> list[str]:
    """Module names of ``recipe``'s keep-float layers inside the component ``spec``'s wrapper (``unet.conv_in``,
    ``text_encoder.text_model.final_layer_norm``): those under the wrapper's model attribute
    (:attr:`ComponentSpec.module_prefix`)."""
    named = [spec.module_path + n for n in recipe.keep_float if n.split(".")[0] == spec.module_prefix]
    # modules that stay float in every recipe (a run-time adapter's low-rank products: mobilediff.runtime_lora)
    return named + [fqn for fqn, m in spec.module.named_modules() if getattr(m, "keep_float", False)]


def static_rows(spec, rows) -> list[tuple[torch.Tensor, ...]]:
    """Batch-1 calibration rows regrouped to the component's static batch (targets with static shapes)."""
    b = spec.dims.get("batch", 1)
    batched = [bool(s.shape) and s.shape[0] == "batch" for s in spec.inputs]  # lora_weights is one vector per call
    out = []
    for i in range(0, len(rows) - b + 1, b):
        out.append(tuple(torch.cat([r[k] for r in rows[i:i + b]]) if batched[k] else rows[i][k]
                         for k in range(len(rows[0]))))
    if not out:
        raise MobilediffError(f"need at least {b} calibration rows for {spec.name}")
    return out
