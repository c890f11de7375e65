"""Run-time LoRA adapters: a bundle exported once holds N adapters as small files, switched or mixed without re-export.

``export --runtime-lora FILE[:SCALE]`` (repeatable) exports every component an adapter touches (the UNet, the text
encoder) with one extra input, ``lora_weights``: a flat float32 vector of *rank slots* for every linear layer the
adapters adapt. For each such layer, in the manifest's order, the vector holds ``down`` (R x in, row-major) then
``up`` (out x R, row-major), and the graph computes ``base(x) + (x @ down^T) @ up^T``. R (``--lora-rank``, default the
sum of the adapters' ranks) is how many rank slots a mix may fill: an adapter of rank r at scale s fills r of them,
``down`` rows = its A, ``up`` columns = s x its B (B already holding the adapter's alpha / r, as PEFT applies it);
several adapters fill consecutive slots, unused slots are zero, and all zeros is the base model. Switching adapters
is repacking this vector on the host: no graph is rebuilt or reloaded.

Each adapter is written to ``adapters/<name>.safetensors`` (per layer ``<component>.<module>.down`` r x in and
``.up`` out x r, float32), its sha256 in the manifest's ``adapters`` record (docs/bundle.md), and checked at export:
the graph fed the packed vector against the same model with the adapter merged by ``--lora`` (PEFT's fuse), per
target. The adapters are read the way ``--lora`` reads them (any layout diffusers converts), through PEFT's own
layers, so the scaling is exactly the one a merge applies.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from mobilediff.errors import MobilediffError
from mobilediff.lora import fans

INPUT = "lora_weights"
ADAPTER_DIR = "adapters"
COMPONENT_OF = {"unet": "unet", "text_encoder": "text_encoder"}  # pipeline module -> bundle component


@dataclass
class AdapterWeights:
    """One adapter read through PEFT: per (component, module) its down (r x in) and scaled up (out x r)."""

    name: str
    file: str
    sha256: str
    default_scale: float
    layers: dict  # (component, module) -> (down, up)

    @property
    def rank(self) -> int:
        return max(d.shape[0] for d, _ in self.layers.values())


def pointwise(module) -> bool:
    """A 1x1 convolution (stride 1, no padding, dilation 1, one group): a linear layer over each pixel's channels,
    as SD-1.x's attention ``proj_in``/``proj_out`` are and kohya-format adapters adapt them."""
    return (isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) == (1, 1) and tuple(module.dilation) == (1, 1) and module.groups == 1
            and module.padding in ((0, 0), 0, "valid"))


def _matrix(w: torch.Tensor) -> torch.Tensor:
    """A LoRA matrix as rows x columns (a 1x1 convolution's weight out x in x 1 x 1 flattened)."""
    return w.detach().float().reshape(w.shape[0], -1).clone()


def _peft_layers(module) -> dict[str, object]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}


def read_adapters(pipe, adapters) -> list[AdapterWeights]:
    """Each :class:`mobilediff.lora.Adapter` checked against ``pipe`` and read through PEFT (loaded into the pipeline,
    its matrices and scaling copied out, unloaded again: the pipeline is left as it was). Raises MobilediffError for
    an adapter a run-time slot cannot hold (a convolution other than 1x1, or a DoRA layer: merge those with --lora)."""
    from mobilediff.bundle import sha256_path
    from mobilediff.lora import check_adapter, read_adapter
    from mobilediff.quiet import quiet_libraries

    names = [a.name for a in adapters]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise MobilediffError(f"--runtime-lora: two adapters are named {dup!r} (a bundle's adapters need distinct "
                              f"file names)")
    for a in adapters:  # every file checked before the pipeline is touched
        check_adapter(pipe, read_adapter(a.path), a.path)
    quiet_libraries()
    out = []
    for a in adapters:
        tag = f"mdrt_{len(out)}"
        pipe.load_lora_weights(str(a.path.resolve().parent), weight_name=a.path.name, adapter_name=tag)
        try:
            layers = {}
            for component in COMPONENT_OF:
                for name, layer in _peft_layers(getattr(pipe, component)).items():
                    if tag not in layer.lora_A:
                        continue
                    if getattr(layer, "use_dora", {}).get(tag, False):
                        raise MobilediffError(f"--runtime-lora {a.path}: {component}.{name} is a DoRA layer; merge "
                                              f"it with --lora")
                    down, up = layer.lora_A[tag], layer.lora_B[tag]
                    base = layer.base_layer
                    linear = isinstance(base, torch.nn.Linear) and isinstance(down, torch.nn.Linear)
                    if not (linear or (pointwise(base) and pointwise(down) and pointwise(up))):
                        kind = (f"{type(base).__name__} with a {'x'.join(map(str, base.kernel_size))} kernel"
                                if isinstance(base, torch.nn.Conv2d) else type(base).__name__)
                        raise MobilediffError(f"--runtime-lora {a.path}: it adapts {component}.{name}, a {kind}; "
                                              f"run-time slots hold linear layers and 1x1 convolutions only: merge "
                                              f"this adapter with --lora")
                    scaling = float(layer.scaling[tag])
                    layers[(component, name)] = (_matrix(down.weight), _matrix(up.weight) * scaling)
        finally:
            pipe.unload_lora_weights()  # the PEFT layers removed, the base layers back in place
        if not layers:
            raise MobilediffError(f"--runtime-lora {a.path}: PEFT found no UNet or text encoder layer in it")
        out.append(AdapterWeights(a.name, a.path.name, sha256_path(a.path), a.scale, layers))
    return out


