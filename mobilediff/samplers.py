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


# A flow-matching model (trained on x_t = (1 - s) x_0 + s noise, predicting the velocity noise - x_0; its pipeline's
# scheduler has prediction_type "flow_prediction") samples with the same names, each a flow-matching scheduler:
# - euler, and ddim (whose deterministic step on the straight path is exactly Euler's), take diffusers'
#   FlowMatchEulerDiscreteScheduler at s = linspace(1, 1/N, N) (the sigmas Flux's pipelines pass: equal steps; the
#   scheduler's own grid ends at s = 1/1000, wasting a step of a few-step run);
# - dpmpp is DPM-Solver++(2M) on flow sigmas (SANA's sampler);
# - lcm is consistency multistep sampling, the flow counterpart of LCM's: x_0 = x - s v, re-noised to the next s with
#   a fresh draw (FlowMatchEulerDiscreteScheduler's stochastic_sampling), for flow consistency students.
FLOW_SAMPLERS: dict[str, SamplerSpec] = {
    "ddim": SamplerSpec("FlowMatchEulerDiscreteScheduler", (), "DDIM on the flow path (= flow-matching Euler)"),
    "dpmpp": SamplerSpec("DPMSolverMultistepScheduler",
                         (("algorithm_type", "dpmsolver++"), ("solver_order", 2), ("lower_order_final", True),
                          ("final_sigmas_type", "zero"), ("use_flow_sigmas", True),
                          ("prediction_type", "flow_prediction")), "DPM-Solver++(2M) on flow sigmas"),
    "euler": SamplerSpec("FlowMatchEulerDiscreteScheduler", (), "flow-matching Euler"),
    "lcm": SamplerSpec("FlowMatchEulerDiscreteScheduler", (("stochastic_sampling", True),),
                       "consistency multistep sampling (x_0 = x - s v, re-noised to the next s)"),
}


def _flow_match_config(config) -> bool:
    """Whether a scheduler config is a FlowMatch* scheduler's (a shift, no beta schedule)."""
    return "shift" in config and "beta_schedule" not in config


def is_flow(config) -> bool:
    """Whether a scheduler config is a flow-matching model's (flow prediction, or a FlowMatch* scheduler)."""
    return config.get("prediction_type") == "flow_prediction" or _flow_match_config(config)


def flow_shift(config) -> float:
    """The shift of a flow-matching scheduler config (a DPM-Solver's ``flow_shift``, a FlowMatch* one's ``shift``)."""
    return float(config.get("flow_shift") if "flow_shift" in config else config.get("shift", 1.0))


_LINSPACE_CLASSES: dict = {}


def _flow_euler(config, overrides: dict):
    """diffusers' FlowMatchEulerDiscreteScheduler set to s = linspace(1, 1/N, N) at N steps unless given sigmas or
    timesteps (its step is diffusers' own), with an identity ``scale_model_input`` (the PixArt pipelines call it; the
    flow-matching pipelines feed the latent as it is). A FlowMatchEuler config keeps its settings (dynamic shift)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    cls = _LINSPACE_CLASSES.get("euler")
    if cls is None:
        import numpy as np

        class FlowMatchEulerLinspace(FlowMatchEulerDiscreteScheduler):
            def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
                if sigmas is None and timesteps is None and num_inference_steps:
                    sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps).tolist()
                return super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu)

            def scale_model_input(self, sample, *args, **kwargs):
                return sample

            @property
            def init_noise_sigma(self) -> float:  # the pipelines start from the N(0, I) draw itself
                return 1.0

        cls = _LINSPACE_CLASSES["euler"] = FlowMatchEulerLinspace
    if _flow_match_config(config):
        return cls.from_config(config, **overrides)
    return cls(num_train_timesteps=int(config.get("num_train_timesteps", 1000)), shift=flow_shift(config), **overrides)


def make_scheduler(name: str, base_config) -> object:
    """A diffusers scheduler for sampler ``name`` from a pipeline's scheduler config (a flow-matching model's:
    :data:`FLOW_SAMPLERS`)."""
    import diffusers

    flow = is_flow(base_config)
    table = FLOW_SAMPLERS if flow else SAMPLERS
    if name not in table:
        raise MobilediffError(f"unknown sampler {name!r}; choose one of: {', '.join(table)}")
    spec = table[name]
    if flow and spec.scheduler_class == "FlowMatchEulerDiscreteScheduler":
        return _flow_euler(base_config, dict(spec.overrides))
    cls = getattr(diffusers, spec.scheduler_class)
    if flow and "use_flow_sigmas" not in base_config:  # from a FlowMatch* config
        return cls(num_train_timesteps=int(base_config.get("num_train_timesteps", 1000)),
                   flow_shift=flow_shift(base_config), **dict(spec.overrides))
    return cls.from_config(base_config, **dict(spec.overrides))


def samplers_for(guidance_embedding: bool, flow: bool = False) -> list[str]:
    """The samplers a model can use: LCM's for a guidance-embedding UNet (an LCM student); every one for a model
    guided by a CFG batch, LCM's included (a teacher with an LCM-LoRA adapter samples with it); every flow sampler
    for a flow-matching model (``flow``)."""
    if flow:
        return list(FLOW_SAMPLERS)
    return [name for name, spec in SAMPLERS.items() if spec.guidance_embedding or not guidance_embedding]
