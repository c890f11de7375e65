"""The LCM arithmetic of mobilediff.train against closed forms and against the diffusers code that samples students.

On Gaussian data N(mu, s^2 I) the exact denoiser is linear and the probability-flow ODE moves the normalised
coordinate u = (z_t - sqrt(a_t) mu) / sqrt(a_t s^2 + 1 - a_t) not at all, so the ideal consistency function is known
in closed form: f*(z_t) = sqrt(a_0) mu + sqrt(a_0 s^2 + 1 - a_0) u (the t = 0 sample, f* = identity at t = 0). With
classifier-free guidance between two such Gaussians of equal s, the guided denoiser is the one of N(mu_g, s^2) with
mu_g = mu_u + w (mu_c - mu_u). A fake teacher and a fake student built from these formulas check the LCM loss (its
skipping-step solver, boundary scalings, v conversions and guidance-embedding convention: f* is its fixed point) and
the multistep LCMScheduler sampling the student uses (the ideal student's samples do not change with the step count).
"""
import math
from contextlib import nullcontext
from types import SimpleNamespace

import torch

from mobilediff.train.diffusion import (boundary_scalings, consistency_output, guidance_embedding, lcm_solver_grid,
                                        pred_original_and_epsilon)

S = 0.7  # data std of both Gaussians
SHAPE = (4, 4, 4)  # latent (C, h, w)
EMB_DIM = 256


def _scheduler():
    from diffusers import DDIMScheduler

    from mobilediff.loading import DEFAULT_MODEL_DIR

    return DDIMScheduler.from_pretrained(str(DEFAULT_MODEL_DIR / "scheduler"))


def _means(ehs: torch.Tensor) -> torch.Tensor:
    """The Gaussian's mean for a (B, 77, 32) text embedding: its first two tokens, as a (B, 4, 4, 4) latent."""
    return ehs[:, :2, :].reshape(-1, *SHAPE)


def _decode_guidance(timestep_cond: torch.Tensor) -> torch.Tensor:
    """w from an embedding of w - 1 (VDM's sinusoidal embedding of (w - 1) * 1000: its lowest frequency is 1e-4)."""
    half = timestep_cond.shape[1] // 2
    angle = torch.atan2(timestep_cond[:, half - 1], timestep_cond[:, -1])
    return 1 + angle / (1000 * 1e-4)


def _v(sample, pred_original_sample, alpha_prod):
    """The v output whose x0 is ``pred_original_sample`` at ``sample``: v = (sqrt(a) z - x0) / sqrt(1 - a)."""
    a = alpha_prod.view(-1, 1, 1, 1)
    return (a.sqrt() * sample - pred_original_sample) / (1 - a).sqrt()


class GaussianTeacher(torch.nn.Module):
    """A v-prediction 'UNet' whose data, given a text embedding, is N(_means(ehs), S^2): its exact denoiser."""

    def __init__(self, alphas_cumprod):
        super().__init__()
        self.alphas_cumprod = alphas_cumprod

    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None):
        a = self.alphas_cumprod[timestep].view(-1, 1, 1, 1)
        mu = _means(encoder_hidden_states)
        x0 = mu + a.sqrt() * S ** 2 / (a * S ** 2 + 1 - a) * (sample - a.sqrt() * mu)
        return SimpleNamespace(sample=_v(sample, x0, self.alphas_cumprod[timestep]))


class IdealStudent(torch.nn.Module):
    """The exact consistency function of the guided teacher, as an LCM student UNet: reads w from ``timestep_cond``
    (``embedding_offset`` 1 reads the embedding as if it held w rather than w - 1: a convention error)."""

    def __init__(self, alphas_cumprod, uncond, embedding_offset=0.0):
        super().__init__()
        self.alphas_cumprod, self.uncond, self.offset = alphas_cumprod, uncond, embedding_offset

    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond):
        ac = self.alphas_cumprod
        a, a0 = ac[timestep].view(-1, 1, 1, 1), ac[0]
        w = (_decode_guidance(timestep_cond) - self.offset).view(-1, 1, 1, 1)
        mu_u = _means(self.uncond).expand_as(sample)
        mu = mu_u + w * (_means(encoder_hidden_states) - mu_u)
        u = (sample - a.sqrt() * mu) / (a * S ** 2 + 1 - a).sqrt()
        f = a0.sqrt() * mu + (a0 * S ** 2 + 1 - a0).sqrt() * u
        # the x0 whose boundary-scaled output c_skip z + c_out x0 is f (at t = 0, where c_out = 0, any x0 will do)
        c_skip, c_out = boundary_scalings(timestep)
        x0 = torch.where(c_out > 0, (f - c_skip * sample) / c_out.clamp(min=1e-12), f)
        return SimpleNamespace(sample=_v(sample, x0, ac[timestep]))


def _text(n, g):
    cond = torch.randn(n, 77, 32, generator=g)
    uncond = torch.randn(1, 77, 32, generator=g)
    return cond, uncond


def _lcm_loss(student, scheduler, cond, uncond, ddim_timesteps=50, guidance_range=(2.0, 6.0), n=64):
    """The LCM objective's mean loss over 4 steps on real data of the Gaussian teacher, ``student`` as student and target."""
    from mobilediff.train.distill import DistillConfig, LcmObjective

    g = torch.Generator().manual_seed(0)
    latents = _means(cond) + S * torch.randn(n, *SHAPE, generator=g)  # real data of each caption
    acc = SimpleNamespace(autocast=nullcontext, unwrap_model=lambda m: m)
    data = SimpleNamespace(accelerator=acc, teacher=SimpleNamespace(unet=GaussianTeacher(scheduler.alphas_cumprod)),
                           uncond=uncond, pixel_weight=lambda mask: torch.ones_like(mask),
                           batch=lambda step: (torch.Generator().manual_seed(step), latents, torch.zeros(n, 1, 4, 4), cond),
                           draw=lambda sample, *shape: sample((n, *shape)))  # one process: every row is ours
    cfg = DistillConfig(teacher="fake", method="lcm", steps=4, out=None, ddim_timesteps=ddim_timesteps,
                        guidance_min=guidance_range[0], guidance_max=guidance_range[1], time_cond_proj_dim=EMB_DIM)
    objective = LcmObjective(cfg, data, student, student, scheduler, "v_prediction")
    return sum(objective.loss(step)[0].item() for step in range(4)) / 4


