"""Atomic, exclusive writes and safe (pickle-free) tensor loading, and the checks of a model folder that come
before any weights are read (safetensors headers, the components a packed pipeline borrows).

Every command output goes through here, under one discipline:

- **A folder** (:func:`atomic_dir`: export, pack, goldens, train-evaluator, the training commands' model folders)
  is built in a hidden temporary folder beside it, ``.<name>.<pid>.<random>.partial``, and renamed onto its path
  only when complete. Without ``force`` that rename never replaces anything (``renameat2(RENAME_NOREPLACE)``): a
  path that appeared while the command ran, a user's folder or another run's output, is left as it is and the
  command fails naming it. With ``force`` an existing path is swapped out atomically (``RENAME_EXCHANGE``), then
  deleted.
- **One writer per folder**: a writer holds an advisory lock (``flock``) on ``.<name>.mobilediff.lock`` beside the
  folder for its whole run, the lock file naming its pid and command line; a second writer fails at once naming
  the first. The kernel drops the lock when the process ends, however it ends (SIGKILL included).
- **A training run folder** (train-base, distill, distill-decoder) grows checkpoint by checkpoint instead of being
  renamed into place: its writer holds the same lock (:func:`folder_lock`) for the whole run, creates the folder
  only where nothing is (a folder that appeared at the path since the command checked it is left alone, and the
  command fails naming it), and replaces an existing one only with ``--force``.
- **Leftovers of a killed writer** (its ``.partial`` folder or ``.tmp`` file, its lock file) are removed by the
  next writer of the same path, with one ``warning:`` line on stderr. The writer's pid is in every temporary's
  name; a temporary is removed only when that process no longer runs (and is not this one's own, in use).
- **A single file** (:func:`atomic_path`, :func:`atomic_write_bytes`: generate's PNG, JSON reports, every file
  inside a folder output) is written to a hidden temporary file, synced, and renamed over the path: an existing
  *file* there is replaced, since the user named it (as ``cp`` or an image editor's save would), but never a
  folder. Concurrent writers of one file leave one complete file, the last to finish; no reader ever sees half a
  file.
- **Modes follow the umask** (0o777 / 0o666 less the umask), not tempfile's private 0o700 / 0o600, so an output
  copied to a shared place or a device stays readable as the user's umask intends.
- **A full disk** fails in one line naming the output path, and leaves no temporary behind.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from mobilediff.errors import MobilediffError, shorten

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
LOCK_SUFFIX = ".mobilediff.lock"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_ACTIVE: set[str] = set()  # temporaries this process is writing now: never leftovers, although their pid is ours


def check_output(path: Path, folder: bool = False) -> None:
    """Refuse an output path that cannot be written, before any work: a file where a folder belongs (or the
    reverse), a parent that is a file, a read-only place, a folder another process is writing now (named by its
    lock, see :func:`atomic_dir`). Raises MobilediffError naming the path."""
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
    if folder:
        writer = _current_writer(path)
        if writer is not None:
            raise MobilediffError(_busy(path, writer))


# ------------------------------------------------------------------------------------------------ single files
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to the file ``path`` all or nothing (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by the suffix pick the format); if the
    block succeeds it is synced and renamed onto ``path``, replacing a file there but never a folder. The file gets
    the umask's mode. Raises MobilediffError if ``path`` is a folder; WriteError naming ``path`` (not the temporary)
    on a full disk or when the write or the rename fails."""
    path = Path(path)
    _make_parent(path)
    _clear_leftovers(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e) from None
    tmp = os.path.abspath(tmp)
    _ACTIVE.add(tmp)
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0o600
        os.close(fd)
        yield Path(tmp)
        _fsync(tmp)
        try:
            os.replace(tmp, path)
        except IsADirectoryError:
            raise MobilediffError(f"{path} is a folder: a file output never replaces a folder") from None
        except OSError as e:
            raise _cannot_write(path, e) from None
    except BaseException as e:
        reason = _failed_write(e, tmp)
        if reason is not None:
            raise WriteError(path, reason) from None
        raise
    finally:
        _ACTIVE.discard(tmp)
        Path(tmp).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------- folders
