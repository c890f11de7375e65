import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import error_lines, run_cli_here
from mobilediff.train.checkpoint import complete_checkpoints, latest_checkpoint, restore, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


def _model_and_opt(seed):
    torch.manual_seed(seed)
    m = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    return m, opt


def test_roundtrip_restores_weights_and_optimizer(tmp_path):
    m, opt = _model_and_opt(0)
    save_checkpoint(tmp_path, 7, {"m": m.state_dict()}, opt, {"note": "x"})
    m2, opt2 = _model_and_opt(1)
    ck = latest_checkpoint(tmp_path)
    assert ck.step == 7 and ck.state["note"] == "x"
    restore(ck, {"m": m2}, opt2)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))
    assert s1["param_groups"] == s2["param_groups"]


def test_incomplete_checkpoints_are_never_resumed(tmp_path):
    m, opt = _model_and_opt(0)
    save_checkpoint(tmp_path, 5, {"m": m.state_dict()}, opt, {})
    # a save cut off midway: the folder of a later step without the completeness marker, and a stray .partial
    cut = tmp_path / "checkpoints" / "checkpoint-0000010"
    cut.mkdir()
    (cut / "m.safetensors").write_bytes(b"garbage")
    (cut / "state.json").write_text(json.dumps({"step": 10}))
    (tmp_path / "checkpoints" / ".checkpoint-0000012.abc.partial").mkdir()
    assert latest_checkpoint(tmp_path).step == 5


def test_only_the_newest_are_kept(tmp_path):
    m, opt = _model_and_opt(0)
    for s in (1, 2, 3, 4):
        save_checkpoint(tmp_path, s, {"m": m.state_dict()}, opt, {}, keep=2)
    assert [c.step for c in complete_checkpoints(tmp_path)] == [3, 4]


def test_checkpoint_modes_follow_the_umask(tmp_path):
    """A checkpoint folder is 0o777 and its files 0o666 less the umask (as every output of mobilediff.io), not
    tempfile's private 0o700."""
    import os
    import stat

    m, opt = _model_and_opt(0)
    for mask in (0o022, 0o027):
        old = os.umask(mask)
        try:
            path = save_checkpoint(tmp_path / oct(mask), 1, {"m": m.state_dict()}, opt, {})
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()} == \
            {f.name: 0o666 & ~mask for f in path.iterdir()}


