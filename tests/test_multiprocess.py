"""Training over two processes (`accelerate launch`, gloo on this machine's CPUs) and runs killed with SIGKILL.

Two-process runs: the CLI under `accelerate launch -m mobilediff`, checkpoints written once by the main process,
both processes' weights bit-identical after every leg (DDP), the global batch split in equal halves (the logged loss
is a single-process run's), output printed once, a two-process run resumed bit-identically, an odd batch refused in
one line before any work. Killed runs: a distillation killed at a random step (or in the middle of writing a
checkpoint), a CLI subprocess, and resumed from the latest checkpoint (distill(resume="latest"), what `--resume
latest` calls) ends bit-identical to an uninterrupted run and loses at most one checkpoint interval. The kill step comes from the test's own RNG; set MOBILEDIFF_KILL_SEED to replay a failure.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import error_lines
from mobilediff.train.checkpoint import complete_checkpoints
from mobilediff.train.distill import DistillConfig, distill

# `accelerate launch` of two local processes; ACCELERATE_USE_CPU=1 joins them with gloo where there is no GPU.
# HF_HOME points at an empty folder so that no accelerate config file of the user's is read.
LAUNCH = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no", "--main_process_port", "0"]

# runs the CLI and, after every training leg, writes each process's trained weights (to compare the processes)
RECORD_RANKS = '''
import os, sys
from safetensors.torch import save_file
import mobilediff.train.base as base, mobilediff.train.distill as distill

def recording(run_leg):
    def wrapped(leg, objective, optimizer, accelerator, resume):
        seconds = run_leg(leg, objective, optimizer, accelerator, resume)
        tensors = {f"{name}/{k}": v.detach().contiguous().clone()
                   for name, module in objective.checkpointed().items() for k, v in module.state_dict().items()}
        save_file(tensors, os.path.join(os.environ["RANK_WEIGHTS"],
                                        f"{leg.run_dir.name}-{leg.end_step}-rank{accelerator.process_index}.safetensors"))
        return seconds
    return wrapped

base.run_leg = recording(base.run_leg)
distill.run_leg = recording(distill.run_leg)
from mobilediff.cli import main
main(sys.argv[1:])
'''

# runs the CLI, printing "step N" (N steps done) as each step starts; with HOLD_SAVE=N it stops after writing the
# first file of checkpoint N (into its temporary folder) until it is killed
KILLABLE = '''
import os, sys
import mobilediff.train.checkpoint as checkpoint
import mobilediff.train.distill as distill

real_loss = distill.LcmObjective.loss
def loss(self, step):
    print(f"step {step}", flush=True)
    return real_loss(self, step)
distill.LcmObjective.loss = loss

real_save = checkpoint.save_tensors
hold = os.environ.get("HOLD_SAVE")
def save_tensors(tensors, path, metadata=None):
    real_save(tensors, path, metadata)
    if hold is not None and path.parent.name.startswith(f".checkpoint-{int(hold):07d}."):
        print(f"saving checkpoint {hold}", flush=True)
        sys.stdin.readline()  # never answered: the test kills this process here
checkpoint.save_tensors = save_tensors
from mobilediff.cli import main
main(sys.argv[1:])
'''

def _env(tmp_path: Path, **extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(Path(__file__).parent.parent), **extra}
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def _launch(tmp_path: Path, target: list, *args, **env) -> subprocess.CompletedProcess:
    """`accelerate launch` two CPU processes of ``target`` (["-m", "mobilediff"] or [script]) with ``args``."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", *LAUNCH, *target, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path, ACCELERATE_USE_CPU="1", **env))


def _distill_args(teacher, out, steps=4, every=2, batch=4):
    return ["distill", "--teacher", teacher, "--method", "lcm", "--steps", 2, "--ddim-timesteps", 10,
            "--guidance-range", 3, 4, "--latent-cache", 16, "--max-train-steps", steps, "--checkpoint-every", every,
            "--batch-size", batch, "--lr", "1e-3", "--out", out]


