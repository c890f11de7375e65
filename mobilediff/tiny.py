"""Tiny seeded random components of the default model's family, for tests and smoke runs.

Same classes as the real model (AutoencoderKL, CLIPTextModel over the real CLIP vocabulary,
UNet2DConditionModel, the default scheduler), a few thousand parameters each: a forward pass takes
milliseconds, so tests exercise every code path a real checkpoint takes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mobilediff.data import ShapesConfig
from mobilediff.models import DefaultModelConfig, SchedulerConfig, TextEncoderConfig, UnetConfig, VaeConfig

TINY_MODEL = DefaultModelConfig(
    vae=VaeConfig(sample_size=32, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4),
    text_encoder=TextEncoderConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
    unet=UnetConfig(sample_size=16, block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
                    norm_num_groups=8, only_cross_attention=False),
    scheduler=SchedulerConfig(),
)
TINY_DATA = ShapesConfig(resolution=32, supersample=2)


def tiny_train_config(cfg):
    """A TrainBaseConfig with tiny components, 32x32 images and small batches."""
    return dataclasses.replace(cfg, model=TINY_MODEL, data=TINY_DATA, vae_batch_size=min(cfg.vae_batch_size, 4),
                               batch_size=min(cfg.batch_size, 4), warmup_steps=1,
                               vae_stats_samples=16, latent_cache=min(cfg.latent_cache, 24))


def tiny_pipeline(seed: int = 0, model: DefaultModelConfig = TINY_MODEL):
    """A StableDiffusionPipeline of tiny random components and the real CLIP tokenizer."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from mobilediff.loading import DEFAULT_MODEL_DIR

    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(
        vae=model.vae.build(), text_encoder=model.text_encoder.build(), unet=model.unet.build(),
        tokenizer=CLIPTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR / "tokenizer")),
        scheduler=model.scheduler.build(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(path: Path, seed: int = 0) -> Path:
    """Write a tiny random pipeline folder (safetensors) and return its path."""
    from mobilediff.loading import save_pipeline

    save_pipeline(tiny_pipeline(seed), path)
    return Path(path)


def tiny_variant_pipeline(variant: str, seed: int = 0):
    """Tiny random pipelines over the SD family's configuration options, beyond the default model's:

    - ``sd2``: linear attention projections, upcast attention, per-level head dims, two transformer layers per
      block, CLIPTextModelWithProjection with GELU (SD 2.x-style options).
    - ``lcm``: a guidance-embedding input (``time_cond_proj_dim``, LCM students), no UNet mid block
      (BK-SDM-style), cross-attention at every level, AutoencoderTiny (TAESD-style) decoder.
    """
    from diffusers import AutoencoderTiny, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    from mobilediff.loading import DEFAULT_MODEL_DIR

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR / "tokenizer"))
    te_cfg = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  max_position_embeddings=tokenizer.model_max_length, bos_token_id=49406, eos_token_id=49407,
                  pad_token_id=49407)
    if variant == "sd2":
        text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**te_cfg, hidden_act="gelu", projection_dim=16))
        unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                    cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True,
                                    upcast_attention=True, transformer_layers_per_block=2, norm_num_groups=8)
        vae = TINY_MODEL.vae.build()
    elif variant == "lcm":
        from transformers import CLIPTextModel

        text_encoder = CLIPTextModel(CLIPTextConfig(**te_cfg, hidden_act="quick_gelu"))
        unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
                                    mid_block_type=None, time_cond_proj_dim=32)
        vae = AutoencoderTiny(in_channels=3, out_channels=3, encoder_block_out_channels=(8, 8),
                              decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
                              latent_channels=4)
    else:
        raise ValueError(f"unknown tiny variant {variant!r}")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, unet=unet, tokenizer=tokenizer,
                                   scheduler=TINY_MODEL.scheduler.build(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