def test_the_ideal_consistency_function_is_a_fixed_point_of_the_lcm_loss():
    """Student and target = the exact f*: the loss (pseudo-Huber, ~ mean absolute error) is only the skipping-step
    DDIM solver's discretisation error, 8e-4 on the 50-point grid. The same f* with the guidance embedding read
    one unit off (as if it held w, not w - 1) is 0.02."""
    scheduler = _scheduler()
    cond, uncond = _text(64, torch.Generator().manual_seed(1))
    ideal = _lcm_loss(IdealStudent(scheduler.alphas_cumprod, uncond), scheduler, cond, uncond)
    off = _lcm_loss(IdealStudent(scheduler.alphas_cumprod, uncond, embedding_offset=1.0), scheduler, cond, uncond)
    assert ideal < 2e-3 and off > 10 * ideal, (ideal, off)


def test_lcm_scheduler_samples_the_ideal_student_alike_at_every_step_count():
    """LCMScheduler (as the student's pipeline builds it) with f* and its guidance embedding: the samples follow
    N(sqrt(a_0) mu_g, a_0 s^2 + 1 - a_0) at 1, 2, 4 and 8 steps -- sampling adds no error of its own."""
    from diffusers import LCMScheduler

    scheduler = _scheduler()
    lcm = LCMScheduler.from_config(scheduler.config, original_inference_steps=50, timestep_scaling=10.0)
    n, w = 4096, 3.5
    g = torch.Generator().manual_seed(2)
    cond1, uncond = _text(1, g)
    cond = cond1.expand(n, -1, -1)
    student = IdealStudent(scheduler.alphas_cumprod, uncond)
    a0 = scheduler.alphas_cumprod[0]
    mu_u = _means(uncond)
    want_mean = a0.sqrt() * (mu_u + w * (_means(cond1) - mu_u))
    want_std = math.sqrt(a0 * S ** 2 + 1 - a0)
    emb = guidance_embedding(torch.full((n,), w), EMB_DIM)
    for steps in (1, 2, 4, 8):
        lcm.set_timesteps(steps)
        gen = torch.Generator().manual_seed(3)
        z = torch.randn(n, *SHAPE, generator=gen)
        for t in lcm.timesteps:
            out = student(z, torch.full((n,), int(t)), cond, emb).sample
            z = lcm.step(out, t, z, generator=gen).prev_sample
        assert (z.mean(0) - want_mean[0]).abs().max() < 0.1, steps
        assert abs(z.std(0).mean().item() - want_std) < 0.02, steps


def test_the_student_trains_at_every_timestep_its_sampler_visits():
    """The skipping-step solver's grid is LCMScheduler's ``original_inference_steps`` schedule, so every timestep of
    every step count the student can sample at is one it was trained at."""
    from diffusers import LCMScheduler

    for n in (50, 20, 10):
        grid, skip = lcm_solver_grid(1000, n)
        assert skip == 1000 // n and grid[-1] == 999
        lcm = LCMScheduler.from_config(_scheduler().config, original_inference_steps=n)
        for steps in range(1, n + 1):
            lcm.set_timesteps(steps)
            assert set(lcm.timesteps.tolist()) <= set(grid.tolist()), (n, steps)


def test_consistency_output_is_lcm_schedulers_denoised():
    from diffusers import LCMScheduler

    lcm = LCMScheduler.from_config(_scheduler().config, original_inference_steps=50, timestep_scaling=10.0)
    lcm.set_timesteps(4)
    g = torch.Generator().manual_seed(4)
    for t in lcm.timesteps:
        z, v = torch.randn(2, *SHAPE, generator=g), torch.randn(2, *SHAPE, generator=g)
        tb = torch.full((2,), int(t))
        x0 = pred_original_and_epsilon(v, z, lcm.alphas_cumprod[tb], "v_prediction")[0]
        want = lcm.step(v, t, z, generator=g).denoised
        torch.testing.assert_close(consistency_output(z, x0, tb), want, rtol=1e-5, atol=1e-6)


def test_guidance_embedding_is_what_the_lcm_pipeline_feeds_the_student(tiny_pipeline_dir):
    """LatentConsistencyModelPipeline at guidance_scale w passes the embedding of w - 1; training embeds the same."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    from mobilediff.loading import load_pipeline
    from mobilediff.train.distill import make_lcm_student

    teacher = load_pipeline(tiny_pipeline_dir)
    student = make_lcm_student(teacher.unet, EMB_DIM)
    pipe = LatentConsistencyModelPipeline(vae=teacher.vae, text_encoder=teacher.text_encoder,
                                          tokenizer=teacher.tokenizer, unet=student,
                                          scheduler=LCMScheduler.from_config(teacher.scheduler.config),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    student.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["timestep_cond"]), with_kwargs=True)
    pipe(prompt="a red circle", num_inference_steps=1, guidance_scale=3.5, output_type="latent")
    torch.testing.assert_close(seen[0], guidance_embedding(torch.tensor([3.5]), EMB_DIM))
