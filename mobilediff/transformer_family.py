"""The transformer pipelines the loader takes beside the Stable Diffusion family: PixArt-alpha and PixArt-Sigma.

A PixArt pipeline is a T5 encoder (a SentencePiece unigram tokenizer, the caption's padding mask carried to the
denoiser), a ``PixArtTransformer2DModel`` (adaLN-single DiT with cross-attention; the learned-variance half of its
output dropped, as the pipeline drops it), an ``AutoencoderKL`` and a discrete-time scheduler over a beta schedule,
so every sampler table of :mod:`mobilediff.samplers` applies. Its bundle is format version 2 (the first readers,
format 1 only, refuse it in one line): the text encoder takes ``input_ids`` and ``attention_mask``, the denoiser
``sample``, ``timestep``, ``encoder_hidden_states`` and ``encoder_attention_mask``, and the tokenizer is
``tokenizer/tokenizer.json`` (kind ``unigram``): the prompt lower-cased and stripped (PixArt's caption
preprocessing without its optional cleaning), its ids without specials, then EOS, padded with ``pad_id`` to
``max_length``; the mask is 1 over the ids and EOS.

:func:`check_configs` refuses, before any weights are read, what is outside: another denoiser or text encoder
class, a transformer whose input and output channels do not fit the VAE's latent, a scheduler outside the beta
family (:mod:`mobilediff.family`'s checks). SANA (linear attention, DC-AE, Gemma-2) and SD3 (joint attention, three
encoders, flow matching) are declared as components in :mod:`mobilediff.transformer_components` but not taken by
the loader yet.
"""
from __future__ import annotations

import inspect

import torch

from mobilediff.errors import MobilediffError
from mobilediff.family import CLASSES as SD_CLASSES

PIPELINES = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
CLASSES: dict[str, tuple[str, ...]] = {
    # T5 (the released PixArt models); CLIP: a PixArt transformer trained on a CLIP text encoder (train-base
    # --backbone dit), whose 77-or-fewer positions the caption length then follows
    "text_encoder": ("T5EncoderModel", "CLIPTextModel"),
    "tokenizer": ("T5Tokenizer", "T5TokenizerFast", "CLIPTokenizer", "CLIPTokenizerFast"),
    "transformer": ("PixArtTransformer2DModel",),
    "vae": ("AutoencoderKL",),
    # the beta-schedule schedulers every sampler table is measured from; a flow-matching model's (flow prediction:
    # DPM-Solver on flow sigmas as SANA's pipelines hold it, or FlowMatchEuler), whose tables are the flow samplers'
    "scheduler": tuple(dict.fromkeys(SD_CLASSES["scheduler"] + ("FlowMatchEulerDiscreteScheduler",))),
}
TOKENIZER_KIND = "unigram"
DEFAULT_MAX_LENGTH = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}


def is_transformer_pipeline(pipe_or_class) -> bool:
    name = pipe_or_class if isinstance(pipe_or_class, str) else type(pipe_or_class).__name__
    return name in PIPELINES


def _refuse(component: str, what: str, supported: str) -> None:
    raise MobilediffError(f"unsupported {component} {what}: mobilediff supports {supported}")


