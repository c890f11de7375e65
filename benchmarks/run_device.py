"""Latency, memory and quality of exported bundles, per component and end to end, on the host or a device.

    python benchmarks/run_device.py --bundle DIR [--bundle DIR ...] --device host|android|apple --out DIR
        [--steps 1 2 4 8] [--baseline ddim50] [--runs 10] [--warmup 3] [--quality-n 256]
        [--runtimes onnx executorch eager] [--source MODEL ...] [--no-memory]
        android: [--adb PATH] [--serial S] [--et-runner DEVICE_PATH] [--ort-perf-test DEVICE_PATH]
                 [--ort-lib DEVICE_DIR] [--ort-provider cpu|nnapi|xnnpack|qnn] [--threads N]
        apple:   [--compute-units CPU_ONLY CPU_AND_GPU CPU_AND_NE ALL]

A bundle is the output of ``mobilediff export`` (manifest.json). Every bundle given is measured in one run, so
ratios between runtimes, precisions and step counts come from the same machine in the same state.

What runs where
---------------
host     Every bundle through each host runtime it has files for -- ONNX Runtime (CPU execution provider) and
         ExecuTorch's Python runtime (XNNPACK + portable kernels), through the same classes as
         ``mobilediff generate --bundle`` (:class:`mobilediff.runtimes.BundleRunner`) -- and PyTorch eager as the
         reference: the *source pipeline* the bundle was exported from, found from the manifest's
         ``source.model`` (checked against ``source.weights_sha256``) or given with ``--source``. A quantized
         bundle's eager reference is its float source, so eager rows are per source model, not per bundle.
android  Over adb (binaries on the device given by the user): the bundle is pushed to
         /data/local/tmp/mobilediff/<name>/, every ExecuTorch component runs in ExecuTorch's
         ``executor_runner`` (``--et-runner``) and every ONNX component in ``onnxruntime_perf_test``
         (``--ort-perf-test``); their logs are parsed by :mod:`mobilediff.device_runners`; the bundle is
         removed afterwards. The runners feed their own inputs (all ones; random), so end to end is
         *estimated* from the component medians (see end-to-end rows) and quality is not measured there.
apple    macOS only: Core ML ``predict`` per compute unit (CPU_ONLY, CPU_AND_GPU, CPU_AND_NE, ALL) through
         :func:`mobilediff.device_runners.time_coreml_predictions`; end to end estimated as on Android.

Roles and sampling plans
------------------------
A bundle is a *student* when its source model has a ``distillation.json`` (``mobilediff distill``) or its UNet
takes a guidance embedding (LCM); otherwise it is a *teacher*. Teachers run the baseline (``--baseline``,
default 50-step DDIM) with classifier-free guidance (a batch of 2 rows per UNet call, as the manifest's guidance
record says); LCM students run their LCM tables at each of ``--steps``; progressive students run DDIM at their
own step count without a CFG batch. Guidance: ``--baseline-guidance`` / ``--student-guidance`` if given, else the
student's own (distillation.json), else the manifest's ``default_scale``; each row records which.
The baseline of a row is the float (unquantized) teacher's baseline row *on the same runtime*.

Statistics: :func:`mobilediff.latency.summarize` (median, p90, trimmed mean, spread, ``too_noisy``,
``reportable``, ``note``); its module docstring defines each key. Runner-reported statistics (Android) fill
the same keys where the tool prints them and leave the others null.

Output (written into --out only after everything was measured; each file atomically)
-----------------------------------------------------------------------------------
run_device.json          the schema below
run_device.md            tables: targets, components, end to end; which machine ran it and what did not run
run_device_latency.png   median latency per component, per runtime (bars; log scale)
run_device_quality.png   prompt accuracy and FD against end-to-end latency, Pareto frontier marked (host only,
                         when --quality-n > 0)

run_device.json schema (version 1; keys are only ever added)
------------------------------------------------------------
schema        {"name": "mobilediff.run_device", "version": 1, "doc": "benchmarks/run_device.py docstring"}
created       UTC time, ISO 8601
command       the command line that produced the file
wall_seconds  total run time
device        {"kind": "host"|"android"|"apple", "machine": mobilediff.benchmarking.machine_info() of the host,
               "android": {"serial", "model", "soc", "android_version", "abi"} | null,
               "apple": {"platform"} | null,
               "not_run": [one sentence per device kind that this file has no measurement from]}
versions      mobilediff.benchmarking.library_versions() of the host
settings      {"runs", "warmup", "e2e_warmup", "load_runs", "steps", "baseline": {"sampler", "steps"},
               "baseline_guidance", "student_guidance", "quality_n", "prompt_seed", "noise_seed", "memory",
               "runtimes", "threads", "runtime_threads": {...}, "android": {...} | null, "apple": {...} | null}
bundles       [{"name", "path", "role": "teacher"|"student", "method": "teacher"|"lcm"|"progressive",
                "precision": "fp32"|"fp16"|<quantization recipe>, "quantization": recipe name | null,
                "targets": [targets with all three components], "guidance_type", "geometry": {...},
                "source": {"model", "path" (resolved, or null), "weights_sha256", "checked": bool, "from":
                "manifest"|"--source"|"none"}, "plans": [{"sampler", "steps", "guidance", "guidance_from"}]}]
components    [{"model": bundle name, or "eager:<source>" for PyTorch rows, "bundle": name | null,
                "source": source label, "component": "text_encoder"|"unet"|"vae_decoder",
                "runtime": "onnx"|"executorch"|"eager"|"executor_runner"|"onnxruntime_perf_test:<provider>"|
                "coreml:<compute unit>", "file": bundle file | null, "precision",
                "input_shapes": {input name: static shape} (the manifest's static shapes: a teacher's UNet row is
                  its CFG batch of 2),
                "load": {"first_ms", "median_ms", "n", "what"} (cold load: create the session / load the program /
                  from_pretrained, file in the OS page cache; first = first load in this process),
                "latency": summarize() keys + "warmup" and "source" ("perf_counter" or the tool's name),
                "memory": {"baseline_mib", "peak_mib", "delta_mib", "source", "what"} | null,
                "speedup_vs_eager": eager median / this median (same source and component) | null,
                "note": problems in one sentence each | null}]
end_to_end    [{"model", "bundle", "source", "role", "method", "runtime", "precision", "sampler", "steps",
                "guidance", "guidance_from", "cfg": bool, "unet_calls_per_step", "unet_batch", "nfe",
                "latency_kind": "measured" (one full generate: text encode + steps x denoiser + VAE decode, one
                  image, timed whole) | "estimate" (device kinds: text_encoder + steps x unet + vae_decoder
                  component medians; no sampler arithmetic, no tokenizer),
                "latency": as in components, "memory": peak of one full generate in a fresh process | null,
                "baseline": {"model", "runtime", "median_ms"} | null, "speedup_vs_baseline": baseline median /
                  this median | null,
                "quality": {"n", "prompt_accuracy", "fd", "attribute_accuracy"} | null,
                "pareto_accuracy", "pareto_fd": on the frontier of (latency, quality) over all rows | null,
                "note"}]
targets       [{"name": "e2e_int8_4step_vs_ddim50", "runtime", "student", "baseline", "student_ms",
                "baseline_ms", "speedup", "bar": 25.0, "speed_met", "accuracy_ratio", "fd_ratio",
                "quality_met" (accuracy >= 0.95x and FD <= 1.5x the baseline's on this run's prompts; null: not
                scored), "met" (speed_met and quality_met not false), "latency_kind"} ... ,
               {"name": "denoiser_step_vs_eager", "source", "fastest": {"model", "runtime", "precision"},
                "fastest_ms", "eager_ms", "speedup", "bar": 2.0, "met"} ...;
               a target with nothing to measure has "met": null and a "reason"]

Bad input (a missing bundle folder, a corrupt or missing manifest, a bundle file whose sha256 no longer matches,
a source model that changed since export, --runs < 1, an unknown --device, android without adb or a device,
apple off macOS) gives one line ``error: ...`` on stderr and exit code 2, and nothing is written.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mobilediff.errors import MobilediffError  # noqa: E402
from mobilediff.latency import check_count, summarize  # noqa: E402

COMPONENTS = ("text_encoder", "unet", "vae_decoder")
BUNDLE_RUNTIMES = ("onnx", "executorch")  # host runtimes that read a bundle
HOST_RUNTIMES = (*BUNDLE_RUNTIMES, "eager")
DEVICES = ("host", "android", "apple")
INT8_RECIPES = ("int8-static", "int8-dynamic", "int8")  # 8-bit weights and activations, per target
E2E_SPEEDUP_BAR = 25.0  # the int8 4-step student against the float 50-step DDIM teacher, same runtime
STEP_SPEEDUP_BAR = 2.0  # the fastest runtime's denoiser step against PyTorch eager
# ... at the distillation issue's quality bars (4-step student against the 50-step teacher, same prompts and seeds)
QUALITY_ACCURACY_RATIO = 0.95
QUALITY_FD_RATIO = 1.5
OUTPUT_FILES = ("run_device_latency.png", "run_device_quality.png", "run_device.md", "run_device.json")  # JSON last
SCHEMA = {"name": "mobilediff.run_device", "version": 1, "doc": "benchmarks/run_device.py module docstring"}


# ------------------------------------------------------------------------------------------------ settings
@dataclass
class AndroidOptions:
    adb: str = "adb"  # adb executable on this machine
    serial: str | None = None  # adb -s SERIAL; None: the only attached device
    et_runner: str | None = None  # path of ExecuTorch's executor_runner ON THE DEVICE
    ort_perf_test: str | None = None  # path of onnxruntime_perf_test ON THE DEVICE
    ort_lib: str | None = None  # device folder with libonnxruntime.so (LD_LIBRARY_PATH), for shared builds
    ort_provider: str = "cpu"  # onnxruntime_perf_test -e
    threads: int | None = None  # --cpu_threads / -x; None: each runner's default


@dataclass
class Settings:
    device: str  # host | android | apple
    out: Path  # result folder (may exist; only OUTPUT_FILES are replaced)
    steps: tuple[int, ...] = (1, 2, 4, 8)  # LCM students' step counts
    baseline: tuple[str, int] = ("ddim", 50)  # the teacher's sampler and steps
    baseline_guidance: float | None = None  # None: the teacher bundle's manifest default_scale
    student_guidance: float | None = None  # None: the student's own (distillation.json), else the manifest's
    runs: int = 10  # timed runs after warm-up, per component and per end-to-end row
    warmup: int = 3  # untimed component runs first
    e2e_warmup: int = 1  # untimed full generates first
    load_runs: int = 3  # loads timed per component file (the first one is the cold one)
    quality_n: int = 256  # prompts scored per end-to-end row (0: skip quality)
    memory: bool = True  # peak RSS of each component and of one generate, each in a fresh process
    runtimes: tuple[str, ...] = HOST_RUNTIMES  # host runtimes to run (those a bundle lacks are skipped)
    threads: int | None = None  # host: CPU threads of every runtime (None: each runtime's default)
    sources: tuple[str, ...] = ()  # per --bundle: a model folder or name, "manifest" or "none"
    android: AndroidOptions = field(default_factory=AndroidOptions)
    compute_units: tuple[str, ...] | None = None  # Core ML compute units (None: all four)
    command: str = ""


@dataclass(frozen=True)
class Plan:
    sampler: str
    steps: int
    guidance: float
    guidance_from: str  # "--baseline-guidance" | "--student-guidance" | "distillation.json" | "manifest"


@dataclass
class BundleInfo:
    name: str  # unique label in this run (the folder name, suffixed when two folders share one)
    path: Path
    manifest: dict
    role: str  # teacher | student
    method: str  # teacher | lcm | progressive
    precision: str  # fp32 | fp16 | the quantization recipe
    quantization: str | None
    targets: list[str]  # targets that hold all three components
    source: dict  # see the schema
    source_dir: Path | None  # resolved source pipeline folder (for eager), or None
    plans: list[Plan]

    @property
    def cfg(self) -> bool:
        return self.manifest["guidance"]["type"] == "classifier_free"

    def summary(self) -> dict:
        return {"name": self.name, "path": str(self.path), "role": self.role, "method": self.method,
                "precision": self.precision, "quantization": self.quantization, "targets": self.targets,
                "guidance_type": self.manifest["guidance"]["type"], "geometry": self.manifest["geometry"],
                "source": self.source, "plans": [vars(p) for p in self.plans]}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one ``error:`` line (MobilediffError) instead of usage + exit."""

    def error(self, message):
        raise MobilediffError(message)


