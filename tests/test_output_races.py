"""The output discipline of every command that writes (mobilediff.io): what happens to --out when something else
touches it while the command runs.

| race                                   | folder outputs (export, pack, goldens, train-evaluator)   | generate's PNG (a file)          |
|----------------------------------------|-----------------------------------------------------------|----------------------------------|
| --out appears while the command runs   | exit 2, one line naming it; left as it is, output dropped | a file is replaced, a folder not |
| a second writer of the same --out      | the second fails at once, naming the first (pid, command) | both finish; the last one wins   |
| a writer is SIGKILLed                  | the next run removes its .partial and lock, one warning   | the next run removes its .tmp    |
| the parent turns read-only mid-run     | exit 2, "cannot write OUT: Read-only file system"         | the same                         |
| the disk fills up                      | exit 2, "cannot write OUT: No space left on device"       | the same                         |
| --force                                | an existing or appearing --out is replaced (atomic swap)  | (no --force: files are replaced) |

Training run folders (train-base, distill, distill-decoder) grow checkpoint by checkpoint instead of being renamed
into place: a second writer fails at once naming the first (the same lock); a folder appearing at --out before the
run makes it is left alone (one line); a SIGKILLed run leaves OUT for --resume latest, which removes its lock file
with one warning; a read-only place or a full disk fails in one line naming what could not be written.

Every command runs in this process (``mobilediff.cli.main``); the other writer is a small subprocess that holds
``atomic_dir`` / ``atomic_path`` open on the same path until released or killed. The export of the tiny pipeline is
done once for real; the tests then replay its component files (``export_component``), so each export here costs
what the rest of the export costs (manifest, sampler tables, the write path), not the graph conversions.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import run_cli_here

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_pipeline_dir):
    """A real ONNX bundle of the tiny pipeline: goldens read it, and exports here replay its component files."""
    from mobilediff.exporter import export_bundle
    from mobilediff.loading import load_pipeline

    return export_bundle(load_pipeline(tiny_pipeline_dir), "onnx", tmp_path_factory.mktemp("races") / "b",
                         source=str(tiny_pipeline_dir))


@pytest.fixture
def fast(monkeypatch, bundle):
    """Export replays the real bundle's component files; train-evaluator scores 8 samples instead of 4096."""
    import mobilediff.evaluator as evaluator
    import mobilediff.exporter as exporter

    files = {name: c["files"][0] for name, c in json.loads((bundle / "manifest.json").read_text())["components"].items()}

    def replay(spec, target, precision, out, recipe=None, calibration=None, attention_budget_mib=None):
        entry = files[spec.name]
        (out / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / entry["path"], out / entry["path"])
        return dict(entry)

    monkeypatch.setattr(exporter, "export_component", replay)
    monkeypatch.setattr(evaluator, "train_evaluator",
                        functools.partial(evaluator.train_evaluator, eval_samples=8, progress=False))


@dataclass
class Command:
    argv: Callable[[Path, Path, Path], list]  # (pipeline folder, bundle, OUT) -> command line
    work: tuple[str, str]  # a function the command calls while it works, inside its atomic_dir: (module, name)


FOLDER_COMMANDS = {
    "export": Command(lambda p, b, o: ["export", "--model", p, "--target", "onnx", "--out", o],
                      ("mobilediff.exporter", "export_component")),
    "pack": Command(lambda p, b, o: ["pack", "--model", p, "--base", p, "--out", o],
                    ("mobilediff.loading", "_same_component")),
    "goldens": Command(lambda p, b, o: ["goldens", "--bundle", b, "--out", o], ("mobilediff.goldens", "_record")),
    "train-evaluator": Command(lambda p, b, o: ["train-evaluator", "--out", o, "--steps", "1", "--batch-size", "2"],
                               ("mobilediff.evaluator", "_fit")),
}


def run(capsys, name: str, pipe: Path, bundle: Path, out: Path, *extra):
    return run_cli_here(capsys, *FOLDER_COMMANDS[name].argv(pipe, bundle, out), *extra)


def during(monkeypatch, work: tuple[str, str], action: Callable[[], None]) -> None:
    """Run ``action`` once, the first time the command calls ``work`` (module, function)."""
    import importlib

    module = importlib.import_module(work[0])
    real = getattr(module, work[1])
    done = []

    def wrapped(*a, **k):
        if not done:
            done.append(action())
        return real(*a, **k)

    monkeypatch.setattr(module, work[1], wrapped)