@contextmanager
def atomic_dir(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes ``path`` only if the block succeeds.

    Enter it before the work that fills it: from then on ``path`` is claimed (a second writer fails at once), and
    an interrupted or failed run leaves nothing behind. Without ``force`` nothing at ``path`` is ever replaced: a
    path that exists when entering fails before any work; one that appears while the block runs fails at the end,
    left untouched, this run's output discarded. With ``force`` an existing ``path`` is replaced, atomically where
    the file system allows. Leftovers of killed writers of ``path`` are removed on entry (one ``warning:`` line
    each). Everything in the folder gets the umask's modes.

    Raises MobilediffError naming ``path``: it exists (without ``force``), another process is writing it, it
    appeared during the run; WriteError (a MobilediffError) naming ``path``, not the temporary: the disk is full,
    or a write or the final rename failed (a read-only place).
    """
    path = Path(path)
    if os.path.lexists(path) and not force:
        raise MobilediffError(f"output directory {path} already exists (pass --force to replace it)")
    made = _make_parent(path)
    lock = tmp = None
    ok = False
    try:
        lock = _Lock.acquire(path)
        _clear_leftovers(path, lock.previous if lock else None)
        if os.path.lexists(path) and not force:  # created between the check above and the lock
            raise MobilediffError(f"output directory {path} already exists (pass --force to replace it)")
        try:
            tmp = os.path.abspath(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial",
                                                   dir=path.parent))
        except OSError as e:
            raise _cannot_write(path, e) from None
        _ACTIVE.add(tmp)
        try:
            yield Path(tmp)
            apply_umask(Path(tmp))
        except BaseException as e:
            reason = _failed_write(e, tmp)
            if reason is not None:  # named by the output path, not by the hidden temporary
                raise WriteError(path, reason) from None
            raise
        _publish(Path(tmp), path, force)
        ok = True
    finally:
        if tmp is not None:
            _remove(Path(tmp))
            _ACTIVE.discard(tmp)
        if lock is not None:
            lock.release()
        if not ok:
            for p in made:  # the parents this call created, deepest first, if nothing else went in
                try:
                    p.rmdir()
                except OSError:
                    break


@contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Hold the lock of the folder ``path`` (:class:`_Lock`, as :func:`atomic_dir` does) while the block writes into
    ``path`` in place: a training run folder, which grows checkpoint by checkpoint and is never renamed into place.

    A second writer of ``path`` (this block, or an :func:`atomic_dir`, in another process) fails at once naming this
    one. Leftovers of killed writers beside ``path`` (their lock file, temporaries) are removed on entry, one
    ``warning:`` line each. Parents created for the lock file are removed again if the block fails and nothing else
    went into them. Raises MobilediffError naming the writer that holds the lock; WriteError naming ``path`` if the
    lock file cannot be written (a read-only place, a full disk)."""
    path = Path(path)
    made = _make_parent(path)
    lock = None
    ok = False
    try:
        lock = _Lock.acquire(path)
        _clear_leftovers(path, lock.previous if lock else None)
        yield
        ok = True
    finally:
        if lock is not None:
            lock.release()
        if not ok:
            for p in made:
                try:
                    p.rmdir()
                except OSError:
                    break


def _publish(tmp: Path, path: Path, force: bool) -> None:
    """Rename the finished ``tmp`` onto ``path``: never replacing anything without ``force``; with it, swapping an
    existing ``path`` out (atomic where renameat2 is available) and deleting it."""
    try:
        if not force:
            try:
                _rename_noreplace(tmp, path)
            except FileExistsError:
                raise MobilediffError(f"{path} appeared while this command ran (it did not create it): left as it "
                                      f"is and this run's output discarded (pass --force to replace it)") from None
            return
        for _ in range(10):  # a path appearing or vanishing between two tries: try again
            try:
                _rename_noreplace(tmp, path)
                return
            except FileExistsError:
                pass
            try:
                if _rename_exchange(tmp, path):
                    return  # tmp now holds what was at path, removed by the caller
            except FileNotFoundError:
                continue
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".old", dir=path.parent))
            os.rename(path, old / "replaced")  # no atomic swap on this file system: move aside, then rename
            try:
                _rename_noreplace(tmp, path)
            finally:
                _remove(old)
            return
        raise MobilediffError(f"cannot replace {path}: it keeps changing while this command writes it")
    except OSError as e:
        raise _cannot_write(path, e) from None


# ------------------------------------------------------------------------------------- rename without replacing
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)


def _renameat2():
    """libc's renameat2 (glibc >= 2.28), or None."""
    global _RENAMEAT2
    if _RENAMEAT2 is False:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _RENAMEAT2 = fn
        except (AttributeError, OSError):
            _RENAMEAT2 = None
    return _RENAMEAT2


_RENAMEAT2 = False


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(src, dst, flags): True when done, False when this system or file system does not support it.
    Raises OSError (FileExistsError, FileNotFoundError, ...) naming ``dst``."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if anything is at ``dst``. Atomic with renameat2; elsewhere a check
    then rename(2), which still refuses a non-empty folder or a file appearing in between (an empty folder created
    in that instant would be replaced, and it holds nothing)."""
    try:
        if _rename2(src, dst, _RENAME_NOREPLACE):
            return
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        raise
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        raise


def _rename_exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically; False where unsupported. FileNotFoundError if either is missing."""
    return _rename2(a, b, _RENAME_EXCHANGE)


