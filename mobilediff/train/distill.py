"""`mobilediff distill`: few-step students of a Stable-Diffusion-family teacher, each method a loss run by the one
training loop (:mod:`mobilediff.train.loop`) over the arithmetic of :mod:`mobilediff.train.diffusion`.

Three methods, all trained on the teacher's own latents of shapes-domain samples (a latent cache encoded once
with the teacher's VAE), all with one denoiser call per sampling step (guidance is distilled in):

- ``lcm`` -- latent consistency distillation (Luo et al. 2023, as in diffusers' ``train_lcm_distill_sd``):
  a skipping-step DDIM solver on the teacher's guided prediction over a ``ddim_timesteps``-point grid, the
  guidance scale fed to the student through a guidance-scale embedding (``time_cond_proj_dim``, zero-initialised
  so the student starts as the teacher), an EMA target network, the consistency boundary-condition scalings
  (c_skip, c_out) and a pseudo-Huber loss. The student samples with ``LCMScheduler`` at any step count up to
  the grid size; it is written to ``OUT/model``.
- ``progressive`` -- progressive distillation (Salimans & Ho 2022) with a CFG-aware target (the teacher's guided
  prediction, as SnapFusion does): a student initialised from its teacher learns to do in one DDIM step what the
  teacher does in two; rounds halve the step count from ``teacher_steps`` down to ``steps``, each round's student
  teaching the next. Every round's student is kept in ``OUT/steps-N`` and samples with the teacher's DDIM
  scheduler at N steps and guidance 1 (no CFG batch).
- ``slim`` -- block-removal knowledge distillation (BK-SDM, Kim et al. 2023): the student is the teacher's UNet with
  whole blocks removed (``remove``, :mod:`mobilediff.train.slim`), started from the teacher's remaining weights, and
  trained on the teacher's prediction (output distillation, x̂_0 error with truncated-SNR weighting as
  ``progressive``) plus the outputs of every down and up block (feature distillation, each stage's squared error
  relative to the teacher feature's mean square). It trains at the DDIM timesteps of ``steps`` steps (trailing
  spacing) and samples there at guidance 1: from a classifier-free-guided teacher the target is its guided
  prediction at ``guidance``; from a progressive student (whose plan must be DDIM at ``steps`` steps) its own
  conditional prediction. The student is written to ``OUT/model``.

Every global batch is drawn from a generator seeded by (seed, step): indices into the latent cache, then the noise,
timesteps and guidance scales of all its examples, of which each process keeps its own rows
(:func:`mobilediff.train.loop.process_rows`). So ``--resume latest`` continues exactly where a run stopped, and a run
over N processes (``accelerate launch``) trains on the same examples as one process; a progressive run's checkpoints
number its steps across rounds.
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mobilediff.card import distillation_record
from mobilediff.errors import MobilediffError
from mobilediff.sources import DataOptions
from mobilediff.io import atomic_dir, atomic_write_json
from mobilediff.train.diffusion import (LCM_TIMESTEP_SCALING, PREDICTION_TYPES, classifier_free_guidance,
                                        consistency_output, ddim_timesteps, guidance_embedding, lcm_solver_grid,
                                        pred_original_and_epsilon, progressive_target, skipping_step_solver)
from mobilediff.train.loop import (EMA, Leg, continues_in_place, make_accelerator, module_shapes,
                                   prepare_run_folder, process_rows, provenance, refuse_existing, run_folder_lock,
                                   run_leg, state_sha256)

METHODS = ("lcm", "progressive", "slim", "lora", "lcm-lora")
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the UNet's attention projections (as LoRA for SD is trained)
# lcm-lora: every linear layer of the UNet's blocks, as LCM-LoRA adapts more than attention (its convolutions stay
# out: run-time adapter slots hold linear layers)
LCM_LORA_TARGETS = LORA_TARGETS + ("ff.net.0.proj", "ff.net.2", "time_emb_proj")


@dataclass
class DistillConfig:
    """Settings of `mobilediff distill`; the defaults are what distilled the committed students."""

    teacher: str  # pipeline folder or "default"
    method: str  # "lcm" | "progressive"
    steps: int  # lcm: the step count recorded as the student's default; progressive: the last round's step count
    out: Path  # run folder: checkpoints, log, latent cache, and the student pipeline(s)
    max_train_steps: int = 1000  # lcm: optimizer steps in all; progressive: optimizer steps per halving round
    batch_size: int = 64
    lr: float = 1e-4
    warmup_steps: int = 50
    seed: int = 0
    checkpoint_every: int = 100
    mixed_precision: str = "fp32"
    latent_cache: int = 8192  # shapes-domain samples encoded once with the teacher's VAE
    object_weight: float = 4.0  # extra loss weight on latent pixels covered by shapes (as in train-base)
    grad_clip: float = 1.0
    # LCM
    ddim_timesteps: int = 50  # the skipping-step solver's grid; the student's LCMScheduler original_inference_steps
    guidance_min: float = 2.0  # guidance scales drawn per example (pipeline convention: 1 = no guidance)
    guidance_max: float = 6.0
    target_ema: float = 0.95  # EMA decay of the target network
    huber_c: float = 0.001
    time_cond_proj_dim: int = 256  # guidance-embedding width (as in LCM-SD)
    init_student: str | None = None  # an earlier LCM student of the same architecture to start from (warm start)
    # progressive
    teacher_steps: int = 16  # the teacher's DDIM step count that the first round halves
    guidance: float = 3.5  # guidance scale of the teacher's target (progressive), and the LCM student's default
    # lora
    lora_rank: int = 4  # rank of the adapter's matrices (its alpha equals it: scale 1)
    # slim
    # blocks removed from the teacher's UNet (mobilediff.train.slim) or transformer (block-K: mobilediff.train.
    # flow_distill); None: the UNet's mid block and highest-resolution attention, or the transformer's middle third
    remove: str | None = None
    feature_weight: float = 1.0  # weight of the feature-distillation term against the output term
    # the data: none given = the shapes domain; each method's needs: mobilediff.sources.NEEDS
    source: DataOptions = field(default_factory=DataOptions)


# ---------------------------------------------------------------------------------------------- validation


def progressive_rounds(teacher_steps: int, steps: int) -> list[int]:
    """Student step counts of the halving rounds, e.g. (16, 1) -> [8, 4, 2, 1]; raises if ``steps`` is not
    ``teacher_steps / 2^k`` for some k >= 1."""
    rounds, n = [], teacher_steps
    while n > steps and n % 2 == 0:
        n //= 2
        rounds.append(n)
    if steps < 1 or not rounds or rounds[-1] != steps:
        valid = []
        n = teacher_steps
        while n % 2 == 0:
            n //= 2
            valid.append(n)
        raise MobilediffError(
            f"progressive distillation halves the teacher's {teacher_steps} steps: --steps must be one of "
            f"{', '.join(map(str, valid)) or '(none: --teacher-steps is odd)'}, got {steps}")
    return rounds


UNET_REMOVAL = "mid,attention-0"  # slim's default on a UNet teacher


def unet_removal(cfg: DistillConfig) -> list[str]:
    """The UNet blocks a slim run removes (``--remove``, default :data:`UNET_REMOVAL`)."""
    from mobilediff.train.slim import parse_removal

    if cfg.remove is not None and cfg.remove.strip().startswith("block-"):
        raise MobilediffError(f"--remove {cfg.remove}: block-K names a diffusion transformer's blocks; the teacher is "
                              f"a UNet (remove mid, attention-K)")
    return parse_removal(cfg.remove or UNET_REMOVAL)


def validate(cfg: DistillConfig) -> None:
    """Every impossible option is refused here, before anything is read or written."""
    if cfg.method not in METHODS:
        raise MobilediffError(f"unknown distillation method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
    if cfg.method == "lcm-lora":
        if cfg.ddim_timesteps < 1 or 1000 % cfg.ddim_timesteps:
            raise MobilediffError(f"--ddim-timesteps must divide 1000, got {cfg.ddim_timesteps}")
        if not 1 <= cfg.steps <= cfg.ddim_timesteps:
            raise MobilediffError(f"an LCM-LoRA samples at 1..{cfg.ddim_timesteps} steps (its solver grid), "
                                  f"got --steps {cfg.steps}")
        if cfg.guidance < 1:
            raise MobilediffError(f"--guidance (the teacher's guidance the adapter learns) must be >= 1, got "
                                  f"{cfg.guidance}")
    if cfg.method in ("lora", "lcm-lora") and cfg.lora_rank < 1:
        raise MobilediffError(f"--lora-rank must be >= 1, got {cfg.lora_rank}")
    if cfg.method == "lcm":
        if cfg.ddim_timesteps < 1 or 1000 % cfg.ddim_timesteps:
            raise MobilediffError(f"--ddim-timesteps must divide 1000, got {cfg.ddim_timesteps}")
        if not 1 <= cfg.steps <= cfg.ddim_timesteps:
            raise MobilediffError(f"an LCM student samples at 1..{cfg.ddim_timesteps} steps (its solver grid), "
                                  f"got --steps {cfg.steps}")
        if not 1 <= cfg.guidance_min <= cfg.guidance_max:
            raise MobilediffError(f"--guidance-range needs 1 <= MIN <= MAX, got {cfg.guidance_min:g} {cfg.guidance_max:g}")
        if not cfg.guidance_min <= cfg.guidance <= cfg.guidance_max:
            raise MobilediffError(f"--guidance {cfg.guidance:g} (the student's default) is outside the trained "
                                  f"--guidance-range {cfg.guidance_min:g} {cfg.guidance_max:g}")
        if cfg.init_student is not None:
            unet_cfg = Path(cfg.init_student) / "unet" / "config.json"
            if not unet_cfg.is_file():
                raise MobilediffError(f"--init-student: no student pipeline (unet/config.json) in {cfg.init_student}")
            dim = json.loads(unet_cfg.read_text()).get("time_cond_proj_dim")
            if dim != cfg.time_cond_proj_dim:
                raise MobilediffError(f"--init-student {cfg.init_student}: not an LCM student with time_cond_proj_dim "
                                      f"{cfg.time_cond_proj_dim} (has {dim})")
    elif cfg.init_student is not None:
        raise MobilediffError("--init-student is for --method lcm (progressive rounds start from their teacher)")
    if cfg.method == "slim":
        from mobilediff.train.slim import parse_removal

        if cfg.remove is not None and not cfg.remove.strip().startswith("block-"):
            parse_removal(cfg.remove)  # a transformer's block-K list is checked against the teacher's blocks
        if not 1 <= cfg.steps <= 1000:
            raise MobilediffError(f"--steps: a slim student samples at 1..1000 DDIM steps, got {cfg.steps}")
        if not cfg.feature_weight >= 0:
            raise MobilediffError(f"--feature-weight must be >= 0, got {cfg.feature_weight}")
    if cfg.source.given:
        from mobilediff.sources import check_needs

        check_needs(cfg.source, f"distill:{cfg.method}")
    if cfg.method in ("progressive", "slim"):
        if cfg.method == "progressive":
            progressive_rounds(cfg.teacher_steps, cfg.steps)
        if cfg.guidance < 1:
            raise MobilediffError(f"--guidance must be >= 1 (1 = the teacher without guidance), got {cfg.guidance}")
    for name in ("max_train_steps", "batch_size", "checkpoint_every", "latent_cache"):
        if getattr(cfg, name) < 1:
            raise MobilediffError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")


def load_teacher(teacher: str, flow: bool = False):
    """The teacher pipeline (checked, safetensors only); refuses students and unsupported classes. ``flow``: a
    flow-matching PixArt pipeline is taken too (what `distill` runs with mobilediff.train.flow_distill)."""
    from diffusers import UNet2DConditionModel

    from mobilediff.loading import load_pipeline

    from mobilediff.decoder import RECORD, vae_folder
    from mobilediff.loading import resolve_model

    if (vae_folder(resolve_model(teacher)) / RECORD).is_file():
        raise MobilediffError(f"the teacher {teacher} holds a tiny decoder (mobilediff distill-decoder), whose encoder "
                              f"is empty: distil from the model it was made for, whose VAE encodes the training images")
    pipe = load_pipeline(teacher, transformers=flow)
    from mobilediff import transformer_family
    from mobilediff.samplers import is_flow

    if transformer_family.is_transformer_pipeline(pipe):
        if not is_flow(pipe.scheduler.config):
            raise MobilediffError(f"the teacher {teacher} is a {type(pipe).__name__} without a flow-matching scheduler: "
                                  f"a diffusion transformer distils with velocity targets from a flow-matching "
                                  f"teacher (mobilediff train-base --backbone dit --objective flow)")
        return pipe
    if not isinstance(pipe.unet, UNet2DConditionModel):
        raise MobilediffError(f"unsupported denoiser {type(pipe.unet).__name__}: expected UNet2DConditionModel")
    if pipe.unet.config.time_cond_proj_dim is not None:
        raise MobilediffError("the teacher already takes a guidance embedding (an LCM student): distil from its "
                              "classifier-free-guided teacher instead")
    pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise MobilediffError(f"unsupported prediction type {pred!r} in the teacher's scheduler config")
    return pipe


def make_lcm_student(teacher_unet, time_cond_proj_dim: int):
    """The teacher's UNet with a guidance-embedding input whose projection starts at zero (same function)."""
    from diffusers import UNet2DConditionModel

    cfg = dict(teacher_unet.config)
    cfg["time_cond_proj_dim"] = time_cond_proj_dim
    student = UNet2DConditionModel.from_config(cfg)
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if unexpected or any(not k.startswith("time_embedding.cond_proj") for k in missing):
        raise MobilediffError(f"could not map the teacher's UNet onto the student: missing {missing}, unexpected {unexpected}")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student