def check_configs(classes: dict[str, str | None], configs: dict[str, dict | None]) -> None:
    """Refuse a PixArt pipeline's component outside what the exporter takes, from class names and config dicts."""
    from mobilediff.family import _check_scheduler, _check_vae

    for component, allowed in CLASSES.items():
        name = classes.get(component)
        if name is not None and name not in allowed:
            _refuse(component, f"class {name}", ", ".join(allowed) + " (PixArt pipelines)")
    tr, vae, te = configs.get("transformer"), configs.get("vae"), configs.get("text_encoder")
    if tr is not None:
        if tr.get("norm_type", "ada_norm_single") != "ada_norm_single":
            _refuse("transformer", f"config norm_type={tr['norm_type']!r}", "'ada_norm_single' (PixArt's)")
        cin, cout = tr.get("in_channels", 4), tr.get("out_channels") or tr.get("in_channels", 4)
        if cout not in (cin, 2 * cin):
            _refuse("transformer", f"out_channels {cout} with in_channels {cin}",
                    "out_channels = in_channels, or twice it (learned variance)")
        if te is not None and tr.get("caption_channels") not in (None, _text_width(te)):
            _refuse("transformer", f"caption_channels {tr['caption_channels']} != the text encoder's width "
                                   f"{_text_width(te)}", "a transformer that reads the text encoder's features")
    if classes.get("text_encoder") and classes.get("tokenizer") and \
            classes["text_encoder"].startswith("CLIP") != classes["tokenizer"].startswith("CLIP"):
        _refuse("tokenizer", f"{classes['tokenizer']} with a {classes['text_encoder']}",
                "the text encoder's own tokenizer (T5's with T5, CLIP's with CLIP)")
    if vae is not None:
        _check_vae("AutoencoderKL", vae, tr.get("in_channels", 4) if tr else None)
    if configs.get("scheduler") is not None:
        from mobilediff.samplers import is_flow

        (_check_flow_scheduler if is_flow(configs["scheduler"]) else _check_scheduler)(configs["scheduler"])


def _check_flow_scheduler(cfg: dict) -> None:
    """A flow-matching model's scheduler: a static shift (a PixArt pipeline passes no resolution ``mu``), flow sigmas
    where the scheduler is a DPM-Solver's, linear steps."""
    import math

    if "use_flow_sigmas" in cfg and not cfg.get("use_flow_sigmas"):
        _refuse("scheduler", "config prediction_type='flow_prediction' without use_flow_sigmas",
                "flow prediction on flow sigmas (use_flow_sigmas=True, as SANA's)")
    if cfg.get("use_dynamic_shifting"):
        _refuse("scheduler", "config use_dynamic_shifting=True", "a static shift (PixArt pipelines pass no mu)")
    shift = cfg.get("flow_shift", cfg.get("shift", 1.0))
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        _refuse("scheduler", f"config shift {shift!r}", "a finite shift > 0")
    if cfg.get("thresholding"):
        _refuse("scheduler", "config thresholding=True", "thresholding=False (sampler steps must be linear)")


def _text_width(config: dict) -> int | None:
    return config.get("d_model", config.get("hidden_size"))  # T5, CLIP


def caption_mask(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, L) 1 over a caption's tokens up to and including its first EOS, 0 after (CLIP pads with EOS): the
    attention mask PixArt's pipeline passes for a CLIP-tokenized prompt, rebuilt from the ids."""
    is_eos = (input_ids == eos_id).int()
    return ((is_eos.cumsum(1) - is_eos) == 0).long()


def is_clip(pipe) -> bool:
    """Whether the pipeline's text encoder is CLIP (BOS, ids, EOS, padded with EOS; a position limit)."""
    return type(pipe.text_encoder).__name__.startswith("CLIP")


def check_pipeline(pipe) -> None:
    """:func:`check_configs` on a loaded (or built) PixArt pipeline, and its tokenizer's ids against the encoder's
    vocabulary (T5 has no BOS and relative positions: no length limit to check)."""
    from mobilediff.family import _config_dict, check_tokenizer

    classes = {c: type(getattr(pipe, c, None)).__name__ for c in ("text_encoder", "tokenizer", "transformer", "vae",
                                                                  "scheduler")}
    configs = {c: _config_dict(getattr(pipe, c, None)) for c in ("text_encoder", "transformer", "vae", "scheduler")}
    check_configs(classes, configs)
    if is_clip(pipe):
        check_tokenizer(pipe.tokenizer, pipe.text_encoder)
    else:
        check_tokenizer(pipe.tokenizer, pipe.text_encoder, roles=("eos", "pad"), length=False)