def build_parser() -> _Parser:
    ap = _Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                 epilog="The schema of run_device.json is in this script's module docstring.")
    ap.add_argument("--bundle", action="append", type=Path, required=True,
                    help="Bundle folder (output of `mobilediff export`); repeat for several. Give the float teacher "
                         "and the students (float and quantized) together so ratios come from one run.")
    ap.add_argument("--device", required=True, choices=DEVICES,
                    help="host: ONNX Runtime, ExecuTorch and PyTorch eager here; android: over adb; apple: Core ML "
                         "on this Mac.")
    ap.add_argument("--out", type=Path, required=True,
                    help="Result folder (created if missing; only run_device.* files are replaced).")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8],
                    help="Step counts of LCM students (each must have a table in the bundle). Default: 1 2 4 8.")
    ap.add_argument("--baseline", default="ddim50",
                    help="The teacher's sampler and step count, e.g. ddim50 (default) or dpmpp25.")
    ap.add_argument("--baseline-guidance", type=float, default=None,
                    help="Guidance of the baseline (default: the teacher bundle's manifest default_scale).")
    ap.add_argument("--student-guidance", type=float, default=None,
                    help="Guidance of the students (default: each student's own, else its manifest default_scale).")
    ap.add_argument("--runs", type=int, default=10,
                    help="Timed runs after warm-up, per component and per end-to-end row (>= 1; >= 10 to publish).")
    ap.add_argument("--warmup", type=int, default=3, help="Untimed component runs before timing (>= 0).")
    ap.add_argument("--e2e-warmup", type=int, default=1, help="Untimed full generates before timing (>= 0).")
    ap.add_argument("--load-runs", type=int, default=3,
                    help="Loads timed per component file (>= 1); the first is reported as the cold load.")
    ap.add_argument("--quality-n", type=int, default=256,
                    help="Prompts of the fixed evaluation set scored per end-to-end row (0 skips quality; else >= 2).")
    ap.add_argument("--runtimes", nargs="+", default=list(HOST_RUNTIMES), choices=HOST_RUNTIMES,
                    help="Host runtimes to run (default: all; a bundle without a runtime's files skips it).")
    ap.add_argument("--source", action="append", default=None,
                    help="Source pipeline of each --bundle, in the same order (a folder, 'default', "
                         "'default:lcm'; 'manifest': the manifest's record, the default; 'none': no eager "
                         "reference). Give it once per --bundle or not at all.")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of every runtime: host -- torch.set_num_threads, ExecuTorch's threadpool, ONNX "
                         "Runtime's intra-op threads; android -- the runners' --cpu_threads / -x. Default: each "
                         "runtime's own (one per core). Use it on a shared machine: threads that wait on each other "
                         "under contention can make a runtime many times slower.")
    ap.add_argument("--no-memory", action="store_true",
                    help="Skip peak-memory measurements (each one starts a fresh Python process).")
    g = ap.add_argument_group("android")
    g.add_argument("--adb", default="adb", help="adb executable on this machine (default: adb on PATH).")
    g.add_argument("--serial", default=None, help="Device serial (adb -s); default: the only attached device.")
    g.add_argument("--et-runner", default=None, help="Path ON THE DEVICE of ExecuTorch's executor_runner.")
    g.add_argument("--ort-perf-test", default=None, help="Path ON THE DEVICE of onnxruntime_perf_test.")
    g.add_argument("--ort-lib", default=None, help="Device folder holding libonnxruntime.so (shared-library builds).")
    g.add_argument("--ort-provider", default="cpu", choices=("cpu", "nnapi", "xnnpack", "qnn"),
                   help="onnxruntime_perf_test execution provider (default: cpu).")
    g = ap.add_argument_group("apple")
    g.add_argument("--compute-units", nargs="+", default=None,
                   choices=("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL"),
                   help="Core ML compute units to time (default: all four).")
    return ap


def parse_baseline(text: str) -> tuple[str, int]:
    """'ddim50' -> ('ddim', 50)."""
    from mobilediff.sampling import SAMPLERS

    m = re.fullmatch(r"([a-z]+)(\d+)", str(text).strip())
    if not m or m.group(1) not in SAMPLERS or int(m.group(2)) < 1:
        raise MobilediffError(f"--baseline must be a sampler and a step count such as ddim50 "
                              f"(samplers: {', '.join(SAMPLERS)}), got {text!r}")
    return m.group(1), int(m.group(2))


def parse_settings(argv: list[str] | None) -> tuple[Settings, list[Path]]:
    """Parse and check the arguments (no file is read here); returns the settings and the bundle folders."""
    a = build_parser().parse_args(argv)
    check_count("--runs", a.runs, 1)
    check_count("--warmup", a.warmup, 0)
    check_count("--e2e-warmup", a.e2e_warmup, 0)
    check_count("--load-runs", a.load_runs, 1)
    for s in a.steps:
        check_count("--steps", s, 1)
    if a.quality_n != 0:
        check_count("--quality-n (0 to skip, else >= 2 for FD)", a.quality_n, 2)
    if a.threads is not None:
        check_count("--threads", a.threads, 1)
    for name, g in (("--baseline-guidance", a.baseline_guidance), ("--student-guidance", a.student_guidance)):
        if g is not None and not (math.isfinite(g) and g >= 0):
            raise MobilediffError(f"{name} must be a number >= 0, got {g}")
    if a.source is not None and len(a.source) != len(a.bundle):
        raise MobilediffError(f"--source must be given once per --bundle ({len(a.bundle)}), got {len(a.source)}")
    if a.out.exists() and not a.out.is_dir():
        raise MobilediffError(f"--out {a.out} exists and is not a folder")
    argv_used = sys.argv[1:] if argv is None else list(argv)
    return Settings(device=a.device, out=a.out, steps=tuple(dict.fromkeys(a.steps)), baseline=parse_baseline(a.baseline),
                    baseline_guidance=a.baseline_guidance, student_guidance=a.student_guidance, runs=a.runs,
                    warmup=a.warmup, e2e_warmup=a.e2e_warmup, load_runs=a.load_runs, quality_n=a.quality_n,
                    memory=not a.no_memory, runtimes=tuple(dict.fromkeys(a.runtimes)), threads=a.threads,
                    sources=tuple(a.source or ["manifest"] * len(a.bundle)),
                    android=AndroidOptions(adb=a.adb, serial=a.serial, et_runner=a.et_runner,
                                           ort_perf_test=a.ort_perf_test, ort_lib=a.ort_lib,
                                           ort_provider=a.ort_provider, threads=a.threads),
                    compute_units=tuple(a.compute_units) if a.compute_units else None,
                    command="python benchmarks/run_device.py " + shlex.join(argv_used)), a.bundle


