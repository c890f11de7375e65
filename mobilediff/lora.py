"""LoRA adapters merged into a pipeline before it runs or is exported (``--lora FILE[:SCALE]``).

An adapter is a safetensors file in any layout diffusers reads (diffusers/PEFT ``unet.<module>.lora_A/B``, the older
``lora.down/up``, kohya/A1111 ``lora_unet_...``): diffusers converts it and PEFT injects it; the low-rank update of
every adapter, times its scale, is then fused into the weights and the adapter layers removed, so the pipeline is
a plain one again (what every target exports). Before anything is loaded, each file is checked against the model:
every module it names must exist in the UNet or text encoder, with the input and output sizes its matrices have, and
each pair's ranks must agree -- an adapter for another architecture is refused in one line naming the first
module that does not fit. Pickle files are never read.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mobilediff.errors import MobilediffError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_PAIR = re.compile(r"^(unet|text_encoder)\.(.+?)\.(lora_A|lora_B|lora\.down|lora\.up|lora_down|lora_up)"
                   r"(?:\.[^.]+)?\.weight$")
_DOWN = ("lora_A", "lora.down", "lora_down")


@dataclass(frozen=True)
class Adapter:
    path: Path
    scale: float = 1.0
    label: str = ""  # ``default:NAME``: NAME

    @property
    def name(self) -> str:
        return re.sub(r"[^\w.-]", "_", self.label or self.path.stem) or "adapter"


def parse_adapter(value: str) -> Adapter:
    """``FILE[:SCALE]`` -> :class:`Adapter` (scale 1 when not given). Raises MobilediffError for a scale that is not
    a finite number."""
    path, scale = value, 1.0
    head, sep, tail = value.rpartition(":")
    if sep and head and not re.match(r"^[A-Za-z]$", head) and head != "default":  # "C:\\...", "default:NAME"
        try:
            scale = float(tail)
        except ValueError:
            raise MobilediffError(f"--lora {value}: the scale after ':' must be a number, got {tail!r}") from None
        path = head
    if not math.isfinite(scale):
        raise MobilediffError(f"--lora {value}: the scale must be a finite number, got {scale}")
    from mobilediff.adapters import adapter_path

    return Adapter(adapter_path(path), scale, path.split(":", 1)[1] if path.startswith("default:") else "")


def read_adapter(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an adapter file (safetensors only). Raises MobilediffError for a missing, pickle or corrupt file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise MobilediffError(f"--lora {path}: a pickle file ({path.suffix}) is never loaded; convert the adapter to "
                              f"safetensors")
    if not path.is_file():
        raise MobilediffError(f"--lora {path}: no such file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MobilediffError(f"--lora {path} is not a readable safetensors file: {str(e).splitlines()[0][:120]}") \
            from None
    if not tensors:
        raise MobilediffError(f"--lora {path} holds no tensors")
    return tensors


def _diffusers_layout(tensors: dict, path: Path) -> dict:
    """The adapter in diffusers' layout (``unet.<module>.lora_A.weight`` ...), converted by diffusers itself."""
    from diffusers import StableDiffusionPipeline

    try:
        converted = StableDiffusionPipeline.lora_state_dict(dict(tensors))
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise MobilediffError(f"--lora {path}: not a LoRA adapter diffusers reads ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]})") from None
    sd = converted[0] if isinstance(converted, tuple) else converted
    # the attention-processor names of converted kohya files (attn1.processor.to_q_lora.down), as diffusers maps them
    out = {}
    for key, t in sd.items():
        key = re.sub(r"\.processor\.(to_q|to_k|to_v)_lora\.", r".\1.lora.", key)
        out[re.sub(r"\.processor\.to_out_lora\.", ".to_out.0.lora.", key)] = t
    return out


