"""The Stable Diffusion family as mobilediff supports it, checked from configs before any work.

A pipeline is in the family when each component is one of the classes below and its config uses only options that
keep the denoiser's inputs to (latent, timestep, text features [, guidance embedding]) and the sampler linear:

- text encoder: ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` (any width, depth, vocabulary, activation),
  tokenizer ``CLIPTokenizer`` (any vocabulary, special ids and maximum length that the text encoder can take);
- denoiser: ``UNet2DConditionModel`` with cross-attention and plain down/up blocks, a cross-attention, plain or no
  mid block, any widths, layers, transformer layers, head sizes, linear or convolutional attention projections, and
  optionally a guidance-embedding input (``time_cond_proj_dim``, LCM students), a sinusoidal (``positional``) or
  Gaussian Fourier (``fourier``) time embedding; SDXL's added conditions, class embeddings, projected text inputs and
  GLIGEN's gated attention are outside it;
- decoder: ``AutoencoderKL`` (any depth, latent channels, scaling factor) or ``AutoencoderTiny`` (TAESD-style);
- scheduler: a diffusers discrete-time scheduler over a beta schedule (its config gives the betas, the prediction
  type and the timestep spacing that every mobilediff sampler is built from).

:func:`check_configs` works on class names and config dicts, so :func:`mobilediff.loading.load_pipeline` runs it on
the files of a pipeline folder before any weights are read, and :func:`check_pipeline` on a pipeline built in code;
:func:`check_tokenizer` adds the checks that need the loaded tokenizer. Every refusal is a MobilediffError whose
one line names the component, the class or config field, and what is supported.
"""
from __future__ import annotations

from typing import Any

from mobilediff.errors import MobilediffError

CLASSES: dict[str, tuple[str, ...]] = {
    "text_encoder": ("CLIPTextModel", "CLIPTextModelWithProjection"),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
    "unet": ("UNet2DConditionModel",),
    "vae": ("AutoencoderKL", "AutoencoderTiny"),
    # discrete-time schedulers over a DDPM beta schedule: their configs carry what the samplers are built from
    "scheduler": ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
                  "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
                  "LMSDiscreteScheduler", "UniPCMultistepScheduler", "LCMScheduler"),
}
DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCKS = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D", None)
# UNet options that add denoiser inputs or change the conditioning (SDXL's added time/text conditions, class labels,
# projected text features): set to anything but their default, they take the model out of the family
UNET_UNSET = ("addition_embed_type", "addition_time_embed_dim", "class_embed_type", "num_class_embeds",
              "encoder_hid_dim", "encoder_hid_dim_type")
UNET_FIXED = {"attention_type": "default", "dual_cross_attention": False}
# both time embeddings UNet2DConditionModel builds: a function of the timestep alone, so the denoiser's inputs stay
TIME_EMBEDDINGS = ("positional", "fourier")
VAE_KL_UP_BLOCKS = ("UpDecoderBlock2D",)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def _refuse(component: str, what: str, supported: str) -> None:
    raise MobilediffError(f"unsupported {component} {what}: mobilediff supports {supported}")


def _names(values) -> str:
    return ", ".join("none" if v is None else str(v) for v in values)


def _check_class(component: str, name: str | None) -> None:
    if name not in CLASSES[component]:
        _refuse(component, f"class {name}", _names(CLASSES[component]))


def _check_unet(cfg: dict) -> None:
    for key in UNET_UNSET:
        if cfg.get(key) is not None:
            _refuse("unet", f"config {key}={cfg[key]!r}", f"{key}=None (Stable Diffusion's conditioning: text only)")
    for key, want in UNET_FIXED.items():
        if key in cfg and cfg[key] != want:
            _refuse("unet", f"config {key}={cfg[key]!r}", f"{key}={want!r}")
    kind = cfg.get("time_embedding_type", "positional")
    if kind not in TIME_EMBEDDINGS:
        _refuse("unet", f"config time_embedding_type={kind!r}", _names(TIME_EMBEDDINGS))
    if kind == "fourier":
        # diffusers' own constraint (UNet2DConditionModel._set_time_proj): half the width is sines, half cosines
        width = cfg.get("time_embedding_dim") or 2 * (cfg.get("block_out_channels") or (320,))[0]
        if width % 2:
            _refuse("unet", f"config time_embedding_dim={width} with time_embedding_type='fourier'",
                    "an even Fourier time embedding width (sines and cosines in pairs)")
    for key, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        for block in cfg.get(key) or ():
            if block not in allowed:
                _refuse("unet", f"{key[:-6]} {block}", _names(allowed))
    mid = cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid not in MID_BLOCKS:
        _refuse("unet", f"mid_block_type {mid}", _names(MID_BLOCKS))
    cin, cout = cfg.get("in_channels", 4), cfg.get("out_channels", 4)
    if cin == 2 * cout + 1 and cfg.get("time_cond_proj_dim"):
        _refuse("unet", f"an inpainting UNet (in_channels {cin}) with time_cond_proj_dim={cfg['time_cond_proj_dim']}",
                "inpainting UNets without a guidance embedding")
    if cin not in (cout, 2 * cout + 1):
        _refuse("unet", f"in_channels {cin} with out_channels {cout}",
                "in_channels = out_channels (a denoiser of the latent) or 2 x out_channels + 1 (an inpainting UNet: "
                "the latent, the mask and the masked image's latent)")


