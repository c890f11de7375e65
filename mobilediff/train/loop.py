"""The one training loop that every training method runs: accelerator, resume, LR schedule, finite-loss stop, logging,
checkpoint cadence, EMA and progress bar, with the method supplied as an :class:`Objective` (a loss on top).

Built on accelerate, so ``accelerate launch --multi_gpu --num_processes N -m mobilediff ...`` spreads a run over N
processes (DDP) unchanged: every process draws the whole global batch's random numbers from generators seeded by
(seed, step) and keeps its own rows of it (:func:`process_rows`), so a run is a pure function of (seed, step) whatever
the number of processes, and ``--resume`` continues it exactly. Each process's loss is the mean over its rows and DDP
averages the gradients, which makes the update that of the mean over the global batch. Only the main process writes
(checkpoints, log, progress bar); checkpoints are pickle-free and atomic (:mod:`mobilediff.train.checkpoint`); a
non-finite loss on any process stops every process before anything is saved.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch

from mobilediff.errors import MobilediffError
from mobilediff.train.checkpoint import Checkpoint, latest_checkpoint, restore, save_checkpoint


@dataclass
class Leg:
    """A stretch of optimizer steps with one optimizer and one LR schedule (a training stage, an LCM run, one
    progressive round). Steps are numbered globally across the legs of a run, as the checkpoints are."""

    run_dir: Path  # checkpoints/ and log.jsonl go here
    desc: str  # progress-bar label
    steps: int  # optimizer steps in this leg
    lr_warmup_steps: int  # linear warm-up, then cosine decay to 10 % of the peak over the leg
    checkpoint_every: int  # a checkpoint every K steps counted from the leg's start, and one at its end
    log_every: int  # a log.jsonl row every K global steps, and one at the leg's end
    grad_clip: float  # max gradient norm of the objective's clipped module
    first_step: int = 0  # global number of the leg's first step
    elapsed_key: str = "elapsed_seconds"  # state.json key of the wall time the leg has spent, over resumed sessions
    checkpoint_state: dict = field(default_factory=dict)  # further state.json entries (a progressive round's number)
    loss_format: str = ".4f"  # of the loss on the progress bar

    @property
    def end_step(self) -> int:
        return self.first_step + self.steps


class Objective(Protocol):
    """A training method as the loop sees it."""

    # modules the optimizer trains, in the order accelerate prepares them; the loop replaces them with the prepared
    # (possibly DDP-wrapped) ones, which ``loss`` must call so that gradients are synchronised
    models: dict[str, torch.nn.Module]
    clip: str  # key of ``models`` whose gradient norm is clipped
    log_fields: dict  # leading fields of every log.jsonl row, e.g. {"stage": "vae"}

    def checkpointed(self) -> dict[str, Any]:
        """Name -> unwrapped module or :class:`EMA` (anything with state_dict / load_state_dict) that a checkpoint
        holds, as ``<name>.safetensors``."""

    def after_resume(self) -> None:
        """Called once the checkpoint (if any) is loaded, before the models are prepared."""

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        """The scalar loss of global step ``step`` and extra progress-bar fields."""

    def after_step(self, step: int) -> None:
        """Called after each optimizer step (EMA updates)."""


class EMA:
    """Exponential moving average of a module's state, in float32: shadow <- d shadow + (1 - d) current.

    ``warmup``: the decay grows as min(decay, (1 + step) / (10 + step)), the usual start of an EMA of weights that
    start random; without it the decay is constant (LCM's target network, which starts as the student).
    ``shadow`` may be the state dict of a module (its tensors share storage), which then holds the average.
    """

    def __init__(self, shadow: dict[str, torch.Tensor], decay: float, warmup: bool = True):
        self.shadow, self.decay, self.warmup = shadow, decay, warmup

    @classmethod
    def of(cls, module: torch.nn.Module, decay: float, warmup: bool = True) -> "EMA":
        """An EMA starting at a float32 copy of ``module``'s state."""
        return cls({k: v.detach().clone().float() for k, v in module.state_dict().items()}, decay, warmup)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int, skip: str | None = None) -> None:
        """Move the average towards ``module``'s state; keys starting with ``skip`` (a frozen submodule) keep their
        shadow values. Non-float entries are copied."""
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        for k, v in module.state_dict().items():
            if skip is not None and k.startswith(skip):
                continue
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach().float(), 1 - decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.shadow.keys():
            raise MobilediffError(f"EMA weights do not fit the model: missing {sorted(self.shadow.keys() - state.keys())[:3]}, "
                                  f"unexpected {sorted(state.keys() - self.shadow.keys())[:3]}")
        self.shadow = {k: v.float() for k, v in state.items()}


