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
from mobilediff.models import DefaultModelConfig, DitConfig, SchedulerConfig, TextEncoderConfig, UnetConfig, VaeConfig

TINY_MODEL = DefaultModelConfig(
    vae=VaeConfig(sample_size=32, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4),
    text_encoder=TextEncoderConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
    unet=UnetConfig(sample_size=16, block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
                    norm_num_groups=8, only_cross_attention=False),
    scheduler=SchedulerConfig(),
    dit=DitConfig(sample_size=16, width=32, num_layers=2, num_attention_heads=2, caption_channels=32),
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


def tiny_inpainting_pipeline(seed: int = 0, model: DefaultModelConfig = TINY_MODEL):
    """A StableDiffusionInpaintPipeline of tiny random components: its UNet takes the latent, the mask and the masked
    image's latent (in_channels 9), as stable-diffusion-inpainting's does."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    base = tiny_pipeline(seed, model)
    torch.manual_seed(seed + 1)
    c = base.unet.config.out_channels
    unet = UNet2DConditionModel.from_config({**dict(base.unet.config), "in_channels": 2 * c + 1})
    pipe = StableDiffusionInpaintPipeline(vae=base.vae, text_encoder=base.text_encoder, unet=unet,
                                          tokenizer=base.tokenizer, scheduler=base.scheduler, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_dit_pipeline(seed: int = 0, model: DefaultModelConfig = TINY_MODEL, flow: bool = False):
    """A PixArtAlphaPipeline as ``train-base --backbone dit`` writes one, of tiny random components: the family's
    VAE, CLIP text encoder and tokenizer and scheduler (``flow``: the flow-matching one of ``--objective flow``)
    around a PixArt transformer (``model.dit``)."""
    from diffusers import PixArtAlphaPipeline
    from transformers import CLIPTokenizer

    from mobilediff.loading import DEFAULT_MODEL_DIR

    torch.manual_seed(seed)
    pipe = PixArtAlphaPipeline(
        vae=model.vae.build(), text_encoder=model.text_encoder.build(), transformer=model.dit.build(),
        tokenizer=CLIPTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR / "tokenizer")),
        scheduler=model.flow.build() if flow else model.scheduler.build())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(path: Path, seed: int = 0, inpainting: bool = False, dit: bool = False,
                       flow: bool = False) -> Path:
    """Write a tiny random pipeline folder (safetensors) and return its path (``inpainting``: a 9-channel UNet's;
    ``dit``: :func:`tiny_dit_pipeline`, ``flow``: a flow-matching one)."""
    from mobilediff.loading import save_pipeline

    pipe = tiny_dit_pipeline(seed, flow=flow) if dit or flow else tiny_inpainting_pipeline(seed) if inpainting else tiny_pipeline(seed)
    save_pipeline(pipe, path)
    return Path(path)


# words the tiny tokenizers spell with merges (anything else falls back to byte symbols): the shapes domain's
TINY_WORDS = ("a", "red", "green", "blue", "yellow", "circle", "square", "triangle", "at", "the", "top", "bottom",
              "left", "right", "on", "white", "black", "background")


def write_tiny_tokenizer(out_dir: Path, max_length: int, specials_first: bool = False, pad_token: str = "<|endoftext|>",
                         words: tuple[str, ...] = TINY_WORDS) -> Path:
    """Write a small CLIP BPE tokenizer folder (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) that ``CLIPTokenizer.from_pretrained`` loads, and return ``out_dir``.

    The vocabulary holds the 512 byte symbols of CLIP's byte-level BPE (mobilediff.tokenizer.bytes_to_unicode, with
    and without the end-of-word marker), the merges that spell ``words`` left to right, and ``<|startoftext|>``,
    ``<|endoftext|>``: at ids 0 and 1 when ``specials_first``, else last (as in CLIP). ``pad_token`` is
    ``<|endoftext|>`` (SD 1.x) or any vocabulary entry, e.g. ``"!"`` (SD 2.x). Vocabularies, special ids and maximum
    lengths other than CLIP's, for tests; nothing is downloaded."""
    import json

    from mobilediff.io import atomic_write_bytes
    from mobilediff.tokenizer import BOS, EOS, bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            if (parts[0], parts[1]) not in merges:
                merges.append((parts[0], parts[1]))
            parts = [parts[0] + parts[1]] + parts[2:]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens = list(dict.fromkeys([BOS, EOS] + tokens if specials_first else tokens + [BOS, EOS]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    atomic_write_bytes(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    atomic_write_bytes(out_dir / "merges.txt",
                       ("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n").encode("utf-8"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad_token, "unk_token": EOS}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True,
              "clean_up_tokenization_spaces": True, "errors": "replace", **special}
    atomic_write_bytes(out_dir / "tokenizer_config.json", json.dumps(config, indent=2).encode())
    atomic_write_bytes(out_dir / "special_tokens_map.json", json.dumps(special, indent=2).encode())
    return out_dir


def text_encoder_ids(tokenizer) -> dict:
    """The CLIPTextConfig fields a text encoder takes from its tokenizer: vocabulary size, maximum length, special ids."""
    return dict(vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


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
    te_cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  **text_encoder_ids(tokenizer))
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


def save_tiny_clip(folder: Path, projection_dim: int = 16, seed: int = 0) -> Path:
    """A tiny random transformers CLIPModel (32 px images) with the embedded model's CLIP tokenizer, as a local folder
    that ``evaluate --clip`` and ``--fd-features`` load (tests of the metrics for any model)."""
    import shutil

    from transformers import CLIPConfig, CLIPModel

    from mobilediff.loading import DEFAULT_MODEL_DIR

    folder = Path(folder)
    torch.manual_seed(seed)
    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=32)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)).save_pretrained(
        folder, safe_serialization=True)
    for f in (DEFAULT_MODEL_DIR / "tokenizer").iterdir():
        shutil.copy(f, folder / f.name)
    return folder


class _TinyFeatures(torch.nn.Module):
    """(B, 3, S, S) in [0, 255] -> (B, 8): a random convolution and global pooling (a stand-in for an Inception)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x / 255.0)).mean((2, 3))


def save_tiny_feature_extractor(path: Path, seed: int = 0) -> Path:
    """A tiny random TorchScript feature extractor file (the format of clean-fid's Inception)."""
    import warnings

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # torch.jit is deprecated upstream; clean-fid's file is TorchScript all the same
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_TinyFeatures()), str(path))
    return Path(path)