# ------------------------------------------------------------------------------------------------- bundles
def _bundle_targets(manifest: dict) -> list[str]:
    per = [{f["target"] for f in manifest["components"].get(c, {}).get("files", [])} for c in COMPONENTS]
    return sorted(set.intersection(*per)) if per else []


def _resolve_source(manifest: dict, given: str) -> tuple[Path | None, dict]:
    """The source pipeline folder of a bundle (for the eager reference and the role): ``given`` (--source) or the
    manifest's ``source.model``; either way checked against the manifest's ``source.weights_sha256`` when it has one,
    so the eager reference is the very model the bundle was exported from."""
    from mobilediff.benchmarking import tree_sha256
    from mobilediff.loading import check_pipeline_dir, resolve_model

    rec = manifest.get("source") or {}
    model, sha = rec.get("model") or "", rec.get("weights_sha256")
    info = {"model": model, "path": None, "weights_sha256": sha, "checked": False, "from": "none"}
    if given == "none":
        return None, info
    if given != "manifest":
        path = resolve_model(given)
        check_pipeline_dir(path)
        info.update(path=str(Path(path).resolve()), **{"from": "--source"})
    else:
        if not model:
            return None, info
        path = resolve_model(model)
        if not Path(path).is_dir():
            raise MobilediffError(f"the bundle's source model {model!r} (manifest source.model) is not a folder here; "
                                  f"pass --source MODEL for this bundle, or --source none to skip its eager reference")
        check_pipeline_dir(path)
        info.update(path=str(Path(path).resolve()), **{"from": "manifest"})
    if sha is not None:
        if tree_sha256(Path(path)) != sha:
            raise MobilediffError(f"source model {path} no longer matches the weights the bundle was exported from "
                                  f"(manifest source.weights_sha256); re-export, or pass --source none")
        info["checked"] = True
    return Path(path), info


def inspect_bundle(path: Path, name: str, given_source: str, settings: Settings) -> BundleInfo:
    """Read and check one bundle (manifest, every file's sha256, source model, sampler tables) and plan its rows.

    Raises MobilediffError naming the first problem."""
    from mobilediff.bundle import read_manifest, sampler_entry, verify_file
    from mobilediff.train.distill import student_defaults

    manifest = read_manifest(path)
    try:
        comps = manifest["components"]
        for c in COMPONENTS:
            for entry in comps[c]["files"]:
                verify_file(path, entry)
        guidance = manifest["guidance"]
        default_scale = float(guidance["default_scale"])
        for key in ("geometry", "samplers", "tokenizer"):
            manifest[key]
    except (KeyError, TypeError) as e:
        raise MobilediffError(f"{path / 'manifest.json'} is incomplete: missing {e}") from None
    targets = _bundle_targets(manifest)
    if not targets:
        raise MobilediffError(f"bundle {path} has no target with all of {', '.join(COMPONENTS)}")
    source_dir, source = _resolve_source(manifest, given_source)
    defaults = student_defaults(source_dir) if source_dir is not None else None
    q = manifest.get("quantization")
    quantization = q.get("recipe") if isinstance(q, dict) else None
    unet_files = comps["unet"]["files"]
    precision = quantization or unet_files[0].get("precision", "fp32")
    if guidance["type"] == "embedding":
        method = "lcm"
    elif defaults:
        method = "lcm" if defaults.get("sampler") == "lcm" else "progressive"
    else:
        method = "teacher"

    def pick(flag_value, flag_name):
        if flag_value is not None:
            return float(flag_value), flag_name
        if defaults and defaults.get("guidance") is not None:
            return float(defaults["guidance"]), "distillation.json"
        return default_scale, "manifest"

    if method == "teacher":
        g, origin = (settings.baseline_guidance, "--baseline-guidance") if settings.baseline_guidance is not None \
            else (default_scale, "manifest")
        plans = [Plan(settings.baseline[0], settings.baseline[1], g, origin)]
    elif method == "lcm":
        g, origin = pick(settings.student_guidance, "--student-guidance")
        plans = [Plan("lcm", k, g, origin) for k in settings.steps]
    else:
        g, origin = pick(settings.student_guidance, "--student-guidance")
        plans = [Plan(defaults.get("sampler", "ddim"), int(defaults["steps"]), g, origin)]
    for p in plans:
        sampler_entry(manifest, p.sampler, p.steps)  # a missing table fails here, before any work
    return BundleInfo(name=name, path=Path(path), manifest=manifest, role="teacher" if method == "teacher" else "student",
                      method=method, precision=precision, quantization=quantization, targets=targets, source=source,
                      source_dir=source_dir, plans=plans)


def inspect_bundles(paths: list[Path], settings: Settings) -> list[BundleInfo]:
    names, out = {}, []
    for i, p in enumerate(paths):
        base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(p).resolve().name).lstrip("._-") or "bundle"
        names[base] = names.get(base, 0) + 1
        name = base if names[base] == 1 else f"{base}-{names[base]}"
        out.append(inspect_bundle(Path(p), name, settings.sources[i], settings))
    if settings.device == "host":
        wanted = [r for r in settings.runtimes if r in BUNDLE_RUNTIMES]
        if wanted and not any(r in b.targets for b in out for r in wanted):
            raise MobilediffError(f"no bundle has files for {' or '.join(wanted)} (they have: "
                                  f"{', '.join(sorted({t for b in out for t in b.targets}))})")
        if not wanted and not any(b.source_dir for b in out):
            raise MobilediffError("only --runtimes eager was asked for, and no bundle's source model was found")
    return out


# ------------------------------------------------------------------------------------------------- inputs
_DTYPES = {"float32": "float32", "float16": "float32", "int32": "int32"}  # fp16 graphs keep float32 I/O


def component_inputs(manifest: dict, component: str, seed: int = 0) -> list:
    """Inputs of ``component`` at the manifest's static shapes, in the ranges the sampler feeds: a real-looking
    token sequence (BOS, a few tokens, EOS, padding), timestep 500, unit-variance latents, the default guidance
    embedding. (B, ...) shapes as declared: a CFG teacher's UNet gets its batch of 2."""
    import torch

    from mobilediff.bundle import guidance_embedding

    g = torch.Generator().manual_seed(seed)
    tok = manifest["tokenizer"]
    out = []
    for spec in manifest["components"][component]["inputs"]:
        shape = list(spec["static_shape"])
        if spec["name"] == "input_ids":
            x = torch.full(shape, int(tok["pad_id"]), dtype=torch.int32)
            n = min(6, shape[1] - 2)
            x[:, 0] = int(tok["bos_id"])
            x[:, 1:1 + n] = torch.randint(400, 20000, (shape[0], n), generator=g, dtype=torch.int32)
            x[:, 1 + n] = int(tok["eos_id"])
        elif spec["name"] == "timestep":
            x = torch.full(shape, 500.0)
        elif spec["name"] == "timestep_cond":
            emb = guidance_embedding(float(manifest["guidance"]["default_scale"]), shape[1])
            x = torch.tensor([emb] * shape[0], dtype=torch.float32)
        elif _DTYPES.get(spec["dtype"]) == "int32":
            x = torch.randint(0, 1000, shape, generator=g, dtype=torch.int32)
        else:
            x = torch.randn(shape, generator=g)
        out.append(x)
    return out


def _component_file(bundle: BundleInfo, component: str, target: str) -> dict:
    return next(f for f in bundle.manifest["components"][component]["files"] if f["target"] == target)


def _file_precision(entry: dict) -> str:
    return entry.get("quantization") or entry.get("precision", "fp32")


# ---------------------------------------------------------------------- host: loaders (also used in children)
def _import_runtime(runtime: str, threads: int | None = None) -> None:
    """Import (and initialise) a runtime's libraries and set its thread count: done before load timing and before
    a memory baseline. ONNX Runtime's threads are a session option (see _onnx_session)."""
    import torch
    from transformers import CLIPTokenizer  # noqa: F401 - every pipeline tokenizes; its import is library code

    if threads is not None:
        torch.set_num_threads(threads)
    if runtime == "onnx":
        import onnxruntime  # noqa: F401
    elif runtime == "executorch":
        from executorch.runtime import Runtime

        Runtime.get()
        if threads is not None:
            # the XNNPACK threadpool of executorch's Python runtime (an API executorch marks experimental)
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
    elif runtime == "eager":
        # diffusers and transformers import their model classes lazily: import them here, not inside the measurement
        from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401
        from transformers import CLIPTextModel  # noqa: F401


def runtime_threads(runtimes, threads: int | None) -> dict:
    """The thread count each runtime actually runs with (after _import_runtime)."""
    import torch

    out = {"torch (eager)": torch.get_num_threads()}
    if "onnx" in runtimes:
        out["onnxruntime intra-op"] = threads if threads is not None else "default (one per physical core)"
    if "executorch" in runtimes:
        try:
            from executorch.extension.pybindings import portable_lib

            out["executorch threadpool"] = portable_lib._threadpool_get_thread_count()
        except (ImportError, AttributeError):
            out["executorch threadpool"] = "unknown"
    return out


def _onnx_session_threads(component, path: Path, threads: int | None):
    """Re-create an ONNX Runtime component's session with ``threads`` intra-op threads (BundleRunner's sessions
    take onnxruntime's default)."""
    if threads is not None:
        from mobilediff.targets.onnx import load_session

        component.sess = load_session(path, threads)
    return component


