"""Samplers (diffusers schedulers, never re-implemented) and seeded generation from a pipeline.

Each sampler name maps to a diffusers scheduler class built from the pipeline's own scheduler config, so
the noise schedule, prediction type and timestep spacing a model was trained with carry over.
Randomness comes in as seeds: image ``i`` starts from ``torch.Generator().manual_seed(seeds[i])``, so an
image does not depend on the batch it was generated in.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from mobilediff.components import image_size
from mobilediff.errors import MobilediffError
from mobilediff.samplers import SAMPLERS, make_scheduler  # noqa: F401 (re-exported: samplers are looked up here too)


# control characters a prompt may hold: CLIP's tokenizer reads them as spaces (the goldens' tokenizer rows pin that)
PROMPT_CONTROLS = "\t\n\r"


def check_prompt(prompt: str, label: str = "prompt") -> None:
    """Refuse a prompt that is not valid UTF-8 text, in one line naming ``label`` and the first bad byte or character.

    A command line's undecodable bytes reach Python as surrogate escapes ('\\udcff' for the byte 0xff): they are
    refused, never replaced (a replaced prompt would silently be another prompt). Control characters other than
    tab, newline and carriage return (which the tokenizer reads as spaces) are refused too: an escape sequence or a
    NUL pasted into a prompt is a mistake, and stripping it would be a silent edit. Raises MobilediffError."""
    import unicodedata

    if not isinstance(prompt, str):
        raise MobilediffError(f"{label} must be text, got {type(prompt).__name__}")
    try:
        raw = prompt.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:  # a surrogate that stands for no byte (from code, not from a command line)
        at = len(prompt[:e.start].encode("utf-8", "surrogateescape"))
        raise MobilediffError(f"{label} is not valid UTF-8 (character U+{ord(prompt[e.start]):04X} at {at})") from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MobilediffError(f"{label} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at {e.start})") from None
    for i, ch in enumerate(prompt):
        if ch not in PROMPT_CONTROLS and unicodedata.category(ch) == "Cc":
            raise MobilediffError(f"{label} has a control character (U+{ord(ch):04X} at character {i}): only tab, "
                                  f"newline and carriage return are allowed")


def check_prompts(prompts, option: str = "prompt") -> None:
    """:func:`check_prompt` on each prompt, named ``option`` and its position from 1 ("--prompt 2")."""
    for i, p in enumerate(prompts, 1):
        check_prompt(p, f"{option} {i}")


def check_prompt_length(tokenizer, prompt: str, warn: Callable[[str], None], limit: int | None = None) -> None:
    """Prompts longer than the tokenizer allows (``limit``, default its ``model_max_length``) are truncated (as
    diffusers does), with a warning naming what is lost."""
    ids = tokenizer(prompt, truncation=False).input_ids
    limit = limit or tokenizer.model_max_length
    if len(ids) > limit:
        dropped = tokenizer.decode(ids[limit - 1:-1])
        warn(f"prompt is {len(ids)} tokens, the text encoder takes {limit}: truncated, dropping {dropped!r}")


def validate_generation(steps: int, guidance: float, prompts: list[str], seeds: list[int]) -> None:
    if steps < 1:
        raise MobilediffError(f"steps must be >= 1, got {steps}")
    if not math.isfinite(guidance) or guidance < 0:
        raise MobilediffError(f"guidance must be a finite number >= 0, got {guidance}")
    if not prompts or not seeds:
        raise MobilediffError("need at least one prompt and one seed")
    check_prompts(prompts)


def text_embeddings(pipe, prompts: list[str]) -> torch.Tensor:
    """(B, max_length, hidden) text features the UNet attends to: the text encoder's ``last_hidden_state`` of the
    prompts padded to the tokenizer's maximum length. For a CLIPTextModel this is what StableDiffusionPipeline
    computes itself; a CLIPTextModelWithProjection returns its pooled projection first, which the pipeline would
    take instead, so the features are always passed to it (as ``prompt_embeds``)."""
    tok = pipe.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device)).last_hidden_state


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], steps: int, sampler: str = "ddim", guidance: float = 5.0,
             batch_size: int = 64, progress: Callable[[int], None] | None = None,
             latents_only: bool = False) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] for prompts[i] with seeds[i] (equal-length lists); with ``latents_only`` the
    sampler's final latents (N, C, h, w) instead, before the VAE decoder (scaled: what the decoder input is made of).

    ``progress(k)`` is called after every denoising step of every batch with the number of steps done.
    """
    if len(prompts) != len(seeds):
        raise MobilediffError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    from mobilediff import transformer_family
    from mobilediff.components import inpainting_unet

    transformer = transformer_family.is_transformer_pipeline(pipe)
    if not transformer and inpainting_unet(pipe.unet):
        raise MobilediffError("this model's UNet is an inpainting UNet: it generates only by inpainting (--init-image "
                              "with --mask)")
    validate_generation(steps, guidance, prompts, seeds)
    own = pipe.scheduler  # the pipeline keeps its own scheduler: the sampler's is made from its config for this call
    pipe.scheduler = make_scheduler(sampler, own.config)
    try:
        run = _generate_transformer if transformer else _generate
        return run(pipe, prompts, seeds, steps, guidance, batch_size, progress, latents_only)
    finally:
        pipe.scheduler = own