def leftovers(out: Path) -> list[str]:
    """The hidden temporaries and lock files beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def one_error(code: int, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(("error:", "warning:", "Traceback"))]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr)
    return lines[0]


def user_folder(path: Path) -> None:
    path.mkdir()
    (path / "keep.txt").write_text("user data")


# ---------------------------------------------------------------------------------------- the other writer
HOLDER = """
import sys
from pathlib import Path
from mobilediff.io import atomic_dir, atomic_path, folder_lock
kind, path, text = sys.argv[1:4]
if kind == "run":  # a training run: its folder made in place, under the lock
    with folder_lock(path):
        Path(path).mkdir()
        print("ready", flush=True)
        sys.stdin.readline()
    sys.exit(0)
with (atomic_dir(path) if kind == "dir" else atomic_path(path)) as tmp:
    (tmp / "writer.txt" if kind == "dir" else tmp).write_text(text)
    print("ready", flush=True)
    sys.stdin.readline()  # until the test releases (or kills) it
"""


class Writer:
    """Another process writing ``path`` (``kind`` "dir": atomic_dir; "file": atomic_path; "run": a training run
    folder, made in place under folder_lock) until released."""

    def __init__(self, kind: str, path: Path, text: str = "the other writer"):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, kind, str(path), text], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line == "ready\n", (line, self.proc.stderr.read())
        self.pid = self.proc.pid

    def release(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)  # reaped: no longer a running process


# ------------------------------------------------------------------------------------------- folder outputs
@pytest.mark.parametrize("name", list(FOLDER_COMMANDS))
def test_a_folder_appearing_at_out_mid_run_is_left_alone(name, fast, monkeypatch, tiny_pipeline_dir, bundle, tmp_path,
                                                          capsys):
    out = tmp_path / "out"
    during(monkeypatch, FOLDER_COMMANDS[name].work, lambda: user_folder(out))
    code, stdout, stderr = run(capsys, name, tiny_pipeline_dir, bundle, out)
    assert one_error(code, stderr) == (f"error: {out} appeared while this command ran (it did not create it): left "
                                       f"as it is and this run's output discarded (pass --force to replace it)")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "user data"
    assert leftovers(out) == []


@pytest.mark.parametrize("name", list(FOLDER_COMMANDS))
def test_force_replaces_a_folder_appearing_mid_run(name, fast, monkeypatch, tiny_pipeline_dir, bundle, tmp_path,
                                                   capsys):
    out = tmp_path / "out"
    during(monkeypatch, FOLDER_COMMANDS[name].work, lambda: user_folder(out))
    code, _, stderr = run(capsys, name, tiny_pipeline_dir, bundle, out, "--force")
    assert code == 0, stderr
    assert not (out / "keep.txt").exists() and any(out.iterdir())
    assert leftovers(out) == []


@pytest.mark.parametrize("name", list(FOLDER_COMMANDS))
def test_a_second_writer_fails_at_once_naming_the_first(name, tiny_pipeline_dir, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    first = Writer("dir", out)
    try:
        before = leftovers(out)
        code, _, stderr = run(capsys, name, tiny_pipeline_dir, bundle, out)
        line = one_error(code, stderr)
        assert line.startswith(f"error: {out} is being written by another process (pid {first.pid}, since ")
        assert "wait for it, or write elsewhere" in line
        assert leftovers(out) == before and not out.exists()  # the first writer's files, untouched
    finally:
        assert first.release() == 0
    assert (out / "writer.txt").read_text() == "the other writer" and leftovers(out) == []


def test_two_threads_one_folder_exactly_one_writes(tmp_path):
    """The lock itself (not only the CLI's early check): two writers entering at once, one wins, one fails."""
    from mobilediff.errors import MobilediffError
    from mobilediff.io import atomic_dir

    out, barrier, results = tmp_path / "out", threading.Barrier(2), []

    def write(i):
        barrier.wait()
        try:
            with atomic_dir(out) as tmp:
                (tmp / "who").write_text(str(i))
                barrier_hold.wait(timeout=5)
            results.append(("ok", i))
        except MobilediffError as e:
            results.append(("refused", str(e)))
            barrier_hold.wait(timeout=5)

    barrier_hold = threading.Barrier(2)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    kinds = sorted(r[0] for r in results)
    assert kinds == ["ok", "refused"], results
    refusal = next(r[1] for r in results if r[0] == "refused")
    assert refusal.startswith(f"{out} is being written by another process (pid {os.getpid()}")
    winner = next(r[1] for r in results if r[0] == "ok")
    assert (out / "who").read_text() == str(winner) and leftovers(out) == []


@pytest.mark.parametrize("name", list(FOLDER_COMMANDS))
def test_a_killed_writers_leftovers_go_and_modes_follow_the_umask(name, fast, tiny_pipeline_dir, bundle, tmp_path,
                                                                  capsys):
    out = tmp_path / "out"
    killed = Writer("dir", out)
    killed.kill()
    left = leftovers(out)
    assert len(left) == 2 and left[0].startswith(f".out.{killed.pid}.") and left[0].endswith(".partial")
    assert left[1] == ".out.mobilediff.lock"
    old = os.umask(0o027)
    try:
        code, _, stderr = run(capsys, name, tiny_pipeline_dir, bundle, out)
    finally:
        os.umask(old)
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith(("warning:", "error:"))]
    assert warnings == [f"warning: removed what process {killed.pid} left unfinished beside {out} (it no longer "
                        f"runs): {left[0]}, .out.mobilediff.lock"]
    assert leftovers(out) == [] and not (out / "writer.txt").exists()
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["."] == 0o750 and len(modes) > 2
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o750}
    assert {m for p, m in modes.items() if (out / p).is_file()} == {0o640}