def load_init_student(student, path: str) -> None:
    """Warm start: copy an earlier LCM student's UNet weights (safetensors) into ``student``; the architectures,
    guidance-embedding width included, must match exactly."""
    from safetensors.torch import load_file

    unet_dir = Path(path) / "unet"
    cfg = json.loads((unet_dir / "config.json").read_text())
    if cfg.get("time_cond_proj_dim") != student.config.time_cond_proj_dim:
        raise MobilediffError(f"--init-student {path}: not an LCM student with time_cond_proj_dim "
                              f"{student.config.time_cond_proj_dim} (has {cfg.get('time_cond_proj_dim')})")
    files = sorted(unet_dir.glob("*.safetensors"))
    if not files:
        raise MobilediffError(f"--init-student {path}: no safetensors weights in {unet_dir}")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = student.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise MobilediffError(f"--init-student {path}: architecture differs from the teacher's "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


# ---------------------------------------------------------------------------------------------- training


class DistillData:
    """What every method trains on: captions with the teacher's latents of their images, their text embeddings from
    the teacher's frozen text encoder, and the empty prompt's embedding.

    The latents come from the shapes domain (no data option: a latent cache encoded once with the teacher's VAE, in
    the run folder), from the user's images (--images / --wds: encoded once, cached by the data's and the VAE's
    sha256 in the cache folder), or are rendered by the teacher from the user's prompts (--synthesize N). With
    prompts alone there are no latents (``self.cache`` holds only ``ids``): the progressive objective then trains on
    its round teacher's own trajectories from pure noise."""

    def __init__(self, cfg: DistillConfig, teacher, accelerator):
        from mobilediff.data import ShapesConfig, ShapesDataset
        from mobilediff.decoder import vae_folder
        from mobilediff.loading import resolve_model
        from mobilediff.components import latent_size
        from mobilediff.train.base import latent_cache
        from mobilediff.train.loop import file_sha256

        self.cfg, self.teacher, self.accelerator = cfg, teacher, accelerator
        self.run_record: dict = {}  # the "run" entry of every checkpoint of the run (distill sets it)
        net = denoiser(teacher)
        self.latent_hw = latent_size(net.config)
        self.latent_channels = net.config.in_channels
        # a PixArt teacher's caption is masked after its first EOS (flow_distill.Caption: features and mask)
        self.masked = net is not getattr(teacher, "unet", None)
        size = teacher_image_size(teacher)
        vae_dir = vae_folder(resolve_model(cfg.teacher))  # a packed teacher borrows its VAE from its base
        vae_sha256 = file_sha256(vae_dir / "diffusion_pytorch_model.safetensors")
        source, show = cfg.source, accelerator.is_main_process
        self.report = None
        with accelerator.main_process_first():  # the main process encodes and writes it, the others then read it
            if not source.given:
                data_cfg = ShapesConfig(resolution=size[0], supersample=2 if size[0] <= 32 else 4)
                data = ShapesDataset(seed=cfg.seed + 2, config=data_cfg)
                self.cache = latent_cache(teacher.vae, vae_sha256, teacher.tokenizer, data, cfg.latent_cache,
                                          Path(cfg.out) / "latent_cache.safetensors", accelerator.autocast, show,
                                          shapes=data_cfg)
            elif source.has_images:
                from mobilediff.sources import default_cache_dir, load_images

                # skips and truncations were reported when the data was first read (preflight_data)
                images = load_images(source, size, teacher.tokenizer, seed=cfg.seed + 2, show_progress=False,
                                     warn=lambda m: None)
                self.report = images.report
                folder = Path(source.cache_dir or default_cache_dir()) / "latents"
                self.cache = latent_cache(teacher.vae, vae_sha256, teacher.tokenizer, images, 0,
                                          folder / f"{images.fingerprint}-{vae_sha256[:16]}.safetensors",
                                          accelerator.autocast, show)
            else:
                from mobilediff.sources import load_prompts

                prompts = load_prompts(source, warn=lambda m: None)
                ids = _token_ids(teacher.tokenizer, prompts)
                if source.synthesize:
                    self.cache = synthesized_latents(cfg, teacher, prompts, show)
                else:
                    self.cache = {"ids": ids}
        tok = teacher.tokenizer
        empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        self.uncond = self.encode(empty)  # (1, 77, D), or its Caption
        self.rows = process_rows(cfg.batch_size, accelerator)  # this process's rows of every global batch

    def draw(self, sample, *shape) -> torch.Tensor:
        """This process's rows of a draw for the whole global batch: ``sample(size)`` is e.g.
        ``lambda size: torch.randn(size, generator=g)`` and ``shape`` the per-example shape."""
        return sample((self.cfg.batch_size, *shape))[self.rows]

    @property
    def has_latents(self) -> bool:
        return "latents" in self.cache

    def batch(self, step: int):
        """(generator, latents (b, 4, h, w) or None (prompts alone), object mask (b, 1, h, w), text embeddings
        (b, 77, D)) of this process's b rows of global step ``step``; the generator goes on to draw the step's noise
        and timesteps (with :meth:`draw`, so that every process draws the whole batch's numbers in the same order)."""
        g = torch.Generator().manual_seed((self.cfg.seed + 7) * 1_000_003 + step * 7919)
        idx = self.draw(lambda size: torch.randint(0, len(self.cache["ids"]), size, generator=g))
        cond = self.encode(self.cache["ids"][idx])
        if not self.has_latents:
            return g, None, torch.zeros(len(idx), 1, *self.latent_hw), cond
        return g, self.cache["latents"][idx], self.cache["mask"][idx], cond

    @torch.no_grad()
    def encode(self, ids: torch.Tensor):
        """The teacher's frozen text features of token ``ids`` (B, L): (B, L, D), or for a PixArt teacher a
        :class:`mobilediff.train.flow_distill.Caption` of them and the caption mask."""
        if not self.masked:
            return self.teacher.text_encoder(ids).last_hidden_state.float()
        from mobilediff.train.flow_distill import Caption
        from mobilediff.transformer_family import caption_mask

        mask = caption_mask(ids, self.teacher.text_encoder.config.eos_token_id)
        return Caption(self.teacher.text_encoder(ids, attention_mask=mask).last_hidden_state.float(), mask)

    def pixel_weight(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) loss weight per latent pixel: 1 + object_weight x the fraction of it covered by shapes."""
        return 1.0 + self.cfg.object_weight * mask


def denoiser(pipe):
    """A pipeline's denoiser: its UNet, or its diffusion transformer."""
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


def teacher_image_size(teacher) -> tuple[int, int]:
    """(H, W) of the teacher's images: its UNet's sample size (an int or a pair) times the VAE's downsampling."""
    from mobilediff.components import image_size

    return image_size(teacher)


def preflight_data(source: DataOptions, teacher, show: bool) -> None:
    """Read the user's data once (decoded images land in the cache) so that unusable data is refused before any
    output is written."""
    from mobilediff.sources import load_images, load_prompts

    quiet = None if show else (lambda m: None)
    if source.has_images:
        load_images(source, teacher_image_size(teacher), teacher.tokenizer, show_progress=show, warn=quiet)
    else:
        load_prompts(source, warn=quiet)


def _token_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def synthesized_latents(cfg: DistillConfig, teacher, prompts: list[str], show: bool) -> dict[str, torch.Tensor]:
    """``cfg.source.synthesize`` latents the teacher renders with its own default plan from the prompts (cycled),
    seeded per example; cached in the cache folder keyed by the prompts, the teacher's weights, the plan, N and the
    seed. The teacher's scheduler is left as it was."""
    import hashlib

    from tqdm.auto import tqdm

    from mobilediff.card import model_card
    from mobilediff.io import load_tensors, save_tensors
    from mobilediff.loading import resolve_model
    from mobilediff.sampling import generate
    from mobilediff.sources import default_cache_dir

    n = cfg.source.synthesize
    captions = [prompts[i % len(prompts)] for i in range(n)]
    seeds = [(cfg.seed + 11) * 1_000_003 + i for i in range(n)]
    model_dir = resolve_model(cfg.teacher)
    plan = model_card(teacher, model_dir, str(cfg.teacher)).plan
    unet_hash = hashlib.sha256()
    for k, v in sorted(denoiser(teacher).state_dict().items()):
        unet_hash.update(k.encode())
        unet_hash.update(v.detach().float().numpy().tobytes())
    key = json.dumps({"captions": hashlib.sha256("\n".join(captions).encode()).hexdigest(), "seeds": seeds[:1] + [n],
                      "unet": unet_hash.hexdigest(), "plan": [plan.sampler, plan.steps, plan.guidance]}, sort_keys=True)
    path = Path(cfg.source.cache_dir or default_cache_dir()) / "latents" / f"synth-{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return load_tensors(path)
    with tqdm(total=plan.steps * -(-n // 64), desc=f"synthesize latents ({plan.sampler} {plan.steps} steps)",
              disable=not show) as bar:
        latents = generate(teacher, captions, seeds, plan.steps, plan.sampler, plan.guidance,
                           progress=bar.update, latents_only=True)
    pool = {"latents": latents.float(), "mask": torch.zeros_like(latents[:, :1]),
            "ids": _token_ids(teacher.tokenizer, captions)}
    save_tensors(pool, path, metadata={"key": key})
    return load_tensors(path)


@dataclass
class TeacherPredictor:
    """The teacher as the solvers call it: (z_t, t) -> (x̂_0, ε̂) of its classifier-free-guided prediction at
    ``guidance_scale`` (B,), one batched call (cond + uncond); or of its conditional prediction alone when
    ``guidance_scale`` is None (a teacher that is itself a guidance-distilled student)."""

    unet: torch.nn.Module
    alphas_cumprod: torch.Tensor  # (T,) float32
    cond: torch.Tensor  # (B, 77, D) text embeddings of the captions
    uncond: torch.Tensor  # (B, 77, D) the empty prompt's
    guidance_scale: torch.Tensor | None  # (B,) pipeline convention, or None
    prediction_type: str

    @torch.no_grad()
    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.guidance_scale is None:
            model_output = self.unet(sample, timestep, encoder_hidden_states=self.cond).sample.float()
        else:
            out = self.unet(torch.cat([sample, sample]), torch.cat([timestep, timestep]),
                            encoder_hidden_states=torch.cat([self.cond, self.uncond])).sample
            cond_output, uncond_output = out.float().chunk(2)
            model_output = classifier_free_guidance(uncond_output, cond_output, self.guidance_scale)
        return pred_original_and_epsilon(model_output, sample, self.alphas_cumprod[timestep], self.prediction_type)


def _pixel_weighted(per_pixel_loss: torch.Tensor, pixel_weight: torch.Tensor) -> torch.Tensor:
    """(B,) each example's pixel-weighted mean of a (B, C, h, w) loss."""
    return (per_pixel_loss * pixel_weight).mean(dim=(1, 2, 3)) / pixel_weight.mean(dim=(1, 2, 3))


def _x0_loss(pred_original_sample: torch.Tensor, target: torch.Tensor, alpha_prod_t: torch.Tensor,
             pixel_weight: torch.Tensor) -> torch.Tensor:
    """The x̂_0 error with truncated-SNR weighting max(SNR, 1) (Salimans & Ho), object-weighted per latent pixel;
    ``alpha_prod_t`` (B,) is ᾱ at each example's timestep."""
    snr_weight = torch.clamp(alpha_prod_t / (1 - alpha_prod_t), min=1.0)
    return (snr_weight * _pixel_weighted((pred_original_sample - target) ** 2, pixel_weight)).mean()


def _noised(data: "DistillData", g: torch.Generator, latents: torch.Tensor, timestep: torch.Tensor, scheduler):
    """The latents noised to ``timestep`` with this process's rows of the step's noise draw."""
    noise = data.draw(lambda size: torch.randn(size, generator=g), *latents.shape[1:])
    return scheduler.add_noise(latents, noise, timestep)


def _teacher(unet, alphas_cumprod: torch.Tensor, data: "DistillData", cond: torch.Tensor, guidance: float | None,
             prediction_type: str) -> "TeacherPredictor":
    """The teacher guided at ``guidance`` on these captions (its conditional prediction alone when None)."""
    scale = None if guidance is None else torch.full((cond.shape[0],), float(guidance))
    return TeacherPredictor(unet, alphas_cumprod, cond, data.uncond.expand_as(cond), scale, prediction_type)


def _student_x0(student, data: "DistillData", sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor,
                alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The student's x̂_0 (its forward pass under the run's autocast)."""
    with data.accelerator.autocast():
        model_output = student(sample, timestep, encoder_hidden_states=cond).sample.float()
    return pred_original_and_epsilon(model_output, sample, alphas_cumprod[timestep], prediction_type)[0]


class LcmObjective:
    """Latent consistency distillation's loss (Luo et al. 2023, Algorithm 1): at a grid timestep t_{n+k} the student's
    consistency output f(z_{t_{n+k}}, w) is pulled (pseudo-Huber) towards the EMA target network's f at z_{t_n}, one
    skipping-step DDIM step of the teacher guided at w from z_{t_{n+k}}."""

    log_fields = {"method": "lcm"}
    clip = "student"

    def __init__(self, cfg: DistillConfig, data: DistillData, student, target, scheduler, prediction_type: str):
        self.cfg, self.data, self.student, self.target = cfg, data, student, target
        self.embedded = cfg.method != "lcm-lora"  # an LCM-LoRA has no guidance embedding
        self.log_fields = {"method": "lcm" if self.embedded else "lcm-lora"}
        self.models = {"student": student}
        self.target_ema = EMA(target.state_dict(), cfg.target_ema, warmup=False)
        self.scheduler, self.prediction_type = scheduler, prediction_type
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.grid, self.skip = lcm_solver_grid(scheduler.config.num_train_timesteps, cfg.ddim_timesteps)

    def checkpointed(self) -> dict:
        return {"student": self.student, "target": self.target}

    def after_resume(self) -> None:
        self.student.train()

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        cfg, data, alphas_cumprod = self.cfg, self.data, self.alphas_cumprod
        g, latents, mask, cond = data.batch(step)
        # 1. a grid timestep t_{n+k} per example
        timestep = self.grid[data.draw(lambda size: torch.randint(0, cfg.ddim_timesteps, size, generator=g))]
        noise = data.draw(lambda size: torch.randn(size, generator=g), *latents.shape[1:])
        # 2. a guidance scale w per example, fed to the student as the embedding of w - 1 (an LCM-LoRA has no
        # embedding: the teacher's guidance is one scale, which the adapter learns)
        u = data.draw(lambda size: torch.rand(size, generator=g))
        if self.embedded:
            guidance_scale = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * u
            kw = {"timestep_cond": guidance_embedding(guidance_scale, cfg.time_cond_proj_dim)}
        else:
            guidance_scale, kw = torch.full_like(u, float(cfg.guidance)), {}
        sample = self.scheduler.add_noise(latents, noise, timestep)
        # 3. the student's consistency output at z_{t_{n+k}}
        with data.accelerator.autocast():
            model_output = self.models["student"](sample, timestep, encoder_hidden_states=cond, **kw).sample.float()
        pred_original_sample = pred_original_and_epsilon(model_output, sample, alphas_cumprod[timestep],
                                                         self.prediction_type)[0]
        student_output = consistency_output(sample, pred_original_sample, timestep)
        with torch.no_grad():
            # 4. the skipping-step solver: one DDIM step of the guided teacher from t_{n+k} to t_n
            predict = TeacherPredictor(data.teacher.unet, alphas_cumprod, cond, data.uncond.expand_as(cond),
                                        guidance_scale, self.prediction_type)
            sample_prev, timestep_prev = skipping_step_solver(predict, alphas_cumprod, sample, timestep, self.skip)
            # 5. the target network's consistency output at z_{t_n}
            target_output = self.target(sample_prev, timestep_prev, encoder_hidden_states=cond, **kw).sample.float()
            target_original_sample = pred_original_and_epsilon(target_output, sample_prev,
                                                               alphas_cumprod[timestep_prev], self.prediction_type)[0]
            target = consistency_output(sample_prev, target_original_sample, timestep_prev)
        huber = torch.sqrt((student_output - target) ** 2 + cfg.huber_c ** 2) - cfg.huber_c
        return _pixel_weighted(huber, data.pixel_weight(mask)).mean(), {}

    def after_step(self, step: int) -> None:
        self.target_ema.update(self.data.accelerator.unwrap_model(self.models["student"]), step)


def train_lcm(cfg: DistillConfig, data: DistillData, scheduler, prediction_type: str,
              ckpt) -> tuple[torch.nn.Module, dict]:
    student = make_lcm_student(data.teacher.unet, cfg.time_cond_proj_dim)
    if cfg.init_student is not None:
        load_init_student(student, cfg.init_student)
    target = copy.deepcopy(student).requires_grad_(False).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    objective = LcmObjective(cfg, data, student, target, scheduler, prediction_type)
    leg = Leg(run_dir=cfg.out, desc="distill lcm", steps=cfg.max_train_steps, lr_warmup_steps=cfg.warmup_steps,
              checkpoint_every=cfg.checkpoint_every, log_every=25, grad_clip=cfg.grad_clip, loss_format=".5f",
              checkpoint_state=data.run_record)
    seconds = run_leg(leg, objective, opt, data.accelerator, ckpt)
    return (data.accelerator.unwrap_model(objective.models["student"]).eval(),
            {"train_steps": cfg.max_train_steps, "train_seconds": seconds})


class ProgressiveObjective:
    """One progressive round's loss (Salimans & Ho 2022): the student's x̂_0 at a timestep of its n-step DDIM schedule
    against the x̂_0 whose single DDIM step lands where two of the teacher's 2n-step DDIM steps do, with truncated-SNR
    weighting max(SNR, 1)."""

    clip = "student"

    def __init__(self, cfg: DistillConfig, data: DistillData, student, teacher_unet, scheduler, prediction_type: str,
                 num_inference_steps: int, guidance: float | None):
        self.cfg, self.data, self.student, self.teacher_unet = cfg, data, student, teacher_unet
        self.models = {"student": student}
        self.log_fields = {"method": "progressive", "round_steps": num_inference_steps}
        self.scheduler, self.prediction_type = scheduler, prediction_type
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.n, self.guidance = num_inference_steps, guidance
        self.student_timesteps = ddim_timesteps(scheduler, num_inference_steps)  # e.g. [999, 874, ...] for 8 (trailing)
        self.teacher_timesteps = ddim_timesteps(scheduler, 2 * num_inference_steps)
        if not torch.equal(self.teacher_timesteps[::2], self.student_timesteps):
            raise MobilediffError(f"the scheduler's {2 * num_inference_steps}-step timesteps do not contain its "
                                  f"{num_inference_steps}-step ones (timestep_spacing "
                                  f"{scheduler.config.timestep_spacing!r}): use 'trailing'")

    def checkpointed(self) -> dict:
        return {"student": self.student}

    def after_resume(self) -> None:
        self.student.train()

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        data, alphas_cumprod = self.data, self.alphas_cumprod
        g, latents, mask, cond = data.batch(step)
        i = data.draw(lambda size: torch.randint(0, self.n, size, generator=g))
        timestep, timestep_mid = self.student_timesteps[i], self.teacher_timesteps[2 * i + 1]
        with torch.no_grad():
            predict = _teacher(self.teacher_unet, alphas_cumprod, data, cond, self.guidance, self.prediction_type)
            if latents is None:
                sample = self._on_trajectory(predict, g, i)
            else:
                sample = _noised(data, g, latents, timestep, self.scheduler)
            target, _ = progressive_target(predict, self.scheduler, sample, timestep, timestep_mid, self.n)
        pred_original_sample = _student_x0(self.models["student"], data, sample, timestep, cond, alphas_cumprod,
                                           self.prediction_type)
        return _x0_loss(pred_original_sample, target, alphas_cumprod[timestep], data.pixel_weight(mask)), {}

    def after_step(self, step: int) -> None:
        pass

    def _on_trajectory(self, predict: "TeacherPredictor", g: torch.Generator, i: torch.Tensor) -> torch.Tensor:
        """z at each example's student timestep t_i on the round teacher's own 2n-step DDIM trajectory from pure
        noise z_T (data-free: the inputs the student meets when it samples): 2 i teacher calls for example i, run in
        lockstep up to the batch's largest i (cost: up to 2 (n - 1) extra teacher calls a step)."""
        data = self.data
        sample = data.draw(lambda size: torch.randn(size, generator=g), data.latent_channels, *data.latent_hw)
        for k in range(int(i.max())):
            t = self.student_timesteps[k].expand(len(i))
            _, moved = progressive_target(predict, self.scheduler, sample, t, self.teacher_timesteps[2 * k + 1].expand(len(i)),
                                          self.n)
            sample = torch.where((k < i)[:, None, None, None], moved, sample)
        return sample


def train_progressive_round(cfg: DistillConfig, data: DistillData, scheduler, prediction_type: str, teacher_unet,
                            n: int, r: int, ckpt) -> tuple[torch.nn.Module, dict]:
    """Round ``r``: a student at ``n`` steps learns the ``2n``-step teacher. Global steps r*K .. (r+1)*K."""
    K = cfg.max_train_steps
    student = copy.deepcopy(teacher_unet).requires_grad_(True)
    teacher_unet = teacher_unet.requires_grad_(False).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    # Guidance is folded in once: the first round's target is the classifier-free-guided teacher; later rounds'
    # teachers are earlier students, which already give the guided prediction from the text alone (and were never
    # trained on the empty prompt), so their target is their own conditional prediction. Guiding them again would
    # compound the guidance every round.
    guidance = cfg.guidance if r == 0 else None
    objective = ProgressiveObjective(cfg, data, student, teacher_unet, scheduler, prediction_type, n, guidance)
    leg = Leg(run_dir=cfg.out, desc=f"distill progressive {2 * n}->{n} steps", steps=K, first_step=r * K,
              lr_warmup_steps=cfg.warmup_steps, checkpoint_every=cfg.checkpoint_every, log_every=25,
              grad_clip=cfg.grad_clip, elapsed_key="round_elapsed_seconds",
              checkpoint_state={"round": r, "round_steps": n, **data.run_record}, loss_format=".5f")
    in_round = ckpt is not None and leg.first_step < ckpt.step <= leg.end_step
    seconds = run_leg(leg, objective, opt, data.accelerator, ckpt if in_round else None)
    return data.accelerator.unwrap_model(objective.models["student"]).eval(), {"train_steps": K, "train_seconds": seconds}


class StageRecorder:
    """Forward hooks that keep the outputs of a UNet's down and up blocks (a down block's hidden state, not its skip
    tuple) of the last call."""

    def __init__(self, unet):
        from mobilediff.train.slim import stage_outputs

        self.outputs: list[torch.Tensor | None] = []
        self.handles = []
        for i, module in enumerate(stage_outputs(unet)):
            self.outputs.append(None)
            self.handles.append(module.register_forward_hook(self._keep(i)))

    def _keep(self, i: int):
        def hook(module, args, output):
            self.outputs[i] = (output[0] if isinstance(output, tuple) else output).float()
        return hook


class SlimObjective:
    """Block-removal knowledge distillation (BK-SDM): the slimmed student's x̂_0 against the teacher's (truncated-SNR
    weighted, object-weighted per latent pixel, as :class:`ProgressiveObjective`) plus ``feature_weight`` x the mean
    over the down and up blocks of each block output's squared error relative to the teacher's mean square."""

    clip = "student"

    def __init__(self, cfg: DistillConfig, data: DistillData, student, teacher_unet, scheduler, prediction_type: str,
                 guidance: float | None):
        self.cfg, self.data, self.teacher_unet = cfg, data, teacher_unet
        self.models = {"student": student}
        self.log_fields = {"method": "slim"}
        self.scheduler, self.prediction_type, self.guidance = scheduler, prediction_type, guidance
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.timesteps = ddim_timesteps(scheduler, cfg.steps)
        self.teacher_stages = StageRecorder(teacher_unet)
        self.student_stages = StageRecorder(student)

    def checkpointed(self) -> dict:
        return {"student": self.models["student"]}

    def after_resume(self) -> None:
        self.models["student"].train()

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        data, alphas_cumprod = self.data, self.alphas_cumprod
        g, latents, mask, cond = data.batch(step)
        timestep = self.timesteps[data.draw(lambda size: torch.randint(0, len(self.timesteps), size, generator=g))]
        sample = _noised(data, g, latents, timestep, self.scheduler)
        with torch.no_grad():
            target = _teacher(self.teacher_unet, alphas_cumprod, data, cond, self.guidance,
                              self.prediction_type)(sample, timestep)[0]
            # the block outputs of the conditional rows (a guided call's batch is the conditional rows, then the
            # unconditional ones)
            features = [f[:latents.shape[0]] for f in self.teacher_stages.outputs]
        pred = _student_x0(self.models["student"], data, sample, timestep, cond, alphas_cumprod, self.prediction_type)
        out_loss = _x0_loss(pred, target, alphas_cumprod[timestep], data.pixel_weight(mask))
        feat_loss = torch.stack([((s - t) ** 2).mean() / (t ** 2).mean().clamp_min(1e-8)
                                 for s, t in zip(self.student_stages.outputs, features)]).mean()
        return out_loss + self.cfg.feature_weight * feat_loss, {"out": f"{out_loss.item():.5f}",
                                                                 "feat": f"{feat_loss.item():.4f}"}

    def after_step(self, step: int) -> None:
        pass


def slim_guidance(cfg: DistillConfig, teacher_dir: Path, samplers: tuple[str, ...] = ("ddim",)) -> float | None:
    """The slim student's target: None (the teacher's conditional prediction) for a guidance-distilled student
    teacher, whose plan must be DDIM at ``cfg.steps`` steps; else the classifier-free guidance scale ``cfg.guidance``
    (None at 1: the conditional prediction)."""
    record = distillation_record(teacher_dir)
    plan = record["sampling"] if record else None
    if plan is None:
        return None if cfg.guidance == 1 else cfg.guidance
    if plan.get("sampler") not in samplers or plan.get("steps") != cfg.steps or float(plan.get("guidance", 1.0)) > 1:
        raise MobilediffError(f"the teacher {cfg.teacher} is a distilled student sampling {plan.get('sampler')} at "
                              f"{plan.get('steps')} steps, guidance {plan.get('guidance')}: a slim student learns a "
                              f"DDIM student at its own step count without guidance (pass --steps {plan.get('steps')}"
                              f" for a progressive student)")
    return None


def train_slim(cfg: DistillConfig, data: DistillData, scheduler, prediction_type: str, teacher_unet,
               guidance: float | None, ckpt) -> tuple[torch.nn.Module, dict]:
    from mobilediff.train.slim import parse_removal, slim_unet

    student = slim_unet(teacher_unet, unet_removal(cfg)).requires_grad_(True).train()
    teacher_unet = teacher_unet.requires_grad_(False).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    objective = SlimObjective(cfg, data, student, teacher_unet, scheduler, prediction_type, guidance)
    leg = Leg(run_dir=cfg.out, desc=f"distill slim (remove {','.join(unet_removal(cfg))})", steps=cfg.max_train_steps,
              lr_warmup_steps=cfg.warmup_steps, checkpoint_every=cfg.checkpoint_every, log_every=25,
              grad_clip=cfg.grad_clip, loss_format=".5f", checkpoint_state=data.run_record)
    seconds = run_leg(leg, objective, opt, data.accelerator, ckpt)
    unet = data.accelerator.unwrap_model(objective.models["student"]).eval()
    return unet, {"train_steps": cfg.max_train_steps, "train_seconds": seconds}


# ---------------------------------------------------------------------------------------------- output


class LoraObjective:
    """A LoRA adapter on the teacher's UNet trained with the teacher's own denoising loss (its prediction type) on the
    data's latents and captions, the base weights frozen: what the adapter learns is where the data differs from
    what the model makes."""

    clip = "student"

    def __init__(self, cfg: DistillConfig, data: DistillData, student, scheduler, prediction_type: str):
        self.cfg, self.data, self.scheduler, self.prediction_type = cfg, data, scheduler, prediction_type
        self.models = {"student": student}
        self.log_fields = {"method": "lora"}

    def checkpointed(self) -> dict:
        return {"student": self.data.accelerator.unwrap_model(self.models["student"])}

    def after_resume(self) -> None:
        pass

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        g, latents, mask, cond = self.data.batch(step)
        noise = self.data.draw(lambda size: torch.randn(size, generator=g), *latents.shape[1:])
        t = self.data.draw(lambda size: torch.randint(0, self.scheduler.config.num_train_timesteps, size, generator=g))
        noisy = self.scheduler.add_noise(latents, noise, t)
        target = {"epsilon": noise, "v_prediction": self.scheduler.get_velocity(latents, noise, t),
                  "sample": latents}[self.prediction_type]
        with self.data.accelerator.autocast():
            pred = self.models["student"](noisy, t, encoder_hidden_states=cond).sample.float()
        pix = self.data.pixel_weight(mask)
        return ((pred - target) ** 2 * pix).mean() / pix.mean(), {}

    def after_step(self, step: int) -> None:
        pass


def lora_student(teacher_unet, rank: int, targets=LORA_TARGETS):
    """A copy of the teacher's UNet with a rank-``rank`` LoRA adapter on the linear layers named by ``targets``
    (default :data:`LORA_TARGETS`), only the adapter trainable (its up matrices start at zero, as LoRA does: the
    student starts as the teacher)."""
    from peft import LoraConfig

    student = copy.deepcopy(teacher_unet)
    names = [n for n, m in student.named_modules() if isinstance(m, torch.nn.Linear)
             and any(n == t or n.endswith("." + t) for t in targets)]
    student.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=names))
    for name, param in student.named_parameters():
        param.requires_grad_("lora_" in name)
    return student


