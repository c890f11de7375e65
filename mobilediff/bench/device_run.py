"""The device benchmark as a library: its settings, the measurement on the host, an Android phone or a Mac, the
numbers derived from the rows (baselines, estimates, Pareto frontiers) and its targets checked against the bars.

``benchmarks/run_device.py`` runs :func:`main`, the command over :func:`execute`; its module docstring holds the
result schema.
"""
from __future__ import annotations

import math
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mobilediff.bench import bars
from mobilediff.bench.android import AndroidOptions, CommandRunner, subprocess_runner
from mobilediff.bench.bundles import COMPONENTS, INT8_RECIPES, BundleInfo, PlanChoice, fused_entry
from mobilediff.bench.device_quality import PromptMetricsOptions
from mobilediff.bench.envelope import Parser, count, finite
from mobilediff.bench.host import BUNDLE_RUNTIMES, HOST_RUNTIMES, end_to_end_row
from mobilediff.bench.peak import attach_compute, gemm_peak
from mobilediff.bench.stats import check_count, pareto_front, row_median
from mobilediff.errors import MobilediffError

DEVICES = ("host", "android", "apple")
OUTPUT_FILES = ("run_device_latency.png", "run_device_quality.png", "run_device.md", "run_device.json")  # JSON last
SCHEMA = {"name": "mobilediff.run_device", "version": 1, "doc": "benchmarks/run_device.py module docstring"}
NOT_RUN = {"host": "Android (adb) and Apple (Core ML) devices were not run: these are host measurements only.",
           "android": "host runtimes, PyTorch eager and Apple (Core ML) were not run; end-to-end rows are estimates "
                      "from component medians and carry no quality (measure quality with --device host on the same "
                      "bundles).",
           "apple": "host runtimes, PyTorch eager and Android were not run; end-to-end rows are estimates from "
                    "component medians and carry no quality."}