def _generate(pipe, prompts, seeds, steps, guidance, batch_size, progress, latents_only) -> torch.Tensor:
    height, width = image_size(pipe)  # the UNet's sample_size, an int or a (height, width) pair
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i:i + batch_size]]

        def on_step(p, step, t, kwargs):
            if progress is not None:
                progress(1)
            return kwargs

        batch = prompts[i:i + batch_size]
        embeds = text_embeddings(pipe, batch)
        # the pipeline's own rule for a classifier-free-guidance batch; its unconditional prompt is ""
        uncond = text_embeddings(pipe, [""] * len(batch)) if guidance > 1 and not pipe.unet.config.time_cond_proj_dim \
            else None
        images = pipe(prompt_embeds=embeds, negative_prompt_embeds=uncond, num_inference_steps=steps,
                      guidance_scale=guidance, generator=gens, height=height, width=width,
                      output_type="latent" if latents_only else "pt",
                      callback_on_step_end=on_step).images  # (B, 3, H, W) in [0, 1], or (B, C, h, w) latents
        out.append(images.float() if latents_only else images.float() * 2 - 1)
    return torch.cat(out)


def _generate_transformer(pipe, prompts, seeds, steps, guidance, batch_size, progress, latents_only) -> torch.Tensor:
    """A PixArt pipeline's own sampling loop (mobilediff.transformer_family): its caption preprocessing without the
    optional cleaning (lower-cased, stripped), its padded length, the unconditional prompt "", no resolution
    binning (the image is the size asked for)."""
    from mobilediff import transformer_family

    height, width = image_size(pipe)
    if steps == 1:
        # PixArt's pipeline takes a one-step run's result from the step's second output (a one-step model's x0), which
        # the DDIM and DPM-Solver schedulers do not return: the sampler's own step is taken, as at every other count
        step = pipe.scheduler.step  # pipe.scheduler is this call's own (generate restores the pipeline's)

        def one_step(*args, **kwargs):
            out = step(*args, **kwargs)
            return (out[0], out[0]) if isinstance(out, tuple) else out

        pipe.scheduler.step = one_step
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i:i + batch_size]]

        def on_step(step, t, latents):
            if progress is not None:
                progress(1)

        images = pipe(prompt=prompts[i:i + batch_size], negative_prompt="", num_inference_steps=steps,
                      guidance_scale=guidance, generator=gens, height=height, width=width, clean_caption=False,
                      max_sequence_length=transformer_family.text_length(pipe),
                      use_resolution_binning=False, output_type="latent" if latents_only else "pt",
                      callback=on_step, callback_steps=1).images
        out.append(images.float() if latents_only else images.float() * 2 - 1)
    return torch.cat(out)


