"""Apple benchmarks through Core ML (macOS only): compute units, timed ``predict`` per compute unit, and the
component rows of a run. coremltools converts models on Linux but only the macOS framework runs them.

    coreml_compute_units      CPU_ONLY, CPU_AND_GPU, CPU_AND_NE, ALL as coremltools.ComputeUnit members
    time_coreml_predictions   predict() latencies per compute unit, summarized by mobilediff.bench.stats
    apple_components          every Core ML component of the bundles, per compute unit
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Mapping

from mobilediff.bench.stats import summarize, time_callable
from mobilediff.errors import MobilediffError


def check_apple(platform: str | None = None) -> None:
    """Refuse to start a Core ML run off macOS, in one line."""
    platform = sys.platform if platform is None else platform
    if platform != "darwin":
        raise MobilediffError(f"--device apple needs macOS (this is {platform}): Core ML predictions run only in the "
                              f"macOS framework; coremltools converts models elsewhere but cannot run them")


# The members of coremltools.ComputeUnit (coremltools/__init__.py, 9.0): ALL, CPU_AND_GPU, CPU_ONLY and
# CPU_AND_NE (the latter needs macOS >= 13). Ordered here from the most to the least restricted.
COREML_COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


def coreml_compute_units(names: Iterable[str] | None = None, coremltools_module=None) -> list:
    """``coremltools.ComputeUnit`` members for ``names`` (default: all four, CPU_ONLY first).

    coremltools is imported only here (it imports torch: seconds). Raises MobilediffError for an
    unknown name.
    """
    names = list(COREML_COMPUTE_UNITS if names is None else names)
    unknown = [n for n in names if n not in COREML_COMPUTE_UNITS]
    if unknown or not names:
        raise MobilediffError(f"unknown Core ML compute unit(s) {unknown or names}; choose from: "
                              f"{', '.join(COREML_COMPUTE_UNITS)}")
    if coremltools_module is None:
        import coremltools as coremltools_module
    return [getattr(coremltools_module.ComputeUnit, n) for n in names]


def time_coreml_predictions(model_factory: Callable[[object], object], inputs: Mapping[str, object], *,
                            warmup: int = 3, runs: int = 20, compute_units: Iterable[str] | None = None,
                            coremltools_module=None, platform: str | None = None) -> dict[str, dict]:
    """Time ``model.predict(inputs)`` for each compute unit and summarize with mobilediff.bench.stats.

    Args:
        model_factory: ``compute_unit -> coremltools.models.MLModel``, e.g.
            ``lambda cu: ct.models.MLModel(path, compute_units=cu)``; called once per compute unit (Core ML
            fixes the compute units when it loads a model). Its load time is reported as ``load_ms``.
        inputs: the feature dict passed to ``predict`` (numpy arrays keyed by input name).
        warmup, runs: untimed, then timed predictions per compute unit.
        compute_units: names from COREML_COMPUTE_UNITS (default all four).
        coremltools_module, platform: for tests (defaults: ``import coremltools``, ``sys.platform``).

    Returns ``{unit name: summarize(samples) | {"load_ms": ...}}``.

    Raises:
        MobilediffError: not on macOS (Core ML predictions need the macOS framework), an unknown compute
            unit, or a model that fails to load or predict on one of them.
    """
    platform = sys.platform if platform is None else platform
    if platform != "darwin":
        raise MobilediffError(f"Core ML predictions need macOS (this is {platform}); coremltools can convert "
                              f"models here but only the macOS framework runs them")
    units = coreml_compute_units(compute_units, coremltools_module)
    results = {}
    for unit in units:
        name = getattr(unit, "name", str(unit))
        try:
            t0 = time.perf_counter_ns()
            model = model_factory(unit)
            load_ms = (time.perf_counter_ns() - t0) / 1e6
            samples = time_callable(lambda: model.predict(inputs), warmup, runs)
        except MobilediffError:
            raise
        except Exception as e:  # noqa: BLE001 - Core ML reports load/predict failures as plain exceptions
            raise MobilediffError(f"Core ML failed on compute unit {name}: {type(e).__name__}: {e}") from None
        results[name] = {**summarize(samples), "load_ms": load_ms}
    return results


def apple_components(bundles: list, runs: int, warmup: int, compute_units: Iterable[str] | None, bar,
                     coremltools_module=None, platform: str | None = None) -> list[dict]:
    """Core ML predict() latency of every component of every bundle with Core ML files
    (:class:`mobilediff.bench.bundles.BundleInfo`), per compute unit."""
    from mobilediff.bench.bundles import COMPONENTS, component_inputs, file_precision
    from mobilediff.bundle import component_file

    if coremltools_module is None:
        import coremltools as coremltools_module
    rows = []
    for b in bundles:
        if "coreml" not in b.targets:
            continue
        for comp in COMPONENTS:
            path, entry = component_file(b.manifest, b.path, comp, "coreml")
            specs = b.manifest.component(comp).inputs
            inputs = {spec.name: x.numpy() for spec, x in zip(specs, component_inputs(b.manifest, comp))}
            bar.set_postfix_str(f"{b.name} {comp} coreml")
            res = time_coreml_predictions(
                lambda unit, p=str(path): coremltools_module.models.MLModel(p, compute_units=unit), inputs,
                warmup=warmup, runs=runs, compute_units=compute_units, coremltools_module=coremltools_module,
                platform=platform)
            for unit, stats in res.items():
                lat = {k: v for k, v in stats.items() if k != "load_ms"}
                rows.append({"model": b.name, "bundle": b.name, "source": b.source_label, "component": comp,
                             "runtime": f"coreml:{unit}", "file": entry.path, "precision": file_precision(entry),
                             "input_shapes": {k: list(v.shape) for k, v in inputs.items()},
                             "load": {"first_ms": stats["load_ms"], "median_ms": stats["load_ms"], "n": 1,
                                      "what": "coremltools.models.MLModel(path, compute_units) (compiles the package)"},
                             "latency": {**lat, "warmup": warmup, "source": "coremltools predict"},
                             "memory": None, "speedup_vs_eager": None, "note": lat.get("note")})
            bar.update(1)
    return rows