def lr_lambda(warmup_steps: int, total_steps: int):
    """LR multiplier at a step: linear warm-up over ``warmup_steps``, then cosine from 1 down to 0.1 at ``total_steps``."""
    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return multiplier


def make_accelerator(mixed_precision: str):
    """An accelerate Accelerator; ``mixed_precision`` "fp32" (none) or "bf16".

    Raises MobilediffError if the run was launched as several processes (``accelerate launch --num_processes N``)
    that accelerate does not join into one run: without a GPU each would train alone and write the same files,
    unless ``ACCELERATE_USE_CPU=1`` asks for processes on the CPU (gloo)."""
    import os

    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision="no" if mixed_precision == "fp32" else mixed_precision)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise MobilediffError(f"launched as {launched} processes, but accelerate found no devices to spread them over "
                              f"(each would train alone): on CPUs set ACCELERATE_USE_CPU=1 to join them with gloo")
    return accelerator


@contextmanager
def run_folder_lock(out: Path, accelerator) -> Iterator[None]:
    """Hold the lock of the run folder OUT for the whole run (:func:`mobilediff.io.folder_lock`): a second command
    writing OUT fails at once, naming this one. Only the main process writes, so only it holds the lock."""
    if not accelerator.is_main_process:
        yield
        return
    from mobilediff.io import folder_lock

    with folder_lock(out):
        yield


def refuse_existing(out: Path, resume: str | None, force: bool) -> None:
    """Refuse an existing OUT for a fresh run (no ``resume``) unless ``force``: MobilediffError naming it."""
    if resume is None and not force and Path(out).exists():
        raise MobilediffError(f"output directory {out} already exists (pass --resume latest to continue, or --force)")


def continues_in_place(out: Path, resume: str | None) -> bool:
    """Whether a run resumes inside the run folder OUT (``latest``, or a checkpoint folder of OUT), rather than
    starting OUT anew (a fresh run, or a checkpoint of another run folder continued in OUT)."""
    from mobilediff.train.checkpoint import inside

    return resume == "latest" or (resume is not None and inside(Path(resume), out))


def prepare_run_folder(out: Path, keep: bool, existed: bool, accelerator) -> None:
    """The run folder every training command writes into, once every process has checked its inputs: a resumed run
    (``keep``) continues OUT as it is; any other starts from an empty OUT, created where nothing is or, when OUT
    ``existed`` at the command's checks (which refused it without --force), replaced. A folder that appeared at OUT
    since those checks is someone else's: left as it is (MobilediffError naming it). The main process changes OUT;
    every process waits for it, before and after. Raises WriteError naming OUT if it cannot be created."""
    import shutil

    from mobilediff.io import WriteError

    out = Path(out)
    accelerator.wait_for_everyone()  # every process has checked OUT before the main process changes it
    if accelerator.is_main_process:
        try:
            if keep and existed:
                out.mkdir(parents=True, exist_ok=True)
            else:
                if existed and out.exists():
                    shutil.rmtree(out)
                try:
                    out.mkdir(parents=True)
                except FileExistsError:
                    raise MobilediffError(f"{out} appeared while this command ran (it did not create it): left as "
                                          f"it is (pass --force to replace it)") from None
        except OSError as e:
            raise WriteError(out, e.strerror or str(e)) from None
    accelerator.wait_for_everyone()


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's weights (names and float32 values), whatever file layout they were loaded from: what a
    run's checkpoints record of the teacher they were trained against."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def module_shapes(module: torch.nn.Module) -> dict[str, tuple]:
    """Weight name -> shape of a module's state (what :func:`mobilediff.train.checkpoint.check_fits` compares)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (weights that caches and records are keyed by)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def provenance() -> dict:
    """What a training record says about where it ran: :func:`mobilediff.machine.machine_info` (plus ``processor``,
    the name older records carry) and the library versions."""
    import platform

    from mobilediff.machine import library_versions, machine_info

    return {"machine": {**machine_info(), "processor": platform.processor() or platform.machine()},
            "versions": library_versions()}


def main_process() -> bool:
    """Whether this is the process that writes and prints (the only one outside ``accelerate launch``)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def process_rows(batch_size: int, accelerator, option: str = "--batch-size") -> slice:
    """The rows of a global batch of ``batch_size`` examples that this process trains on: an equal share each.
    Raises MobilediffError, naming ``option``, if the batch does not split evenly over the processes."""
    n = accelerator.num_processes
    if batch_size % n:
        raise MobilediffError(f"{option} {batch_size} does not split evenly over {n} processes: use a multiple of {n}")
    local = batch_size // n
    return slice(accelerator.process_index * local, (accelerator.process_index + 1) * local)