@contextmanager
def one_thread():
    """Torch on one thread, as the subprocesses (OMP_NUM_THREADS=1), so that their sums are ordered the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _unet(model_dir: Path) -> dict:
    return load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")


def _assert_bit_identical(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs by {(a[k] - b[k]).abs().max().item():.3g}"


def _assert_clean_checkpoints(run_dir: Path, steps: list[int]) -> None:
    """Exactly the complete checkpoints ``steps``: nothing partial, nothing half-deleted, nothing else."""
    assert [c.step for c in complete_checkpoints(run_dir)] == steps
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"checkpoint-{s:07d}" for s in steps]


def _log_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _once(text: str, needle: str) -> bool:
    return text.count(needle) == 1


@pytest.fixture(scope="module")
def two_process_lcm(tiny_pipeline_dir, tmp_path_factory):
    """A 4-step two-process LCM distillation (global batch 4) run through RECORD_RANKS, with checkpoints at 2, 4."""
    tmp = tmp_path_factory.mktemp("mp_lcm")
    script, ranks = tmp / "record_ranks.py", tmp / "ranks"
    script.write_text(RECORD_RANKS)
    ranks.mkdir()
    p = _launch(tmp, [str(script)], *_distill_args(tiny_pipeline_dir, tmp / "run"), RANK_WEIGHTS=str(ranks))
    return tmp, p, ranks


@pytest.mark.slow
def test_two_process_distillation(two_process_lcm, tiny_pipeline_dir):
    """Checkpoints once, from the main process; both processes end with the same weights; each trains on half of the
    global batch, the halves making up the batch of a single-process run (same logged loss); output printed once."""
    tmp, p, ranks = two_process_lcm
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp / "run"
    _assert_clean_checkpoints(run, [2, 4])
    assert _log_steps(run) == [4]
    assert sorted(f.name for f in run.iterdir()) == ["checkpoints", "latent_cache.safetensors", "log.jsonl", "model"]
    # printed once: the result line, and the progress bar's start (each process would draw its own)
    assert p.stdout.splitlines() == [f"student written to {run / 'model'}"]
    assert _once(p.stderr, " 0/4 [") and _once(p.stderr, "encode latent cache:   0%"), p.stderr[-3000:]
    # DDP: the processes' weights (student and EMA target network) are bit-identical, and are what was saved
    rank0, rank1 = (load_file(ranks / f"{run.name}-4-rank{r}.safetensors") for r in (0, 1))
    _assert_bit_identical(rank0, rank1, "process 0 vs process 1")
    saved = {f"{m}/{k}": v for m in ("student", "target")
             for k, v in load_file(run / "checkpoints" / "checkpoint-0000004" / f"{m}.safetensors").items()}
    _assert_bit_identical(rank0, saved, "process 0 vs checkpoint 4")
    _assert_bit_identical({k: rank0[f"student/{k}"] for k in _unet(run / "model")}, _unet(run / "model"), "student")
    # the same run on one process: same examples, noise and timesteps, so the same loss up to summation order
    single = tmp / "single"
    with one_thread():  # as each launched process
        distill(DistillConfig(teacher=str(tiny_pipeline_dir), method="lcm", steps=2, out=single, max_train_steps=4,
                              batch_size=4, lr=1e-3, checkpoint_every=2, latent_cache=16, ddim_timesteps=10,
                              guidance_min=3.0, guidance_max=4.0))
    (two,), (one,) = (json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()), \
        (json.loads(line)["loss"] for line in (single / "log.jsonl").read_text().splitlines())
    assert abs(two - one) <= 1e-5 * abs(one), (two, one)
    a, b = _unet(run / "model"), _unet(single / "model")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3 * 4  # Adam moves each weight by <= lr a step


@pytest.mark.slow
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
def test_two_process_run_resumes_bit_identically(two_process_lcm, tiny_pipeline_dir):
    """The run above, cut back to checkpoint 2 and resumed over two processes with `-m mobilediff ... --resume
    latest`, ends with the uninterrupted run's weights exactly."""
    tmp, p, _ = two_process_lcm
    assert p.returncode == 0, p.stderr[-3000:]
    cut = tmp / "cut"
    shutil.copytree(tmp / "run", cut)
    shutil.rmtree(cut / "model")
    shutil.rmtree(cut / "checkpoints" / "checkpoint-0000004")
    (cut / "log.jsonl").unlink()
    r = _launch(tmp, ["-m", "mobilediff"], *_distill_args(tiny_pipeline_dir, cut), "--resume", "latest")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == [f"student written to {cut / 'model'}"]
    assert _once(r.stderr, " 2/4 ["), r.stderr[-3000:]  # the bar starts at the checkpoint's step, once
    _assert_clean_checkpoints(cut, [2, 4])
    assert _log_steps(cut) == [4]
    _assert_bit_identical(_unet(tmp / "run" / "model"), _unet(cut / "model"), "resumed vs uninterrupted")


