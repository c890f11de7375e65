"""Components of the transformer families (PixArt-alpha/Sigma, SANA, SANA-Sprint, SD3/3.5) as the exporter takes
them: wrappers that take the inputs positionally and return a tuple, and their I/O declarations.

The loader takes PixArt pipelines (mobilediff.transformer_family declares their components from the pipeline); for
SANA and SD3 these declarations are what it will emit, and what the architecture matrix of the transformer families (``benchmarks/transformer_matrix.py``, tests/test_transformer_denoisers.py)
exports today from tiny random modules of diffusers' and transformers' own classes (:func:`tiny_specs`):

- denoisers: ``sample``, ``timestep``, ``encoder_hidden_states`` and, by family, ``encoder_attention_mask``
  (PixArt, SANA: the caption's padding mask), ``guidance`` (SANA-Sprint's guidance embedding) or
  ``pooled_projections`` (SD3's pooled CLIP features); out the model's prediction (PixArt's learned-variance channels
  dropped, as its pipeline drops them);
- text encoders with a padding mask (``input_ids`` and ``attention_mask``: T5, Gemma-2), and CLIP with its
  projection (SD3: the penultimate hidden state and the pooled, projected features);
- decoders: the deep-compression autoencoder's (``AutoencoderDC``, SANA) and the 16-channel ``AutoencoderKL`` of SD3
  (its latent given as ``latent / scaling_factor + shift_factor``), through the exporter's own VaeDecoderWrapper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mobilediff.components import ComponentSpec, InputRanges, TensorSpec, VaeDecoderWrapper


class MaskedDenoiser(torch.nn.Module):
    """PixArt / SANA transformer: sample, timestep, caption features, caption mask (and SANA-Sprint's guidance)."""

    prefix = "transformer"

    def __init__(self, transformer, guidance: bool = False, pixart: bool = False):
        super().__init__()
        self.transformer = transformer
        self.guidance = guidance
        self.pixart = pixart

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask, guidance=None):
        kw = {"guidance": guidance} if self.guidance else {}
        if self.pixart:
            kw["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
        out = self.transformer(sample, encoder_hidden_states=encoder_hidden_states, timestep=timestep,
                               encoder_attention_mask=encoder_attention_mask, return_dict=False, **kw)[0]
        return (out[:, :sample.shape[1]],)


class PooledDenoiser(torch.nn.Module):
    """SD3 / SD3.5 transformer: sample, timestep, joint text features, pooled text features."""

    prefix = "transformer"

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, sample, timestep, encoder_hidden_states, pooled_projections):
        return (self.transformer(sample, encoder_hidden_states=encoder_hidden_states,
                                 pooled_projections=pooled_projections, timestep=timestep, return_dict=False)[0],)


class MaskedTextEncoder(torch.nn.Module):
    """T5 / Gemma-2 encoder: token ids and their padding mask in, the last hidden state out."""

    prefix = "text_encoder"

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids, attention_mask):
        return (self.text_encoder(input_ids.to(torch.long), attention_mask=attention_mask.to(torch.long))
                .last_hidden_state,)


class ProjectedClipEncoder(torch.nn.Module):
    """SD3's CLIP encoders: the penultimate hidden state (what SD3 concatenates) and the projected pooled features."""

    prefix = "text_encoder"

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        out = self.text_encoder(input_ids.to(torch.long), output_hidden_states=True)
        return out.hidden_states[-2], out.text_embeds


@dataclass(frozen=True)
class Variant:
    """One entry of the transformer families' matrix: its family, what it varies, and its component spec."""

    name: str
    family: str
    component: str  # text_encoder | unet (the denoiser) | vae_decoder
    what: str
    spec: ComponentSpec


L, D, C, H = 16, 32, 4, 16  # caption tokens, caption features, latent channels, latent size (tiny)


def _f(name: str, shape: tuple, dtype: str = "float32", doc: str = "") -> TensorSpec:
    return TensorSpec(name, shape, dtype, doc)


def _masked_denoiser(model, ranges, guidance: bool = False, pixart: bool = False, channels: int = C) -> ComponentSpec:
    inputs = [_f("sample", ("batch", channels, H, H), doc="noisy latent"), _f("timestep", ("batch",)),
              _f("encoder_hidden_states", ("batch", L, D), doc="caption features"),
              _f("encoder_attention_mask", ("batch", L), doc="caption padding mask: 1 token, 0 padding")]
    if guidance:
        inputs.append(_f("guidance", ("batch",), doc="guidance scale x guidance_embeds_scale"))
    return ComponentSpec("unet", MaskedDenoiser(model.eval(), guidance, pixart).eval(), tuple(inputs),
                         (_f("out_sample", ("batch", channels, H, H)),), {"batch": 2}, type(model).__name__, ranges)


