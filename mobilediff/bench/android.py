"""Android benchmarks over adb: command lists, the runners' output parsers, and the component rows of a run.

The command builders and parsers never talk to a device: :func:`android_components` runs the command lists they
build through a ``runner`` (``subprocess_runner``, or a fake in tests) and hands the text back to the parsers.
The parsers were written against the runners' sources and checked against recorded real outputs
(``tests/data/device_outputs/``, sources in its README); each one names its sources in a comment.

    push_bundle_commands      a bundle directory -> /data/local/tmp/mobilediff/<name>/ on the device
    executor_runner_run       ExecuTorch's example runner (examples/portable/executor_runner), timed by itself
    ort_perf_test_run         ONNX Runtime's onnxruntime_perf_test (-m times -r N -e cpu|nnapi|xnnpack|qnn)
    parse_executor_runner     its log -> success, per-iteration / total times, load time, output count
    parse_ort_perf_test       its summary -> average, percentiles, runs, peak working set
    check_android             adb, the device and the runner flags, before any work
    android_components        push each bundle, run every component in the runners, parse, remove the bundle

Quoting: adb joins the words after ``adb shell`` with spaces and hands the line to the device's shell, so
every word of a device command is passed through ``shlex.quote`` (a no-op for plain paths and flags).
``adb push``/``adb pull`` take their paths literally and are not quoted.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from mobilediff.bench.stats import check_count as _check_count
from mobilediff.bench.stats import summarize, tool_latency
from mobilediff.bundle import MANIFEST
from mobilediff.errors import MobilediffError

DEVICE_ROOT = "/data/local/tmp/mobilediff"  # world-writable for adb shell, executable, survives reboots
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Core ML model directories are useless on Android and large: not pushed
APPLE_ONLY_SUFFIXES = (".mlpackage", ".mlmodelc")
EXECUTORCH_LOG_TAG = "ExecuTorch"


# --------------------------------------------------------------------------------------------- adb commands
@dataclass(frozen=True)
class Adb:
    """Which adb binary and which device (``serial`` = ``adb -s SERIAL``; None: the only device attached)."""

    serial: str | None = None
    executable: str = "adb"

    def cmd(self, *args: str) -> list[str]:
        """An adb command with literal arguments (push, pull, logcat)."""
        return [self.executable, *(["-s", self.serial] if self.serial else []), *args]

    def shell(self, *argv: str, env: Mapping[str, str] | None = None) -> list[str]:
        """``adb shell`` running ``argv`` on the device, each word quoted for the device shell; ``env``
        becomes ``NAME=value`` assignments in front of the command."""
        words = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
        return self.cmd("shell", *words, *(shlex.quote(str(a)) for a in argv))


@dataclass
class DeviceRun:
    """adb commands for one benchmark invocation, to run in this order.

    ``prepare`` first (output ignored), then ``run``, then ``collect``. The text to parse is the output of
    ``run`` (stdout then stderr) followed by the stdout of each ``collect`` command that is not a pull.
    """

    prepare: list[list[str]] = field(default_factory=list)
    run: list[str] = field(default_factory=list)
    collect: list[list[str]] = field(default_factory=list)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise MobilediffError(f"device bundle name {name!r} must be letters, digits, '.', '_' or '-' "
                              f"(and start with a letter or digit)")
    return name


def device_bundle_dir(name: str, root: str = DEVICE_ROOT) -> str:
    """Where ``push_bundle_commands`` puts bundle ``name`` on the device."""
    return f"{root.rstrip('/')}/{_check_name(name)}"


def push_bundle_commands(bundle: Path, name: str, adb: Adb = Adb(), root: str = DEVICE_ROOT,
                         skip_suffixes: Sequence[str] = APPLE_ONLY_SUFFIXES) -> list[list[str]]:
    """Commands that make ``<root>/<name>`` on the device an exact copy of the bundle directory.

    The device directory is removed first (a stale file from an earlier bundle must not survive), then
    every file is pushed to its exact path: ``adb push DIR DEST`` would nest DIR inside DEST when DEST
    exists. Directories whose name ends in one of ``skip_suffixes`` (Core ML models) are not pushed.
    Raises MobilediffError when ``bundle`` is not a bundle directory.
    """
    bundle = Path(bundle)
    if not (bundle / MANIFEST).is_file():
        raise MobilediffError(f"{bundle} is not a bundle directory (no {MANIFEST})")
    dest = device_bundle_dir(name, root)
    files = []
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = f.relative_to(bundle)
        if any(part.endswith(tuple(skip_suffixes)) for part in rel.parts[:-1]):
            continue
        files.append((f, rel.as_posix()))
    subdirs = sorted({f"{dest}/{Path(rel).parent.as_posix()}" for _, rel in files if "/" in rel})
    cmds = [adb.shell("rm", "-rf", dest), adb.shell("mkdir", "-p", dest, *subdirs)]
    cmds += [adb.cmd("push", str(f), f"{dest}/{rel}") for f, rel in files]
    return cmds


def remove_bundle_command(name: str, adb: Adb = Adb(), root: str = DEVICE_ROOT) -> list[str]:
    return adb.shell("rm", "-rf", device_bundle_dir(name, root))


def pull_command(device_path: str, local_path: Path, adb: Adb = Adb()) -> list[str]:
    """Copy one file (an ETDump, an output tensor) from the device."""
    return adb.cmd("pull", device_path, str(local_path))


# ------------------------------------------------------------------------------ ExecuTorch executor_runner
# Flags: pytorch/executorch examples/portable/executor_runner/executor_runner.cpp (gflags DEFINE_*):
#   --model_path, --data_path (.ptd weights), --num_executions, --method_name, --print_output
#   (none|summary|all, recent runners only), --cpu_threads (runners built with the threadpool),
#   --etdump_path (runners built with the event tracer). gflags refuses flags a binary does not define,
#   so the optional ones are only passed when asked for.
# Logging: the runner reports through ET_LOG. With the default Android PAL
# (runtime/platform/default/android.cpp) that goes to logcat, tag "ExecuTorch", message only; with the
# POSIX PAL (desktop, or Android built with -DEXECUTORCH_PAL_DEFAULT=posix) to stderr as
# "I 00:00:00.043703 executorch:executor_runner.cpp:379] <message>". Hence the logcat clear/dump around
# the run, as ExecuTorch's own devtools/scripts/benchmark_android.sh does (`adb logcat -c`, then
# `adb logcat -d -s ExecuTorch:I`).
def executor_runner_run(runner: str, model: str, *, num_executions: int, adb: Adb = Adb(),
                        data_path: str | None = None, method_name: str | None = None,
                        cpu_threads: int | None = None, print_output: str | None = None,
                        etdump_path: str | None = None, etdump_local: Path | None = None) -> DeviceRun:
    """One timed invocation of ExecuTorch's ``executor_runner`` (path on the device given by the user).

    ``num_executions`` runs of the method in one process; recent runners log each iteration, so warm-up
    is done by asking for ``warmup + runs`` executions and dropping the first ``warmup`` per-iteration
    times (see ``parse_executor_runner``). Inputs are the runner's default all-ones tensors.
    ``etdump_local``: pull the ETDump (needs ``etdump_path`` and a runner built with the event tracer).
    """
    n = _check_count("num_executions", num_executions, 1)
    argv = [runner, f"--model_path={model}", f"--num_executions={n}"]
    if data_path:
        argv.append(f"--data_path={data_path}")
    if method_name:
        argv.append(f"--method_name={method_name}")
    if cpu_threads is not None:
        if cpu_threads != -1:  # -1: the runner's own heuristic (its default)
            _check_count("cpu_threads (or -1)", cpu_threads, 1)
        argv.append(f"--cpu_threads={int(cpu_threads)}")
    if print_output is not None:
        if print_output not in ("none", "summary", "all"):
            raise MobilediffError(f"print_output must be none, summary or all, got {print_output!r}")
        argv.append(f"--print_output={print_output}")
    if etdump_path:
        argv.append(f"--etdump_path={etdump_path}")
    if etdump_local is not None and not etdump_path:
        raise MobilediffError("etdump_local needs etdump_path (where the runner writes the ETDump on the device)")
    collect = [adb.cmd("logcat", "-d", "-s", f"{EXECUTORCH_LOG_TAG}:I")]
    if etdump_local is not None:
        collect.append(pull_command(etdump_path, etdump_local, adb))
    return DeviceRun(prepare=[adb.cmd("logcat", "-c")], run=adb.shell(*argv), collect=collect)


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# Message texts, from the ET_LOG format strings in executor_runner.cpp (pytorch/executorch
# examples/portable/executor_runner/executor_runner.cpp). Matched anywhere in a line, so the POSIX prefix
# ("I 00:00:00.043703 executorch:executor_runner.cpp:379] ") and logcat prefixes ("10-31 08:16:31.102:
# I/ExecuTorch(14764): " or threadtime's "... I ExecuTorch: ") do not matter.
_ET_TIMED = re.compile(rf"Model executed successfully (\d+) time\(s\) in ({_NUM}) ms\.")  # 2024 on
_ET_PLAIN = re.compile(r"Model executed successfully\.")  # older runners: no timing at all
_ET_ITER = re.compile(rf"Iteration (\d+) of (\d+): ({_NUM}) ms")  # recent runners only
_ET_LOAD = re.compile(rf"Model loaded in ({_NUM}) ms\.")  # recent runners only
_ET_METHOD = re.compile(r"(?:Using|Running) method (\S+)")
_ET_NOUT = re.compile(r"\b(\d+) outputs:")
# Printed with std::cout / printf (always stdout, never logcat): "OutputX 0: tensor(" (recent), "Output 0:
# tensor(" (older), "Output[0][3]: (float) 1.0" (--print_output=all)
_ET_OUTPUT = re.compile(r"^Output(?:X)? (\d+): |^Output\[(\d+)\]\[\d+\]:", re.M)
# Error lines: POSIX "E 00:00:00.316485 executorch:method.cpp:939] msg", logcat "E/ExecuTorch(14764): msg"
# (-v time/brief) or "... E ExecuTorch: msg" (threadtime)
_ET_ERROR = re.compile(r"^[EF] (?:[\d:.]+ )?executorch:[^\]]*\] ?(.*)$"
                       r"|[EF]/ExecuTorch\(\s*\d+\): (.*)$"
                       r"|\s[EF] ExecuTorch\s*: (.*)$", re.M)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1][:160] if lines else "(empty)")


def parse_executor_runner(text: str) -> dict:
    """Read one ``executor_runner`` invocation's stdout + stderr + ``adb logcat -d -s ExecuTorch:I``.

    Returns a dict:
        success: True (anything else raises)
        timing: "per_iteration" (iterations_ms holds every execution), "total" (only the sum, older
            runners) or None (the oldest runners print no time: time them with a wrapper, e.g. host-side
            around ``adb shell``, which then includes process start and model load)
        num_executions, total_ms, mean_ms: from "Model executed successfully N time(s) in T ms." (None
            without timing); the runner times only Method::execute, not loading
        iterations_ms: per-execution times in order ([] when not printed)
        load_ms: program + method load time (recent runners), method: the method run,
        output_count: from "K outputs:" or, failing that, the distinct "Output i:" lines (None if neither)

    Raises MobilediffError naming what is missing: no success line (with the runner's first error line,
    or a reminder that Android logs go to logcat), several invocations in one text, or iteration lines
    that do not match the execution count.
    """
    if not isinstance(text, str) or not text.strip():
        raise MobilediffError("executor_runner output is empty (nothing captured from the run or from logcat)")
    timed = _ET_TIMED.findall(text)
    plain = _ET_PLAIN.findall(text)
    if len(timed) + len(plain) > 1:
        raise MobilediffError(f"executor_runner output holds {len(timed) + len(plain)} 'Model executed successfully' "
                              f"lines; parse one invocation at a time (clear logcat between runs)")
    if not timed and not plain:
        errors = [next(g for g in m.groups() if g is not None).strip() for m in _ET_ERROR.finditer(text)]
        if errors:
            raise MobilediffError(f"executor_runner did not finish: no 'Model executed successfully' line; "
                                  f"first error: {errors[0]}")
        hint = (" (on Android the runner logs to logcat: append `adb logcat -d -s ExecuTorch:I` to its output)"
                if _ET_OUTPUT.search(text) else "")
        raise MobilediffError(f"executor_runner output has no 'Model executed successfully' line{hint}; "
                              f"last line: {_last_line(text)}")

    out = {"runner": "executor_runner", "success": True, "timing": None, "num_executions": None,
           "total_ms": None, "mean_ms": None, "iterations_ms": [], "load_ms": None, "method": None,
           "output_count": None}
    if timed:
        n, total = int(timed[0][0]), float(timed[0][1])
        out.update(num_executions=n, total_ms=total, mean_ms=total / n if n else None, timing="total")
        iters = [(int(i), int(of), float(ms)) for i, of, ms in _ET_ITER.findall(text)]
        if iters:
            if [i for i, _, _ in iters] != list(range(1, n + 1)) or any(of != n for _, of, _ in iters):
                raise MobilediffError(f"executor_runner printed {len(iters)} 'Iteration i of n' lines for {n} "
                                      f"executions (lines lost from logcat, or two runs mixed)")
            out.update(iterations_ms=[ms for _, _, ms in iters], timing="per_iteration")
    if m := _ET_LOAD.search(text):
        out["load_ms"] = float(m.group(1))
    if m := _ET_METHOD.search(text):
        out["method"] = m.group(1)
    if m := _ET_NOUT.search(text):
        out["output_count"] = int(m.group(1))
    else:
        idx = {int(a or b) for a, b in _ET_OUTPUT.findall(text)}
        out["output_count"] = len(idx) or None
    return out


# ------------------------------------------------------------------------------- onnxruntime_perf_test
# Flags: microsoft/onnxruntime onnxruntime/test/perftest/command_args_parser.cc (ABSL_FLAG m, e, r, x, I,
# s, S, f) and the perftest README: `onnxruntime_perf_test [options...] model_path [result_file]`.
#   -m times -r N   N timed runs (one untimed warm-up run always precedes them, performance_runner.cc)
#   -e PROVIDER     cpu, nnapi, xnnpack, qnn (among others) -- the build must include the provider
#   -I              generate random inputs (no test_data_set_* directories); free dims = 1 unless -f
#   -f "a:1 b:2"    free dimension overrides by name; -S seed for the generated inputs
#   -x N            intra-op threads; -s print the latency percentiles
ORT_PROVIDERS = ("cpu", "nnapi", "xnnpack", "qnn")


def ort_perf_test_run(binary: str, model: str, *, runs: int, provider: str = "cpu", adb: Adb = Adb(),
                      intra_op_threads: int | None = None, free_dims: Mapping[str, int] | None = None,
                      seed: int | None = 0, ld_library_path: str | None = None) -> DeviceRun:
    """One ``onnxruntime_perf_test`` invocation in fixed-count mode with generated inputs and statistics.

    ``ld_library_path``: the device directory holding ``libonnxruntime.so`` for a shared-library build.
    """
    runs = _check_count("runs", runs, 1)
    if provider not in ORT_PROVIDERS:
        raise MobilediffError(f"unknown execution provider {provider!r}; choose one of: {', '.join(ORT_PROVIDERS)}")
    argv = [binary, "-e", provider, "-m", "times", "-r", str(runs), "-I", "-s"]
    if seed is not None:
        argv += ["-S", str(_check_count("seed", seed, 0))]
    if intra_op_threads is not None:
        argv += ["-x", str(_check_count("intra_op_threads", intra_op_threads, 0))]
    if free_dims:
        for k, v in free_dims.items():
            if not re.match(r"^[A-Za-z_][\w.]*$", str(k)):
                raise MobilediffError(f"free dimension name {k!r} must be an identifier")
            _check_count(f"free dimension {k}", v, 1)
        argv += ["-f", " ".join(f"{k}:{int(v)}" for k, v in free_dims.items())]
    argv.append(model)
    env = {"LD_LIBRARY_PATH": ld_library_path} if ld_library_path else None
    return DeviceRun(run=adb.shell(*argv, env=env))


# Output lines: microsoft/onnxruntime onnxruntime/test/perftest/performance_runner.cc (PerformanceRunner::Run
# and PerformanceResult::DumpToFile). Since ~1.5 Run() prints "Average inference time cost: X ms"; recent
# versions (e.g. 1.23.2 in the Arm learning-path recording) print "Average inference time cost total: X ms"
# with the same meaning (sum of per-run times / runs). The percentiles ("P90 Latency: X s", seconds) come
# with -s and are sorted[int(p * n)], no interpolation. "Peak working set size" is ru_maxrss * 1024 bytes
# on Linux/Android (posix/utils.cc). The 2019 README format ("Average time cost:58.8 ms", "P90 Latency is
# 0.0599845sec") is not read.
_ORT_FIELDS = {
    "average_ms": rf"^Average inference time cost(?: total)?:\s*({_NUM}) ms",
    "total_inference_s": rf"^Total inference time cost:\s*({_NUM}) s",
    "requests": r"^Total inference requests:\s*(\d+)",
    "runs": r"^Runs:\s*(\d+)",
    "session_creation_s": rf"^Session creation time cost:\s*({_NUM}) s",
    "first_inference_ms": rf"^First inference time cost:\s*({_NUM}) ms",
    "inferences_per_second": rf"^Number of inferences per second:\s*({_NUM})",
    "avg_cpu_percent": rf"^Avg CPU usage:\s*({_NUM})",
    "peak_working_set_bytes": r"^Peak working set size:\s*(\d+)",
}
_ORT_LATENCIES = {"min_ms": "Min", "max_ms": "Max", "p50_ms": "P50", "p90_ms": "P90", "p95_ms": "P95",
                  "p99_ms": "P99", "p999_ms": "P999"}


def parse_ort_perf_test(text: str) -> dict:
    """Read ``onnxruntime_perf_test``'s stdout.

    Returns average_ms (required), runs (from "Total inference requests" or "Runs:"), total_inference_s,
    session_creation_s, first_inference_ms, inferences_per_second, avg_cpu_percent,
    peak_working_set_bytes / peak_working_set_mib, and min/max/p50/p90/p95/p99/p999 in ms (None unless
    the run had -s), plus has_percentiles. Raises MobilediffError naming the missing line (or quoting
    "Run failed:") when the text is not a finished perf test.
    """
    if not isinstance(text, str) or not text.strip():
        raise MobilediffError("onnxruntime_perf_test output is empty")
    if m := re.search(r"^Run failed:\s*(.*)$", text, re.M):
        raise MobilediffError(f"onnxruntime_perf_test failed: {m.group(1).strip()[:200]}")
    found = {}
    for key, pattern in _ORT_FIELDS.items():
        values = re.findall(pattern, text, re.M)
        found[key] = values[-1] if values else None
    if found["average_ms"] is None:
        raise MobilediffError(f"onnxruntime_perf_test output has no 'Average inference time cost' line "
                              f"(not a finished '-m times' run?); last line: {_last_line(text)}")
    requests, runs = found.pop("requests"), found.pop("runs")
    if requests is not None and runs is not None and int(requests) != int(runs):
        raise MobilediffError(f"onnxruntime_perf_test output disagrees with itself: {requests} requests, {runs} runs")
    count = requests if requests is not None else runs
    out = {"runner": "onnxruntime_perf_test", "runs": int(count) if count is not None else None}
    for key, value in found.items():
        out[key] = None if value is None else (int(value) if key == "peak_working_set_bytes" else float(value))
    out["peak_working_set_mib"] = (out["peak_working_set_bytes"] / 2**20
                                   if out["peak_working_set_bytes"] is not None else None)
    for key, label in _ORT_LATENCIES.items():
        m = re.findall(rf"^{label} Latency:\s*({_NUM}) s\b", text, re.M)
        out[key] = float(m[-1]) * 1000.0 if m else None
    out["has_percentiles"] = out["p50_ms"] is not None
    return out


# ---------------------------------------------------------------------------------------------- running a bundle
CommandRunner = Callable[[list[str]], "subprocess.CompletedProcess"]


@dataclass(frozen=True)
class AndroidOptions:
    adb: str = "adb"  # adb executable on this machine
    serial: str | None = None  # adb -s SERIAL; None: the only attached device
    et_runner: str | None = None  # path of ExecuTorch's executor_runner ON THE DEVICE
    ort_perf_test: str | None = None  # path of onnxruntime_perf_test ON THE DEVICE
    ort_lib: str | None = None  # device folder with libonnxruntime.so (LD_LIBRARY_PATH), for shared builds
    ort_provider: str = "cpu"  # onnxruntime_perf_test -e
    threads: int | None = None  # --cpu_threads / -x; None: each runner's default

    def device(self) -> Adb:
        return Adb(serial=self.serial, executable=self.adb)


def subprocess_runner(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run one adb command; a failure becomes a MobilediffError quoting its last line of output."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError:
        raise MobilediffError(f"{cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise MobilediffError(f"{shlex.join(cmd)} did not finish within 30 minutes") from None
    if p.returncode != 0:
        tail = (p.stderr.strip() or p.stdout.strip() or "(no output)").splitlines()[-1][:200]
        raise MobilediffError(f"`{shlex.join(cmd)}` failed (exit code {p.returncode}): {tail}")
    return p


def check_android(opts: AndroidOptions, runner: CommandRunner, which: Callable[[str], str | None] = shutil.which) -> dict:
    """Check adb, the device and the runner flags before any work; return the device description."""
    if not opts.et_runner and not opts.ort_perf_test:
        raise MobilediffError("--device android needs --et-runner and/or --ort-perf-test (the runner binaries' paths "
                              "on the device)")
    if which(opts.adb) is None and not Path(opts.adb).is_file():
        raise MobilediffError(f"adb not found ({opts.adb!r}): install Android platform-tools or pass --adb PATH")
    adb = opts.device()
    try:
        state = runner(adb.cmd("get-state")).stdout.strip()
    except MobilediffError as e:
        raise MobilediffError(f"no Android device reachable over adb ({e})") from None
    if state != "device":
        raise MobilediffError(f"the Android device is not ready (adb get-state: {state or 'no answer'})")

    def prop(name):
        return runner(adb.shell("getprop", name)).stdout.strip() or None

    return {"serial": opts.serial, "model": prop("ro.product.model"), "soc": prop("ro.soc.model"),
            "android_version": prop("ro.build.version.release"), "abi": prop("ro.product.cpu.abi")}


def run_device_run(run: DeviceRun, runner: CommandRunner) -> str:
    """Run a DeviceRun: prepare, run, collect; return the text to parse as DeviceRun documents."""
    for cmd in run.prepare:
        runner(cmd)
    p = runner(run.run)
    text = (p.stdout or "") + (p.stderr or "")
    for cmd in run.collect:
        c = runner(cmd)
        if "pull" not in cmd:
            text += c.stdout or ""
    return text


def _row(b, comp: str, runtime: str, entry, shapes: dict, load: dict, lat: dict, memory, note: str) -> dict:
    from mobilediff.bench.bundles import file_precision

    return {"model": b.name, "bundle": b.name, "source": b.source_label, "component": comp, "runtime": runtime,
            "file": entry.path, "precision": file_precision(entry), "input_shapes": shapes, "load": load,
            "latency": lat, "memory": memory, "speedup_vs_eager": None,
            "note": " ".join(x for x in (lat["note"], note) if x)}


def _executor_runner_row(b, comp, opts: AndroidOptions, dest: str, runs: int, warmup: int, runner, adb) -> dict:
    entry = b.manifest.component(comp).file("executorch")
    n = warmup + runs
    run = executor_runner_run(opts.et_runner, f"{dest}/{entry.path}", num_executions=n, adb=adb,
                              cpu_threads=opts.threads)
    parsed = parse_executor_runner(run_device_run(run, runner))
    if parsed["num_executions"] is not None and parsed["num_executions"] != n:
        raise MobilediffError(f"executor_runner ran {entry.path} {parsed['num_executions']} times, asked for {n}")
    if parsed["timing"] == "per_iteration":
        lat = {**summarize(parsed["iterations_ms"][warmup:]), "warmup": warmup, "source": "executor_runner"}
    elif parsed["timing"] == "total":
        lat = tool_latency(n, 0, "executor_runner", mean=parsed["mean_ms"],
                           convention="This runner prints only the total over all executions: the mean includes the "
                                      "warm-up executions.")
    else:
        raise MobilediffError("this executor_runner prints no timing (an old build); build a recent one")
    shapes = {s.name: list(s.static_shape) for s in b.manifest.component(comp).inputs}
    load = {"first_ms": parsed["load_ms"], "median_ms": parsed["load_ms"], "n": 1,
            "what": "executor_runner 'Model loaded in' (program + method)"}
    return _row(b, comp, "executor_runner", entry, shapes, load, lat, None,
                "inputs: the runner's all-ones tensors; memory: not reported by executor_runner.")


def _ort_perf_test_row(b, comp, opts: AndroidOptions, dest: str, runs: int, runner, adb) -> dict:
    component = b.manifest.component(comp)
    entry = component.file("onnx")
    run = ort_perf_test_run(opts.ort_perf_test, f"{dest}/{entry.path}", runs=runs, provider=opts.ort_provider,
                            adb=adb, intra_op_threads=opts.threads, free_dims=dict(component.dims) or None,
                            ld_library_path=opts.ort_lib)
    parsed = parse_ort_perf_test(run_device_run(run, runner))
    if parsed["runs"] is not None and parsed["runs"] != runs:
        raise MobilediffError(f"onnxruntime_perf_test ran {entry.path} {parsed['runs']} times, asked for {runs}")
    lat = tool_latency(parsed["runs"], 1, "onnxruntime_perf_test", mean=parsed["average_ms"], median=parsed["p50_ms"],
                       p90=parsed["p90_ms"], min_ms=parsed["min_ms"], max_ms=parsed["max_ms"],
                       convention="Percentiles as onnxruntime_perf_test computes them (sorted[int(p*n)], no "
                                  "interpolation); one untimed warm-up run.")
    mem = None
    if parsed["peak_working_set_mib"] is not None:
        mem = {"baseline_mib": None, "peak_mib": round(parsed["peak_working_set_mib"], 1), "delta_mib": None,
               "source": "onnxruntime_perf_test Peak working set size",
               "what": "peak RSS of the perf-test process (session + runs)"}
    creation = parsed["session_creation_s"]
    load = {"first_ms": creation * 1000 if creation is not None else None, "median_ms": None, "n": 1,
            "what": "onnxruntime_perf_test session creation"}
    shapes = {s.name: list(s.static_shape) for s in component.inputs}
    return _row(b, comp, f"onnxruntime_perf_test:{opts.ort_provider}", entry, shapes, load, lat, mem,
                "inputs: random, generated by the tool.")


def android_components(bundles: list, opts: AndroidOptions, runs: int, warmup: int, runner: CommandRunner,
                       bar) -> list[dict]:
    """Push each bundle (:class:`mobilediff.bench.bundles.BundleInfo`), run each of its components in the device
    runners, parse their output into component rows, and remove the bundle from the device (also on failure)."""
    from mobilediff.bench.bundles import COMPONENTS

    adb = opts.device()
    rows = []
    for b in bundles:
        bar.set_postfix_str(f"push {b.name}")
        for cmd in push_bundle_commands(b.path, b.name, adb):
            runner(cmd)
        dest = device_bundle_dir(b.name)
        try:
            for comp in COMPONENTS:
                if opts.et_runner and "executorch" in b.targets:
                    bar.set_postfix_str(f"{b.name} {comp} executor_runner")
                    rows.append(_executor_runner_row(b, comp, opts, dest, runs, warmup, runner, adb))
                    bar.update(1)
                if opts.ort_perf_test and "onnx" in b.targets:
                    bar.set_postfix_str(f"{b.name} {comp} onnxruntime_perf_test")
                    rows.append(_ort_perf_test_row(b, comp, opts, dest, runs, runner, adb))
                    bar.update(1)
        finally:
            runner(remove_bundle_command(b.name, adb))
    return rows
