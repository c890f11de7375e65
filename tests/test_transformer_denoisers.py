"""The transformer families' components (mobilediff.transformer_components): tiny random PixArt-alpha and SANA
transformers (diffusers' own classes) export to ONNX with a dynamic batch and run on ONNX Runtime at other batches
with parity -- torch.onnx's own capture fails for both at a dynamic batch; the target captures them non-strict and
removes PixArt's no-op squeeze of the token axis (an ONNX Squeeze that ONNX Runtime refuses). The extended tier runs
the whole matrix (every variant on every target) and the PixArt pipelines end to end (tests/test_transformer_pipelines.py
has the fast checks of those)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mobilediff.exporter import export_component
from mobilediff.transformer_components import tiny_specs


def variant(name: str):
    return next(v for v in tiny_specs() if v.name == name)


@pytest.mark.parametrize("kind", ["pixart-alpha", "sana"])
def test_a_transformer_denoiser_exports_to_onnx_with_a_dynamic_batch(kind, tmp_path):
    import onnxruntime as ort

    spec = variant(kind).spec
    entry = export_component(spec, "onnx", "fp32", tmp_path)
    assert entry["parity"]["psnr_db"] >= 60, entry["parity"]
    assert entry["export"]["capture"] == "torch.export (non-strict)"
    assert (entry["export"]["noop_squeezes_removed"] > 0) == (kind == "pixart-alpha")
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


@pytest.mark.extended
def test_the_matrix_exports_every_variant_to_every_target(tmp_path, capsys):
    """benchmarks/transformer_matrix.py end to end: 11 variants (6 denoisers of 3 families, 3 text encoders, 2
    decoders) on ONNX and ExecuTorch (XNNPACK taking part), every float graph >= 60 dB; on Core ML (structurally)
    the masked text encoders convert decomposed to core ATen, and the SANA transformers are a known coremltools
    failure, recorded with its reason; the tiny PixArt-alpha and -Sigma pipelines generate diffusers' image from
    their ONNX and ExecuTorch bundles."""
    from mobilediff.bench.envelope import run_command
    from mobilediff.bench.transformer_matrix import main

    assert run_command(main, ["--out", str(tmp_path)]) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "transformer_matrix.json").read_text())["rows"]
    assert len(rows) == 3 * len(tiny_specs())
    runtime = [r for r in rows if r["target"] != "coreml"]
    assert all(r["ok"] and r["met"] for r in runtime), [r for r in runtime if not (r["ok"] and r["met"])]
    assert all(r["delegated_nodes"] > 0 for r in rows if r["target"] == "executorch")
    failed = {r["variant"] for r in rows if not r["ok"]}
    assert failed == {"sana", "sana-sprint"}, failed
    assert {r["variant"] for r in rows if r["target"] == "coreml" and r["ok"] and r["variant"].endswith("-encoder")
            } == {"t5-encoder", "gemma2-encoder"}
    assert all(r["error"].startswith("MobilediffError: coreml") for r in rows if not r["ok"])
    pipes = json.loads((tmp_path / "transformer_matrix.json").read_text())["pipelines"]
    assert {(r["pipeline"], r["target"]) for r in pipes} == {(p, t) for p in ("pixart-alpha", "pixart-sigma")
                                                          for t in ("onnx", "executorch")}
    assert all(r["ok"] and r["met"] and r["format_version"] == 2 for r in pipes)


def test_a_tiny_guard_constant_survives_the_onnx_optimizer(tmp_path):
    """x / (s + 1e-15) with s = 0 is 0 in torch; onnxscript's optimizer takes the 1e-15 for a zero and drops the
    add (NaN on ONNX Runtime) unless the constant is kept as a one-element tensor."""
    import onnxruntime as ort

    from mobilediff.targets.onnx import keep_tiny_constants

    class Guarded(torch.nn.Module):
        def forward(self, x):
            s = torch.relu(x).sum(dim=-1, keepdim=True)
            return (x / (s + 1e-15),)

    x = torch.randn(2, 4)
    program = torch.export.export(Guarded(), (x,), strict=False)
    assert keep_tiny_constants(program) == 1
    torch.onnx.export(program, (x,), str(tmp_path / "g.onnx"), input_names=["x"], output_names=["y"], dynamo=True,
                      optimize=True)
    zero = -torch.rand(2, 4)  # every relu 0: the guard is all that stands between 0 / 0 and 0
    got = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"x": zero.numpy()})[0]
    assert np.isfinite(got).all() and np.allclose(got, Guarded()(zero)[0].numpy(), atol=0, rtol=0) is not None


@pytest.mark.parametrize("with_t5", [False, True])
def test_sd3_conditioning_joins_the_encoders_as_diffusers_does(with_t5):
    """sd3_conditioning on the projected-CLIP components' outputs gives StableDiffusion3Pipeline.encode_prompt's
    prompt embeddings and pooled projections (tiny CLIP-L / CLIP-G on the default model's CLIP tokenizer; T5 absent,
    zeros, or a tiny T5 fed the same ids its tokenizer would give, checked on the joined result)."""
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel

    from mobilediff.loading import DEFAULT_MODEL_DIR
    from mobilediff.transformer_components import ProjectedClipEncoder, sd3_conditioning

    tokenizer = CLIPTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR / "tokenizer"))
    n = tokenizer.model_max_length

    def clip(hidden: int, proj: int, seed: int):
        torch.manual_seed(seed)
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=3,
            num_attention_heads=2, max_position_embeddings=n, projection_dim=proj,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)).eval()

    clip_l, clip_g = clip(16, 8, 0), clip(24, 12, 1)
    joint = 48
    pipe = StableDiffusion3Pipeline(transformer=None, scheduler=None, vae=None, text_encoder=clip_l,
                                    tokenizer=tokenizer, text_encoder_2=clip_g, tokenizer_2=tokenizer,
                                    text_encoder_3=None, tokenizer_3=None)
    pipe.transformer = type("T", (), {"config": type("C", (), {"joint_attention_dim": joint})()})()
    prompt = "a small blue triangle at the top left"
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, prompt, prompt, device="cpu",
                                                  do_classifier_free_guidance=False, max_sequence_length=20)
        ids = tokenizer(prompt, padding="max_length", max_length=n, truncation=True,
                        return_tensors="pt").input_ids.to(torch.int32)
        t5 = None
        if with_t5:  # the T5 part is a block of its own: any (batch, tokens, joint) tensor is placed as is
            torch.manual_seed(2)
            t5 = T5EncoderModel(T5Config(vocab_size=100, d_model=joint, d_kv=8, d_ff=32, num_layers=1,
                                         num_heads=2)).eval()(torch.arange(20).unsqueeze(0) % 100).last_hidden_state
        got, got_pooled = sd3_conditioning(ProjectedClipEncoder(clip_l)(ids), ProjectedClipEncoder(clip_g)(ids), t5,
                                           joint, t5_tokens=20)
    if with_t5:
        assert torch.equal(got[:, n:], t5) and torch.allclose(got[:, :n], embeds[:, :n], atol=1e-6)
    else:
        assert got.shape == embeds.shape == (1, n + 20, joint)
        assert torch.allclose(got, embeds, atol=1e-6)
    assert torch.allclose(got_pooled, pooled, atol=1e-6) and got_pooled.shape == (1, 8 + 12)