def _check_vae(name: str, cfg: dict, unet_channels: int | None) -> None:
    if name == "AutoencoderKL":
        for block in cfg.get("up_block_types") or ():
            if block not in VAE_KL_UP_BLOCKS:
                _refuse("vae", f"up_block_type {block}", _names(VAE_KL_UP_BLOCKS))
    if name == "AutoencoderTiny" and cfg.get("upsampling_scaling_factor", 2) != 2:
        # StableDiffusionPipeline sizes images as 2 ** (levels - 1) latent pixels
        _refuse("vae", f"config upsampling_scaling_factor={cfg['upsampling_scaling_factor']}",
                "upsampling_scaling_factor=2 (the pipeline's vae_scale_factor)")
    if cfg.get("shift_factor"):
        _refuse("vae", f"config shift_factor={cfg['shift_factor']}",
                "shift_factor 0 or None (StableDiffusionPipeline decodes latent / scaling_factor, unshifted)")
    if not cfg.get("scaling_factor"):
        _refuse("vae", f"config scaling_factor={cfg.get('scaling_factor')!r}", "a non-zero scaling_factor")
    channels = cfg.get("latent_channels", 4)
    if unet_channels is not None and channels != unet_channels:
        _refuse("vae", f"latent_channels {channels} != UNet out_channels {unet_channels}", "matching latent channels")


def _check_scheduler(cfg: dict) -> None:
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        _refuse("scheduler", f"config prediction_type={pred!r}", _names(PREDICTION_TYPES))
    if cfg.get("trained_betas") is None and cfg.get("beta_schedule", "linear") not in BETA_SCHEDULES:
        _refuse("scheduler", f"config beta_schedule={cfg.get('beta_schedule')!r}",
                f"{_names(BETA_SCHEDULES)} or trained_betas")
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing not in TIMESTEP_SPACINGS:
        _refuse("scheduler", f"config timestep_spacing={spacing!r}", _names(TIMESTEP_SPACINGS))
    if cfg.get("thresholding"):
        # dynamic thresholding clips each sample by its own quantile: a step is no longer linear in its inputs
        _refuse("scheduler", "config thresholding=True", "thresholding=False (sampler steps must be linear)")


def _check_text(unet_cfg: dict | None, te_cfg: dict | None) -> None:
    if unet_cfg is None or te_cfg is None:
        return
    hidden = te_cfg.get("hidden_size")
    cross = unet_cfg.get("cross_attention_dim")
    dims = set(cross) if isinstance(cross, (list, tuple)) else {cross}
    if dims != {hidden}:
        _refuse("unet", f"cross_attention_dim {cross} != text encoder hidden_size {hidden}",
                "a UNet that attends to the text encoder's last_hidden_state")


def check_configs(classes: dict[str, str | None], configs: dict[str, dict | None]) -> None:
    """Refuse a pipeline outside the family (see module doc) from its class names and configs.

    ``classes`` maps a component ("text_encoder", "tokenizer", "unet", "vae", "scheduler") to its class name;
    ``configs`` maps "text_encoder", "unet", "vae", "scheduler" to its config as a dict (None or absent: not
    checked). Raises MobilediffError naming the first problem."""
    for component in CLASSES:
        if component in classes:
            _check_class(component, classes[component])
    unet, vae, te, sched = (configs.get(k) for k in ("unet", "vae", "text_encoder", "scheduler"))
    if unet is not None:
        _check_unet(unet)
    if vae is not None:
        _check_vae(classes.get("vae", "AutoencoderKL"), vae, unet.get("out_channels", 4) if unet else None)
    if sched is not None:
        _check_scheduler(sched)
    _check_text(unet, te)


def _config_dict(module: Any) -> dict | None:
    cfg = getattr(module, "config", None)
    if cfg is None:
        return None
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def check_tokenizer(tokenizer, text_encoder, roles: tuple[str, ...] = ("bos", "eos", "pad"), length: bool = True) -> None:
    """Refuse a tokenizer whose ids or length the text encoder cannot take (an embedding lookup out of range).
    ``roles``: the special ids it must have; ``length``: check its maximum length against the encoder's positions."""
    cfg = text_encoder.config
    vocab = len(tokenizer)
    if vocab > cfg.vocab_size:
        _refuse("tokenizer", f"vocabulary of {vocab} ids > text encoder vocab_size {cfg.vocab_size}",
                "a tokenizer whose every id the text encoder embeds")
    for role in roles:
        tid = getattr(tokenizer, f"{role}_token_id")
        if tid is None or not 0 <= tid < cfg.vocab_size:
            _refuse("tokenizer", f"{role} id {tid}", f"special ids within the text encoder's vocab_size {cfg.vocab_size}")
    if not length:
        return
    n = tokenizer.model_max_length
    if not 2 <= n <= cfg.max_position_embeddings:
        _refuse("tokenizer", f"model_max_length {n}",
                f"2 to the text encoder's max_position_embeddings ({cfg.max_position_embeddings})")


def check_pipeline(pipe) -> None:
    """:func:`check_configs` and :func:`check_tokenizer` on a loaded (or built) pipeline."""
    components = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")
    classes = {c: type(getattr(pipe, c, None)).__name__ for c in components}
    configs = {c: _config_dict(getattr(pipe, c, None)) for c in ("text_encoder", "unet", "vae", "scheduler")}
    check_configs(classes, configs)
    check_tokenizer(pipe.tokenizer, pipe.text_encoder)