def call_default(pipe, name: str):
    """The default of ``pipe.__call__``'s argument ``name`` (None when it has none)."""
    p = inspect.signature(type(pipe).__call__).parameters.get(name)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def text_length(pipe) -> int:
    """The caption length the pipeline pads to: its ``max_sequence_length`` default (120 PixArt-alpha, 300 Sigma);
    with a CLIP text encoder, its tokenizer's length (CLIP's positions end there; the pipeline is then run with that
    ``max_sequence_length``)."""
    if is_clip(pipe):
        return int(min(pipe.tokenizer.model_max_length, pipe.text_encoder.config.max_position_embeddings))
    return int(call_default(pipe, "max_sequence_length") or DEFAULT_MAX_LENGTH.get(type(pipe).__name__, 120))


def default_plan(pipe) -> tuple[int, float]:
    """(steps, guidance scale) of the pipeline's own defaults (PixArt: 20 steps, guidance 4.5)."""
    return int(call_default(pipe, "num_inference_steps") or 20), float(call_default(pipe, "guidance_scale") or 4.5)


def latent_geometry(pipe, height: int | None, width: int | None) -> dict:
    """Image and latent sizes of a PixArt pipeline: the transformer's ``sample_size`` (latent pixels) times the VAE
    factor unless given; each latent side a multiple of the patch size."""
    tr = pipe.transformer.config
    factor = int(pipe.vae_scale_factor)
    if height is None or width is None:
        size = int(tr.sample_size) * factor
        height, width = height or size, width or size
    multiple = factor * int(tr.patch_size)
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise MobilediffError(f"--height/--width must be positive multiples of {multiple} for this model, got "
                              f"{height}x{width}")
    return {"height": height, "width": width, "vae_scale_factor": factor, "latent_channels": int(tr.in_channels),
            "latent_height": height // factor, "latent_width": width // factor,
            "scaling_factor": float(pipe.vae.config.scaling_factor),
            "shift_factor": float(getattr(pipe.vae.config, "shift_factor", 0.0) or 0.0)}


class PixArtDenoiser(torch.nn.Module):
    """PixArt's transformer at one image size: sample, timestep, caption features, caption mask -> the prediction
    (the learned-variance channels dropped). A 1024 px PixArt-alpha (``use_additional_conditions``) takes the image's
    resolution and aspect ratio as conditions: fixed at the exported size, as the pipeline feeds them."""

    prefix = "transformer"

    def __init__(self, transformer, height: int, width: int):
        super().__init__()
        self.transformer = transformer
        self.conditions = bool(getattr(transformer, "use_additional_conditions", False))
        self.register_buffer("resolution", torch.tensor([[float(height), float(width)]]), persistent=False)
        self.register_buffer("aspect_ratio", torch.tensor([[float(height) / float(width)]]), persistent=False)

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask):
        b = sample.shape[0]
        cond = ({"resolution": self.resolution.expand(b, 2), "aspect_ratio": self.aspect_ratio.expand(b, 1)}
                if self.conditions else {"resolution": None, "aspect_ratio": None})
        out = self.transformer(sample, encoder_hidden_states=encoder_hidden_states, timestep=timestep,
                               encoder_attention_mask=encoder_attention_mask, added_cond_kwargs=cond,
                               return_dict=False)[0]
        return (out[:, :sample.shape[1]],)


