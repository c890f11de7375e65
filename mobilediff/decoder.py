"""Tiny decoders for a model's latents (diffusers' ``AutoencoderTiny``, TAESD's architecture): the folder
``mobilediff distill-decoder`` writes, the checks that it fits a model, and the swap of a model's VAE for it.

The latent convention is TAESD's, as diffusers ships it: an AutoencoderTiny decodes the sampler's latent ``z`` as it
is. Its config's ``scaling_factor`` is 1.0 and its ``shift_factor`` 0, so StableDiffusionPipeline's
``vae.decode(z / scaling_factor)`` hands it ``z``, and a bundle exported with it says ``geometry.scaling_factor`` 1.0,
so an app's ``latent / scaling_factor + shift_factor`` is ``z`` too: no code anywhere changes. The VAE it was
distilled from decodes ``z / s`` (``s`` = that VAE's scaling_factor, 0.5556 for the default model) -- a different
tensor for the same image -- so the record beside the weights (``decoder.json``) keeps ``s`` and the latent shape:
the latent space the decoder belongs to. A decoder is refused for a model whose latents differ in channels, in
upsampling (image side / latent side) or in scale (``s``: another VAE's latent space).

A decoder folder holds ``config.json`` + ``diffusion_pytorch_model.safetensors`` (``AutoencoderTiny.save_pretrained``)
and ``decoder.json``. Only the decoder half is trained: the encoder half that the class always carries is the
smallest the config allows, with zero weights (``encode`` returns zeros, never plausible-looking latents).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from mobilediff.errors import MobilediffError

DEFAULT_DECODERS = Path(__file__).parent / "assets" / "decoders"
# embedded decoders by name: the default model's tiny decoder (docs/models.md, benchmarks/results/decoder.md)
NAMED_DECODERS = {"default:tiny": DEFAULT_DECODERS / "tiny"}
RECORD = "decoder.json"
KIND = "mobilediff.decoder"
CLASS = "AutoencoderTiny"


def tiny_config(latent_channels: int, width: int, blocks: tuple[int, ...]) -> dict:
    """The AutoencoderTiny config of a decoder ``width`` channels wide with ``blocks[i]`` residual blocks at level i
    (coarsest first; a 2x nearest upsampling between levels, so len(blocks) levels upsample 2^(len - 1) times).

    DecoderTiny keeps one width: each level's blocks take the previous level's output channels unchanged, so its
    ``decoder_block_out_channels`` must repeat one value (it fails at the first forward pass otherwise)."""
    levels = len(blocks)
    return {"in_channels": 3, "out_channels": 3, "latent_channels": latent_channels,
            "decoder_block_out_channels": (width,) * levels, "num_decoder_blocks": tuple(blocks),
            "encoder_block_out_channels": (latent_channels,) * levels, "num_encoder_blocks": (0,) * levels,
            "upsampling_scaling_factor": 2, "act_fn": "relu", "upsample_fn": "nearest",
            "scaling_factor": 1.0, "shift_factor": 0.0, "force_upcast": False}


def build_tiny(latent_channels: int, width: int, blocks: tuple[int, ...], seed: int):
    """A freshly initialised AutoencoderTiny of :func:`tiny_config` (seeded), its unused encoder zeroed."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae = AutoencoderTiny(**tiny_config(latent_channels, width, blocks))
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.zero_()
    return vae.requires_grad_(False).eval()


def decoder_gflop(vae, latent_shape: tuple[int, int, int]) -> float:
    """GFLOP of one decode of a (C, h, w) latent at batch 1 (torch's FLOP counter: 2 per multiply-add of the convs
    and matmuls; activations, upsampling and adds are not counted)."""
    from mobilediff.flops import count_gflop

    return count_gflop(vae.decode, (torch.zeros(1, *latent_shape),))


# ------------------------------------------------------------------------------------------ latent spaces


def vae_folder(model_dir: Path) -> Path:
    """The folder of a pipeline's VAE (a packed pipeline may borrow it from its base)."""
    from mobilediff.io import shared_components

    return shared_components(Path(model_dir)).get("vae", Path(model_dir) / "vae")


