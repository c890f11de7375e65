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


def _fresh(scheduler, steps: int, start: int = 0, timestep_args: dict | None = None):
    """A copy of ``scheduler`` set to ``steps`` steps, beginning at step ``start`` as diffusers' image-to-image and
    inpainting pipelines begin it (``set_begin_index``, where the class has it). ``timestep_args``: what the
    pipeline passes to ``set_timesteps`` besides the step count (a flow-matching pipeline's ``mu``, its ``sigmas``:
    :func:`flow_timestep_args`)."""
    import copy

    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(steps, **(timestep_args or {}))
    if start and hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start * sched.order)
    return sched


def _input_scale(sched, t) -> float:
    """The scheduler's model-input scale at ``t`` (1 for the flow-matching schedulers, which have no
    ``scale_model_input``: their pipelines feed the latent as it is)."""
    if not hasattr(sched, "scale_model_input"):
        return 1.0
    return float(sched.scale_model_input(torch.ones(1, 1), t).flatten()[0])


def _measure(scheduler, steps: int, unit: float, start: int = 0, blend=None, timestep_args: dict | None = None):
    """Run a copy of ``scheduler`` for ``steps`` steps (from step ``start`` on, as an image-to-image run does) on
    basis vectors times ``unit``; return (the copy, its timesteps from ``start``, and per step (input scale, next
    latent as a coefficient vector over the basis divided by ``unit``)). ``blend(sched, i, t_next)`` is called after
    every step but the last with the scheduler as the step left it and the next timestep (the inpainting blend's
    ``add_noise`` point)."""
    import importlib

    sched = _fresh(scheduler, steps, start, timestep_args)
    if not torch.isfinite(torch.as_tensor(sched.timesteps, dtype=torch.float64)).all():
        raise MobilediffError(f"{type(sched).__name__} gives non-finite timesteps at {steps} step(s) with this "
                              f"configuration (diffusers cannot sample with it either)")
    timesteps = list(sched.timesteps)[start * sched.order:]
    n = len(timesteps)
    # basis: latent_0..latent_{n-1}, output_0..output_{n-1}, noise_0..noise_{n-1}
    dim = 3 * n

    def e(j: int) -> torch.Tensor:
        v = torch.zeros(1, dim, dtype=torch.float32)
        v[0, j] = unit
        return v

    current = {"i": 0}

    def draw():  # the noise a step draws is the basis vector of that step's noise
        return e(2 * n + current["i"])

    module = importlib.import_module(type(sched).step.__module__)  # where the step draws its noise
    rows = []
    with _symbolic_noise(module, draw):
        for i, t in enumerate(timesteps):
            current["i"] = i
            scale = _input_scale(sched, t)
            res = sched.step(e(n + i), t, e(i), return_dict=False)
            rows.append((scale, res[0][0].double() / unit))
            if blend is not None and i + 1 < n:
                blend(sched, i, timesteps[i + 1])
    return sched, timesteps, rows


def sampler_table(scheduler, steps: int, start: int = 0, blend=None, timestep_args: dict | None = None) -> SamplerTable:
    """Measure the per-step coefficients of a configured diffusers scheduler for ``steps`` steps (``start`` > 0: the
    run an image-to-image pipeline makes from step ``start`` of those ``steps``, its table holding the remaining ones;
    ``blend``: see :func:`_measure`; ``timestep_args``: see :func:`_fresh`).

    Flow-matching schedulers (``FlowMatchEulerDiscreteScheduler``: SD3, SANA, Flux) are tabulated alike: their step
    ``x + (sigma_next - sigma) * v`` is linear too; their input scale and ``init_noise_sigma`` are 1 (the pipelines
    start from the N(0, I) draw itself) and their timesteps ``sigma * num_train_timesteps`` after the shift.

    ``scheduler`` is a fresh instance (e.g. from :func:`mobilediff.sampling.make_scheduler`); it is copied,
    never mutated. The measurement is repeated with every input scaled by ``_PROBE_SCALE``: a step that clips or
    thresholds its sample (``clip_sample``, ``thresholding``) gives other coefficients there, and is refused.
    Raises MobilediffError if the scheduler is not linear in its inputs.
    """
    if steps < 1:
        raise MobilediffError(f"steps must be >= 1, got {steps}")
    name = type(scheduler).__name__
    sched, timesteps, rows = _measure(scheduler, steps, 1.0, start, blend, timestep_args)
    _, _, probe = _measure(scheduler, steps, _PROBE_SCALE, start, timestep_args=timestep_args)
    return _tabulate(name, float(getattr(sched, "init_noise_sigma", 1.0)), [float(t) for t in timesteps], rows, probe)


