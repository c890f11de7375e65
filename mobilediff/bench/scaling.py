"""The scaling study as a library: quality, FLOPs and latency of every UNet size of a model family over samplers, step
counts and guidance scales, and of its distilled students, then the verdicts on the claims of "Bigger is not Always
Better" (Mei et al. 2024; rules in :mod:`mobilediff.bench.claims`). ``benchmarks/scaling.py`` runs :func:`main`,
the command over :func:`measure`; at the end of a run it appends the rows to the store of measured configurations
(:mod:`mobilediff.configurations`) that ``mobilediff recommend`` reads.

Rows (scaling.json), one per configuration
------------------------------------------
model              the UNet size the row belongs to: a family member's name or folder (a student's row names its
                   teacher's, so rows group by size)
pipeline           what was sampled: the model itself or one of its students
unet_params        parameters of the sampled UNet
gflops_per_image   FLOPs of one image (``torch.utils.flop_counter.FlopCounterMode`` on the real modules): text encoder
                   once (the unconditional prompt's features are a constant an app computes once) + steps x UNet
                   step (a CFG row: the batch of 2) + VAE decoder
sampler, method    method: teacher | progressive | lcm
steps, guidance    nfe = UNet evaluations per image; unet_rows = 2 for a classifier-free-guidance batch, else 1; cfg
runtime, precision eager | onnx; fp32
latency_ms         one image end to end at batch 1, composed from measured components (below)
latency_parts      {"text_encoder_ms", "text_encoder_calls", "unet_step_ms", "vae_decoder_ms"}; latency_kind "composed"
prompt_accuracy, attribute_accuracy {attribute: accuracy}, fd, n   on the fixed prompts and seeds (mobilediff.quality)

Latency
-------
Each component is timed once per pipeline and runtime at batch 1 (the UNet also at 2 rows where a CFG row needs it):
``warmup`` untimed calls, then ``runs`` timed ones, the median (:func:`mobilediff.bench.stats.summarize`), with
``threads`` CPU threads. A configuration's latency is composed from them::

    latency_ms = text_encoder_ms x text_encoder_calls + steps x unet_step_ms(unet_rows) + vae_decoder_ms

``text_encoder_calls`` is 2 for a CFG row on eager (:func:`mobilediff.sampling.generate` encodes the unconditional
prompt every time) and 1 otherwise (:class:`mobilediff.engine.BundleRunner`, as the apps, encodes it once). The
sampler's arithmetic and the pipeline's own overhead are not in the sum: each pipeline's composition is checked
against one measured end-to-end generate of one of its configurations (``latency_check`` in scaling_meta.json:
measured median, composed value, relative error), so the size of what is left out is on record.

Quality comes from the PyTorch pipeline whatever ``runtime`` is timed: an ONNX graph is checked against it at export
(:func:`mobilediff.exporter.export_bundle`; max abs error ~1e-5), so the images are the same.
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mobilediff.bench.claims import BudgetRule, budget_table, models_by_size, verdicts
from mobilediff.bench.envelope import (Parser, command_line, count, finite, fmt, json_safe, pyplot, savefig,
                                       write_results)
from mobilediff.bench.stats import check_count
from mobilediff.bundle import COMPONENTS
from mobilediff.errors import MobilediffError
from mobilediff.flops import count_gflop

RUNTIMES = ("eager", "onnx")
METHODS = ("teacher", "progressive", "lcm", "slim")
DEFAULT_STUDENT_KINDS = ("progressive-1", "progressive-4", "lcm")  # family students the study takes by default
OUTPUT_NAMES = ("scaling_quality.png", "scaling_budget.png", "scaling_guidance.png", "scaling.md",
                "scaling_meta.json", "scaling.json")


def denoiser_module(pipe):
    """The pipeline's denoiser: its UNet, or a transformer pipeline's transformer."""
    return getattr(pipe, "unet", None) or pipe.transformer


def compose_latency(text_encoder_ms: float, unet_step_ms: float, vae_decoder_ms: float, steps: int,
                    text_encoder_calls: int = 1) -> float:
    """One image end to end (ms): ``text_encoder_ms x text_encoder_calls + steps x unet_step_ms + vae_decoder_ms``.
    ``unet_step_ms`` is one denoiser call at the batch the configuration runs (2 rows for a CFG batch)."""
    return text_encoder_ms * text_encoder_calls + steps * unet_step_ms + vae_decoder_ms


# ------------------------------------------------------------------------------------------------- what is studied
@dataclass(frozen=True)
class Subject:
    """One pipeline of the study: a model (a UNet size) or a distilled student of one."""

    label: str  # as the user named it: "default:unet-xs", "default:unet-xs:lcm", a folder
    path: Path
    model: str  # the model (size) its rows belong to: its own label, or its teacher's for a student
    method: str = "teacher"  # teacher | progressive | lcm | slim
    plan: tuple[str, int, float] | None = None  # a student's (sampler, steps, guidance), from its distillation.json


@dataclass(frozen=True)
class ScalingConfig:
    models: tuple[Subject, ...]
    students: tuple[Subject, ...] = ()
    samplers: tuple[str, ...] = ("ddim", "dpmpp")  # the teachers' samplers
    steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 50)  # the teachers' step counts
    guidance: tuple[float, ...] = (1.0, 2.0, 3.5, 6.0)  # the teachers' guidance sweep
    student_steps: tuple[int, ...] = (1, 4)  # step counts of students with a guidance embedding (LCM)
    n: int = 256  # prompts (images) per row
    runtime: str = "eager"  # where latency is measured: eager | onnx
    threads: int = 1  # CPU threads of the latency measurements (the quality sweep keeps the process's own)
    runs: int = 20  # timed calls per component, after warm-up
    warmup: int = 3
    e2e_runs: int = 5  # timed end-to-end generates of the composition check, after one warm-up
    work: Path | None = None  # onnx: folder for the exported bundles (None: a temporary folder, removed)
    cache: Path | None = None  # scored rows kept here (mobilediff.bench.sweep.RowCache); None: no cache
    reuse: Path | None = None  # a result folder of an earlier study whose rows are taken for unchanged models
    rule: BudgetRule = field(default_factory=BudgetRule)

    def check(self) -> None:
        """Refuse settings that cannot run, in one line, before any work."""
        from mobilediff.samplers import SAMPLERS

        if not self.models:
            raise MobilediffError("no model to study")
        if self.runtime not in RUNTIMES:
            raise MobilediffError(f"unknown runtime {self.runtime!r}; choose one of: {', '.join(RUNTIMES)}")
        for s in self.samplers:
            if s not in SAMPLERS or SAMPLERS[s].guidance_embedding:
                raise MobilediffError(f"sampler {s!r} is not a classifier-free-guided sampler of a teacher")
        check_count("--n", self.n, 2)
        check_count("--runs", self.runs, 1)
        check_count("--warmup", self.warmup, 0)
        check_count("--e2e-runs", self.e2e_runs, 1)
        check_count("--threads", self.threads, 1)
        for k in self.steps + self.student_steps:
            check_count("--steps", k, 1)
        for g in self.guidance:
            if not (isinstance(g, (int, float)) and math.isfinite(g) and g >= 0):
                raise MobilediffError(f"--guidance must be finite numbers >= 0, got {g!r}")
        if self.cache is not None:
            from mobilediff.io import check_output

            check_output(Path(self.cache) / "row.json")
        if self.reuse is not None:
            for name in ("scaling.json", "scaling_meta.json"):
                if not (Path(self.reuse) / name).is_file():
                    raise MobilediffError(f"--reuse {self.reuse}: no {name} there (a scaling study's result folder)")
        labels = [s.label for s in self.models + self.students]
        if len(set(labels)) != len(labels):
            twice = sorted({x for x in labels if labels.count(x) > 1})
            raise MobilediffError(f"a pipeline is named twice: {', '.join(twice)}")


def _unet_shape(path: Path) -> tuple:
    """(block_out_channels, layers_per_block, sample_size) of a pipeline folder's UNet config: what a student shares
    with its teacher."""
    from mobilediff.loading import shared_components

    f = shared_components(path).get("unet", Path(path) / "unet") / "config.json"
    try:
        c = json.loads(f.read_text())
        return tuple(c["block_out_channels"]), c.get("layers_per_block"), c.get("sample_size")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise MobilediffError(f"cannot read the UNet config {f}: {e}") from None


def _owner(student: Path, record: dict, models: tuple[Subject, ...], label: str) -> str:
    """The model a student belongs to: the one its distillation.json names as teacher (same folder), else the only
    model with the same UNet block widths, layers and sample size."""
    from mobilediff.loading import resolve_model

    teacher = record.get("teacher")
    if isinstance(teacher, str) and teacher:
        t = Path(resolve_model(teacher))
        for m in models:
            if t.exists() and t.resolve() == m.path.resolve():
                return m.label
    shape = _unet_shape(student)
    same = [m.label for m in models if _unet_shape(m.path) == shape]
    if len(same) == 1:
        return same[0]
    raise MobilediffError(f"--students {label}: cannot tell which --model it belongs to (its teacher "
                          f"{teacher!r} is none of them, and {len(same)} of them have its UNet's widths {shape[0]})")


def resolve_subjects(models: list[str] | None,
                     students: list[str] | None) -> tuple[tuple[Subject, ...], tuple[Subject, ...]]:
    """The study's models and students from the command line, checked before any weights are read.

    ``models`` None: every family member registered (mobilediff.loading.FAMILY). ``students`` None: the registered
    progressive-1 / progressive-4 / LCM students of those models that are family members; [] none. Raises
    MobilediffError: no family registered, a folder that is not a pipeline, a student without its distillation.json or
    that belongs to none of the models."""
    from mobilediff.card import distillation_record
    from mobilediff.loading import FAMILY, check_pipeline_dir, resolve_model
    from mobilediff.samplers import SAMPLERS

    if models is None:
        if not FAMILY:
            raise MobilediffError("no model family is registered (mobilediff/assets/family/ has no unet-<size>/ "
                                  "pipeline yet, see docs/models.md): give --model NAME_OR_DIR")
        models = [m.name for m in FAMILY]
    subjects = []
    for label in models:
        path = Path(resolve_model(label))
        check_pipeline_dir(path)
        subjects.append(Subject(label=str(label), path=path, model=str(label)))
    subjects = tuple(subjects)
    if students is None:
        students = []
        for m in FAMILY:
            owner = next((s for s in subjects if s.path.resolve() == m.path.resolve()), None)
            if owner is not None:
                students += [m.student_name(k) for k in DEFAULT_STUDENT_KINDS if k in m.students]
    out = []
    for label in students:
        path = Path(resolve_model(label))
        check_pipeline_dir(path)
        record = distillation_record(path)
        if record is None:
            raise MobilediffError(f"--students {label}: no distillation.json in {path} (a student's method and "
                                  f"sampling plan, written by mobilediff distill)")
        if record["method"] not in METHODS[1:]:
            raise MobilediffError(f"--students {label}: unknown distillation method {record['method']!r} in its "
                                  f"distillation.json (known: {', '.join(METHODS[1:])})")
        smp = record["sampling"]
        if smp["sampler"] not in SAMPLERS:
            raise MobilediffError(f"--students {label}: its distillation.json plans sampler {smp['sampler']!r}, which "
                                  f"mobilediff does not know (known: {', '.join(SAMPLERS)})")
        out.append(Subject(label=str(label), path=path, model=_owner(path, record, subjects, str(label)),
                           method=record["method"], plan=(smp["sampler"], int(smp["steps"]), float(smp["guidance"]))))
    return subjects, tuple(out)


def study_points(cfg: ScalingConfig, pipes: dict) -> list:
    """The configurations to score (mobilediff.bench.sweep.Point): every model at every sampler x steps x guidance;
    every student at its own plan (a student with a guidance embedding, LCM, at each of ``student_steps``)."""
    from mobilediff.bench.sweep import Point
    from mobilediff.samplers import SAMPLERS

    points = []
    for m in cfg.models:
        fields = {"model": m.model, "pipeline": m.label, "method": "teacher"}
        points += [Point(pipes[m.label], s, k, g, fields) for s in cfg.samplers for k in cfg.steps for g in cfg.guidance]
    for s in cfg.students:
        sampler, steps, guidance = s.plan
        fields = {"model": s.model, "pipeline": s.label, "method": s.method}
        spec = SAMPLERS.get(sampler)
        step_list = cfg.student_steps if spec is not None and spec.guidance_embedding else (steps,)
        points += [Point(pipes[s.label], sampler, k, guidance, fields) for k in step_list]
    return points


# ------------------------------------------------------------------------------------------------- cost per pipeline
@contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` inside the block, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class PipelineRuntime:
    """One pipeline's three components on one runtime, callable on example inputs at a batch, and a whole generate.

    eager: the exporter's wrapper modules around the pipeline's own modules; onnx: the pipeline exported to a bundle
    in ``work`` (every graph checked against PyTorch) and run by :class:`mobilediff.engine.BundleRunner`."""

    def __init__(self, pipe, runtime: str, threads: int, work: Path | None = None, label: str = "",
                 model_dir: Path | None = None):
        from mobilediff.components import declare, latent_geometry

        self.pipe, self.runtime = pipe, runtime
        self.specs = declare(pipe, latent_geometry(pipe))
        self.runner = None
        if runtime == "onnx":
            from mobilediff.exporter import export_bundle
            from mobilediff.engine import BundleRunner

            bundle = export_bundle(pipe, "onnx", work, source=label, model_dir=model_dir)
            self.runner = BundleRunner(bundle, "onnx", threads=threads)
            self.calls = {c: self.runner.parts[c] for c in COMPONENTS}
        else:
            self.calls = {c: self.specs[c].module for c in COMPONENTS}

    def inputs(self, component: str, batch: int):
        return self.specs[component].example_inputs(dims={"batch": batch})

    def can_generate(self, sampler: str, steps: int) -> bool:
        """Whether a whole generate can run (a bundle holds sampler tables for some step counts only)."""
        if self.runner is None:
            return True
        try:
            self.runner.manifest.sampler_table(sampler, steps)
        except MobilediffError:
            return False
        return True

    def generate_fn(self, sampler: str, steps: int, guidance: float):
        """A callable generating one image (the first prompt of the evaluation set, its noise seed)."""
        import functools

        from mobilediff.quality import NOISE_SEED, eval_scenes
        from mobilediff.sampling import generate

        prompt = eval_scenes(1)[0].caption
        if self.runner is not None:
            return functools.partial(self.runner.generate, prompt, NOISE_SEED, steps, sampler, guidance)
        return functools.partial(generate, self.pipe, [prompt], [NOISE_SEED], steps, sampler, guidance)


def measure_costs(rt: PipelineRuntime, unet_rows: set[int], runs: int, warmup: int, threads: int) -> dict:
    """FLOPs (GFLOP) and latency (:func:`mobilediff.bench.stats.summarize` + warmup) of each component of one pipeline:
    {"gflop": {"text_encoder", "unet": {rows: x}, "vae_decoder"}, "latency": same shape}."""
    import torch

    from mobilediff.bench.stats import summarize, time_callable

    gflop, latency = {"unet": {}}, {"unet": {}}
    for comp in COMPONENTS:
        for batch in sorted(unet_rows) if comp == "unet" else [1]:
            inputs = rt.inputs(comp, batch)
            g = count_gflop(rt.specs[comp].module, inputs)
            call = rt.calls[comp]
            with torch.no_grad(), torch_threads(threads):
                lat = {**summarize(time_callable(lambda: call(*inputs), warmup, runs)), "warmup": warmup}
            if comp == "unet":
                gflop["unet"][batch], latency["unet"][batch] = g, lat
            else:
                gflop[comp], latency[comp] = g, lat
    return {"gflop": gflop, "latency": latency}


def text_encoder_calls(runtime: str, unet_rows: int) -> int:
    """Text-encoder calls per image: eager (mobilediff.sampling.generate) also encodes the unconditional prompt of a
    CFG batch every time; BundleRunner (onnx), as the apps, encodes it once and keeps it."""
    return 2 if unet_rows == 2 and runtime == "eager" else 1


def row_costs(costs: dict, runtime: str, steps: int, unet_rows: int) -> tuple[float, float, dict]:
    """(gflops_per_image, latency_ms, latency_parts) of one configuration from its pipeline's component costs
    (:func:`measure_costs`)."""
    g, lat = costs["gflop"], costs["latency"]
    parts = {"text_encoder_ms": lat["text_encoder"]["median_ms"],
             "text_encoder_calls": text_encoder_calls(runtime, unet_rows), "unet_step_ms": lat["unet"][unet_rows]["median_ms"], "vae_decoder_ms": lat["vae_decoder"]["median_ms"]}
    ms = compose_latency(parts["text_encoder_ms"], parts["unet_step_ms"], parts["vae_decoder_ms"], steps,
                         parts["text_encoder_calls"])
    return g["text_encoder"] + steps * g["unet"][unet_rows] + g["vae_decoder"], ms, parts


def check_point(points: list, rt: PipelineRuntime):
    """The configuration whose end-to-end time checks a pipeline's composition: the most UNet evaluations at 8 steps
    or fewer (several steps and, where the study has one, a CFG batch, at a cost the check can afford) among those a
    whole generate can run."""
    ranked = sorted(points, key=lambda p: (p.steps <= 8, p.steps * p.unet_rows, p.steps), reverse=True)
    return next((p for p in ranked if rt.can_generate(p.sampler, p.steps)), None)


def latency_check(rt: PipelineRuntime, costs: dict, point, runs: int, threads: int) -> dict:
    """One configuration of a pipeline timed end to end (one warm-up, ``runs`` timed generates, median) against its
    composed latency: {"sampler", "steps", "guidance", "unet_rows", "measured_ms", "composed_ms", "relative_error",
    "latency": summarize() of the generates}."""
    from mobilediff.bench.stats import summarize, time_callable

    with torch_threads(threads):
        lat = summarize(time_callable(rt.generate_fn(point.sampler, point.steps, point.guidance), 1, runs))
    _, composed, _ = row_costs(costs, rt.runtime, point.steps, point.unet_rows)
    return {"sampler": point.sampler, "steps": point.steps, "guidance": point.guidance, "unet_rows": point.unet_rows,
            "measured_ms": lat["median_ms"], "composed_ms": composed,
            "relative_error": composed / lat["median_ms"] - 1 if lat["median_ms"] else None,
            "latency": {**lat, "warmup": 1}}


# ------------------------------------------------------------------------------------------------ reused rows
def point_key(p) -> tuple:
    """What names a row of the study: pipeline, sampler, steps, guidance."""
    return p.fields["pipeline"], p.sampler, int(p.steps), float(p.guidance)


def reusable_rows(folder: Path, shas: dict, n: int, points: list) -> tuple[dict, set]:
    """The quality fields of an earlier study's rows (``folder``: its scaling.json and scaling_meta.json) for this
    study's points, taken for a pipeline of the same name at the same ``n`` and prompt and noise seeds; every other
    point is scored. Returns (point_key -> row, the names whose files' sha256 differs from the recorded one: a
    record or config file edited since, or other weights -- :func:`check_reused` scores more of their rows again)."""
    import json

    from mobilediff.quality import EVAL_SEED, NOISE_SEED

    folder = Path(folder)
    try:
        meta = json.loads((folder / "scaling_meta.json").read_text())
        old_rows = json.loads((folder / "scaling.json").read_text())
        recorded = {m["label"]: m.get("weights_sha256") for m in meta["models"]}
        known = {label for label in recorded if label in shas}
        changed = {label for label in known if recorded[label] != shas[label]}
        if (meta["n"], meta["prompt_seed"], meta["noise_seed"]) != (n, EVAL_SEED, NOISE_SEED):
            return {}, set()
        wanted = {point_key(p) for p in points}
        out = {}
        for r in old_rows:
            key = (r["pipeline"], r["sampler"], int(r["steps"]), float(r["guidance"]))
            if r["pipeline"] in known and key in wanted:
                out[key] = {"sampler": r["sampler"], "steps": r["steps"], "nfe": r["nfe"], "guidance": r["guidance"],
                            "prompt_accuracy": r["prompt_accuracy"], "fd": r["fd"], "n": r["n"],
                            "attribute_accuracy": r["attribute_accuracy"]}
        return out, changed & {key[0] for key in out}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MobilediffError(f"--reuse {folder}: not a readable scaling study result ({type(e).__name__}: {e})") \
            from None


def check_reused(reused: dict, points: list, evaluator, n: int, real, changed: set = frozenset()) -> list[dict]:
    """Score again the cheapest reused row of each pipeline -- and of a pipeline in ``changed`` (its files' sha256
    is not the recorded one) its cheapest guided row too -- and compare: the same prompt accuracy and FD (to 1e-6
    relative) show the earlier rows reproduce with these weights and this code; otherwise MobilediffError (rerun
    without --reuse). Returns the checks made."""
    from mobilediff.bench.sweep import sweep

    chosen = {}
    for p in points:
        if point_key(p) in reused:
            label = p.fields["pipeline"]
            kinds = ("any", "guided") if label in changed else ("any",)
            for kind in kinds:
                if kind == "guided" and p.unet_rows < 2:
                    continue
                best = chosen.get((label, kind))
                if best is None or p.steps * p.unet_rows < best.steps * best.unet_rows:
                    chosen[(label, kind)] = p
    checks = []
    for (label, _), p in chosen.items():
        fresh = sweep([p], evaluator, n, real, f"check a reused row of {label}")[0]
        old = reused[point_key(p)]
        ok = (fresh["prompt_accuracy"] == old["prompt_accuracy"]
              and abs(fresh["fd"] - old["fd"]) <= 1e-6 * max(1.0, abs(old["fd"])))
        checks.append({"pipeline": label, "files_changed": label in changed, "sampler": p.sampler, "steps": p.steps,
                       "guidance": p.guidance,
                       "stored": {"prompt_accuracy": old["prompt_accuracy"], "fd": old["fd"]},
                       "rescored": {"prompt_accuracy": fresh["prompt_accuracy"], "fd": fresh["fd"]}, "same": ok})
        if not ok:
            raise MobilediffError(
                f"--reuse: {label}'s row {p.sampler}-{p.steps} g{p.guidance} does not reproduce (prompt accuracy "
                f"{old['prompt_accuracy']:.4f} stored, {fresh['prompt_accuracy']:.4f} now; FD {old['fd']:.4f} "
                f"stored, {fresh['fd']:.4f} now): rerun without --reuse")
    return checks


# ------------------------------------------------------------------------------------------------------ the study
def measure(cfg: ScalingConfig, command: str = "") -> dict:
    """Run the study: {"rows": scaling.json's rows, "meta": scaling_meta.json (envelope, models and their costs and
    latency checks, settings, verdicts, budget table)}. Raises MobilediffError for bad settings before any work."""
    from tqdm.auto import tqdm

    from mobilediff.bench.envelope import envelope
    from mobilediff.bench.sweep import sweep
    from mobilediff.data import ShapesDataset
    from mobilediff.evaluator import Evaluator, frechet_distance
    from mobilediff.io import tree_sha256
    from mobilediff.loading import NAMED_MODELS, load_pipeline
    from mobilediff.quality import EVAL_SEED, NOISE_SEED, eval_scenes

    cfg.check()
    t0 = time.time()
    subjects = cfg.models + cfg.students
    pipes = {s.label: load_pipeline(s.path, transformers=True) for s in subjects}  # a DiT member too
    points = study_points(cfg, pipes)
    by_pipe = {s.label: [p for p in points if p.fields["pipeline"] == s.label] for s in subjects}
    params = {s.label: sum(x.numel() for x in denoiser_module(pipes[s.label]).parameters()) for s in subjects}
    costs, checks = {}, {}
    with tempfile.TemporaryDirectory(prefix="mobilediff-scaling-") as tmp:
        work = Path(cfg.work) if cfg.work is not None else Path(tmp)
        with tqdm(total=len(subjects), desc=f"component latency ({cfg.runtime}, {cfg.threads} thread(s))",
                  file=sys.stderr) as bar:
            for i, s in enumerate(subjects):
                bar.set_postfix_str(s.label)
                rt = PipelineRuntime(pipes[s.label], cfg.runtime, cfg.threads, work / f"{i:02d}-{Path(s.path).name}",
                                     s.label, s.path)
                costs[s.label] = measure_costs(rt, {p.unet_rows for p in by_pipe[s.label]}, cfg.runs, cfg.warmup,
                                               cfg.threads)
                point = check_point(by_pipe[s.label], rt)
                checks[s.label] = (latency_check(rt, costs[s.label], point, cfg.e2e_runs, cfg.threads)
                                   if point is not None else None)
                rt = None  # an ONNX runner's sessions are closed before the next pipeline's load
                bar.update(1)
    evaluator = Evaluator.load()
    real = evaluator.real_features(eval_scenes(cfg.n))
    fd_floor = frechet_distance(real, evaluator.real_features(ShapesDataset(seed=EVAL_SEED + 1).scenes(0, cfg.n)))
    shas = {s.label: tree_sha256(s.path) for s in subjects}
    cache = None
    if cfg.cache is not None:
        import mobilediff
        from mobilediff.bench.sweep import RowCache
        from mobilediff.evaluator import EVALUATOR_DIR

        context = {"evaluator": tree_sha256(EVALUATOR_DIR), "mobilediff": mobilediff.__version__,
                   "prompt_seed": EVAL_SEED, "noise_seed": NOISE_SEED}
        cache = RowCache(cfg.cache, context, {id(pipes[s.label]): shas[s.label] for s in subjects})
    reused, reuse_check = {}, []
    if cfg.reuse is not None:
        reused, changed = reusable_rows(cfg.reuse, shas, cfg.n, points)
        reuse_check = check_reused(reused, points, evaluator, cfg.n, real, changed)
    todo = [p for p in points if point_key(p) not in reused]
    scored = iter(sweep(todo, evaluator, cfg.n, real, "scaling study (UNet calls per batch)", cache))
    quality = [reused[point_key(p)] if point_key(p) in reused else next(scored) for p in points]
    rows = []
    for p, q in zip(points, quality):
        label = p.fields["pipeline"]
        gflops, ms, parts = row_costs(costs[label], cfg.runtime, p.steps, p.unet_rows)
        rows.append({"model": p.fields["model"], "pipeline": label, "unet_params": params[label],
                     "gflops_per_image": gflops, "sampler": p.sampler, "method": p.fields["method"], "steps": p.steps,
                     "guidance": p.guidance, "runtime": cfg.runtime, "precision": "fp32", "latency_ms": ms,
                     "prompt_accuracy": q["prompt_accuracy"], "attribute_accuracy": q["attribute_accuracy"],
                     "fd": q["fd"], "nfe": q["nfe"], "unet_rows": p.unet_rows, "cfg": p.unet_rows == 2, "n": q["n"],
                     "latency_parts": parts, "latency_kind": "composed"})
    models = []
    for s in subjects:
        models.append({"label": s.label, "path": s.label if s.label in NAMED_MODELS else str(s.path),
                       "weights_sha256": shas[s.label],
                       "model": s.model, "method": s.method, "plan": list(s.plan) if s.plan else None,
                       "unet_params": params[s.label],
                       "gflop": costs[s.label]["gflop"], "latency": costs[s.label]["latency"],
                       "latency_check": checks[s.label]})
    meta = {"models": models, "n": cfg.n, "prompt_seed": EVAL_SEED, "noise_seed": NOISE_SEED,
            "fd_real_vs_real": fd_floor,
            "settings": {"samplers": list(cfg.samplers), "steps": list(cfg.steps), "guidance": list(cfg.guidance),
                         "student_steps": list(cfg.student_steps), "runtime": cfg.runtime, "threads": cfg.threads,
                         "runs": cfg.runs, "warmup": cfg.warmup, "e2e_runs": cfg.e2e_runs,
                         "rows_from_cache": cache.hits if cache is not None else 0,
                         "rows_reused": len(reused), "reused_from": str(cfg.reuse) if cfg.reuse is not None else None,
                         "reuse_check": reuse_check,
                         "rule": {"budgets": cfg.rule.budgets, "margin": cfg.rule.margin,
                                  "min_prefix": cfg.rule.min_prefix}},
            "latency_method": "composed: text_encoder_ms x text_encoder_calls + steps x unet_step_ms(unet_rows) + "
                              "vae_decoder_ms, each component's median at batch 1 (the UNet at the configuration's "
                              "rows); checked against one measured end-to-end generate per pipeline (latency_check)",
            "verdicts": verdicts(rows, cfg.rule),
            **envelope("scaling", command, t0)}
    return {"rows": rows, "meta": meta}



# ------------------------------------------------------------------------------------------------------- the report
STUDENT_MARKERS = {"progressive": "D", "lcm": "^", "slim": "s"}


def display(label: str) -> str:
    """A short name for tables and plots: a named model as is, a folder by its last part."""
    return label if ":" in label or "/" not in label else Path(label).name


def _sizes(rows: list[dict]) -> list[str]:
    return models_by_size([r for r in rows if r["method"] == "teacher"] or rows)


def write_markdown(result: dict) -> str:
    """scaling.md: verdicts and their rules, the models' costs and latency checks, who wins at which budget, the
    students, the best guidance per configuration and every row."""
    from mobilediff.bench.sweep import best_rows

    rows, meta = result["rows"], result["meta"]
    s = meta["settings"]
    m = meta["machine"]
    sizes = _sizes(rows)
    lines = ["# Scaling study: quality against latency per UNet size", "",
             f"{meta['n']} prompts of the fixed evaluation set (seed {meta['prompt_seed']}), noise seeds "
             f"{meta['noise_seed']}..{meta['noise_seed'] + meta['n'] - 1}, the same for every row; FD against "
             f"ground-truth renders of the same prompts (real-vs-real FD: {meta['fd_real_vs_real']:.3f}). Latency: "
             f"{s['runtime']}, {s['threads']} thread(s), one image at batch 1, composed from component medians "
             f"({s['runs']} runs after {s['warmup']} warm-up): {meta['latency_method']}. Machine: {m['cpu']}, "
             f"{m['cores']} cores. Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min.", "",
             "## Verdicts", "", "| claim | statement | verdict | evidence |", "|---|---|---|---|"]
    for v in meta["verdicts"]:
        lines.append(f"| ({v['claim']}) | {v['statement']} | **{v['verdict']}** | {v['evidence']} |")
    lines += ["", "Rules (mobilediff/bench/claims.py has them in full):", ""]
    lines += [f"- ({v['claim']}) {v['rule']}." for v in meta["verdicts"]]
    lines += ["", "## Models", "",
              "| pipeline | model | method | UNet params | GFLOP per UNet step (1 / 2 rows) | text encoder ms | "
              "UNet step ms (1 / 2 rows) | VAE decoder ms | end-to-end check |", "|---|---|---|---|---|---|---|---|---|"]
    for mod in meta["models"]:
        lat, g = mod["latency"], mod["gflop"]
        unet_g = " / ".join(fmt(g["unet"].get(k, g["unet"].get(str(k))), ".3f") for k in (1, 2))
        unet_ms = " / ".join(fmt((lat["unet"].get(k) or lat["unet"].get(str(k)) or {}).get("median_ms"), ".2f")
                             for k in (1, 2))
        c = mod["latency_check"]
        check = "–" if c is None else (
            f"{c['sampler']} {c['steps']} step{'s' * (c['steps'] != 1)}, guidance {c['guidance']:g}: "
            f"measured {c['measured_ms']:.1f} ms, "
            f"composed {c['composed_ms']:.1f} ms ({c['relative_error']:+.1%})"
            + (" ⚠" if c["relative_error"] is None or abs(c["relative_error"]) > 0.25 else ""))
        lines.append(f"| {display(mod['label'])} | {display(mod['model'])} | {mod['method']} | {mod['unet_params']:,} | "
                     f"{unet_g} | {fmt(lat['text_encoder']['median_ms'], '.2f')} | {unet_ms} | "
                     f"{fmt(lat['vae_decoder']['median_ms'], '.2f')} | {check} |")
    lines += ["", "⚠: the composition is more than 25 % away from the measured end-to-end time; read those latencies "
                  "with care.", ""]
    for title, subset in (("teacher rows, every sampler", [r for r in rows if r["method"] == "teacher"]),
                          ("student rows", [r for r in rows if r["method"] != "teacher"])):
        if len(models_by_size(subset)) < 2:
            continue
        names = models_by_size(subset)
        lines += [f"## Which size wins at which latency budget ({title})", "",
                  "Best prompt accuracy each size reaches within the budget (its configuration), and the winner (the "
                  "largest keeps ties within the margin).", "",
                  "| budget ms | " + " | ".join(display(x) for x in names) + " | winner |",
                  "|---|" + "---|" * (len(names) + 1)]
        for t in budget_table(subset, BudgetRule(**s["rule"])):
            cells = []
            for x in names:
                r = t["best"].get(x)
                cells.append("–" if r is None else f"{r['prompt_accuracy']:.3f} ({r['sampler']}-{r['steps']}, "
                                                   f"g{r['guidance']:g})")
            win = display(t["winner"]) + (" (smaller)" if t["smaller_wins"] else "")
            lines.append(f"| {t['budget_ms']:.1f} | " + " | ".join(cells) + f" | {win} |")
        lines.append("")
    students = [r for r in rows if r["method"] != "teacher"]
    if students:
        lines += ["## Students", "", "| model | student | method | sampler | steps | guidance | latency ms | GFLOP | "
                                     "prompt accuracy | FD |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(students, key=lambda r: (sizes.index(r["model"]) if r["model"] in sizes else 0,
                                                 r["pipeline"], r["steps"])):
            lines.append(f"| {display(r['model'])} | {display(r['pipeline'])} | {r['method']} | {r['sampler']} | "
                         f"{r['steps']} | {r['guidance']:g} | {r['latency_ms']:.1f} | {r['gflops_per_image']:.2f} | "
                         f"{r['prompt_accuracy']:.3f} | {fmt(r['fd'], '.1f')} |")
        lines.append("")
    teacher = [r for r in rows if r["method"] == "teacher"]
    attrs = sorted(teacher[0]["attribute_accuracy"]) if teacher else []
    lines += ["## Best guidance per model, sampler and step count", "",
              "| model | sampler | steps | guidance | latency ms | GFLOP | prompt accuracy | FD | "
              + " | ".join(attrs) + " |", "|---|---|---|---|---|---|---|---|" + "---|" * len(attrs)]
    best = best_rows(teacher, ("model", "sampler", "steps"))
    for key in sorted(best, key=lambda k: (sizes.index(k[0]) if k[0] in sizes else 0, k[1], k[2])):
        r = best[key]
        lines.append(f"| {display(r['model'])} | {r['sampler']} | {r['steps']} | {r['guidance']:g} | "
                     f"{r['latency_ms']:.1f} | {r['gflops_per_image']:.2f} | {r['prompt_accuracy']:.3f} | "
                     f"{fmt(r['fd'], '.1f')} | " + " | ".join(f"{r['attribute_accuracy'][a]:.3f}" for a in attrs) + " |")
    lines += ["", "## Every row", "", "| model | pipeline | method | sampler | steps | guidance | NFE | latency ms | "
                                      "GFLOP | prompt accuracy | FD |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {display(r['model'])} | {display(r['pipeline'])} | {r['method']} | {r['sampler']} | "
                     f"{r['steps']} | {r['guidance']:g} | {r['nfe']} | {r['latency_ms']:.1f} | "
                     f"{r['gflops_per_image']:.2f} | {r['prompt_accuracy']:.3f} | {fmt(r['fd'], '.1f')} |")
    return "\n".join(lines) + "\n"


def plot_quality(rows: list[dict], samplers: list[str]):
    """Prompt accuracy (top) and FD (bottom) against latency, one column per sampler: per size its best guidance
    at each step count (line; every guidance faint), students marked in every panel."""
    from mobilediff.bench.sweep import best_rows

    plt = pyplot()
    sizes = _sizes(rows)
    color = {m: f"C{i}" for i, m in enumerate(sizes)}
    fig, axes = plt.subplots(2, max(1, len(samplers)), figsize=(5.5 * max(1, len(samplers)), 8), squeeze=False)
    students = [r for r in rows if r["method"] != "teacher"]
    for j, sampler in enumerate(samplers):
        for i, (key, label) in enumerate((("prompt_accuracy", "prompt accuracy"), ("fd", "FD (lower is better)"))):
            ax = axes[i, j]
            for m in sizes:
                rs = [r for r in rows if r["method"] == "teacher" and r["model"] == m and r["sampler"] == sampler
                      and r[key] is not None]
                if not rs:
                    continue
                ax.scatter([r["latency_ms"] for r in rs], [r[key] for r in rs], color=color[m], s=8, alpha=0.25)
                best = sorted(best_rows(rs, ("steps",)).values(), key=lambda r: r["latency_ms"])
                ax.plot([r["latency_ms"] for r in best], [r[key] for r in best], marker="o", ms=4, color=color[m],
                        label=f"{display(m)} (best guidance)")
            for r in students:
                if r[key] is None:
                    continue
                ax.scatter([r["latency_ms"]], [r[key]], marker=STUDENT_MARKERS.get(r["method"], "s"), s=70,
                           color=color.get(r["model"], "k"), edgecolors="k", zorder=3)
                ax.annotate(f"{r['method']}-{r['steps']}", (r["latency_ms"], r[key]), fontsize=6, xytext=(4, 3),
                            textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel("latency per image (ms, log)")
            ax.set_ylabel(label)
            ax.set_title(f"{sampler}" if i == 0 else "")
            ax.grid(alpha=0.3)
        axes[1, j].set_yscale("log")
    for method, marker in STUDENT_MARKERS.items():
        if any(r["method"] == method for r in students):
            axes[0, 0].scatter([], [], marker=marker, color="w", edgecolors="k", s=70, label=f"{method} student")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Quality against latency per UNet size (teachers per sampler; students in every panel)")
    fig.tight_layout()
    return fig


def plot_budget(rows: list[dict], rule: BudgetRule):
    """The best prompt accuracy each size reaches within a latency budget, and which size wins each budget (dots
    along the top): teacher rows, and student rows where there are any."""
    plt = pyplot()
    sizes = _sizes(rows)
    color = {m: f"C{i}" for i, m in enumerate(sizes)}
    subsets = [("teachers (every sampler)", [r for r in rows if r["method"] == "teacher"]),
               ("students", [r for r in rows if r["method"] != "teacher"])]
    subsets = [(t, s) for t, s in subsets if len(models_by_size(s)) >= 2] or subsets[:1]
    fig, axes = plt.subplots(1, len(subsets), figsize=(6.5 * len(subsets), 4.5), squeeze=False)
    for ax, (title, subset) in zip(axes[0], subsets):
        if len(models_by_size(subset)) < 2:
            ax.set_title(f"{title}: fewer than two sizes")
            continue
        table = budget_table(subset, rule)
        budgets = [t["budget_ms"] for t in table]
        for m in models_by_size(subset):
            ys = [t["best"][m]["prompt_accuracy"] if m in t["best"] else math.nan for t in table]
            ax.step(budgets, ys, where="post", color=color.get(m, "k"), label=display(m))
        top = max(t["best"][m]["prompt_accuracy"] for t in table for m in t["best"])
        ax.scatter(budgets, [top * 1.03 + 0.01] * len(budgets), c=[color.get(t["winner"], "k") for t in table], s=25,
                   marker="s")
        ax.set_xscale("log")
        ax.set_xlabel("latency budget (ms per image, log)")
        ax.set_ylabel("best prompt accuracy within the budget")
        ax.set_title(f"{title}; squares: winner per budget", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Which UNet size is best at which latency budget")
    fig.tight_layout()
    return fig


def plot_guidance(rows: list[dict]):
    """Prompt accuracy (top) and FD (bottom) against the guidance scale, one column per size: a line per sampler
    (line style) and step count (colour)."""
    plt = pyplot()
    teacher = [r for r in rows if r["method"] == "teacher"]
    sizes = _sizes(teacher) if teacher else []
    steps = sorted({r["steps"] for r in teacher})
    samplers = sorted({r["sampler"] for r in teacher})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(2, max(1, len(sizes)), figsize=(4.8 * max(1, len(sizes)), 7.5), squeeze=False)
    for j, m in enumerate(sizes):
        for i, key in enumerate(("prompt_accuracy", "fd")):
            ax = axes[i, j]
            for si, sampler in enumerate(samplers):
                for k, st in enumerate(steps):
                    rs = sorted((r for r in teacher if r["model"] == m and r["sampler"] == sampler and r["steps"] == st
                                 and r[key] is not None), key=lambda r: r["guidance"])
                    if rs:
                        ax.plot([r["guidance"] for r in rs], [r[key] for r in rs], ls=("-", "--", ":", "-.")[si % 4],
                                marker=".", color=cmap(k / max(1, len(steps) - 1)),
                                label=f"{sampler} {st} steps" if j == 0 and i == 0 else None)
            ax.set_xlabel("guidance scale")
            ax.set_ylabel("prompt accuracy" if key == "prompt_accuracy" else "FD")
            ax.set_title(display(m) if i == 0 else "")
            ax.grid(alpha=0.3)
    if sizes:
        axes[0, 0].legend(fontsize=6, ncol=2)
    fig.suptitle("Guidance sweeps per UNet size")
    fig.tight_layout()
    return fig


def output_files(result: dict) -> dict:
    """The study's files for :func:`mobilediff.bench.envelope.write_results`: plots, Markdown, meta, and the rows last."""
    rows, meta = result["rows"], result["meta"]
    rule = BudgetRule(**meta["settings"]["rule"])
    return {"scaling_quality.png": savefig(plot_quality(rows, meta["settings"]["samplers"])),
            "scaling_budget.png": savefig(plot_budget(rows, rule)),
            "scaling_guidance.png": savefig(plot_guidance(rows)),
            "scaling.md": write_markdown(result),
            "scaling_meta.json": json_safe(meta),
            "scaling.json": json_safe(rows)}