# ------------------------------------------------------------------------------------------------------ the lock
class _Lock:
    """An exclusive flock on ``.<name>.mobilediff.lock`` beside an output folder, held while it is written.

    The file holds the writer's record (pid, start, command line) for a second writer's error message; the kernel
    releases the lock when its holder dies. A writer that finishes unlinks the file while still holding it, so a
    process that opened it just before checks, once it holds the lock, that the file it locked is still the one
    at that path."""

    def __init__(self, fd: int, file: Path, previous: dict | None):
        self.fd, self.file, self.previous = fd, file, previous

    @classmethod
    def acquire(cls, path: Path) -> "_Lock | None":
        """The lock of ``path``, or None where the file system has no flock (the no-replace rename still protects
        what is at ``path``). Raises MobilediffError naming the writer that holds it."""
        import fcntl

        file = _lock_file(path)
        for _ in range(20):
            try:
                fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as e:
                raise _cannot_write(path, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise MobilediffError(_busy(path, _read_record(file))) from None
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOLCK, *_UNSUPPORTED):
                    _remove(file)  # no locks on this file system: a lock file would only be litter
                    return None
                raise _cannot_write(path, e) from None
            try:
                same = os.path.samestat(os.stat(file), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was unlinked by a writer finishing just now: lock the one at the path
        else:
            raise MobilediffError(f"cannot lock {path}: {file} keeps changing")
        previous = _parse_record(os.pread(fd, 4096, 0))
        record = {"pid": os.getpid(), "started": datetime.now().isoformat(timespec="seconds"), "command": _command()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError as e:  # a full disk: the lock is ours, its file goes
            cls(fd, file, None).release()
            raise _cannot_write(path, e) from None
        return cls(fd, file, previous if previous and previous.get("pid") != os.getpid() else None)

    def release(self) -> None:
        try:
            self.file.unlink(missing_ok=True)  # while still holding it (see the class docstring)
        except OSError:
            pass
        os.close(self.fd)


def _command() -> str:
    """This process's command line, short, for a second writer's error message."""
    if not sys.argv:
        return "?"
    prog = Path(sys.argv[0]).name
    if prog in ("cli.py", "__main__.py"):  # python -m mobilediff[.cli]
        prog = "mobilediff"
    return shorten(" ".join([prog, *sys.argv[1:]]), 160)


def _lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}{LOCK_SUFFIX}"


def _parse_record(raw: bytes) -> dict | None:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) else None


def _read_record(file: Path) -> dict | None:
    """The record of the writer holding ``file`` (it may be writing it just now: a few short tries)."""
    for _ in range(10):
        try:
            rec = _parse_record(file.read_bytes())
        except OSError:
            rec = None
        if rec is not None:
            return rec
        time.sleep(0.02)
    return None


def _current_writer(path: Path) -> dict | None:
    """The record of the process writing the folder ``path`` now ({} if it cannot be read), or None."""
    import fcntl

    file = _lock_file(path)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_record(file) or {}
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def _busy(path: Path, writer: dict | None) -> str:
    if not writer:
        return f"{path} is being written by another process (its lock {_lock_file(path)} is held): wait for it, or write elsewhere"
    return (f"{path} is being written by another process (pid {writer['pid']}, since {writer.get('started', '?')}: "
            f"{writer.get('command', '?')}): wait for it, or write elsewhere")


# --------------------------------------------------------------------------------------------------- leftovers
def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] not in "ZX"
    except (OSError, ValueError, IndexError):
        return True


