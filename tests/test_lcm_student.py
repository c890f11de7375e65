"""The embedded LCM student (default:lcm): its quality does not fall with more steps, and it is a consistency
function of its teacher where that is easy to check.

An LCM student that gets worse with more sampling steps is broken (a student warm-started from a chain of earlier
students did: 1 step 0.848, 4 steps 0.801, 8 steps 0.770 prompt accuracy); the first test measures that directly.

Near the data (t <= 139) one DDIM step of the guided teacher already lands almost exactly where its whole ODE does,
so a consistency function worth its name is at least about as close to the ODE endpoint as that one step. Each
LCMScheduler step ends in the student's output, so an error here is paid once per sampling step.
"""
import pytest
import torch

from mobilediff.train.diffusion import (classifier_free_guidance, consistency_output, ddim_step, guidance_embedding,
                                        lcm_solver_grid, pred_original_and_epsilon)

GUIDANCE = 3.5


def _ode_endpoint(teacher, z, t0, cond, uncond):
    """The guided teacher's DDIM ODE from z at t0 down the LCM solver grid to t = 0."""
    ac = teacher.scheduler.alphas_cumprod.float()
    grid, _ = lcm_solver_grid(1000, 50)
    ts = [int(t) for t in grid.flip(0) if t <= t0] + [0]
    n = z.shape[0]
    for t, t_next in zip(ts[:-1], ts[1:]):
        x0, eps = _guided(teacher, z, t, cond, uncond)
        z = ddim_step(x0, eps, ac[torch.full((n,), t_next)])
    return z


def _guided(teacher, z, t, cond, uncond):
    n = z.shape[0]
    tt = torch.full((n,), t)
    out = teacher.unet(torch.cat([z, z]), torch.cat([tt, tt]), encoder_hidden_states=torch.cat([cond, uncond])).sample
    oc, ou = out.chunk(2)
    return pred_original_and_epsilon(classifier_free_guidance(ou, oc, torch.full((n,), GUIDANCE)), z,
                                     teacher.scheduler.alphas_cumprod[tt], teacher.scheduler.config.prediction_type)


@pytest.mark.slow
@torch.no_grad()
def test_lcm_student_does_not_get_worse_with_more_steps():
    from mobilediff.evaluator import Evaluator
    from mobilediff.loading import load_pipeline
    from mobilediff.quality import evaluate_pipeline

    student, evaluator = load_pipeline("default:lcm"), Evaluator.load()
    one, four = (evaluate_pipeline(student, evaluator, "lcm", steps, GUIDANCE, n=64).prompt_accuracy for steps in (1, 4))
    assert four >= one, (one, four)


@pytest.mark.xfail(strict=True, reason="the embedded LCM student (75 steps of distillation) passes at t = 139 and 59 "
                                       "but not yet at t = 19 (squared error 2.0e-4 against a bound of 1.7e-4)")
@torch.no_grad()
def test_lcm_student_is_consistent_with_its_teacher_near_the_data():
    from mobilediff.data import ShapesDataset
    from mobilediff.loading import load_pipeline
    from mobilediff.quality import EVAL_SEED

    teacher, student = load_pipeline("default"), load_pipeline("default:lcm")
    n = 16
    images, captions, _ = ShapesDataset(seed=EVAL_SEED).batch(0, n)
    latents = teacher.vae.encode(images).latent_dist.mean * teacher.vae.config.scaling_factor
    tok = teacher.tokenizer
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    cond = teacher.text_encoder(ids.input_ids).last_hidden_state
    empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    uncond = teacher.text_encoder(empty).last_hidden_state.expand_as(cond)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    w_embedding = guidance_embedding(torch.full((n,), GUIDANCE), student.unet.config.time_cond_proj_dim)
    ac = teacher.scheduler.alphas_cumprod.float()
    for t in (139, 59, 19):
        tt = torch.full((n,), t)
        z = teacher.scheduler.add_noise(latents, noise, tt)
        endpoint = _ode_endpoint(teacher, z, t, cond, uncond)
        one_step = _guided(teacher, z, t, cond, uncond)[0]
        out = student.unet(z, tt, encoder_hidden_states=cond, timestep_cond=w_embedding).sample
        f = consistency_output(z, pred_original_and_epsilon(out, z, ac[tt], student.scheduler.config.prediction_type)[0], tt)
        student_err, one_step_err = (f - endpoint).square().mean().item(), (one_step - endpoint).square().mean().item()
        assert student_err <= 1.5 * one_step_err + 1e-4, (t, student_err, one_step_err)