def declare(pipe, geometry: dict, cfg_batch: int) -> dict:
    """The three components of a PixArt pipeline with their I/O at ``geometry``."""
    from mobilediff.components import ComponentSpec, InputRanges, TensorSpec, vae_decoder_spec
    from mobilediff.transformer_components import MaskedTextEncoder

    te, tr, vae, tok = pipe.text_encoder, pipe.transformer, pipe.vae, pipe.tokenizer
    length, hidden = text_length(pipe), int(_text_width(te.config.to_dict()))
    clip = is_clip(pipe)
    ranges = InputRanges(vocab_size=min(len(tok), te.config.vocab_size), bos_id=tok.bos_token_id if clip else None,
                         eos_id=tok.eos_token_id,
                         pad_id=tok.pad_token_id, num_train_timesteps=int(pipe.scheduler.config.num_train_timesteps))
    c, h, w = geometry["latent_channels"], geometry["latent_height"], geometry["latent_width"]
    mask_doc = (f"caption padding mask: 1 over {'BOS, ' if clip else ''}the ids and EOS, 0 over the padding")
    return {
        "text_encoder": ComponentSpec(
            "text_encoder", MaskedTextEncoder(te).eval(),
            (TensorSpec("input_ids", ("batch", length), "int32",
                        "BOS, CLIP token ids, EOS, padded with pad_id" if clip else
                        "T5 token ids, then EOS, padded with pad_id"),
             TensorSpec("attention_mask", ("batch", length), "int32",
                        mask_doc)),
            (TensorSpec("last_hidden_state", ("batch", length, hidden), "float32", "per-token text features"),),
            {"batch": 1}, type(te).__name__, ranges),
        "unet": ComponentSpec(
            "unet", PixArtDenoiser(tr, geometry["height"], geometry["width"]).eval(),
            (TensorSpec("sample", ("batch", c, h, w), "float32", "noisy latent, scaled by the sampler table's "
                                                                 "input_scale"),
             TensorSpec("timestep", ("batch",), "float32", "diffusion timestep of each batch row"),
             TensorSpec("encoder_hidden_states", ("batch", length, hidden), "float32",
                        "text encoder last_hidden_state"),
             TensorSpec("encoder_attention_mask", ("batch", length), "float32", mask_doc)),
            (TensorSpec("out_sample", ("batch", c, h, w), "float32",
                        f"model output ({pipe.scheduler.config.prediction_type})"),),
            {"batch": cfg_batch}, type(tr).__name__, ranges),
        "vae_decoder": vae_decoder_spec(vae, geometry, ranges),
    }


def tokenizer_ids(tokenizer, prompt: str, length: int) -> tuple[list[int], list[int]]:
    """(ids, mask) of ``prompt`` as the pipeline makes them (lower-cased, stripped, EOS, padded to ``length``)."""
    enc = tokenizer([prompt.lower().strip()], padding="max_length", max_length=length, truncation=True,
                    add_special_tokens=True)
    return [int(i) for i in enc.input_ids[0]], [int(m) for m in enc.attention_mask[0]]


def tiny_tokenizer(max_length: int = 32):
    """A T5-style SentencePiece unigram tokenizer over a small vocabulary (the shapes domain's words, single letters,
    digits and the word boundary), built in code: T5's specials (pad 0, EOS 1, unk 2), Metaspace pre-tokenization."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    words = ("a an the of and with on in at left right top bottom middle center big small large red green blue "
             "yellow purple orange white black gray circle square triangle diamond star background").split()
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(words)]
    pieces += [(ch, -5.0) for ch in "abcdefghijklmnopqrstuvwxyz0123456789,.'-"]
    tk = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tk.normalizer = normalizers.Sequence([normalizers.Replace("  ", " ")])
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                      special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0,
                           model_max_length=max_length)


def tiny_pixart_pipeline(seed: int = 0, sigma: bool = False, sample_size: int = 8, learned_variance: bool = True):
    """A PixArt-alpha (or Sigma) pipeline of tiny random components of the real classes: T5 encoder, PixArt
    transformer (patch 2), AutoencoderKL (factor 2), DPM-Solver scheduler, :func:`tiny_tokenizer`."""
    import diffusers
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    te = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    tr = PixArtTransformer2DModel(sample_size=sample_size, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                                  in_channels=4, out_channels=8 if learned_variance else 4, caption_channels=32,
                                  cross_attention_dim=16, patch_size=2, norm_num_groups=1,
                                  interpolation_scale=2 if sigma else None, use_additional_conditions=False)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        sample_size=2 * sample_size, scaling_factor=0.5)
    scheduler = DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                                            prediction_type="epsilon")
    cls = getattr(diffusers, "PixArtSigmaPipeline" if sigma else "PixArtAlphaPipeline")
    pipe = cls(tokenizer=tok, text_encoder=te.eval(), vae=vae.eval(), transformer=tr.eval(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