# ------------------------------------------------------------------------------- --resume CKPT into a new --out
# Every training command continues a checkpoint of another run folder in a new OUT (from the checkpoint's step,
# ending where the run that wrote it ended), or refuses it in one line before OUT exists.
def _same_weights(a: Path, b: Path) -> None:
    """Every safetensors file under the folders ``a`` and ``b`` holds the same tensors, bit for bit."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    for f in files:
        x, y = load_file(a / f), load_file(b / f)
        assert x.keys() == y.keys(), f
        for k in x:
            assert torch.equal(x[k], y[k]), (f, k)


def _log_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in run.read_text().splitlines()]


def _refused(capsys, out: Path, args: list, message: str) -> None:
    """The command fails with exit 2 and one ``error:`` line containing ``message``, and OUT does not exist."""
    code, _, stderr = run_cli_here(capsys, *args)
    lines = error_lines(stderr)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, stderr)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*")), args


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"checkpoint-{step:07d}"


# train-base: two stages, each with its run folder (OUT/vae_run, OUT/unet_run)
BASE_ARGS = ["--tiny", "--vae-steps", 2, "--unet-steps", 2, "--checkpoint-every", 1]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    from mobilediff.tiny import tiny_train_config
    from mobilediff.train.base import TrainBaseConfig, train_base

    out = tmp_path_factory.mktemp("base") / "run"
    train_base(tiny_train_config(TrainBaseConfig(out=out, vae_steps=2, unet_steps=2, checkpoint_every=1)))
    return out


# the VAE-stage row trains a whole run again (~10 s): extended tier
@pytest.mark.parametrize("stage", ["unet_run", pytest.param("vae_run", marks=pytest.mark.extended)])
def test_train_base_continues_another_runs_checkpoint_in_a_new_out(base_run, stage, tmp_path, capsys):
    """A denoiser-stage checkpoint brings the VAE of its run folder (and the stats its run recorded); a VAE-stage
    one trains the VAE on, then the denoiser from the start. Either way the new run ends with the weights of the
    run that wrote the checkpoint."""
    out = tmp_path / "new"
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", out, *BASE_ARGS,
                                   "--resume", _ckpt(base_run / stage, 1))
    assert code == 0, stderr
    _same_weights(base_run / "model", out / "model")
    assert _log_steps(out / stage / "log.jsonl") == [2]  # continued from step 1
    if stage == "unet_run":
        assert not (out / "vae_run").exists()
        assert (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == \
            (base_run / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
        record = json.loads((out / "training.json").read_text())["stats"]
        assert record["vae_steps"] == 2 and "vae_from" not in record
    state = json.loads((_ckpt(out / stage, 2) / "state.json").read_text())
    assert state["run"] == ({"command": "train-base", "stage": "vae"} if stage == "vae_run" else
                            {"command": "train-base", "stage": "denoiser", "objective": "v"})


def test_train_base_refuses_what_it_cannot_continue_before_out_exists(base_run, tmp_path, capsys):
    out = tmp_path / "new"
    unet1, unet2 = _ckpt(base_run / "unet_run", 1), _ckpt(base_run / "unet_run", 2)
    lone = tmp_path / "lone" / "unet_run" / "checkpoints" / "checkpoint-0000002"  # copied without its run's VAE
    shutil.copytree(unet2, lone)
    other = tmp_path / "other" / "checkpoint-0000001"  # another command's checkpoint
    other.mkdir(parents=True)
    for f in ("state.json", "COMPLETE"):
        shutil.copy(unet1 / f, other / f)
    (other / "decoder.safetensors").write_bytes((unet1 / "scene_head.safetensors").read_bytes())
    cases = [
        (["--unet-layers", 2, "--resume", unet2], f"checkpoint {unet2} does not fit this run (denoiser: "),
        (["--unet-steps", 1, "--resume", unet2],
         f"checkpoint {unet2} is at step 2, past this run's last step 1 (--unet-steps 1): a run continuing it needs "
         f"at least 2 steps"),
        (["--resume", lone], f"the VAE it was trained with is not in its run folder ({tmp_path / 'lone' / 'vae'}): "
                             f"pass --vae-from"),
        (["--resume", other], f"checkpoint {other} is not a train-base checkpoint (no vae.safetensors or "
                              f"denoiser.safetensors)"),
    ]
    for args, message in cases:
        _refused(capsys, out, ["train-base", "--out", out, *BASE_ARGS, *args], message)
    # --resume latest in a folder that is no train-base run folder: refused, the folder as it was
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("user data")
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", user, *BASE_ARGS, "--resume", "latest")
    assert code == 2 and error_lines(stderr) == [
        f"error: --resume latest: {user} is not a train-base run folder (it has none of training.json, vae, vae_run, "
        f"unet_run, model)"]
    assert [p.name for p in user.iterdir()] == ["keep.txt"]
    # an existing OUT that the checkpoint is not part of is refused unless --force
    out.mkdir()
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", out, *BASE_ARGS, "--resume", unet1)
    assert code == 2 and error_lines(stderr) == [
        f"error: output directory {out} already exists and {unet1} is not one of its checkpoints: pass a new --out "
        f"to continue that checkpoint in (or --force to replace {out})"]
    assert list(out.iterdir()) == []
    # in place, a VAE-stage checkpoint of a run whose denoiser stage has begun (on the later VAE) is refused
    before = sorted(str(p.relative_to(base_run)) for p in base_run.rglob("*"))
    vae1 = _ckpt(base_run / "vae_run", 1)
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", base_run, *BASE_ARGS, "--resume", vae1)
    assert code == 2 and error_lines(stderr) == [
        f"error: checkpoint {vae1} is of the VAE stage, and the denoiser stage of {base_run} has begun on the VAE "
        f"trained after it ({base_run / 'unet_run'}): continue it in a new --out"]
    assert sorted(str(p.relative_to(base_run)) for p in base_run.rglob("*")) == before


# distill: a progressive run of two rounds (8 -> 4 -> 2 steps), two optimizer steps each (checkpoints 3 and 4 kept)
DISTILL_ARGS = ["--method", "progressive", "--steps", 2, "--teacher-steps", 8, "--max-train-steps", 2,
                "--batch-size", 2, "--latent-cache", 4, "--checkpoint-every", 1]


@pytest.fixture(scope="module")
def progressive_run(tiny_pipeline_dir, tmp_path_factory):
    from mobilediff.train.distill import DistillConfig, distill

    out = tmp_path_factory.mktemp("progressive") / "run"
    distill(DistillConfig(teacher=str(tiny_pipeline_dir), method="progressive", steps=2, teacher_steps=8, out=out,
                          max_train_steps=2, batch_size=2, latent_cache=4, checkpoint_every=1))
    return out


def test_distill_continues_another_runs_checkpoint_in_a_new_out(tiny_pipeline_dir, progressive_run, tmp_path,
                                                                capsys):
    """A checkpoint of the second round continues in a new OUT with the first round's student (its teacher) from
    the run folder that holds it, and ends with that run's student."""
    out = tmp_path / "new"
    code, _, stderr = run_cli_here(capsys, "distill", "--teacher", tiny_pipeline_dir, "--out", out, *DISTILL_ARGS,
                                   "--resume", _ckpt(progressive_run, 3))
    assert code == 0, stderr
    _same_weights(progressive_run / "steps-4", out / "steps-4")  # brought along, not trained again
    _same_weights(progressive_run / "steps-2", out / "steps-2")
    assert _log_steps(out / "log.jsonl") == [4]
    state = json.loads((_ckpt(out, 4) / "state.json").read_text())
    assert state["round"] == 1 and state["run"]["method"] == "progressive"
    assert len(state["run"]["teacher_unet_sha256"]) == 64


