"""Latency statistics for every benchmark: one summary of a list of latencies, a timer, peak memory and the
Pareto frontier of latency against quality.

Every latency benchmark (host or phone) ends in :func:`summarize`, so all result files share one set of
statistics with one definition each:

==================  ========================================================================================
key                 definition (samples ``x_1..x_n`` in milliseconds, after warm-up)
==================  ========================================================================================
``n``               number of samples
``median_ms``       50th percentile (numpy's default *linear* interpolation between closest ranks)
``p90_ms``          90th percentile, same interpolation: ``numpy.percentile(x, 90)``
``mean_ms``         arithmetic mean
``trimmed_mean_ms`` mean after dropping ``int(trim * n)`` samples at *each* end of the sorted samples
                    (``scipy.stats.trim_mean(x, trim)``); equals the mean when ``int(trim * n) == 0``
``min_ms/max_ms``   extremes
``iqr_ms``          ``p75 - p25`` (same interpolation)
``spread``          relative tail spread ``(p90 - median) / median``: 0.25 means the slowest 10 % of runs
                    are about 25 % slower than the typical run or more. ``0`` when ``p90 == median``,
                    infinite when the median is 0 and p90 is not.
``too_noisy``       ``spread > max_spread`` (default 0.25): the machine was busy or throttling; rerun it
``reportable``      ``n >= min_runs`` (default 10): fewer runs give a median too unstable to publish
``note``            one human sentence per problem (``None`` when there is none)
==================  ========================================================================================

The median, not the mean, is the headline number (as in nanoGPT's benchmark): one descheduled run moves
the mean but not the median. Phone tools print their own percentiles with other conventions (e.g.
onnxruntime_perf_test picks ``sorted[int(0.9 * n)]``, no interpolation); re-summarize their per-run times
here when they are available rather than mixing conventions in one table.
"""
from __future__ import annotations

import math
import multiprocessing
import pickle
import sys
import time
from typing import Callable, Sequence

import numpy as np

from mobilediff.errors import MobilediffError

DEFAULT_TRIM = 0.1
DEFAULT_MAX_SPREAD = 0.25
DEFAULT_MIN_RUNS = 10


def _check_samples(samples_ms: Sequence[float]) -> np.ndarray:
    try:
        x = np.asarray(samples_ms, dtype=np.float64)
    except (TypeError, ValueError):
        raise MobilediffError(f"latency samples must be numbers in milliseconds, got {samples_ms!r}") from None
    if x.ndim != 1:
        raise MobilediffError(f"latency samples must be a flat list of numbers, got shape {x.shape}")
    if x.size < 1:
        raise MobilediffError("no latency samples to summarize (n = 0); run the benchmark at least once")
    bad = [float(v) for v in x if not math.isfinite(v)]
    if bad:
        raise MobilediffError(f"latency samples must be finite; got {len(bad)} non-finite value(s): {bad[:3]}")
    if (x < 0).any():
        raise MobilediffError(f"latency samples cannot be negative; got {float(x.min())} ms")
    return x


def trimmed_mean(x: Sequence[float], trim: float) -> float:
    """Mean of the sorted samples after cutting ``int(trim * n)`` from each end (scipy.stats.trim_mean)."""
    if not 0 <= trim < 0.5:
        raise MobilediffError(f"trim must be in [0, 0.5) (fraction cut at each end), got {trim}")
    x = np.sort(np.asarray(x, dtype=np.float64))
    cut = int(trim * x.size)
    return float(x[cut:x.size - cut].mean())