@dataclass
class Slots:
    """The rank slots of one component: its adapted linear layers in order, each with its offsets in the vector."""

    component: str
    rank: int
    layers: list  # dicts: module, in_features, out_features, down_offset, up_offset

    @property
    def size(self) -> int:
        return sum(l["in_features"] * self.rank + l["out_features"] * self.rank for l in self.layers)

    def to_dict(self) -> dict:
        return {"input": INPUT, "rank": self.rank, "size": self.size, "layers": self.layers}

    @classmethod
    def from_dict(cls, component: str, d: dict) -> "Slots":
        return cls(component, int(d["rank"]), list(d["layers"]))


def plan_slots(pipe, adapters: list[AdapterWeights], rank: int | None) -> dict[str, Slots]:
    """Slots for the union of the adapters' layers, per component; ``rank`` R (default: the sum of their ranks, so
    every adapter can be on at once). Raises MobilediffError for R below the largest adapter's rank."""
    need = max(a.rank for a in adapters)
    total = sum(a.rank for a in adapters)
    if rank is None:
        rank = total
    if rank < need:
        raise MobilediffError(f"--lora-rank {rank} is below the rank of an adapter ({need}): each adapter needs its "
                              f"rank in slots")
    out = {}
    for component in COMPONENT_OF:
        modules = sorted({m for a in adapters for (c, m) in a.layers if c == component},
                         key=lambda m: list(dict(getattr(pipe, component).named_modules())).index(m))
        if not modules:
            continue
        layers, offset = [], 0
        for m in modules:
            fan_in, fan_out = fans(getattr(pipe, component).get_submodule(m))
            layers.append({"module": m, "in_features": fan_in, "out_features": fan_out, "down_offset": offset,
                           "up_offset": offset + rank * fan_in})
            offset += rank * (fan_in + fan_out)
        out[COMPONENT_OF[component]] = Slots(COMPONENT_OF[component], rank, layers)
    return out


def pack(slots: Slots, mix: list[tuple[dict, float]]) -> torch.Tensor:
    """The ``lora_weights`` vector of ``slots`` for a mix of adapters: (layers {module: (down, up)}, scale) each, in
    order, filling consecutive rank slots. Raises MobilediffError when the mix needs more slots than the bundle has."""
    used = sum(max((d.shape[0] for d, _ in layers.values()), default=0) for layers, _ in mix)
    if used > slots.rank:
        raise MobilediffError(f"these adapters together need {used} rank slots; the bundle's {slots.component} has "
                              f"{slots.rank} (export with a larger --lora-rank to mix them)")
    flat = torch.zeros(slots.size, dtype=torch.float32)
    start = 0
    for layers, scale in mix:
        r = max((d.shape[0] for d, _ in layers.values()), default=0)
        for l in slots.layers:
            pair = layers.get(l["module"])
            if pair is None:
                continue
            down, up = pair
            k, fi, fo, R = down.shape[0], l["in_features"], l["out_features"], slots.rank
            flat[l["down_offset"]:l["down_offset"] + R * fi].view(R, fi)[start:start + k] = down
            flat[l["up_offset"]:l["up_offset"] + fo * R].view(fo, R)[:, start:start + k] = up * scale
        start += r
    return flat


class _Holder:
    value: torch.Tensor | None = None


class LowRank(torch.nn.Module):
    """The low-rank update of one adapted layer, read from the component's ``lora_weights`` input, added to the base
    layer's output: ``y + (x @ down^T) @ up^T``. Its products multiply two activations and stay float in every int8 recipe (``keep_float``): an int8 base
    with a float adapter."""

    keep_float = True

    def __init__(self, layer: dict, rank: int, fan_in: int, fan_out: int, channels_first: bool = False):
        super().__init__()
        self.d0, self.u0, self.rank, self.fan_in, self.fan_out = layer["down_offset"], layer["up_offset"], rank, fan_in, fan_out
        self.channels_first = channels_first  # a 1x1 convolution: features on dim 1 of (B, C, H, W)

    def forward(self, x, y, flat):
        """``y`` (the base layer's output) plus the update: the sum is made here, in float, so that no int8
        quantizer puts an observer (calibrated on the base model, where the update is zero) on the update."""
        down = flat[self.d0:self.d0 + self.rank * self.fan_in].reshape(self.rank, self.fan_in)
        up = flat[self.u0:self.u0 + self.fan_out * self.rank].reshape(self.fan_out, self.rank)
        if self.channels_first:  # the same products over each pixel's channels (matrix products, not a convolution
            # whose weight is an input: every runtime runs those alike)
            update = torch.matmul(torch.matmul(x.permute(0, 2, 3, 1), down.t()), up.t())
            return y + update.permute(0, 3, 1, 2)
        return y + torch.matmul(torch.matmul(x, down.t()), up.t())


