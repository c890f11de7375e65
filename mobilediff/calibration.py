"""Calibration data for post-training quantization: the inputs each component really sees while a pipeline samples.

:func:`record_calibration` runs the PyTorch pipeline (any pipeline of the SD family, any sampler and step count)
on prompts of the training domain -- not the evaluation prompts -- with hooks on the text encoder, the UNet and
the VAE decoder, and keeps a bounded, seeded, uniform sample of rows per component (reservoir sampling: memory
never exceeds ``max_rows`` rows per component however long the trajectories are). Rows are laid out exactly as
the bundle's declared inputs (:mod:`mobilediff.components`): ``input_ids`` int32; ``sample``, ``timestep``,
``encoder_hidden_states`` [, ``timestep_cond``] for the UNet (the CFG batch split into its rows, as a runtime
feeds them); ``latent_sample`` (unscaled) for the VAE decoder.

Non-finite values anywhere along the trajectories stop the recording with a clear error: quantizing against
them would calibrate ranges to infinity.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from mobilediff.bundle import COMPONENTS
from mobilediff.errors import MobilediffError

CALIBRATION_SEED = 77_000  # data seed of the calibration prompts: disjoint from the evaluation set's


class _Reservoir:
    def __init__(self, capacity: int, seed: int):
        self.capacity, self.rng, self.rows, self.seen = capacity, random.Random(seed), [], 0

    def add(self, row: tuple[torch.Tensor, ...]) -> None:
        self.seen += 1
        if len(self.rows) < self.capacity:
            self.rows.append(row)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.capacity:
                self.rows[j] = row


@dataclass
class CalibrationSet:
    """Per component: a list of rows, each a tuple of batch-1 tensors in the component's declared input order."""

    rows: dict[str, list[tuple[torch.Tensor, ...]]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # rows observed before subsampling
    settings: dict = field(default_factory=dict)

    def batches(self, component: str) -> list[tuple[torch.Tensor, ...]]:
        if not self.rows.get(component):
            raise MobilediffError(f"no calibration rows recorded for {component}")
        return self.rows[component]

    def summary(self) -> dict:
        return {"settings": self.settings, "rows": {k: len(v) for k, v in self.rows.items()}, "observed": self.seen}


def _check_finite(name: str, tensors) -> None:
    for t in tensors:
        if t is not None and t.is_floating_point() and not torch.isfinite(t).all():
            raise MobilediffError(f"calibration stopped: the model's {name} values turned non-finite while sampling; "
                                  "this model cannot be calibrated (check its weights, or sample with fewer steps)")


def calibration_prompts(n: int, seed: int = CALIBRATION_SEED) -> list[str]:
    """Captions from the training domain with a seed disjoint from the evaluation prompts."""
    from mobilediff.data import ShapesDataset

    return [s.caption for s in ShapesDataset(seed=seed).scenes(0, n)]


@torch.no_grad()
def record_calibration(pipe, prompts: list[str], steps: int, sampler: str, guidance: float, max_rows: int = 64,
                       seed: int = 0, batch_size: int = 16) -> CalibrationSet:
    """Sample ``prompts`` with ``pipe`` and keep at most ``max_rows`` input rows per component (see module doc)."""
    from mobilediff.sampling import generate

    if max_rows < 1:
        raise MobilediffError(f"max_rows must be >= 1, got {max_rows}")
    res = {c: _Reservoir(max_rows, seed * 1009 + i) for i, c in enumerate(COMPONENTS)}
    with_cond = bool(pipe.unet.config.time_cond_proj_dim)

    def te_hook(module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        for row in ids:
            res["text_encoder"].add((row[None].to(torch.int32).clone(),))

    def unet_hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        ehs = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        cond = kwargs.get("timestep_cond")
        _check_finite("UNet input", (sample, ehs, cond))
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
        for i in range(sample.shape[0]):
            row = (sample[i:i + 1].float().clone(), t[i:i + 1].clone(), ehs[i:i + 1].float().clone())
            if with_cond:
                row = row + (cond[i:i + 1].float().clone(),)
            res["unet"].add(row)

    def unet_out_hook(module, args, kwargs, output):
        _check_finite("UNet output", (output[0] if isinstance(output, tuple) else output.sample,))

    def vae_hook(module, args, kwargs):
        z = args[0] if args else kwargs["z"]
        _check_finite("VAE decoder input", (z,))
        for i in range(z.shape[0]):
            res["vae_decoder"].add((z[i:i + 1].float().clone(),))

    handles = [pipe.text_encoder.register_forward_pre_hook(te_hook, with_kwargs=True),
               pipe.unet.register_forward_pre_hook(unet_hook, with_kwargs=True),
               pipe.unet.register_forward_hook(unet_out_hook, with_kwargs=True)]
    # the decoder input is what VaeDecoderWrapper receives: vae.decode(latent / scaling_factor)
    orig_decode = pipe.vae.decode

    def decode(z, *a, **kw):
        vae_hook(None, (z,), {})
        return orig_decode(z, *a, **kw)

    pipe.vae.decode = decode
    try:
        images = generate(pipe, prompts, list(range(seed, seed + len(prompts))), steps, sampler, guidance,
                          batch_size=batch_size)
        _check_finite("decoded image", (images,))
    finally:
        for h in handles:
            h.remove()
        del pipe.vae.decode  # back to the class method
    return CalibrationSet(rows={k: r.rows for k, r in res.items()}, seen={k: r.seen for k, r in res.items()},
                          settings={"prompts": len(prompts), "prompt_seed": CALIBRATION_SEED, "steps": steps,
                                    "sampler": sampler, "guidance": guidance, "max_rows": max_rows, "seed": seed})
