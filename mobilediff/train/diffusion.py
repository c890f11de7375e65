"""The diffusion arithmetic of training: prediction conversions, the DDIM step, classifier-free guidance, the LCM
consistency parameterisation and skipping-step solver, and the progressive-distillation target.

Symbols (the names in code say what a tensor is; the paper's symbol is in brackets). A batch carries one timestep
per example, so every ``alpha_prod_*`` is a (B,) tensor broadcast over (B, C, h, w) latents.

==========================  =========  ==========================================================================
name                        symbol     meaning
==========================  =========  ==========================================================================
``timestep``                t          training timestep in [0, num_train_timesteps), noise grows with t
``alpha_prod_t``            ᾱ_t        ``alphas_cumprod[t]``; the signal-to-noise ratio is ᾱ_t / (1 - ᾱ_t)
``sample``                  z_t        noisy latent: z_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε
``pred_original_sample``    x̂_0        the model's estimate of the clean latent x_0
``pred_epsilon``            ε̂          the model's estimate of the noise ε
``model_output``            ε̂ | v̂ | x̂_0  what the network outputs, per ``prediction_type``; v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0
``alpha_prod_t_prev``       ᾱ_{t'}     ᾱ at the timestep a deterministic DDIM step (η = 0) lands on
``guidance_scale``          w          classifier-free guidance in the pipelines' convention: 1 = the conditional
                                       prediction, no guidance; out = uncond + w (cond - uncond). LCM's guidance
                                       embedding is fed w - 1, as diffusers' LatentConsistencyModelPipeline does
``c_skip``, ``c_out``       c_skip, c_out  consistency-model boundary scalings: f(z_t, t) = c_skip z_t + c_out x̂_0,
                                       with f = identity at t = 0 (Song et al. 2023; LCM, Luo et al. 2023)
``timestep_scaling``        --         LCMScheduler multiplies t by this (10) inside c_skip and c_out
``skip``                    k          LCM's skipping step: the solver jumps from t to t - k, k = 1000 / N for an
                                       N-point DDIM grid (N = ``--ddim-timesteps``)
==========================  =========  ==========================================================================

Everything here is checked in the tests against the diffusers scheduler that samples the model (DDIMScheduler.step,
LCMScheduler.get_scalings_for_boundary_condition_discrete), so the training targets and the sampler agree.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from mobilediff.errors import MobilediffError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
LCM_TIMESTEP_SCALING = 10.0  # LCMScheduler's default ``timestep_scaling``
SIGMA_DATA = 0.5  # σ_data of the boundary scalings, as LCMScheduler

# a teacher as the solvers see it: (sample z_t, timesteps t) -> (pred_original_sample, pred_epsilon)
Predictor = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) in ``like``'s dtype, to scale (B, C, h, w) latents example by example."""
    return values.view(-1, 1, 1, 1).to(like.dtype)


def pred_original_and_epsilon(model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor,
                              prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) from a model output at noisy ``sample`` z_t (B, C, h, w) whose ᾱ_t is ``alpha_prod_t`` (B,).

    Raises MobilediffError for a prediction type other than epsilon, v_prediction or sample.
    """
    alpha_prod = _per_example(alpha_prod_t, sample)
    sqrt_alpha_prod, sqrt_one_minus_alpha_prod = alpha_prod.sqrt(), (1 - alpha_prod).sqrt()
    if prediction_type == "epsilon":  # x_0 = (z_t - sqrt(1 - ᾱ) ε) / sqrt(ᾱ)
        return (sample - sqrt_one_minus_alpha_prod * model_output) / sqrt_alpha_prod, model_output
    if prediction_type == "v_prediction":  # x_0 = sqrt(ᾱ) z_t - sqrt(1 - ᾱ) v,  ε = sqrt(ᾱ) v + sqrt(1 - ᾱ) z_t
        return (sqrt_alpha_prod * sample - sqrt_one_minus_alpha_prod * model_output,
                sqrt_alpha_prod * model_output + sqrt_one_minus_alpha_prod * sample)
    if prediction_type == "sample":  # ε = (z_t - sqrt(ᾱ) x_0) / sqrt(1 - ᾱ)
        return model_output, (sample - sqrt_alpha_prod * model_output) / sqrt_one_minus_alpha_prod
    raise MobilediffError(f"unsupported prediction type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}")


def signal_to_noise(alpha_prod_t: torch.Tensor) -> torch.Tensor:
    """SNR(t) = ᾱ_t / (1 - ᾱ_t), per example (B,)."""
    return alpha_prod_t / (1 - alpha_prod_t)


def classifier_free_guidance(uncond_output: torch.Tensor, cond_output: torch.Tensor,
                             guidance_scale: torch.Tensor) -> torch.Tensor:
    """uncond + w (cond - uncond), w (B,) in the pipelines' convention (1 = the conditional output): the one CFG rule
    (mobilediff.bundle.classifier_free_guidance) with a scale per example."""
    from mobilediff.bundle import classifier_free_guidance as rule

    return rule(uncond_output, cond_output, _per_example(guidance_scale, cond_output))


# ---------------------------------------------------------------------------------------------- DDIM


def ddim_step(pred_original_sample: torch.Tensor, pred_epsilon: torch.Tensor,
              alpha_prod_t_prev: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM update (η = 0, Song et al. 2021 eq. 12): z_{t'} = sqrt(ᾱ_{t'}) x̂_0 + sqrt(1 - ᾱ_{t'}) ε̂."""
    alpha_prod_prev = _per_example(alpha_prod_t_prev, pred_original_sample)
    return alpha_prod_prev.sqrt() * pred_original_sample + (1 - alpha_prod_prev).sqrt() * pred_epsilon