def summarize(samples_ms: Sequence[float], trim: float = DEFAULT_TRIM, max_spread: float = DEFAULT_MAX_SPREAD,
              min_runs: int = DEFAULT_MIN_RUNS) -> dict:
    """Statistics of one benchmark's latencies (see the module docstring for each definition).

    Args:
        samples_ms: per-run latencies in milliseconds, warm-up runs already removed; order does not matter.
        trim: fraction cut at each end for ``trimmed_mean_ms``, in [0, 0.5).
        max_spread: ``too_noisy`` is set when ``(p90 - median) / median`` exceeds this (> 0).
        min_runs: ``reportable`` is False below this many samples (>= 1). Not an error: a short run is
            still worth looking at, it just does not go into a published table.

    Returns:
        dict with n, median_ms, p90_ms, mean_ms, trimmed_mean_ms, min_ms, max_ms, iqr_ms, spread,
        too_noisy, reportable, note and the parameters used (trim, max_spread, min_runs).

    Raises:
        MobilediffError: no samples, a non-finite or negative sample, or a parameter out of range.
    """
    x = _check_samples(samples_ms)
    if not 0 <= trim < 0.5:
        raise MobilediffError(f"trim must be in [0, 0.5) (fraction cut at each end), got {trim}")
    if not max_spread > 0:
        raise MobilediffError(f"max_spread must be > 0, got {max_spread}")
    if isinstance(min_runs, bool) or not isinstance(min_runs, (int, float, np.integer)) or int(min_runs) != min_runs \
            or min_runs < 1:
        raise MobilediffError(f"min_runs must be a positive integer, got {min_runs}")

    p25, median, p75, p90 = (float(v) for v in np.percentile(x, [25, 50, 75, 90]))
    if p90 == median:
        spread = 0.0
    else:  # median == 0 with a slower tail: unbounded relative spread
        spread = (p90 - median) / median if median > 0 else math.inf
    too_noisy = spread > max_spread
    reportable = x.size >= min_runs

    notes = []
    if not reportable:
        notes.append(f"only {x.size} run(s) after warm-up; at least {min_runs} are needed for a reportable result.")
    if too_noisy:
        notes.append(f"the slowest 10% of runs are {spread:.0%} slower than the median (limit {max_spread:.0%}): "
                     f"the machine was busy or throttling, rerun on an idle, cool device.")
    return {"n": int(x.size), "median_ms": median, "p90_ms": p90, "mean_ms": float(x.mean()),
            "trimmed_mean_ms": trimmed_mean(x, trim), "min_ms": float(x.min()), "max_ms": float(x.max()),
            "iqr_ms": p75 - p25, "spread": spread, "too_noisy": bool(too_noisy), "reportable": bool(reportable),
            "note": " ".join(notes) or None, "trim": trim, "max_spread": max_spread, "min_runs": int(min_runs)}


def time_callable(fn: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times, each timed alone with perf_counter_ns.

    Returns the ``runs`` latencies in milliseconds, in call order. ``fn`` must block until its work is done
    (a GPU or asynchronous runtime has to synchronize inside it). Raises MobilediffError for bad counts;
    exceptions from ``fn`` propagate unchanged.
    """
    check_count("warmup", warmup, 0)
    check_count("runs", runs, 1)
    for _ in range(int(warmup)):
        fn()
    out = []
    for _ in range(int(runs)):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def ru_maxrss_to_mib(ru_maxrss: int, platform: str | None = None) -> float:
    """``getrusage().ru_maxrss`` in MiB: the field is in KiB on Linux (and Android) but in bytes on macOS."""
    platform = sys.platform if platform is None else platform
    return ru_maxrss / 2**20 if platform == "darwin" else ru_maxrss / 2**10


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (a high-water mark: it never goes down),
    from ``getrusage(RUSAGE_SELF).ru_maxrss``.

    On Linux the value survives ``exec``: a process started by fork + exec (a ``spawn`` child) reports at
    least the RSS its parent had when it forked. ``peak_rss_of_call`` therefore reads the per-image
    ``VmHWM`` instead where /proc exists.
    """
    try:
        import resource
    except ImportError:  # Windows
        raise MobilediffError("peak memory needs the resource module (Linux or macOS)") from None
    return ru_maxrss_to_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _vm_hwm_mib() -> float | None:
    """Peak RSS of this process image from /proc/self/status (Linux, Android), in MiB; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # "VmHWM:   123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    return None


def _measure_in_child(conn, fn, args, setup=None) -> None:
    try:
        from mobilediff.quiet import quiet_libraries

        quiet_libraries()  # a spawned process starts without the parent's settings (weight-loading progress bars)
        if setup is not None:
            setup()  # before the baseline: what it imports or allocates is not part of the call's delta
        read = _vm_hwm_mib if _vm_hwm_mib() is not None else peak_rss_mib
        before = read()
        fn(*args)
        conn.send(("ok", before, read(), "VmHWM" if read is _vm_hwm_mib else "ru_maxrss"))
    except BaseException as e:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(e).__name__}: {e}", None, None))
    finally:
        conn.close()


def peak_rss_of_call(fn: Callable, *args, timeout_s: float = 600.0, setup: Callable[[], object] | None = None) -> dict:
    """Peak memory of ``fn(*args)`` run in a fresh (spawned) Python process, so nothing this process
    already allocated counts.

    ``fn`` and ``args`` are pickled: ``fn`` must be a module-level function. Returns ``{"baseline_mib",
    "peak_mib", "delta_mib", "source"}``: the child's peak RSS just before the call (interpreter and
    imports of ``fn``'s module), after it, the difference, and where it was read ("VmHWM" on Linux;
    "ru_maxrss" elsewhere, where the baseline may include the parent's footprint, see peak_rss_mib).
    Import heavy libraries inside ``fn`` if they should count; ``setup`` (a picklable callable without
    arguments, e.g. a ``functools.partial`` of a module-level function) runs in the child before the
    baseline is read, so what it imports counts in ``baseline_mib`` and not in ``delta_mib``. Raises
    MobilediffError if ``setup`` or the call fails, or the whole exceeds ``timeout_s``.
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure_in_child, args=(send, fn, args, setup), daemon=True)
    try:
        proc.start()
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        send.close()
        recv.close()
        raise MobilediffError(f"cannot send {getattr(fn, '__name__', fn)} to a new process (it must be a "
                              f"module-level function with picklable arguments): {e}") from None
    send.close()
    try:
        if not recv.poll(timeout_s):
            proc.kill()
            raise MobilediffError(f"memory measurement of {getattr(fn, '__name__', fn)} exceeded {timeout_s:g} s")
        try:
            status, a, b, source = recv.recv()
        except EOFError:
            raise MobilediffError(f"the process measuring {getattr(fn, '__name__', fn)} died "
                                  f"(exit code {proc.exitcode}; out of memory?)") from None
    finally:
        proc.join(5)
        recv.close()
    if status != "ok":
        raise MobilediffError(f"{getattr(fn, '__name__', fn)} failed in its measurement process: {a}")
    return {"baseline_mib": a, "peak_mib": b, "delta_mib": b - a, "source": source}