def _train_adapter(cfg: DistillConfig, data: DistillData, student, objective, desc: str,
                   ckpt) -> tuple[dict, dict, dict]:
    """Run ``objective`` over ``student`` (a UNet with a PEFT adapter, only the adapter trainable); returns (the
    adapter's tensors in diffusers' layout, its PEFT config as header metadata, stats)."""
    from peft.utils import get_peft_model_state_dict

    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    leg = Leg(run_dir=cfg.out, desc=desc, steps=cfg.max_train_steps, lr_warmup_steps=cfg.warmup_steps,
              checkpoint_every=cfg.checkpoint_every, log_every=25, grad_clip=cfg.grad_clip, loss_format=".5f",
              checkpoint_state=data.run_record)
    seconds = run_leg(leg, objective, opt, data.accelerator, ckpt)
    unet = data.accelerator.unwrap_model(objective.models["student"]).eval()
    tensors = {f"unet.{k}": v.detach().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    return tensors, unet.peft_config["default"].to_dict(), {"train_steps": cfg.max_train_steps,
                                                            "train_seconds": seconds}


def train_lora(cfg: DistillConfig, data: DistillData, scheduler, prediction_type: str, ckpt) -> tuple[dict, dict, dict]:
    """Train a LoRA adapter (rank ``cfg.lora_rank`` on :data:`LORA_TARGETS`) on a copy of the teacher's UNet with its
    own denoising loss (:func:`_train_adapter`'s result)."""
    student = lora_student(data.teacher.unet, cfg.lora_rank).train()
    objective = LoraObjective(cfg, data, student, scheduler, prediction_type)
    return _train_adapter(cfg, data, student, objective, "train lora", ckpt)


def train_lcm_lora(cfg: DistillConfig, data: DistillData, scheduler, prediction_type: str,
                   ckpt) -> tuple[dict, dict, dict]:
    """LCM-LoRA: latent consistency distillation (:class:`LcmObjective`, the teacher guided at ``cfg.guidance``) into
    a rank ``cfg.lora_rank`` adapter on :data:`LCM_LORA_TARGETS` of the teacher's frozen UNet; the target network is
    the EMA of the adapted UNet (:func:`_train_adapter`'s result)."""
    student = lora_student(data.teacher.unet, cfg.lora_rank, LCM_LORA_TARGETS)
    target = copy.deepcopy(student).requires_grad_(False).eval()
    objective = LcmObjective(cfg, data, student.train(), target, scheduler, prediction_type)
    return _train_adapter(cfg, data, student, objective, "distill lcm-lora", ckpt)


def _save_adapter(path: Path, tensors: dict, peft_config: dict, info: dict) -> None:
    """OUT/adapter: ``adapter.safetensors`` (diffusers' LoRA layout, PEFT's config in the header, as diffusers'
    save_lora_weights writes it) and ``training.json``."""
    from safetensors.torch import save_file

    meta = {"format": "pt", "lora_adapter_metadata": json.dumps({"unet." + k: v for k, v in json.loads(
        json.dumps(peft_config, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))).items()})}
    with atomic_dir(path, force=True) as tmp:
        save_file(tensors, str(tmp / "adapter.safetensors"), metadata=meta)
        atomic_write_json(tmp / "training.json", info)


