"""Transformer denoisers through the ONNX target: tiny random PixArt-alpha and SANA transformers (diffusers' own
classes) export with a dynamic batch and run on ONNX Runtime at other batches with parity. torch.onnx's own capture
fails for both at a dynamic batch; the target captures them non-strict and removes PixArt's no-op squeeze of the
token axis (an ONNX Squeeze that ONNX Runtime refuses). The loader does not accept these families yet: the modules are
wrapped here the way the exporter wraps a UNet."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilediff.components import ComponentSpec, InputRanges, TensorSpec
from mobilediff.exporter import export_component

L, D, C, H = 16, 32, 4, 16  # caption tokens, caption features, latent channels, latent size
RANGES = InputRanges(vocab_size=100, bos_id=0, eos_id=1, pad_id=0, num_train_timesteps=1000)


class MaskedTransformer(torch.nn.Module):
    """sample, timestep, caption features and their mask in; the predicted noise out (PixArt's learned variance
    channels dropped, as its pipeline drops them)."""

    prefix = "transformer"

    def __init__(self, transformer, extra: dict):
        super().__init__()
        self.transformer = transformer
        self.extra = extra

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask):
        out = self.transformer(sample, encoder_hidden_states=encoder_hidden_states, timestep=timestep,
                               encoder_attention_mask=encoder_attention_mask, return_dict=False, **self.extra)[0]
        return (out[:, :sample.shape[1]],)


def transformer_spec(kind: str) -> ComponentSpec:
    from diffusers import PixArtTransformer2DModel, SanaTransformer2DModel

    torch.manual_seed(0)
    if kind == "pixart":
        model = PixArtTransformer2DModel(sample_size=H, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                                         in_channels=C, out_channels=2 * C, caption_channels=D, cross_attention_dim=16,
                                         patch_size=2, norm_num_groups=1, use_additional_conditions=False)
        extra = {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
    else:
        model = SanaTransformer2DModel(in_channels=C, out_channels=C, num_attention_heads=2, attention_head_dim=8,
                                       num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                                       cross_attention_dim=16, caption_channels=D, mlp_ratio=2.5, sample_size=H,
                                       patch_size=1, norm_elementwise_affine=False)
        extra = {}
    f = lambda name, shape: TensorSpec(name, shape, "float32")  # noqa: E731
    return ComponentSpec("unet", MaskedTransformer(model.eval(), extra).eval(),
                         (f("sample", ("batch", C, H, H)), f("timestep", ("batch",)),
                          f("encoder_hidden_states", ("batch", L, D)), f("encoder_attention_mask", ("batch", L))),
                         (f("out_sample", ("batch", C, H, H)),), {"batch": 2}, type(model).__name__, RANGES)


@pytest.mark.parametrize("kind", ["pixart", "sana"])
def test_a_transformer_denoiser_exports_to_onnx_with_a_dynamic_batch(kind, tmp_path):
    import onnxruntime as ort

    spec = transformer_spec(kind)
    entry = export_component(spec, "onnx", "fp32", tmp_path)
    assert entry["parity"]["psnr_db"] >= 60, entry["parity"]
    assert entry["export"]["capture"] == "torch.export (non-strict)"
    assert (entry["export"]["noop_squeezes_removed"] > 0) == (kind == "pixart")
    session = ort.InferenceSession(str(tmp_path / entry["path"]), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch is dynamic: a guidance pair's 2 was the traced size
        inputs = spec.example_inputs(seed=batch, dims={"batch": batch})
        with torch.no_grad():
            reference = spec.module(*inputs)[0].numpy()
        got = session.run(None, {s.name: x.numpy() for s, x in zip(spec.inputs, inputs)})[0]
        assert got.shape == reference.shape
        psnr = 10 * np.log10(np.abs(reference).max() ** 2 / max(np.mean((got - reference) ** 2), 1e-30))
        assert psnr >= 60, (batch, psnr)


def test_a_static_squeeze_of_size_one_is_kept():
    from mobilediff.targets.onnx import drop_noop_squeezes

    class Both(torch.nn.Module):
        def forward(self, x, y):
            return x.squeeze(1) * 2, y.squeeze(1) + 1  # x: (B, 1, 4) a real squeeze; y: (B, 5, 4) a no-op

    program = torch.export.export(Both(), (torch.randn(2, 1, 4), torch.randn(2, 5, 4)), strict=False)
    assert drop_noop_squeezes(program) == 1
    a, b = program.module()(torch.ones(2, 1, 4), torch.ones(2, 5, 4))
    assert a.shape == (2, 4) and b.shape == (2, 5, 4)
