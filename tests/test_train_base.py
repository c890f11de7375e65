import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import error_lines, poison_loss_at, run_cli, run_cli_here
from mobilediff.train.checkpoint import complete_checkpoints
from mobilediff.errors import MobilediffError
from mobilediff.tiny import tiny_train_config
from mobilediff.train.base import TrainBaseConfig, train_base


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


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    full = train_base(_cfg(tmp_path / "full"))
    with monkeypatch.context() as m, pytest.raises(MobilediffError, match="non-finite loss at step 3"):
        poison_loss_at(m, 3)
        train_base(_cfg(tmp_path / "cut"))
    # the NaN stopped the run without a new checkpoint: the last good one (step 2) is intact
    assert [c.step for c in complete_checkpoints(tmp_path / "cut" / "unet_run")] == [2]
    assert not (tmp_path / "cut" / "model").exists()
    resumed = train_base(_cfg(tmp_path / "cut"), resume="latest")
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_existing_output_without_resume_or_force_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", tmp_path / "run", "--tiny", "--vae-steps", 1, "--unet-steps", 1)
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


def test_fresh_samples_path_without_latent_cache(tmp_path):
    model = train_base(_cfg(tmp_path / "a", unet_steps=2, latent_cache=0))
    assert not (tmp_path / "a" / "unet_run" / "latent_cache.safetensors").exists()
    assert (model / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_latent_cache_is_reused_only_when_it_matches(tmp_path):
    from safetensors import safe_open

    train_base(_cfg(tmp_path / "a", unet_steps=2))
    path = tmp_path / "a" / "unet_run" / "latent_cache.safetensors"
    with safe_open(str(path), "pt") as f:
        assert f.get_tensor("latents").shape[0] == 24 and f.get_tensor("ids").shape == (24, 32)
    before = path.stat().st_mtime_ns
    train_base(_cfg(tmp_path / "a", unet_steps=3), resume="latest")
    assert path.stat().st_mtime_ns == before  # same VAE, data and size: loaded, not re-encoded
    train_base(_cfg(tmp_path / "a", unet_steps=4, latent_cache=16), resume="latest")
    with safe_open(str(path), "pt") as f:
        assert f.get_tensor("latents").shape[0] == 16


def test_object_fraction_counts_shape_pixels_per_latent_cell():
    from mobilediff.train.base import _object_fraction

    images = torch.full((1, 3, 8, 8), -1.0)
    images[0, :, 0:4, 4:8] = 1.0  # top-right quarter is an object
    images[0, :, 4:6, 0:4] = 1.0  # half of the bottom-left quarter
    frac = _object_fraction(images, (2, 2))
    torch.testing.assert_close(frac[0, 0], torch.tensor([[0.0, 1.0], [0.5, 0.0]]))


def test_init_from_a_unet_without_attention_at_full_resolution_starts_as_the_same_function(tmp_path):
    from mobilediff.models import UnetConfig
    from mobilediff.tiny import TINY_MODEL
    from mobilediff.train.base import Denoiser, _load_initial

    old = TINY_MODEL
    new_unet = dataclasses.replace(old.unet, down_block_types=("CrossAttnDownBlock2D",) * 2,
                                   up_block_types=("CrossAttnUpBlock2D",) * 2, only_cross_attention=(True, False))
    torch.manual_seed(0)
    a = Denoiser(old.text_encoder.build(), old.unet.build()).eval()
    b = Denoiser(old.text_encoder.build(), new_unet.build()).eval()
    new = _load_initial(b, a.state_dict())
    assert new == ["unet.down_blocks.0.attentions.0", "unet.up_blocks.1.attentions.0", "unet.up_blocks.1.attentions.1"]
    ids, x, t = torch.randint(0, 49407, (2, 32)), torch.randn(2, 4, 16, 16), torch.tensor([10, 900])
    with torch.no_grad():
        torch.testing.assert_close(b(ids, x, t)[0], a(ids, x, t)[0], rtol=0, atol=1e-5)
    # weights of a different width do not fit: one clear error, not a half-loaded model
    other = Denoiser(old.text_encoder.build(), UnetConfig(sample_size=16, block_out_channels=(16, 32),
                     down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                     cross_attention_dim=32, norm_num_groups=8, only_cross_attention=False).build())
    with pytest.raises(MobilediffError, match="do not fit the model"):
        _load_initial(b, {k: v for k, v in other.state_dict().items() if "up_blocks" not in k})


def test_freeze_text_encoder_keeps_it_bit_identical_while_the_unet_trains(tmp_path):
    a = _weights(train_base(_cfg(tmp_path / "a", unet_steps=2)))
    # resume the same run with a frozen text encoder and a small-object weight: the UNet moves, the encoder not
    again = train_base(_cfg(tmp_path / "a", unet_steps=4, freeze_text_encoder=True, small_object_weight=8.0,
                            lr=1e-2), resume="latest")
    b = _weights(again)
    te = [k for k in a if k.startswith("te.")]
    assert te and all(torch.equal(a[k], b[k]) for k in te)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("unet."))