def test_leftovers_of_an_older_version_are_named_not_removed(fast, tiny_pipeline_dir, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / ".out.k3j2h1ab.partial").mkdir()  # what mobilediff wrote before writers were recorded
    code, _, stderr = run(capsys, "pack", tiny_pipeline_dir, bundle, out)
    assert code == 0, stderr
    assert [line for line in stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: {tmp_path / '.out.k3j2h1ab.partial'} looks like the unfinished output of an interrupted mobilediff "
        f"run (an older version, which recorded no writer): remove it if nothing is writing {out}"]
    assert leftovers(out) == [".out.k3j2h1ab.partial"]


@pytest.fixture
def mounts():
    """mount(*args) runs `mount ARGS` (the test is skipped where it cannot); mount.undo() unmounts what it mounted
    (and teardown does, if the test did not)."""
    made = []

    def mount(*args):
        p = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot mount here ({p.stderr.strip() or 'mount failed'})")
        if "remount" not in map(str, args):
            made.append(args[-1])

    def undo():
        while made:
            subprocess.run(["umount", str(made.pop())], check=False)

    mount.undo = undo
    yield mount
    undo()


def read_only_bind(mount, folder: Path) -> None:
    """``folder`` turns read-only (a read-only bind mount of itself over it)."""
    mount("--bind", folder, folder)
    mount("-o", "remount,ro,bind", folder)


@pytest.mark.parametrize("name", list(FOLDER_COMMANDS))
def test_a_parent_turning_read_only_mid_run_then_a_rerun(name, fast, monkeypatch, mounts, tiny_pipeline_dir, bundle,
                                                         tmp_path, capsys):
    """The parent becomes read-only while the command works (a read-only bind mount over it): one line naming
    OUT; what the run could not remove is removed, with a warning, by the next run once the place is writable."""
    parent = tmp_path / "place"
    parent.mkdir()
    out = parent / "out"
    during(monkeypatch, FOLDER_COMMANDS[name].work, lambda: read_only_bind(mounts, parent))
    code, _, stderr = run(capsys, name, tiny_pipeline_dir, bundle, out)
    assert one_error(code, stderr) == f"error: cannot write {out}: Read-only file system"
    assert not out.exists()
    mounts.undo()
    stuck = [n for n in leftovers(out) if n.endswith(".partial")]  # a read-only place kept the temporary
    assert len(stuck) == 1
    code, _, stderr = run(capsys, name, tiny_pipeline_dir, bundle, out)  # (the hook ran once: no mount now)
    assert code == 0, stderr
    assert [line for line in stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: removed what process {os.getpid()} left unfinished beside {out} (an earlier write of this process "
        f"that failed): {stuck[0]}"], stderr
    assert leftovers(out) == [] and any(out.iterdir())


@pytest.mark.parametrize("name", list(FOLDER_COMMANDS))
def test_a_full_disk_names_out_and_leaves_nothing(name, fast, monkeypatch, tiny_pipeline_dir, bundle, tmp_path,
                                                  capsys):
    """ENOSPC from a write the way the system reports it (an OSError without a file name, from a sync)."""
    import mobilediff.io as io

    def full(file):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io, "_fsync", full)
    out = tmp_path / "new" / "out"
    code, _, stderr = run(capsys, name, tiny_pipeline_dir, bundle, out)
    assert one_error(code, stderr) == f"error: cannot write {out}: No space left on device"
    assert not (tmp_path / "new").exists()  # nor the parent it created for OUT