def _record(cfg: DistillConfig, command: str, stats: dict, **extra) -> dict:
    if cfg.source.given:
        extra = {**extra, "data": _data_record(cfg.source)}
    return {"method": cfg.method, **extra, "command": command,
            "teacher": str(cfg.teacher),  # as given (a registered name, or the user's path): no path of this machine
            "config": json.loads(json.dumps(asdict(cfg), default=str)), "stats": stats, **provenance()}


def _data_record(source: DataOptions) -> dict:
    """What the student was distilled on, as the user named it (paths as given on the command line)."""
    return {k: str(v) for k, v in asdict(source).items() if v not in (None, 0, False) and k != "cache_dir"}


def _save_student(path: Path, teacher, teacher_dir: Path, unet, scheduler, pipeline_class: str, info: dict) -> None:
    import diffusers

    cls = getattr(diffusers, pipeline_class)
    pipe = cls(vae=teacher.vae, text_encoder=teacher.text_encoder, tokenizer=teacher.tokenizer, unet=unet,
               scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    write_student(path, pipe, teacher_dir, info)


def write_student(path: Path, pipe, teacher_dir: Path, info: dict) -> None:
    """The student pipeline ``pipe`` written to ``path`` (atomically) with its ``distillation.json``."""
    from mobilediff.loading import drop_load_paths, shared_components

    with atomic_dir(path, force=True) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        drop_load_paths(tmp)
        # keep the CLIP BPE files (vocab.json, merges.txt, licence) the apps read, also where a packed teacher
        # borrows its tokenizer from a base (shared_components.json)
        src = shared_components(teacher_dir).get("tokenizer", teacher_dir / "tokenizer")
        if src.is_dir():
            shutil.rmtree(tmp / "tokenizer")
            shutil.copytree(src, tmp / "tokenizer")
        atomic_write_json(tmp / "distillation.json", info)


def _check_resume(cfg: DistillConfig, resume: str | None, force: bool):
    """Check what ``--resume`` points at before anything is written (:func:`train.checkpoint.check_resume`); return
    the checkpoint the run continues from, or None."""
    from mobilediff.train.checkpoint import check_resume

    return check_resume(cfg.out, resume, "student.safetensors", "distillation",
                        ("checkpoints", "latent_cache.safetensors", "log.jsonl", "model"), ("steps-*",), force=force)


def _check_resume_fits(cfg: DistillConfig, teacher_unet, ckpt, run: dict) -> None:
    """Refuse, before any work, a checkpoint this run cannot continue: its student is not the one ``cfg.method``
    builds from this teacher (the teacher's UNet; progressive: every round's student has its architecture; with a
    guidance embedding, lcm, its target network too; with blocks removed, slim), judged by weight names and shapes
    (file headers); it is another method's (a progressive checkpoint records its round); it lies past the run's
    last step; a progressive checkpoint's step falls in another round under this run's --max-train-steps and
    --teacher-steps; or its run record (``run``: the method, the teacher's weights) differs."""
    from mobilediff.train.checkpoint import check_continues, check_fits

    if ckpt is None:
        return
    names = ("student",)
    with torch.random.fork_rng(devices=[]):  # the student this run builds, for its shapes (the run's seeds stay put)
        if type(teacher_unet).__name__ != "UNet2DConditionModel":  # a flow transformer's (train.flow_distill)
            from mobilediff.train.flow_distill import student_shapes

            by_name = student_shapes(cfg, teacher_unet)
            names, shapes = tuple(by_name), by_name["student"]
        else:
            if cfg.method == "lcm":
                student, names = make_lcm_student(teacher_unet, cfg.time_cond_proj_dim), ("student", "target")
            elif cfg.method == "slim":
                from mobilediff.train.slim import slim_unet

                student = slim_unet(teacher_unet, unet_removal(cfg))
            elif cfg.method == "lora":
                student = lora_student(teacher_unet, cfg.lora_rank)
            elif cfg.method == "lcm-lora":
                student, names = lora_student(teacher_unet, cfg.lora_rank, LCM_LORA_TARGETS), ("student", "target")
            else:
                student = teacher_unet
            shapes = module_shapes(student)
    check_fits(ckpt, {name: shapes for name in names})
    progressive = "round" in ckpt.state
    if progressive != (cfg.method == "progressive"):
        raise MobilediffError(f"checkpoint {ckpt.path} is {'a progressive' if progressive else 'not a progressive'} "
                              f"distillation's: this run is --method {cfg.method}")
    last, option = cfg.max_train_steps, f"--max-train-steps {cfg.max_train_steps}"
    if progressive:
        rounds = progressive_rounds(cfg.teacher_steps, cfg.steps)
        last = cfg.max_train_steps * len(rounds)
        option = f"--max-train-steps {cfg.max_train_steps} x {len(rounds)} rounds"
        r = min(max(ckpt.step - 1, 0) // cfg.max_train_steps, len(rounds) - 1)
        if (ckpt.state.get("round"), ckpt.state.get("round_steps")) != (r, rounds[r]) and ckpt.step <= last:
            raise MobilediffError(f"checkpoint {ckpt.path} (step {ckpt.step}) is of round {ckpt.state.get('round')}, "
                                  f"a {ckpt.state.get('round_steps')}-step student; with --max-train-steps "
                                  f"{cfg.max_train_steps} and --teacher-steps {cfg.teacher_steps} this run puts step "
                                  f"{ckpt.step} in round {r}, a {rounds[r]}-step student: use the settings of the run "
                                  f"that wrote it")
    check_continues(ckpt, run, last, option)


def _earlier_rounds(cfg: DistillConfig, ckpt) -> list[Path]:
    """The students of the rounds before a progressive checkpoint's, in the run folder that holds it (each is the
    next round's teacher): what a checkpoint continued in a new OUT needs beside it. Raises MobilediffError naming
    a missing one."""
    if ckpt is None or cfg.method != "progressive" or continues_in_place(cfg.out, str(ckpt.path)):
        return []
    run = ckpt.path.parent.parent  # <run>/checkpoints/checkpoint-N
    folders = []
    for r, n in enumerate(progressive_rounds(cfg.teacher_steps, cfg.steps)):
        if ckpt.step <= (r + 1) * cfg.max_train_steps:
            break
        folder = run / f"steps-{n}"
        if not (folder / "distillation.json").is_file():
            raise MobilediffError(f"checkpoint {ckpt.path} is of round {r + 1}, whose teacher is round {r}'s "
                                  f"student, and that is not in its run folder ({folder})")
        folders.append(folder)
    return folders


def distill(cfg: DistillConfig, resume: str | None = None, force: bool = False, command: str = "") -> list[Path]:
    """Run the distillation; returns the student pipeline folder(s) written (atomically).

    ``resume``: "latest" (the newest checkpoint in ``cfg.out``) or a checkpoint folder: of this run folder (continued
    in place), or of another one, continued in ``cfg.out`` as a new run folder (an existing one is refused unless
    ``force``; a progressive checkpoint brings the earlier rounds' students of its run along). ``cfg.out`` is locked
    for the whole run (a second command writing it fails at once). Raises MobilediffError, before anything is
    written, on bad options, a bad teacher or data, an OUT that exists without ``resume``/``force`` or that another
    process writes, and a checkpoint this run cannot continue (:func:`_check_resume_fits`)."""
    validate(cfg)
    accelerator = make_accelerator(cfg.mixed_precision)
    process_rows(cfg.batch_size, accelerator)  # refuses a batch that does not split over the processes
    refuse_existing(cfg.out, resume, force)  # (again under the lock: OUT may appear meanwhile)
    with run_folder_lock(cfg.out, accelerator):  # a second command writing OUT fails at once
        return _distill(cfg, resume, force, command, accelerator)


def _distill(cfg: DistillConfig, resume: str | None, force: bool, command: str, accelerator) -> list[Path]:
    from diffusers import DDIMScheduler

    from mobilediff.loading import resolve_model

    out = Path(cfg.out)
    existed = out.exists()
    refuse_existing(out, resume, force)
    ckpt = _check_resume(cfg, resume, force)
    from mobilediff.train.flow_distill import FLOW_METHODS

    # refuses bad teachers before anything is written (a diffusion transformer distils by FLOW_METHODS only)
    teacher = load_teacher(cfg.teacher, flow=cfg.method in FLOW_METHODS)
    if getattr(teacher, "unet", None) is None:
        return _distill_flow(cfg, resume, command, accelerator, teacher, ckpt, existed)
    guidance = None
    if cfg.method == "slim":  # the removal must fit the teacher's UNet, and a student teacher's plan the steps
        from mobilediff.train.slim import parse_removal, slim_config

        slim_config(dict(teacher.unet.config), unet_removal(cfg))
        guidance = slim_guidance(cfg, resolve_model(cfg.teacher))
    run = {"command": "distill", "method": cfg.method, "teacher_unet_sha256": state_sha256(teacher.unet)}
    _check_resume_fits(cfg, teacher.unet, ckpt, run)  # a checkpoint this run cannot continue, before any work
    earlier = _earlier_rounds(cfg, ckpt)
    if cfg.source.given:  # the user's data is read (bad data refused) before OUT changes
        preflight_data(cfg.source, teacher, show=accelerator.is_main_process)
    prepare_run_folder(out, continues_in_place(out, resume), existed, accelerator)
    if accelerator.is_main_process:  # a progressive checkpoint of another run: its earlier rounds' students come along
        for folder in earlier:
            with atomic_dir(out / folder.name, force=True) as tmp:
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
    accelerator.wait_for_everyone()
    prediction_type = teacher.scheduler.config.get("prediction_type", "epsilon")
    # the teacher's noise schedule and prediction type; trailing spacing so that the n-step timesteps are every other
    # 2n-step one (progressive rounds) -- this is also the scheduler the progressive students sample with
    scheduler = DDIMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing", clip_sample=False,
                                          thresholding=False)
    for module in (teacher.text_encoder, teacher.unet, teacher.vae):
        module.requires_grad_(False).eval()
    data = DistillData(cfg, teacher, accelerator)
    from mobilediff.train.checkpoint import run_record

    data.run_record = run_record(**run)
    if cfg.method == "lcm":
        from diffusers import LCMScheduler

        student, stats = train_lcm(cfg, data, scheduler, prediction_type, ckpt)
        sched = LCMScheduler.from_config(teacher.scheduler.config, original_inference_steps=cfg.ddim_timesteps,
                                         timestep_scaling=LCM_TIMESTEP_SCALING)
        info = _record(cfg, command, stats, sampling={"sampler": "lcm", "steps": cfg.steps, "guidance": cfg.guidance})
        if accelerator.is_main_process:
            _save_student(out / "model", teacher, resolve_model(cfg.teacher), student, sched, "LatentConsistencyModelPipeline", info)
        return [out / "model"]
    if cfg.method == "lora":
        tensors, peft_config, stats = train_lora(cfg, data, scheduler, prediction_type, ckpt)
        info = _record(cfg, command, stats, rank=cfg.lora_rank, targets=list(LORA_TARGETS),
                       use="mobilediff generate|export --model TEACHER --lora OUT/adapter/adapter.safetensors[:SCALE]")
        if accelerator.is_main_process:
            _save_adapter(out / "adapter", tensors, peft_config, info)
        return [out / "adapter"]
    if cfg.method == "lcm-lora":
        tensors, peft_config, stats = train_lcm_lora(cfg, data, scheduler, prediction_type, ckpt)
        info = _record(cfg, command, stats, rank=cfg.lora_rank, targets=list(LCM_LORA_TARGETS),
                       sampling={"sampler": "lcm", "steps": cfg.steps, "guidance": 1.0},
                       scheduler={"original_inference_steps": cfg.ddim_timesteps,
                                  "timestep_scaling": LCM_TIMESTEP_SCALING},
                       use="mobilediff generate --model TEACHER --lora OUT/adapter/adapter.safetensors --sampler lcm "
                           f"--steps {cfg.steps} --guidance 1; export --runtime-lora it to switch it at run time")
        if accelerator.is_main_process:
            _save_adapter(out / "adapter", tensors, peft_config, info)
        return [out / "adapter"]
    if cfg.method == "slim":
        from mobilediff.train.slim import parse_removal

        unet, stats = train_slim(cfg, data, scheduler, prediction_type, teacher.unet, guidance, ckpt)
        info = _record(cfg, command, stats, removed=unet_removal(cfg), target_guidance=guidance,
                       sampling={"sampler": "ddim", "steps": cfg.steps, "guidance": 1.0})
        if accelerator.is_main_process:
            _save_student(out / "model", teacher, resolve_model(cfg.teacher), unet, copy.deepcopy(scheduler),
                          "StableDiffusionPipeline", info)
        return [out / "model"]
    written, unet = [], teacher.unet
    for r, n in enumerate(progressive_rounds(cfg.teacher_steps, cfg.steps)):
        path = out / f"steps-{n}"
        done = path / "distillation.json"
        if done.is_file() and (ckpt is None or ckpt.step >= (r + 1) * cfg.max_train_steps):
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel.from_pretrained(str(path / "unet"), use_safetensors=True)
            written.append(path)
            continue
        unet, stats = train_progressive_round(cfg, data, scheduler, prediction_type, unet, n, r, ckpt)
        info = _record(cfg, command, stats, round=r, teacher_steps=2 * n,
                       sampling={"sampler": "ddim", "steps": n, "guidance": 1.0})
        if accelerator.is_main_process:
            _save_student(path, teacher, resolve_model(cfg.teacher), unet, copy.deepcopy(scheduler),
                          "StableDiffusionPipeline", info)
        written.append(path)
    return written


def _distill_flow(cfg: DistillConfig, resume: str | None, command: str, accelerator, teacher, ckpt,
                  existed: bool) -> list[Path]:
    """:func:`_distill` for a flow-matching PixArt teacher (:mod:`mobilediff.train.flow_distill`)."""
    from mobilediff.loading import resolve_model
    from mobilediff.train import flow_distill as fd
    from mobilediff.train.checkpoint import run_record

    out, net, teacher_dir = Path(cfg.out), teacher.transformer, resolve_model(cfg.teacher)
    guidance, removed = cfg.guidance, None
    if cfg.method == "slim":
        removed = fd.removal(cfg, net)  # must fit the teacher's blocks, before anything is written
        guidance = slim_guidance(cfg, teacher_dir, samplers=("euler", "ddim"))
    run = {"command": "distill", "method": cfg.method, "objective": "flow", "teacher_transformer_sha256": state_sha256(net),
           **({"removed": removed} if removed is not None else {})}
    _check_resume_fits(cfg, net, ckpt, run)
    earlier = _earlier_rounds(cfg, ckpt)
    if cfg.source.given:
        preflight_data(cfg.source, teacher, show=accelerator.is_main_process)
    if cfg.method == "lcm" and cfg.source.given and not cfg.source.has_images and not cfg.source.synthesize:
        raise MobilediffError("--method lcm trains on latents: give images (--images / --wds) or --synthesize N with "
                              "the prompts")
    prepare_run_folder(out, continues_in_place(out, resume), existed, accelerator)
    if accelerator.is_main_process:
        for folder in earlier:
            with atomic_dir(out / folder.name, force=True) as tmp:
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
    accelerator.wait_for_everyone()
    for module in (teacher.text_encoder, net, teacher.vae):
        module.requires_grad_(False).eval()
    data = DistillData(cfg, teacher, accelerator)
    data.run_record = run_record(**run)
    main = accelerator.is_main_process
    if cfg.method == "lcm":
        student, stats = fd.train_consistency(cfg, data, net, ckpt)
        info = _record(cfg, command, stats, objective="flow", target_guidance=cfg.guidance,
                       sampling={"sampler": "lcm", "steps": cfg.steps, "guidance": 1.0})
        if main:
            fd.save_student(out / "model", teacher, teacher_dir, student, info)
        return [out / "model"]
    if cfg.method == "slim":
        student, stats = fd.train_slim(cfg, data, net, removed, guidance, ckpt)
        info = _record(cfg, command, stats, objective="flow", removed=[f"block-{b}" for b in removed],
                       target_guidance=guidance, sampling={"sampler": "euler", "steps": cfg.steps, "guidance": 1.0})
        if main:
            fd.save_student(out / "model", teacher, teacher_dir, student, info)
        return [out / "model"]
    written = []
    for r, n in enumerate(progressive_rounds(cfg.teacher_steps, cfg.steps)):
        path = out / f"steps-{n}"
        if (path / "distillation.json").is_file() and (ckpt is None or ckpt.step >= (r + 1) * cfg.max_train_steps):
            from diffusers import PixArtTransformer2DModel

            net = PixArtTransformer2DModel.from_pretrained(str(path / "transformer"), use_safetensors=True)
            written.append(path)
            continue
        net, stats = fd.train_progressive_round(cfg, data, net, n, r, ckpt)
        info = _record(cfg, command, stats, objective="flow", round=r, teacher_steps=2 * n,
                       target_guidance=cfg.guidance if r == 0 else None,
                       sampling={"sampler": "euler", "steps": n, "guidance": 1.0})
        if main:
            fd.save_student(path, teacher, teacher_dir, net, info)
        written.append(path)
    return written