@dataclass
class Settings:
    bundles: tuple[Path, ...]  # bundle folders, all measured in one run
    device: str  # host | android | apple
    out: Path  # result folder (may exist; only OUTPUT_FILES are replaced)
    plans: PlanChoice = field(default_factory=PlanChoice)
    runs: int = 10  # timed runs after warm-up, per component and per end-to-end row
    warmup: int = 3  # untimed component runs first
    e2e_warmup: int = 1  # untimed full generates first
    load_runs: int = 3  # loads timed per component file (the first one is the cold one)
    quality_n: int = 256  # prompts scored per end-to-end row (0: skip quality)
    memory: bool = True  # peak RSS of each component and of one generate, each in a fresh process
    runtimes: tuple[str, ...] = HOST_RUNTIMES  # host runtimes to run (those a bundle lacks are skipped)
    threads: int | None = None  # host: CPU threads of every runtime (None: each runtime's default)
    sources: tuple[str, ...] | None = None  # per bundle, the eager reference: a model, "manifest" or "none"
    android: AndroidOptions = field(default_factory=AndroidOptions)
    compute_units: tuple[str, ...] | None = None  # Core ML compute units (None: all four)
    prompt_metrics: PromptMetricsOptions | None = None  # host: the metric set on --prompts (None: shapes evaluator)
    command: str = ""

    def check(self) -> None:
        """Refuse bad settings in one line before any file is read."""
        if self.device not in DEVICES:
            raise MobilediffError(f"unknown device {self.device!r}; choose one of: {', '.join(DEVICES)}")
        check_count("--runs", self.runs, 1)
        check_count("--warmup", self.warmup, 0)
        check_count("--e2e-warmup", self.e2e_warmup, 0)
        check_count("--load-runs", self.load_runs, 1)
        for s in self.plans.steps:
            check_count("--steps", s, 1)
        if self.quality_n != 0:
            check_count("--quality-n (0 to skip, else >= 2 for FD)", self.quality_n, 2)
        if self.threads is not None:
            check_count("--threads", self.threads, 1)
        for name, g in (("--baseline-guidance", self.plans.baseline_guidance),
                        ("--student-guidance", self.plans.student_guidance)):
            if g is not None and not (math.isfinite(g) and g >= 0):
                raise MobilediffError(f"{name} must be a number >= 0, got {g}")
        unknown = [r for r in self.runtimes if r not in HOST_RUNTIMES]
        if unknown:
            raise MobilediffError(f"unknown runtime {unknown[0]!r}; choose from: {', '.join(HOST_RUNTIMES)}")
        if self.sources is not None and len(self.sources) != len(self.bundles):
            raise MobilediffError(f"--source must be given once per --bundle ({len(self.bundles)}), "
                                  f"got {len(self.sources)}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise MobilediffError(f"--out {self.out} exists and is not a folder")
        if self.prompt_metrics is not None:
            if self.device != "host":
                raise MobilediffError(f"--prompts scores the images of host runs; --device {self.device} measures no "
                                      f"quality (run --device host on the same bundles)")
            if self.quality_n == 0:
                raise MobilediffError("--prompts scores quality, which --quality-n 0 skips: give --quality-n >= 2")
            self.prompt_metrics.check()


def parse_baseline(text: str) -> tuple[str, int]:
    """'ddim50' -> ('ddim', 50)."""
    from mobilediff.sampling import SAMPLERS

    m = re.fullmatch(r"([a-z]+)(\d+)", str(text).strip())
    if not m or m.group(1) not in SAMPLERS or int(m.group(2)) < 1:
        raise MobilediffError(f"--baseline must be a sampler and a step count such as ddim50 "
                              f"(samplers: {', '.join(SAMPLERS)}), got {text!r}")
    return m.group(1), int(m.group(2))


def prepare(s: Settings) -> list[BundleInfo]:
    """Check the settings and every bundle (and, for eager rows, each bundle's reference pipeline)."""
    from mobilediff.bench.bundles import inspect_bundles
    from mobilediff.bench.host import resolve_eager_reference

    s.check()
    bundles = inspect_bundles(list(s.bundles), s.plans)
    if s.device != "host":
        return bundles
    if "eager" in s.runtimes:
        for b, given in zip(bundles, s.sources or ["manifest"] * len(bundles)):
            resolve_eager_reference(b, given)
    wanted = [r for r in s.runtimes if r in BUNDLE_RUNTIMES]
    if wanted and not any(r in b.targets for b in bundles for r in wanted):
        raise MobilediffError(f"no bundle has files for {' or '.join(wanted)} (they have: "
                              f"{', '.join(sorted({t for b in bundles for t in b.targets}))})")
    if not wanted and not any(b.eager_dir for b in bundles):
        raise MobilediffError("only --runtimes eager was asked for, and no bundle's source model was found")
    return bundles


def load_quality_inputs(s: Settings, bundles: list[BundleInfo]):
    """With ``--prompts``: its prompts read and the metric set's networks and reference images loaded
    (:mod:`mobilediff.bench.device_quality`), all before any timing; None without it (the shapes evaluator)."""
    from mobilediff.bench.device_quality import image_size, load_prompt_quality, read_prompt_file

    if s.prompt_metrics is None:
        return None
    prompts = read_prompt_file(s.prompt_metrics, s.quality_n)
    return load_prompt_quality(s.prompt_metrics, prompts, image_size(bundles))


# ------------------------------------------------------------------------------------------------ measuring
def measure(s: Settings, bundles: list[BundleInfo], runner: CommandRunner = subprocess_runner,
            device_info: dict | None = None, pipes: dict | None = None, platform: str | None = None,
            coremltools_module=None, prompt_quality=None) -> dict:
    """Measure everything and return the result (see the schema); writes nothing. ``prompt_quality``: the loaded
    metric set of ``--prompts`` (:func:`load_quality_inputs`; None: the shapes evaluator scores the rows)."""
    from tqdm.auto import tqdm

    from mobilediff.bench.envelope import library_versions, machine_info
    from mobilediff.bench.host import host_components, host_end_to_end, host_fused, runtime_threads
    from mobilediff.quality import EVAL_SEED, NOISE_SEED

    t0 = time.time()
    components, e2e = [], []
    if s.device == "host":
        pipes = pipes or {}
        n_comp = sum(len(COMPONENTS) * sum(rt in b.targets for rt in s.runtimes) for b in bundles)
        n_comp += len(COMPONENTS) * len({_eager(b) for b in bundles if str(b.eager_dir) in pipes})
        with tqdm(total=n_comp, desc="components (load, latency, memory)", file=sys.stderr) as bar:
            components = host_components(bundles, s.runtimes, s.runs, s.warmup, s.load_runs, s.threads, s.memory, bar)
        evaluator = None
        if s.quality_n and prompt_quality is None:
            from mobilediff.evaluator import Evaluator

            evaluator = Evaluator.load()
        n_rows = sum(len(b.plans) * sum(rt in b.targets for rt in s.runtimes) for b in bundles)
        n_rows += len({(_eager(b), p) for b in bundles if str(b.eager_dir) in pipes for p in b.plans})
        quality_n = len(prompt_quality.prompts) if prompt_quality is not None else s.quality_n
        with tqdm(total=n_rows, desc="end to end (latency, memory)", file=sys.stderr) as bar, \
                tqdm(total=n_rows * quality_n, desc="quality (images)", file=sys.stderr,
                     disable=not quality_n) as qbar:
            e2e = host_end_to_end(bundles, s.runtimes, s.runs, s.e2e_warmup, s.threads, s.memory, s.quality_n, pipes,
                                  bar, qbar, evaluator, prompt_quality)
        n_fused = sum(1 for b in bundles if fused_entry(b.manifest) for f in fused_entry(b.manifest).files
                      if f.target in s.runtimes)
        if n_fused:
            with tqdm(total=n_fused, desc="fused programs", file=sys.stderr) as bar:
                e2e += host_fused(bundles, s.runtimes, s.runs, s.e2e_warmup, s.threads, e2e, bar)
    elif s.device == "android":
        from mobilediff.bench.android import android_components

        o = s.android
        n = sum(len(COMPONENTS) * ((bool(o.et_runner) and "executorch" in b.targets)
                                   + (bool(o.ort_perf_test) and "onnx" in b.targets)) for b in bundles)
        with tqdm(total=n, desc="android components", file=sys.stderr) as bar:
            components = android_components(bundles, o, s.runs, s.warmup, runner, bar)
        e2e = estimated_end_to_end(bundles, components)
    else:
        from mobilediff.bench.apple import apple_components

        n = sum(len(COMPONENTS) for b in bundles if "coreml" in b.targets)
        with tqdm(total=n, desc="Core ML components", file=sys.stderr) as bar:
            components = apple_components(bundles, s.runs, s.warmup, s.compute_units, bar, coremltools_module, platform)
        e2e = estimated_end_to_end(bundles, components)
    by_name = {b.name: b for b in bundles}
    for r in components:  # FLOPs of one call, from the manifest (host rows carry it already)
        if "gflop" not in r and r.get("bundle") in by_name:
            r["gflop"] = by_name[r["bundle"]].manifest.component(r["component"]).gflop
    peak = gemm_peak(s.threads) if s.device == "host" else None
    attach_compute(components, peak)
    attach_image_gflop(e2e, bundles)
    attach_baselines(e2e)
    check_fidelity_references(e2e)
    attach_pareto(e2e)
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "command": s.command,
        "wall_seconds": time.time() - t0,
        "device": {"kind": s.device, "machine": machine_info(),
                   "android": device_info if s.device == "android" else None,
                   "apple": {"platform": platform or sys.platform} if s.device == "apple" else None,
                   "not_run": [NOT_RUN[s.device]]},
        "versions": library_versions(),
        "gemm_peak": peak,
        "settings": {"runs": s.runs, "warmup": s.warmup, "e2e_warmup": s.e2e_warmup, "load_runs": s.load_runs,
                     "steps": list(s.plans.steps),
                     "baseline": {"sampler": s.plans.baseline[0], "steps": s.plans.baseline[1]},
                     "baseline_guidance": s.plans.baseline_guidance, "student_guidance": s.plans.student_guidance,
                     "quality_n": s.quality_n, "prompt_seed": EVAL_SEED if prompt_quality is None else None,
                     "noise_seed": NOISE_SEED,
                     "prompts": None if prompt_quality is None else prompt_quality.record["prompts"],
                     "metric_set": None if prompt_quality is None else prompt_quality.record,
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
        "targets": check_targets(bundles, components, e2e),
    }


def _eager(b: BundleInfo) -> tuple:
    from mobilediff.bench.host import eager_key

    return eager_key(b)


def execute(s: Settings, runner: CommandRunner = subprocess_runner) -> dict:
    """Check everything, measure, and write the result files into ``s.out`` (only once everything was measured).
    Returns the result. Raises MobilediffError on bad input, before any work and without writing anything."""
    from mobilediff.bench.android import check_android
    from mobilediff.bench.apple import check_apple
    from mobilediff.bench.device_report import output_files
    from mobilediff.bench.envelope import write_results
    from mobilediff.bench.host import load_eager_pipelines

    if s.device == "apple":
        check_apple()
    bundles = prepare(s)
    prompt_quality = load_quality_inputs(s, bundles)
    device_info = check_android(s.android, runner) if s.device == "android" else None
    pipes = load_eager_pipelines(bundles) if s.device == "host" and "eager" in s.runtimes else {}
    if not any(b.role == "teacher" for b in bundles):
        print("warning: no teacher bundle was given: end-to-end rows have no baseline and no speedup"
              + (" and no teacher fidelity" if prompt_quality is not None else ""), file=sys.stderr)
    result = measure(s, bundles, runner, device_info, pipes, prompt_quality=prompt_quality)
    write_results(s.out, output_files(result))
    return result


# ------------------------------------------------------------------------------------------ derived numbers
def estimated_end_to_end(bundles: list[BundleInfo], components: list[dict]) -> list[dict]:
    """Device end to end from component medians: text_encoder + steps x unet + vae_decoder (the UNet file's
    declared batch already holds a CFG teacher's two rows). No sampler arithmetic, tokenizer or copies."""
    rows, by = [], {}
    for r in components:
        by.setdefault((r["bundle"], r["runtime"]), {})[r["component"]] = r
    for b in bundles:
        for (bundle_name, runtime), comps in by.items():
            if bundle_name != b.name or set(comps) != set(COMPONENTS):
                continue
            for plan in b.plans:
                row = end_to_end_row(b, plan, runtime, b.name, b.name, b.precision)
                row["latency_kind"] = "estimate"
                te, unet, vae = (row_median(comps[c]) for c in COMPONENTS)
                if None in (te, unet, vae):
                    row["note"] = "a component has no latency; no estimate"
                    rows.append(row)
                    continue
                noisy = [c for c in COMPONENTS if comps[c]["latency"].get("too_noisy")]
                row["latency"] = {"n": None, "median_ms": te + plan.steps * unet + vae, "p90_ms": None,
                                  "mean_ms": None, "trimmed_mean_ms": None, "min_ms": None, "max_ms": None,
                                  "iqr_ms": None, "spread": None, "too_noisy": bool(noisy),
                                  "reportable": all(comps[c]["latency"].get("reportable") for c in COMPONENTS),
                                  "note": None, "warmup": None,
                                  "source": f"estimate: text_encoder + {plan.steps} x unet + vae_decoder medians"}
                declared = b.manifest.component("unet").dims.get("batch")
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


def image_gflop(b: BundleInfo, steps: int, unet_batch: int) -> float | None:
    """FLOPs of one image from the manifest's per-call counts: text encoder + steps x UNet (scaled from its
    declared batch to the plan's rows) + decoder; None for a bundle written before the counts."""
    m = b.manifest
    te, unet, vae = (m.component(c).gflop for c in COMPONENTS)
    if None in (te, unet, vae):
        return None
    declared = m.component("unet").dims.get("batch") or 1
    return te + steps * unet * unet_batch / declared + vae


def attach_image_gflop(rows: list[dict], bundles: list[BundleInfo]) -> None:
    """``gflop`` of every end-to-end row (an eager row: that of a bundle of the same source; None if unknown)."""
    by_name = {b.name: b for b in bundles}
    for r in rows:
        b = by_name.get(r["bundle"]) or next((x for x in bundles if f"eager:{x.source_label}" == r["model"]
                                              and not x.source.get("decoder")), None)
        if r.get("fused"):
            r["gflop"] = b.manifest.fused.get("gflop")
            continue
        r["gflop"] = image_gflop(b, r["steps"], r["unet_batch"]) if b is not None else None


def attach_baselines(rows: list[dict]) -> None:
    """speedup_vs_baseline: the float teacher's baseline row on the same runtime."""
    base = {}
    for r in sorted(rows, key=lambda r: r["precision"] != "fp32"):  # an fp32 teacher first, then fp16
        if r["role"] == "teacher" and r["precision"] in ("fp32", "fp16") and r["latency"] and row_median(r):
            base.setdefault(r["runtime"], r)
    for r in rows:
        b = base.get(r["runtime"])
        if b is None or not r["latency"] or not row_median(r):
            continue
        r["baseline"] = {"model": b["model"], "runtime": b["runtime"], "sampler": b["sampler"], "steps": b["steps"],
                         "guidance": b["guidance"], "median_ms": row_median(b), "quality": b.get("quality"),
                         "gflop": b.get("gflop")}
        r["speedup_vs_baseline"] = row_median(b) / row_median(r)


def check_fidelity_references(rows: list[dict]) -> None:
    """A row's teacher fidelity (``--prompts``) was measured against the images of the row that is its baseline:
    the two choices are made apart (the teacher images before the rows, the baseline after), so they are checked
    to agree."""
    for r in rows:
        q = r["quality"] or {}
        if "fidelity_vs" in q and q["fidelity_vs"] != (r["baseline"] or {}).get("model"):
            raise RuntimeError(f"{r['model']} {r['runtime']}: fidelity measured against {q['fidelity_vs']}, but its "
                               f"baseline is {(r['baseline'] or {}).get('model')}")


def attach_pareto(rows: list[dict]) -> None:
    """pareto_accuracy / pareto_fd of every scored row: on the frontier of (latency, that metric) over all rows that
    have it (no accuracy with --prompts: pareto_accuracy stays None)."""
    scored = [r for r in rows if r["quality"] and row_median(r)]
    if not scored:
        return
    with_acc = [r for r in scored if r["quality"]["prompt_accuracy"] is not None]
    acc = pareto_front([(row_median(r), r["quality"]["prompt_accuracy"]) for r in with_acc], True)
    with_fd = [r for r in scored if r["quality"]["fd"] is not None]
    fd = pareto_front([(row_median(r), r["quality"]["fd"]) for r in with_fd], False)
    for r, f in zip(with_acc, acc):
        r["pareto_accuracy"] = f
    for r, f in zip(with_fd, fd):
        r["pareto_fd"] = f


def quality_bars(student: dict | None, baseline: dict | None) -> dict:
    """The 4-step student's quality bars against the 50-step teacher, on this run's own prompts and seeds
    (``student_4step_accuracy_ratio``, ``student_4step_fd_ratio``; with --prompts :func:`metric_set_bars`).
    ``quality_met`` is None when either side was not scored (--quality-n 0, or a device run)."""
    if student and student.get("metrics"):
        return metric_set_bars(student, baseline)
    if not student or not baseline or student.get("fd") is None or baseline.get("fd") is None:
        return {"accuracy_ratio": None, "fd_ratio": None, "quality_met": None}
    sa, ba, sf, bf = student["prompt_accuracy"], baseline["prompt_accuracy"], student["fd"], baseline["fd"]
    met = bars.check_ratio("student_4step_accuracy_ratio", sa, ba) and bars.check_ratio("student_4step_fd_ratio", sf, bf)
    return {"accuracy_ratio": sa / ba if ba else None, "fd_ratio": sf / bf if bf else None, "quality_met": met}


def metric_set_bars(student: dict, baseline: dict | None) -> dict:
    """The bars of a row scored with the metric set (--prompts): FD ratio (``student_4step_fd_ratio``) and CLIP score
    ratio (``student_4step_clip_ratio``) to the baseline's, each where both sides have it; no accuracy bar (no
    accuracy is measured). ``quality_met``: every bar measured is met; None when neither was measured (fidelity alone
    has no bar here)."""
    out, verdicts = {"accuracy_ratio": None}, []
    for key, ratio, bar_id in (("fd", "fd_ratio", "student_4step_fd_ratio"),
                               ("clip_score", "clip_ratio", "student_4step_clip_ratio")):
        s, b = student.get(key), (baseline or {}).get(key)
        out[ratio] = s / b if s is not None and b else None
        if s is not None and b is not None:
            verdicts.append(bars.check_ratio(bar_id, s, b))
    out["quality_met"] = all(verdicts) if verdicts else None
    return out


def flop_ratio(r: dict) -> float | None:
    """Baseline GFLOP / this row's: the speedup at equal efficiency (None where either was not counted)."""
    base = (r.get("baseline") or {}).get("gflop")
    return base / r["gflop"] if r.get("gflop") and base else None


# the fastest-student targets: name -> (bar, step counts, words)
FASTEST_TARGETS = {"e2e_4step_vs_ddim50": ("e2e_4step_speedup", (4,), "4-step"),
                   "e2e_fewstep_vs_ddim50": ("e2e_fewstep_speedup", (1, 2), "1- or 2-step")}


def fastest_student_targets(e2e: list[dict]) -> list[dict]:
    """Per runtime, for each of :data:`FASTEST_TARGETS` (``e2e_4step_vs_ddim50``: 4 steps, bar 50x;
    ``e2e_fewstep_vs_ddim50``: 1 or 2 steps, bar 150x): the fastest student row at those step counts (any precision,
    decoder or UNet size) whose quality meets the bars (or was not scored: a device run) against the float teacher's
    baseline; when none does, the fastest one with its quality shortfall."""
    out = []
    for name, (bar_id, steps, words) in FASTEST_TARGETS.items():
        speed = bars.bar(bar_id)
        rows = [r for r in e2e if r["role"] == "student" and r["steps"] in steps and r["baseline"] and r["bundle"]]
        found = False
        for runtime in sorted({r["runtime"] for r in rows}):
            cands = [(r, quality_bars(r.get("quality"), r["baseline"].get("quality"))) for r in rows
                     if r["runtime"] == runtime]
            ok = [(r, q) for r, q in cands if q["quality_met"] is not False]
            r, q = max(ok or cands, key=lambda rq: rq[0]["speedup_vs_baseline"])
            t = {"name": name, "bar_id": speed.id, "runtime": runtime, "student": r["model"], "steps": r["steps"],
                 "steps_words": words, "student_precision": r["precision"], "baseline": r["baseline"]["model"],
                 "baseline_plan": f"{r['baseline']['sampler']}-{r['baseline']['steps']} guidance "
                                  f"{r['baseline']['guidance']}",
                 "student_ms": row_median(r), "baseline_ms": r["baseline"]["median_ms"],
                 "speedup": r["speedup_vs_baseline"], "bar": speed.value,
                 "speed_met": bars.check(speed.id, r["speedup_vs_baseline"]), "latency_kind": r["latency_kind"],
                 "flop_ratio": flop_ratio(r),
                 "candidates": len(cands), "within_quality": len(ok), **q}
            t["met"] = t["speed_met"] and t["quality_met"] is not False
            out.append(t)
            found = True
        if not found:
            counts = " or ".join(str(n) for n in steps)
            out.append({"name": name, "bar_id": speed.id, "bar": speed.value, "met": None,
                        "reason": f"no student row at {counts} step{'s' * (steps != (1,))} with a float teacher "
                                  f"baseline on its runtime"})
    return out


def check_targets(bundles: list[BundleInfo], components: list[dict], e2e: list[dict]) -> list[dict]:
    """The device targets, measured: the int8 4-step student's end-to-end speedup (and quality) and each source's
    denoiser step speedup; a target without the rows to measure it says why (met: null)."""
    out = []
    speed = bars.bar("e2e_int8_4step_speedup")
    int8_students = {b.name for b in bundles if b.role == "student" and b.quantization in INT8_RECIPES}
    for r in e2e:
        if r["bundle"] in int8_students and r["steps"] == 4 and r["baseline"]:
            t = {"name": "e2e_int8_4step_vs_ddim50", "bar_id": speed.id, "runtime": r["runtime"],
                 "student": r["model"], "student_precision": r["precision"], "baseline": r["baseline"]["model"],
                 "baseline_plan": f"{r['baseline']['sampler']}-{r['baseline']['steps']} guidance "
                                  f"{r['baseline']['guidance']}",
                 "student_ms": row_median(r), "baseline_ms": r["baseline"]["median_ms"],
                 "speedup": r["speedup_vs_baseline"], "bar": speed.value,
                 "flop_ratio": flop_ratio(r),
                 "speed_met": bars.check(speed.id, r["speedup_vs_baseline"]), "latency_kind": r["latency_kind"],
                 **quality_bars(r.get("quality"), r["baseline"].get("quality"))}
            t["met"] = t["speed_met"] and t["quality_met"] is not False
            out.append(t)
    if not any(t["name"] == "e2e_int8_4step_vs_ddim50" for t in out):
        why = ("no int8 student bundle (quantization recipe " + "/".join(INT8_RECIPES) + ") was given"
               if not int8_students else "no int8 student row at 4 steps with a float teacher baseline on its runtime")
        out.append({"name": "e2e_int8_4step_vs_ddim50", "bar_id": speed.id, "bar": speed.value, "met": None,
                    "reason": why})
    out += fastest_student_targets(e2e)
    step = bars.bar("denoiser_step_speedup")
    found = False
    for src in sorted({r["source"] for r in components}):
        unets = [r for r in components if r["source"] == src and r["component"] == "unet"]
        eager = [r for r in unets if r["runtime"] == "eager"]
        others = [r for r in unets if r["runtime"] != "eager" and row_median(r)]
        if not eager or not others:
            continue
        e = eager[0]
        fastest = min([r for r in others if r["input_shapes"] == e["input_shapes"]] or others, key=row_median)
        found = True
        speedup = row_median(e) / row_median(fastest)
        out.append({"name": "denoiser_step_vs_eager", "bar_id": step.id, "source": src,
                    "fastest": {"model": fastest["model"], "runtime": fastest["runtime"],
                                "precision": fastest["precision"]},
                    "unet_input_shapes": fastest["input_shapes"], "fastest_ms": row_median(fastest),
                    "eager_ms": row_median(e), "speedup": speedup, "bar": step.value,
                    "met": bars.check(step.id, speedup)})
    if not found:
        out.append({"name": "denoiser_step_vs_eager", "bar_id": step.id, "bar": step.value, "met": None,
                    "reason": "no UNet measured both in PyTorch eager and in a bundle runtime on this device"})
    return out


# ---------------------------------------------------------------------------------------------- the command line
def build_parser(doc: str = "", results: Path | None = None) -> Parser:
    """The flags of ``benchmarks/run_device.py`` (``doc``: its docstring; ``results``: the default ``--out``, None:
    required)."""
    ap = Parser(doc, epilog="The schema of run_device.json is in this script's module docstring.")
    ap.add_argument("--bundle", action="append", type=Path, required=True,
                    help="Bundle folder (output of `mobilediff export`); repeat for several. Give the float teacher "
                         "and the students (float and quantized) together so ratios come from one run.")
    ap.add_argument("--device", required=True, choices=DEVICES,
                    help="host: ONNX Runtime, ExecuTorch and PyTorch eager here; android: over adb; apple: Core ML "
                         "on this Mac.")
    ap.add_out(results, "Result folder (created if missing; only run_device.* files are replaced).")
    ap.add_argument("--steps", type=count(1), nargs="+", default=[1, 2, 4, 8],
                    help="Step counts of LCM students (each must have a table in the bundle). Default: 1 2 4 8.")
    ap.add_argument("--baseline", default="ddim50",
                    help="The teacher's sampler and step count, e.g. ddim50 (default) or dpmpp25.")
    ap.add_argument("--baseline-guidance", type=finite(0), default=None,
                    help="Guidance of the baseline (default: the teacher bundle's default plan).")
    ap.add_argument("--student-guidance", type=finite(0), default=None,
                    help="Guidance of the students (default: each student bundle's default plan).")
    ap.add_argument("--runs", type=count(1), default=10,
                    help="Timed runs after warm-up, per component and per end-to-end row (>= 1; >= 10 to publish).")
    ap.add_argument("--warmup", type=count(0), default=3, help="Untimed component runs before timing (>= 0).")
    ap.add_argument("--e2e-warmup", type=count(0), default=1, help="Untimed full generates before timing (>= 0).")
    ap.add_argument("--load-runs", type=count(1), default=3,
                    help="Loads timed per component file (>= 1); the first is reported as the cold load.")
    ap.add_argument("--quality-n", type=count(0), default=256,
                    help="Prompts scored per end-to-end row: of the fixed evaluation set, or the first N of --prompts "
                         "(0 skips quality; else >= 2).")
    ap.add_argument("--runtimes", nargs="+", default=list(HOST_RUNTIMES), choices=HOST_RUNTIMES,
                    help="Host runtimes to run (default: all; a bundle without a runtime's files skips it).")
    ap.add_argument("--source", action="append", default=None,
                    help="Eager reference of each --bundle, in the same order (a folder, 'default', 'default:lcm'; "
                         "'manifest': the manifest's source record, the default; 'none': no eager rows). Give it "
                         "once per --bundle or not at all.")
    ap.add_argument("--threads", type=count(1), default=None,
                    help="CPU threads of every runtime: host -- torch.set_num_threads, ExecuTorch's threadpool, ONNX "
                         "Runtime's intra-op threads; android -- the runners' --cpu_threads / -x. Default: each "
                         "runtime's own (one per core). Use it on a shared machine: threads that wait on each other "
                         "under contention can make a runtime many times slower.")
    ap.add_argument("--no-memory", action="store_true",
                    help="Skip peak-memory measurements (each one starts a fresh Python process).")
    g = ap.add_argument_group("quality of any model (host; instead of the shapes evaluator)")
    g.add_argument("--prompts", type=Path, metavar="FILE", default=None,
                   help="Prompt file (.txt one a line, .jsonl or .csv with 'text'): every end-to-end row generates its "
                        "first --quality-n prompts (image i from the noise seed of the shapes set's image i) and is "
                        "scored with PSNR/SSIM against the float teacher's baseline images on the same runtime, and "
                        "FD / CLIP score when asked for.")
    g.add_argument("--fd-features", type=Path, metavar="F", default=None,
                   help="With --prompts: FD in the features of this extractor (a TorchScript file, or a CLIP, DINOv2 "
                        "or `mobilediff train-features` folder); needs --reference-images.")
    g.add_argument("--reference-images", type=Path, metavar="DIR", default=None,
                   help="With --fd-features: the folder of real images the FD compares against (decoded at the "
                        "bundles' image size).")
    g.add_argument("--fd-image-size", type=count(8), default=None, metavar="N",
                   help="Input side of a TorchScript --fd-features (default 299, Inception's).")
    g.add_argument("--clip", type=Path, metavar="DIR", default=None, help="With --prompts: a local CLIP folder for the CLIP score.")
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


def parse_settings(argv: list[str] | None, doc: str = "", results: Path | None = None) -> Settings:
    """The typed settings of a command line (checked by Settings.check when the run starts)."""
    a = build_parser(doc, results).parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else [str(x) for x in argv]
    plans = PlanChoice(baseline=parse_baseline(a.baseline), steps=tuple(dict.fromkeys(a.steps)),
                       baseline_guidance=a.baseline_guidance, student_guidance=a.student_guidance)
    android = AndroidOptions(adb=a.adb, serial=a.serial, et_runner=a.et_runner, ort_perf_test=a.ort_perf_test,
                             ort_lib=a.ort_lib, ort_provider=a.ort_provider, threads=a.threads)
    metric_flags = {"--fd-features": a.fd_features, "--reference-images": a.reference_images,
                    "--fd-image-size": a.fd_image_size, "--clip": a.clip}
    given = [name for name, value in metric_flags.items() if value is not None]
    if a.prompts is None and given:
        raise MobilediffError(f"{given[0]} scores the images of --prompts: pass --prompts FILE too (without it the "
                              f"shapes evaluator scores the rows)")
    prompt_metrics = (PromptMetricsOptions(prompts=a.prompts, fd_features=a.fd_features,
                                           reference_images=a.reference_images, fd_image_size=a.fd_image_size,
                                           clip=a.clip) if a.prompts is not None else None)
    return Settings(bundles=tuple(a.bundle), device=a.device, out=a.out, plans=plans, runs=a.runs, warmup=a.warmup,
                    e2e_warmup=a.e2e_warmup, load_runs=a.load_runs, quality_n=a.quality_n, memory=not a.no_memory,
                    runtimes=tuple(dict.fromkeys(a.runtimes)), threads=a.threads,
                    sources=tuple(a.source) if a.source is not None else None, android=android,
                    compute_units=tuple(a.compute_units) if a.compute_units else None,
                    prompt_metrics=prompt_metrics, command="python benchmarks/run_device.py " + shlex.join(argv_used))


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None,
         runner: CommandRunner = subprocess_runner) -> None:
    """The command line of ``benchmarks/run_device.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, every bundle
    measured on ``--device`` through ``runner``, written to ``--out``, the targets printed. ``doc``: the script's
    docstring (its ``--help``); ``results``: the default ``--out`` (None: ``--out`` is required)."""
    from mobilediff.bench.device_report import target_lines
    from mobilediff.configurations import STORE_NAME, append_result

    settings = parse_settings(argv, doc, results)
    result = execute(settings, runner)
    for line in target_lines(result["targets"]):
        print(line)
    print(f"wrote {settings.out / 'run_device.json'} and run_device.md" + (", plots" if result["components"] else ""))
    added, replaced = append_result("run_device", result, settings.out)
    print(f"configurations: {added} rows added, {replaced} replaced in {settings.out / STORE_NAME}")
