"""The store of measured configurations: one JSON line per configuration a benchmark measured (model, sampler, steps,
guidance, runtime, precision, decoder, machine) with its latency and quality and where each comes from, in one
versioned schema (docs/configurations.md describes every field). ``mobilediff recommend`` answers from it;
``benchmarks/configurations.py`` rebuilds it from the committed result files; ``benchmarks/scaling.py`` and
``benchmarks/run_device.py`` append their rows at the end of a run (:func:`append_result`).

Importers, one per result file (pure functions over its parsed JSON):

- :func:`from_scaling` — ``scaling.json`` (+ ``scaling_meta.json``): every family configuration, latency composed
  from the study's component medians, quality measured on the PyTorch pipeline;
- :func:`from_run_device` — ``run_device.json``: every ``end_to_end`` row, latency measured end to end (or estimated
  from component medians on a phone), quality measured on the bundle itself (PyTorch rows: on the model);
- :func:`from_quantization` — ``quantization.json``: every recipe a ``--quantize`` flag produces, end to end on the
  host, quality measured on the bundle;
- :func:`from_distillation`, :func:`from_baseline_quality` — quality sweeps of the PyTorch models: rows without a
  latency.

:func:`compose_from_device` adds what a run_device file's component medians say about the rows that have quality but
were not measured on its runtimes (``recommend --device FILE``). Nothing heavy is imported here: ``recommend`` reads the
store in a fraction of a second.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

from mobilediff.errors import MobilediffError

SCHEMA_VERSION = 1
STORE_NAME = "configurations.jsonl"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_STORE = REPO / "benchmarks" / "results" / STORE_NAME
LATENCY_KINDS = ("measured", "composed")
# where a row's quality comes from: the bundle itself; the same bundle's step-by-step program (a fused program's row);
# the PyTorch model at the row's precision (the row itself on eager); the float PyTorch model (a quantized bundle)
QUALITY_KINDS = ("bundle", "bundle-unfused", "pytorch", "borrowed")
DECODERS = ("full", "tiny")
# the guidance a teacher's bundle gets without --guidance (mobilediff.card.DEFAULT_GUIDANCE; a test keeps them equal)
TEACHER_DEFAULT_GUIDANCE = 5.0
# a run_device runtime -> the export target whose files it runs
RUNTIME_TARGETS = {"onnx": "onnx", "executorch": "executorch", "executor_runner": "executorch",
                   "onnxruntime_perf_test": "onnx", "coreml": "coreml"}


@dataclass(frozen=True)
class Configuration:
    """One measured configuration: a row of the store (docs/configurations.md). ``None``: not known or not measured."""

    model: str  # what samples: a registry name ("default", "default:slim-4", "default:unet-s:lcm") or a folder label
    method: str  # teacher | progressive | lcm | slim | ... ("unknown" where the source file does not say)
    sampler: str  # ddim | dpmpp | euler | lcm
    steps: int  # denoiser steps per image
    guidance: float  # guidance scale (LCM: the guidance embedding's)
    unet_rows: int  # UNet batch per step: 2 for a classifier-free-guidance batch, else 1
    runtime: str  # eager | onnx | executorch | executor_runner | onnxruntime_perf_test:<provider> | coreml:<unit>
    precision: str  # fp32 | fp16 | the quantization recipe (int8, int8-static, int8-decoder, ...)
    decoder: str  # full (the model's VAE decoder) | tiny (a distilled AutoencoderTiny swapped in)
    machine: str  # where latency was measured, in words ("AMD EPYC, 2 cores, 23.5 GiB, CPU only")
    machine_id: str  # <kind>-<8 hex digits>: the same machine gets the same id in every file
    source: dict  # {"file": the result file (repository-relative), "command": the command that wrote it}
    bundle: str | None = None  # the bundle measured (its label in the result file); None: the PyTorch model
    base_model: str | None = None  # the model it was distilled from, followed to the root (itself for a teacher)
    unet_params: int | None = None  # parameters of the UNet that samples
    model_sha256: str | None = None  # hash of the source model's weights the measurement used
    decoder_model: str | None = None  # the swapped-in decoder ("default:tiny" or a folder); None: the model's own
    fused: bool = False  # the fused program (text encoder + N steps + decoder in one graph)
    threads: int | None = None  # CPU threads the runtime ran with
    latency_ms: float | None = None  # one image end to end (median)
    latency_kind: str | None = None  # measured (one generate timed whole) | composed (from component medians)
    latency_parts: dict | None = None  # composed: {"text_encoder_ms", "text_encoder_calls", "unet_step_ms", ...}
    prompt_accuracy: float | None = None  # shapes-domain evaluator: every attribute of the prompt right (0..1)
    fd: float | None = None  # Frechet distance in ``fd_features``' space (comparable within one source file only)
    n: int | None = None  # prompts (images) the quality was measured on
    quality_kind: str | None = None  # one of QUALITY_KINDS
    quality_source: str | None = None  # the result file the quality comes from, when it is not source's file
    prompts: str | None = None  # the prompt set: "shapes evaluation set (seed S)" or a prompts file
    fd_features: str | None = None  # the FD feature extractor
    gflops_per_image: float | None = None  # FLOPs of one image end to end
    created: str | None = None  # when the source file was written (UTC, ISO 8601)
    export: str | None = None  # the `mobilediff export ...` command that makes the bundle; None: no bundle
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        row = asdict(self)
        return json.dumps({"schema_version": row.pop("schema_version"), **row}, allow_nan=False)


FIELDS = tuple(f.name for f in fields(Configuration))
SUMMARY_FIELDS = ("model", "sampler", "steps", "guidance", "runtime", "precision", "decoder")


def config_key(c: Configuration) -> tuple:
    """What one configuration is (without its numbers): appending a row with the key of a row already in the store
    replaces that row."""
    return (c.source.get("file"), c.model, c.bundle, c.sampler, c.steps, c.guidance, c.unet_rows, c.runtime,
            c.precision, c.decoder, c.decoder_model, c.fused, c.threads, c.machine_id)


def plan_key(c: Configuration) -> tuple:
    """The configuration regardless of where it was measured (for preferring a measured row over a composed one)."""
    return (c.model, c.sampler, c.steps, c.guidance, c.unet_rows, c.runtime, c.precision, c.decoder, c.decoder_model,
            c.fused)


# ------------------------------------------------------------------------------------------------------ checking
def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _str(x) -> bool:
    return isinstance(x, str) and bool(x)


def check_row(row, where: str) -> Configuration:
    """A store row (a parsed JSON object) checked field by field and made a :class:`Configuration`. Raises
    MobilediffError starting with ``where`` and naming the field: a missing field, a wrong type, a number out of
    range, an unknown kind, a row written by a newer schema."""
    if not isinstance(row, dict):
        raise MobilediffError(f"{where}: not a JSON object")
    missing = [f for f in FIELDS if f not in row]
    if missing:
        raise MobilediffError(f"{where}: missing field(s) {', '.join(missing)}")
    version = row["schema_version"]
    if not _int(version) or version < 1:
        raise MobilediffError(f"{where}: 'schema_version' must be an integer >= 1")
    if version > SCHEMA_VERSION:
        raise MobilediffError(f"{where}: schema_version {version} is newer than this mobilediff reads "
                              f"({SCHEMA_VERSION}); update mobilediff")

    def bad(name: str, what: str):
        raise MobilediffError(f"{where}: {name!r} {what}")

    for name in ("model", "method", "sampler", "runtime", "precision", "machine", "machine_id"):
        if not _str(row[name]):
            bad(name, "must be a non-empty string")
    for name in ("bundle", "base_model", "model_sha256", "decoder_model", "prompts", "fd_features", "created",
                 "export", "quality_source"):
        if row[name] is not None and not _str(row[name]):
            bad(name, "must be a non-empty string or null")
    if not _int(row["steps"]) or row["steps"] < 1:
        bad("steps", "must be an integer >= 1")
    if not _finite(row["guidance"]) or row["guidance"] < 0:
        bad("guidance", "must be a finite number >= 0")
    if row["unet_rows"] not in (1, 2) or isinstance(row["unet_rows"], bool):
        bad("unet_rows", "must be 1 or 2")
    if row["decoder"] not in DECODERS:
        bad("decoder", f"must be one of {', '.join(DECODERS)}")
    if not isinstance(row["fused"], bool):
        bad("fused", "must be true or false")
    for name in ("threads", "unet_params", "n"):
        if row[name] is not None and (not _int(row[name]) or row[name] < 1):
            bad(name, "must be an integer >= 1 or null")
    for name in ("latency_ms", "gflops_per_image"):
        if row[name] is not None and (not _finite(row[name]) or row[name] <= 0):
            bad(name, "must be a finite number > 0 or null")
    if row["fd"] is not None and (not _finite(row["fd"])):
        bad("fd", "must be a finite number or null")
    acc = row["prompt_accuracy"]
    if acc is not None and not (_finite(acc) and 0 <= acc <= 1):
        bad("prompt_accuracy", "must be a number in [0, 1] or null")
    if (row["latency_ms"] is None) != (row["latency_kind"] is None):
        bad("latency_kind", "must be given exactly when latency_ms is")
    if row["latency_kind"] is not None and row["latency_kind"] not in LATENCY_KINDS:
        bad("latency_kind", f"must be one of {', '.join(LATENCY_KINDS)} or null")
    has_quality = row["prompt_accuracy"] is not None or row["fd"] is not None
    if has_quality != (row["quality_kind"] is not None):
        bad("quality_kind", "must be given exactly when prompt_accuracy or fd is")
    if row["quality_kind"] is not None and row["quality_kind"] not in QUALITY_KINDS:
        bad("quality_kind", f"must be one of {', '.join(QUALITY_KINDS)} or null")
    parts = row["latency_parts"]
    if parts is not None and (not isinstance(parts, dict)
                              or not all(isinstance(k, str) and _finite(v) and v >= 0 for k, v in parts.items())):
        bad("latency_parts", "must be an object of finite numbers >= 0 or null")
    src = row["source"]
    if not isinstance(src, dict) or not _str(src.get("file")) or not (src.get("command") is None
                                                                     or isinstance(src.get("command"), str)):
        bad("source", 'must be {"file": path, "command": text or null}')
    values = {f: row[f] for f in FIELDS}
    values["guidance"] = float(values["guidance"])
    for name in ("latency_ms", "prompt_accuracy", "fd", "gflops_per_image"):
        if values[name] is not None:
            values[name] = float(values[name])
    return Configuration(**values)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_store(text: str, path: str) -> list[Configuration]:
    """The rows of a store's text (one JSON object a line; blank lines skipped). Raises MobilediffError naming
    ``path`` and the line: not JSON, a non-finite number (NaN, Infinity), a row that fails :func:`check_row`."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constants)
        except ValueError as e:
            raise MobilediffError(f"corrupt {path} line {i}: {e}") from None
        rows.append(check_row(obj, f"corrupt {path} line {i}"))
    return rows


