"""`mobilediff distill-decoder`: a tiny decoder (diffusers' ``AutoencoderTiny``, :mod:`mobilediff.decoder`) for a
model's latents, distilled from the model's own VAE decoder by the one training loop (:mod:`mobilediff.train.loop`).

For a few-step student the VAE decoder costs more than all the denoiser steps together (default model: 1.24 GFLOP
against 0.198 per UNet step); the default AutoencoderTiny here (24 channels) costs 0.139, a ninth of it.

Data: shapes-domain samples encoded once by the model's VAE encoder (the latent cache the other trainers use,
``z = s · E(x)``), optionally joined by latents the model's own sampler produces with its default plan
(``sampled_latents``: what the decoder meets in use), and for every latent the teacher decoder's image, decoded
once and cached beside it: the target is the teacher decoder's image, never the ground-truth picture.

The loss of a batch, with

    z       latent as the sampler makes it (B, c, h, w)       s      the teacher VAE's scaling_factor
    x_T     teacher image D_T(z / s), clamped to [-1, 1]     x_S    student image D_S(z) (no scaling: TAESD's way)
    m_p     1 + object_weight · [pixel p lies on a shape of x_T]
    φ_l     the shapes evaluator's activations at the end of its backbone level l = 1..L, and its feature (l = L+1)

is

    L = Σ_p m_p (|x_S − x_T| + (x_S − x_T)²)_p / Σ_p m_p  +  λ Σ_l ‖φ_l(x̃_S) − φ_l(x_T)‖² / ‖φ_l(x_T)‖²

with x̃_S = clamp(x_S, −1, 1) (what a pipeline shows): the VAE's own reconstruction loss (L1 + L2, shapes weighted
up), and a perceptual term in the feature space of the network that scores prompt accuracy and FD, each level's
error relative to its size. Because the evaluator is also the judge, the record adds a judge-free number: the PSNR
of the student's images against the teacher decoder's on held-out latents.

Every global batch is drawn from a generator seeded by (seed, step), every process keeping its rows
(:func:`mobilediff.train.loop.process_rows`), so ``--resume latest`` continues a run exactly.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mobilediff.errors import MobilediffError
from mobilediff.sources import DataOptions
from mobilediff.train.loop import (Leg, continues_in_place, file_sha256, make_accelerator, module_shapes,
                                   prepare_run_folder, process_rows, provenance, refuse_existing, run_folder_lock,
                                   run_leg)

# default decoder, picked by measurement on the default model: at the same cost, 24 channels with the
# blocks at the coarse levels beat TAESD's pattern at 16 channels (3,3,1): after 400 steps 26.2 against 25.1 dB PSNR
# to the VAE decoder's images; 0.139 GFLOP at 16x16 -> 64x64 (the default AutoencoderKL decoder: 1.24), 7.2 ms eager
DEFAULT_WIDTH = 24
RUN_ITEMS = ("checkpoints", "latent_cache.safetensors", "decoder_targets.safetensors", "log.jsonl", "decoder",
             "model")
HELD_OUT = 256  # fresh samples the final PSNR against the teacher decoder is measured on


def default_blocks(levels: int) -> tuple[int, ...]:
    """Residual blocks per level, coarsest first: six at the coarsest level (where a block costs 1/16 of one at full
    resolution), one at every middle level, none at full resolution (its upsampling conv and the output conv stay);
    (6, 1, 0) for the default model's 3 levels."""
    return (6,) if levels == 1 else (6,) + (1,) * (levels - 2) + (0,)


@dataclass
class DecoderDistillConfig:
    """Settings of `mobilediff distill-decoder`."""

    model: str  # pipeline folder or a named model ("default", "default:progressive-4", ...) whose VAE is the teacher
    out: Path  # run folder: checkpoints, log, caches, OUT/decoder and OUT/model
    width: int = DEFAULT_WIDTH  # decoder channels, the same at every level (DecoderTiny keeps one width)
    blocks: tuple[int, ...] | None = None  # residual blocks per level, coarsest first; None: default_blocks(levels)
    max_train_steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    seed: int = 0
    checkpoint_every: int = 100
    latent_cache: int = 8192  # shapes-domain samples encoded once with the model's VAE
    sampled_latents: int = 0  # latents sampled once with the model's own default plan, joined to the cache
    perceptual_weight: float = 0.25  # λ: weight of the evaluator-feature term
    object_weight: float = 4.0  # extra pixel-loss weight on shape pixels (shapes cover a few % of an image)
    grad_clip: float = 1.0
    # the data: none given = the shapes domain; else the user's images (encoded by the model's VAE) or latents the
    # model renders from the user's prompts (--prompts with --synthesize N)
    source: DataOptions = field(default_factory=DataOptions)


