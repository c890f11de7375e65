"""The exported components and their I/O, declared once.

Every target (ONNX, ExecuTorch, Core ML), the manifest, the parity checks and the host runtimes read the
inputs and outputs of a component from :func:`declare`; nothing else spells out a tensor name or shape.
Names follow optimum's ONNX export of Stable Diffusion (``input_ids`` -> ``last_hidden_state``;
``sample``, ``timestep``, ``encoder_hidden_states`` [, ``timestep_cond``] -> ``out_sample``;
``latent_sample`` -> ``sample``), so outside tools that know that layout read these graphs.

A dimension is an int or a named dimension (``"batch"``). ONNX keeps named dimensions dynamic; targets
that want static shapes (ExecuTorch, Core ML) fix each one at its value in ``ComponentSpec.dims``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mobilediff.errors import MobilediffError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str  # "float32" | "int32"
    description: str = ""

    def static_shape(self, dims: dict[str, int]) -> tuple[int, ...]:
        return tuple(dims[d] if isinstance(d, str) else d for d in self.shape)

    def to_dict(self, dims: dict[str, int]) -> dict:
        return {"name": self.name, "shape": list(self.shape), "static_shape": list(self.static_shape(dims)),
                "dtype": self.dtype, "description": self.description}


@dataclass(frozen=True)
class InputRanges:
    """Where a model's inputs live, read from its own tokenizer and scheduler config: example inputs are drawn there.

    ``vocab_size``: token ids the tokenizer produces are in [0, vocab_size); ``bos_id``, ``eos_id``, ``pad_id``: its
    special ids; ``num_train_timesteps``: the scheduler's T (timesteps are in [0, T))."""

    vocab_size: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    num_train_timesteps: int | None = None

    @classmethod
    def of(cls, pipe) -> "InputRanges":
        tok = pipe.tokenizer
        return cls(vocab_size=min(len(tok), pipe.text_encoder.config.vocab_size), bos_id=tok.bos_token_id,
                   eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                   num_train_timesteps=int(pipe.scheduler.config.num_train_timesteps))