def _eager_component(source_dir: str, component: str):
    """The PyTorch module behind one exported component (the exporter's own wrapper), loaded from the source
    pipeline folder with from_pretrained (safetensors; fp16-stored students computed in fp32, as load_pipeline)."""
    import importlib

    import torch

    from mobilediff.components import TextEncoderWrapper, UnetWrapper, VaeDecoderWrapper
    from mobilediff.loading import check_pipeline_dir, shared_components

    src = Path(source_dir)
    index = check_pipeline_dir(src)
    folder_name = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae"}[component]
    folder = shared_components(src).get(folder_name, src / folder_name)
    library, cls_name = index[folder_name]
    cls = getattr(importlib.import_module(library), cls_name)
    model = cls.from_pretrained(str(folder), use_safetensors=True).to(torch.float32).eval()
    if component == "text_encoder":
        return TextEncoderWrapper(model).eval()
    if component == "unet":
        return UnetWrapper(model, bool(model.config.time_cond_proj_dim)).eval()
    return VaeDecoderWrapper(model).eval()


def _load_component(runtime: str, location: str, component: str, manifest_io: dict, threads: int | None = None):
    """A callable ``f(*inputs) -> outputs`` for one component. location: the bundle file (onnx, executorch) or
    the source pipeline folder (eager). The bundle classes are the ones BundleRunner uses, so component and
    end-to-end numbers measure the same code."""
    import torch

    if runtime == "eager":
        module = _eager_component(location, component)

        def call(*args):
            with torch.no_grad():
                return module(*args)
        return call
    from mobilediff.runtimes import _CLASSES

    if runtime == "onnx" and threads is not None:
        from mobilediff.targets.onnx import load_session

        obj = _CLASSES[runtime].__new__(_CLASSES[runtime])  # _OnnxComponent's attributes, its session with threads
        obj.sess = load_session(Path(location), threads)
        obj.inputs = [spec["name"] for spec in manifest_io["inputs"]]
        obj.outputs = [spec["name"] for spec in manifest_io["outputs"]]
        obj.static_batch = None
        return obj
    return _CLASSES[runtime](Path(location), {}, manifest_io)


def _component_once(runtime: str, location: str, component: str, manifest: dict, threads: int | None) -> None:
    """Load and run one component once (the body of a memory measurement)."""
    fn = _load_component(runtime, location, component, manifest["components"][component], threads)
    fn(*component_inputs(manifest, component))


def _generate_once(runtime: str, location: str, sampler: str, steps: int, guidance: float, prompt: str,
                   seed: int, threads: int | None) -> None:
    """Load a whole pipeline (bundle through a runtime, or the source pipeline) and generate one image."""
    if runtime == "eager":
        from mobilediff.loading import load_pipeline
        from mobilediff.sampling import generate

        generate(load_pipeline(location), [prompt], [seed], steps, sampler, guidance)
    else:
        bundle_runner(Path(location), runtime, threads).generate(prompt, seed, steps, sampler, guidance)


def bundle_runner(bundle: Path, runtime: str, threads: int | None):
    """mobilediff.runtimes.BundleRunner, its ONNX sessions re-created with ``threads`` when given."""
    from mobilediff.runtimes import BundleRunner

    runner = BundleRunner(bundle, runtime)  # checks every file's sha256
    if runtime == "onnx" and threads is not None:
        for name, part in runner.parts.items():
            entry = next(f for f in runner.manifest["components"][name]["files"] if f["target"] == runtime)
            _onnx_session_threads(part, Path(bundle) / entry["path"], threads)  # the file BundleRunner loaded
    return runner


def _memory(fn, *args, runtime: str, threads: int | None) -> dict:
    """Peak RSS of ``fn(*args)`` in a fresh process whose baseline already holds the runtime's libraries."""
    from mobilediff.latency import peak_rss_of_call

    m = peak_rss_of_call(fn, *args, setup=functools.partial(_import_runtime, runtime, threads))
    m = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in m.items()}
    m["what"] = "fresh process; baseline: interpreter + the runtime's libraries imported; delta: load + one run"
    return m


# ---------------------------------------------------------------------------------------------- host: rows
def _time_loads(make: Callable[[], object], n: int) -> tuple[object, dict]:
    times, obj = [], None
    for _ in range(n):
        obj = None  # drop the previous instance first: its memory would otherwise stay live during the load
        t0 = time.perf_counter_ns()
        obj = make()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return obj, {"first_ms": times[0], "median_ms": statistics.median(times), "n": n}


def _latency(samples: list[float], warmup: int, source: str = "perf_counter") -> dict:
    return {**summarize(samples), "warmup": warmup, "source": source}


def _eager_key(b: BundleInfo) -> tuple:
    return (str(b.source_dir), json.dumps(b.manifest["geometry"], sort_keys=True),
            json.dumps({c: b.manifest["components"][c]["dims"] for c in COMPONENTS}, sort_keys=True))


def _source_label(b: BundleInfo) -> str:
    if b.source_dir is None:
        return b.source.get("model") or "unknown"
    from mobilediff.loading import NAMED_MODELS

    for k, v in NAMED_MODELS.items():
        if Path(v).resolve() == b.source_dir.resolve():
            return k
    return b.source_dir.name if b.source_dir.name not in ("model", "") else \
        f"{b.source_dir.parent.name}/{b.source_dir.name}"


def host_components(bundles: list[BundleInfo], s: Settings, bar, eager_sources: set[str]) -> list[dict]:
    """Per bundle, per component, every runtime back to back (so they see the machine in the same state)."""
    import torch

    from mobilediff.bundle import verify_file

    rows, eager_done, imported = [], set(), set()
    for b in bundles:
        label = _source_label(b)
        for comp in COMPONENTS:
            io = b.manifest["components"][comp]
            inputs = component_inputs(b.manifest, comp)
            shapes = {spec["name"]: list(x.shape) for spec, x in zip(io["inputs"], inputs)}
            jobs = []
            for runtime in s.runtimes:
                if runtime == "eager":
                    key = (_eager_key(b), comp)
                    if str(b.source_dir) not in eager_sources or key in eager_done:
                        continue
                    eager_done.add(key)
                    jobs.append(("eager", str(b.source_dir), None, f"eager:{label}", None, "fp32"))
                elif runtime in b.targets:
                    entry = _component_file(b, comp, runtime)
                    path = verify_file(b.path, entry)
                    jobs.append((runtime, str(path), entry["path"], b.name, b.name, _file_precision(entry)))
            for runtime, location, file, model, bundle_name, precision in jobs:
                bar.set_postfix_str(f"{model} {comp} {runtime}")
                if runtime not in imported:  # library initialisation is not part of a model's load time
                    _import_runtime(runtime, s.threads)
                    imported.add(runtime)
                fn, load = _time_loads(lambda: _load_component(runtime, location, comp, io, s.threads), s.load_runs)
                load["what"] = ("from_pretrained of the source folder's component" if runtime == "eager" else
                                "onnxruntime.InferenceSession" if runtime == "onnx" else
                                "executorch.runtime load_program + load_method")
                samples = _time_callable_nograd(fn, inputs, s.warmup, s.runs, torch)
                memory = None
                if s.memory:
                    memory = _memory(_component_once, runtime, location, comp, b.manifest, s.threads, runtime=runtime,
                                     threads=s.threads)
                lat = _latency(samples, s.warmup)
                rows.append({"model": model, "bundle": bundle_name, "source": label, "component": comp,
                             "runtime": runtime, "file": file, "precision": precision, "input_shapes": shapes,
                             "load": load, "latency": lat, "memory": memory, "speedup_vs_eager": None,
                             "note": lat["note"]})
                del fn
                bar.update(1)
    _speedups_vs_eager(rows)
    return rows


def _time_callable_nograd(fn, inputs, warmup, runs, torch) -> list[float]:
    from mobilediff.latency import time_callable

    with torch.no_grad():
        return time_callable(lambda: fn(*inputs), warmup, runs)


def _speedups_vs_eager(rows: list[dict]) -> None:
    eager = {(r["source"], r["component"], json.dumps(r["input_shapes"], sort_keys=True)): r
             for r in rows if r["runtime"] == "eager"}
    for r in rows:
        e = eager.get((r["source"], r["component"], json.dumps(r["input_shapes"], sort_keys=True)))
        if r["runtime"] != "eager" and e and _median(r):
            r["speedup_vs_eager"] = _median(e) / _median(r)


def _median(row: dict) -> float | None:
    lat = row.get("latency") or {}
    return lat.get("median_ms") if lat.get("median_ms") is not None else lat.get("mean_ms")


def _e2e_base(b: BundleInfo, plan: Plan, runtime: str, model: str, bundle_name: str | None, precision: str) -> dict:
    cfg = b.cfg and plan.guidance > 1.0
    batch = 2 if cfg else 1
    return {"model": model, "bundle": bundle_name, "source": _source_label(b), "role": b.role, "method": b.method,
            "runtime": runtime, "precision": precision, "sampler": plan.sampler, "steps": plan.steps,
            "guidance": plan.guidance, "guidance_from": plan.guidance_from, "cfg": cfg, "unet_calls_per_step": 1,
            "unet_batch": batch, "nfe": plan.steps * batch, "latency_kind": "measured", "latency": None,
            "memory": None, "baseline": None, "speedup_vs_baseline": None, "quality": None, "pareto_accuracy": None,
            "pareto_fd": None, "note": None}


