"""Flow-matching samplers as data: FlowMatchEulerDiscreteScheduler (SD3, SANA, Flux) tabulated like the others, the
table's run equal to diffusers' own loop to 1e-5, with a static shift, a resolution-dependent one (``mu`` from the
image's token count, as the pipelines compute it), explicit sigmas, a terminal shift and stochastic sampling."""
from __future__ import annotations

import math

import pytest
import torch

# a fixed velocity field, non-linear in the latent and dependent on the timestep: both loops call it alike
from mobilediff.bench.sampler_tables import field as _denoiser

# (label, scheduler config, flow_timestep_args options)
CONFIGS = [
    ("sd3-static-shift", {"shift": 3.0}, {}),
    ("no-shift", {}, {}),
    ("flux-dynamic", {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
                      "max_image_seq_len": 4096}, {"explicit_sigmas": True}),
    ("dynamic-linear", {"use_dynamic_shifting": True, "time_shift_type": "linear"}, {}),
    ("terminal-shift", {"shift": 2.0, "shift_terminal": 0.1}, {}),
]


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


@pytest.fixture(scope="module")
def sana_sprint():
    """diffusers' own SanaSprintPipeline around a tiny random SANA-Sprint transformer, fed prompt embeddings directly
    (no text encoder) and stopped at the latent."""
    from mobilediff.bench.sampler_tables import tiny_sana_sprint_pipeline

    pipe = tiny_sana_sprint_pipeline()
    return pipe, torch.randn(1, 16, 32), torch.ones(1, 16)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_an_scm_table_runs_as_sana_sprints_pipeline(sana_sprint, steps):
    """SANA-Sprint's sCM (TrigFlow) sampling, tabulated with the pipeline's transforms around the scheduler's step,
    gives diffusers' SanaSprintPipeline's latent to 1e-5 (its default angles: pi/2 down to 0, through 1.3 at 2
    steps), fresh noise drawn in the pipeline's order."""
    from diffusers import SCMScheduler

    from mobilediff.sampler_table import run_table, scm_table

    pipe, embeds, mask = sana_sprint
    with torch.no_grad():
        expected = pipe(prompt_embeds=embeds, prompt_attention_mask=mask, num_inference_steps=steps, height=256,
                        width=256, generator=torch.Generator().manual_seed(3), output_type="latent",
                        use_resolution_binning=False, guidance_scale=4.5,
                        intermediate_timesteps=1.3 if steps == 2 else None).images
        table = scm_table(SCMScheduler(sigma_data=0.5), steps)
        assert table.init_noise_sigma == 0.5 and len(table.timesteps) == steps
        assert 0.999 < table.timesteps[0] <= 1.0 + 1e-5  # sin / (cos + sin) at pi/2: the model's timestep in [0, 1]
        g = torch.Generator().manual_seed(3)
        noise = torch.randn(expected.shape, generator=g)
        fresh = [torch.randn(expected.shape, generator=g) for _ in range(steps)]
        guidance = torch.full([1], 4.5) * pipe.transformer.config.guidance_embeds_scale

        def denoise(x, t):
            return pipe.transformer(x, encoder_hidden_states=embeds, encoder_attention_mask=mask, guidance=guidance,
                                    timestep=torch.full([1], float(t)), return_dict=False)[0]

        got = run_table(table, denoise, noise, fresh_noise=lambda i: fresh[i])
    assert table.noise_coef[-1] == 0.0  # no noise after the last angle
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max())


def test_an_scm_table_refuses_a_bad_sigma_data():
    from diffusers import SCMScheduler

    from mobilediff.errors import MobilediffError
    from mobilediff.sampler_table import scm_table

    with pytest.raises(MobilediffError, match="sigma_data"):
        scm_table(SCMScheduler(sigma_data=0.0), 2)


def test_the_sampler_tables_benchmark_catches_a_wrong_table(monkeypatch):
    """benchmarks/sampler_tables.py's rows: within the bar as tabulated, far beyond it with one coefficient off."""
    from mobilediff.bench import sampler_tables as bench
    from mobilediff import sampler_table as st

    rows = bench.discrete_rows([2])
    assert all(r["max_abs_error"] <= bench.allowed(r, bench.BAR) for r in rows)
    real = st.sampler_table

    def off(*args, **kwargs):
        table = real(*args, **kwargs)
        table.output_coef[0][0] *= 1.01
        return table

    monkeypatch.setattr(st, "sampler_table", off)
    rows = bench.discrete_rows([2])
    assert all(r["max_abs_error"] > bench.allowed(r, bench.BAR) for r in rows)