def _read_json(f: Path, what: str) -> dict:
    try:
        d = json.loads(Path(f).read_text())
    except FileNotFoundError:
        raise MobilediffError(f"{what}: {f} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MobilediffError(f"corrupt {f}: {e}") from None
    if not isinstance(d, dict):
        raise MobilediffError(f"corrupt {f}: expected an object")
    return d


def _space(channels, factor, scaling, shift) -> dict:
    return {"latent_channels": int(channels), "vae_scale_factor": int(factor), "scaling_factor": float(scaling),
            "shift_factor": float(shift or 0.0)}


def latent_space(vae_dir: Path) -> dict:
    """The latent space a pipeline's sampler works in, from its VAE folder: latent channels, the image / latent side
    ratio, and the scaling and shift that map the sampler's latent to the VAE's (AutoencoderKL: its config's; an
    AutoencoderTiny that ``distill-decoder`` wrote: the VAE's it was distilled from, from its record)."""
    vae_dir = Path(vae_dir)
    cfg = _read_json(vae_dir / "config.json", "VAE config")
    levels = len(cfg.get("decoder_block_out_channels") or cfg.get("block_out_channels") or (0,))
    factor = int(cfg.get("upsampling_scaling_factor", 2)) ** (levels - 1)
    if cfg.get("_class_name") == CLASS and (vae_dir / RECORD).is_file():
        return read_record(vae_dir)["latent"]
    return _space(cfg.get("latent_channels", 4), factor, cfg.get("scaling_factor", 1.0), cfg.get("shift_factor"))


def check_fits(decoder_dir: Path, record: dict, space: dict) -> None:
    """Refuse a decoder whose latent space (its record) is not ``space`` (a model's, see :func:`latent_space`), in
    one line naming what differs."""
    got = record["latent"]
    where = f"decoder {decoder_dir}"
    if got["latent_channels"] != space["latent_channels"]:
        raise MobilediffError(f"{where} decodes {got['latent_channels']}-channel latents; the model's have "
                              f"{space['latent_channels']}")
    if got["vae_scale_factor"] != space["vae_scale_factor"]:
        raise MobilediffError(f"{where} upsamples latents {got['vae_scale_factor']}x; the model's VAE "
                              f"{space['vae_scale_factor']}x (image side / latent side)")
    for key in ("scaling_factor", "shift_factor"):
        if not math.isclose(got[key], space[key], rel_tol=1e-9, abs_tol=1e-12):
            raise MobilediffError(f"{where} was distilled for latents of {key} {got[key]:.6g}; the model's VAE has "
                                  f"{space[key]:.6g} (another VAE's latent space)")


# ------------------------------------------------------------------------------------------ decoder folders


def read_record(decoder_dir: Path) -> dict:
    """The record of a decoder folder, checked: its kind and a complete ``latent`` entry. Raises MobilediffError."""
    f = Path(decoder_dir) / RECORD
    record = _read_json(f, f"decoder {decoder_dir} has no record of the latents it decodes "
                           f"(written by mobilediff distill-decoder)")
    latent = record.get("latent")
    try:
        if record.get("kind") != KIND:
            raise ValueError(f"kind {record.get('kind')!r} is not {KIND!r}")
        record["latent"] = _space(latent["latent_channels"], latent["vae_scale_factor"], latent["scaling_factor"],
                                  latent["shift_factor"])
        if not all(math.isfinite(v) for v in record["latent"].values()):
            raise ValueError("a latent-space number is not finite")
    except (KeyError, TypeError, ValueError) as e:
        raise MobilediffError(f"corrupt {f}: {e}") from None
    return record


def check_decoder_dir(decoder_dir: Path) -> dict:
    """Check a decoder folder without loading weights (it exists; an AutoencoderTiny config with scaling 1 and no
    shift; safetensors weights only, their headers intact; its record); returns the record."""
    from mobilediff.io import PICKLE_SUFFIXES, check_safetensors_header

    d = Path(decoder_dir)
    if not d.is_dir():
        raise MobilediffError(f"decoder folder not found: {d}")
    cfg = _read_json(d / "config.json", f"{d} is not a decoder folder (no config.json)")
    if cfg.get("_class_name") != CLASS:
        raise MobilediffError(f"decoder {d} holds class {cfg.get('_class_name')}, not {CLASS} (mobilediff "
                              f"distill-decoder writes one)")
    if cfg.get("scaling_factor", 1.0) != 1.0 or (cfg.get("shift_factor") or 0.0) != 0.0:
        raise MobilediffError(f"decoder {d} has scaling_factor {cfg.get('scaling_factor')} and shift_factor "
                              f"{cfg.get('shift_factor')}: an {CLASS} decodes the sampler's latent as it is (1 and 0)")
    weights = sorted(d.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES]
        raise MobilediffError(f"{d} holds only pickle weights ({', '.join(pickles)}): refusing to load them"
                              if pickles else f"no safetensors weights in decoder {d}")
    for w in weights:
        check_safetensors_header(w)
    return read_record(d)


def load_decoder(decoder_dir: Path, space: dict | None = None):
    """The checked AutoencoderTiny of a decoder folder (fp32, eval); with ``space``, refused unless it decodes that
    latent space (:func:`check_fits`)."""
    from diffusers import AutoencoderTiny

    record = check_decoder_dir(decoder_dir)
    if space is not None:
        check_fits(decoder_dir, record, space)
    try:
        vae = AutoencoderTiny.from_pretrained(str(decoder_dir), use_safetensors=True)
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise MobilediffError(f"could not load decoder {decoder_dir}: {str(e).splitlines()[0][:200]}") from None
    return vae.to(torch.float32).requires_grad_(False).eval()


def with_decoder(pipe, decoder_dir: Path, model_dir: Path):
    """A new pipeline: ``pipe`` (loaded from ``model_dir``) with its VAE replaced by the decoder in ``decoder_dir``,
    after checking that the decoder decodes the model's latent space. ``pipe`` is left as it was."""
    vae = load_decoder(decoder_dir, latent_space(vae_folder(model_dir)))
    components = {**pipe.components, "vae": vae}
    new = type(pipe)(**components, **({"requires_safety_checker": False}
                                      if "safety_checker" in components else {}))
    new.register_to_config(_name_or_path=pipe.config.get("_name_or_path"))
    new.set_progress_bar_config(disable=True)
    return new


def resolve_decoder(decoder: str | Path | None) -> Path | None:
    """'default:tiny' -> the embedded tiny decoder of the default model; otherwise the given folder (or None)."""
    if decoder is None:
        return None
    return NAMED_DECODERS.get(str(decoder), Path(decoder))


def decoder_source(decoder_dir: Path) -> dict:
    """What a bundle's manifest records of a swapped-in decoder: its name (an embedded one) or folder, and the sha256
    of its weights."""
    from mobilediff.io import tree_sha256

    names = {p.resolve(): name for name, p in NAMED_DECODERS.items()}
    label = names.get(Path(decoder_dir).resolve(), str(decoder_dir))
    return {"path": label, "class": CLASS, "weights_sha256": tree_sha256(Path(decoder_dir))}