def host_end_to_end(bundles: list[BundleInfo], s: Settings, pipes: dict, bar, quality_bar, evaluator=None) -> list[dict]:
    """One full generate per row, timed whole; then the quality of the same row on the fixed prompts and seeds.
    ``pipes``: the eager source pipelines by source folder (:func:`load_eager_pipelines`)."""
    from mobilediff.latency import time_callable
    from mobilediff.quality import eval_scenes
    from mobilediff.sampling import generate

    prompt = eval_scenes(1)[0].caption
    seed = 0
    rows, eager_done = [], set()
    real = None
    if evaluator is not None:
        real = evaluator.real_features(eval_scenes(s.quality_n))
    for b in bundles:
        for rt in s.runtimes:
            _import_runtime(rt, s.threads)
        runners = {rt: bundle_runner(b.path, rt, s.threads) for rt in s.runtimes if rt in b.targets}
        for plan in b.plans:
            jobs = [(rt, runners[rt]) for rt in runners]
            ekey = (_eager_key(b), plan)
            if str(b.source_dir) in pipes and ekey not in eager_done:
                eager_done.add(ekey)
                jobs.append(("eager", pipes[str(b.source_dir)]))
            for rt, obj in jobs:
                model = f"eager:{_source_label(b)}" if rt == "eager" else b.name
                row = _e2e_base(b, plan, rt, model, None if rt == "eager" else b.name,
                                "fp32" if rt == "eager" else b.precision)
                bar.set_postfix_str(f"{model} {rt} {plan.sampler}-{plan.steps}")
                if rt == "eager":
                    call = functools.partial(generate, obj, [prompt], [seed], plan.steps, plan.sampler, plan.guidance)
                else:
                    call = functools.partial(obj.generate, prompt, seed, plan.steps, plan.sampler, plan.guidance)
                row["latency"] = _latency(time_callable(call, s.e2e_warmup, s.runs), s.e2e_warmup)
                row["note"] = row["latency"]["note"]
                if s.memory:
                    location = str(b.source_dir) if rt == "eager" else str(b.path)
                    row["memory"] = _memory(_generate_once, rt, location, plan.sampler, plan.steps, plan.guidance,
                                            prompt, seed, s.threads, runtime=rt, threads=s.threads)
                bar.update(1)
                if evaluator is not None:
                    row["quality"] = _quality(evaluator, real, rt, obj, plan, s.quality_n, quality_bar)
                rows.append(row)
    return rows


def load_eager_pipelines(bundles: list[BundleInfo], s: Settings) -> dict:
    """The source pipeline of every bundle that has one (for eager rows), loaded before any measurement so that a
    source that cannot run at its bundle's size fails first. Returns {source folder: pipeline}."""
    from mobilediff.loading import load_pipeline

    pipes = {}
    if s.device != "host" or "eager" not in s.runtimes:
        return pipes
    for b in bundles:
        if b.source_dir is None:
            continue
        pipe = pipes.get(str(b.source_dir)) or load_pipeline(b.source_dir)
        geo = b.manifest["geometry"]
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # what mobilediff.sampling.generate makes
        if (geo["height"], geo["width"]) != (size, size):
            raise MobilediffError(f"bundle {b.name} was exported at {geo['height']}x{geo['width']} but its source "
                                  f"model generates {size}x{size}; the eager reference cannot run at the bundle's "
                                  f"size (leave eager out of --runtimes, or pass --source none for this bundle)")
        pipes[str(b.source_dir)] = pipe
    return pipes


def _quality(evaluator, real, runtime, obj, plan: Plan, n: int, bar) -> dict:
    from mobilediff.quality import bundle_images, eval_scenes
    from mobilediff.sampling import generate

    bar.set_postfix_str(f"{runtime} {plan.sampler}-{plan.steps}")
    scenes = eval_scenes(n)
    if runtime == "eager":
        from mobilediff.quality import NOISE_SEED

        images = generate(obj, [sc.caption for sc in scenes], [NOISE_SEED + i for i in range(n)], plan.steps,
                          plan.sampler, plan.guidance, progress=None)
        bar.update(n)
    else:
        images = bundle_images(obj, n, plan.sampler, plan.steps, plan.guidance, progress=bar.update)
    rep = evaluator.score(images, scenes, real)
    return {"n": rep.n, "prompt_accuracy": rep.prompt_accuracy, "fd": rep.fd,
            "attribute_accuracy": rep.attribute_accuracy}


# ------------------------------------------------------------------------------------------------- android
CommandRunner = Callable[[list[str]], "subprocess.CompletedProcess"]


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
    from mobilediff.device_runners import Adb

    if not opts.et_runner and not opts.ort_perf_test:
        raise MobilediffError("--device android needs --et-runner and/or --ort-perf-test (the runner binaries' paths "
                              "on the device)")
    if which(opts.adb) is None and not Path(opts.adb).is_file():
        raise MobilediffError(f"adb not found ({opts.adb!r}): install Android platform-tools or pass --adb PATH")
    adb = Adb(serial=opts.serial, executable=opts.adb)
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


def _tool_latency(n: int | None, warmup: int, source: str, *, mean=None, median=None, p90=None, min_ms=None,
                  max_ms=None, convention: str = "") -> dict:
    """The summarize() keys from a runner's own statistics (no per-run samples): unknown ones are None; the
    spread rule and the minimum run count are the same as summarize's."""
    from mobilediff.latency import DEFAULT_MAX_SPREAD, DEFAULT_MIN_RUNS

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


def _run_device_run(run, runner: CommandRunner) -> str:
    """Run a DeviceRun (device_runners): prepare, run, collect; the text to parse as DeviceRun documents."""
    for cmd in run.prepare:
        runner(cmd)
    p = runner(run.run)
    text = (p.stdout or "") + (p.stderr or "")
    for cmd in run.collect:
        c = runner(cmd)
        if "pull" not in cmd:
            text += c.stdout or ""
    return text


def android_components(bundles: list[BundleInfo], s: Settings, runner: CommandRunner, bar) -> list[dict]:
    """Push each bundle, run each component in the device runners, parse their output, remove the bundle."""
    from mobilediff.device_runners import (Adb, device_bundle_dir, executor_runner_run, ort_perf_test_run,
                                           parse_executor_runner, parse_ort_perf_test, push_bundle_commands,
                                           remove_bundle_command)

    o = s.android
    adb = Adb(serial=o.serial, executable=o.adb)
    rows = []
    for b in bundles:
        name = b.name
        bar.set_postfix_str(f"push {name}")
        for cmd in push_bundle_commands(b.path, name, adb):
            runner(cmd)
        dest = device_bundle_dir(name)
        try:
            for comp in COMPONENTS:
                dims = b.manifest["components"][comp]["dims"]
                shapes = {spec["name"]: spec["static_shape"] for spec in b.manifest["components"][comp]["inputs"]}
                if o.et_runner and "executorch" in b.targets:
                    entry = _component_file(b, comp, "executorch")
                    bar.set_postfix_str(f"{name} {comp} executor_runner")
                    n = s.warmup + s.runs
                    run = executor_runner_run(o.et_runner, f"{dest}/{entry['path']}", num_executions=n, adb=adb,
                                              cpu_threads=o.threads)
                    parsed = parse_executor_runner(_run_device_run(run, runner))
                    if parsed["num_executions"] is not None and parsed["num_executions"] != n:
                        raise MobilediffError(f"executor_runner ran {entry['path']} {parsed['num_executions']} times, "
                                              f"asked for {n}")
                    if parsed["timing"] == "per_iteration":
                        lat = _latency(parsed["iterations_ms"][s.warmup:], s.warmup, "executor_runner")
                    elif parsed["timing"] == "total":
                        lat = _tool_latency(n, 0, "executor_runner", mean=parsed["mean_ms"],
                                            convention="This runner prints only the total over all executions: "
                                                       "the mean includes the warm-up executions.")
                    else:
                        raise MobilediffError("this executor_runner prints no timing (an old build); build a recent one")
                    rows.append({"model": name, "bundle": name, "source": _source_label(b), "component": comp,
                                 "runtime": "executor_runner", "file": entry["path"], "precision": _file_precision(entry),
                                 "input_shapes": shapes,
                                 "load": {"first_ms": parsed["load_ms"], "median_ms": parsed["load_ms"], "n": 1,
                                          "what": "executor_runner 'Model loaded in' (program + method)"},
                                 "latency": lat, "memory": None, "speedup_vs_eager": None,
                                 "note": " ".join(x for x in (lat["note"], "inputs: the runner's all-ones tensors; "
                                                              "memory: not reported by executor_runner.") if x)})
                    bar.update(1)
                if o.ort_perf_test and "onnx" in b.targets:
                    entry = _component_file(b, comp, "onnx")
                    bar.set_postfix_str(f"{name} {comp} onnxruntime_perf_test")
                    run = ort_perf_test_run(o.ort_perf_test, f"{dest}/{entry['path']}", runs=s.runs,
                                            provider=o.ort_provider, adb=adb, intra_op_threads=o.threads,
                                            free_dims={k: v for k, v in dims.items()} or None,
                                            ld_library_path=o.ort_lib)
                    parsed = parse_ort_perf_test(_run_device_run(run, runner))
                    if parsed["runs"] is not None and parsed["runs"] != s.runs:
                        raise MobilediffError(f"onnxruntime_perf_test ran {entry['path']} {parsed['runs']} times, "
                                              f"asked for {s.runs}")
                    lat = _tool_latency(parsed["runs"], 1, "onnxruntime_perf_test", mean=parsed["average_ms"],
                                        median=parsed["p50_ms"], p90=parsed["p90_ms"], min_ms=parsed["min_ms"],
                                        max_ms=parsed["max_ms"],
                                        convention="Percentiles as onnxruntime_perf_test computes them "
                                                   "(sorted[int(p*n)], no interpolation); one untimed warm-up run.")
                    mem = None
                    if parsed["peak_working_set_mib"] is not None:
                        mem = {"baseline_mib": None, "peak_mib": round(parsed["peak_working_set_mib"], 1),
                               "delta_mib": None, "source": "onnxruntime_perf_test Peak working set size",
                               "what": "peak RSS of the perf-test process (session + runs)"}
                    rows.append({"model": name, "bundle": name, "source": _source_label(b), "component": comp,
                                 "runtime": f"onnxruntime_perf_test:{o.ort_provider}", "file": entry["path"],
                                 "precision": _file_precision(entry), "input_shapes": shapes,
                                 "load": {"first_ms": (parsed["session_creation_s"] * 1000
                                                       if parsed["session_creation_s"] is not None else None),
                                          "median_ms": None, "n": 1, "what": "onnxruntime_perf_test session creation"},
                                 "latency": lat, "memory": mem, "speedup_vs_eager": None,
                                 "note": " ".join(x for x in (lat["note"], "inputs: random, generated by the tool.")
                                                  if x)})
                    bar.update(1)
        finally:
            runner(remove_bundle_command(name, adb))
    return rows


