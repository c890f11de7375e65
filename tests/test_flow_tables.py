"""Flow-matching samplers as data: FlowMatchEulerDiscreteScheduler (SD3, SANA, Flux) tabulated like the others, the
table's run equal to diffusers' own loop to 1e-5, with a static shift, a resolution-dependent one (``mu`` from the
image's token count, as the pipelines compute it), explicit sigmas, a terminal shift and stochastic sampling."""
from __future__ import annotations

import math

import pytest
import torch

# (label, scheduler config, flow_timestep_args options)
CONFIGS = [
    ("sd3-static-shift", {"shift": 3.0}, {}),
    ("no-shift", {}, {}),
    ("flux-dynamic", {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
                      "max_image_seq_len": 4096}, {"explicit_sigmas": True}),
    ("dynamic-linear", {"use_dynamic_shifting": True, "time_shift_type": "linear"}, {}),
    ("terminal-shift", {"shift": 2.0, "shift_terminal": 0.1}, {}),
]


def _denoiser(x: torch.Tensor, t) -> torch.Tensor:
    """A fixed velocity field, non-linear in the latent and dependent on the timestep: both loops call it alike."""
    t = float(t)
    return 0.6 * x - 0.3 * torch.tanh(2 * x) + (t / 1000.0) * torch.linspace(-1, 1, x.numel()).reshape(x.shape)


def _diffusers_run(sched, steps: int, args: dict, noise: torch.Tensor, generator=None) -> torch.Tensor:
    sched.set_timesteps(steps, **args)
    x = noise.clone()  # the flow pipelines start from the draw itself
    for t in sched.timesteps:
        x = sched.step(_denoiser(x, t), t, x, generator=generator, return_dict=False)[0]
    return x


@pytest.mark.parametrize("label,config,options", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("steps", [1, 2, 4, 28])
def test_a_flow_table_runs_as_diffusers_loop(label, config, options, steps):
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    from mobilediff.sampler_table import flow_table, flow_timestep_args, run_table

    sched = FlowMatchEulerDiscreteScheduler(**config)
    args = flow_timestep_args(sched, 64, 64, patch_size=2, **options)
    if label == "terminal-shift" and steps == 1:  # stretching one sigma to the terminal divides by zero in diffusers
        from mobilediff.errors import MobilediffError

        with pytest.raises(MobilediffError, match="non-finite timesteps at 1 step"):
            flow_table(sched, steps, args)
        return
    table = flow_table(sched, steps, args)
    assert table.init_noise_sigma == 1.0 and table.input_scale == [1.0] * steps
    assert all(n == 0.0 for n in table.noise_coef)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(steps))
    got = run_table(table, _denoiser, noise)
    call = dict(args)
    if call.get("sigmas") == "linspace":
        call["sigmas"] = np.linspace(1.0, 1.0 / steps, steps).tolist()
    want = _diffusers_run(FlowMatchEulerDiscreteScheduler(**config), steps, call, noise)
    assert (got - want).abs().max().item() <= 1e-5
    # the timesteps the denoiser is fed are the scheduler's (sigma * 1000 after the shift)
    ref = FlowMatchEulerDiscreteScheduler(**config)
    ref.set_timesteps(steps, **call)
    assert table.timesteps == pytest.approx([float(t) for t in ref.timesteps], abs=1e-4)


def test_the_resolution_dependent_shift_follows_the_token_count():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from mobilediff.sampler_table import flow_timestep_args

    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    # the two ends of the interpolation: base_shift at 256 tokens, max_shift at 4096
    assert flow_timestep_args(sched, 32, 32, patch_size=2)["mu"] == pytest.approx(0.5)
    assert flow_timestep_args(sched, 128, 128, patch_size=2)["mu"] == pytest.approx(1.15)
    assert flow_timestep_args(FlowMatchEulerDiscreteScheduler(shift=3.0), 64, 64) == {}  # a static shift needs none
    # a larger image is shifted further toward high noise: its first steps' sigmas are higher
    small = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    small.set_timesteps(4, **flow_timestep_args(small, 32, 32, patch_size=2))
    large = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    large.set_timesteps(4, **flow_timestep_args(large, 128, 128, patch_size=2))
    assert float(large.sigmas[1]) > float(small.sigmas[1])
    assert math.isclose(float(large.sigmas[0]), 1.0) and float(large.sigmas[-1]) == 0.0


def test_stochastic_flow_sampling_tabulates_its_fresh_noise():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from mobilediff.sampler_table import flow_table, run_table

    steps = 4
    table = flow_table(FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True), steps)
    assert any(n != 0.0 for n in table.noise_coef[:-1]) and table.noise_coef[-1] == 0.0
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(7)
    draws = [torch.randn(noise.shape, generator=g) for _ in range(steps)]  # the draws diffusers makes, in order
    got = run_table(table, _denoiser, noise, fresh_noise=lambda i: draws[i])
    want = _diffusers_run(FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True), steps, {}, noise,
                          generator=torch.Generator().manual_seed(7))
    assert (got - want).abs().max().item() <= 1e-5
