"""The result envelope and the bars (mobilediff.bench.envelope, mobilediff.bench.bars): all-or-nothing result files,
the one-line error exit, and every bar checked by the one function."""
import json
import math

import pytest

from mobilediff.bench import bars
from mobilediff.bench.envelope import command_line, envelope, fmt, json_safe, run_command, write_results
from mobilediff.errors import MobilediffError


def test_write_results_writes_every_kind_and_removes_stale_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_bytes(b"stale plot")
    (out / "keep.txt").write_text("not ours")
    written = write_results(out, {"a.md": "# title\n", "b.bin": b"\x00\x01", "old.png": None,
                                  "c.png": lambda p: p.write_bytes(b"png"), "d.json": {"x": [1, 2]}})
    assert [p.name for p in written] == ["a.md", "b.bin", "c.png", "d.json"]
    assert (out / "a.md").read_text() == "# title\n" and (out / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((out / "d.json").read_text()) == {"x": [1, 2]} and (out / "c.png").read_bytes() == b"png"
    assert not (out / "old.png").exists() and (out / "keep.txt").read_text() == "not ours"
    assert sorted(p.name for p in out.iterdir()) == ["a.md", "b.bin", "c.png", "d.json", "keep.txt"]  # no temporaries


def test_a_failure_while_rendering_leaves_the_folder_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.json").write_text("{}")

    def broken_plot(path):
        raise RuntimeError("plot failed")
    with pytest.raises(RuntimeError, match="plot failed"):
        write_results(out, {"r.md": "new", "r.png": broken_plot, "r.json": {"new": True}})
    assert [p.name for p in out.iterdir()] == ["r.json"] and (out / "r.json").read_text() == "{}"


def test_run_command_turns_expected_failures_into_one_error_line(capsys):
    def bad(argv):
        raise MobilediffError("--runs must be an integer >= 1, got 0")
    assert run_command(bad) == 2
    assert capsys.readouterr().err == "error: --runs must be an integer >= 1, got 0\n"
    assert run_command(lambda argv: None) == 0


def test_envelope_and_formatting():
    env = envelope("run_device", command_line("run_device", ["--out", "a b"]), started=0.0)
    assert env["command"] == "python benchmarks/run_device.py --out 'a b'"
    assert env["schema"] == {"name": "mobilediff.run_device", "version": 1}
    assert {"created", "machine", "versions", "wall_seconds"} <= set(env) and env["machine"]["cores"] >= 1
    assert json_safe({"a": [math.inf, 1.0], "b": math.nan}) == {"a": [None, 1.0], "b": None}
    assert (fmt(None), fmt(math.inf), fmt(1.234, ".1f"), fmt(3), fmt("x")) == ("–", "inf", "1.2", "3", "x")


def test_every_bar_is_checked_by_the_one_function():
    for b in bars.BARS.values():
        assert bars.check(b.id, b.value) is (b.op in (">=", "<="))  # on the bar: met unless the bar is strict
        assert bars.check(b.id, None) is None
    assert bars.check("e2e_int8_4step_speedup", 25.1) and not bars.check("e2e_int8_4step_speedup", 24.9)
    assert bars.check("int8_fd_ratio", 1.05) and not bars.check("int8_fd_ratio", 1.2)
    # ratio bars compare as products, so a zero reference still has a verdict
    assert bars.check_ratio("student_4step_accuracy_ratio", 0.0, 0.0) is True
    assert bars.check_ratio("student_4step_fd_ratio", 15.1, 10.0) is False
    assert bars.check_all({"int8_fd_ratio": 1.0, "int8_denoiser_shrink": 4.0}) is True
    assert bars.check_all({"int8_fd_ratio": 1.0, "int8_denoiser_shrink": None}) is None
    assert bars.check_all({"int8_fd_ratio": 2.0, "int8_denoiser_shrink": None}) is False
    with pytest.raises(MobilediffError, match="unknown bar 'nope'; known: e2e_int8_4step_speedup"):
        bars.check("nope", 1.0)


def test_command_line_names_no_absolute_path():
    from pathlib import Path

    from mobilediff.bench.envelope import command_line

    repo = Path(__file__).resolve().parents[1]
    line = command_line("run_device", ["--bundle", str(repo / "runs" / "b"), "--out", "rel/out", "--steps", "4"])
    assert line == "python benchmarks/run_device.py --bundle runs/b --out rel/out --steps 4"
