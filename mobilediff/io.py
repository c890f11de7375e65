"""Atomic file writes and safe (pickle-free) tensor loading.

Library code writes only to paths it was given, and every write goes to a temporary file in the same
folder that is renamed over the target, so a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from mobilediff.errors import MobilediffError

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")


def check_output(path: Path, folder: bool = False) -> None:
    """Refuse an output path that cannot be written, before any work: a file where a folder belongs (or the
    reverse), a parent that is a file, a read-only place. Raises MobilediffError naming the path."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise MobilediffError(f"{path} is a {'file' if folder else 'folder'}; expected a {'folder' if folder else 'file'} path")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MobilediffError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MobilediffError(f"cannot write {path}: {parent} is not writable")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    Raises MobilediffError if ``path`` exists and ``force`` is false (checked before any work).
    """
    path = Path(path)
    if path.exists() and not force:
        raise MobilediffError(f"output directory {path} already exists (pass --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; refuse anything else. Raises MobilediffError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MobilediffError(f"missing weights file: {path}")
    if path.suffix in PICKLE_SUFFIXES:
        raise MobilediffError(f"refusing to load {path}: pickle-based weights are never loaded, use safetensors")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise MobilediffError(f"corrupt safetensors file {path}: {str(e).splitlines()[0]}") from None


def tree_sha256(folder: Path, pattern: str = "**/*.safetensors") -> str:
    """sha256 over the (relative path, bytes) of every file of ``folder`` matching ``pattern`` (by default a model
    folder's weights): ties a bundle or a result to the exact weights it came from. A pipeline folder nested inside
    (one with its own ``model_index.json``, e.g. a family member's ``students/<kind>/``) is another model and is not
    part of this one's hash: adding a student does not change its teacher's identity."""
    import hashlib

    h = hashlib.sha256()
    folder = Path(folder)
    for f in sorted(folder.glob(pattern)):
        if not f.is_file() or _inside_nested_pipeline(f, folder):
            continue
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _inside_nested_pipeline(f: Path, root: Path) -> bool:
    """Whether ``f`` lies in a pipeline folder (``model_index.json``) below ``root`` (not ``root`` itself)."""
    p = f.parent
    while p != root and root in p.parents:
        if (p / "model_index.json").is_file():
            return True
        p = p.parent
    return False
