"""`mobilediff train-base`: the two losses that train the default model family (VAE, then text encoder + UNet) on
the shapes domain, run by the one training loop (:mod:`mobilediff.train.loop`), and the pipeline they write.

Every process takes its own rows of each global batch, selected by dataset index (VAE) or by indices into the latent
cache drawn for the whole batch from a generator seeded by (seed, step), as are the noise, timesteps and caption
dropout (denoiser); so a run is a pure function of (seed, step), resumes exactly, and trains on the same examples
over N processes (``accelerate launch``) as on one.

Stage 1 (VAE): AutoencoderKL on 64x64 images, L1 + L2 reconstruction and a small KL term.
Stage 2 (denoiser): CLIPTextModel + UNet2DConditionModel trained jointly on frozen-VAE latents with
v-prediction (plain v-loss by default, min-SNR-gamma optional), an object-weighted loss, caption dropout (so
classifier-free guidance works), an auxiliary caption-parsing loss on the text encoder, a latent cache of
samples encoded once, and an EMA of the weights, which is what the final pipeline holds.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mobilediff.data import GRID, ShapesConfig, ShapesDataset, labels_tensor
from mobilediff.sources import DataOptions, ImageSet, report_dict
from mobilediff.errors import MobilediffError
from mobilediff.io import atomic_dir, atomic_write_bytes, atomic_write_json, load_tensors
from mobilediff.models import DefaultModelConfig
from mobilediff.train.checkpoint import Checkpoint, complete_checkpoints, run_record
from mobilediff.train.loop import (EMA, Leg, file_sha256, make_accelerator, module_shapes, prepare_run_folder,
                                   process_rows, provenance, refuse_existing, run_folder_lock, run_leg)


@dataclass
class TrainBaseConfig:
    """Settings of `train-base`; the defaults are what trained the embedded default model."""

    out: Path  # run folder: checkpoints, logs, and the final pipeline in <out>/model
    model: DefaultModelConfig = field(default_factory=DefaultModelConfig)
    data: ShapesConfig = field(default_factory=ShapesConfig)  # the shapes domain's settings (when no source is given)
    # captioned images to train on (--images / --wds); none given: the shapes domain
    source: DataOptions = field(default_factory=DataOptions)
    seed: int = 0
    vae_steps: int = 1600  # optimizer steps of stage 1
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    vae_object_weight: float = 10.0  # extra loss weight of shape pixels over background pixels
    kl_weight: float = 1e-6
    vae_stats_samples: int = 512  # fresh images for the latent scaling factor (half as many for the PSNR)
    unet_steps: int = 1600  # optimizer steps of stage 2
    batch_size: int = 128  # global batch of stage 2
    lr: float = 6e-4
    warmup_steps: int = 150
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # fraction of captions replaced by "" (the unconditional prompt)
    # 0 = plain v-loss (x0 error weighted by snr + 1). Min-SNR-gamma (> 0) weights the x0 error by min(snr, gamma),
    # almost nothing at high noise: measured here, it left the layout decided by the initial noise, not the text
    # (position accuracy 0.26 after 1,800 steps), because the first sampling steps are where layout is decided.
    min_snr_gamma: float = 0.0
    # auxiliary caption-parsing loss: a linear head on the text encoder's pooled (EOS) output predicts the
    # scene (background; shape, colour, size per cell). It breaks the chicken-and-egg of joint training, where
    # the text encoder gets no signal for an attribute until the UNet uses it. The head is dropped afterwards.
    text_aux_weight: float = 0.5
    # extra diffusion-loss weight on latent pixels covered by shapes (weight = 1 + w * covered fraction): shapes
    # cover ~5 % of the latent, so with a uniform loss the easy background dominates the gradient
    object_weight: float = 4.0
    # further weight on latent pixels covered by a *small* shape (weight = 1 + (w + w_small) * covered fraction
    # there). Measured on the 11,800-step model: small shapes were drawn with the right kind 0.88 of the time,
    # large ones 0.97, and a small shape gets about a third of a large one's share of the loss.
    small_object_weight: float = 0.0
    # sample timesteps in [begin, end) this many times as often as the others (1 = uniform), as the
    # "range" timestep bias of diffusers' SDXL training script. A diagnostic on the 14,800-step model (512 scenes, not
    # a committed report): real latents noised to t = 250 and denoised back (DDIM, guidance 3.5) lost small shapes'
    # kind (read 0.976 after the VAE round trip alone -> 0.938), so
    # most of the small-shape errors are made at low noise, where a uniform draw spends a quarter of the batch.
    timestep_bias_range: tuple[int, int] = (0, 1000)
    timestep_bias_multiplier: float = 1.0
    # train the UNet alone: the text encoder stays exactly as loaded (as do students that borrow it by sha256)
    freeze_text_encoder: bool = False
    # encode this many samples once (stored in <out>/unet_run) and draw every batch from them, with fresh noise,
    # timesteps and caption dropout per step; the frozen VAE's encoder was a third of a step. 0 = fresh samples.
    latent_cache: int = 32768
    init_from: Path | None = None  # start stage 2 from these checkpoint weights (fresh optimizer and schedule)
    # start the text encoder (only) from this pipeline folder's weights; with freeze_text_encoder, a UNet of any
    # size trains against an existing text encoder (the model family of the scaling study shares one)
    text_encoder_from: Path | None = None
    # use this pipeline folder's VAE (copied into the run folder) instead of training stage 1
    vae_from: Path | None = None
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    # "bf16" autocast has ~2x faster GEMMs on AVX-512 BF16 CPUs, yet a whole step of this small UNet measured
    # slower in bf16 (2.3 s) than in fp32 (1.6 s) on the 2-core machine: conversions and unfused ops dominate
    mixed_precision: str = "fp32"
    tokenizer_dir: Path | None = None  # default: the embedded model's tokenizer
    dry_run: bool = False  # report the data (counts, sizes, caption lengths, skips) and stop before training


class Denoiser(torch.nn.Module):
    """Text encoder + denoiser as one module, so accelerate prepares (and DDP wraps) them together. The denoiser is a
    UNet (attribute ``unet``) or a PixArt diffusion transformer (attribute ``transformer``): the pipeline folder's
    names, which the checkpoint keys follow."""

    def __init__(self, text_encoder, net):
        super().__init__()
        self.text_encoder = text_encoder
        self.kind = "transformer" if type(net).__name__ == "PixArtTransformer2DModel" else "unet"
        setattr(self, self.kind, net)

    @property
    def net(self):
        return getattr(self, self.kind)

    def forward(self, input_ids, noisy_latents, timesteps):
        if self.kind == "unet":  # Stable Diffusion's conditioning: every token, padding included
            out = self.text_encoder(input_ids)
            pred = self.unet(noisy_latents, timesteps, encoder_hidden_states=out.last_hidden_state).sample
            return pred, out.pooler_output  # (B, 4, h, w), (B, D)
        # PixArt's: the text encoder and the cross-attention see the caption up to its first EOS (the tokenizer's
        # attention mask, as PixArtAlphaPipeline passes it); CLIP pads with EOS, so the mask is rebuilt from the ids
        from mobilediff.transformer_family import caption_mask

        mask = caption_mask(input_ids, self.text_encoder.config.eos_token_id)
        out = self.text_encoder(input_ids, attention_mask=mask)
        pred = self.transformer(noisy_latents, encoder_hidden_states=out.last_hidden_state, timestep=timesteps,
                                encoder_attention_mask=mask,
                                added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        return pred, out.pooler_output


class SceneHead(torch.nn.Module):
    """Auxiliary caption parser: pooled text feature -> background and per-cell shape / colour / size logits."""

    def __init__(self, dim: int):
        super().__init__()
        from mobilediff.data import BACKGROUNDS, COLORS, SHAPES, SIZES

        self.sizes = (len(BACKGROUNDS), 9 * (len(SHAPES) + 1), 9 * len(COLORS), 9 * len(SIZES))
        self.proj = torch.nn.Linear(dim, sum(self.sizes))

    def forward(self, pooled: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """The caption-parsing loss (a forward pass, so that DDP synchronises the head's gradients)."""
        bg, shape, color, size = self.proj(pooled.float()).split(self.sizes, dim=-1)
        b = pooled.shape[0]
        occ = labels["shape"] > 0
        loss = F.cross_entropy(bg, labels["background"]) + F.cross_entropy(shape.reshape(b * 9, -1), labels["shape"].flatten())
        loss = loss + F.cross_entropy(color.reshape(b, 9, -1)[occ], labels["color"][occ])
        return loss + F.cross_entropy(size.reshape(b, 9, -1)[occ], labels["size"][occ])


# ---------------------------------------------------------------------------------------------- stage 1: VAE


class VaeRoundTrip(torch.nn.Module):
    """The VAE's training pass as one module call (so that accelerate prepares, and DDP synchronises, it): encode,
    sample the posterior with the given unit-normal ``noise`` (B, C, h, w), decode. Returns the reconstruction
    (B, 3, H, W) and the posterior's KL divergence from the unit normal (B,)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * noise
        return self.vae.decode(z).sample, posterior.kl()


class VaeObjective:
    """Stage 1's loss: object-weighted L1 + L2 reconstruction of 64x64 images and a small KL term."""

    log_fields = {"stage": "vae"}
    clip = "vae"

    def __init__(self, cfg: TrainBaseConfig, accelerator, vae):
        self.cfg, self.accelerator, self.vae = cfg, accelerator, vae
        self.models = {"vae": VaeRoundTrip(vae)}
        self.data = training_images(cfg, cfg.seed)
        self.rows = process_rows(cfg.vae_batch_size, accelerator, "--vae-batch-size")
        down = 2 ** (len(vae.config.block_out_channels) - 1)
        h, w = image_size(cfg)
        self.latent_shape = (vae.config.latent_channels, h // down, w // down)

    def checkpointed(self) -> dict:
        return {"vae": self.vae}

    def after_resume(self) -> None:
        pass

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        cfg, acc, rows = self.cfg, self.accelerator, self.rows
        images, _, _ = self.data.batch(step * cfg.vae_batch_size + rows.start, rows.stop - rows.start)  # (b, 3, H, W)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        noise = torch.randn((cfg.vae_batch_size, *self.latent_shape), generator=g)[rows]  # the global batch's, our rows
        with acc.autocast():
            recon, kl = self.models["vae"](images, noise)
        recon = recon.float()
        # shapes cover a few percent of the pixels: weight them up, or the background dominates the loss
        # (pixel (0, 0) is always background in this domain; other data is weighted uniformly)
        if isinstance(self.data, ShapesDataset):
            is_object = ((images - images[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.1).float()
            weight = 1.0 + cfg.vae_object_weight * is_object
        else:
            weight = torch.ones_like(images[:, :1])
        err = recon - images
        rec = ((err.abs() + err.square()) * weight).mean() / weight.mean()
        kl = kl.float().mean() / images[0].numel()
        return rec + cfg.kl_weight * kl, {"l1": f"{F.l1_loss(recon, images).item():.4f}"}

    def after_step(self, step: int) -> None:
        pass


def train_vae(cfg: TrainBaseConfig, ckpt: Checkpoint | None, out_dir: Path, accelerator) -> dict:
    """Stage 1, from the start or from the VAE-stage checkpoint ``ckpt``. Writes a diffusers AutoencoderKL folder to
    ``out_dir`` (atomically, from the main process) and returns stats."""
    run_dir = cfg.out / "vae_run"
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    vae = cfg.model.vae.build()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    objective = VaeObjective(cfg, accelerator, vae)
    leg = Leg(run_dir=run_dir, desc="train vae", steps=cfg.vae_steps, lr_warmup_steps=50,
              checkpoint_every=cfg.checkpoint_every, log_every=50, grad_clip=cfg.grad_clip,
              checkpoint_state=run_record(command="train-base", stage="vae"))
    seconds = run_leg(leg, objective, opt, accelerator, ckpt)
    vae, data = objective.vae, objective.data
    if not accelerator.is_main_process:  # the main process measures and writes the VAE
        accelerator.wait_for_everyone()
        return {}
    # latent scaling so that scaled latents have unit variance (SD's 0.18215, measured here)
    vae.eval()
    with torch.no_grad():
        images, _, _ = data.batch(10_000_000, cfg.vae_stats_samples)
        std = vae.encode(images).latent_dist.mean.float().std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    with torch.no_grad():
        if isinstance(data, ImageSet) and len(data.validation_rows) >= 2:  # held-out images
            images = data.images(data.validation_rows[: max(2, cfg.vae_stats_samples // 2)])
        else:
            images, _, _ = data.batch(20_000_000, max(2, cfg.vae_stats_samples // 2))
        recon = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
        psnr = (10 * torch.log10(4.0 / F.mse_loss(recon, images))).item()
    with atomic_dir(out_dir, force=True) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        from mobilediff.loading import drop_load_paths

        drop_load_paths(tmp)
    accelerator.wait_for_everyone()  # stage 2 reads it on every process
    return {"vae_steps": cfg.vae_steps, "vae_seconds": seconds, "vae_recon_psnr_db": psnr,
            "scaling_factor": 1.0 / std}


# ---------------------------------------------------------------------------------------------- stage 2: denoiser


def _load_initial(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """Load ``weights`` into ``model``, allowing whole attention blocks that the source lacks (a UNet that gained
    cross-attention at a new resolution). Those start as the identity (zero output projection, the block's
    residual passes through), so the model starts as the function it was. Returns the names of the new blocks."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    missing, unexpected = model.load_state_dict(weights, strict=False)
    new = [name for name, m in model.named_modules() if isinstance(m, Transformer2DModel)
           and all(f"{name}.{k}" in missing for k, _ in m.named_parameters())]
    covered = {f"{name}.{k}" for name in new for k in model.get_submodule(name).state_dict()}
    rest = sorted(set(missing) - covered)
    if unexpected or rest:
        raise MobilediffError(f"--init-from weights do not fit the model: missing {rest[:3]}, unexpected {sorted(unexpected)[:3]}")
    for name in new:
        proj = model.get_submodule(name).proj_out
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    return new


def _denoiser_files(path: Path) -> dict[str, Path] | None:
    """The weight files a pipeline folder's denoiser and text encoder load from, by checkpoint key prefix (None when
    ``path`` is not such a folder)."""
    from mobilediff.io import shared_components

    te = shared_components(path).get("text_encoder", path / "text_encoder") / "model.safetensors"
    for name in ("unet", "transformer"):
        net = path / name / "diffusion_pytorch_model.safetensors"
        if net.is_file() and te.is_file():
            return {name: net, "text_encoder": te}
    return None


def _initial_weights(path: Path) -> dict[str, torch.Tensor]:
    """Denoiser weights from a training checkpoint folder or from a pipeline folder (unet/ or transformer/, and
    text_encoder/)."""
    if (path / "denoiser.safetensors").is_file():
        return load_tensors(path / "denoiser.safetensors")
    files = _denoiser_files(path)
    if files is None:
        raise MobilediffError(f"--init-from {path}: neither a checkpoint (denoiser.safetensors) nor a pipeline folder "
                              f"(unet/ or transformer/ and text_encoder/ in safetensors)")
    # a packed model's weights may be stored in fp16: training starts from them in fp32
    # without the text encoder's ``text_model.`` prefix (transformers 5 keys, as a checkpoint holds them)
    return {f"{prefix}.{k.removeprefix('text_model.')}": v.float() for prefix, file in files.items()
            for k, v in load_tensors(file).items()}


def _text_encoder_weights(path: Path) -> dict[str, torch.Tensor]:
    """Text-encoder weights of a pipeline folder, without the ``text_model.`` prefix (transformers 5 keys), whichever
    layout the file was written in."""
    file = path / "text_encoder" / "model.safetensors"
    if not file.is_file():
        raise MobilediffError(f"--text-encoder-from {path}: no text_encoder/model.safetensors (not a pipeline folder)")
    return {k.removeprefix("text_model."): v for k, v in load_tensors(file).items()}


def _tokenizer(cfg: TrainBaseConfig):
    from transformers import CLIPTokenizer

    from mobilediff.loading import DEFAULT_MODEL_DIR

    return CLIPTokenizer.from_pretrained(str(cfg.tokenizer_dir or DEFAULT_MODEL_DIR / "tokenizer"))


def _sample_timesteps(n: int, num_train_timesteps: int, bias_range: tuple[int, int], multiplier: float,
                      g: torch.Generator) -> torch.Tensor:
    """n training timesteps: uniform, or with [begin, end) drawn ``multiplier`` times as often as the rest."""
    if multiplier == 1.0:
        return torch.randint(0, num_train_timesteps, (n,), generator=g)  # the draw of every run before the bias
    weights = torch.ones(num_train_timesteps)
    weights[bias_range[0]:bias_range[1]] = multiplier
    return torch.multinomial(weights, n, replacement=True, generator=g)


def _small_object_cells(labels_shape: torch.Tensor, labels_size: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) 1 where a latent pixel lies in a grid cell that holds a small shape (shapes stay in their cell)."""
    h, w = hw
    rows = ((torch.arange(h) + 0.5) / h * GRID).long()
    cols = ((torch.arange(w) + 0.5) / w * GRID).long()
    cell = rows[:, None] * GRID + cols[None, :]  # (h, w)
    small = (labels_shape > 0) & (labels_size == 0)  # (B, 9)
    return small[:, cell].unsqueeze(1).float()


def _object_fraction(images: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) fraction of each latent pixel's image patch covered by shapes (pixel (0, 0) is background)."""
    is_object = ((images - images[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.1).float()
    return F.adaptive_avg_pool2d(is_object, latent_hw)


def image_size(cfg: TrainBaseConfig) -> tuple[int, int]:
    """(H, W) of the images the run trains on: the shapes domain's resolution, or the model's VAE sample size."""
    if not cfg.source.given:
        return cfg.data.resolution, cfg.data.resolution
    side = cfg.model.vae.sample_size
    return (side, side) if isinstance(side, int) else tuple(side)


def training_images(cfg: TrainBaseConfig, seed: int, show: bool = True):
    """What the run draws its images from: the shapes domain (seeded by ``seed``) or the user's captioned images."""
    if not cfg.source.given:
        return ShapesDataset(seed=seed, config=cfg.data)
    from mobilediff.sources import load_images

    return load_images(cfg.source, image_size(cfg), tokenizer=_tokenizer(cfg), seed=seed, show_progress=show,
                       warn=None if show else (lambda msg: None))


def encode_batch(vae, tokenizer, images: torch.Tensor, captions: list[str], scenes, autocast) -> dict[str, torch.Tensor]:
    """Latents (B, c, h, w) scaled by the VAE's factor, token ids (B, L), the fraction of each latent pixel covered
    by shapes (B, 1, h, w; zero for data without ground truth) and, for the shapes domain, the scene labels."""
    with torch.no_grad(), autocast():
        latents = vae.encode(images).latent_dist.mean.float() * vae.config.scaling_factor
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    if scenes is None:
        return {"latents": latents, "mask": torch.zeros_like(latents[:, :1]), "ids": ids}
    return {"latents": latents, "mask": _object_fraction(images, latents.shape[-2:]), "ids": ids,
            **{f"label.{k}": v for k, v in labels_tensor(scenes).items()}}


def _encode(vae, tokenizer, data, first: int, n: int, autocast) -> dict[str, torch.Tensor]:
    return encode_batch(vae, tokenizer, *data.batch(first, n), autocast)


def latent_cache(vae, vae_sha256: str, tokenizer, data, n: int, path: Path, autocast, show: bool,
                 shapes: ShapesConfig | None = None) -> dict[str, torch.Tensor]:
    """Examples of ``data`` encoded once by ``vae`` (whose weights hash to ``vae_sha256``), stored at ``path``
    (safetensors) and reused while the VAE, the data and the size are the same.

    The shapes domain (``data`` a ShapesDataset with settings ``shapes``) gives samples [0, n); a user's ImageSet gives
    every training image once, in row order (``n`` is ignored: the cache is the data set)."""
    from tqdm.auto import tqdm

    from mobilediff.io import save_tensors

    if isinstance(data, ImageSet):
        rows = data.train_rows
        key = {"n": len(rows), "data": data.fingerprint, "split": data.validation.tolist().count(True)}
    else:
        rows = None
        key = {"n": n, "data": asdict(shapes), "seed": data.seed}
    key = json.dumps({**key, "vae": vae_sha256, "scaling_factor": vae.config.scaling_factor}, sort_keys=True,
                     default=str)
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return load_tensors(path)
    parts, chunk = [], 256
    total = n if rows is None else len(rows)
    for first in tqdm(range(0, total, chunk), desc="encode latent cache", disable=not show):
        if rows is None:
            parts.append(_encode(vae, tokenizer, data, first, min(chunk, total - first), autocast))
        else:
            part = rows[first:first + chunk]
            parts.append(encode_batch(vae, tokenizer, data.images(part), [data.captions[r] for r in part], None,
                                      autocast))
    save_tensors({k: torch.cat([p[k] for p in parts]) for k in parts[0]}, path, metadata={"key": key})
    # train from what was saved, exactly as a resumed run will (same tensors, same key order)
    return load_tensors(path)




class DenoiserObjective:
    """Stage 2's loss: the v-prediction loss of text encoder + UNet on frozen-VAE latents (object-weighted per latent
    pixel, min-SNR-gamma optional), or the flow-matching velocity loss (``objective`` "flow"), caption dropout, the auxiliary caption-parsing loss, and the EMA of the weights."""

    log_fields = {"stage": "denoiser"}
    clip = "denoiser"

    def __init__(self, cfg: TrainBaseConfig, accelerator, model: Denoiser, head: SceneHead, noise_scheduler,
                 cache: dict[str, torch.Tensor] | None, encode, empty_ids: torch.Tensor):
        self.cfg, self.accelerator, self.model, self.head = cfg, accelerator, model, head
        self.models = {"denoiser": model, "scene_head": head}
        self.noise_scheduler, self.cache, self.encode, self.empty_ids = noise_scheduler, cache, encode, empty_ids
        self.ema = EMA.of(model, cfg.ema_decay)
        self.rows = process_rows(cfg.batch_size, accelerator)
        self.flow = cfg.model.objective == "flow"
        alphas = noise_scheduler.alphas_cumprod
        self.snr_all = alphas / (1 - alphas)

    def checkpointed(self) -> dict:
        return {"denoiser": self.model, "denoiser.ema": self.ema, "scene_head": self.head}

    def after_resume(self) -> None:
        if self.cfg.freeze_text_encoder:
            # the averaged text encoder is the one a pipeline of this run holds: train against exactly that one
            with torch.no_grad():
                for k, v in self.model.text_encoder.state_dict().items():
                    v.copy_(self.ema.shadow["text_encoder." + k])
            # no parameter of it requires grad, so autograd records nothing for it and the optimizer skips it
            self.model.text_encoder.requires_grad_(False).eval()

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        cfg, acc, rows, batch_size = self.cfg, self.accelerator, self.rows, self.cfg.batch_size
        # every draw is for the whole global batch, of which this process keeps its rows
        g = torch.Generator().manual_seed((cfg.seed + 1) * 1_000_003 + step * 7919)
        if self.cache is None:
            batch = self.encode(step * batch_size + rows.start, rows.stop - rows.start)
        else:
            idx = torch.randint(0, len(self.cache["latents"]), (batch_size,), generator=g)[rows]
            batch = {k: v[idx] for k, v in self.cache.items()}
        latents, ids = batch["latents"], batch["ids"]  # (b, 4, 16, 16), (b, 77)
        drop_global = torch.rand(batch_size, generator=g) < cfg.caption_dropout
        drop = drop_global[rows]
        ids = torch.where(drop[:, None], self.empty_ids, ids)
        noise = torch.randn((batch_size, *latents.shape[1:]), generator=g)[rows]
        t = _sample_timesteps(batch_size, self.noise_scheduler.config.num_train_timesteps, cfg.timestep_bias_range,
                              cfg.timestep_bias_multiplier, g)[rows]
        if self.flow:
            # flow matching (rectified flow): the timestep's point s in (0, 1] of the straight path from the latent
            # to the noise, and the path's velocity as the target (unweighted, as SD3 and SANA train it)
            T = self.cfg.model.flow.num_train_timesteps
            s = (t.float() + 1) / T
            noisy = (1 - s)[:, None, None, None] * latents + s[:, None, None, None] * noise
            target, t = noise - latents, s * T
        else:
            noisy = self.noise_scheduler.add_noise(latents, noise, t)
            target = self.noise_scheduler.get_velocity(latents, noise, t)
        with acc.autocast():
            pred, pooled = self.models["denoiser"](ids, noisy, t)
        pred = pred.float()
        if self.flow:
            w = torch.ones(len(t))
        else:
            # v-loss = (snr + 1) * x0-loss; min-SNR-gamma (Hang et al. 2023) re-weights the x0 error to min(snr, gamma)
            snr = self.snr_all[t]
            w = torch.clamp(snr, max=cfg.min_snr_gamma) / (snr + 1) if cfg.min_snr_gamma > 0 else torch.ones_like(snr)
        pix = 1.0 + cfg.object_weight * batch["mask"]
        if cfg.small_object_weight > 0:
            small = _small_object_cells(batch["label.shape"], batch["label.size"], latents.shape[-2:])
            pix = pix + cfg.small_object_weight * batch["mask"] * small
        err = (F.mse_loss(pred, target, reduction="none") * pix).mean(dim=(1, 2, 3)) / pix.mean(dim=(1, 2, 3))
        loss = (err * w).mean()
        if cfg.text_aux_weight > 0 and not cfg.freeze_text_encoder and not drop_global.all() and "label.shape" in batch:
            # every process calls the head whenever one does (its DDP gradient sync is a collective); a process
            # whose own rows were all dropped calls it on them at weight 0
            kept, weight = (~drop, cfg.text_aux_weight) if not drop.all() else (drop, 0.0)
            labels = {k[len("label."):]: v[kept] for k, v in batch.items() if k.startswith("label.")}
            loss = loss + weight * self.models["scene_head"](pooled[kept], labels)
        return loss, {}

    def after_step(self, step: int) -> None:
        self.ema.update(self.accelerator.unwrap_model(self.models["denoiser"]), step,
                        skip="text_encoder." if self.cfg.freeze_text_encoder else None)


def train_denoiser(cfg: TrainBaseConfig, ckpt: Checkpoint | None, vae_dir: Path,
                   accelerator) -> tuple[dict, Denoiser]:
    """Stage 2, from the start or from the denoiser-stage checkpoint ``ckpt``. Returns stats and the EMA text encoder
    + UNet."""
    from diffusers import AutoencoderKL

    run_dir = cfg.out / "unet_run"
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval().requires_grad_(False)
    tokenizer = _tokenizer(cfg)
    torch.manual_seed(cfg.seed + 1)
    model = Denoiser(cfg.model.text_encoder.build(), cfg.model.build_denoiser())
    if cfg.init_from is not None:
        weights = _initial_weights(source_dir(cfg.init_from))
        if any(k.startswith("text_model.") for k in model.text_encoder.state_dict()):  # transformers 4.x layout
            weights = {(f"text_encoder.text_model.{k[len('text_encoder.'):]}" if k.startswith("text_encoder.") and
                        not k.startswith("text_encoder.text_model.") else k): v for k, v in weights.items()}
        new = _load_initial(model, weights)
        if new and accelerator.is_main_process:
            print(f"init-from: new attention blocks start as the identity: {', '.join(new)}")
    if cfg.text_encoder_from is not None:
        weights = _text_encoder_weights(source_dir(cfg.text_encoder_from))
        if any(k.startswith("text_model.") for k in model.text_encoder.state_dict()):  # transformers 4.x layout
            weights = {f"text_model.{k}": v for k, v in weights.items()}
        try:
            model.text_encoder.load_state_dict(weights)
        except RuntimeError as e:
            raise MobilediffError(f"--text-encoder-from {cfg.text_encoder_from}: weights do not fit the text encoder "
                                  f"({str(e).splitlines()[0]})") from None
    head = SceneHead(cfg.model.text_encoder.hidden_size)
    noise_scheduler = cfg.model.scheduler.build()
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=cfg.lr, weight_decay=0.01)
    data = training_images(cfg, cfg.seed + 1, show=False)
    cache = None
    if cfg.latent_cache > 0 or isinstance(data, ImageSet):  # a user's images are always encoded once
        with accelerator.main_process_first():  # the main process encodes and writes it, the others then read it
            cache = latent_cache(vae, file_sha256(vae_dir / "diffusion_pytorch_model.safetensors"), tokenizer, data,
                                 cfg.latent_cache, run_dir / "latent_cache.safetensors", accelerator.autocast,
                                 accelerator.is_main_process, shapes=cfg.data)
    empty_ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                          return_tensors="pt").input_ids

    def encode(first: int, n: int) -> dict[str, torch.Tensor]:
        return _encode(vae, tokenizer, data, first, n, accelerator.autocast)

    objective = DenoiserObjective(cfg, accelerator, model, head, noise_scheduler, cache, encode, empty_ids)
    leg = Leg(run_dir=run_dir, desc="train denoiser", steps=cfg.unet_steps, lr_warmup_steps=cfg.warmup_steps,
              checkpoint_every=cfg.checkpoint_every, log_every=50, grad_clip=cfg.grad_clip,
              checkpoint_state=run_record(command="train-base", stage="denoiser", objective=cfg.model.objective))
    seconds = run_leg(leg, objective, opt, accelerator, ckpt)
    final = Denoiser(cfg.model.text_encoder.build(), cfg.model.build_denoiser())
    final.load_state_dict(objective.ema.shadow)
    return {"unet_steps": cfg.unet_steps, "unet_seconds": seconds}, final


def train_base(cfg: TrainBaseConfig, resume: str | None = None, force: bool = False, command: str = "") -> Path | None:
    """Run both stages and write the pipeline to ``<out>/model`` atomically. Returns that path (None for a dry run,
    which prints the data report and writes nothing).

    ``resume``: "latest" (the newest checkpoint of each stage in ``out``), or a checkpoint folder of either stage
    (:func:`_resume_plan`): of this run folder (continued in place) or of another one, continued in ``out`` as a new
    run folder. ``out`` is locked for the whole run (a second command writing it fails at once).

    Raises MobilediffError, before anything is written, if ``out`` exists without ``resume``/``force``, another
    process writes it, or the checkpoint cannot be continued by this run; on a non-finite loss.
    """
    out = Path(cfg.out)
    begin, end = cfg.timestep_bias_range
    if not 0 <= begin < end <= cfg.model.scheduler.num_train_timesteps:
        raise MobilediffError(f"--timestep-bias-range {begin} {end}: need 0 <= BEGIN < END <= "
                              f"{cfg.model.scheduler.num_train_timesteps} (the training timesteps)")
    if cfg.dry_run:  # the data report, nothing written (decoded images do land in the cache folder)
        if not cfg.source.given:
            print(f"data: the shapes domain (procedural, unlimited), {cfg.data.resolution}x{cfg.data.resolution}")
        else:
            print(training_images(cfg, cfg.seed).report.text())
        return None
    accelerator = make_accelerator(cfg.mixed_precision)
    process_rows(cfg.vae_batch_size, accelerator, "--vae-batch-size")  # refuse batches that do not split over the
    process_rows(cfg.batch_size, accelerator)  # processes, before any work
    refuse_existing(cfg.out, resume, force)  # (again under the lock: OUT may appear meanwhile)
    with run_folder_lock(out, accelerator):  # a second command writing OUT fails at once
        return _train_base(cfg, resume, force, command, accelerator)


def _train_base(cfg: TrainBaseConfig, resume: str | None, force: bool, command: str, accelerator) -> Path:
    from diffusers import AutoencoderKL

    out = Path(cfg.out)
    existed = out.exists()
    refuse_existing(out, resume, force)
    _check_sources(cfg)
    plan = _resume_plan(cfg, resume, force)  # everything the run reads is checked before anything is written
    stats = plan.stats
    if cfg.source.given:  # the user's images are read (and any unusable one refused under --strict) before OUT changes
        stats["data"] = report_dict(training_images(cfg, cfg.seed, show=accelerator.is_main_process).report)
    vae_dir = out / "vae"
    record = out / "training.json"
    vae_done = plan.vae_done
    prepare_run_folder(out, plan.keep, existed, accelerator)
    main = accelerator.is_main_process
    vae_source = cfg.vae_from if cfg.vae_from is not None else plan.vae_source
    if not vae_done and vae_source is not None:
        if main:
            src = source_dir(vae_source) / "vae"
            with atomic_dir(vae_dir, force=True) as tmp:
                for f in src.iterdir():
                    shutil.copy2(f, tmp / f.name)
        if cfg.vae_from is not None:
            stats["vae_from"] = str(cfg.vae_from)
        vae_done = True
    accelerator.wait_for_everyone()
    if not vae_done:
        stats.update(train_vae(cfg, plan.vae_checkpoint, vae_dir, accelerator))
        if main:
            atomic_write_json(record, {"stats": stats})
    dstats, den = train_denoiser(cfg, plan.denoiser_checkpoint, vae_dir, accelerator)
    stats.update(dstats)
    if not main:
        return out / "model"
    pipe = _pipeline(cfg, AutoencoderKL.from_pretrained(str(vae_dir)), den)
    info = {"command": command, "config": json.loads(json.dumps(asdict(cfg), default=str)), "stats": stats,
            **provenance()}
    atomic_write_json(record, info)
    with atomic_dir(out / "model", force=True) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        from mobilediff.loading import drop_load_paths

        drop_load_paths(tmp)
        # keep the CLIP BPE files (vocab.json, merges.txt, licence) that the apps read, not only tokenizer.json
        shutil.rmtree(tmp / "tokenizer")
        shutil.copytree(Path(pipe.tokenizer.name_or_path), tmp / "tokenizer")
        atomic_write_json(tmp / "training.json", info)
        atomic_write_bytes(tmp / "TRAINING.md", training_markdown(info).encode())
    return out / "model"


def _pipeline(cfg: TrainBaseConfig, vae, den: Denoiser):
    """The trained pipeline: a StableDiffusionPipeline around a UNet, a PixArtAlphaPipeline around a transformer
    (with this run's CLIP text encoder and tokenizer, which PixArt's pipeline runs at the tokenizer's length)."""
    from diffusers import PixArtAlphaPipeline, StableDiffusionPipeline

    common = dict(vae=vae, text_encoder=den.text_encoder, tokenizer=_tokenizer(cfg),
                  scheduler=cfg.model.build_scheduler())
    if den.kind == "transformer":
        return PixArtAlphaPipeline(transformer=den.transformer, **common)
    return StableDiffusionPipeline(unet=den.unet, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False, **common)


def source_dir(value) -> Path:
    """The folder of a --init-from / --text-encoder-from / --vae-from value: a named model ('default', see
    mobilediff.loading.resolve_model) or a path; the config keeps the value as given."""
    from mobilediff.loading import resolve_model

    return resolve_model(str(value))


RUN_ITEMS = ("training.json", "vae", "vae_run", "unet_run", "model")  # what a train-base run folder holds


def _check_sources(cfg: TrainBaseConfig) -> None:
    """Refuse --vae-from, --init-from and --text-encoder-from folders that do not hold what the run reads."""
    if cfg.vae_from is not None and not (source_dir(cfg.vae_from) / "vae" / "config.json").is_file():
        raise MobilediffError(f"--vae-from {cfg.vae_from}: no vae/config.json (not a pipeline folder)")
    if cfg.vae_from is not None:
        try:
            vae_class = json.loads((source_dir(cfg.vae_from) / "vae" / "config.json").read_text()).get("_class_name")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise MobilediffError(f"--vae-from {cfg.vae_from}: corrupt vae/config.json ({e})") from None
        if vae_class != "AutoencoderKL":
            raise MobilediffError(f"--vae-from {cfg.vae_from}: its VAE is an {vae_class}, not an AutoencoderKL (a tiny "
                                  f"decoder has no encoder to make the training latents)")
    if cfg.init_from is not None:
        path = source_dir(cfg.init_from)
        if not ((path / "denoiser.safetensors").is_file() or _denoiser_files(path) is not None):
            raise MobilediffError(f"--init-from {path}: neither a checkpoint (denoiser.safetensors) nor a pipeline "
                                  f"folder (unet/ or transformer/ and text_encoder/ in safetensors)")
    if cfg.text_encoder_from is not None and not (source_dir(cfg.text_encoder_from) / "text_encoder" / "model.safetensors").is_file():
        raise MobilediffError(f"--text-encoder-from {cfg.text_encoder_from}: no text_encoder/model.safetensors "
                              f"(not a pipeline folder)")


@dataclass
class ResumePlan:
    """Where each stage of a train-base run starts (:func:`_resume_plan`)."""

    keep: bool = False  # OUT is continued as it is (else it starts empty)
    vae_done: bool = False  # OUT/vae holds the finished VAE stage
    vae_checkpoint: Checkpoint | None = None  # the VAE stage continues from it
    denoiser_checkpoint: Checkpoint | None = None  # the denoiser stage continues from it
    vae_source: Path | None = None  # a folder whose vae/ is copied into OUT (the run of a denoiser checkpoint)
    stats: dict = field(default_factory=dict)  # what earlier sessions of the run recorded (training.json)


def _resume_plan(cfg: TrainBaseConfig, resume: str | None, force: bool) -> ResumePlan:
    """Check what ``--resume`` points at before anything is written, and where each stage starts.

    ``latest``: each stage from its newest checkpoint in OUT. A checkpoint folder is of the VAE stage (it holds
    vae.safetensors) or of the denoiser stage (denoiser.safetensors). Inside OUT it continues in place; a checkpoint
    of another run folder continues in OUT as a new run (an existing OUT is refused unless ``force``, which replaces
    it): a VAE-stage checkpoint trains the VAE on from it, then the denoiser from the start; a denoiser-stage one
    takes the VAE it was trained with (the ``vae/`` of its run folder, or ``--vae-from``) and the stats its run
    recorded, and trains the denoiser on from it. Either way the checkpoint must fit the architecture this run
    builds and lie within its steps (--vae-steps / --unet-steps); the other settings may differ (the run continues
    with them). Raises MobilediffError naming the folder or file."""
    from mobilediff.train.checkpoint import check_continues, check_fits, check_resume, inside, latest_checkpoint

    out = Path(cfg.out)
    plan = ResumePlan()
    ckpt = check_resume(out, resume, ("vae.safetensors", "denoiser.safetensors"), "train-base", RUN_ITEMS,
                        force=force)
    if resume is None:
        return plan
    if resume == "latest" or inside(ckpt.path, out):
        if out.exists() and any(out.iterdir()) and not any((out / item).exists() for item in RUN_ITEMS):
            raise MobilediffError(f"--resume: {out} is not a train-base run folder (it has none of "
                                  f"{', '.join(RUN_ITEMS)})")
        plan.keep = out.exists()
        plan.vae_done = (out / "vae" / "config.json").is_file()
        plan.stats = _recorded_stats(out)
        if resume == "latest":
            plan.vae_checkpoint = None if plan.vae_done else latest_checkpoint(out / "vae_run")
            plan.denoiser_checkpoint = latest_checkpoint(out / "unet_run")
        elif (ckpt.path / "vae.safetensors").is_file():
            if complete_checkpoints(out / "unet_run"):
                raise MobilediffError(f"checkpoint {ckpt.path} is of the VAE stage, and the denoiser stage of {out} "
                                      f"has begun on the VAE trained after it ({out / 'unet_run'}): continue it in a "
                                      f"new --out")
            plan.vae_done, plan.vae_checkpoint = False, ckpt
        else:
            if not plan.vae_done:
                raise MobilediffError(f"checkpoint {ckpt.path} is of the denoiser stage, but {out} holds no VAE "
                                      f"(vae/config.json)")
            plan.vae_checkpoint, plan.denoiser_checkpoint = None, ckpt
    elif (ckpt.path / "vae.safetensors").is_file():
        plan.vae_checkpoint = ckpt
    else:
        run = ckpt.path.parent.parent.parent  # <run>/unet_run/checkpoints/checkpoint-N
        if cfg.vae_from is None:
            if not (run / "vae" / "config.json").is_file():
                raise MobilediffError(f"checkpoint {ckpt.path} is of the denoiser stage, and the VAE it was trained "
                                      f"with is not in its run folder ({run / 'vae'}): pass --vae-from with the "
                                      f"folder that holds it")
            plan.vae_source, plan.stats = run, _recorded_stats(run)
        plan.denoiser_checkpoint = ckpt
    with torch.random.fork_rng(devices=[]):  # the shapes of the modules this run builds (its own seeds stay put)
        if plan.vae_checkpoint is not None:
            check_fits(plan.vae_checkpoint, {"vae": module_shapes(cfg.model.vae.build())})
            check_continues(plan.vae_checkpoint, {"command": "train-base", "stage": "vae"}, cfg.vae_steps,
                            f"--vae-steps {cfg.vae_steps}")
        if plan.denoiser_checkpoint is not None:
            denoiser = module_shapes(Denoiser(cfg.model.text_encoder.build(), cfg.model.build_denoiser()))
            head = module_shapes(SceneHead(cfg.model.text_encoder.hidden_size))
            check_fits(plan.denoiser_checkpoint, {"denoiser": denoiser, "denoiser.ema": denoiser, "scene_head": head})
            check_continues(plan.denoiser_checkpoint, {"command": "train-base", "stage": "denoiser",
                                                       "objective": cfg.model.objective},
                            cfg.unet_steps, f"--unet-steps {cfg.unet_steps}")
    return plan


def _recorded_stats(run: Path) -> dict:
    """The stats an earlier session of the run folder ``run`` recorded in its training.json (empty if none).
    Raises MobilediffError on a corrupt training.json."""
    record = run / "training.json"
    if not record.exists():
        return {}
    try:
        stats = json.loads(record.read_text()).get("stats", {})
        if not isinstance(stats, dict):
            raise ValueError("'stats' is not an object")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, ValueError) as e:
        raise MobilediffError(f"corrupt {record}: {e}") from None
    return stats


def _denoiser_label(config: dict) -> str:
    model = config.get("model", {})
    if model.get("backbone") == "dit":
        d = model["dit"]
        net = (f"Diffusion transformer (PixArt blocks: {d['num_layers']} x width {d['width']}, "
               f"{d['num_attention_heads']} heads, patch {d['patch_size']})")
    else:
        net = "UNet"
    if model.get("objective") == "flow":
        net += f", flow matching (shift {model.get('flow', {}).get('shift', 1.0):g})"
    return f"{net} (text encoder frozen)" if config.get("freeze_text_encoder") else f"Text encoder + {net}"


def training_markdown(info: dict) -> str:
    """A human-readable record of how a model was trained (written next to its weights)."""
    st, m, c = info["stats"], info["machine"], info["config"]
    if c.get("vae_from") or st.get("vae_from"):
        vae = f"- VAE: copied from {c.get('vae_from') or st['vae_from']} (not trained here)"
    else:
        vae = (f"- VAE: {st.get('vae_steps')} steps at batch {c['vae_batch_size']}, "
               f"{st.get('vae_seconds', 0) / 60:.1f} min; reconstruction PSNR "
               f"{st.get('vae_recon_psnr_db', float('nan')):.1f} dB on {c['vae_stats_samples'] // 2} fresh images; "
               f"latent scaling factor {st.get('scaling_factor', float('nan')):.4f}")
    return "\n".join([
        "# How this model was trained", "",
        f"Command: `{info['command']}`", "",
        vae,
        f"- {_denoiser_label(c)}: "
        f"{st.get('unet_steps')} steps at batch {c['batch_size']}, "
        f"{st.get('unet_seconds', 0) / 60:.1f} min (wall time spent in training steps, summed over resumed sessions)"
        + (f"; started from {c['init_from']}'s weights" if c.get("init_from") else ""),
        f"- Machine: {m['platform']}, {m['processor']}, {m['torch_threads']} torch threads, no accelerator",
        f"- Mixed precision: {c['mixed_precision']}; seed {c['seed']}", "",
        "Full configuration and library versions: training.json.", ""])