@pytest.mark.parametrize("name", list(FOLDER_COMMANDS))
def test_a_really_full_file_system(name, fast, mounts, tiny_pipeline_dir, bundle, tmp_path, capsys):
    """A 4 KiB tmpfs: whatever library writes first meets the real ENOSPC (onnx, safetensors, json, copies)."""
    small = tmp_path / "small"
    small.mkdir()
    mounts("-t", "tmpfs", "-o", "size=4k", "tmpfs", small)
    out = small / "out"
    code, _, stderr = run(capsys, name, tiny_pipeline_dir, bundle, out)
    assert one_error(code, stderr) == f"error: cannot write {out}: No space left on device"
    assert sorted(os.listdir(small)) == []


def test_a_file_system_full_before_the_command_starts(fast, mounts, tiny_pipeline_dir, bundle, tmp_path, capsys):
    """Not even the lock's record fits: one line naming OUT, and no empty lock file left behind."""
    small = tmp_path / "small"
    small.mkdir()
    mounts("-t", "tmpfs", "-o", "size=4k", "tmpfs", small)
    (small / "filler").write_bytes(b"x" * 4096)
    out = small / "out"
    code, _, stderr = run(capsys, "pack", tiny_pipeline_dir, bundle, out)
    assert one_error(code, stderr) == f"error: cannot write {out}: No space left on device"
    assert sorted(os.listdir(small)) == ["filler"]


# -------------------------------------------------------------------------------------------- generate's PNG
def gen(capsys, pipe: Path, out: Path):
    return run_cli_here(capsys, "generate", "--model", pipe, "--prompt", "a red circle", "--steps", "1", "--scale", "1",
                        "--out", out)


def test_generate_replaces_a_file_but_never_a_folder(monkeypatch, tiny_pipeline_dir, tmp_path, capsys):
    """The rule for a single file: the user named it, so a file there is replaced (whole, atomically); a folder
    appearing there while the command runs is left alone and the command fails in one line."""
    out = tmp_path / "x.png"
    out.write_bytes(b"an older image")
    code, _, stderr = gen(capsys, tiny_pipeline_dir, out)
    assert code == 0, stderr
    assert out.read_bytes()[:4] == b"\x89PNG" and leftovers(out) == []
    out.unlink()
    during(monkeypatch, ("mobilediff.sampling", "image_grid"), lambda: user_folder(out))
    code, _, stderr = gen(capsys, tiny_pipeline_dir, out)
    assert one_error(code, stderr) == f"error: {out} is a folder: a file output never replaces a folder"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and leftovers(out) == []


def test_generate_into_a_parent_turning_read_only_mid_run(monkeypatch, mounts, tiny_pipeline_dir, tmp_path, capsys):
    parent = tmp_path / "place"
    parent.mkdir()
    out = parent / "x.png"
    during(monkeypatch, ("mobilediff.sampling", "image_grid"), lambda: read_only_bind(mounts, parent))
    code, _, stderr = gen(capsys, tiny_pipeline_dir, out)
    assert one_error(code, stderr) == f"error: cannot write {out}: Read-only file system"
    mounts.undo()
    assert list(parent.iterdir()) == []


