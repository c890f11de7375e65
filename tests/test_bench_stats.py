"""The benchmark statistics against hand-computed values and their reference implementations."""
import functools
import math
import operator
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from mobilediff.bench.stats import (pareto_front, peak_rss_mib, peak_rss_of_call, ru_maxrss_to_mib, summarize,
                                    time_callable, trimmed_mean)
from mobilediff.errors import MobilediffError

ONE_TO_TEN = [float(v) for v in range(1, 11)]
TIGHT = [10.0, 10.1, 9.9, 10.2, 10.0, 9.8, 10.1, 10.0, 10.3, 9.9]


def test_one_to_ten_by_hand():
    s = summarize(ONE_TO_TEN)
    assert s["n"] == 10
    assert s["median_ms"] == pytest.approx(5.5)
    # linear interpolation: rank 0.9 * (10 - 1) = 8.1 -> 9 + 0.1 * (10 - 9)
    assert s["p90_ms"] == pytest.approx(9.1)
    assert s["mean_ms"] == pytest.approx(5.5)
    # int(0.1 * 10) = 1 cut at each end: mean(2..9)
    assert s["trimmed_mean_ms"] == pytest.approx(5.5)
    assert (s["min_ms"], s["max_ms"]) == (1.0, 10.0)
    # p25 = 1 + 0.25 * 9 = 3.25, p75 = 1 + 0.75 * 9 = 7.75
    assert s["iqr_ms"] == pytest.approx(4.5)
    assert s["spread"] == pytest.approx((9.1 - 5.5) / 5.5)
    assert s["too_noisy"] is True and s["reportable"] is True
    assert "slower than the median" in s["note"]


def test_outlier_moves_the_mean_not_the_median_or_trimmed_mean():
    x = [10.0] * 9 + [100.0]
    s = summarize(x)
    assert s["median_ms"] == 10.0
    assert s["mean_ms"] == pytest.approx(19.0)
    assert s["trimmed_mean_ms"] == pytest.approx(10.0)  # the outlier is the one value cut at the top
    assert s["p90_ms"] == pytest.approx(10.0 + 0.1 * 90.0)  # rank 8.1 between 10 and 100
    assert s["max_ms"] == 100.0


@pytest.mark.parametrize("n", [1, 3, 7, 10, 11, 25, 101])
@pytest.mark.parametrize("trim", [0.0, 0.05, 0.1, 0.2, 0.3])
def test_matches_scipy_and_numpy(n, trim):
    x = np.random.default_rng(n).lognormal(mean=2.0, sigma=0.5, size=n).tolist()
    s = summarize(x, trim=trim, min_runs=1)
    assert s["trimmed_mean_ms"] == pytest.approx(float(scipy.stats.trim_mean(x, trim)), rel=1e-12)
    assert trimmed_mean(x, trim) == pytest.approx(float(scipy.stats.trim_mean(x, trim)), rel=1e-12)
    assert s["p90_ms"] == pytest.approx(float(np.percentile(x, 90)), rel=1e-12)
    assert s["median_ms"] == pytest.approx(float(np.median(x)), rel=1e-12)
    assert s["iqr_ms"] == pytest.approx(float(scipy.stats.iqr(x)), rel=1e-12)


def test_tight_sample_is_not_noisy():
    s = summarize(TIGHT)
    assert s["spread"] < 0.05
    assert s["too_noisy"] is False and s["reportable"] is True and s["note"] is None


def test_max_spread_is_the_threshold():
    s = summarize(ONE_TO_TEN, max_spread=0.7)  # spread is 0.6545...
    assert s["too_noisy"] is False
    assert summarize(ONE_TO_TEN, max_spread=0.6)["too_noisy"] is True


def test_too_few_runs_is_flagged_not_refused():
    s = summarize(TIGHT[:5])
    assert s["reportable"] is False and s["too_noisy"] is False
    assert "only 5 run(s)" in s["note"] and "at least 10" in s["note"]
    assert summarize(TIGHT[:5], min_runs=5)["reportable"] is True
    assert summarize([3.0])["n"] == 1


def test_both_notes_together():
    s = summarize([1.0, 1.0, 1.0, 5.0], min_runs=10)
    assert s["reportable"] is False and s["too_noisy"] is True
    assert s["note"].count(".") >= 2


