"""`mobilediff distill`: few-step students of a Stable-Diffusion-family teacher.

Two methods, both trained on the teacher's own latents of shapes-domain samples (a latent cache encoded once
with the teacher's VAE), both with one denoiser call per sampling step (guidance is distilled in):

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

Training is built on accelerate (``accelerate launch -m mobilediff.cli distill ...`` spreads it over devices:
each process takes its slice of every global batch, chosen by seeded indices), checkpoints are atomic and
pickle-free (:mod:`mobilediff.checkpoint`), ``--resume latest`` continues exactly where a run stopped, and a
non-finite loss stops the run before anything is saved. The DDIM arithmetic of the targets is batched (one
timestep per example) and tested against ``diffusers.DDIMScheduler.step``, which samples the students.
"""
from __future__ import annotations

import copy
import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from mobilediff.checkpoint import save_checkpoint
from mobilediff.errors import MobilediffError
from mobilediff.io import atomic_dir, atomic_write_json

METHODS = ("lcm", "progressive")
LCM_TIMESTEP_SCALING = 10.0  # LCMScheduler's default boundary-condition time scaling
SIGMA_DATA = 0.5


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
    inject_nan_at_step: int | None = None  # test hook: poison the loss at this global step


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


def validate(cfg: DistillConfig) -> None:
    """Every impossible option is refused here, before anything is read or written."""
    if cfg.method not in METHODS:
        raise MobilediffError(f"unknown distillation method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
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
    if cfg.method == "progressive":
        progressive_rounds(cfg.teacher_steps, cfg.steps)
        if cfg.guidance < 1:
            raise MobilediffError(f"--guidance must be >= 1 (1 = the teacher without guidance), got {cfg.guidance}")
    for name in ("max_train_steps", "batch_size", "checkpoint_every", "latent_cache"):
        if getattr(cfg, name) < 1:
            raise MobilediffError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")


def load_teacher(teacher: str):
    """The teacher pipeline (checked, safetensors only); refuses students and unsupported classes."""
    from diffusers import UNet2DConditionModel

    from mobilediff.loading import load_pipeline

    pipe = load_pipeline(teacher)
    if not isinstance(pipe.unet, UNet2DConditionModel):
        raise MobilediffError(f"unsupported denoiser {type(pipe.unet).__name__}: expected UNet2DConditionModel")
    if pipe.unet.config.time_cond_proj_dim is not None:
        raise MobilediffError("the teacher already takes a guidance embedding (an LCM student): distil from its "
                              "classifier-free-guided teacher instead")
    pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    if pred not in ("epsilon", "v_prediction", "sample"):
        raise MobilediffError(f"unsupported prediction type {pred!r} in the teacher's scheduler config")
    return pipe


# ---------------------------------------------------------------------------------------------- diffusion arithmetic


def to_x0_eps(out: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, prediction_type: str):
    """(x0, eps) from a model output at noisy sample ``z`` whose alphas_cumprod is ``alpha`` (B,)."""
    a = alpha.view(-1, 1, 1, 1).to(z.dtype)
    sa, sb = a.sqrt(), (1 - a).sqrt()
    if prediction_type == "epsilon":
        return (z - sb * out) / sa, out
    if prediction_type == "v_prediction":
        return sa * z - sb * out, sa * out + sb * z
    if prediction_type == "sample":
        return out, (z - sa * out) / sb
    raise MobilediffError(f"unsupported prediction type {prediction_type!r}")


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_prev: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM update (eta = 0): the sample at ``alpha_prev`` (B,)."""
    a = alpha_prev.view(-1, 1, 1, 1).to(x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def ddim_alpha_prev(scheduler, t: torch.Tensor, num_steps: int) -> torch.Tensor:
    """alphas_cumprod of the previous timestep exactly as ``DDIMScheduler.step`` computes it at ``num_steps``."""
    ac = scheduler.alphas_cumprod
    prev = t - scheduler.config.num_train_timesteps // num_steps
    return torch.where(prev >= 0, ac[prev.clamp(min=0)], torch.as_tensor(scheduler.final_alpha_cumprod, dtype=ac.dtype))


def ddim_timesteps(scheduler, num_steps: int) -> torch.Tensor:
    s = copy.deepcopy(scheduler)
    s.set_timesteps(num_steps)
    return s.timesteps.clone()


def boundary_scalings(t: torch.Tensor, timestep_scaling: float = LCM_TIMESTEP_SCALING):
    """LCM's consistency boundary-condition scalings (c_skip, c_out) at discrete timesteps ``t`` (as LCMScheduler)."""
    st = t.float() * timestep_scaling
    c_skip = SIGMA_DATA ** 2 / (st ** 2 + SIGMA_DATA ** 2)
    c_out = st / (st ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """The guidance-scale embedding diffusers' pipelines feed to ``timestep_cond`` (w = guidance scale - 1)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)


@torch.no_grad()
def guided(unet, z, t, cond, uncond, scale, alpha, prediction_type):
    """The teacher's classifier-free-guided (x0, eps) at scale ``scale`` (B,), one batched call (cond + uncond)."""
    out = unet(torch.cat([z, z]), torch.cat([t, t]), encoder_hidden_states=torch.cat([cond, uncond])).sample
    oc, ou = out.float().chunk(2)
    g = scale.view(-1, 1, 1, 1)
    return to_x0_eps(ou + g * (oc - ou), z, alpha, prediction_type)


@torch.no_grad()
def progressive_target(teacher_unet, scheduler, z, t, t_mid, n, cond, uncond, guidance, prediction_type):
    """(x0 target, z2) of a progressive round at ``n`` student steps: ``z2`` is two DDIM steps of the teacher at
    ``2n`` steps from ``z`` at ``t`` (through ``t_mid``), exactly as DDIMScheduler takes them, and the x0 target is
    the one whose single DDIM step at ``n`` steps from ``z`` lands on ``z2`` (Salimans & Ho, eq. 8).
    ``guidance``: the classifier-free guidance scale of the teacher's prediction, or None for its plain conditional
    prediction (a teacher that is itself a guidance-distilled student)."""
    alphas = scheduler.alphas_cumprod.float()

    def pred(zz, tt):
        if guidance is None:
            out = teacher_unet(zz, tt, encoder_hidden_states=cond).sample.float()
            return to_x0_eps(out, zz, alphas[tt], prediction_type)
        scale = torch.full((zz.shape[0],), float(guidance))
        return guided(teacher_unet, zz, tt, cond, uncond, scale, alphas[tt], prediction_type)

    x1, e1 = pred(z, t)
    z1 = ddim_step(x1, e1, ddim_alpha_prev(scheduler, t, 2 * n))
    x2, e2 = pred(z1, t_mid)
    z2 = ddim_step(x2, e2, ddim_alpha_prev(scheduler, t_mid, 2 * n))
    a_t = alphas[t].view(-1, 1, 1, 1)
    a_p = ddim_alpha_prev(scheduler, t, n).view(-1, 1, 1, 1)
    ratio = ((1 - a_p) / (1 - a_t)).sqrt()
    return (z2 - ratio * z) / (a_p.sqrt() - ratio * a_t.sqrt()), z2


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


class _Run:
    """What both methods share: accelerator, data, frozen text encoder, logging, checkpoints, progress."""

    def __init__(self, cfg: DistillConfig, teacher):
        from accelerate import Accelerator

        from mobilediff.data import ShapesConfig, ShapesDataset
        from mobilediff.loading import resolve_model
        from mobilediff.training import _latent_cache

        self.cfg = cfg
        self.acc = Accelerator(mixed_precision="no" if cfg.mixed_precision == "fp32" else cfg.mixed_precision)
        self.teacher = teacher
        self.prediction_type = teacher.scheduler.config.get("prediction_type", "epsilon")
        from diffusers import DDIMScheduler

        # the teacher's noise schedule and prediction type; trailing spacing so that the n-step timesteps are every
        # other 2n-step one (progressive rounds) -- this is also the scheduler the progressive students sample with
        self.scheduler = DDIMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing",
                                                   clip_sample=False, thresholding=False)
        self.alphas = self.scheduler.alphas_cumprod.float()
        teacher.text_encoder.requires_grad_(False).eval()
        teacher.unet.requires_grad_(False).eval()
        teacher.vae.requires_grad_(False).eval()
        res = teacher.unet.config.sample_size * teacher.vae_scale_factor
        data_cfg = ShapesConfig(resolution=res, supersample=2 if res <= 32 else 4)
        data = ShapesDataset(seed=cfg.seed + 2, config=data_cfg)
        vae_dir = resolve_model(cfg.teacher) / "vae"
        ns = SimpleNamespace(latent_cache=cfg.latent_cache, data=data_cfg)
        self.cache = _latent_cache(ns, teacher.vae, vae_dir, teacher.tokenizer, data, cfg.out, self.acc.autocast,
                                   self.acc.is_main_process)
        tok = teacher.tokenizer
        empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            self.uncond = teacher.text_encoder(empty).last_hidden_state.float()
        self.local = cfg.batch_size // self.acc.num_processes

    def batch(self, step: int):
        """(generator, latents, object mask, text embeddings) of global step ``step`` for this process."""
        g = torch.Generator().manual_seed((self.cfg.seed + 7) * 1_000_003 + step * 7919 + self.acc.process_index)
        idx = torch.randint(0, self.cfg.latent_cache, (self.local,), generator=g)
        with torch.no_grad():
            cond = self.teacher.text_encoder(self.cache["ids"][idx]).last_hidden_state.float()
        return g, self.cache["latents"][idx], self.cache["mask"][idx], cond

    def pix(self, mask):
        return 1.0 + self.cfg.object_weight * mask

    def log(self, row: dict) -> None:
        if self.acc.is_main_process:
            with open(self.cfg.out / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")


def _lr_schedule(cfg: DistillConfig, opt, done_in_leg: int, leg_steps: int):
    """Warm-up then cosine decay over a leg (the whole LCM run, or one progressive round), resumable."""
    from mobilediff.training import _lr_lambda

    return torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, leg_steps), last_epoch=done_in_leg - 1)