def validate(cfg: DecoderDistillConfig) -> None:
    """The options that need no model, refused before anything is read."""
    if cfg.width < 1:
        raise MobilediffError(f"--width must be >= 1, got {cfg.width}")
    if cfg.blocks is not None and (not cfg.blocks or any(b < 0 for b in cfg.blocks)):
        raise MobilediffError(f"--blocks needs one count >= 0 per level, got {','.join(map(str, cfg.blocks))}")


def parse_blocks(text: str | None) -> tuple[int, ...] | None:
    """``"3,3,1"`` -> (3, 3, 1). Raises MobilediffError on anything else."""
    if text is None:
        return None
    try:
        blocks = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise MobilediffError(f"--blocks must be comma-separated integers (blocks per level), got {text!r}") from None
    return blocks


def load_teacher(model: str):
    """The model pipeline whose VAE is the teacher: loaded, checked, and refused if its VAE cannot encode (a model
    that already holds a tiny decoder)."""
    from mobilediff.loading import load_pipeline

    pipe = load_pipeline(model)
    if type(pipe.vae).__name__ != "AutoencoderKL":
        raise MobilediffError(f"the model's VAE is an {type(pipe.vae).__name__}: distill-decoder needs the model's own "
                              f"AutoencoderKL (its encoder makes the latents, its decoder the targets)")
    for module in (pipe.text_encoder, pipe.unet, pipe.vae):
        module.requires_grad_(False).eval()
    return pipe


def _levels_and_blocks(cfg: DecoderDistillConfig, vae) -> tuple[int, tuple[int, ...]]:
    levels = len(vae.config.block_out_channels)
    blocks = cfg.blocks if cfg.blocks is not None else default_blocks(levels)
    if len(blocks) != levels:
        raise MobilediffError(f"--blocks {','.join(map(str, blocks))} gives {len(blocks)} levels; the model's VAE "
                              f"upsamples {2 ** (levels - 1)}x, which takes {levels} (one per 2x upsampling, and one)")
    return levels, blocks


# ---------------------------------------------------------------------------------------------- data


def _teacher_images(vae, latents: torch.Tensor, show: bool, chunk: int = 128) -> torch.Tensor:
    """x_T = clamp(D_T(z / s), -1, 1) for every latent, (N, 3, H, W), in chunks."""
    from tqdm.auto import tqdm

    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(latents), chunk), desc="decode targets", disable=not show):
            z = latents[i:i + chunk] / vae.config.scaling_factor
            out.append(vae.decode(z).sample.float().clamp(-1, 1))
    return torch.cat(out)