def test_zero_median():
    assert summarize([0.0] * 10)["spread"] == 0.0
    s = summarize([0.0] * 9 + [1.0])
    assert math.isinf(s["spread"]) and s["too_noisy"] is True


@pytest.mark.parametrize("bad, match", [
    ([], "n = 0"),
    ([1.0, float("nan")], "non-finite"),
    ([1.0, float("inf")], "non-finite"),
    ([1.0, -2.0], "negative"),
    (["fast"], "numbers"),
    ([[1.0, 2.0]], "flat list"),
])
def test_bad_samples_are_refused(bad, match):
    with pytest.raises(MobilediffError, match=match):
        summarize(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"trim": 0.5}, "trim"), ({"trim": -0.1}, "trim"), ({"max_spread": 0}, "max_spread"),
    ({"min_runs": 0}, "min_runs"), ({"min_runs": 2.5}, "min_runs"), ({"min_runs": "10"}, "min_runs"),
])
def test_bad_parameters_are_refused(kwargs, match):
    with pytest.raises(MobilediffError, match=match):
        summarize(TIGHT, **kwargs)


def test_time_callable_counts_and_units():
    calls = []
    out = time_callable(lambda: (calls.append(1), time.sleep(0.002)), warmup=2, runs=3)
    assert len(calls) == 5 and len(out) == 3
    assert all(2.0 <= t < 2000.0 for t in out)  # milliseconds: sleep(2 ms) cannot return sooner


@pytest.mark.parametrize("warmup, runs", [(-1, 3), (0, 0), (1.5, 3), (0, 2.5), ("2", 3), (0, None)])
def test_time_callable_refuses_bad_counts(warmup, runs):
    with pytest.raises(MobilediffError):
        time_callable(lambda: None, warmup, runs)


def test_ru_maxrss_units():
    assert ru_maxrss_to_mib(2048, "linux") == 2.0  # KiB
    assert ru_maxrss_to_mib(3 * 2**20, "darwin") == 3.0  # bytes


def test_peak_rss_is_in_mib():
    peak = peak_rss_mib()
    assert 1.0 < peak < 1e6
    status = Path("/proc/self/status")
    if sys.platform.startswith("linux") and status.exists():
        # pytest was not started by a bigger process, so the two peaks agree here
        hwm_kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        assert peak == pytest.approx(hwm_kib / 1024, abs=16)


def test_peak_rss_of_call_in_a_fresh_process():
    # operator.mul(b"\x01", n) writes n bytes, so the pages are resident (bytes(n) would be calloc'd zeros)
    r = peak_rss_of_call(operator.mul, b"\x01", 64 << 20)
    assert r["peak_mib"] >= r["baseline_mib"] + 50
    assert r["delta_mib"] == pytest.approx(r["peak_mib"] - r["baseline_mib"])


def test_peak_rss_of_call_reports_failures():
    with pytest.raises(MobilediffError, match="ZeroDivisionError"):
        peak_rss_of_call(operator.truediv, 1, 0)
    with pytest.raises(MobilediffError, match="module-level function"):
        peak_rss_of_call(lambda: None)


def test_pareto_front_by_hand():
    pts = [(10.0, 0.5), (20.0, 0.8), (30.0, 0.7), (5.0, 0.5), (40.0, 0.9)]
    assert pareto_front(pts, higher_is_better=True) == [False, True, False, True, True]
    fd = [(10.0, 30.0), (20.0, 20.0), (30.0, 25.0), (20.0, 20.0)]
    assert pareto_front(fd, higher_is_better=False) == [True, True, False, True]  # equal points both stay
    # the same images through a slower runtime: FD equal up to float noise is a tie, so the slower point is dominated
    assert pareto_front([(40.0, 3677.2), (90.0, 3677.19)], higher_is_better=False) == [True, False]


def test_memory_setup_runs_before_the_baseline():
    """peak_rss_of_call(setup=...): what setup allocates is in the baseline (a high-water mark), not in the delta."""
    r = peak_rss_of_call(operator.mul, b"\x01", 64 << 20, setup=functools.partial(operator.mul, b"\x01", 64 << 20))
    assert r["delta_mib"] < 16  # the setup's 64 MiB already raised the high-water mark