# --------------------------------------------------------------------------------------------------- apple
def check_apple(platform: str | None = None) -> None:
    platform = sys.platform if platform is None else platform
    if platform != "darwin":
        raise MobilediffError(f"--device apple needs macOS (this is {platform}): Core ML predictions run only in the "
                              f"macOS framework; coremltools converts models elsewhere but cannot run them")


def apple_components(bundles: list[BundleInfo], s: Settings, bar, coremltools_module=None,
                     platform: str | None = None) -> list[dict]:
    """Core ML predict() latency of every component per compute unit (device_runners.time_coreml_predictions)."""
    from mobilediff.bundle import verify_file
    from mobilediff.device_runners import time_coreml_predictions

    if coremltools_module is None:
        import coremltools as coremltools_module
    rows = []
    for b in bundles:
        if "coreml" not in b.targets:
            continue
        for comp in COMPONENTS:
            entry = _component_file(b, comp, "coreml")
            path = verify_file(b.path, entry)
            io = b.manifest["components"][comp]
            inputs = {spec["name"]: x.numpy() for spec, x in zip(io["inputs"], component_inputs(b.manifest, comp))}
            bar.set_postfix_str(f"{b.name} {comp} coreml")
            res = time_coreml_predictions(
                lambda unit, p=str(path): coremltools_module.models.MLModel(p, compute_units=unit), inputs,
                warmup=s.warmup, runs=s.runs, compute_units=s.compute_units, coremltools_module=coremltools_module,
                platform=platform)
            for unit, stats in res.items():
                lat = {k: v for k, v in stats.items() if k != "load_ms"}
                rows.append({"model": b.name, "bundle": b.name, "source": _source_label(b), "component": comp,
                             "runtime": f"coreml:{unit}", "file": entry["path"], "precision": _file_precision(entry),
                             "input_shapes": {k: list(v.shape) for k, v in inputs.items()},
                             "load": {"first_ms": stats["load_ms"], "median_ms": stats["load_ms"], "n": 1,
                                      "what": "coremltools.models.MLModel(path, compute_units) (compiles the package)"},
                             "latency": {**lat, "warmup": s.warmup, "source": "coremltools predict"},
                             "memory": None, "speedup_vs_eager": None, "note": lat.get("note")})
            bar.update(1)
    return rows


def estimated_end_to_end(bundles: list[BundleInfo], components: list[dict]) -> list[dict]:
    """Device end to end from component medians: text_encoder + steps x unet + vae_decoder (the UNet file's
    declared batch already holds a CFG teacher's two rows). No sampler arithmetic, tokenizer or copies."""
    rows = []
    by = {}
    for r in components:
        by.setdefault((r["bundle"], r["runtime"]), {})[r["component"]] = r
    for b in bundles:
        for (bundle_name, runtime), comps in by.items():
            if bundle_name != b.name or set(comps) != set(COMPONENTS):
                continue
            for plan in b.plans:
                row = _e2e_base(b, plan, runtime, b.name, b.name, b.precision)
                row["latency_kind"] = "estimate"
                te, unet, vae = (_median(comps[c]) for c in COMPONENTS)
                if None in (te, unet, vae):
                    row["note"] = "a component has no latency; no estimate"
                    rows.append(row)
                    continue
                total = te + plan.steps * unet + vae
                noisy = [c for c in COMPONENTS if comps[c]["latency"].get("too_noisy")]
                row["latency"] = {"n": None, "median_ms": total, "p90_ms": None, "mean_ms": None,
                                  "trimmed_mean_ms": None, "min_ms": None, "max_ms": None, "iqr_ms": None,
                                  "spread": None, "too_noisy": bool(noisy),
                                  "reportable": all(comps[c]["latency"].get("reportable") for c in COMPONENTS),
                                  "note": None, "warmup": None,
                                  "source": f"estimate: text_encoder + {plan.steps} x unet + vae_decoder medians"}
                declared = b.manifest["components"]["unet"]["dims"].get("batch")
                notes = [f"estimated from component medians (text_encoder {te:.2f} + {plan.steps} x unet {unet:.2f} + "
                         f"vae_decoder {vae:.2f} ms); quality is not measured on the device."]
                if noisy:
                    notes.append(f"too noisy components: {', '.join(noisy)}.")
                if declared and declared != row["unet_batch"]:
                    notes.append(f"the UNet was timed at its declared batch {declared}, this plan needs "
                                 f"{row['unet_batch']}.")
                row["note"] = " ".join(notes)
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- derived numbers
def attach_baselines(rows: list[dict]) -> None:
    """speedup_vs_baseline: the float teacher's baseline row on the same runtime."""
    base = {}
    for r in sorted(rows, key=lambda r: r["precision"] != "fp32"):  # an fp32 teacher first, then fp16
        if r["role"] == "teacher" and r["precision"] in ("fp32", "fp16") and r["latency"] and _median(r):
            base.setdefault(r["runtime"], r)
    for r in rows:
        b = base.get(r["runtime"])
        if b is None or not r["latency"] or not _median(r):
            continue
        r["baseline"] = {"model": b["model"], "runtime": b["runtime"], "sampler": b["sampler"], "steps": b["steps"],
                         "guidance": b["guidance"], "median_ms": _median(b), "quality": b.get("quality")}
        r["speedup_vs_baseline"] = _median(b) / _median(r)


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


def attach_pareto(rows: list[dict]) -> None:
    scored = [r for r in rows if r["quality"] and _median(r)]
    if not scored:
        return
    acc = pareto_front([(_median(r), r["quality"]["prompt_accuracy"]) for r in scored], True)
    with_fd = [r for r in scored if r["quality"]["fd"] is not None]
    fd = pareto_front([(_median(r), r["quality"]["fd"]) for r in with_fd], False)
    for r, f in zip(scored, acc):
        r["pareto_accuracy"] = f
    for r, f in zip(with_fd, fd):
        r["pareto_fd"] = f


def quality_bars(student: dict | None, baseline: dict | None) -> dict:
    """The distillation issue's quality bars for a 4-step student against the 50-step teacher, on this run's own
    prompts and seeds: prompt accuracy >= 95 % of the teacher's, FD <= 1.5x. ``quality_met`` is None when either
    side was not scored (--quality-n 0, or a device run)."""
    if not student or not baseline or student.get("fd") is None or baseline.get("fd") is None:
        return {"accuracy_ratio": None, "fd_ratio": None, "quality_met": None}
    sa, ba, sf, bf = student["prompt_accuracy"], baseline["prompt_accuracy"], student["fd"], baseline["fd"]
    return {"accuracy_ratio": sa / ba if ba else None, "fd_ratio": sf / bf if bf else None,  # None: a zero baseline
            "quality_met": sa >= QUALITY_ACCURACY_RATIO * ba and sf <= QUALITY_FD_RATIO * bf}


