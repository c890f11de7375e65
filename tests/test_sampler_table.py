"""The tabulated sampler reproduces diffusers' own scheduler loop, step for step, for every sampler."""
import pytest
import torch

from mobilediff.errors import MobilediffError
from mobilediff.models import SchedulerConfig
from mobilediff.sampler_table import run_table, sampler_table
from mobilediff.sampling import SAMPLERS, make_scheduler


def fake_denoiser(x, t):
    """A closed-form, nonlinear stand-in for a UNet: depends on the input and the timestep."""
    t = float(t)
    return torch.tanh(1.3 * x) * (0.2 + t / 1000) - 0.1 * x * x + 0.05 * torch.sin(torch.tensor(t / 97.0))


def diffusers_loop(scheduler, steps, noise, generator):
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = fake_denoiser(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, generator=generator, return_dict=False)[0]
    return x


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 2, 4, 8, 25])
def test_table_matches_the_scheduler(name, steps):
    base = SchedulerConfig().build().config
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    want = diffusers_loop(make_scheduler(name, base), steps, noise, torch.Generator().manual_seed(5))
    table = sampler_table(make_scheduler(name, base), steps)
    g = torch.Generator().manual_seed(5)
    got = run_table(table, fake_denoiser, noise, fresh_noise=lambda i: torch.randn(noise.shape, generator=g))
    # Euler starts at sigma_max ~ 2e4 on the cosine schedule: float32 rounding of O(sigma) terms that cancel
    # to O(1) makes diffusers' own first step uncertain at ~1e-6 * sigma, so the tolerance scales with it
    torch.testing.assert_close(got, want, atol=max(2e-4, 1e-6 * table.init_noise_sigma), rtol=1e-4)
    assert len(table.timesteps) == steps


def test_ddim_coefficients_match_the_closed_form():
    """DDIM (eta = 0) with v-prediction: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, with
    x0 = sqrt(a) x - sqrt(1 - a) v and eps = sqrt(1 - a) x + sqrt(a) v."""
    sched = make_scheduler("ddim", SchedulerConfig().build().config)
    table = sampler_table(sched, 4)
    sched.set_timesteps(4)
    ac = sched.alphas_cumprod.double()
    for i, t in enumerate(sched.timesteps):
        a = ac[t]
        a_prev = ac[sched.timesteps[i + 1]] if i + 1 < 4 else sched.final_alpha_cumprod.double()
        c_x = a_prev.sqrt() * a.sqrt() + (1 - a_prev).sqrt() * (1 - a).sqrt()
        c_v = -a_prev.sqrt() * (1 - a).sqrt() + (1 - a_prev).sqrt() * a.sqrt()
        assert table.latent_coef[i][0] == pytest.approx(float(c_x), abs=1e-5)
        assert table.output_coef[i][0] == pytest.approx(float(c_v), abs=1e-5)
        assert table.noise_coef[i] == 0.0


def test_multistep_solver_reaches_back_one_step_and_lcm_renoises():
    base = SchedulerConfig().build().config
    dpm = sampler_table(make_scheduler("dpmpp", base), 4)
    assert max(len(c) for c in dpm.output_coef) == 2
    lcm = sampler_table(make_scheduler("lcm", base), 4)
    assert all(c > 0 for c in lcm.noise_coef[:-1]) and lcm.noise_coef[-1] == 0.0


def test_steps_below_one_are_refused():
    with pytest.raises(MobilediffError, match="steps must be >= 1"):
        sampler_table(make_scheduler("ddim", SchedulerConfig().build().config), 0)