class SlotLinear(torch.nn.Module):
    """A linear layer (or 1x1 convolution) plus its low-rank slots read from the component's ``lora_weights`` input
    (its base layer alone when the component runs without one, e.g. while calibration samples the pipeline)."""

    def __init__(self, base: torch.nn.Module, holder: _Holder, layer: dict, rank: int):
        super().__init__()
        self.base, self.holder = base, holder
        self.low_rank = LowRank(layer, rank, *fans(base), channels_first=not isinstance(base, torch.nn.Linear))

    def forward(self, x):
        flat = self.holder.value
        y = self.base(x)
        return y if flat is None else self.low_rank(x, y, flat)


class LoraInputs(torch.nn.Module):
    """A component wrapper taking ``lora_weights`` after its own inputs."""

    def __init__(self, inner: torch.nn.Module, holder: _Holder):
        super().__init__()
        self.inner, self.holder = inner, holder

    def forward(self, *args):
        *args, flat = args
        self.holder.value = flat
        try:
            return self.inner(*args)
        finally:
            self.holder.value = None


@contextlib.contextmanager
def slotted(pipe, specs: dict, slots: dict[str, Slots]):
    """``pipe``'s adapted linear layers replaced by :class:`SlotLinear` and each slotted component's spec given the
    ``lora_weights`` input, for the block; the pipeline's own layers are put back after it."""
    from mobilediff.components import TensorSpec

    replaced = []
    saved = {name: (specs[name].module, specs[name].inputs) for name in slots}
    try:
        for name, s in slots.items():
            holder = _Holder()
            model = getattr(pipe, name)
            for l in s.layers:
                parent_name, _, leaf = l["module"].rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                base = getattr(parent, leaf)
                setattr(parent, leaf, SlotLinear(base, holder, l, s.rank))
                replaced.append((parent, leaf, base))
            spec = specs[name]
            spec.module = LoraInputs(spec.module, holder).eval()
            spec.inputs = spec.inputs + (TensorSpec(INPUT, (s.size,), "float32",
                                                    f"run-time LoRA rank slots (rank {s.rank}; manifest adapters; all "
                                                    f"zeros: the base model)"),)
        yield
    finally:
        for parent, leaf, base in reversed(replaced):
            setattr(parent, leaf, base)
        for name, (module, inputs) in saved.items():
            specs[name].module, specs[name].inputs = module, inputs


def merged_pipeline(pipe, adapter) -> object:
    """A copy of ``pipe`` with ``adapter`` merged as ``--lora`` merges it (its UNet and text encoder copied; the
    rest shared)."""
    from mobilediff.lora import apply_adapters

    parts = dict(pipe.components)
    parts["unet"], parts["text_encoder"] = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
    merged = type(pipe)(**parts)
    apply_adapters(merged, [adapter])
    return merged


def write_adapter(weights: AdapterWeights, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for (component, module), (down, up) in weights.layers.items():
        tensors[f"{component}.{module}.down"] = down.contiguous()
        tensors[f"{component}.{module}.up"] = up.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "mobilediff.runtime_lora", "name": weights.name,
                                            "source": weights.file})


def read_bundle_adapter(path: Path) -> dict[str, dict]:
    """A bundle's adapter file -> {component: {module: (down, up)}}. Raises MobilediffError for a corrupt file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MobilediffError(f"bundle adapter {path} is not a readable safetensors file: {str(e)[:100]}") from None
    out: dict[str, dict] = {}
    for key, t in tensors.items():
        component, _, rest = key.partition(".")
        module, _, side = rest.rpartition(".")
        if side not in ("down", "up") or not module:
            raise MobilediffError(f"bundle adapter {path}: unexpected tensor {key!r}")
        out.setdefault(component, {}).setdefault(module, {})[side] = t.float()
    for component, layers in out.items():
        for module, pair in layers.items():
            if set(pair) != {"down", "up"}:
                raise MobilediffError(f"bundle adapter {path}: {component}.{module} lacks a matrix")
            layers[module] = (pair["down"], pair["up"])
    return out


def parse_selection(values, known: list[str]) -> list[tuple[str, float]]:
    """``NAME[:SCALE]`` values (a bundle's adapters by name) -> [(name, scale)]. Raises MobilediffError for an
    adapter the bundle does not hold, a non-finite scale or a name given twice."""
    out = []
    for v in values:
        name, sep, tail = v.rpartition(":")
        if not sep:
            name, tail = v, "1"
        try:
            scale = float(tail)
        except ValueError:
            raise MobilediffError(f"--lora {v}: the scale after ':' must be a number, got {tail!r}") from None
        if not math.isfinite(scale):
            raise MobilediffError(f"--lora {v}: the scale must be a finite number, got {scale}")
        if name not in known:
            raise MobilediffError(f"--lora {name}: the bundle holds no run-time adapter of that name (it holds: "
                                  f"{', '.join(known) or 'none; export with --runtime-lora'})")
        if any(n == name for n, _ in out):
            raise MobilediffError(f"--lora {name} is given twice")
        out.append((name, scale))
    return out
