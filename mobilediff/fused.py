"""`--fused-steps N`: one program holding text embedding, N unrolled denoiser steps and the VAE decode.

For students with a fixed small step count, one call per image: no per-step dispatch, no app-side sampler.
The sampler table's coefficients become constants of the graph; the unconditional text embedding (the
empty prompt) is computed once at export and stored as a constant. Inputs: token ids, the initial noise,
the guidance scale, and (for samplers that re-noise, e.g. LCM) the noise of every step.
"""
from __future__ import annotations


import torch

from mobilediff.bundle import classifier_free_guidance, guidance_embedding_tensor
from mobilediff.components import ComponentSpec, InputRanges, TensorSpec
from mobilediff.sampler_table import SamplerTable, run_table


class FusedSampler(torch.nn.Module):
    """``cfg``: run the classifier-free-guidance batch (unconditional + conditional rows) at every step. A plan at
    guidance <= 1 has none (the conditional row alone is the same image at half the UNet cost), and its program
    ignores ``guidance_scale``; a guidance-embedding (LCM) UNet never has one."""

    def __init__(self, pipe, table: dict, geometry: dict, cfg: bool = True):
        super().__init__()
        self.cfg = cfg
        self.text_encoder, self.unet, self.vae = pipe.text_encoder, pipe.unet, pipe.vae
        self.table = SamplerTable(**{k: table[k] for k in SamplerTable.__dataclass_fields__})
        self.geometry = geometry
        self.cond_dim = pipe.unet.config.time_cond_proj_dim
        self.noisy = any(c != 0.0 for c in table["noise_coef"])
        if cfg and not self.cond_dim:  # the unconditional row's text embedding, a constant of the graph
            tok = pipe.tokenizer
            ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
            with torch.no_grad():
                self.register_buffer("uncond", pipe.text_encoder(ids).last_hidden_state.detach().clone())

    def forward(self, input_ids, noise, guidance_scale, fresh_noise=None):
        text = self.text_encoder(input_ids.to(torch.long)).last_hidden_state
        emb = guidance_embedding_tensor(guidance_scale, self.cond_dim) if self.cond_dim else None

        def denoise(xin, timestep):
            if emb is not None or not self.cfg:
                t = torch.full((1,), timestep)
                return self.unet(xin, t, encoder_hidden_states=text, timestep_cond=emb, return_dict=False)[0]
            t = torch.full((2,), timestep)
            both = self.unet(torch.cat([xin, xin]), t, encoder_hidden_states=torch.cat([self.uncond, text]),
                             return_dict=False)[0]
            return classifier_free_guidance(*both.chunk(2), guidance_scale.reshape(1, 1, 1, 1))

        x = run_table(self.table, denoise, noise, lambda i: fresh_noise[i:i + 1])
        z = x / self.geometry["scaling_factor"] + self.geometry.get("shift_factor", 0.0)
        return (self.vae.decode(z, return_dict=False)[0].clamp(-1, 1),)


def fused_has_cfg(pipe, guidance: float) -> bool:
    """Whether the fused program runs a CFG batch: the denoiser's rule (mobilediff.exporter: none at a default
    guidance <= 1, a progressive student's plan), and never for a guidance-embedding (LCM) UNet."""
    return not pipe.unet.config.time_cond_proj_dim and guidance > 1.0


def fused_spec(pipe, table: dict, geometry: dict, name: str, cfg: bool = True) -> ComponentSpec:
    module = FusedSampler(pipe, table, geometry, cfg).eval()
    c, h, w = geometry["latent_channels"], geometry["latent_height"], geometry["latent_width"]
    length = pipe.tokenizer.model_max_length
    inputs = [TensorSpec("input_ids", (1, length), "int32", "CLIP token ids of the prompt"),
              TensorSpec("noise", (1, c, h, w), "float32", "initial N(0, I) latent noise"),
              TensorSpec("guidance_scale", (1,), "float32", "guidance scale")]
    if module.noisy:
        inputs.append(TensorSpec("fresh_noise", (table["steps"], c, h, w), "float32",
                                 "N(0, I) noise of every step (row i re-noises step i)"))
    outputs = (TensorSpec("image", (1, 3, geometry["height"], geometry["width"]), "float32", "RGB image in [-1, 1]"),)
    return ComponentSpec(name, module, tuple(inputs), outputs, {}, "FusedSampler", InputRanges.of(pipe))