def test_distill_refuses_what_it_cannot_continue_before_out_exists(tiny_pipeline_dir, progressive_run, tmp_path,
                                                                   capsys):
    out = tmp_path / "new"
    ckpt3 = _ckpt(progressive_run, 3)
    alien = tmp_path / "alien" / "checkpoint-0000003"  # the same run's checkpoint, recorded as another teacher's
    shutil.copytree(ckpt3, alien)
    state = json.loads((alien / "state.json").read_text())
    recorded = state["run"]["teacher_unet_sha256"]
    state["run"]["teacher_unet_sha256"] = "0" * 64
    (alien / "state.json").write_text(json.dumps(state))
    alone = tmp_path / "alone" / "checkpoints" / "checkpoint-0000003"  # without the first round's student beside it
    shutil.copytree(ckpt3, alone)
    common = ["distill", "--teacher", tiny_pipeline_dir, "--out", out, "--batch-size", 2, "--latent-cache", 4]
    cases = [
        # the rounds number their steps by --max-train-steps: with 4, step 3 lies in the first round
        ([*DISTILL_ARGS, "--max-train-steps", 4, "--resume", ckpt3],
         f"checkpoint {ckpt3} (step 3) is of round 1, a 2-step student; with --max-train-steps 4 and --teacher-steps "
         f"8 this run puts step 3 in round 0, a 4-step student"),
        ([*DISTILL_ARGS, "--steps", 4, "--resume", ckpt3],
         f"checkpoint {ckpt3} is at step 3, past this run's last step 2 (--max-train-steps 2 x 1 rounds)"),
        (["--method", "lcm", "--steps", 2, "--resume", ckpt3], f"checkpoint {ckpt3} does not fit this run"),
        (["--method", "slim", "--steps", 2, "--remove", "mid", "--resume", ckpt3],
         f"checkpoint {ckpt3} does not fit this run (student: "),
        ([*DISTILL_ARGS, "--resume", alien],
         f"checkpoint {alien} is of another run: its teacher_unet_sha256 is {'0' * 64}, this run's {recorded}"),
        ([*DISTILL_ARGS, "--resume", alone],
         f"checkpoint {alone} is of round 1, whose teacher is round 0's student, and that is not in its run folder "
         f"({alone.parent.parent / 'steps-4'})"),
    ]
    for args, message in cases:
        _refused(capsys, out, [*common, *args], message)