def check_targets(bundles: list[BundleInfo], components: list[dict], e2e: list[dict]) -> list[dict]:
    """The issue's two targets, measured; a target without the rows to measure it says why (met: null)."""
    out = []
    int8_students = {b.name for b in bundles if b.role == "student" and b.quantization in INT8_RECIPES}
    found = False
    for r in e2e:
        if r["bundle"] in int8_students and r["steps"] == 4 and r["baseline"]:
            found = True
            out.append({"name": "e2e_int8_4step_vs_ddim50", "runtime": r["runtime"], "student": r["model"],
                        "student_precision": r["precision"], "baseline": r["baseline"]["model"],
                        "baseline_plan": f"{r['baseline']['sampler']}-{r['baseline']['steps']} guidance "
                                         f"{r['baseline']['guidance']}",
                        "student_ms": _median(r), "baseline_ms": r["baseline"]["median_ms"],
                        "speedup": r["speedup_vs_baseline"], "bar": E2E_SPEEDUP_BAR,
                        "speed_met": r["speedup_vs_baseline"] >= E2E_SPEEDUP_BAR, "latency_kind": r["latency_kind"],
                        **quality_bars(r.get("quality"), r["baseline"].get("quality"))})
            t = out[-1]
            t["met"] = t["speed_met"] and t["quality_met"] is not False
    if not found:
        why = ("no int8 student bundle (quantization recipe " + "/".join(INT8_RECIPES) + ") was given"
               if not int8_students else "no int8 student row at 4 steps with a float teacher baseline on its runtime")
        out.append({"name": "e2e_int8_4step_vs_ddim50", "bar": E2E_SPEEDUP_BAR, "met": None, "reason": why})
    sources = sorted({r["source"] for r in components})
    found = False
    for src in sources:
        eager = [r for r in components if r["source"] == src and r["component"] == "unet" and r["runtime"] == "eager"]
        others = [r for r in components if r["source"] == src and r["component"] == "unet"
                  and r["runtime"] != "eager" and _median(r)]
        if not eager or not others:
            continue
        e = eager[0]
        same_shape = [r for r in others if r["input_shapes"] == e["input_shapes"]] or others
        fastest = min(same_shape, key=_median)
        found = True
        speedup = _median(e) / _median(fastest)
        out.append({"name": "denoiser_step_vs_eager", "source": src,
                    "fastest": {"model": fastest["model"], "runtime": fastest["runtime"],
                                "precision": fastest["precision"]},
                    "unet_input_shapes": fastest["input_shapes"], "fastest_ms": _median(fastest),
                    "eager_ms": _median(e), "speedup": speedup, "bar": STEP_SPEEDUP_BAR,
                    "met": speedup >= STEP_SPEEDUP_BAR})
    if not found:
        out.append({"name": "denoiser_step_vs_eager", "bar": STEP_SPEEDUP_BAR, "met": None,
                    "reason": "no UNet measured both in PyTorch eager and in a bundle runtime on this device"})
    return out


def _quality_words(t: dict) -> str:
    if t.get("quality_met") is None:
        return "quality not scored"
    acc = "n/a (baseline 0)" if t["accuracy_ratio"] is None else f"{t['accuracy_ratio']:.0%}"
    fd = "n/a (baseline 0)" if t["fd_ratio"] is None else f"{t['fd_ratio']:.2f}x"
    return f"accuracy {acc} and FD {fd} of the baseline's ({'within' if t['quality_met'] else 'OUTSIDE'} the quality bars)"


def target_lines(targets: list[dict]) -> list[str]:
    lines = []
    for t in targets:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        if t["met"] is None:
            lines.append(f"target {t['name']} (bar {t['bar']:g}x): {verdict}: {t['reason']}")
        elif t["name"] == "e2e_int8_4step_vs_ddim50":
            lines.append(f"target int8 4-step student vs float {t['baseline_plan']} on {t['runtime']}: "
                         f"{t['speedup']:.1f}x ({t['student']} {t['student_ms']:.1f} ms, {t['baseline']} "
                         f"{t['baseline_ms']:.1f} ms; bar {t['bar']:g}x; {t['latency_kind']}), "
                         f"{_quality_words(t)}: {verdict}")
        else:
            f = t["fastest"]
            lines.append(f"target denoiser step of {t['source']}: fastest {f['runtime']} ({f['model']}, {f['precision']}) "
                         f"{t['fastest_ms']:.2f} ms vs eager {t['eager_ms']:.2f} ms = {t['speedup']:.2f}x "
                         f"(bar {t['bar']:g}x): {verdict}")
    return lines