def check_count(what: str, value, minimum: int) -> int:
    """``value`` as an int if it is an integer >= ``minimum`` (bools refused); else MobilediffError naming ``what``."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MobilediffError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def tool_latency(n: int | None, warmup: int, source: str, *, mean=None, median=None, p90=None, min_ms=None,
                 max_ms=None, convention: str = "") -> dict:
    """The :func:`summarize` keys from a runner's own statistics (a phone tool that prints no per-run samples):
    unknown keys are None; the spread rule and the minimum run count are summarize's."""
    spread = None
    if median is not None and p90 is not None:
        spread = 0.0 if p90 == median else ((p90 - median) / median if median > 0 else math.inf)
    too_noisy = spread is not None and spread > DEFAULT_MAX_SPREAD
    reportable = n is not None and n >= DEFAULT_MIN_RUNS
    notes = []
    if not reportable:
        notes.append(f"only {n} run(s) after warm-up; at least {DEFAULT_MIN_RUNS} are needed for a reportable result.")
    if too_noisy:
        notes.append(f"the slowest 10% of runs are {spread:.0%} slower than the median (limit "
                     f"{DEFAULT_MAX_SPREAD:.0%}): the device was busy or throttling, rerun on an idle, cool device.")
    if median is None:
        notes.append(f"{source} printed no per-run times: the median is unknown, the mean is reported.")
    if convention:
        notes.append(convention)
    return {"n": n, "median_ms": median, "p90_ms": p90, "mean_ms": mean, "trimmed_mean_ms": None, "min_ms": min_ms,
            "max_ms": max_ms, "iqr_ms": None, "spread": spread, "too_noisy": bool(too_noisy),
            "reportable": bool(reportable), "note": " ".join(notes) or None, "warmup": warmup, "source": source}


def row_median(row: dict) -> float | None:
    """The headline latency of a result row (``row["latency"]``): its median, else its mean (tools without samples)."""
    lat = row.get("latency") or {}
    return lat.get("median_ms") if lat.get("median_ms") is not None else lat.get("mean_ms")


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool, rel_tol: float = 1e-3) -> list[bool]:
    """For (latency, quality) points: True where no other point is at least as fast and at least as good, and
    strictly better in one of the two. Qualities within ``rel_tol`` of each other count as equal: the same images
    through two runtimes differ in FD by float noise (~1e-5), which must not put the slower one on the frontier."""
    def same(a, b):
        return abs(a - b) <= rel_tol * max(abs(a), abs(b))

    flags = []
    for i, (li, qi) in enumerate(points):
        dominated = False
        for j, (lj, qj) in enumerate(points):
            if i == j:
                continue
            better_q = same(qj, qi) or (qj > qi if higher_is_better else qj < qi)
            strictly = lj < li or (not same(qj, qi) and (qj > qi if higher_is_better else qj < qi))
            if lj <= li and better_q and strictly:
                dominated = True
                break
        flags.append(not dominated)
    return flags