@pytest.mark.slow
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
def test_batch_that_does_not_split_over_the_processes_is_refused(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "run"
    p = _launch(tmp_path, ["-m", "mobilediff"], *_distill_args(tiny_pipeline_dir, out, batch=3))
    assert p.returncode != 0
    assert error_lines(p.stderr) == ["error: --batch-size 3 does not split evenly over 2 processes: use a multiple of 2"]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
def test_two_process_train_base(tmp_path):
    """train-base over two processes: both stages' weights bit-identical across the processes after each stage, every
    file written once (checkpoints, latent cache, VAE, pipeline), output printed once."""
    script, ranks, out = tmp_path / "record_ranks.py", tmp_path / "ranks", tmp_path / "run"
    script.write_text(RECORD_RANKS)
    ranks.mkdir()
    p = _launch(tmp_path, [str(script)], "train-base", "--out", out, "--tiny", "--vae-steps", 2, "--unet-steps", 3,
                "--checkpoint-every", 2, RANK_WEIGHTS=str(ranks))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.splitlines() == [f"pipeline written to {out / 'model'}"]
    for stage, steps in (("vae_run", [2]), ("unet_run", [2, 3])):
        _assert_clean_checkpoints(out / stage, steps)
        rank0, rank1 = (load_file(ranks / f"{stage}-{steps[-1]}-rank{r}.safetensors") for r in (0, 1))
        _assert_bit_identical(rank0, rank1, f"{stage}: process 0 vs process 1")
        assert _log_steps(out / stage) == [steps[-1]]
    assert sorted(f.name for f in (out / "unet_run").iterdir()) == ["checkpoints", "latent_cache.safetensors", "log.jsonl"]
    assert _once(p.stderr, "encode latent cache:   0%") and _once(p.stderr, " 0/3 ["), p.stderr[-3000:]
    from mobilediff.loading import load_pipeline

    ema = load_file(ranks / "unet_run-3-rank0.safetensors")
    unet = _unet(out / "model")
    _assert_bit_identical({k: ema[f"denoiser.ema/unet.{k}"] for k in unet}, unet, "pipeline vs EMA")
    assert load_pipeline(out / "model").unet.config.block_out_channels == [16, 32]
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*"))


@pytest.mark.slow
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
@pytest.mark.skipif(torch.cuda.is_available(), reason="with GPUs the processes join over them")
def test_processes_that_accelerate_would_not_join_are_refused(tiny_pipeline_dir, tmp_path):
    """Without ACCELERATE_USE_CPU on a machine without GPUs, accelerate runs each launched process alone: refused in
    one line, before anything is written (else both would write the same run folder)."""
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    p = subprocess.run([str(accelerate), "launch", *LAUNCH, "-m", "mobilediff", *map(str, _distill_args(tiny_pipeline_dir, out))],
                       capture_output=True, text=True, timeout=300, env=_env(tmp_path))
    assert p.returncode != 0
    assert error_lines(p.stderr) == ["error: launched as 2 processes, but accelerate found no devices to spread them "
                                     "over (each would train alone): on CPUs set ACCELERATE_USE_CPU=1 to join them "
                                     "with gloo"]
    assert not out.exists()


def test_process_rows_split_the_global_batch():
    from types import SimpleNamespace

    from mobilediff.errors import MobilediffError
    from mobilediff.train.loop import process_rows

    acc = [SimpleNamespace(num_processes=2, process_index=i) for i in (0, 1)]
    assert [process_rows(8, a) for a in acc] == [slice(0, 4), slice(4, 8)]
    assert process_rows(5, SimpleNamespace(num_processes=1, process_index=0)) == slice(0, 5)
    with pytest.raises(MobilediffError, match="--batch-size 5 does not split evenly over 2 processes"):
        process_rows(5, acc[0])


# ---------------------------------------------------------------------------------------------- SIGKILL


def test_resumed_run_drops_the_log_rows_of_the_lost_steps(tmp_path):
    """Rows logged after the checkpoint a run resumes from (and a row cut off by the kill) are dropped, so that every
    step is logged once."""
    from mobilediff.train.loop import trim_log

    rows = [json.dumps({"step": s, "loss": 0.5}) + "\n" for s in (2, 4, 6)]
    (tmp_path / "log.jsonl").write_text("".join(rows) + '{"step": 8, "lo')
    trim_log(tmp_path, 4)
    assert (tmp_path / "log.jsonl").read_text() == "".join(rows[:2])


def _kill_seed() -> int:
    seed = int(os.environ.get("MOBILEDIFF_KILL_SEED", random.SystemRandom().randrange(2**31)))
    print(f"kill test seed: MOBILEDIFF_KILL_SEED={seed}")
    return seed


def _run_cli(tmp_path: Path, *args, script: Path | None = None, **env) -> subprocess.Popen:
    target = [str(script)] if script else ["-m", "mobilediff"]
    return subprocess.Popen([sys.executable, *target, *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path, **env))


@pytest.mark.parametrize("where", [pytest.param(w, marks=pytest.mark.extended) for w in ("step", "mid-save")])
def test_killed_distillation_resumes_bit_identically(tiny_pipeline_dir, tmp_path, where):
    """SIGKILL at a random step ("step") or while checkpoint N is half written ("mid-save"); `--resume latest`
    continues from the newest complete checkpoint, at most one checkpoint interval back, and ends bit-identical to an
    uninterrupted run (student, EMA target network, every tensor)."""
    rng = random.Random(_kill_seed())
    steps, every = 8, 3  # checkpoints 3, 6, 8
    kill_at = rng.randrange(1, steps) if where == "step" else rng.choice([3, 6])
    print(f"killing {where} at step {kill_at}")
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    full, cut = tmp_path / "full", tmp_path / "cut"
    env = {"HOLD_SAVE": str(kill_at)} if where == "mid-save" else {}
    victim = _run_cli(tmp_path, *_distill_args(tiny_pipeline_dir, cut, steps, every), script=script, **env)
    signal_line = f"step {kill_at}" if where == "step" else f"saving checkpoint {kill_at}"
    done = []
    for line in victim.stdout:
        if line.startswith("step "):
            done.append(int(line.split()[1]))
        if line.strip() == signal_line:
            victim.send_signal(signal.SIGKILL)
            break
    rest, stderr = victim.communicate(timeout=60)
    done += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("step ")]
    assert victim.returncode == -signal.SIGKILL, stderr[-3000:]
    # steps completed when the kill arrived (the step in progress is the next one; mid-save, the checkpoint's)
    killed_at = done[-1] if where == "step" else kill_at
    assert not (cut / "model").exists()
    if where == "mid-save":
        assert list((cut / "checkpoints").glob(f".checkpoint-{kill_at:07d}.*.partial"))  # cut off mid-write
    complete = complete_checkpoints(cut)
    resumed_from = complete[-1].step if complete else 0  # killed while writing the first: starts afresh
    print(f"killed with {killed_at} steps done, resuming from checkpoint {resumed_from}")
    assert 0 <= killed_at - resumed_from <= every, (killed_at, resumed_from)
    # the uninterrupted run and the resumed one, in this process (one thread, as the killed one)
    cfg = DistillConfig(teacher=str(tiny_pipeline_dir), method="lcm", steps=2, out=full, max_train_steps=steps,
                        batch_size=4, lr=1e-3, checkpoint_every=every, latent_cache=16, ddim_timesteps=10,
                        guidance_min=3.0, guidance_max=4.0)
    with one_thread():
        distill(cfg)
        distill(dataclasses.replace(cfg, out=cut), resume="latest")
    _assert_clean_checkpoints(cut, [6, 8])
    assert _log_steps(cut) == _log_steps(full) == [8]
    _assert_bit_identical(_unet(full / "model"), _unet(cut / "model"), "resumed vs uninterrupted student")
    for name in ("student", "target"):
        _assert_bit_identical(load_file(full / "checkpoints" / "checkpoint-0000008" / f"{name}.safetensors"),
                              load_file(cut / "checkpoints" / "checkpoint-0000008" / f"{name}.safetensors"), name)