@torch.no_grad()
def generate_from_image(pipe, prompts: list[str], seeds: list[int], steps: int, sampler: str, guidance: float,
                        init_image: torch.Tensor, strength: float, mask: torch.Tensor | None = None,
                        batch_size: int = 64, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Image-to-image (``mask`` None) or inpainting: images (N, 3, H, W) in [-1, 1] from diffusers' own
    StableDiffusionImg2ImgPipeline / StableDiffusionInpaintPipeline made of ``pipe``'s components with the
    sampler's scheduler, image ``i`` from ``torch.Generator().manual_seed(seeds[i])`` (the reference the bundles'
    tables are checked against; an image does not depend on its batch). ``init_image`` (1 or N, 3, H, W) in [-1, 1]
    at the model's size; ``mask`` (1 or N, 1, h, w) of 0/1 at the latent's size
    (:func:`mobilediff.image_input.load_mask`). ``progress(k)`` after every step of every batch."""
    import diffusers

    from mobilediff.sampler_table import strength_steps

    n = len(prompts)
    if n != len(seeds):
        raise MobilediffError(f"{n} prompts but {len(seeds)} seeds")
    validate_generation(steps, guidance, prompts, seeds)
    strength_steps(steps, strength)
    height, width = image_size(pipe)
    if tuple(init_image.shape[-2:]) != (height, width):
        raise MobilediffError(f"--init-image is {init_image.shape[-1]}x{init_image.shape[-2]}, the model generates "
                              f"{width}x{height}")
    for name, t in (("init images", init_image), ("masks", mask)):
        if t is not None and len(t) not in (1, n):
            raise MobilediffError(f"{len(t)} {name} for {n} prompts: give one, or one per prompt")
    from mobilediff import transformer_family
    from mobilediff.components import inpainting_unet

    if transformer_family.is_transformer_pipeline(pipe):
        raise MobilediffError(f"image-to-image and inpainting are not built for {type(pipe).__name__} models")
    if mask is None and inpainting_unet(pipe.unet):
        raise MobilediffError("this model's UNet is an inpainting UNet: it runs inpainting only (--init-image with "
                              "--mask)")
    cls = diffusers.StableDiffusionInpaintPipeline if mask is not None else diffusers.StableDiffusionImg2ImgPipeline
    parts = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet")}
    runner = cls(**parts, scheduler=make_scheduler(sampler, pipe.scheduler.config), safety_checker=None,
                 feature_extractor=None, requires_safety_checker=False)
    runner.set_progress_bar_config(disable=True)
    factor = int(pipe.vae_scale_factor)

    def on_step(p, step, t, kwargs):
        if progress is not None:
            progress(1)
        return kwargs

    def rows(t: torch.Tensor, i: int, j: int) -> torch.Tensor:
        return t.expand(n, *t.shape[1:])[i:j]

    out = []
    for i in range(0, n, batch_size):
        j = min(n, i + batch_size)
        embeds = text_embeddings(pipe, prompts[i:j])
        uncond = text_embeddings(pipe, [""] * (j - i)) \
            if guidance > 1 and not pipe.unet.config.time_cond_proj_dim else None
        kw = {}
        if mask is not None:  # the latent mask at pixel size: diffusers takes it there and samples it back (nearest)
            kw = {"mask_image": rows(mask, i, j).repeat_interleave(factor, 2).repeat_interleave(factor, 3),
                  "height": height, "width": width}
        images = runner(prompt_embeds=embeds, negative_prompt_embeds=uncond, image=(rows(init_image, i, j) + 1) / 2,
                        strength=strength, num_inference_steps=steps, guidance_scale=guidance,
                        generator=[torch.Generator().manual_seed(int(s)) for s in seeds[i:j]], output_type="pt",
                        callback_on_step_end=on_step, **kw).images
        out.append(images.float() * 2 - 1)
    return torch.cat(out)


def image_grid(images: torch.Tensor, rows: int, cols: int, pad: int = 2):
    """(rows*cols, 3, H, W) in [-1, 1] -> a PIL image grid, row-major, with a pad-pixel white border."""
    from PIL import Image

    from mobilediff.data import to_uint8

    arr = to_uint8(images)
    n, h, w, _ = arr.shape
    canvas = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for k in range(min(n, rows * cols)):
        r, c = divmod(k, cols)
        canvas.paste(Image.fromarray(arr[k]), (pad + c * (w + pad), pad + r * (h + pad)))
    return canvas