def _sampled_latents(cfg: DecoderDistillConfig, pipe, model_dir: Path, show: bool, n: int,
                     prompts: list[str] | None = None, seed_offset: int = 5) -> tuple[torch.Tensor, dict]:
    """``n`` final latents of the model's own default sampling plan, for the user's ``prompts`` (cycled) or captions
    of a shapes dataset seed no other set uses, with seeds of their own (``seed_offset`` keeps sets apart)."""
    from tqdm.auto import tqdm

    from mobilediff.data import ShapesDataset
    from mobilediff.card import model_card
    from mobilediff.sampling import generate

    plan = model_card(pipe, model_dir, cfg.model).plan
    if prompts is None:
        captions = [s.caption for s in ShapesDataset(seed=cfg.seed + seed_offset).scenes(0, n)]
    else:
        captions = [prompts[i % len(prompts)] for i in range(n)]
    seeds = [(cfg.seed + seed_offset) * 1_000_003 + i for i in range(n)]
    with tqdm(total=plan.steps * -(-n // 64), desc=f"sample latents ({plan.sampler} {plan.steps} steps)",
              disable=not show) as bar:
        latents = generate(pipe, captions, seeds, plan.steps, plan.sampler, plan.guidance, progress=bar.update,
                           latents_only=True)
    return latents, {"sampler": plan.sampler, "steps": plan.steps, "guidance": plan.guidance}


class DecoderData:
    """The pool of (latent, teacher image) pairs every batch is drawn from: the latent cache of encoded samples,
    then any sampled latents; cached in ``OUT/decoder_targets.safetensors`` (main process first), reused when the
    VAE, the UNet, the data and the sizes are the same."""

    def __init__(self, cfg: DecoderDistillConfig, pipe, model_dir: Path, accelerator):
        from mobilediff.data import ShapesConfig, ShapesDataset
        from mobilediff.decoder import vae_folder
        from mobilediff.loading import shared_components
        from mobilediff.train.base import latent_cache
        from mobilediff.train.distill import teacher_image_size

        self.cfg, self.accelerator = cfg, accelerator
        show = accelerator.is_main_process
        vae_dir = vae_folder(model_dir)
        vae_sha256 = file_sha256(vae_dir / "diffusion_pytorch_model.safetensors")
        size = teacher_image_size(pipe)
        data_cfg = ShapesConfig(resolution=size[0], supersample=2 if size[0] <= 32 else 4)
        self.data_cfg = data_cfg
        self.images_set = None  # the user's images (their held-out rows score the decoder), if any
        source = cfg.source
        if source.has_images:
            from mobilediff.sources import load_images

            self.images_set = load_images(source, size, pipe.tokenizer, seed=cfg.seed + 2, show_progress=show,
                                          warn=None if show else (lambda m: None))
        prompts = None
        if source.given and not source.has_images:
            from mobilediff.sources import load_prompts

            prompts = load_prompts(source, warn=None if show else (lambda m: None))
        sampled_n = source.synthesize if prompts is not None else cfg.sampled_latents
        unet_dir = shared_components(model_dir).get("unet", model_dir / "unet")
        unet_weights = sorted(unet_dir.glob("*.safetensors"))
        data_key = (asdict(data_cfg) if not source.given else
                    self.images_set.fingerprint if self.images_set is not None else
                    hashlib.sha256("\n".join(prompts).encode()).hexdigest())
        key = json.dumps({"latent_cache": cfg.latent_cache, "sampled_latents": sampled_n, "seed": cfg.seed,
                          "data": data_key, "vae": vae_sha256,
                          "unet": [file_sha256(f) for f in unet_weights] if sampled_n else None,
                          "scaling_factor": pipe.vae.config.scaling_factor}, sort_keys=True, default=str)
        path = Path(cfg.out) / "decoder_targets.safetensors"
        with accelerator.main_process_first():
            pool = self._read(path, key)
            if pool is None:
                sampled = None
                if not source.given:
                    latents = latent_cache(pipe.vae, vae_sha256, pipe.tokenizer,
                                           ShapesDataset(seed=cfg.seed + 2, config=data_cfg), cfg.latent_cache,
                                           Path(cfg.out) / "latent_cache.safetensors", accelerator.autocast, show,
                                           shapes=data_cfg)["latents"]
                elif self.images_set is not None:
                    from mobilediff.sources import default_cache_dir

                    folder = Path(source.cache_dir or default_cache_dir()) / "latents"
                    latents = latent_cache(pipe.vae, vae_sha256, pipe.tokenizer, self.images_set, 0,
                                           folder / f"{self.images_set.fingerprint}-{vae_sha256[:16]}.safetensors",
                                           accelerator.autocast, show)["latents"]
                else:
                    latents = torch.zeros(0, pipe.unet.config.in_channels, *(n // pipe.vae_scale_factor for n in size))
                if sampled_n:
                    extra, sampled = _sampled_latents(cfg, pipe, model_dir, show, sampled_n, prompts)
                    latents = torch.cat([latents, extra])
                images = _teacher_images(pipe.vae, latents, show)
                from mobilediff.io import load_tensors, save_tensors

                # fp16 targets halve the file (8192 images: 200 MB); their rounding (< 5e-4) is far below what a
                # tiny decoder reaches, and a resumed run reads the same stored tensors as the first
                save_tensors({"latents": latents, "images": images.half()}, path,
                             metadata={"key": key, "sampled": json.dumps(sampled)})
                pool = load_tensors(path)
        self.latents, self.images = pool["latents"], pool["images"]
        self.rows = process_rows(cfg.batch_size, accelerator)

    @staticmethod
    def _read(path: Path, key: str) -> dict | None:
        if not path.is_file():
            return None
        from safetensors import safe_open

        from mobilediff.io import load_tensors

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
        return load_tensors(path)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents (b, c, h, w), teacher images (b, 3, H, W) float32) of this process's rows of global step ``step``."""
        g = torch.Generator().manual_seed((self.cfg.seed + 11) * 1_000_003 + step * 7919)
        idx = torch.randint(0, len(self.latents), (self.cfg.batch_size,), generator=g)[self.rows]
        return self.latents[idx], self.images[idx].float()


# ---------------------------------------------------------------------------------------------- the loss


class TinyDecode(torch.nn.Module):
    """D_S(z): the AutoencoderTiny's decoder as one module call (so that accelerate prepares, and DDP synchronises,
    it; ``decode`` would bypass the wrapper's forward)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decoder(latents)  # (B, 3, H, W), [-1, 1] nominally, unclamped


def object_weight_map(images: torch.Tensor, object_weight: float) -> torch.Tensor:
    """m (B, 1, H, W): 1 + object_weight on pixels that differ from the background (pixel (0, 0) is background in
    this domain), as the VAE's own training weighted them."""
    is_object = ((images - images[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.1).float()
    return 1.0 + object_weight * is_object


def perceptual_distance(evaluator_net, student: torch.Tensor, teacher: torch.Tensor, resolution: int) -> torch.Tensor:
    """Σ_l ‖φ_l(student) − φ_l(teacher)‖² / ‖φ_l(teacher)‖² over the evaluator's levels and its feature (module doc);
    gradients flow into ``student`` (and into the evaluator's weights unless they are frozen). Images of another size are resized (bilinear) to the evaluator's
    ``resolution`` first, as ``evaluate --images`` does."""
    if student.shape[-1] != resolution or student.shape[-2] != resolution:
        student, teacher = (F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
                            for x in (student, teacher))
    with torch.no_grad():
        target = evaluator_net.level_features(teacher)
    got = evaluator_net.level_features(student)
    return sum(((a - b) ** 2).mean() / (b ** 2).mean().clamp(min=1e-8) for a, b in zip(got, target))


class DecoderObjective:
    """The pixel + perceptual distillation loss of the module doc, on the training loop's interface."""

    clip = "decoder"
    log_fields = {"method": "decoder"}

    def __init__(self, cfg: DecoderDistillConfig, data: DecoderData, vae, evaluator):
        self.cfg, self.data, self.vae = cfg, data, vae
        self.evaluator_net, self.resolution = evaluator.net.requires_grad_(False).eval(), evaluator.cfg.resolution
        self.models = {"decoder": TinyDecode(vae)}

    def checkpointed(self) -> dict:
        return {"decoder": self.vae}

    def after_resume(self) -> None:
        self.vae.decoder.train()

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        latents, target = self.data.batch(step)  # z (b, c, h, w), x_T (b, 3, H, W)
        student = self.models["decoder"](latents).float()  # x_S
        # m: shape pixels weighted up in the shapes domain; other data uniformly
        weight = object_weight_map(target, self.cfg.object_weight if not self.cfg.source.given else 0.0)
        err = student - target
        pixel = ((err.abs() + err.square()) * weight).mean() / weight.mean()
        if self.cfg.perceptual_weight == 0:
            return pixel, {"pixel": f"{pixel.item():.4f}"}
        perceptual = perceptual_distance(self.evaluator_net, student.clamp(-1, 1), target, self.resolution)
        return pixel + self.cfg.perceptual_weight * perceptual, {"pixel": f"{pixel.item():.4f}",
                                                                 "perc": f"{perceptual.item():.3f}"}

    def after_step(self, step: int) -> None:
        pass


# ---------------------------------------------------------------------------------------------- run


def _check_resume(cfg: DecoderDistillConfig, resume: str | None, force: bool):
    """Check what ``--resume`` points at before anything is written (as ``distill`` does); return the checkpoint the
    run continues from, or None."""
    from mobilediff.train.checkpoint import check_resume

    return check_resume(cfg.out, resume, "decoder.safetensors", "decoder", RUN_ITEMS, force=force)


def _check_continues(cfg: DecoderDistillConfig, ckpt, decoder, run: dict) -> None:
    """Refuse, before any work, a checkpoint this run cannot continue: a decoder of another architecture (--width,
    --blocks, the model's latent channels; weight names and shapes from the file headers), one past
    --max-train-steps, or one whose run record (``run``: the teacher VAE's weights) differs."""
    from mobilediff.train.checkpoint import check_continues, check_fits

    check_fits(ckpt, {"decoder": module_shapes(decoder)})
    check_continues(ckpt, run, cfg.max_train_steps, f"--max-train-steps {cfg.max_train_steps}")


@torch.no_grad()
def held_out_psnr(vae, teacher_vae, cfg: DecoderDistillConfig, data_cfg, n: int = HELD_OUT,
                  z: torch.Tensor | None = None, images: torch.Tensor | None = None) -> float:
    """PSNR (dB, images in [-1, 1]: peak-to-peak 2) of the student's clamped images against the teacher decoder's, on
    held-out latents ``z`` (scaled), or on held-out ``images`` encoded by the teacher VAE, or by default on ``n``
    fresh shapes samples (a dataset seed the training never read)."""
    from mobilediff.data import ShapesDataset

    if z is None:
        if images is None:
            images, _, _ = ShapesDataset(seed=cfg.seed + 9, config=data_cfg).batch(0, n)
        z = teacher_vae.encode(images).latent_dist.mean * teacher_vae.config.scaling_factor
    target = teacher_vae.decode(z / teacher_vae.config.scaling_factor).sample.clamp(-1, 1)
    got = vae.decode(z).sample.clamp(-1, 1)
    return float(10 * torch.log10(4.0 / F.mse_loss(got, target)))


def _record(cfg: DecoderDistillConfig, command: str, pipe, vae_dir: Path, blocks, stats: dict, gflop: dict) -> dict:
    from mobilediff.decoder import KIND

    from mobilediff.components import latent_size

    shape = (pipe.unet.config.in_channels, *latent_size(pipe.unet.config))  # (c, h, w): sample_size int or pair
    return {"kind": KIND,
            "latent": {"latent_channels": shape[0], "vae_scale_factor": int(pipe.vae_scale_factor),
                       "scaling_factor": float(pipe.vae.config.scaling_factor),
                       "shift_factor": float(getattr(pipe.vae.config, "shift_factor", 0.0) or 0.0)},
            "latent_shape": list(shape), "image_size": [n * int(pipe.vae_scale_factor) for n in shape[1:]] if shape[1] != shape[2] else shape[1] * int(pipe.vae_scale_factor),
            "note": "decodes the sampler's latent z as it is (scaling_factor 1); the teacher VAE decodes "
                    "z / latent.scaling_factor. The encoder is untrained (zero weights).",
            "teacher": {"model": cfg.model, "vae_sha256": file_sha256(vae_dir / "diffusion_pytorch_model.safetensors")},
            "architecture": {"width": cfg.width, "blocks": list(blocks)},
            "gflop_per_image": gflop, "command": command,
            "config": json.loads(json.dumps(asdict(cfg), default=str)), "stats": stats, **provenance()}


def distill_decoder(cfg: DecoderDistillConfig, resume: str | None = None, force: bool = False,
                    command: str = "") -> tuple[Path, Path]:
    """Run the distillation; returns (OUT/decoder, OUT/model), each written atomically: the decoder folder, and the
    model's pipeline with its VAE replaced by the decoder (full form; a student keeps its distillation.json).

    ``resume``: "latest" (the newest checkpoint in OUT) or a checkpoint folder: of this run folder (continued in
    place), or of another one, continued in OUT as a new run folder (an existing one is refused unless ``force``).
    OUT is locked for the whole run (a second command writing it fails at once). Raises MobilediffError, before
    anything is written, on bad options, a bad model, an OUT that exists without ``resume``/``force`` or that another
    process writes, and a checkpoint this run cannot continue (:func:`_check_continues`); on a non-finite loss
    (nothing is saved then)."""
    validate(cfg)
    if cfg.source.given:
        from mobilediff.sources import check_needs

        check_needs(cfg.source, "distill-decoder")
    accelerator = make_accelerator("fp32")
    process_rows(cfg.batch_size, accelerator)  # refuses a batch that does not split over the processes
    refuse_existing(cfg.out, resume, force)  # (again under the lock: OUT may appear meanwhile)
    with run_folder_lock(cfg.out, accelerator):  # a second command writing OUT fails at once
        return _distill_decoder(cfg, resume, force, command, accelerator)


def _distill_decoder(cfg: DecoderDistillConfig, resume: str | None, force: bool, command: str,
                     accelerator) -> tuple[Path, Path]:
    from mobilediff.decoder import build_tiny, decoder_gflop, vae_folder
    from mobilediff.evaluator import Evaluator
    from mobilediff.io import atomic_dir, atomic_write_json
    from mobilediff.loading import pack_pipeline, resolve_model
    from mobilediff.train.checkpoint import run_record
    from mobilediff.train.loop import state_sha256

    out = Path(cfg.out)
    existed = out.exists()
    refuse_existing(out, resume, force)
    ckpt = _check_resume(cfg, resume, force)
    pipe = load_teacher(cfg.model)
    model_dir = resolve_model(cfg.model)
    levels, blocks = _levels_and_blocks(cfg, pipe.vae)
    run = {"command": "distill-decoder", "teacher_vae_sha256": state_sha256(pipe.vae)}
    if ckpt is not None:
        with torch.random.fork_rng(devices=[]):  # the decoder this run builds, for its shapes (its seed stays put)
            _check_continues(cfg, ckpt, build_tiny(pipe.unet.config.in_channels, cfg.width, blocks, cfg.seed), run)
    evaluator = Evaluator.load()
    if cfg.source.given:  # the user's data is read (bad data refused) before OUT changes
        from mobilediff.train.distill import preflight_data

        preflight_data(cfg.source, pipe, show=accelerator.is_main_process)
    prepare_run_folder(out, continues_in_place(out, resume), existed, accelerator)
    data = DecoderData(cfg, pipe, model_dir, accelerator)
    vae = build_tiny(pipe.unet.config.in_channels, cfg.width, blocks, cfg.seed)
    vae.decoder.requires_grad_(True)
    opt = torch.optim.AdamW(vae.decoder.parameters(), lr=cfg.lr, weight_decay=0.0)
    objective = DecoderObjective(cfg, data, vae, evaluator)
    leg = Leg(run_dir=out, desc=f"distill decoder (width {cfg.width}, blocks {','.join(map(str, blocks))})",
              steps=cfg.max_train_steps, lr_warmup_steps=cfg.warmup_steps, checkpoint_every=cfg.checkpoint_every,
              log_every=25, grad_clip=cfg.grad_clip, checkpoint_state=run_record(**run))
    seconds = run_leg(leg, objective, opt, accelerator, ckpt)
    vae = accelerator.unwrap_model(objective.models["decoder"]).vae.requires_grad_(False).eval()
    if not accelerator.is_main_process:
        return out / "decoder", out / "model"
    latent_shape = tuple(data.latents.shape[1:])
    gflop = {"decoder": round(decoder_gflop(vae, latent_shape), 4),
             "teacher_decoder": round(decoder_gflop(pipe.vae, latent_shape), 4)}
    held_z, held_images, held_what = None, None, f"{HELD_OUT} fresh shapes-domain samples"
    if data.images_set is not None and len(data.images_set.validation_rows) >= 1:
        held_images = data.images_set.images(data.images_set.validation_rows[:HELD_OUT])
        held_what = f"{len(held_images)} held-out images"
    elif cfg.source.given:  # prompts: latents rendered with seeds the pool never used
        from mobilediff.sources import load_prompts

        held_z, _ = _sampled_latents(cfg, pipe, model_dir, False, min(HELD_OUT, 16), load_prompts(cfg.source),
                                     seed_offset=9)
        held_what = f"{len(held_z)} latents rendered from the prompts with unseen seeds"
    stats = {"train_steps": cfg.max_train_steps, "train_seconds": seconds, "pool": len(data.latents),
             "held_out_psnr_db_vs_teacher_decoder": round(held_out_psnr(vae, pipe.vae, cfg, data.data_cfg, z=held_z,
                                                                        images=held_images), 2),
             "held_out": held_what}
    record = _record(cfg, command, pipe, vae_folder(model_dir), blocks, stats, gflop)
    with atomic_dir(out / "decoder", force=True) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        from mobilediff.loading import drop_load_paths

        drop_load_paths(tmp)
        atomic_write_json(tmp / "decoder.json", record)
    pack_pipeline(model_dir, None, out / "model", decoder=out / "decoder", force=True)
    return out / "decoder", out / "model"