def tiny_specs(seed: int = 0) -> list[Variant]:
    """The matrix's variants, each a tiny random module of the family's own class (seeded)."""
    from diffusers import (AutoencoderDC, AutoencoderKL, PixArtTransformer2DModel, SanaTransformer2DModel,
                           SD3Transformer2DModel)
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, Gemma2Config, Gemma2Model, T5Config, \
        T5EncoderModel

    ranges = InputRanges(vocab_size=100, bos_id=0, eos_id=1, pad_id=0, num_train_timesteps=1000)
    out = []

    def add(name, family, component, what, build):
        torch.manual_seed(seed)
        out.append(Variant(name, family, component, what, build()))

    add("pixart-alpha", "PixArt", "unet", "adaLN-single DiT, cross-attention, learned variance",
        lambda: _masked_denoiser(PixArtTransformer2DModel(
            sample_size=H, num_layers=2, attention_head_dim=8, num_attention_heads=2, in_channels=C, out_channels=2 * C,
            caption_channels=D, cross_attention_dim=16, patch_size=2, norm_num_groups=1,
            use_additional_conditions=False), ranges, pixart=True))
    add("pixart-sigma", "PixArt", "unet", "as alpha, positional embedding interpolated (Sigma's config)",
        lambda: _masked_denoiser(PixArtTransformer2DModel(
            sample_size=H, num_layers=2, attention_head_dim=8, num_attention_heads=2, in_channels=C, out_channels=2 * C,
            caption_channels=D, cross_attention_dim=16, patch_size=2, norm_num_groups=1, interpolation_scale=2,
            use_additional_conditions=False), ranges, pixart=True))
    add("sana", "SANA", "unet", "linear attention, Mix-FFN, patch size 1",
        lambda: _masked_denoiser(SanaTransformer2DModel(
            in_channels=C, out_channels=C, num_attention_heads=2, attention_head_dim=8, num_layers=2,
            num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=D,
            mlp_ratio=2.5, sample_size=H, patch_size=1, norm_elementwise_affine=False), ranges))
    add("sana-sprint", "SANA", "unet", "guidance embedding, RMS q/k norm, timestep scale (sCM student)",
        lambda: _masked_denoiser(SanaTransformer2DModel(
            in_channels=C, out_channels=C, num_attention_heads=2, attention_head_dim=8, num_layers=2,
            num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=D,
            mlp_ratio=2.5, sample_size=H, patch_size=1, norm_elementwise_affine=False, guidance_embeds=True,
            guidance_embeds_scale=0.1, qk_norm="rms_norm_across_heads", timestep_scale=1000.0), ranges,
            guidance=True))

    def sd3(**kw):
        model = SD3Transformer2DModel(sample_size=H, patch_size=2, in_channels=C, num_layers=2, attention_head_dim=8,
                                      num_attention_heads=2, joint_attention_dim=D, caption_projection_dim=16,
                                      pooled_projection_dim=24, out_channels=C, pos_embed_max_size=32, **kw)
        return ComponentSpec("unet", PooledDenoiser(model.eval()).eval(),
                             (_f("sample", ("batch", C, H, H)), _f("timestep", ("batch",)),
                              _f("encoder_hidden_states", ("batch", L, D), doc="CLIP + T5 features, joined"),
                              _f("pooled_projections", ("batch", 24), doc="pooled CLIP features, joined")),
                             (_f("out_sample", ("batch", C, H, H)),), {"batch": 2}, type(model).__name__, ranges)

    add("sd3", "SD3", "unet", "MMDiT joint attention, pooled projections", lambda: sd3())
    add("sd3.5", "SD3", "unet", "MMDiT with RMS q/k norm and a dual-attention layer (SD3.5's)",
        lambda: sd3(qk_norm="rms_norm", dual_attention_layers=(0,)))

    def masked_encoder(model):
        return ComponentSpec("text_encoder", MaskedTextEncoder(model.eval()).eval(),
                             (_f("input_ids", ("batch", L), "int32", "token ids, padded"),
                              _f("attention_mask", ("batch", L), "int32", "1 token, 0 padding")),
                             (_f("last_hidden_state", ("batch", L, D)),), {"batch": 1}, type(model).__name__, ranges)

    add("t5-encoder", "PixArt / SD3", "text_encoder", "T5 encoder, relative position buckets, padding mask",
        lambda: masked_encoder(T5EncoderModel(T5Config(vocab_size=100, d_model=D, d_kv=8, d_ff=64, num_layers=2,
                                                       num_heads=4))))
    add("gemma2-encoder", "SANA", "text_encoder", "Gemma-2 decoder as encoder: RoPE, soft-capping, sliding window",
        lambda: masked_encoder(Gemma2Model(Gemma2Config(vocab_size=100, hidden_size=D, intermediate_size=64,
                                                         num_hidden_layers=2, num_attention_heads=4,
                                                         num_key_value_heads=2, head_dim=8,
                                                         max_position_embeddings=64, sliding_window=8))))
    add("clip-projected", "SD3", "text_encoder", "CLIP with projection: penultimate state and pooled features",
        lambda: ComponentSpec("text_encoder", ProjectedClipEncoder(CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=100, hidden_size=D, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=L, projection_dim=24, bos_token_id=0, eos_token_id=1, pad_token_id=0))
            .eval()).eval(),
            (_f("input_ids", ("batch", L), "int32", "CLIP token ids"),),
            (_f("penultimate_hidden_state", ("batch", L, D)), _f("text_embeds", ("batch", 24))),
            {"batch": 1}, "CLIPTextModelWithProjection", ranges))
    add("dc-ae-decoder", "SANA", "vae_decoder", "deep-compression autoencoder: 32x down, pixel-shuffle, linear attention",
        lambda: ComponentSpec("vae_decoder", VaeDecoderWrapper(AutoencoderDC(
            in_channels=3, latent_channels=8, attention_head_dim=8,
            encoder_block_types=("ResBlock", "EfficientViTBlock"), decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16), encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
            decoder_norm_types="rms_norm", decoder_act_fns="silu").eval()).eval(),
            (_f("latent_sample", ("batch", 8, H // 2, H // 2), doc="the sampler's latent / scaling_factor"),),
            (_f("sample", ("batch", 3, H, H), doc="RGB image in [-1, 1]"),), {"batch": 1}, "AutoencoderDC", ranges))
    add("sd3-vae-decoder", "SD3", "vae_decoder", "16-channel AutoencoderKL (latent / scaling_factor + shift_factor)",
        lambda: ComponentSpec("vae_decoder", VaeDecoderWrapper(AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1, norm_num_groups=4, shift_factor=0.0609, scaling_factor=1.5305,
            use_quant_conv=False, use_post_quant_conv=False).eval()).eval(),
            (_f("latent_sample", ("batch", 16, H // 2, H // 2)),), (_f("sample", ("batch", 3, H, H)),),
            {"batch": 1}, "AutoencoderKL", ranges))
    return out


def sd3_conditioning(clip_l: tuple[torch.Tensor, torch.Tensor], clip_g: tuple[torch.Tensor, torch.Tensor],
                     t5: torch.Tensor | None, joint_dim: int, t5_tokens: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3's multi-encoder conditioning from its encoders' outputs, as StableDiffusion3Pipeline.encode_prompt joins
    them: ``clip_l`` and ``clip_g`` are each (penultimate hidden state, pooled projected features) of
    :class:`ProjectedClipEncoder`; ``t5`` the T5 encoder's last hidden state, or None for a pipeline without its T5
    (zeros of ``t5_tokens`` x ``joint_dim`` in its place).

    - ``encoder_hidden_states``: the two CLIP states joined on features, zero-padded to ``joint_dim`` features, then
      the T5 states after them on tokens: (batch, clip tokens + T5 tokens, joint_dim);
    - ``pooled_projections``: the two pooled features joined: (batch, CLIP-L's + CLIP-G's projection dims).

    This is what an app computes between the three text encoders and the denoiser (no graph of its own)."""
    states = torch.cat([clip_l[0], clip_g[0]], dim=-1)
    if states.shape[-1] > joint_dim:
        raise ValueError(f"the CLIP states have {states.shape[-1]} features, more than the joint dimension {joint_dim}")
    if t5 is None:
        t5 = torch.zeros(states.shape[0], t5_tokens, joint_dim, dtype=states.dtype)
    states = torch.nn.functional.pad(states, (0, joint_dim - states.shape[-1]))
    return torch.cat([states, t5], dim=-2), torch.cat([clip_l[1], clip_g[1]], dim=-1)