def _resume(cfg: DistillConfig, resume: str | None):
    from mobilediff.training import _resume_point

    return _resume_point(cfg.out, resume)


def _check_finite(loss, step, cfg):
    from mobilediff.training import _check_finite as check

    check(loss, step, cfg.out)


def train_lcm(cfg: DistillConfig, run: _Run, resume: str | None) -> tuple[torch.nn.Module, dict]:
    from mobilediff.checkpoint import restore
    from mobilediff.training import _progress

    teacher = run.teacher
    student = make_lcm_student(teacher.unet, cfg.time_cond_proj_dim)
    if cfg.init_student is not None:
        load_init_student(student, cfg.init_student)
    target = copy.deepcopy(student).requires_grad_(False).eval()
    start, elapsed0 = 0, 0.0
    ckpt = _resume(cfg, resume)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    if ckpt is not None:
        restore(ckpt, {"student": student, "target": target}, opt)
        start, elapsed0 = ckpt.step, ckpt.state.get("elapsed_seconds", 0.0)
    sched = _lr_schedule(cfg, opt, start, cfg.max_train_steps)
    student.train()
    student, opt = run.acc.prepare(student, opt)
    k = run.scheduler.config.num_train_timesteps // cfg.ddim_timesteps
    grid = torch.arange(1, cfg.ddim_timesteps + 1) * k - 1  # LCMScheduler's original timesteps: 19, 39, ..., 999
    alphas = run.alphas
    bar = _progress(run.acc, cfg.max_train_steps, start, "distill lcm")
    t0 = time.time()
    for step in range(start, cfg.max_train_steps):
        g, x0, mask, cond = run.batch(step)
        b = x0.shape[0]
        idx = torch.randint(0, cfg.ddim_timesteps, (b,), generator=g)
        t = grid[idx]
        t_prev = (t - k).clamp(min=0)
        noise = torch.randn(x0.shape, generator=g)
        scale = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(b, generator=g)
        w_emb = guidance_embedding(scale - 1, cfg.time_cond_proj_dim)
        z = run.scheduler.add_noise(x0, noise, t)
        with run.acc.autocast():
            out = student(z, t, encoder_hidden_states=cond, timestep_cond=w_emb).sample.float()
        c_skip, c_out = boundary_scalings(t)
        pred = c_skip * z + c_out * to_x0_eps(out, z, alphas[t], run.prediction_type)[0]
        with torch.no_grad():
            x_hat, e_hat = guided(teacher.unet, z, t, cond, run.uncond.expand_as(cond), scale, alphas[t],
                                  run.prediction_type)
            # the skipping-step solver: one DDIM step of the guided teacher from t to t - k (alpha at 0 for t < k)
            z_prev = ddim_step(x_hat, e_hat, alphas[t_prev])
            out_t = target(z_prev, t_prev, encoder_hidden_states=cond, timestep_cond=w_emb).sample.float()
            cs, co = boundary_scalings(t_prev)
            tgt = cs * z_prev + co * to_x0_eps(out_t, z_prev, alphas[t_prev], run.prediction_type)[0]
        pix = run.pix(mask)
        huber = torch.sqrt((pred - tgt) ** 2 + cfg.huber_c ** 2) - cfg.huber_c
        loss = ((huber * pix).mean(dim=(1, 2, 3)) / pix.mean(dim=(1, 2, 3))).mean()
        if cfg.inject_nan_at_step == step:
            loss = loss * float("nan")
        _check_finite(loss, step, cfg)
        run.acc.backward(loss)
        run.acc.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for pt, ps in zip(target.parameters(), run.acc.unwrap_model(student).parameters()):
                pt.lerp_(ps.detach(), 1 - cfg.target_ema)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.5f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        if (step + 1) % 25 == 0 or step + 1 == cfg.max_train_steps:
            run.log({"method": "lcm", "step": step + 1, "loss": loss.item(), "time": time.time() - t0})
        if run.acc.is_main_process and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_train_steps):
            save_checkpoint(cfg.out, step + 1, {"student": run.acc.unwrap_model(student).state_dict(),
                                                "target": target.state_dict()}, opt,
                            {"elapsed_seconds": elapsed0 + time.time() - t0})
    bar.close()
    return run.acc.unwrap_model(student).eval(), {"train_steps": cfg.max_train_steps,
                                                  "train_seconds": elapsed0 + time.time() - t0}