def ddim_alpha_prod_prev(scheduler, timestep: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
    """ᾱ_{t'} of the timestep t' = t - T / n that ``DDIMScheduler.step`` lands on at n steps (its
    ``final_alpha_cumprod`` below 0), per example (B,)."""
    alphas_cumprod = scheduler.alphas_cumprod
    prev_timestep = timestep - scheduler.config.num_train_timesteps // num_inference_steps
    return torch.where(prev_timestep >= 0, alphas_cumprod[prev_timestep.clamp(min=0)],
                       torch.as_tensor(scheduler.final_alpha_cumprod, dtype=alphas_cumprod.dtype))


def ddim_timesteps(scheduler, num_inference_steps: int) -> torch.Tensor:
    """The timesteps ``scheduler`` samples at with ``num_inference_steps`` steps (the scheduler is not changed)."""
    s = copy.deepcopy(scheduler)
    s.set_timesteps(num_inference_steps)
    return s.timesteps.clone()


# ---------------------------------------------------------------------------------------------- LCM


def lcm_solver_grid(num_train_timesteps: int, num_ddim_timesteps: int) -> tuple[torch.Tensor, int]:
    """(grid, k): the skipping-step solver's N-point grid t_n = (n + 1) k - 1 (19, 39, ..., 999 for N = 50), which is
    LCMScheduler's ``original_inference_steps`` schedule, and the skip k = T / N."""
    skip = num_train_timesteps // num_ddim_timesteps
    return torch.arange(1, num_ddim_timesteps + 1) * skip - 1, skip


@torch.no_grad()
def skipping_step_solver(predict: Predictor, alphas_cumprod: torch.Tensor, sample: torch.Tensor, timestep: torch.Tensor,
                         skip: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_{t_n}, t_n): LCM's skipping-step solver (Luo et al. 2023, eq. 8 with DDIM as Ψ), one deterministic DDIM step
    of the teacher from z_{t_{n+k}} at ``timestep`` straight to t_n = t_{n+k} - k; below the grid's first point it
    lands on t = 0 (ᾱ_0, as diffusers' DDIMSolver)."""
    timestep_prev = (timestep - skip).clamp(min=0)
    return ddim_step(*predict(sample, timestep), alphas_cumprod[timestep_prev]), timestep_prev


def boundary_scalings(timestep: torch.Tensor, timestep_scaling: float = LCM_TIMESTEP_SCALING):
    """(c_skip, c_out), each (B, 1, 1, 1), at discrete timesteps (B,), as LCMScheduler computes them:
    c_skip = σ² / ((s t)² + σ²), c_out = s t / sqrt((s t)² + σ²) with σ = σ_data, s = ``timestep_scaling``."""
    scaled_timestep = timestep.float() * timestep_scaling
    c_skip = SIGMA_DATA ** 2 / (scaled_timestep ** 2 + SIGMA_DATA ** 2)
    c_out = scaled_timestep / (scaled_timestep ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def consistency_output(sample: torch.Tensor, pred_original_sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """The consistency function f(z_t, t) = c_skip(t) z_t + c_out(t) x̂_0: LCMScheduler.step's ``denoised``."""
    c_skip, c_out = boundary_scalings(timestep)
    return c_skip * sample + c_out * pred_original_sample


def guidance_embedding(guidance_scale: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, dim) the guidance embedding of an LCM student at pipeline guidance scales w (B,): the sinusoidal embedding
    of w - 1, exactly what LatentConsistencyModelPipeline feeds to ``timestep_cond``."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.get_guidance_scale_embedding(None, guidance_scale - 1, embedding_dim=dim)


# ---------------------------------------------------------------------------------------------- progressive


@torch.no_grad()
def progressive_target(predict: Predictor, scheduler, sample: torch.Tensor, timestep: torch.Tensor,
                       timestep_mid: torch.Tensor, num_inference_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0 target, z_{t''}) of a progressive-distillation round whose student samples at n =
    ``num_inference_steps`` steps (Salimans & Ho 2022, Algorithm 2):

    1. two DDIM steps of the teacher at 2n steps, from z_t at ``timestep`` through ``timestep_mid``, exactly as
       DDIMScheduler takes them, give z_{t''};
    2. the target is the x̂_0 whose single DDIM step at n steps from z_t lands on z_{t''} (eq. 8):
       x̂_0 = (z_{t''} - r z_t) / (sqrt(ᾱ_{t''}) - r sqrt(ᾱ_t)),  r = sqrt((1 - ᾱ_{t''}) / (1 - ᾱ_t)).
    """
    alphas_cumprod = scheduler.alphas_cumprod.float()
    pred_original_sample, pred_epsilon = predict(sample, timestep)
    sample_mid = ddim_step(pred_original_sample, pred_epsilon,
                           ddim_alpha_prod_prev(scheduler, timestep, 2 * num_inference_steps))
    pred_original_sample, pred_epsilon = predict(sample_mid, timestep_mid)
    sample_two_steps = ddim_step(pred_original_sample, pred_epsilon,
                                 ddim_alpha_prod_prev(scheduler, timestep_mid, 2 * num_inference_steps))
    alpha_prod_t = _per_example(alphas_cumprod[timestep], sample)
    alpha_prod_t_prev = _per_example(ddim_alpha_prod_prev(scheduler, timestep, num_inference_steps), sample)
    ratio = ((1 - alpha_prod_t_prev) / (1 - alpha_prod_t)).sqrt()
    target = (sample_two_steps - ratio * sample) / (alpha_prod_t_prev.sqrt() - ratio * alpha_prod_t.sqrt())
    return target, sample_two_steps