def test_concurrent_writers_of_one_png_leave_one_whole_file_the_last(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    other = Writer("file", out, "the other writer's image")
    try:
        code, _, stderr = gen(capsys, tiny_pipeline_dir, out)
        assert code == 0, stderr
        assert out.read_bytes()[:4] == b"\x89PNG"
        assert len(leftovers(out)) == 1  # the other writer's temporary, untouched while it runs
    finally:
        assert other.release() == 0
    assert out.read_text() == "the other writer's image" and leftovers(out) == []  # it finished last


def test_nested_writers_of_one_file_keep_each_others_temporaries(tmp_path):
    from mobilediff.io import atomic_path

    out = tmp_path / "r.json"
    with atomic_path(out) as a:
        a.write_text("first")
        with atomic_path(out) as b:
            assert a.exists()
            b.write_text("second")
        assert out.read_text() == "second" and a.exists()
    assert out.read_text() == "first" and leftovers(out) == []


def test_generate_after_a_killed_writer_umask_and_full_disk(monkeypatch, tiny_pipeline_dir, tmp_path, capsys):
    import mobilediff.io as io

    out = tmp_path / "x.png"
    killed = Writer("file", out)
    killed.kill()
    (left,) = leftovers(out)
    assert left.startswith(f".x.png.{killed.pid}.") and left.endswith(".tmp.png")
    old = os.umask(0o027)
    try:
        code, _, stderr = gen(capsys, tiny_pipeline_dir, out)
    finally:
        os.umask(old)
    assert code == 0, stderr
    assert [line for line in stderr.splitlines() if line.startswith(("warning:", "error:"))] == [
        f"warning: removed what process {killed.pid} left unfinished beside {out} (it no longer runs): {left}"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and leftovers(out) == []

    def full(file):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io, "_fsync", full)
    code, _, stderr = gen(capsys, tiny_pipeline_dir, tmp_path / "y.png")
    assert one_error(code, stderr) == f"error: cannot write {tmp_path / 'y.png'}: No space left on device"
    assert not (tmp_path / "y.png").exists() and leftovers(tmp_path / "y.png") == []


# ---------------------------------------------------------------------------------- training run folders
@dataclass
class RunCommand:
    argv: Callable[[Path, Path], list]  # (tiny pipeline folder, OUT) -> a one-step run's command line
    module: str  # where the command looks up prepare_run_folder and run_leg
    made: str  # what a finished run holds in OUT


RUN_COMMANDS = {
    "train-base": RunCommand(lambda p, o: ["train-base", "--out", o, "--tiny", "--vae-steps", 1, "--unet-steps", 1,
                                           "--latent-cache", 4],
                             "mobilediff.train.base", "model"),
    "distill": RunCommand(lambda p, o: ["distill", "--teacher", p, "--method", "lcm", "--steps", 2, "--out", o,
                                        "--max-train-steps", 1, "--batch-size", 2, "--latent-cache", 4],
                          "mobilediff.train.distill", "model"),
    "distill-decoder": RunCommand(lambda p, o: ["distill-decoder", "--model", p, "--out", o, "--max-train-steps", 1,
                                                "--batch-size", 2, "--latent-cache", 4],
                                  "mobilediff.train.decoder", "decoder"),
}


def run_training(capsys, name: str, pipe: Path, out: Path, *extra):
    return run_cli_here(capsys, *RUN_COMMANDS[name].argv(pipe, out), *extra)


TRY_LOCK = """
import sys
from mobilediff.io import folder_lock
with folder_lock(sys.argv[1]):
    pass
"""


@pytest.mark.parametrize("name", list(RUN_COMMANDS))
def test_a_run_folder_has_one_writer(name, monkeypatch, tiny_pipeline_dir, tmp_path, capsys):
    """A training command started while another process writes OUT fails at once naming it, OUT untouched; and
    while a training command runs, it holds OUT's lock: another writer fails naming it."""
    out = tmp_path / "out"
    first = Writer("run", out)
    try:
        code, _, stderr = run_training(capsys, name, tiny_pipeline_dir, out, "--resume", "latest")
        line = one_error(code, stderr)
        assert line.startswith(f"error: {out} is being written by another process (pid {first.pid}, since ")
        assert list(out.iterdir()) == []
    finally:
        assert first.release() == 0
    out.rmdir()
    seen = []

    def second_writer():
        p = subprocess.run([sys.executable, "-c", TRY_LOCK, str(out)], capture_output=True, text=True, timeout=60)
        seen.append((p.returncode, p.stderr.strip().splitlines()[-1]))
        raise KeyboardInterrupt  # the test has seen what it came for: stop the run here

    during(monkeypatch, (RUN_COMMANDS[name].module, "prepare_run_folder"), second_writer)
    code, _, stderr = run_training(capsys, name, tiny_pipeline_dir, out)
    assert code == 130, stderr
    ((rc, last),) = seen
    assert rc != 0 and f"{out} is being written by another process (pid {os.getpid()}, since " in last, last
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("name", list(RUN_COMMANDS))
def test_a_folder_appearing_at_a_run_folder_is_left_alone(name, monkeypatch, tiny_pipeline_dir, tmp_path, capsys):
    """A folder made at OUT after the command checked OUT, before the run folder is made: left as it is, one
    line naming it."""
    out = tmp_path / "out"
    during(monkeypatch, (RUN_COMMANDS[name].module, "prepare_run_folder"), lambda: user_folder(out))
    code, _, stderr = run_training(capsys, name, tiny_pipeline_dir, out)
    assert one_error(code, stderr) == (f"error: {out} appeared while this command ran (it did not create it): left "
                                       f"as it is (pass --force to replace it)")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "user data"
    assert leftovers(out) == []


@pytest.mark.parametrize("name", list(RUN_COMMANDS))
def test_a_killed_run_is_named_then_resumed(name, tiny_pipeline_dir, tmp_path, capsys):
    """A run SIGKILLed right after making OUT: a fresh run into OUT is refused in one line naming the way on, and
    --resume latest runs, removing the killed run's lock file with one warning."""
    out = tmp_path / "out"
    killed = Writer("run", out)
    killed.kill()
    assert leftovers(out) == [".out.mobilediff.lock"]
    code, _, stderr = run_training(capsys, name, tiny_pipeline_dir, out)
    assert one_error(code, stderr) == (f"error: output directory {out} already exists (pass --resume latest to "
                                       f"continue, or --force)")
    code, _, stderr = run_training(capsys, name, tiny_pipeline_dir, out, "--resume", "latest")
    assert code == 0, stderr
    assert [line for line in stderr.splitlines() if line.startswith(("warning:", "error:"))] == [
        f"warning: removed what process {killed.pid} left unfinished beside {out} (it no longer runs): "
        f".out.mobilediff.lock"]
    assert (out / RUN_COMMANDS[name].made).is_dir() and leftovers(out) == []


@pytest.mark.parametrize("name", list(RUN_COMMANDS))
def test_a_run_folder_under_a_read_only_parent(name, mounts, tiny_pipeline_dir, tmp_path, capsys):
    parent = tmp_path / "place"
    parent.mkdir()
    out = parent / "out"
    read_only_bind(mounts, parent)
    code, _, stderr = run_training(capsys, name, tiny_pipeline_dir, out)
    assert one_error(code, stderr) == f"error: cannot write {out}: {parent} is not writable"
    mounts.undo()
    assert list(parent.iterdir()) == []


def test_a_run_folder_turning_read_only_or_full_mid_run(monkeypatch, mounts, tiny_pipeline_dir, tmp_path, capsys):
    """The training loop's writes (log, checkpoints) fail in one line naming what they write; the run folder stays
    as far as it got, and --resume latest goes on once the place is writable."""
    import mobilediff.io as io

    parent = tmp_path / "place"
    parent.mkdir()
    out = parent / "out"
    with monkeypatch.context() as m:
        during(m, ("mobilediff.train.base", "run_leg"), lambda: read_only_bind(mounts, parent))
        code, _, stderr = run_training(capsys, "train-base", tiny_pipeline_dir, out)
    assert one_error(code, stderr) == f"error: cannot write {out / 'vae_run' / 'log.jsonl'}: Read-only file system"
    mounts.undo()

    def full(file):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(io, "_fsync", full)
        code, _, stderr = run_training(capsys, "train-base", tiny_pipeline_dir, out, "--resume", "latest")
    checkpoint = out / "vae_run" / "checkpoints" / "checkpoint-0000001"
    assert one_error(code, stderr) == f"error: cannot write {checkpoint}: No space left on device"
    assert not checkpoint.exists() and list((out / "vae_run" / "checkpoints").iterdir()) == []
    code, _, stderr = run_training(capsys, "train-base", tiny_pipeline_dir, out, "--resume", "latest")
    assert code == 0, stderr
    assert (out / "model").is_dir() and leftovers(out) == []


def test_training_commands_keep_replacing_their_own_folders(tmp_path):
    """distill, train-base and distill-decoder write OUT/model (and the like) with force=True, every time."""
    from mobilediff.io import atomic_dir

    out = tmp_path / "run" / "model"
    for i in range(2):
        with atomic_dir(out, force=True) as tmp:
            (tmp / "weights").write_text(str(i))
    assert (out / "weights").read_text() == "1" and leftovers(out) == []