def train_progressive_round(cfg: DistillConfig, run: _Run, teacher_unet, n: int, r: int, ckpt) -> tuple[torch.nn.Module, dict]:
    """Round ``r``: a student at ``n`` steps learns the ``2n``-step guided teacher. Global steps r*K .. (r+1)*K."""
    from mobilediff.checkpoint import restore
    from mobilediff.training import _progress

    K = cfg.max_train_steps
    student = copy.deepcopy(teacher_unet).requires_grad_(True)
    teacher_unet = teacher_unet.requires_grad_(False).eval()
    first, start, elapsed0 = r * K, r * K, 0.0
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    if ckpt is not None and first < ckpt.step <= first + K:
        restore(ckpt, {"student": student}, opt)
        start, elapsed0 = ckpt.step, ckpt.state.get("round_elapsed_seconds", 0.0)
    sched = _lr_schedule(cfg, opt, start - first, K)
    student.train()
    student, opt = run.acc.prepare(student, opt)
    s_ts = ddim_timesteps(run.scheduler, n)  # the student's timesteps, e.g. [999, 874, ...] for 8 (trailing)
    t_ts = ddim_timesteps(run.scheduler, 2 * n)
    if not torch.equal(t_ts[::2], s_ts):
        raise MobilediffError(f"the scheduler's {2 * n}-step timesteps do not contain its {n}-step ones "
                              f"(timestep_spacing {run.scheduler.config.timestep_spacing!r}): use 'trailing'")
    alphas = run.alphas
    # Guidance is folded in once: the first round's target is the classifier-free-guided teacher; later rounds'
    # teachers are earlier students, which already give the guided prediction from the text alone (and were never
    # trained on the empty prompt), so their target is their own conditional prediction. Guiding them again would
    # compound the guidance every round.
    guidance = cfg.guidance if r == 0 else None
    bar = _progress(run.acc, K, start - first, f"distill progressive {2 * n}->{n} steps")
    t0 = time.time()
    for step in range(start, first + K):
        g, x0, mask, cond = run.batch(step)
        b = x0.shape[0]
        i = torch.randint(0, n, (b,), generator=g)
        t, t_mid = s_ts[i], t_ts[2 * i + 1]
        noise = torch.randn(x0.shape, generator=g)
        z = run.scheduler.add_noise(x0, noise, t)
        with torch.no_grad():
            x_tgt, _ = progressive_target(teacher_unet, run.scheduler, z, t, t_mid, n, cond, run.uncond.expand_as(cond),
                                          guidance, run.prediction_type)
        a_t = alphas[t].view(-1, 1, 1, 1)
        with run.acc.autocast():
            out = student(z, t, encoder_hidden_states=cond).sample.float()
        x_s = to_x0_eps(out, z, alphas[t], run.prediction_type)[0]
        # truncated-SNR weighting max(snr, 1) of the x0 error (Salimans & Ho), object-weighted per latent pixel
        w = torch.clamp(a_t / (1 - a_t), min=1.0).view(-1)
        pix = run.pix(mask)
        err = (((x_s - x_tgt) ** 2) * pix).mean(dim=(1, 2, 3)) / pix.mean(dim=(1, 2, 3))
        loss = (w * err).mean()
        if cfg.inject_nan_at_step == step:
            loss = loss * float("nan")
        _check_finite(loss, step, cfg)
        run.acc.backward(loss)
        run.acc.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.5f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        if (step + 1) % 25 == 0 or step + 1 == first + K:
            run.log({"method": "progressive", "round_steps": n, "step": step + 1, "loss": loss.item(),
                     "time": time.time() - t0})
        if run.acc.is_main_process and ((step + 1 - first) % cfg.checkpoint_every == 0 or step + 1 == first + K):
            save_checkpoint(cfg.out, step + 1, {"student": run.acc.unwrap_model(student).state_dict()}, opt,
                            {"round": r, "round_steps": n, "round_elapsed_seconds": elapsed0 + time.time() - t0})
    bar.close()
    return run.acc.unwrap_model(student).eval(), {"train_steps": K, "train_seconds": elapsed0 + time.time() - t0}