# ---------------------------------------------------------------------------------------------- the command line
def default_cache() -> Path:
    """$XDG_CACHE_HOME/mobilediff/scaling-rows (~/.cache when unset)."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobilediff" / "scaling-rows"


def build_parser(doc: str = "", results: Path | None = None) -> Parser:
    """The flags of ``benchmarks/scaling.py`` (``doc``: its docstring; ``results``: the default ``--out``)."""
    from mobilediff.samplers import SAMPLERS, samplers_for

    ap = Parser(doc)
    ap.add_argument("--model", action="append", default=None, metavar="NAME_OR_DIR",
                    help="a model (UNet size) to study, repeatable: default:unet-<size> or a pipeline folder "
                         "(default: every default:unet-* family member registered)")
    ap.add_argument("--students", nargs="*", default=None, metavar="NAME_OR_DIR",
                    help="distilled students (folders with a distillation.json), each put with the --model it was "
                         "distilled from; progressive-N samples at N steps with its own plan, LCM at --student-steps "
                         "(default: the registered progressive-1, progressive-4 and lcm students of each family "
                         "model; the flag alone: none)")
    ap.add_argument("--samplers", nargs="+", default=["ddim", "dpmpp"], choices=[n for n in samplers_for(False) if not SAMPLERS[n].guidance_embedding],
                    help="the teachers' samplers (default: ddim dpmpp)")
    ap.add_argument("--steps", type=count(1), nargs="+", default=[1, 2, 4, 8, 16, 32, 50],
                    help="the teachers' step counts (default: 1 2 4 8 16 32 50)")
    ap.add_argument("--guidance", type=finite(0), nargs="+", default=[1.0, 2.0, 3.5, 6.0],
                    help="the teachers' guidance sweep (default: 1 2 3.5 6; <= 1: no CFG batch)")
    ap.add_argument("--student-steps", type=count(1), nargs="+", default=[1, 4],
                    help="step counts of LCM students (default: 1 4)")
    ap.add_argument("--n", type=count(2), default=256, help="prompts (and images) per row (default 256)")
    ap.add_argument("--runtime", choices=("eager", "onnx"), default="eager",
                    help="where latency is measured: PyTorch eager (default) or ONNX Runtime (each pipeline exported "
                         "and checked against PyTorch first)")
    ap.add_argument("--threads", type=count(1), default=1, help="CPU threads of the latency measurements (default 1)")
    ap.add_argument("--runs", type=count(1), default=20, help="timed calls per component after warm-up (default 20)")
    ap.add_argument("--warmup", type=count(0), default=3, help="untimed calls per component first (default 3)")
    ap.add_argument("--e2e-runs", type=count(1), default=5,
                    help="timed end-to-end generates per pipeline that check the composed latency (default 5)")
    ap.add_argument("--work", type=Path, default=None,
                    help="--runtime onnx: folder for the exported bundles (default: a temporary folder, removed)")
    ap.add_argument("--cache", type=Path, default=default_cache(), metavar="DIR",
                    help="scored rows are kept here as they are scored, so an interrupted run resumes and a run with "
                         "one more model scores only its rows; a row is reused only for the same weights, settings, "
                         "evaluator and mobilediff version (default: %(default)s)")
    ap.add_argument("--no-cache", action="store_true", help="score every row again and keep nothing")
    ap.add_argument("--reuse", type=Path, default=None, metavar="RESULTS",
                    help="take the rows of an earlier study's result folder (its scaling.json and scaling_meta.json) "
                         "for every pipeline of the same name, at the same --n, after scoring one row of each again "
                         "(two where its files changed since) to check they reproduce; latencies are measured anew")
    ap.add_out(results, "result folder (default benchmarks/results)")
    return ap


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    """The command line of ``benchmarks/scaling.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, the study measured and
    written to ``--out``, its verdicts printed. ``doc``: the script's docstring (its ``--help``); ``results``: the
    default ``--out`` (None: ``--out`` is required)."""
    from mobilediff.configurations import STORE_NAME, append_result

    args = build_parser(doc, results).parse_args(argv)
    t0 = time.time()
    models, students = resolve_subjects(args.model, args.students)
    cfg = ScalingConfig(models=models, students=students, samplers=tuple(dict.fromkeys(args.samplers)),
                        steps=tuple(dict.fromkeys(args.steps)), guidance=tuple(dict.fromkeys(args.guidance)),
                        student_steps=tuple(dict.fromkeys(args.student_steps)), n=args.n, runtime=args.runtime,
                        threads=args.threads, runs=args.runs, warmup=args.warmup, e2e_runs=args.e2e_runs,
                        work=args.work, cache=None if args.no_cache else args.cache, reuse=args.reuse)
    cfg.check()
    result = measure(cfg, command_line("scaling", argv))
    result["meta"]["wall_seconds"] = time.time() - t0
    write_results(args.out, output_files(result))
    for v in result["meta"]["verdicts"]:
        print(f"({v['claim']}) {v['verdict']}: {v['evidence']}")
    print(f"wrote {args.out / 'scaling.json'}, scaling_meta.json, scaling.md and plots")
    added, replaced = append_result("scaling", result, args.out)
    print(f"configurations: {added} rows added, {replaced} replaced in {args.out / STORE_NAME}")
