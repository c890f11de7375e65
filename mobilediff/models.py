"""Component configurations of the embedded default model family, and builders for them.

The default model is a real diffusers ``StableDiffusionPipeline``: every component is the class a real
checkpoint uses, only smaller. Sizes were chosen from measured training cost on a 2-core CPU
(see the model's TRAINING.md): 64x64 RGB images, a 4x-downsampling VAE to 4x16x16 latents, a
1.7M-parameter UNet with cross-attention at 8x8 and 4x4, and a 3-layer CLIP text encoder over the real
49,408-token CLIP vocabulary.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

TOKENIZER_MAX_LENGTH = 32  # captions of the shapes domain take at most 28 tokens with bos/eos


@dataclass(frozen=True)
class VaeConfig:
    sample_size: int = 64  # image side, pixels
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # 3 levels = 2 downsamplings: 64 px -> 16 latent
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16

    def build(self):
        from diffusers import AutoencoderKL

        n = len(self.block_out_channels)
        return AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block, latent_channels=self.latent_channels,
            norm_num_groups=self.norm_num_groups, sample_size=self.sample_size,
        )


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 49408  # the real CLIP BPE vocabulary
    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    max_position_embeddings: int = TOKENIZER_MAX_LENGTH

    def build(self):
        from transformers import CLIPTextConfig, CLIPTextModel

        # CLIP's vocabulary ends with <|startoftext|>, <|endoftext|> (the padding token too): mobilediff.tokenizer
        last = self.vocab_size - 1
        cfg = CLIPTextConfig(**asdict(self), projection_dim=self.hidden_size, hidden_act="quick_gelu",
                             bos_token_id=last - 1, eos_token_id=last, pad_token_id=last)
        return CLIPTextModel(cfg)


@dataclass(frozen=True)
class UnetConfig:
    sample_size: int = 16  # latent side
    in_channels: int = 4
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    # text reaches every resolution: at 16x16 through cross-attention only (a 256-token self-attention there
    # doubled the step time); without it, shape accuracy stayed near chance (0.39 at DDIM-50), since shapes are
    # drawn at the finest level and that level only saw the text through upsampled 8x8 features
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    only_cross_attention: bool | tuple[bool, ...] = (True, False, False)  # per down block; up blocks mirror it
    cross_attention_dim: int = 64  # = text encoder hidden size
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    time_cond_proj_dim: int | None = None  # set for LCM students (guidance embedding input)

    def build(self):
        from diffusers import UNet2DConditionModel

        kw = asdict(self)
        kw["out_channels"] = self.in_channels
        return UNet2DConditionModel(**kw)


def sized_unet(base: UnetConfig, channels: str | None, layers: int | None) -> UnetConfig:
    """``base`` with other block widths (``"16,32,32"``; as many levels as ``base``) and/or layers per block.
    GroupNorm groups become the largest divisor of every width up to 32; heads stay ``attention_head_dim`` wide."""
    import math

    from mobilediff.errors import MobilediffError

    out = base
    if channels is not None:
        try:
            widths = tuple(int(c) for c in channels.split(","))
        except ValueError:
            raise MobilediffError(f"--unet-channels must be comma-separated integers, got {channels!r}") from None
        if len(widths) != len(base.block_out_channels):
            raise MobilediffError(f"--unet-channels needs {len(base.block_out_channels)} widths (one per level), "
                                  f"got {len(widths)}")
        if any(w < base.attention_head_dim or w % base.attention_head_dim for w in widths):
            raise MobilediffError(f"--unet-channels {channels}: every width must be a positive multiple of the "
                                  f"attention head width {base.attention_head_dim}")
        groups = math.gcd(*widths)
        groups = max(g for g in range(1, min(32, groups) + 1) if groups % g == 0)
        out = replace(out, block_out_channels=widths, norm_num_groups=groups)
    if layers is not None:
        out = replace(out, layers_per_block=layers)
    return out


def sized_dit(base: DitConfig, width: int | None, layers: int | None, heads: int | None, caption_channels: int) -> DitConfig:
    """``base`` with another width, block count or head count, reading captions of ``caption_channels`` features."""
    from mobilediff.errors import MobilediffError

    out = replace(base, caption_channels=caption_channels)
    out = replace(out, **{k: v for k, v in (("width", width), ("num_layers", layers), ("num_attention_heads", heads))
                          if v is not None})
    if out.width % out.num_attention_heads:
        raise MobilediffError(f"--dit-width {out.width} is not a multiple of --dit-heads {out.num_attention_heads}")
    if out.sample_size % out.patch_size:
        raise MobilediffError(f"the latent side {out.sample_size} is not a multiple of the patch size {out.patch_size}")
    return out


@dataclass(frozen=True)
class SchedulerConfig:
    """The training noise schedule; samplers at inference read it from the pipeline's scheduler config."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # cosine: suits small (16x16) latents better than SD's scaled_linear
    prediction_type: str = "v_prediction"  # stays well-posed at the near-zero terminal SNR of the cosine schedule
    timestep_spacing: str = "trailing"  # few-step samplers start at t = T-1, not t = 0
    clip_sample: bool = False
    set_alpha_to_one: bool = False
    steps_offset: int = 1  # unused by "trailing" spacing; 1 keeps diffusers from warning

    def build(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler(**asdict(self))


@dataclass(frozen=True)
class DitConfig:
    """A PixArt-style diffusion transformer (``PixArtTransformer2DModel``: patchified latents, adaLN-single timestep
    conditioning, self-attention, cross-attention to the caption tokens with their padding masked, an MLP per block)
    in place of the UNet. The defaults match the default UNet: 0.191 GFLOP per image call against its 0.198, 1.77 M
    parameters against its 1.77 M, 64 tokens of 2x2 latent patches, 6 blocks of width 128 (4 heads of 32)."""

    sample_size: int = 16  # latent side
    in_channels: int = 4
    patch_size: int = 2
    width: int = 128
    num_layers: int = 6
    num_attention_heads: int = 4
    caption_channels: int = 64  # = text encoder hidden size

    def build(self):
        from diffusers import PixArtTransformer2DModel

        return PixArtTransformer2DModel(
            num_attention_heads=self.num_attention_heads, attention_head_dim=self.width // self.num_attention_heads,
            in_channels=self.in_channels, out_channels=self.in_channels, num_layers=self.num_layers,
            cross_attention_dim=self.width, caption_channels=self.caption_channels, sample_size=self.sample_size,
            patch_size=self.patch_size, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
            use_additional_conditions=False, attention_bias=True, num_embeds_ada_norm=1000,
        )


BACKBONES = ("unet", "dit")
OBJECTIVES = ("v", "flow")


@dataclass(frozen=True)
class FlowSchedulerConfig:
    """The flow-matching (rectified-flow) path of ``--objective flow``: x_t = (1 - s) x_0 + s noise at
    s = timestep / num_train_timesteps, the model predicting the velocity noise - x_0. The pipeline carries it as
    SANA's pipelines do: a DPM-Solver++ scheduler on flow sigmas with flow prediction, from whose config every flow
    sampler of :mod:`mobilediff.samplers` is made. ``shift`` 1: the 16x16 latents need no shift towards high noise
    (SD3's shift 3 is for 128x128 latents)."""

    num_train_timesteps: int = 1000
    shift: float = 1.0

    def build(self):
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler(num_train_timesteps=self.num_train_timesteps,
                                           prediction_type="flow_prediction", use_flow_sigmas=True,
                                           flow_shift=self.shift, algorithm_type="dpmsolver++", solver_order=2,
                                           lower_order_final=True, final_sigmas_type="zero")


@dataclass(frozen=True)
class DefaultModelConfig:
    vae: VaeConfig = field(default_factory=VaeConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    unet: UnetConfig = field(default_factory=UnetConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    backbone: str = "unet"  # "dit": the denoiser is ``dit`` (a PixArt transformer), not ``unet``
    dit: DitConfig = field(default_factory=DitConfig)
    objective: str = "v"  # "flow": trained on the flow-matching path (``flow``), not ``scheduler``'s
    flow: FlowSchedulerConfig = field(default_factory=FlowSchedulerConfig)

    def build_scheduler(self):
        """The pipeline's scheduler: the v-prediction beta schedule, or the flow-matching one."""
        return self.flow.build() if self.objective == "flow" else self.scheduler.build()

    def build_denoiser(self):
        """The denoiser this configuration trains: its UNet, or its diffusion transformer."""
        return self.dit.build() if self.backbone == "dit" else self.unet.build()
