"""The samplers mobilediff knows, as data: each name maps to a diffusers scheduler class and config overrides.

Adding a sampler is one entry in ``SAMPLERS``: the CLI's choices, the bundle's sampler tables and the apps (which
read tables, not scheduler code) follow. Nothing heavy is imported here.

Each sampler is built from the source pipeline's scheduler config whatever its class (DDIM, PNDM, Euler, DPM-Solver,
LCM, ...): the betas, prediction type and timestep spacing carry over. Sample clipping is switched off (a clipped
step is not linear, so it has no table; latent-space models are not trained with it).
"""
from __future__ import annotations

from dataclasses import dataclass

from mobilediff.errors import MobilediffError


@dataclass(frozen=True)
class SamplerSpec:
    scheduler_class: str  # diffusers class name
    overrides: tuple[tuple[str, object], ...] = ()  # config overrides on top of the pipeline's scheduler config
    description: str = ""
    # True: for students with a guidance-embedding input (LCM); False: for models guided by a CFG batch
    guidance_embedding: bool = False


SAMPLERS: dict[str, SamplerSpec] = {
    "ddim": SamplerSpec("DDIMScheduler", (("clip_sample", False),), "DDIM, deterministic (eta = 0)"),
    "dpmpp": SamplerSpec("DPMSolverMultistepScheduler",
                         (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("lower_order_final", True),
                          ("final_sigmas_type", "zero")), "DPM-Solver++(2M)"),
    "euler": SamplerSpec("EulerDiscreteScheduler", (), "Euler (Karras et al. 2022, ODE)"),
    "lcm": SamplerSpec("LCMScheduler", (("clip_sample", False),),
                      "latent consistency multistep sampler (LCM students, LCM-LoRA adapters)",
                      guidance_embedding=True),
}


def make_scheduler(name: str, base_config) -> object:
    """A diffusers scheduler for sampler ``name`` from a pipeline's scheduler config."""
    import diffusers

    if name not in SAMPLERS:
        raise MobilediffError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    spec = SAMPLERS[name]
    cls = getattr(diffusers, spec.scheduler_class)
    return cls.from_config(base_config, **dict(spec.overrides))


def samplers_for(guidance_embedding: bool) -> list[str]:
    """The samplers a model can use: LCM's for a guidance-embedding UNet (an LCM student); every one for a model
    guided by a CFG batch, LCM's included (a teacher with an LCM-LoRA adapter samples with it)."""
    return [name for name, spec in SAMPLERS.items() if spec.guidance_embedding or not guidance_embedding]