# one launch in the default run (the user's data through the shared cache, main process first, DDP); the other two
# commands, ~30 s a launch, in the extended tier (python -m pytest -m extended), which keeps CI under 20 minutes
@pytest.mark.parametrize("command", [pytest.param("train-base --images", marks=pytest.mark.extended),
                                     pytest.param("distill lcm --wds", marks=pytest.mark.extended),
                                     pytest.param("distill progressive --prompts", marks=pytest.mark.extended)])
@pytest.mark.slow
def test_two_processes_on_your_data(command, tiny_pipeline_dir, tmp_path):
    """Training on the user's data over two processes: one data read and cache (main process first), both processes'
    weights bit-identical after the run, output once."""
    from test_sources import CAPTIONS, make_imagefolder, make_shards

    data = tmp_path / "data"
    script, ranks = tmp_path / "record_ranks.py", tmp_path / "ranks"
    script.write_text(RECORD_RANKS)
    ranks.mkdir()
    out = tmp_path / "run"
    common = ["--cache-dir", tmp_path / "cache", "--out", out]
    if command == "train-base --images":
        args = ["train-base", "--tiny", "--vae-steps", 2, "--unet-steps", 2, "--checkpoint-every", 1,
                "--vae-batch-size", 4, "--batch-size", 4, "--images", make_imagefolder(data / "f", 8), *common]
    elif command == "distill lcm --wds":
        args = [*_distill_args(tiny_pipeline_dir, out, steps=2, every=1)[:-2], "--wds",
                make_shards(data / "w", 8), *common]
    else:
        (data / "p.txt").parent.mkdir(parents=True)
        (data / "p.txt").write_text("\n".join(CAPTIONS))
        args = ["distill", "--teacher", tiny_pipeline_dir, "--method", "progressive", "--steps", 1, "--teacher-steps",
                2, "--max-train-steps", 2, "--batch-size", 4, "--checkpoint-every", 1, "--prompts", data / "p.txt",
                *common]
    p = _launch(tmp_path, [str(script)], *args, RANK_WEIGHTS=str(ranks))
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(p.stdout.splitlines()) == 1  # "... written to ...", once
    last = sorted(ranks.glob("*-rank0.safetensors"))[-1]
    _assert_bit_identical(load_file(last), load_file(last.with_name(last.name.replace("rank0", "rank1"))),
                          f"process 0 vs process 1 ({last.name})")