@dataclass
class ComponentSpec:
    name: str
    module: torch.nn.Module  # wrapper taking the inputs positionally, returning a tuple of the outputs
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, int] = field(default_factory=dict)  # static value of every named dimension
    source_class: str = ""
    ranges: InputRanges = field(default_factory=InputRanges)  # the model's token ids and timesteps

    def example_inputs(self, seed: int = 0, dims: dict[str, int] | None = None) -> tuple[torch.Tensor, ...]:
        """Inputs in the ranges the sampler feeds: token ids of the model's tokenizer laid out as a prompt (BOS, ids,
        EOS, padding), unit-variance latents, timesteps in [0, T) of its scheduler. ``dims`` overrides the values of
        named dimensions. Raises ValueError for token ids of a spec declared without a vocabulary."""
        g = torch.Generator().manual_seed(seed)
        dims = {**self.dims, **(dims or {})}
        r = self.ranges
        out = []
        for spec in self.inputs:
            shape = spec.static_shape(dims)
            if spec.dtype == "int32":
                if r.vocab_size is None:
                    raise ValueError(f"{self.name}: integer input {spec.name} needs InputRanges.vocab_size")
                x = torch.randint(0, r.vocab_size, shape, generator=g, dtype=torch.int64).to(torch.int32)
                if spec.name == "input_ids":  # a real prompt: BOS ... EOS + padding
                    if r.bos_id is not None:  # a unigram (T5) tokenizer has none
                        x[:, 0] = r.bos_id
                    x[:, shape[1] // 2] = r.eos_id
                    x[:, shape[1] // 2 + 1:] = r.pad_id
            elif spec.name == "timestep":
                # diffusers' default T (1000) only for a spec declared without a scheduler (shape-only benchmarks)
                x = torch.rand(shape, generator=g) * ((r.num_train_timesteps or 1000) - 1)
            elif spec.name == "sample" and self.name == "vae_encoder":  # an image, in [-1, 1]
                x = torch.rand(shape, generator=g) * 2 - 1
            elif spec.name.endswith("attention_mask"):  # a padded prompt's token mask: 1 for its tokens, then 0
                x = torch.zeros(shape)
                x[:, :max(1, shape[-1] // 2)] = 1
            elif spec.name == "mask":  # a latent mask: 0 keep, 1 repaint
                x = (torch.rand(shape, generator=g) > 0.5).float()
            elif spec.name == "lora_weights":  # run-time adapter slots (mobilediff.runtime_lora): a small update
                x = torch.randn(shape, generator=g) * 0.02
            elif spec.name == "guidance_scale":
                x = torch.full(shape, 4.0)
            else:
                x = torch.randn(shape, generator=g)
            out.append(x.to(_DTYPES[spec.dtype]))
        return tuple(out)

    @property
    def module_path(self) -> str:
        """The attribute path from the spec's module to the wrapper that holds the model ("" or "inner." for each
        thin wrapper around it, e.g. the run-time adapters' LoraInputs): what module names inside it start with."""
        module, path = self.module, ""
        while not hasattr(module, "prefix") and hasattr(module, "inner"):
            module, path = module.inner, path + "inner."
        return path

    @property
    def module_prefix(self) -> str:
        """The attribute under which the wrapper holds the diffusers/transformers model: the first part of the module
        names a recipe keeps in float (``unet.conv_in``)."""
        module = self.module
        while not hasattr(module, "prefix") and hasattr(module, "inner"):  # Fp16IO and other thin wrappers
            module = module.inner
        return getattr(module, "prefix", self.name)

    def dynamic_names(self) -> set[str]:
        return {d for s in self.inputs + self.outputs for d in s.shape if isinstance(d, str)}

    def to_dict(self) -> dict:
        return {"inputs": [s.to_dict(self.dims) for s in self.inputs],
                "outputs": [s.to_dict(self.dims) for s in self.outputs], "dims": dict(self.dims),
                "source_class": self.source_class}


class TextEncoderWrapper(torch.nn.Module):
    prefix = "text_encoder"  # the attribute holding the model (ComponentSpec.module_prefix)

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        # last_hidden_state for CLIPTextModel and CLIPTextModelWithProjection alike (index 0 of the latter is the
        # pooled projection, which Stable Diffusion's UNet does not read)
        return (self.text_encoder(input_ids.to(torch.long)).last_hidden_state,)


class UnetWrapper(torch.nn.Module):
    prefix = "unet"

    def __init__(self, unet, with_cond: bool):
        super().__init__()
        self.unet = unet
        self.with_cond = with_cond

    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None):
        kw = {"timestep_cond": timestep_cond} if self.with_cond else {}
        return (self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False, **kw)[0],)


class InpaintUnetWrapper(torch.nn.Module):
    """An inpainting UNet (``in_channels = 2 C + 1``): the sampler's latent, the latent-size mask (1: repaint) and the
    masked image's scaled latent, concatenated on channels as diffusers' StableDiffusionInpaintPipeline does."""

    prefix = "unet"

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, mask, masked_image_latents):
        x = torch.cat([sample, mask, masked_image_latents], dim=1)
        return (self.unet(x, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0],)


def inpainting_unet(unet) -> bool:
    """Whether ``unet`` is an inpainting UNet: latent + mask + masked-image latent in, the latent's channels out."""
    return unet.config.in_channels == 2 * unet.config.out_channels + 1


class VaeDecoderWrapper(torch.nn.Module):
    """``latent_sample`` is the *unscaled* latent (sampler latent / scaling_factor), as in optimum."""

    prefix = "vae"

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return (self.vae.decode(latent_sample, return_dict=False)[0],)


class VaeEncoderWrapper(torch.nn.Module):
    """Image in [-1, 1] -> the VAE's latent posterior as (mean, std), *unscaled*: the sampler's clean latent is
    ``(mean + std * eps - shift_factor) * scaling_factor``, ``eps`` drawn from the seed's generator as diffusers'
    ``latent_dist.sample(generator)`` draws it. A deterministic encoder (AutoencoderTiny) returns std = 0."""

    prefix = "vae"

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        out = self.vae.encode(sample, return_dict=False)[0]
        if not isinstance(out, torch.Tensor):  # a DiagonalGaussianDistribution (AutoencoderKL)
            return out.mean, out.std
        return out, torch.zeros_like(out)


def encoder_posterior(vae) -> str:
    """"gaussian" when the VAE's encoder gives a distribution sampled with the seed's generator (AutoencoderKL),
    "deterministic" when it gives the latent itself (AutoencoderTiny)."""
    return "deterministic" if type(vae).__name__ == "AutoencoderTiny" else "gaussian"


class Fp16IO(torch.nn.Module):
    """A component computing in float16 behind its declared float32 inputs/outputs (int inputs pass unchanged)."""

    def __init__(self, module):
        super().__init__()
        import copy

        self.inner = copy.deepcopy(module).half()

    def forward(self, *args):
        args = [a.half() if a.is_floating_point() else a for a in args]
        return tuple(o.float() for o in self.inner(*args))


def check_supported(pipe) -> None:
    """Raise MobilediffError naming the first class or config field outside the Stable Diffusion family
    (mobilediff.family)."""
    from mobilediff import transformer_family
    from mobilediff.family import check_pipeline

    if transformer_family.is_transformer_pipeline(pipe):
        transformer_family.check_pipeline(pipe)
        return
    check_pipeline(pipe)


def guidance_embedding_dim(pipe) -> int | None:
    """The width of the denoiser's guidance-embedding input (an LCM student's ``time_cond_proj_dim``), None when it
    has none (a model guided by a classifier-free-guidance batch; every transformer pipeline mobilediff takes)."""
    unet = getattr(pipe, "unet", None)
    return getattr(unet.config, "time_cond_proj_dim", None) if unet is not None else None


def latent_size(unet_config) -> tuple[int, int] | None:
    """(height, width) of the latent a UNet config names as its default: ``sample_size`` in every form diffusers
    accepts, an int (square) or a (height, width) pair (a list once read from config.json); None when unset.
    Raises MobilediffError for any other value."""
    size = getattr(unet_config, "sample_size", None)
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (list, tuple)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise MobilediffError(f"unsupported unet sample_size {size!r}: diffusers takes a positive int or a "
                              f"[height, width] pair")
    return pair


def image_size(pipe) -> tuple[int, int]:
    """(height, width) in pixels that ``pipe`` generates by default, as diffusers' pipelines compute it: the UNet's
    ``sample_size`` (int or pair, see :func:`latent_size`) times the VAE factor. Raises MobilediffError when the
    UNet config has no ``sample_size``."""
    from mobilediff import transformer_family

    if transformer_family.is_transformer_pipeline(pipe):
        g = transformer_family.latent_geometry(pipe, None, None)
        return g["height"], g["width"]
    size = latent_size(pipe.unet.config)
    if size is None:
        raise MobilediffError("the UNet config has no sample_size, so the model has no default image size: "
                              "give --height and --width")
    factor = int(pipe.vae_scale_factor)
    return size[0] * factor, size[1] * factor


def latent_geometry(pipe, height: int | None = None, width: int | None = None) -> dict:
    """Image and latent sizes: the pipeline's own (UNet sample size x VAE factor, :func:`image_size`) unless
    overridden."""
    from mobilediff import transformer_family

    if transformer_family.is_transformer_pipeline(pipe):
        return transformer_family.latent_geometry(pipe, height, width)
    factor = int(pipe.vae_scale_factor)
    if height is None or width is None:
        default_height, default_width = image_size(pipe)
        height, width = height or default_height, width or default_width
    multiple = factor * 2 ** (len(pipe.unet.config.down_block_types) - 1)  # every UNet downsampling must divide
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise MobilediffError(f"--height/--width must be positive multiples of {multiple} for this model, got {height}x{width}")
    return {"height": height, "width": width, "vae_scale_factor": factor,
            "latent_channels": pipe.unet.config.out_channels, "latent_height": height // factor,
            "latent_width": width // factor,
            "scaling_factor": float(pipe.vae.config.scaling_factor),
            "shift_factor": float(getattr(pipe.vae.config, "shift_factor", 0.0) or 0.0)}


def vae_decoder_spec(vae, geometry: dict, ranges: InputRanges) -> ComponentSpec:
    """The VAE decoder component at ``geometry``: the sampler's latent in, the RGB image out."""
    c, h, w = geometry["latent_channels"], geometry["latent_height"], geometry["latent_width"]
    return ComponentSpec(
        "vae_decoder", VaeDecoderWrapper(vae).eval(),
        (TensorSpec("latent_sample", ("batch", c, h, w), "float32", "final latent / scaling_factor + shift_factor"),),
        (TensorSpec("sample", ("batch", 3, geometry["height"], geometry["width"]), "float32", "RGB image in [-1, 1]"),),
        {"batch": 1}, type(vae).__name__, ranges)


def declare(pipe, geometry: dict, cfg_batch: int | None = None, encoder: bool = False) -> dict[str, ComponentSpec]:
    """The three components of ``pipe`` with their declared I/O at ``geometry`` (see :func:`latent_geometry`), and
    with ``encoder`` the VAE encoder too (image-to-image and inpainting)."""
    from mobilediff import transformer_family

    check_supported(pipe)
    if transformer_family.is_transformer_pipeline(pipe):
        if encoder:
            raise MobilediffError(f"image modes are not built for {type(pipe).__name__} bundles")
        return transformer_family.declare(pipe, geometry, 2 if cfg_batch is None else cfg_batch)
    te, unet, vae = pipe.text_encoder, pipe.unet, pipe.vae
    length = pipe.tokenizer.model_max_length
    hidden = te.config.hidden_size
    ranges = InputRanges.of(pipe)
    c, h, w = geometry["latent_channels"], geometry["latent_height"], geometry["latent_width"]
    cond_dim = unet.config.time_cond_proj_dim
    if cfg_batch is None:
        cfg_batch = 1 if cond_dim else 2  # guidance-embedding students need no unconditional batch
    unet_inputs = [
        TensorSpec("sample", ("batch", c, h, w), "float32", "noisy latent, scaled by the sampler table's input_scale"),
        TensorSpec("timestep", ("batch",), "float32", "diffusion timestep of each batch row"),
        TensorSpec("encoder_hidden_states", ("batch", length, hidden), "float32", "text encoder last_hidden_state"),
    ]
    if cond_dim:
        unet_inputs.append(TensorSpec("timestep_cond", ("batch", cond_dim), "float32",
                                      "guidance-scale embedding (w - 1, sinusoidal; see manifest guidance)"))
    inpainting = inpainting_unet(unet)
    if inpainting:
        encoder = True  # an inpainting UNet needs the masked image's latent
        unet_inputs += [TensorSpec("mask", ("batch", 1, h, w), "float32", "latent-size mask: 1 repaint, 0 keep"),
                        TensorSpec("masked_image_latents", ("batch", c, h, w), "float32",
                                   "the masked image's latent, scaled (manifest image rules)")]
    specs = {
        "text_encoder": ComponentSpec(
            "text_encoder", TextEncoderWrapper(te).eval(),
            (TensorSpec("input_ids", ("batch", length), "int32", "CLIP token ids, BOS ... EOS, padded with pad_id"),),
            (TensorSpec("last_hidden_state", ("batch", length, hidden), "float32", "per-token text features"),),
            {"batch": 1}, type(te).__name__, ranges),
        "unet": ComponentSpec(
            "unet", (InpaintUnetWrapper(unet) if inpainting else UnetWrapper(unet, bool(cond_dim))).eval(),
            tuple(unet_inputs),
            (TensorSpec("out_sample", ("batch", c, h, w), "float32",
                        f"model output ({pipe.scheduler.config.prediction_type})"),),
            {"batch": cfg_batch}, type(unet).__name__, ranges),
        "vae_decoder": vae_decoder_spec(vae, geometry, ranges),
    }
    if encoder:
        posterior = (f"posterior {name} (unscaled; latent = (mean + std * eps - shift_factor) * scaling_factor)"
                     for name in ("mean", "standard deviation, 0 for a deterministic encoder"))
        specs["vae_encoder"] = ComponentSpec(
            "vae_encoder", VaeEncoderWrapper(vae).eval(),
            (TensorSpec("sample", ("batch", 3, geometry["height"], geometry["width"]), "float32",
                        "RGB image in [-1, 1]"),),
            (TensorSpec("latent_mean", ("batch", c, h, w), "float32", next(posterior)),
             TensorSpec("latent_std", ("batch", c, h, w), "float32", next(posterior))),
            {"batch": 1}, type(vae).__name__, ranges)
    return specs