# ---------------------------------------------------------------------------------------------- output


def _record(cfg: DistillConfig, command: str, stats: dict, **extra) -> dict:
    import accelerate
    import diffusers
    import transformers

    from mobilediff.loading import resolve_model

    teacher_dir = resolve_model(cfg.teacher)
    return {"method": cfg.method, **extra, "command": command,
            "teacher": str(cfg.teacher) if str(cfg.teacher) == "default" else str(teacher_dir),
            "config": json.loads(json.dumps(asdict(cfg), default=str)), "stats": stats,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "torch_threads": torch.get_num_threads(),
                        "accelerator": "none" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)},
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__, "accelerate": accelerate.__version__}}


def _save_student(path: Path, teacher, teacher_dir: Path, unet, scheduler, pipeline_class: str, info: dict) -> None:
    import diffusers

    cls = getattr(diffusers, pipeline_class)
    pipe = cls(vae=teacher.vae, text_encoder=teacher.text_encoder, tokenizer=teacher.tokenizer, unet=unet,
               scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with atomic_dir(path, force=True) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        src = teacher_dir / "tokenizer"
        if src.is_dir():  # keep the CLIP BPE files (vocab.json, merges.txt, licence) the apps read
            shutil.rmtree(tmp / "tokenizer")
            shutil.copytree(src, tmp / "tokenizer")
        atomic_write_json(tmp / "distillation.json", info)


def student_defaults(model_dir: Path) -> dict | None:
    """The sampler, steps and guidance a distilled student was made for (from its distillation.json), or None."""
    f = Path(model_dir) / "distillation.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text()).get("sampling")


def distill(cfg: DistillConfig, resume: str | None = None, force: bool = False, command: str = "") -> list[Path]:
    """Run the distillation; returns the student pipeline folder(s) written (atomically)."""
    from mobilediff.loading import resolve_model

    validate(cfg)
    out = Path(cfg.out)
    if out.exists() and resume is None:
        if not force:
            raise MobilediffError(f"output directory {out} already exists (pass --resume latest to continue, or --force)")
    if resume is not None and resume != "latest" and not Path(resume).is_dir():
        raise MobilediffError(f"checkpoint folder not found: {resume}")
    teacher = load_teacher(cfg.teacher)  # refuses bad teachers before anything is written
    if out.exists() and resume is None:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(cfg, teacher)
    if cfg.method == "lcm":
        from diffusers import LCMScheduler

        student, stats = train_lcm(cfg, run, resume)
        sched = LCMScheduler.from_config(teacher.scheduler.config, original_inference_steps=cfg.ddim_timesteps,
                                         timestep_scaling=LCM_TIMESTEP_SCALING)
        info = _record(cfg, command, stats, sampling={"sampler": "lcm", "steps": cfg.steps, "guidance": cfg.guidance})
        if run.acc.is_main_process:
            _save_student(out / "model", teacher, resolve_model(cfg.teacher), student, sched, "LatentConsistencyModelPipeline", info)
        return [out / "model"]
    ckpt = _resume(cfg, resume)
    written, unet = [], teacher.unet
    for r, n in enumerate(progressive_rounds(cfg.teacher_steps, cfg.steps)):
        path = out / f"steps-{n}"
        done = path / "distillation.json"
        if done.is_file() and (ckpt is None or ckpt.step >= (r + 1) * cfg.max_train_steps):
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel.from_pretrained(str(path / "unet"), use_safetensors=True)
            written.append(path)
            continue
        unet, stats = train_progressive_round(cfg, run, unet, n, r, ckpt)
        info = _record(cfg, command, stats, round=r, teacher_steps=2 * n,
                       sampling={"sampler": "ddim", "steps": n, "guidance": 1.0})
        if run.acc.is_main_process:
            _save_student(path, teacher, resolve_model(cfg.teacher), unet, copy.deepcopy(run.scheduler),
                          "StableDiffusionPipeline", info)
        written.append(path)
    return written