def _clear_leftovers(path: Path, lock_record: dict | None = None) -> None:
    """Remove the temporaries beside ``path`` whose writer no longer runs (``.<name>.<pid>.<random>.partial``,
    ``.old``, ``.tmp*``), one ``warning:`` line per dead writer; name (and keep) the ``.partial`` folders of older
    mobilediff versions, which recorded no writer. ``lock_record``: the record found in the lock this process just
    took, whose writer is therefore gone."""
    name = re.escape(path.name)
    ours = re.compile(rf"\.{name}\.(\d+)\.[a-z0-9_]+\.(partial|old|tmp.*)")
    legacy = re.compile(rf"\.{name}\.[a-z0-9_]{{8}}\.partial|\.{name}\.old")
    prefix = f".{path.name}."
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    dead: dict[int, list[str]] = {}
    if lock_record is not None and not _alive(lock_record["pid"]):  # (alive: it finished, its lock file stayed)
        dead.setdefault(lock_record["pid"], []).append(_lock_file(path).name)
    for entry in entries:
        m = ours.fullmatch(entry.name)
        if m is not None:
            pid = int(m.group(1))
            if os.path.abspath(entry.path) in _ACTIVE or (pid != os.getpid() and _alive(pid)):
                continue
            _remove(Path(entry.path))
            if not os.path.lexists(entry.path):
                dead.setdefault(pid, []).append(entry.name)
        elif legacy.fullmatch(entry.name):
            _warn(f"{entry.path} looks like the unfinished output of an interrupted mobilediff run (an older version, "
                  f"which recorded no writer): remove it if nothing is writing {path}")
    for pid, names in dead.items():
        why = "it no longer runs" if pid != os.getpid() else "an earlier write of this process that failed"
        _warn(f"removed what process {pid} left unfinished beside {path} ({why}): {', '.join(sorted(names))}")


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------- utilities
def umask() -> int:
    """The process's umask, read without changing it where /proc allows (os.umask alone must set it to read it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Folders 0o777, files 0o666 (0o777 if executable) less the umask, throughout ``root`` (tempfile's 0o700 and
    0o600, and modes copied from a source, become what the user's umask says)."""
    mask = umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            p = os.path.join(folder, d)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~mask)
        for f in files:
            p = os.path.join(folder, f)
            if not os.path.islink(p):
                os.chmod(p, (0o777 if os.stat(p).st_mode & 0o111 else 0o666) & ~mask)


def _make_parent(path: Path) -> list[Path]:
    """Create the missing parents of ``path``; return those created, deepest first. Raises MobilediffError."""
    missing = []
    p = path.parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(path, e) from None
    return missing


def _fsync(file: str) -> None:
    fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass


def _no_space(e: BaseException) -> str | None:
    """The system's message when ``e`` (or what it wraps) is a full disk or quota, else None: libraries report it
    as OSError(ENOSPC) or wrap it in their own error type whose message is the system's ("No space left on device
    (os error 28)")."""
    seen = 0
    while e is not None and seen < 8:
        for n in _NO_SPACE:
            if (isinstance(e, OSError) and e.errno == n) or os.strerror(n) in str(e):
                return os.strerror(n)
        e = e.__cause__ or e.__context__
        seen += 1
    return None


class WriteError(MobilediffError):
    """An output could not be written: one line naming the output path and the system's reason."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = Path(path), reason


def _cannot_write(path: Path, e: OSError) -> WriteError:
    """One line naming the output path (not a hidden temporary) and the system's reason."""
    return WriteError(path, e.strerror or str(e))


def _failed_write(e: BaseException, tmp: str) -> str | None:
    """The reason to report when ``e`` failed a write into the temporary ``tmp`` (a full disk anywhere, or an
    OSError / WriteError naming a path inside ``tmp``), or None for any other error."""
    full = _no_space(e)
    if full is not None:
        return full
    where = e.path if isinstance(e, WriteError) else e.filename if isinstance(e, OSError) else None
    if where is None or not isinstance(where, (str, os.PathLike)):
        return None
    where = os.path.abspath(os.fspath(where))
    if where != tmp and not where.startswith(tmp + os.sep):
        return None
    return e.reason if isinstance(e, WriteError) else (e.strerror or str(e))


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


# ------------------------------------------------------------------------------- model folders, before any weights
SHARED_FILE = "shared_components.json"  # a packed pipeline's record of the components it borrows from its base


def check_safetensors_header(path: Path) -> None:
    """Parse a safetensors header (8-byte length + JSON) and check the data size; raise if corrupt."""
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            raise ValueError(f"data section is {size - 8 - n} bytes, header says {end}")
    except (ValueError, struct.error, KeyError, TypeError) as e:
        raise MobilediffError(f"corrupt safetensors file {path}: {e}") from None


def shared_components(path: Path) -> dict[str, Path]:
    """Components a pipeline folder borrows from another one (``shared_components.json``: a base folder relative
    to it, and the sha256 of each borrowed component's weights); checked, so a changed base is refused."""
    f = Path(path) / SHARED_FILE
    if not f.is_file():
        return {}
    try:
        spec = json.loads(f.read_text())
        base = (Path(path) / spec["base"]).resolve()
        comps = dict(spec["components"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MobilediffError(f"corrupt {f}: {e}") from None
    out = {}
    for comp, sha in comps.items():
        src = base / comp
        if not src.is_dir():
            raise MobilediffError(f"{path} borrows {comp} from {src}, which does not exist")
        if sha is not None and tree_sha256(src, "**/*") != sha:
            raise MobilediffError(f"{path} borrows {comp} from {src}, whose files changed since (sha256 mismatch)")
        out[comp] = src
    return out