# distill-decoder and train-evaluator: one leg each
@pytest.fixture(scope="module")
def decoder_run(tiny_pipeline_dir, tmp_path_factory):
    from mobilediff.train.decoder import DecoderDistillConfig, distill_decoder

    out = tmp_path_factory.mktemp("decoder") / "run"
    distill_decoder(DecoderDistillConfig(model=str(tiny_pipeline_dir), out=out, max_train_steps=2, batch_size=2,
                                         latent_cache=4, checkpoint_every=1))
    return out


@pytest.mark.extended  # two decoder runs (~18 s); the checks it makes are the ones distill's tests make
def test_distill_decoder_continues_another_runs_checkpoint_or_refuses_it(tiny_pipeline_dir, decoder_run, tmp_path,
                                                                         capsys):
    common = ["distill-decoder", "--model", tiny_pipeline_dir, "--max-train-steps", 2, "--batch-size", 2,
              "--latent-cache", 4, "--checkpoint-every", 1]
    ckpt1, ckpt2 = _ckpt(decoder_run, 1), _ckpt(decoder_run, 2)
    out = tmp_path / "refused"
    _refused(capsys, out, [*common, "--out", out, "--width", 16, "--resume", ckpt1],
             f"checkpoint {ckpt1} does not fit this run (decoder: ")
    _refused(capsys, out, [*common, "--out", out, "--max-train-steps", 1, "--resume", ckpt2],
             f"checkpoint {ckpt2} is at step 2, past this run's last step 1 (--max-train-steps 1)")
    out = tmp_path / "new"
    code, _, stderr = run_cli_here(capsys, *common, "--out", out, "--resume", ckpt1)
    assert code == 0, stderr
    _same_weights(decoder_run / "decoder", out / "decoder")
    assert _log_steps(out / "log.jsonl") == [2]
    assert json.loads((_ckpt(out, 2) / "state.json").read_text())["run"]["command"] == "distill-decoder"


def test_train_evaluator_continues_another_runs_checkpoint_or_refuses_it(tmp_path, capsys, monkeypatch):
    import functools

    import mobilediff.evaluator as evaluator

    monkeypatch.setattr(evaluator, "train_evaluator",
                        functools.partial(evaluator.train_evaluator, eval_samples=8, progress=False))
    common = ["train-evaluator", "--steps", 3, "--batch-size", 2]
    first = tmp_path / "first"
    code, _, stderr = run_cli_here(capsys, *common, "--out", first, "--checkpoint-every", 2)
    assert code == 0, stderr
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["checkpoint-0000002", "checkpoint-0000003"]
    ckpt2 = _ckpt(first, 2)
    out = tmp_path / "new"
    code, _, stderr = run_cli_here(capsys, *common, "--out", out, "--resume", ckpt2)
    assert code == 0, stderr
    a, b = (load_file(p / "evaluator.safetensors") for p in (first, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (out / "checkpoints").exists()
    refused = tmp_path / "refused"
    _refused(capsys, refused, [*common, "--out", refused, "--resume", "latest"],
             "train-evaluator writes --out whole when it finishes, so there is no unfinished run in it to continue")
    _refused(capsys, refused, ["train-evaluator", "--steps", 1, "--out", refused, "--resume", ckpt2],
             f"checkpoint {ckpt2} is at step 2, past this run's last step 1 (--steps 1)")
    _refused(capsys, refused, [*common, "--out", refused, "--resume", first],
             f"checkpoint {first} is incomplete (no COMPLETE marker)")