def read_store(path: Path) -> list[Configuration]:
    """The checked rows of the store at ``path`` (:func:`parse_store`). Raises MobilediffError: missing, a folder,
    not UTF-8, a bad line."""
    path = Path(path)
    if not path.exists():
        raise MobilediffError(f"{path}: not found")
    if not path.is_file():
        raise MobilediffError(f"{path}: is a folder, not a configurations file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MobilediffError(f"corrupt {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_store(text, str(path))


# ------------------------------------------------------------------------------------------------------ writing
def write_store(rows: Iterable[Configuration], store: Path) -> None:
    """Write ``rows`` as the whole store at ``store``, atomically (a temporary file beside it, then renamed)."""
    from mobilediff.io import atomic_path

    text = "".join(r.to_json() + "\n" for r in rows)
    with atomic_path(Path(store)) as tmp:
        tmp.write_text(text, encoding="utf-8")


def append_rows(rows: Iterable[Configuration], store: Path = DEFAULT_STORE) -> tuple[int, int]:
    """Add ``rows`` to the store at ``store`` (created if missing): a row whose :func:`config_key` (source file and
    configuration) is already there replaces it in place, so running a benchmark again never duplicates its rows;
    the others are added at the end. Every row is checked first; the store is rewritten atomically. Returns (rows
    added, rows replaced). Raises MobilediffError on a corrupt store (left as it is) or a bad row."""
    new = {}
    for r in rows:
        check_row(json.loads(r.to_json()), f"row of {r.source.get('file')}")
        new[config_key(r)] = r
    store = Path(store)
    old = read_store(store) if store.exists() else []
    out, replaced = [], 0
    for r in old:
        k = config_key(r)
        if k in new:
            out.append(new.pop(k))
            replaced += 1
        else:
            out.append(r)
    added = len(new)
    out += new.values()
    write_store(out, store)
    return added, replaced


# ------------------------------------------------------------------------------------------------------ helpers
def machine_of(info: dict | None, kind: str = "host", android: dict | None = None, apple: dict | None = None
               ) -> tuple[str, str]:
    """(description, id) of the machine a result file records: a host's :func:`mobilediff.machine.machine_info`
    (CPU, cores, memory, accelerator; not the kernel build or load, which change between runs on one machine), or
    the phone of an Android or Apple run. The id is ``<kind>-`` + 8 hex digits of the description's sha256."""
    if kind == "android" and android:
        desc = f"{android.get('model') or 'Android device'} ({android.get('soc') or '?'}), Android " \
               f"{android.get('android_version') or '?'}, {android.get('abi') or '?'}"
    elif kind == "apple" and apple:
        desc = f"Apple {apple.get('platform') or 'device'}"
    elif info:
        acc = str(info.get("accelerator") or "")
        acc = "CPU only" if not acc or acc.startswith("none") else acc
        mem = info.get("memory_gib")
        desc = f"{info.get('cpu') or '?'}, {info.get('cores') or '?'} cores, " \
               f"{'?' if mem is None else format(mem, 'g')} GiB, {acc}"
    else:
        desc = "unknown machine"
    return desc, f"{kind}-{hashlib.sha256(desc.encode()).hexdigest()[:8]}"


def _rel(path: str | None) -> str | None:
    """A path as a row names it: an absolute path inside the repository made relative to it (a committed row names
    no path of this machine); any other path as it is."""
    if path is None or not os.path.isabs(path):
        return path
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else path


def _num(x) -> float | None:
    return float(x) if _finite(x) else None


def _latency(lat: dict | None) -> float | None:
    lat = lat or {}
    ms = lat.get("median_ms") if lat.get("median_ms") is not None else lat.get("mean_ms")
    return float(ms) if _finite(ms) and ms > 0 else None


def unet_rows_of(sampler: str, guidance: float) -> int:
    """UNet batch per step of a plan: classifier-free guidance (2 rows) above guidance 1, except LCM, whose guidance
    is an embedding input of one row."""
    return 1 if guidance <= 1 or sampler == "lcm" else 2


def export_command(model: str, target: str, out: str, precision: str = "fp32", quantize: str | None = None,
                   decoder: str | None = None, fused_steps: int | None = None, fused_sampler: str | None = None,
                   guidance: float | None = None) -> str:
    """The ``mobilediff export`` command line that makes a bundle: ``--quantize`` for a recipe, ``--precision fp16``
    for a half-precision bundle, ``--decoder`` for a swapped-in decoder, ``--fused-steps`` (and ``--fused-sampler``)
    for a bundle with the fused program, ``--guidance`` where the plan's guidance is not the model's own default."""
    args = ["mobilediff", "export", "--model", _rel(model), "--target", target]
    if precision == "fp16" and not quantize:
        args += ["--precision", "fp16"]
    if quantize:
        args += ["--quantize", quantize]
    if decoder:
        args += ["--decoder", _rel(decoder)]
    if fused_steps:
        args += ["--fused-steps", str(fused_steps)]
        if fused_sampler:
            args += ["--fused-sampler", fused_sampler]
    if guidance is not None:
        args += ["--guidance", format(guidance, "g")]
    return shlex.join(args + ["--out", out])


ModelInfo = Callable[[str], dict]  # model name -> {"base_model", "unet_params", "method"} (any of them may be None)


def _info(model_info: ModelInfo | None, model: str) -> dict:
    if model_info is None:
        return {}
    return {k: v for k, v in (model_info(model) or {}).items() if v is not None}


def _shapes_prompts(seed) -> str:
    return "shapes evaluation set" + (f" (seed {seed})" if seed is not None else "")


# ------------------------------------------------------------------------------------------------------ importers
def check_study_rows(rows, path: str) -> list[dict]:
    """The scaling study's rows (``scaling.json``), each checked (types, finite numbers, ranges) and given its
    defaults (``pipeline``: the model, ``precision``: fp32, ``unet_rows``: 1). Raises MobilediffError naming the row
    and field."""
    if not isinstance(rows, list):
        raise MobilediffError(f"corrupt {path}: expected a list of rows (benchmarks/scaling.py's scaling.json), "
                              f"got {type(rows).__name__}")
    if not rows:
        raise MobilediffError(f"{path} has no rows")
    out = []
    for i, r in enumerate(rows):
        where = f"corrupt {path}: row {i}"
        if not isinstance(r, dict):
            raise MobilediffError(f"{where} is not an object")
        for key in ("model", "method", "sampler", "runtime"):
            if not isinstance(r.get(key), str) or not r[key]:
                raise MobilediffError(f"{where}: {key!r} missing or not a string")
        for key in ("pipeline", "precision"):
            if key in r and (not isinstance(r[key], str) or not r[key]):
                raise MobilediffError(f"{where}: {key!r} is not a string")
        if not isinstance(r.get("steps"), int) or isinstance(r["steps"], bool) or r["steps"] < 1:
            raise MobilediffError(f"{where}: 'steps' missing or not an integer >= 1")
        if not _finite(r.get("guidance")) or r["guidance"] < 0:
            raise MobilediffError(f"{where}: 'guidance' missing or not a finite number >= 0")
        if not _finite(r.get("latency_ms")) or r["latency_ms"] <= 0:
            raise MobilediffError(f"{where}: 'latency_ms' missing or not a finite number > 0")
        if not _finite(r.get("prompt_accuracy")) or not 0 <= r["prompt_accuracy"] <= 1:
            raise MobilediffError(f"{where}: 'prompt_accuracy' missing or not a number in [0, 1]")
        if r.get("fd") is not None and not _finite(r["fd"]):
            raise MobilediffError(f"{where}: 'fd' is not a finite number")
        if r.get("unet_rows", 1) not in (1, 2):
            raise MobilediffError(f"{where}: 'unet_rows' must be 1 or 2")
        out.append({**r, "pipeline": r.get("pipeline", r["model"]), "precision": r.get("precision", "fp32"),
                    "unet_rows": r.get("unet_rows", 1)})
    return out


def from_scaling(rows, meta: dict | None, file: str) -> list[Configuration]:
    """The scaling study's rows (``scaling.json``, checked by :func:`check_study_rows`) as configurations; ``meta``:
    its ``scaling_meta.json`` (machine, threads, command, weights hashes; None: unknown). Latency is the study's
    composition of component medians; quality was measured on the PyTorch pipeline (on every runtime the study
    times: its ONNX graphs are checked against PyTorch at export)."""
    rows = check_study_rows(rows, file)
    meta = meta if isinstance(meta, dict) else {}
    machine, machine_id = machine_of(meta.get("machine"))
    settings = meta.get("settings") or {}
    sha = {m.get("label"): m.get("weights_sha256") for m in meta.get("models") or [] if isinstance(m, dict)}
    source = {"file": file, "command": meta.get("command")}
    out = []
    for r in rows:
        parts = r.get("latency_parts") if isinstance(r.get("latency_parts"), dict) else None
        export = None
        if r["runtime"] != "eager":
            g = float(r["guidance"])
            export = export_command(r["pipeline"], RUNTIME_TARGETS.get(r["runtime"], r["runtime"]),
                                    f"{r['pipeline'].replace(':', '-')}-{r['runtime']}",
                                    guidance=g if r["method"] == "teacher" and g != TEACHER_DEFAULT_GUIDANCE else None)
        out.append(Configuration(
            model=r["pipeline"], method=r["method"], sampler=r["sampler"], steps=r["steps"],
            guidance=float(r["guidance"]), unet_rows=r["unet_rows"], runtime=r["runtime"], precision=r["precision"],
            decoder="full", machine=machine, machine_id=machine_id, source=source, bundle=None, base_model=r["model"],
            unet_params=r.get("unet_params") if _int(r.get("unet_params")) and r["unet_params"] > 0 else None,
            model_sha256=sha.get(r["pipeline"]), threads=settings.get("threads") if _int(settings.get("threads"))
            else None, latency_ms=float(r["latency_ms"]),
            latency_kind="composed" if r.get("latency_kind", "composed") == "composed" else "measured",
            latency_parts=parts, prompt_accuracy=float(r["prompt_accuracy"]), fd=_num(r.get("fd")),
            n=r.get("n") if _int(r.get("n")) and r["n"] > 0 else None, quality_kind="pytorch",
            prompts=_shapes_prompts(meta.get("prompt_seed")), fd_features="shapes evaluator",
            gflops_per_image=_num(r.get("gflops_per_image")), created=meta.get("created"), export=export))
    return out


def _is_run_device(result) -> bool:
    return isinstance(result, dict) and isinstance(result.get("schema"), dict) \
        and result["schema"].get("name") == "mobilediff.run_device"


def _device_machine(result: dict) -> tuple[str, str]:
    dev = result.get("device") or {}
    return machine_of(dev.get("machine"), dev.get("kind") or "host", dev.get("android"), dev.get("apple"))


def _quality_setup(result: dict) -> tuple[str | None, str | None]:
    """(prompts, fd_features) of a run_device result: the shapes set and evaluator, or its --prompts metric set."""
    s = result.get("settings") or {}
    ms = s.get("metric_set")
    if isinstance(ms, dict):
        f = ms.get("fd_features") or {}
        feat = f"{_rel(f.get('path'))} ({f.get('kind')})" if isinstance(f, dict) and f.get("path") else None
        return _rel(s.get("prompts") or ms.get("prompts")), feat
    return _shapes_prompts(s.get("prompt_seed")), "shapes evaluator"


def _bundle_export(b: dict, runtime: str, fused: dict | None) -> str | None:
    """The export command of a run_device bundle record (its source model, target, precision or recipe, decoder, the
    fused program when the file measured one, the teacher's guidance when it is not the default)."""
    src = b.get("source") or {}
    model = src.get("model")
    if not model:
        return None
    target = RUNTIME_TARGETS.get(runtime.split(":")[0])
    targets = b.get("targets") or []
    if target is None and len(targets) == 1:
        target = targets[0]
    if target is None:
        return None
    plan = b.get("default_plan") or {}
    g = plan.get("guidance")
    guidance = float(g) if b.get("role") == "teacher" and _finite(g) and g != TEACHER_DEFAULT_GUIDANCE else None
    fused_sampler = None
    if fused is not None:
        default = "lcm" if b.get("method") == "lcm" else "ddim"
        fused_sampler = fused["sampler"] if fused["sampler"] != default else None
    return export_command(model, target, b["name"], precision=b.get("precision") or "fp32",
                          quantize=b.get("quantization"), decoder=src.get("decoder"),
                          fused_steps=fused["steps"] if fused else None, fused_sampler=fused_sampler,
                          guidance=guidance)


def from_run_device(result, file: str, model_info: ModelInfo | None = None) -> list[Configuration]:
    """A run_device result's ``end_to_end`` rows as configurations: a bundle's row on its runtime (its latency
    measured end to end on the host, or estimated from component medians on a phone; its quality measured on the
    bundle itself), and the PyTorch (eager) rows of each source model. A fused program's row has its bundle's
    step-by-step quality (``bundle-unfused``). ``model_info`` fills base model, UNet size and method where the file
    lacks them. Raises MobilediffError on a file that is not a run_device result or a row without its fields."""
    if not _is_run_device(result):
        raise MobilediffError(f"{file} is not a run_device result (benchmarks/run_device.py's run_device.json)")
    bundles, e2e = result.get("bundles"), result.get("end_to_end")
    if not isinstance(bundles, list) or not isinstance(e2e, list):
        raise MobilediffError(f"corrupt {file}: no bundles or end_to_end list")
    machine, machine_id = _device_machine(result)
    prompts, fd_features = _quality_setup(result)
    settings = result.get("settings") or {}
    threads = settings.get("threads") if _int(settings.get("threads")) else None
    source = {"file": file, "command": result.get("command")}
    out = []
    try:
        by_name = {b["name"]: b for b in bundles}
        sha_of = {(b.get("source") or {}).get("model"): (b.get("source") or {}).get("weights_sha256") for b in bundles}
        fused_of = {r["bundle"]: r for r in e2e if r.get("fused") and r.get("bundle")}
        for r in e2e:
            b = by_name.get(r["bundle"]) if r["bundle"] else None
            src = (b or {}).get("source") or {}
            model = r["source"]
            info = _info(model_info, model)
            q = r.get("quality") or {}
            acc, fd = _num(q.get("prompt_accuracy")), _num(q.get("fd"))
            kind = None
            if acc is not None or fd is not None:
                kind = "pytorch" if b is None else ("bundle-unfused" if r.get("fused") else "bundle")
            ms = _latency(r.get("latency"))
            decoder = src.get("decoder")
            out.append(Configuration(
                model=model, method=r.get("method") or info.get("method") or "unknown", sampler=r["sampler"],
                steps=int(r["steps"]), guidance=float(r["guidance"]), unet_rows=int(r.get("unet_batch") or 1),
                runtime=r["runtime"], precision=r["precision"], decoder="tiny" if decoder else "full",
                machine=machine, machine_id=machine_id, source=source, bundle=r["bundle"],
                base_model=info.get("base_model"), unet_params=info.get("unet_params"),
                model_sha256=src.get("weights_sha256") or sha_of.get(model), decoder_model=_rel(decoder),
                fused=bool(r.get("fused")), threads=threads, latency_ms=ms,
                latency_kind=None if ms is None
                else ("composed" if r.get("latency_kind") == "estimate" else "measured"),
                prompt_accuracy=acc, fd=fd, n=q.get("n") if kind and _int(q.get("n")) and q["n"] > 0 else None,
                quality_kind=kind, prompts=prompts if kind else None,
                fd_features=fd_features if fd is not None else None,
                gflops_per_image=_num(r.get("gflop")) if _num(r.get("gflop")) and r["gflop"] > 0 else None,
                created=result.get("created"),
                export=None if b is None else _bundle_export(b, r["runtime"], fused_of.get(r["bundle"]))))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MobilediffError(f"corrupt {file}: a bundle or end_to_end row lacks {e}") from None
    return out


def from_quantization(result, file: str, model_info: ModelInfo | None = None) -> list[Configuration]:
    """A quantization benchmark result's end-to-end rows (one student, every recipe of each target, on the host;
    quality measured on each bundle) as configurations. Its ablations (a recipe changed in ways no ``--quantize``
    flag gives: "int8-static, nothing kept float", "int8-static + VAE decoder") are left out: no command makes them.
    Raises MobilediffError on a file that is not a quantization result."""
    if not isinstance(result, dict) or not isinstance(result.get("meta"), dict) \
            or not isinstance(result.get("end_to_end"), list):
        raise MobilediffError(f"{file} is not a quantization result (benchmarks/quantization.py's quantization.json)")
    meta = result["meta"]
    model = meta.get("model")
    smp = meta.get("sampling") or {}
    if not _str(model) or not isinstance(smp, dict):
        raise MobilediffError(f"corrupt {file}: meta lacks the model or its sampling plan")
    info = _info(model_info, model)
    machine, machine_id = machine_of(meta.get("machine"))
    source = {"file": file, "command": meta.get("command")}
    out = []
    try:
        sampler, steps, guidance = smp["sampler"], int(smp["steps"]), float(smp["guidance"])
        for r in result["end_to_end"]:
            recipe = r.get("recipe")
            if r["variant"] != (recipe or "fp32"):
                continue
            precision = recipe or "fp32"
            ms = _num(r.get("latency_ms"))
            acc, fd = _num(r.get("prompt_accuracy")), _num(r.get("fd"))
            out.append(Configuration(
                model=model, method=info.get("method", "unknown"), sampler=sampler, steps=steps, guidance=guidance,
                unet_rows=unet_rows_of(sampler, guidance), runtime=r["target"], precision=precision, decoder="full",
                machine=machine, machine_id=machine_id, source=source, bundle=f"{r['target']}-{precision}",
                base_model=info.get("base_model"), unet_params=info.get("unet_params"),
                model_sha256=meta.get("model_sha256"), threads=None, latency_ms=ms if ms and ms > 0 else None,
                latency_kind="measured" if ms and ms > 0 else None, prompt_accuracy=acc, fd=fd,
                n=r.get("n") if _int(r.get("n")) and r["n"] > 0 else None,
                quality_kind="bundle" if acc is not None or fd is not None else None,
                prompts=_shapes_prompts(meta.get("prompt_seed")), fd_features="shapes evaluator",
                created=meta.get("created"),
                export=export_command(model, r["target"], f"{r['target']}-{precision}", quantize=recipe)))
    except (KeyError, TypeError, ValueError) as e:
        raise MobilediffError(f"corrupt {file}: an end_to_end row lacks {e}") from None
    return out


def _quality_only(model: str, method: str, r: dict, meta: dict, file: str, sha: str | None,
                  model_info: ModelInfo | None) -> Configuration:
    info = _info(model_info, model)
    machine, machine_id = machine_of(meta.get("machine"))
    steps, guidance = int(r["steps"]), float(r["guidance"])
    nfe = r.get("nfe")
    rows = nfe // steps if _int(nfe) and nfe // steps in (1, 2) else unet_rows_of(r["sampler"], guidance)
    acc, fd = _num(r.get("prompt_accuracy")), _num(r.get("fd"))
    return Configuration(
        model=model, method=method, sampler=r["sampler"], steps=steps, guidance=guidance, unet_rows=rows,
        runtime="eager", precision="fp32", decoder="full", machine=machine, machine_id=machine_id,
        source={"file": file, "command": meta.get("command")}, base_model=info.get("base_model"),
        unet_params=info.get("unet_params"), model_sha256=sha, prompt_accuracy=acc, fd=fd,
        n=r.get("n") if _int(r.get("n")) and r["n"] > 0 else None,
        quality_kind="pytorch" if acc is not None or fd is not None else None,
        prompts=_shapes_prompts(meta.get("prompt_seed")), fd_features="shapes evaluator", created=meta.get("created"))


def from_distillation(rows, meta: dict | None, file: str, model_info: ModelInfo | None = None) -> list[Configuration]:
    """The distillation sweep (``distillation.json`` + ``distillation_meta.json``): quality of the teacher and each
    student on the PyTorch model, no latency. A row's model is its meta's teacher or student by method (and steps,
    for progressive students). Raises MobilediffError on rows of another shape or a student the meta lacks."""
    if not isinstance(rows, list) or not isinstance(meta, dict):
        raise MobilediffError(f"corrupt {file}: expected a list of rows and its distillation_meta.json")
    students = meta.get("students") or {}
    out = []
    try:
        for i, r in enumerate(rows):
            method = r["method"]
            if method.startswith("teacher"):
                model, sha, method = meta["teacher"], meta.get("teacher_sha256"), "teacher"
            else:
                key = f"progressive steps-{r['steps']}" if method == "progressive" else method
                if key not in students:
                    raise MobilediffError(f"corrupt {file}: row {i} ({method}) has no student {key!r} in its meta")
                model, sha = students[key]["path"], students[key].get("sha256")
            out.append(_quality_only(model, method, r, meta, file, sha, model_info))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MobilediffError(f"corrupt {file}: a row lacks {e}") from None
    return out


def from_baseline_quality(rows, meta: dict | None, file: str, model_info: ModelInfo | None = None
                          ) -> list[Configuration]:
    """The teacher's quality sweep (``baseline_quality.json`` + ``baseline_quality_meta.json``): PyTorch, no latency."""
    if not isinstance(rows, list) or not isinstance(meta, dict) or not _str(meta.get("model")):
        raise MobilediffError(f"corrupt {file}: expected a list of rows and its baseline_quality_meta.json")
    try:
        return [_quality_only(meta["model"], "teacher", r, meta, file, meta.get("model_sha256"), model_info)
                for r in rows]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MobilediffError(f"corrupt {file}: a row lacks {e}") from None


def append_result(kind: str, result, out: Path, store: Path | None = None) -> tuple[int, int]:
    """At the end of a benchmark run: the rows of the ``result`` it wrote into the folder ``out`` ("scaling": its
    ``{"rows", "meta"}``; "run_device": its run_device.json) appended to the store beside them,
    ``out/configurations.jsonl`` (or ``store``), by :func:`append_rows`. Returns (added, replaced)."""
    from mobilediff.bench.envelope import json_safe, record_path

    result = json_safe(result)
    if kind == "scaling":
        rows = from_scaling(result["rows"], result["meta"], record_path(Path(out) / "scaling.json"))
    elif kind == "run_device":
        rows = from_run_device(result, record_path(Path(out) / "run_device.json"))
    else:
        raise ValueError(f"unknown result kind {kind!r}")
    return append_rows(rows, Path(out) / STORE_NAME if store is None else store)


def fill_from(rows: list[Configuration], known: Iterable[Configuration]) -> list[Configuration]:
    """``rows`` with the base model, UNet size and method they lack taken from ``known`` rows of the same model (and
    the same weights, where both record them): a run_device file read on the fly names its models but not their
    sizes."""
    from dataclasses import replace

    facts: dict[str, dict] = {}
    for k in known:
        f = facts.setdefault(k.model, {"sha": set()})
        if k.model_sha256:
            f["sha"].add(k.model_sha256)
        for name in ("base_model", "unet_params"):
            if getattr(k, name) is not None:
                f.setdefault(name, getattr(k, name))
        if k.method != "unknown":
            f.setdefault("method", k.method)
    out = []
    for r in rows:
        f = facts.get(r.model)
        if f is None or (r.model_sha256 and f["sha"] and r.model_sha256 not in f["sha"]):
            out.append(r)
            continue
        out.append(replace(r, base_model=r.base_model or f.get("base_model"),
                           unet_params=r.unet_params or f.get("unet_params"),
                           method=f.get("method", r.method) if r.method == "unknown" else r.method))
    return out


# ------------------------------------------------------------------------------- composing from a device's medians
@dataclass(frozen=True)
class DeviceCost:
    """Component medians of one model on one runtime, precision and decoder, from a run_device file."""

    source: str  # the model's label in the file ("default:slim-4", a folder)
    paths: tuple[str, ...]  # the model's folder(s) as the file's bundles record them
    runtime: str
    precision: str
    decoder_model: str | None  # the bundle's swapped-in decoder; None: the model's own
    bundle: dict | None  # one bundle record behind these medians (None: PyTorch eager)
    weights_sha256: str | None  # the source model's weights, as the file's bundles record them
    text_encoder_ms: float | None
    unet_ms: dict[int, float]  # UNet batch -> median
    vae_decoder_ms: float | None


def device_costs(result, path: str) -> list[DeviceCost]:
    """Per (source model, runtime, bundle precision, decoder) of a run_device result: its component medians (median
    or, for runner tools without per-run times, mean). A bundle's precision is the bundle's (an int8 bundle keeps a
    float VAE decoder); PyTorch eager rows are fp32. Raises MobilediffError on a file that is not a run_device
    result."""
    if not _is_run_device(result):
        raise MobilediffError(f"--device {path} is not a run_device result "
                              f"(benchmarks/run_device.py's run_device.json)")
    comps, bundles = result.get("components"), result.get("bundles")
    if not isinstance(comps, list) or not isinstance(bundles, list):
        raise MobilediffError(f"corrupt {path}: no components or bundles list")
    by_name, paths, sha = {}, {}, {}
    try:
        for b in bundles:
            by_name[b["name"]] = b
            src = b.get("source") or {}
            if src.get("model") and src.get("weights_sha256"):
                sha[src["model"]] = src["weights_sha256"]
            for p in (src.get("path"), src.get("model")):
                if isinstance(p, str) and p:
                    paths.setdefault(b["name"], set()).add(p)
        groups: dict[tuple, dict] = {}
        for r in comps:
            ms = _latency(r["latency"])
            if ms is None:
                continue
            b = by_name.get(r["bundle"]) if r["bundle"] else None
            prec = b["precision"] if b else r["precision"]
            decoder = ((b or {}).get("source") or {}).get("decoder")
            key = (r["source"], r["runtime"], prec, decoder)
            g = groups.setdefault(key, {"text_encoder": [], "unet": {}, "vae_decoder": [], "paths": set(), "bundle": b})
            g["paths"] |= paths.get(r["bundle"], set())
            if r["component"] == "unet":
                shapes = r["input_shapes"]
                batch = int((shapes.get("sample") or next(iter(shapes.values())))[0])
                g["unet"].setdefault(batch, []).append(ms)
            elif r["component"] in ("text_encoder", "vae_decoder"):
                g[r["component"]].append(ms)
    except (KeyError, TypeError, ValueError, IndexError, StopIteration, AttributeError) as e:
        raise MobilediffError(f"corrupt {path}: a bundle or component row lacks {e}") from None
    return [DeviceCost(source=src, paths=tuple(sorted(g["paths"])), runtime=rt, precision=prec, decoder_model=dec,
                       bundle=g["bundle"],
                       weights_sha256=((g["bundle"] or {}).get("source") or {}).get("weights_sha256") or sha.get(src),
                       text_encoder_ms=statistics.median(g["text_encoder"]) if g["text_encoder"] else None,
                       unet_ms={b: statistics.median(v) for b, v in g["unet"].items()},
                       vae_decoder_ms=statistics.median(g["vae_decoder"]) if g["vae_decoder"] else None)
            for (src, rt, prec, dec), g in groups.items()]


def compose_from_device(result, path: str, quality_rows: list[Configuration]) -> tuple[list[Configuration], list[str]]:
    """Configurations a run_device file did not run end to end but whose components it timed: every row of
    ``quality_rows`` with quality measured on the PyTorch model (eager, the model's own decoder), once per runtime
    and precision the file timed that model on (matched by label or by the bundles' recorded folders, and by weights
    hash where both are known), latency composed from the file's component medians
    (``text_encoder_ms x calls + steps x unet_ms(unet_rows) + vae_decoder_ms``, :mod:`mobilediff.bench.scaling`'s
    model), quality borrowed: ``pytorch`` on an fp32 bundle, ``borrowed`` (the float model's) on a quantized one.
    Returns the rows and notes on what was composed and what left out."""
    from mobilediff.bench.scaling import compose_latency, text_encoder_calls

    costs = [c for c in device_costs(result, path) if c.decoder_model is None]
    machine, machine_id = _device_machine(result)
    settings = result.get("settings") or {}
    threads = settings.get("threads") if _int(settings.get("threads")) else None
    source = {"file": _rel(path), "command": result.get("command")}
    best: dict[tuple, Configuration] = {}
    for q in quality_rows:  # one PyTorch quality row per plan: the most prompts, then the latest
        if q.runtime != "eager" or q.decoder != "full" or q.quality_kind != "pytorch" or q.prompt_accuracy is None:
            continue
        k = (q.model, q.sampler, q.steps, q.guidance, q.unet_rows, q.model_sha256)
        if k not in best or (q.n or 0, q.created or "") > (best[k].n or 0, best[k].created or ""):
            best[k] = q
    out, covered, uncovered, no_batch, other_weights = [], set(), set(), 0, 0
    for q in best.values():
        named = [c for c in costs if q.model == c.source or q.model in c.paths]
        mine = [c for c in named if not (q.model_sha256 and c.weights_sha256 and c.weights_sha256 != q.model_sha256)]
        if not mine:
            if named:
                other_weights += 1
            else:
                uncovered.add(q.model)
            continue
        usable = [c for c in mine if q.unet_rows in c.unet_ms and c.text_encoder_ms and c.vae_decoder_ms]
        if not usable:
            no_batch += 1
            continue
        covered.add(q.model)
        for c in usable:
            calls = text_encoder_calls(c.runtime, q.unet_rows)
            unet = c.unet_ms[q.unet_rows]
            ms = compose_latency(c.text_encoder_ms, unet, c.vae_decoder_ms, q.steps, calls)
            export = None
            if c.bundle is not None:
                export = _bundle_export(c.bundle, c.runtime, None)
                if export and c.bundle.get("role") == "teacher":  # the composed plan's guidance, not the bundle's
                    export = export_command(c.bundle["source"]["model"], RUNTIME_TARGETS.get(c.runtime.split(":")[0],
                                            c.runtime), c.bundle["name"], precision=c.bundle.get("precision") or "fp32",
                                            quantize=c.bundle.get("quantization"),
                                            guidance=q.guidance if q.guidance != TEACHER_DEFAULT_GUIDANCE else None)
            out.append(Configuration(
                model=q.model, method=q.method, sampler=q.sampler, steps=q.steps, guidance=q.guidance,
                unet_rows=q.unet_rows, runtime=c.runtime, precision=c.precision, decoder="full", machine=machine,
                machine_id=machine_id, source=source, bundle=c.bundle["name"] if c.bundle else None,
                base_model=q.base_model, unet_params=q.unet_params, model_sha256=q.model_sha256, threads=threads,
                latency_ms=ms, latency_kind="composed",
                latency_parts={"text_encoder_ms": c.text_encoder_ms, "text_encoder_calls": calls,
                               "unet_step_ms": unet, "vae_decoder_ms": c.vae_decoder_ms},
                prompt_accuracy=q.prompt_accuracy, fd=q.fd, n=q.n,
                quality_kind="pytorch" if c.precision == q.precision else "borrowed",
                quality_source=q.quality_source or q.source["file"], prompts=q.prompts,
                fd_features=q.fd_features, gflops_per_image=q.gflops_per_image, created=result.get("created"),
                export=export))
    plans = len({(c.model, c.sampler, c.steps, c.guidance) for c in out})
    notes = [f"{plans} of {len(best)} plans (model, sampler, steps, guidance) with PyTorch quality composed from "
             f"{path}'s component medians (models: {', '.join(sorted(covered)) or 'none'})"]
    if uncovered:
        notes.append(f"not in {path}, left out: {', '.join(sorted(uncovered))}")
    if other_weights:
        notes.append(f"{other_weights} configuration(s) left out: their quality was measured on other weights than "
                     f"{path} timed (model_sha256)")
    if no_batch:
        notes.append(f"{no_batch} configuration(s) left out: {path} did not time their UNet batch (a teacher bundle's "
                     f"UNet is timed at its CFG batch of 2; guidance <= 1 needs batch 1)")
    return out, notes
