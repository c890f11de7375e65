"""The sampler as data: per-step linear coefficients read off diffusers' own schedulers.

Every sampler mobilediff ships (DDIM with eta = 0, DPM-Solver++(2M), Euler, LCM) updates the latent by a
*linear* combination of quantities the app already holds. For step i (0-based, N steps):

    model_input_i = input_scale[i] * latent_i                      (Euler scales its input; others use 1)
    output_i      = denoiser(model_input_i, timestep[i], text)     (after classifier-free guidance, if any)
    latent_{i+1}  = sum_k latent_coef[i][k] * latent_{i-k}         (k = 0 is the current latent)
                  + sum_k output_coef[i][k] * output_{i-k}         (multistep solvers reach back one step)
                  + noise_coef[i] * fresh N(0, I) noise            (LCM re-noises between steps)

with latent_0 = init_noise_sigma * N(0, I), and latent_N the final latent to decode.

The coefficients are not re-derived here: they are *measured* from the diffusers scheduler by running its
``step`` on symbolic inputs. Each latent, output and noise draw is a basis vector, and every scheduler
operation is linear in them, so what ``step`` returns is the coefficient vector itself. So an app that applies
the table does exactly what the scheduler does, and no app re-implements scheduler math.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from mobilediff.errors import MobilediffError

_TOL = 1e-9  # coefficients smaller than this are exact zeros of the symbolic run (float32 noise aside)


@dataclass
class SamplerTable:
    sampler: str
    steps: int
    init_noise_sigma: float
    timesteps: list[float]
    input_scale: list[float]
    latent_coef: list[list[float]]  # [i][k]: weight of latent_{i-k}
    output_coef: list[list[float]]  # [i][k]: weight of output_{i-k}
    noise_coef: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def _symbolic_noise(module, draw):
    """Replace a scheduler module's ``randn_tensor`` by ``draw`` for the duration of the block."""
    original = module.randn_tensor
    module.randn_tensor = lambda shape, **kw: draw()
    try:
        yield
    finally:
        module.randn_tensor = original


def _trim(v: list[float]) -> list[float]:
    while v and abs(v[-1]) < _TOL:
        v.pop()
    return v


_PROBE_SCALE = 1000.0  # a second measurement with every input scaled by this: a linear step scales its result alike


def _measure(scheduler, steps: int, unit: float):
    """Run a copy of ``scheduler`` for ``steps`` steps on basis vectors times ``unit``; return (the copy, and per step
    (input scale, next latent as a coefficient vector over the basis divided by ``unit``))."""
    import copy
    import importlib

    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(steps)
    n = len(sched.timesteps)
    # basis: latent_0..latent_{n-1}, output_0..output_{n-1}, noise_0..noise_{n-1}
    dim = 3 * n

    def e(j: int) -> torch.Tensor:
        v = torch.zeros(1, dim, dtype=torch.float32)
        v[0, j] = unit
        return v

    current = {"i": 0}

    def draw():  # the noise a step draws is the basis vector of that step's noise
        return e(2 * n + current["i"])

    module = importlib.import_module(type(sched).__module__)
    rows = []
    with _symbolic_noise(module, draw):
        for i, t in enumerate(sched.timesteps):
            current["i"] = i
            scale = float(sched.scale_model_input(torch.ones(1, 1), t).flatten()[0])
            res = sched.step(e(n + i), t, e(i), return_dict=False)
            rows.append((scale, res[0][0].double() / unit))
    return sched, rows


def sampler_table(scheduler, steps: int) -> SamplerTable:
    """Measure the per-step coefficients of a configured diffusers scheduler for ``steps`` steps.

    ``scheduler`` is a fresh instance (e.g. from :func:`mobilediff.sampling.make_scheduler`); it is copied,
    never mutated. The measurement is repeated with every input scaled by ``_PROBE_SCALE``: a step that clips or
    thresholds its sample (``clip_sample``, ``thresholding``) gives other coefficients there, and is refused.
    Raises MobilediffError if the scheduler is not linear in its inputs.
    """
    if steps < 1:
        raise MobilediffError(f"steps must be >= 1, got {steps}")
    name = type(scheduler).__name__
    sched, rows = _measure(scheduler, steps, 1.0)
    _, probe = _measure(scheduler, steps, _PROBE_SCALE)
    timesteps = [float(t) for t in sched.timesteps]
    n = len(timesteps)
    lat, out, noi = (lambda i: i), (lambda i: n + i), (lambda i: 2 * n + i)
    table = SamplerTable(sampler=name, steps=n, init_noise_sigma=float(sched.init_noise_sigma),
                         timesteps=timesteps, input_scale=[], latent_coef=[], output_coef=[], noise_coef=[])
    for i, ((scale, nxt), (_, scaled)) in enumerate(zip(rows, probe)):
        # anything outside the basis means the step was not linear (clipping, thresholding, ...)
        if not (torch.isfinite(nxt).all() and torch.isfinite(scaled).all()):
            raise MobilediffError(f"{name} is not linear in its inputs: cannot tabulate it")
        if ((nxt - scaled).abs() > 1e-4 * nxt.abs().clamp(min=1.0)).any():
            raise MobilediffError(f"{name} step {i} is not linear in its inputs (clip_sample or thresholding?): "
                                  "cannot tabulate it")
        table.input_scale.append(scale)
        table.latent_coef.append(_trim([float(nxt[lat(i - k)]) for k in range(i + 1)]))
        table.output_coef.append(_trim([float(nxt[out(i - k)]) for k in range(i + 1)]))
        table.noise_coef.append(float(nxt[noi(i)]))
        stray = nxt.clone()
        for k in range(i + 1):
            stray[lat(i - k)] = stray[out(i - k)] = 0
        stray[noi(i)] = 0
        if stray.abs().max() > 1e-5:
            raise MobilediffError(f"{name} step {i} depends on inputs outside the table")
    return table


def run_table(table, denoise, noise: torch.Tensor, fresh_noise=None, on_step=None) -> torch.Tensor:
    """Sample with a table: the one sampler loop (the Python reference of what the apps do, and the body of the
    fused graph, where it is traced).

    ``table`` is a :class:`SamplerTable` or a manifest's ``SamplerEntry`` (the same fields);
    ``denoise(model_input, timestep) -> output``; ``noise`` is the initial N(0, I) draw;
    ``fresh_noise(i)`` gives the re-noising draw of step i (needed only where noise_coef is non-zero);
    ``on_step(i, latent)`` sees the latent after step i.
    """
    latents, outputs = [], []  # newest first
    x = noise * table.init_noise_sigma
    for i in range(table.steps):
        latents.insert(0, x)
        outputs.insert(0, denoise(x * table.input_scale[i], table.timesteps[i]))
        nxt = sum(c * latents[k] for k, c in enumerate(table.latent_coef[i]))
        nxt = nxt + sum(c * outputs[k] for k, c in enumerate(table.output_coef[i]))
        if table.noise_coef[i] != 0.0:
            if fresh_noise is None:
                raise MobilediffError(f"step {i} of {table.sampler} needs fresh noise")
            nxt = nxt + table.noise_coef[i] * fresh_noise(i)
        x = nxt
        if on_step is not None:
            on_step(i, x)
    return x