def check_finite(loss: torch.Tensor, step: int, run_dir: Path) -> None:
    """Raise MobilediffError, naming the last good checkpoint, if ``loss`` is NaN or infinite."""
    if not torch.isfinite(loss).all():
        last = latest_checkpoint(run_dir)
        where = f"; last good checkpoint: {last.path}" if last else "; no checkpoint was written yet"
        raise MobilediffError(f"non-finite loss at step {step}: training stopped{where}")


def progress_bar(accelerator, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not accelerator.is_local_main_process,
                dynamic_ncols=True, mininterval=2.0)


def append_log(run_dir: Path, row: dict) -> None:
    from mobilediff.io import WriteError

    path = Path(run_dir) / "log.jsonl"
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as e:  # a full disk, a read-only place: one line naming the log
        raise WriteError(path, e.strerror or str(e)) from None


def trim_log(run_dir: Path, step: int) -> None:
    """Drop the log.jsonl rows past global step ``step``, where a leg starts or resumes (rows a stopped session wrote
    after its last checkpoint), so that every step is logged once."""
    from mobilediff.io import atomic_write_bytes

    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = [line for line in lines if _row_step(line) <= step]
    if len(keep) != len(lines):
        atomic_write_bytes(path, "".join(keep).encode())


def _row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf  # a row cut off mid-write by a kill


def run_leg(leg: Leg, objective: Objective, optimizer: torch.optim.Optimizer, accelerator,
            resume: Checkpoint | None) -> float:
    """Train ``objective`` for the steps of ``leg`` that are not done yet; returns the leg's wall time in seconds,
    summed over the sessions that resumed it.

    ``resume``: a checkpoint of this leg (its step in (first_step, end_step]) whose modules and optimizer state are
    loaded first, or None to start the leg. Raises MobilediffError on a non-finite loss (nothing is saved then).
    """
    start, elapsed0 = leg.first_step, 0.0
    if resume is not None:
        restore(resume, objective.checkpointed(), optimizer)
        start, elapsed0 = resume.step, resume.state.get(leg.elapsed_key, 0.0)
    if accelerator.is_main_process:
        trim_log(leg.run_dir, start)
    objective.after_resume()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(leg.lr_warmup_steps, leg.steps),
                                                 last_epoch=start - leg.first_step - 1)
    *prepared, optimizer = accelerator.prepare(*objective.models.values(), optimizer)
    objective.models = dict(zip(objective.models, prepared))
    bar = progress_bar(accelerator, leg.steps, start - leg.first_step, leg.desc)
    try:  # an error mid-leg ends the bar's line first, so that the error is a line of its own
        t0 = time.time()
        for step in range(start, leg.end_step):
            loss, fields = objective.loss(step)
            # the mean of the processes' losses is what is logged, and a NaN on any process stops all of them here
            mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
            check_finite(torch.tensor(mean_loss), step, leg.run_dir)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(objective.models[objective.clip].parameters(), leg.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            objective.after_step(step)
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:{leg.loss_format}}", **fields, lr=f"{schedule.get_last_lr()[0]:.1e}")
            last = step + 1 == leg.end_step
            if accelerator.is_main_process and ((step + 1) % leg.log_every == 0 or last):
                append_log(leg.run_dir, {**objective.log_fields, "step": step + 1, "loss": mean_loss,
                                         "time": time.time() - t0})
            if accelerator.is_main_process and ((step + 1 - leg.first_step) % leg.checkpoint_every == 0 or last):
                save_checkpoint(leg.run_dir, step + 1, {k: m.state_dict() for k, m in objective.checkpointed().items()},
                                optimizer, {**leg.checkpoint_state, leg.elapsed_key: elapsed0 + time.time() - t0})
    finally:
        bar.close()
    accelerator.wait_for_everyone()  # the leg's last checkpoint is on disk before any process goes on
    return elapsed0 + time.time() - t0