def test_small_object_cells_mark_the_cells_that_hold_small_shapes():
    from mobilediff.train.base import _small_object_cells

    shape = torch.zeros(2, 9, dtype=torch.long)
    size = torch.full((2, 9), -1)
    shape[0, 0], size[0, 0] = 1, 0  # small shape, top left
    shape[0, 8], size[0, 8] = 2, 1  # large shape, bottom right: not marked
    shape[1, 4], size[1, 4] = 3, 0  # small shape in the centre
    cells = _small_object_cells(shape, size, (6, 6))
    expect0 = torch.zeros(6, 6)
    expect0[:2, :2] = 1
    expect1 = torch.zeros(6, 6)
    expect1[2:4, 2:4] = 1
    torch.testing.assert_close(cells[:, 0], torch.stack([expect0, expect1]))


def test_timestep_bias_draws_the_range_as_often_as_asked():
    from mobilediff.train.base import _sample_timesteps

    g = torch.Generator().manual_seed(0)
    # multiplier 1 keeps the uniform draw every earlier run used (same generator stream as randint)
    torch.testing.assert_close(_sample_timesteps(64, 1000, (0, 400), 1.0, torch.Generator().manual_seed(3)),
                               torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))
    t = _sample_timesteps(200_000, 1000, (0, 400), 3.0, g)
    assert t.min() >= 0 and t.max() <= 999
    # [0, 400) weighs 400 * 3 against 600 * 1: two thirds of the draws
    assert abs((t < 400).float().mean().item() - 2 / 3) < 0.01
    assert abs((t[t >= 400] < 700).float().mean().item() - 0.5) < 0.01  # uniform outside the range


def test_impossible_timestep_bias_range_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli_here(capsys, "train-base", "--out", out, "--tiny", "--vae-steps", 1, "--unet-steps", 1,
                                   "--timestep-bias-range", 700, 300, "--timestep-bias-multiplier", 3)
    assert code != 0
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: --timestep-bias-range"), stderr
    assert not out.exists()
    for rng in [(400, 400), (0, 1001)]:  # empty; beyond the 1000 training timesteps
        with pytest.raises(MobilediffError, match="--timestep-bias-range"):
            train_base(_cfg(tmp_path / "b", timestep_bias_range=rng, timestep_bias_multiplier=3.0))
        assert not (tmp_path / "b").exists()


def test_timestep_bias_reaches_the_training_loop(tmp_path):
    plain = _weights(train_base(_cfg(tmp_path / "a", unet_steps=2)))
    biased = _weights(train_base(_cfg(tmp_path / "b", unet_steps=2, timestep_bias_range=(0, 10),
                                      timestep_bias_multiplier=1000.0)))
    same = _weights(train_base(_cfg(tmp_path / "c", unet_steps=2)))
    unet = [k for k in plain if k.startswith("unet.")]
    assert all(torch.equal(plain[k], same[k]) for k in unet)  # deterministic, so a difference is the bias
    assert any(not torch.equal(plain[k], biased[k]) for k in unet)


def test_training_markdown_names_what_was_trained():
    """The record next to the weights says 'UNet (text encoder frozen)' for a --freeze-text-encoder leg."""
    from mobilediff.loading import DEFAULT_MODEL_DIR
    from mobilediff.train.base import training_markdown

    info = json.loads((DEFAULT_MODEL_DIR / "training.json").read_text())
    info["config"]["freeze_text_encoder"] = True
    assert "- UNet (text encoder frozen): " in training_markdown(info)
    info["config"]["freeze_text_encoder"] = False
    assert "- Text encoder + UNet: " in training_markdown(info)
    assert "- VAE: " in training_markdown(info) and "copied from" not in training_markdown(info)
    info["config"]["vae_from"] = "/models/base"  # a --vae-from run (also when it was resumed: stats lack it)
    assert "- VAE: copied from /models/base (not trained here)" in training_markdown(info)
    assert "nan" not in training_markdown(info)


def test_weight_sources_take_named_models_and_keep_the_name(tmp_path):
    """--text-encoder-from / --vae-from / --init-from take a named model ('default') as well as a folder: the run reads
    the embedded model's folder, and its config keeps the name (no machine path in a committed training.json)."""
    from pathlib import Path

    from mobilediff.loading import DEFAULT_MODEL_DIR
    from mobilediff.train.base import _check_sources, source_dir

    assert source_dir(Path("default")) == DEFAULT_MODEL_DIR and source_dir(tmp_path) == tmp_path
    cfg = TrainBaseConfig(out=tmp_path / "run", text_encoder_from=Path("default"), vae_from=Path("default"),
                          init_from=Path("default"))
    _check_sources(cfg)  # the default model's folder holds all three
    assert str(cfg.vae_from) == "default"  # what training.json records
