"""The result envelope every benchmark writes: schema, machine, library versions, command and wall time around its
rows; its files (JSON + Markdown + PNG) written all or nothing; and the one-line ``error:`` exit for expected failures.

A benchmark command is a ``main(argv, doc, results)`` in its module of this package that parses its flags with
:class:`Parser`, measures, and ends in :func:`write_results`; its script ``benchmarks/<name>.py`` is its documentation
and ``sys.exit(run_script(main, __doc__, RESULTS))`` (:data:`mobilediff.bench.SCRIPTS` maps one to the other). Bad
input raises :class:`MobilediffError` before any work; the user sees one ``error: ...`` line, exit code 2, and no
file is written.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

from mobilediff.errors import MobilediffError
from mobilediff.machine import library_versions, machine_info  # noqa: F401  (every result records them)


def command_line(script: str, argv: list[str] | None) -> str:
    """How the result was made, as a user would type it from the repository root: ``python benchmarks/<script>.py
    ARGS``, absolute paths made relative to the repository (a committed record names no path of this machine)."""
    root = Path(__file__).resolve().parents[2]
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = [os.path.relpath(a, root) if os.path.isabs(a) else a for a in args]
    return f"python benchmarks/{script}.py {shlex.join(args)}".rstrip()


def record_path(path: Path) -> str:
    """A path as a committed result names it: relative to the repository when it lies inside it (no path of this
    machine in a record), else resolved."""
    root = Path(__file__).resolve().parents[2]
    resolved = Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)


def envelope(name: str, command: str, started: float, version: int = 1) -> dict:
    """The record every result file carries: ``schema`` ({"name": "mobilediff.<name>", "version"}; fields are only
    ever added within a version), ``created`` (UTC, ISO 8601), ``command`` (:func:`command_line`), ``machine``,
    ``versions`` and ``wall_seconds`` since ``started`` (a ``time.time()``)."""
    return {"schema": {"name": f"mobilediff.{name}", "version": version},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
            "machine": machine_info(), "versions": library_versions(), "wall_seconds": time.time() - started}


# --------------------------------------------------------------------------------------------------- writing
Content = str | bytes | dict | list | Callable[[Path], None] | None


def json_safe(obj):
    """A copy of ``obj`` with non-finite floats as None (json.dumps would write the non-standard Infinity/NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_results(out: Path, files: Mapping[str, Content]) -> list[Path]:
    """Write a result's files into the folder ``out`` (created if missing; other files in it are left alone).

    ``files`` maps a file name to its content: text (Markdown), bytes, a dict or list (JSON, indented), a function
    that writes the file at the path it is given (a matplotlib ``savefig``), or None to remove a file of that name
    left by an earlier run (a plot this run has no data for would contradict the new JSON). Everything is rendered
    into a temporary folder inside ``out`` first, so a failure while rendering leaves ``out`` untouched; then each
    file is moved into place (``os.replace``) in the order given: put the JSON last, so that a reader that sees the
    new JSON also sees the new Markdown and plots. Returns the paths written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MobilediffError(f"result folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix=".results.", dir=out) as tmp:
        tmp = Path(tmp)
        for name, content in files.items():
            if content is None:
                continue
            path = tmp / name
            if callable(content):
                content(path)
            elif isinstance(content, (dict, list)):
                path.write_text(json.dumps(content, indent=2) + "\n")
            else:
                path.write_bytes(content.encode() if isinstance(content, str) else content)
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        for name, content in files.items():
            if content is None:
                (out / name).unlink(missing_ok=True)
            else:
                os.replace(tmp / name, out / name)
                written.append(out / name)
    return written


def fmt(x, spec: str = ".2f", none: str = "–") -> str:
    """A value for a Markdown table: ``none`` for None, "inf" for infinities, a float as ``format(x, spec)``, anything
    else as ``str(x)``."""
    if x is None:
        return none
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec) if isinstance(x, float) else str(x)


def savefig(fig, dpi: int = 110) -> Callable[[Path], None]:
    """A :func:`write_results` content that saves a matplotlib figure as PNG and closes it."""
    def write(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig.savefig(path, dpi=dpi, format="png")
        plt.close(fig)
    return write


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display is ever opened)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------------- running
def count(minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [minimum, maximum]; anything else is refused with one line."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def finite(minimum: float | None = None, maximum: float | None = None, open_min: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite float in [minimum, maximum] (``open_min``: strictly above ``minimum``); NaN,
    infinities and numbers out of range are refused with one line."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if minimum is not None and (value < minimum or (open_min and value == minimum)):
            raise argparse.ArgumentTypeError(f"must be {'>' if open_min else '>='} {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {value:g}")
        return value
    parse.__name__ = "number"
    return parse


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as a MobilediffError (one ``error:`` line) instead of usage + exit, and
    checks the result folders it parsed (``folders``: destinations such as ``out``) before the command does any
    work: not a file, not under a file, writable."""

    def __init__(self, doc: str, folders: tuple[str, ...] = ("out", "work"), **kw):
        super().__init__(description=doc.strip().split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                         **kw)
        self.folders = folders

    def error(self, message):
        raise MobilediffError(message)

    def add_out(self, results: Path | None, help: str) -> None:
        """``--out``, the result folder: ``results`` unless given (a benchmark script's own results folder), or
        required where there is none."""
        self.add_argument("--out", type=Path, default=results, required=results is None, help=help)

    def parse_args(self, args=None, namespace=None):
        from mobilediff.io import check_output

        ns = super().parse_args(args, namespace)
        for name in self.folders:
            value = getattr(ns, name, None)
            if value is not None:
                check_output(Path(value), folder=True)
        return ns


def run_command(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run a benchmark's ``main(argv)``: 0 when it returns; a MobilediffError becomes one ``error:`` line on stderr
    and exit code 2 (so does an OS error on a path the user gave), an interrupt exit code 130 (no result file is
    written in either case; a sweep's row cache keeps the rows already scored). Library notices a user cannot act on are kept off the terminal."""
    from mobilediff.quiet import quiet_libraries

    quiet_libraries()
    try:
        main(argv)
    except MobilediffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no result file was written", file=sys.stderr)
        return 130
    return 0


def run_script(main: Callable[..., object], doc: str, results: Path | None = None) -> int:
    """A benchmark script's whole run: its command's ``main(argv, doc, results)`` under :func:`run_command`, with the
    script's docstring (the first line is its ``--help`` description) and its results folder (the default ``--out``;
    None: ``--out`` is required)."""
    from functools import partial

    return run_command(partial(main, doc=doc, results=results))
