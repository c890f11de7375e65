"""Atomic, pickle-free training checkpoints (safetensors + JSON), resumable from the latest complete one.

Layout of ``<run>/checkpoints/checkpoint-0001200/``::

    <model>.safetensors      one per trained module (and ``<model>.ema.safetensors`` for EMA weights)
    optimizer.safetensors    every tensor of the optimizer state, keyed ``state/<param index>/<name>``
    state.json               step, optimizer param groups and scalar state, anything else the run keeps
    COMPLETE                 written last; a folder without it is never resumed from

A checkpoint is written into a temporary ``.partial`` folder and renamed into place only after the
marker exists, so a run killed mid-save leaves at most a stray ``.partial`` folder that is ignored (and removed by
the next save). An old checkpoint is renamed out of the ``checkpoint-N`` pattern before its files are deleted, so a
kill mid-delete never leaves a marked folder with missing files. Only one process may save (the main process of an
``accelerate launch`` run).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from mobilediff.errors import MobilediffError
from mobilediff.io import WriteError, apply_umask, atomic_write_json, load_tensors, save_tensors

MARKER = "COMPLETE"
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state/{idx}/{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, k = key.split("/", 2)
        state.setdefault(int(idx), {})[k] = v
    for idx, sc in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(sc)
    # JSON turns tuples (Adam's betas) into lists; give them back their type
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: Path, step: int, modules: dict[str, dict[str, torch.Tensor]],
                    optimizer: torch.optim.Optimizer | None, state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically; keep only the ``keep`` newest complete ones.

    ``modules`` maps a name to a state dict (already unwrapped from accelerate/DDP).
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"checkpoint-{step:07d}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stray in root.glob(".checkpoint-*"):  # left by a session killed mid-save or mid-delete
            shutil.rmtree(stray, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step:07d}.", suffix=".partial", dir=root))
    except OSError as e:
        raise WriteError(final, e.strerror or str(e)) from None
    try:
        for name, sd in modules.items():
            save_tensors(sd, tmp / f"{name}.safetensors")
        meta: dict = {"step": step, **state}
        if optimizer is not None:
            tensors, opt_meta = _optimizer_to_flat(optimizer)
            save_tensors(tensors, tmp / "optimizer.safetensors")
            meta["optimizer"] = opt_meta
        atomic_write_json(tmp / "state.json", meta)
        (tmp / MARKER).write_text("ok\n")
        apply_umask(tmp)  # mkdtemp makes it 0o700: a checkpoint is as readable as the rest of the run folder
        if final.exists():
            _delete(final)
        os.replace(tmp, final)
    except (OSError, WriteError) as e:  # a full disk, a read-only place: named by the checkpoint, not its temporary
        raise WriteError(final, e.reason if isinstance(e, WriteError) else (e.strerror or str(e))) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in complete_checkpoints(run_dir)[:-keep]:
        _delete(old.path)
    return final


def _delete(path: Path) -> None:
    """Remove a checkpoint folder: first out of the name pattern (one atomic rename), then its files."""
    doomed = path.with_name(f".{path.name}.deleting")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def complete_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first; folders without the marker are skipped."""
    root = Path(run_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _NAME.match(p.name)
            if m and (p / MARKER).is_file() and (p / "state.json").is_file():
                found.append(Checkpoint(p, int(m.group(1)), {}))
    return sorted(found, key=lambda c: c.step)


def read_state(path: Path) -> dict:
    """The ``state.json`` of checkpoint folder ``path``, checked to be an object with an integer ``step``.
    Raises MobilediffError naming the file if it is unreadable, not JSON or not a checkpoint's state."""
    f = Path(path) / "state.json"
    try:
        state = json.loads(f.read_text())
    except FileNotFoundError:
        raise MobilediffError(f"checkpoint {path} has no state.json: refusing to resume from it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MobilediffError(f"corrupt checkpoint state {f}: {e}") from None
    except OSError as e:
        raise MobilediffError(f"cannot read {f}: {e.strerror}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or isinstance(state["step"], bool):
        raise MobilediffError(f"corrupt checkpoint state {f}: expected an object with an integer 'step'")
    return state


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of a run with its state, or None if there is none. Raises MobilediffError
    if that checkpoint's state.json is corrupt (an older one is never silently taken in its place)."""
    cps = complete_checkpoints(run_dir)
    if not cps:
        return None
    c = cps[-1]
    c.state = read_state(c.path)
    return c


def load_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint folder given by the user, checked: it exists, is complete and its state parses."""
    path = Path(path)
    if not path.is_dir():
        raise MobilediffError(f"checkpoint folder not found: {path}")
    if not (path / MARKER).is_file():
        raise MobilediffError(f"checkpoint {path} is incomplete (no {MARKER} marker): refusing to resume from it")
    m = _NAME.match(path.name)
    state = read_state(path)
    return Checkpoint(path, int(m.group(1)) if m else state["step"], state)


def restore(ckpt: Checkpoint, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None) -> None:
    """Load module weights and optimizer state of ``ckpt`` in place. Raises MobilediffError, naming the checkpoint,
    if a file is missing or corrupt or if the weights or optimizer state do not fit (a checkpoint of another run)."""
    for name, mod in modules.items():
        try:
            mod.load_state_dict(load_tensors(ckpt.path / f"{name}.safetensors"))
        except RuntimeError as e:  # key or shape mismatch
            raise MobilediffError(f"checkpoint {ckpt.path} does not fit this run ({name}): "
                                  f"{str(e).splitlines()[0][:200]}") from None
    if optimizer is not None and "optimizer" in ckpt.state:
        try:
            _optimizer_from_flat(optimizer, load_tensors(ckpt.path / "optimizer.safetensors"), ckpt.state["optimizer"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MobilediffError(f"checkpoint {ckpt.path} has an optimizer state that does not fit this run: "
                                  f"{type(e).__name__}: {str(e)[:200]}") from None


def check_fits(ckpt: Checkpoint, shapes: dict[str, dict[str, tuple]]) -> None:
    """Refuse, before any work, a checkpoint whose weights are not those of the modules this run builds.

    ``shapes`` maps a checkpointed name (``<name>.safetensors``) to the weight names and shapes of the module it
    would be loaded into. Only the files' headers are read. Raises MobilediffError naming the checkpoint, the module and
    the first difference (a missing or unexpected weight, or a shape)."""
    from safetensors import SafetensorError, safe_open

    for name, want in shapes.items():
        path = ckpt.path / f"{name}.safetensors"
        if not path.is_file():
            raise MobilediffError(f"checkpoint {ckpt.path} does not fit this run: no {name}.safetensors")
        try:
            with safe_open(str(path), framework="pt") as f:
                got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise MobilediffError(f"cannot read {path}: {str(e).splitlines()[0][:200]}") from None
        missing = [k for k in want if k not in got]
        unexpected = [k for k in got if k not in want]
        resized = [k for k in want if k in got and got[k] != tuple(want[k])]
        if missing or unexpected or resized:
            if resized:
                first = f"weight {resized[0]} is {list(got[resized[0]])}, this run's is {list(want[resized[0]])}"
            else:
                first = f"no weight {missing[0]}" if missing else f"unexpected weight {unexpected[0]}"
            raise MobilediffError(f"checkpoint {ckpt.path} does not fit this run ({name}: {first}; {len(missing)} "
                                  f"missing, {len(unexpected)} unexpected, {len(resized)} of another shape): a "
                                  f"checkpoint of another architecture")


def check_resume(out: Path, resume: str | None, weights: str | tuple[str, ...], what: str,
                 run_items: tuple[str, ...], run_globs: tuple[str, ...] = (), force: bool = False) -> Checkpoint | None:
    """Check what ``--resume`` points at before anything is written; return the checkpoint the run continues from
    (None: a fresh run, or ``latest`` in an OUT without one yet).

    A checkpoint folder must be complete, readable and hold one of ``weights`` (else it is not a ``what``
    checkpoint). It continues in place when it lies inside OUT, else in OUT as a new run folder: then an existing OUT
    is refused unless ``force`` (which replaces it). ``latest`` needs OUT to be empty, missing or a run folder (one of
    ``run_items`` or a ``run_globs`` match in it) whose newest checkpoint is readable. Raises MobilediffError naming
    the folder or file."""
    if resume is None:
        return None
    out = Path(out)
    weights = (weights,) if isinstance(weights, str) else tuple(weights)
    if resume != "latest":
        ckpt = load_checkpoint(Path(resume))
        if not any((ckpt.path / w).is_file() for w in weights):
            raise MobilediffError(f"checkpoint {ckpt.path} is not a {what} checkpoint (no {' or '.join(weights)})")
        if out.exists() and not inside(ckpt.path, out) and not force:
            raise MobilediffError(f"output directory {out} already exists and {ckpt.path} is not one of its "
                                  f"checkpoints: pass a new --out to continue that checkpoint in (or --force to "
                                  f"replace {out})")
        return ckpt
    if out.exists() and any(out.iterdir()) and not any((out / item).exists() for item in run_items) \
            and not any(any(out.glob(g)) for g in run_globs):
        raise MobilediffError(f"--resume latest: {out} is not a {what} run folder (it has none of "
                              f"{', '.join(run_items + run_globs)})")
    return latest_checkpoint(out)


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (links resolved)."""
    return Path(folder).resolve() in Path(path).resolve().parents


def check_continues(ckpt: Checkpoint, run: dict, last_step: int, steps_option: str) -> None:
    """Refuse, before any work, a checkpoint this run cannot continue: one past the run's last step ``last_step``
    (``steps_option`` names the option and value that set it, e.g. "--unet-steps 4"), or one whose run record (``state.json``'s ``run``, see :func:`run_record`) differs
    from ``run`` in a setting that must match. A checkpoint without a record is judged by its weights alone
    (:func:`check_fits`). Raises MobilediffError naming the checkpoint, the setting and both values."""
    if ckpt.step > last_step:
        raise MobilediffError(f"checkpoint {ckpt.path} is at step {ckpt.step}, past this run's last step "
                              f"{last_step} ({steps_option}): a run continuing it needs at least {ckpt.step} steps")
    recorded = ckpt.state.get("run")
    if not isinstance(recorded, dict):
        return
    for key, want in run.items():
        if key in recorded and recorded[key] != want:
            raise MobilediffError(f"checkpoint {ckpt.path} is of another run: its {key} is {recorded[key]}, this "
                                  f"run's {want}")


def run_record(**settings) -> dict:
    """The ``run`` entry of a checkpoint's state.json: the settings a run continuing it must share (JSON values)."""
    return {"run": json.loads(json.dumps(settings))}