def fans(module) -> tuple[int, int]:
    """(in, out) features of a layer a LoRA adapts: a linear layer's, or a convolution's channels."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def check_adapter(pipe, tensors: dict, path: Path) -> dict:
    """Check an adapter against ``pipe`` (every module exists, matrix sizes and ranks fit); returns a summary
    {"components", "modules", "rank"}. Raises MobilediffError naming the first module that does not fit."""
    sd = _diffusers_layout(tensors, path)
    pairs: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        m = _PAIR.match(key)
        if m is None:
            continue
        side = "down" if m.group(3) in _DOWN else "up"
        pairs.setdefault((m.group(1), m.group(2)), {})[side] = t
    if not pairs:
        some = ", ".join(list(sd)[:2]) or "none"
        raise MobilediffError(f"--lora {path}: no UNet or text encoder LoRA matrices in it (keys: {some})")
    ranks = set()
    for (component, module_name), mats in sorted(pairs.items()):
        where = f"{component}.{module_name}"
        if set(mats) != {"down", "up"}:
            raise MobilediffError(f"--lora {path}: {where} has only its {next(iter(mats))} matrix")
        try:
            module = getattr(pipe, component).get_submodule(module_name)
        except AttributeError:
            raise MobilediffError(f"--lora {path}: it adapts {where}, which this model does not have (an adapter for "
                                  f"another architecture)") from None
        down, up = mats["down"], mats["up"]
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            raise MobilediffError(f"--lora {path}: it adapts {where}, a {type(module).__name__} (LoRA adapts linear "
                                  f"and convolution layers)")
        fan_in, fan_out = fans(module)
        if down.shape[0] != up.shape[1]:
            raise MobilediffError(f"--lora {path}: rank mismatch at {where}: its down matrix has rank {down.shape[0]}, "
                                  f"its up matrix {up.shape[1]}")
        if down.shape[1] != fan_in or up.shape[0] != fan_out:
            raise MobilediffError(f"--lora {path}: {where} maps {down.shape[1]} -> {up.shape[0]} features, the model's "
                                  f"layer {fan_in} -> {fan_out} (an adapter for another architecture)")
        if not (torch.isfinite(down).all() and torch.isfinite(up).all()):
            raise MobilediffError(f"--lora {path}: {where} holds non-finite values")
        ranks.add(int(down.shape[0]))
    return {"components": sorted({c for c, _ in pairs}), "modules": len(pairs), "rank": sorted(ranks)}


def apply_adapters(pipe, adapters: list[Adapter]) -> list[dict]:
    """Fuse ``adapters`` (each times its scale) into ``pipe``'s UNet and text encoder, in place; returns one record
    per adapter (file name, sha256, scale, what it adapts) for the manifest. Every file is read and checked before
    the pipeline is touched."""
    from mobilediff.bundle import sha256_path
    from mobilediff.quiet import quiet_libraries

    if not adapters:
        return []
    from mobilediff import transformer_family

    if transformer_family.is_transformer_pipeline(pipe):
        raise MobilediffError(f"--lora is not built for {type(pipe).__name__} models (UNet adapters only)")
    try:
        import peft  # noqa: F401  (diffusers injects adapters with it)
    except ImportError:
        raise MobilediffError("--lora needs the peft package (pip install -e . installs it)") from None
    checked = []
    for a in adapters:
        tensors = read_adapter(a.path)
        checked.append((a, tensors, check_adapter(pipe, tensors, a.path)))
    names = []
    quiet_libraries()
    import warnings

    # PEFT warns that a second adapter joins the first in the same model: that is what mixing them is
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
    for i, (a, tensors, _) in enumerate(checked):
        name = re.sub(r"\W", "_", a.name) + f"_{i}"
        # from the file, not its tensors: its header may hold the adapter's alpha (PEFT's lora_alpha, its scaling)
        pipe.load_lora_weights(str(a.path.resolve().parent), weight_name=a.path.name, adapter_name=name)
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[a.scale for a, _, _ in checked])
    components = sorted({c for _, _, s in checked for c in s["components"]})
    pipe.fuse_lora(components=components, adapter_names=names)
    pipe.unload_lora_weights()
    return [{"file": a.path.name, "sha256": sha256_path(a.path), "scale": a.scale, **summary}
            for a, _, summary in checked]


def random_adapter(pipe, path: Path, rank: int = 2, seed: int = 0, std: float = 0.05,
                   unet_targets=("to_q", "to_v"), text_targets=("q_proj", "v_proj")) -> Path:
    """A seeded random LoRA on ``pipe``'s UNet (and, with ``text_targets``, text encoder) projections, saved as
    diffusers saves one: an adapter with no purpose but to check that every reader applies an adapter exactly
    (the apps' fixtures, tests). ``pipe`` is left as it was (a copy of each model takes the adapter)."""
    import copy

    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    g = torch.Generator().manual_seed(seed)
    layers = {}
    for component, targets in (("unet", unet_targets), ("text_encoder", text_targets)):
        if not targets:
            continue
        model = copy.deepcopy(getattr(pipe, component))
        model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False),
                          adapter_name="random")
        state = get_peft_model_state_dict(model, adapter_name="random")
        layers[component] = {k: torch.randn(v.shape, generator=g) * std for k, v in sorted(state.items())}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers.get("unet"),
                                              text_encoder_lora_layers=layers.get("text_encoder"),
                                              weight_name=path.name)
    return path