def _tabulate(name: str, init_noise_sigma: float, timesteps: list[float], rows: list, probe: list) -> SamplerTable:
    """The table of a measured run: ``rows`` and ``probe`` are per step (input scale, next latent as a coefficient
    vector over latents, outputs and noise draws), ``probe`` measured with every input times ``_PROBE_SCALE``."""
    n = len(timesteps)
    lat, out, noi = (lambda i: i), (lambda i: n + i), (lambda i: 2 * n + i)
    table = SamplerTable(sampler=name, steps=n, init_noise_sigma=init_noise_sigma,
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


# ------------------------------------------------------------------------------------------------- flow matching
def flow_timestep_args(scheduler, latent_height: int, latent_width: int, patch_size: int = 1,
                       explicit_sigmas: bool = False) -> dict:
    """The ``set_timesteps`` arguments a flow-matching pipeline passes besides the step count, for a latent of
    ``latent_height`` x ``latent_width`` cut into ``patch_size`` patches:

    - ``mu`` when the scheduler shifts with the resolution (``use_dynamic_shifting``): the shift interpolated
      linearly in the image's token count between ``base_shift`` at ``base_image_seq_len`` tokens and
      ``max_shift`` at ``max_image_seq_len`` (diffusers' ``calculate_shift``, as the SD3 / Flux / SANA pipelines
      compute it);
    - ``sigmas`` = linspace(1, 1 / N, N) where the pipeline passes them itself (``explicit_sigmas``: Flux's
      pipelines), filled in per step count by :func:`flow_table`.
    """
    cfg = scheduler.config
    args = {}
    if cfg.get("use_dynamic_shifting", False):
        tokens = (latent_height // patch_size) * (latent_width // patch_size)
        lo, hi = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
        b0, b1 = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
        slope = (b1 - b0) / (hi - lo)
        args["mu"] = float(tokens * slope + (b0 - slope * lo))
    if explicit_sigmas:
        args["sigmas"] = "linspace"
    return args


def flow_table(scheduler, steps: int, timestep_args: dict | None = None) -> SamplerTable:
    """:func:`sampler_table` of a flow-matching scheduler with the pipeline's ``set_timesteps`` arguments
    (:func:`flow_timestep_args`; ``sigmas="linspace"`` becomes linspace(1, 1 / steps, steps))."""
    import numpy as np

    args = dict(timestep_args or {})
    if args.get("sigmas") == "linspace":
        args["sigmas"] = np.linspace(1.0, 1.0 / steps, steps).tolist()
    return sampler_table(scheduler, steps, timestep_args=args)


# ---------------------------------------------------------------------------------- sCM (TrigFlow), SANA-Sprint
SCM_MAX_TIMESTEP = 1.57080  # SanaSprintPipeline's defaults: the first TrigFlow angle, and the middle one at 2 steps
SCM_INTERMEDIATE_TIMESTEP = 1.3


def scm_table(scheduler, steps: int, max_timestep: float = SCM_MAX_TIMESTEP,
              intermediate_timestep: float = SCM_INTERMEDIATE_TIMESTEP) -> SamplerTable:
    """The table of a SANA-Sprint run: diffusers' ``SCMScheduler`` (TrigFlow angles from ``max_timestep`` down to 0,
    through ``intermediate_timestep`` at 2 steps) inside ``SanaSprintPipeline``'s loop, which is linear too:

    - the latent starts as N(0, I) x ``sigma_data`` (``init_noise_sigma``);
    - at angle ``t`` the model sees ``latent / sigma_data x a`` at timestep ``s = sin t / (cos t + sin t)``, where
      ``a = sqrt(s^2 + (1 - s)^2)`` (``input_scale``);
    - its output ``F`` becomes the velocity ``((1 - 2 s) x_in + (1 - 2 s + 2 s^2) F) / a x sigma_data``, which the
      scheduler's step turns into ``x0 = cos t x latent - sin t x velocity`` and the next latent
      ``cos t' x x0 + sin t' x sigma_data x noise`` (no noise at the last angle, 0);
    - the image's latent is the last ``x0 / sigma_data``, folded into the last row.

    The scheduler's step is measured as :func:`sampler_table` measures any step (basis vectors, probed at a second
    scale); the pipeline's transforms around it are applied to the same basis vectors. ``sigma_data`` is the
    scheduler's."""
    import copy
    import importlib

    if steps < 1:
        raise MobilediffError(f"steps must be >= 1, got {steps}")
    name = type(scheduler).__name__
    sigma = float(scheduler.config.sigma_data)
    if not (sigma > 0 and torch.isfinite(torch.tensor(sigma))):
        raise MobilediffError(f"{name}: sigma_data must be a finite number > 0, got {sigma}")
    module = importlib.import_module(type(scheduler).__module__)

    def measure(unit: float):
        sched = copy.deepcopy(scheduler)
        sched.set_timesteps(steps, max_timesteps=max_timestep,
                            intermediate_timesteps=intermediate_timestep if steps == 2 else None)
        sched.set_begin_index(0)
        angles = list(sched.timesteps)[:-1]
        n = len(angles)

        def e(j: int) -> torch.Tensor:
            v = torch.zeros(1, 3 * n, dtype=torch.float64)
            v[0, j] = unit
            return v

        current = {"i": 0}
        rows, timesteps = [], []
        with _symbolic_noise(module, lambda: e(2 * n + current["i"])):
            for i, t in enumerate(angles):
                current["i"] = i
                t = torch.as_tensor(t, dtype=torch.float64)
                s = torch.sin(t) / (torch.cos(t) + torch.sin(t))
                a = torch.sqrt(s ** 2 + (1 - s) ** 2)
                x_in = e(i) / sigma * a
                velocity = ((1 - 2 * s) * x_in + (1 - 2 * s + 2 * s ** 2) * e(n + i)) / a * sigma
                latent, x0 = sched.step(velocity, t, e(i), return_dict=False)
                nxt = (x0 / sigma if i == n - 1 else latent)[0] / unit
                rows.append((float(a / sigma), nxt))
                timesteps.append(float(s))
        return timesteps, rows

    timesteps, rows = measure(1.0)
    _, probe = measure(_PROBE_SCALE)
    return _tabulate(name, sigma, timesteps, rows, probe)


# ------------------------------------------------------------------------------------ image-to-image and inpainting
def _add_noise(sched, t) -> list[float]:
    """[image_coef, noise_coef] of ``sched.add_noise(image, noise, t)`` in the scheduler's current state: measured
    on basis vectors (the step is linear in both), as the tables are."""
    image = torch.tensor([[[[1.0, 0.0]]]])
    noise = torch.tensor([[[[0.0, 1.0]]]])
    out = sched.add_noise(image, noise, torch.as_tensor([t])).flatten().double()
    return [float(out[0]), float(out[1])]


def image_tables(scheduler, steps: int, table: SamplerTable) -> dict:
    """What image-to-image and inpainting need beyond ``table`` (the full ``steps``-step table of ``scheduler``), as
    diffusers' StableDiffusionImg2ImgPipeline and StableDiffusionInpaintPipeline run it:

    - ``add_noise[j]``: [image_coef, noise_coef] with which the scheduler noises a clean latent to timestep j
      (the start of a run from step j, and the inpainting blend's known region after the step before j);
    - ``starts``: {j: table of the run from step j} for every start whose run is not the full table's rows from j
      (a multistep solver's first step is of lower order); a start not listed runs the full table's rows from j.

    Raises MobilediffError if the blend the pipeline computes mid-run differs from ``add_noise`` of that timestep
    (a scheduler whose noising depends on more than the step it is at cannot be tabulated)."""
    noising = []
    for j in range(table.steps):
        sched = _fresh(scheduler, steps, j)
        noising.append(_add_noise(sched, sched.timesteps[j * sched.order]))
    starts = {}
    for j in range(1, table.steps):
        def check(sched, i, t_next, j=j):
            got = _add_noise(sched, t_next)
            want = noising[j + i + 1]
            if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(got, want)):
                raise MobilediffError(f"{table.sampler}: the inpainting blend after step {j + i} noises with "
                                      f"{got}, not the start coefficients {want}: cannot tabulate it")

        sub = sampler_table(scheduler, steps, start=j, blend=check)
        if sub.to_dict() != {**suffix(table, j).to_dict(), "init_noise_sigma": sub.init_noise_sigma}:
            starts[str(j)] = sub.to_dict()
    return {"add_noise": noising, "starts": starts}


def suffix(table, start: int) -> SamplerTable:
    """The rows of ``table`` from step ``start`` on, as a table (a run's earlier latents and outputs are dropped, so
    a row that reaches back before ``start`` keeps only the coefficients within the run)."""
    n = table.steps - start
    return SamplerTable(sampler=table.sampler, steps=n, init_noise_sigma=table.init_noise_sigma,
                        timesteps=list(table.timesteps[start:]), input_scale=list(table.input_scale[start:]),
                        latent_coef=[list(r[:i + 1]) for i, r in enumerate(table.latent_coef[start:])],
                        output_coef=[list(r[:i + 1]) for i, r in enumerate(table.output_coef[start:])],
                        noise_coef=list(table.noise_coef[start:]))


def strength_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` an image-to-image run at ``strength`` denoises, diffusers' rule:
    ``min(floor(steps * strength), steps)``. Raises MobilediffError for a strength outside (0, 1] or one that leaves
    no step."""
    import math

    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0 < strength <= 1):
        raise MobilediffError(f"--strength must be in (0, 1], got {strength}")
    k = min(int(steps * strength), steps)
    if k < 1:
        raise MobilediffError(f"--strength {strength:g} denoises no step of {steps}: give at least {1 / steps:.3g}, "
                              f"or more steps")
    return k


def start_table(table, strength: float):
    """(run table, start index) of an image-to-image run of ``table`` at ``strength``: the table's ``starts`` entry
    for the start where it has one, else its rows from there (:func:`suffix`)."""
    k = strength_steps(table.steps, strength)
    start = table.steps - k
    starts = getattr(table, "starts", None) or {}
    if str(start) in starts:
        s = starts[str(start)]
        return SamplerTable(**{f: s[f] for f in SamplerTable.__dataclass_fields__}), start
    return suffix(table, start), start


def run_image_table(table, denoise, image_latent: torch.Tensor | None, noise: torch.Tensor, strength: float,
                    mask: torch.Tensor | None = None, fresh_noise=None, on_step=None, blend: bool = True) -> torch.Tensor:
    """Image-to-image (``mask`` None) or inpainting with a tabulated sampler, as diffusers' StableDiffusionImg2Img-
    and (4-channel UNet) StableDiffusionInpaintPipeline run: start from the scaled clean latent ``image_latent`` noised
    to the start step (inpainting at strength 1: from ``noise`` alone, as text-to-image), and for inpainting blend
    after every step ``(1 - mask) * known + mask * latent``, ``known`` the clean latent noised to the next step (the
    clean latent after the last). ``mask``: (1, 1, h, w) of 0 (keep) and 1 (repaint). ``table`` carries
    ``add_noise`` (and ``starts``) from :func:`image_tables`. ``blend=False``: an inpainting UNet's run (it sees
    the mask and the masked image itself): the start rule of inpainting, no blend (``image_latent`` None at strength
    1, where it is not used)."""
    noising = getattr(table, "add_noise", None)
    if not noising:
        raise MobilediffError(f"the {table.sampler or 'sampler'} table has no image-to-image coefficients "
                              f"(export the bundle with --image-modes)")
    run, start = start_table(table, strength)
    a, b = noising[start]
    if mask is not None and strength == 1.0:
        init = noise * table.init_noise_sigma
    else:
        init = a * image_latent + b * noise
    mix = None
    if mask is not None and blend:
        def mix(i: int, x: torch.Tensor) -> torch.Tensor:
            if i + 1 < run.steps:
                ka, kb = noising[start + i + 1]
                known = ka * image_latent + kb * noise
            else:
                known = image_latent
            return (1 - mask) * known + mask * x
    return run_table(run, denoise, noise, fresh_noise, on_step, init=init, blend=mix)


def run_table(table, denoise, noise: torch.Tensor, fresh_noise=None, on_step=None, init: torch.Tensor | None = None,
              blend=None) -> torch.Tensor:
    """Sample with a table: the one sampler loop (the Python reference of what the apps do, and the body of the
    fused graph, where it is traced).

    ``table`` is a :class:`SamplerTable` or a manifest's ``SamplerEntry`` (the same fields);
    ``denoise(model_input, timestep) -> output``; ``noise`` is the initial N(0, I) draw;
    ``fresh_noise(i)`` gives the re-noising draw of step i (needed only where noise_coef is non-zero);
    ``on_step(i, latent)`` sees the latent after step i; ``init`` replaces the first latent
    (``noise * init_noise_sigma``) and ``blend(i, latent)`` the latent after step i (image-to-image and inpainting,
    :func:`run_image_table`).
    """
    latents, outputs = [], []  # newest first
    x = noise * table.init_noise_sigma if init is None else init
    for i in range(table.steps):
        latents.insert(0, x)
        outputs.insert(0, denoise(x * table.input_scale[i], table.timesteps[i]))
        nxt = sum(c * latents[k] for k, c in enumerate(table.latent_coef[i]))
        nxt = nxt + sum(c * outputs[k] for k, c in enumerate(table.output_coef[i]))
        if table.noise_coef[i] != 0.0:
            if fresh_noise is None:
                raise MobilediffError(f"step {i} of {table.sampler} needs fresh noise")
            nxt = nxt + table.noise_coef[i] * fresh_noise(i)
        x = nxt if blend is None else blend(i, nxt)
        if on_step is not None:
            on_step(i, x)
    return x
