import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import error_lines, run_cli
from mobilediff.checkpoint import complete_checkpoints
from mobilediff.errors import MobilediffError
from mobilediff.tiny import tiny_train_config
from mobilediff.training import TrainBaseConfig, train_base


def _cfg(out, **kw):
    base = TrainBaseConfig(out=out, vae_steps=2, unet_steps=4, checkpoint_every=2, mixed_precision="fp32")
    return dataclasses.replace(tiny_train_config(base), **kw)


def _weights(model_dir):
    return {**{f"unet.{k}": v for k, v in load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors").items()},
            **{f"te.{k}": v for k, v in load_file(model_dir / "text_encoder" / "model.safetensors").items()}}


def test_two_step_cli_run_writes_a_loadable_pipeline(tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli("train-base", "--out", out, "--tiny", "--vae-steps", 2, "--unet-steps", 2,
                                   "--checkpoint-every", 1)
    assert code == 0, stderr
    from mobilediff.loading import load_pipeline

    pipe = load_pipeline(out / "model")
    assert pipe.unet.config.block_out_channels == [16, 32]
    info = json.loads((out / "model" / "training.json").read_text())
    assert info["stats"]["unet_steps"] == 2 and info["command"].startswith("mobilediff train-base")
    assert (out / "model" / "tokenizer" / "vocab.json").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.partial"))


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    full = train_base(_cfg(tmp_path / "full"))
    with pytest.raises(MobilediffError, match="non-finite loss at step 3"):
        train_base(_cfg(tmp_path / "cut", inject_nan_at_step=3))
    # the NaN stopped the run without a new checkpoint: the last good one (step 2) is intact
    assert [c.step for c in complete_checkpoints(tmp_path / "cut" / "unet_run")] == [2]
    assert not (tmp_path / "cut" / "model").exists()
    resumed = train_base(_cfg(tmp_path / "cut"), resume="latest")
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_existing_output_without_resume_or_force_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    code, _, stderr = run_cli("train-base", "--out", tmp_path / "run", "--tiny", "--vae-steps", 1, "--unet-steps", 1)
    assert code == 2 and error_lines(stderr) == [
        f"error: output directory {tmp_path / 'run'} already exists (pass --resume latest to continue, or --force)"]
    assert list((tmp_path / "run").iterdir()) == []


def test_init_from_starts_stage_two_from_checkpoint_weights(tmp_path):
    first = _cfg(tmp_path / "a", unet_steps=2)
    train_base(first)
    ckpt = complete_checkpoints(tmp_path / "a" / "unet_run")[-1].path
    # zero steps of learning rate: the pipeline written must hold exactly the checkpoint's weights
    second = _cfg(tmp_path / "b", unet_steps=1, lr=1e-30, init_from=ckpt, text_aux_weight=0.0)
    model = train_base(second)
    start = load_file(ckpt / "denoiser.safetensors")
    got = load_file(model / "unet" / "diffusion_pytorch_model.safetensors")
    for k, v in got.items():
        torch.testing.assert_close(v, start[f"unet.{k}"], rtol=0, atol=1e-6)


def test_init_from_accepts_a_pipeline_folder(tmp_path):
    model = train_base(_cfg(tmp_path / "a", unet_steps=1))
    again = train_base(_cfg(tmp_path / "b", unet_steps=1, lr=1e-30, init_from=model, text_aux_weight=0.0))
    a, b = _weights(model), _weights(again)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