# ------------------------------------------------------------------------------------------------- outputs
def _fmt(x, digits=2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _clean(obj):
    """JSON-safe: non-finite floats become None (json.dumps would write the non-standard Infinity/NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_markdown(result: dict) -> str:
    dev = result["device"]
    m = dev["machine"]
    s = result["settings"]
    where = {"host": f"this host ({m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['platform']})",
             "android": "an Android device over adb: " + ", ".join(f"{k} {v}" for k, v in (dev["android"] or {}).items()
                                                                   if v),
             "apple": f"this Mac ({m['cpu']}, {m['platform']})"}[dev["kind"]]
    lines = ["# Device benchmark: latency, memory and quality of exported bundles", "",
             f"Measured on {where}. Generated by `{result['command']}` in {result['wall_seconds'] / 60:.1f} min "
             f"({result['created']})."]
    for sentence in dev["not_run"]:
        lines.append(f"**Not run here:** {sentence}")
    lines += ["", f"Settings: {s['runs']} timed runs after {s['warmup']} warm-up runs per component "
                  f"({s['e2e_warmup']} warm-up generate(s) end to end); quality on {s['quality_n']} prompts of the fixed "
                  f"evaluation set (seed {s['prompt_seed']}, noise seeds from {s['noise_seed']}), the same for every row"
                  + (" (skipped)" if not s["quality_n"] else "") + ". Median is the headline; spread = "
                  "(p90 - median) / median; rows over 25 % spread or under 10 runs are flagged (see mobilediff.latency).",
              "", "## Targets", "", "| target | measured | bar | met |", "|---|---|---|---|"]
    for t in result["targets"]:
        if t["met"] is None:
            lines.append(f"| {t['name']} | not measured: {t['reason']} | {t['bar']:g}x | – |")
        elif t["name"] == "e2e_int8_4step_vs_ddim50":
            lines.append(f"| int8 4-step student ({t['student']}) vs float {t['baseline_plan']} ({t['baseline']}), "
                         f"{t['runtime']} | {t['speedup']:.1f}x ({t['student_ms']:.1f} vs {t['baseline_ms']:.1f} ms, "
                         f"{t['latency_kind']}); {_quality_words(t)} | >= {t['bar']:g}x, accuracy >= "
                         f"{QUALITY_ACCURACY_RATIO:.0%} and FD <= {QUALITY_FD_RATIO:g}x of the baseline's | "
                         f"{'yes' if t['met'] else '**no**'} |")
        else:
            f = t["fastest"]
            lines.append(f"| denoiser step of {t['source']}: fastest runtime ({f['runtime']}, {f['model']}, "
                         f"{f['precision']}) vs PyTorch eager | {t['speedup']:.2f}x ({t['fastest_ms']:.2f} vs "
                         f"{t['eager_ms']:.2f} ms) | >= {t['bar']:g}x | {'yes' if t['met'] else '**no**'} |")
    lines += ["", "## Bundles", "", "| bundle | role | precision | targets | source | plans |", "|---|---|---|---|---|---|"]
    for b in result["bundles"]:
        plans = ", ".join(f"{p['sampler']}-{p['steps']} g{p['guidance']:g}" for p in b["plans"])
        src = b["source"]
        role = b["role"] if b["role"] == b["method"] else f"{b['role']} ({b['method']})"
        lines.append(f"| {b['name']} | {role} | {b['precision']} | {', '.join(b['targets'])} | "
                     f"{src['model'] or '–'}{' (sha256 checked)' if src['checked'] else ''} | {plans} |")
    lines += ["", "## Components", "",
              "Per component and runtime: cold load (first load in the process; file in the OS page cache), warm "
              "latency, peak memory of a fresh process that loads the component and runs it once (delta over the "
              "interpreter with the runtime's libraries imported).", "",
              "| model | component | runtime | precision | input shapes | load ms (first / median) | median ms | p90 ms | "
              "trimmed mean ms | spread | peak MiB (delta) | vs eager | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["components"]:
        lat, load, mem = r["latency"], r["load"], r["memory"]
        shapes = "; ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r["input_shapes"].items())
        mem_s = "–" if not mem else (f"{_fmt(mem['peak_mib'], 0)} ({_fmt(mem['delta_mib'], 0)})")
        flag = " ⚠" if lat.get("too_noisy") or not lat.get("reportable") else ""
        lines.append(f"| {r['model']} | {r['component']} | {r['runtime']} | {r['precision']} | {shapes} | "
                     f"{_fmt(load['first_ms'], 1)} / {_fmt(load['median_ms'], 1)} | {_fmt(lat['median_ms'], 3)}{flag} | "
                     f"{_fmt(lat['p90_ms'], 3)} | {_fmt(lat['trimmed_mean_ms'], 3)} | {_fmt(lat['spread'], 2)} | {mem_s} | "
                     f"{_fmt(r['speedup_vs_eager'], 2)} | {r['note'] or ''} |")
    lines += ["", "## End to end", "",
              "One image: text encoding + N denoiser steps (a CFG teacher runs both rows in one batch-2 UNet call per "
              "step) + VAE decode. Speedup is against the float teacher's baseline on the same runtime. "
              "P = on the Pareto frontier of latency and that quality metric over all rows.", "",
              "| model | runtime | precision | sampler | steps | guidance | NFE | median ms | p90 ms | spread | "
              "peak MiB | speedup vs baseline | prompt accuracy | FD | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["end_to_end"]:
        lat, q, mem = r["latency"] or {}, r["quality"], r["memory"]
        flag = " ⚠" if lat.get("too_noisy") or not lat.get("reportable") else ""
        kind = " (est.)" if r["latency_kind"] == "estimate" else ""
        acc = "–" if not q else f"{q['prompt_accuracy']:.3f}{' P' if r['pareto_accuracy'] else ''}"
        fd = "–" if not q or q["fd"] is None else f"{q['fd']:.1f}{' P' if r['pareto_fd'] else ''}"
        lines.append(f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['sampler']} | {r['steps']} | "
                     f"{r['guidance']:g} | {r['nfe']} | {_fmt(lat.get('median_ms'), 1)}{kind}{flag} | "
                     f"{_fmt(lat.get('p90_ms'), 1)} | {_fmt(lat.get('spread'), 2)} | "
                     f"{_fmt(mem['peak_mib'], 0) if mem else '–'} | {_fmt(r['speedup_vs_baseline'], 1)} | {acc} | {fd} | "
                     f"{r['note'] or ''} |")
    lines += ["", "⚠ = too noisy or too few runs to publish (the note says which). Schema of run_device.json: the "
                  "module docstring of benchmarks/run_device.py.", ""]
    return "\n".join(lines)


def plot_latency(components: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = list(dict.fromkeys(r["runtime"] for r in components))
    fig, axes = plt.subplots(1, len(COMPONENTS), figsize=(5.2 * len(COMPONENTS), 4.6), squeeze=False)
    for ax, comp in zip(axes[0], COMPONENTS):
        rows = [r for r in components if r["component"] == comp and _median(r)]
        models = list(dict.fromkeys(r["model"] for r in rows))
        width = 0.8 / max(1, len(runtimes))
        for k, rt in enumerate(runtimes):
            xs, ys, noisy = [], [], []
            for i, m in enumerate(models):
                r = next((r for r in rows if r["model"] == m and r["runtime"] == rt), None)
                if r is not None:
                    xs.append(i + (k - (len(runtimes) - 1) / 2) * width)
                    ys.append(_median(r))
                    noisy.append(bool(r["latency"].get("too_noisy")))
            bars = ax.bar(xs, ys, width, label=rt)
            for bar_, n in zip(bars, noisy):
                if n:
                    bar_.set_hatch("//")
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("median latency (ms, log)")
        ax.set_title(comp)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title + " (hatched: too noisy)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_quality(e2e: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in e2e if r["quality"] and _median(r)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
    markers = "osD^v<>Px*"
    models = list(dict.fromkeys(r["model"] for r in rows))
    for ax, key, flag, higher in ((axes[0], "prompt_accuracy", "pareto_accuracy", True),
                                  (axes[1], "fd", "pareto_fd", False)):
        pts = [r for r in rows if r["quality"][key] is not None]
        for k, rt in enumerate(runtimes):
            for j, m in enumerate(models):
                rs = [r for r in pts if r["runtime"] == rt and r["model"] == m]
                if rs:
                    ax.scatter([_median(r) for r in rs], [r["quality"][key] for r in rs], color=f"C{k}",
                               marker=markers[j % len(markers)], s=36, label=f"{m} / {rt}", zorder=3)
                    for r in rs:
                        ax.annotate(str(r["steps"]), (_median(r), r["quality"][key]), fontsize=6,
                                    xytext=(3, 3), textcoords="offset points")
        front = sorted((r for r in pts if r[flag]), key=_median)
        if front:
            ax.step([_median(r) for r in front], [r["quality"][key] for r in front], where="post", color="k", lw=1,
                    ls="--", label="Pareto frontier", zorder=2)
            ax.scatter([_median(r) for r in front], [r["quality"][key] for r in front], facecolors="none",
                       edgecolors="k", s=110, zorder=4)
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency, median (ms, log); labels: steps")
        ax.set_ylabel("prompt accuracy (higher is better)" if higher else "FD (lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_outputs(result: dict, out: Path) -> list[Path]:
    """Render every file into a temporary folder beside ``out``, then move each into place (os.replace): a failure
    while rendering leaves ``out`` untouched."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix=".run_device.", dir=out) as tmp:
        tmp = Path(tmp)
        title = f"{result['device']['kind']}: {result['device']['machine']['cpu']}"
        if result["components"]:
            plot_latency(result["components"], tmp / "run_device_latency.png", f"Component latency, {title}")
        if any(r["quality"] for r in result["end_to_end"]):
            plot_quality(result["end_to_end"], tmp / "run_device_quality.png", f"Quality against latency, {title}")
        (tmp / "run_device.md").write_text(write_markdown(result))
        (tmp / "run_device.json").write_text(json.dumps(_clean(result), indent=2) + "\n")
        for f in sorted(tmp.iterdir()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        for name in OUTPUT_FILES:
            if (tmp / name).exists():
                os.replace(tmp / name, out / name)
                written.append(out / name)
            else:  # a plot of an earlier run that this one has no data for would contradict the new JSON
                (out / name).unlink(missing_ok=True)
    return written


# ---------------------------------------------------------------------------------------------------- main
def run(settings: Settings, bundles: list[BundleInfo], runner: CommandRunner = subprocess_runner,
        device_info: dict | None = None, pipes: dict | None = None, platform: str | None = None,
        coremltools_module=None) -> dict:
    """Measure everything and return the result dict (see the schema); writes nothing."""
    from tqdm.auto import tqdm

    from mobilediff.benchmarking import library_versions, machine_info
    from mobilediff.quality import EVAL_SEED, NOISE_SEED

    t0 = time.time()
    s = settings
    components, e2e = [], []
    not_run = {"host": "Android (adb) and Apple (Core ML) devices were not run: these are host measurements only.",
               "android": "host runtimes, PyTorch eager and Apple (Core ML) were not run; end-to-end rows are "
                          "estimates from component medians and carry no quality (measure quality with --device host "
                          "on the same bundles).",
               "apple": "host runtimes, PyTorch eager and Android were not run; end-to-end rows are estimates from "
                        "component medians and carry no quality."}
    if s.device == "host":
        n_comp = sum(len(COMPONENTS) * sum(rt in b.targets for rt in s.runtimes) for b in bundles)
        pipes = pipes or {}
        eager_sources = {_eager_key(b) for b in bundles if str(b.source_dir) in pipes}
        n_comp += len(COMPONENTS) * len(eager_sources)
        with tqdm(total=n_comp, desc="components (load, latency, memory)", file=sys.stderr) as bar:
            components = host_components(bundles, s, bar, set(pipes))
        evaluator = None
        if s.quality_n:
            from mobilediff.evaluator import Evaluator

            evaluator = Evaluator.load()
        n_rows = sum(len(b.plans) * sum(rt in b.targets for rt in s.runtimes) for b in bundles)
        n_rows += len({(_eager_key(b), p) for b in bundles if str(b.source_dir) in pipes for p in b.plans})
        with tqdm(total=n_rows, desc="end to end (latency, memory)", file=sys.stderr) as bar, \
                tqdm(total=n_rows * s.quality_n, desc="quality (images)", file=sys.stderr,
                     disable=not s.quality_n) as qbar:
            e2e = host_end_to_end(bundles, s, pipes, bar, qbar, evaluator)
    elif s.device == "android":
        n = sum(len(COMPONENTS) * ((bool(s.android.et_runner) and "executorch" in b.targets)
                                   + (bool(s.android.ort_perf_test) and "onnx" in b.targets)) for b in bundles)
        with tqdm(total=n, desc="android components", file=sys.stderr) as bar:
            components = android_components(bundles, s, runner, bar)
        e2e = estimated_end_to_end(bundles, components)
    else:
        n = sum(len(COMPONENTS) for b in bundles if "coreml" in b.targets)
        with tqdm(total=n, desc="Core ML components", file=sys.stderr) as bar:
            components = apple_components(bundles, s, bar, coremltools_module, platform)
        e2e = estimated_end_to_end(bundles, components)
    attach_baselines(e2e)
    attach_pareto(e2e)
    targets = check_targets(bundles, components, e2e)
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": s.command,
        "wall_seconds": time.time() - t0,
        "device": {"kind": s.device, "machine": machine_info(),
                   "android": device_info if s.device == "android" else None,
                   "apple": {"platform": platform or sys.platform} if s.device == "apple" else None,
                   "not_run": [not_run[s.device]]},
        "versions": library_versions(),
        "settings": {"runs": s.runs, "warmup": s.warmup, "e2e_warmup": s.e2e_warmup, "load_runs": s.load_runs,
                     "steps": list(s.steps), "baseline": {"sampler": s.baseline[0], "steps": s.baseline[1]},
                     "baseline_guidance": s.baseline_guidance, "student_guidance": s.student_guidance,
                     "quality_n": s.quality_n, "prompt_seed": EVAL_SEED, "noise_seed": NOISE_SEED,
                     "memory": s.memory if s.device == "host" else None,
                     "runtimes": list(s.runtimes) if s.device == "host" else None,
                     "threads": s.threads,
                     "runtime_threads": runtime_threads(s.runtimes, s.threads) if s.device == "host" else None,
                     "android": vars(s.android) if s.device == "android" else None,
                     "apple": {"compute_units": list(s.compute_units) if s.compute_units else "all"}
                     if s.device == "apple" else None},
        "bundles": [b.summary() for b in bundles],
        "components": components,
        "end_to_end": e2e,
        "targets": targets,
    }


def main(argv: list[str] | None = None, runner: CommandRunner = subprocess_runner) -> int:
    """Entry point; ``runner`` runs adb commands (tests inject a fake). Returns the exit code."""
    try:
        settings, paths = parse_settings(argv)
        if settings.device == "apple":
            check_apple()
        bundles = inspect_bundles(paths, settings)
        device_info = check_android(settings.android, runner) if settings.device == "android" else None
        pipes = load_eager_pipelines(bundles, settings)
        if not any(b.role == "teacher" for b in bundles):
            print("warning: no teacher bundle was given: end-to-end rows have no baseline and no speedup",
                  file=sys.stderr)
        result = run(settings, bundles, runner, device_info, pipes)
        write_outputs(result, settings.out)
    except MobilediffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    for line in target_lines(result["targets"]):
        print(line)
    print(f"wrote {settings.out / 'run_device.json'} and run_device.md"
          + (", plots" if result["components"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
