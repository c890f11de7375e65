"""The best model size, sampler, steps, runtime and precision for a latency budget or a quality floor, from measured
results: the scaling study's rows (``benchmarks/scaling.py`` -> ``scaling.json``: quality and host latency of every
configuration) and, optionally, a device's component latencies (``benchmarks/run_device.py`` -> ``run_device.json``).
Pure functions over rows; ``mobilediff recommend`` is the command over them.

Latency of a configuration, by source:

- ``host`` (default): the study's own ``latency_ms`` (one image end to end on the study's machine and runtime);
- a run_device file: re-estimated for every model the file covers, per runtime and precision it measured, as
  ``text_encoder_ms + steps x unet_ms + vae_decoder_ms`` (:func:`mobilediff.bench.scaling.compose_latency`, one
  text-encoder call: an app encodes the unconditional prompt once) from the file's component medians, with the UNet
  timed at the configuration's batch (2 rows for a classifier-free-guidance step). A study row whose model the file
  does not cover, or whose UNet batch it did not time, is left out, and the recommendation says so.

Quality (prompt accuracy, FD) always comes from the study: the same fixed prompts and seeds for every row. A
re-estimated row at a precision the study did not measure (a quantized bundle) keeps the study's float quality, and
the recommendation says that too.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from mobilediff.errors import MobilediffError

DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "scaling.json"
RUNNER_UPS = 3


@dataclass(frozen=True)
class Candidate:
    """One configuration that can be recommended."""

    model: str  # the UNet size (a family member)
    pipeline: str  # what samples: the model or one of its students
    method: str  # teacher | progressive | lcm
    sampler: str
    steps: int
    guidance: float
    runtime: str
    precision: str
    latency_ms: float  # one image end to end
    prompt_accuracy: float
    fd: float | None
    n: int | None  # prompts the quality was measured on
    unet_rows: int  # UNet batch per step: 2 for a classifier-free-guidance step
    latency_from: str  # where latency_ms comes from, in words
    quality_from: str  # where the quality comes from, in words


@dataclass(frozen=True)
class Recommendation:
    best: Candidate
    runner_ups: tuple[Candidate, ...]
    constraint: str  # "latency <= 50 ms" | "prompt accuracy >= 0.9"
    considered: int  # candidates that met the constraint
    notes: tuple[str, ...] = ()  # what the reader must know: re-estimated rows, models left out, precisions


# ------------------------------------------------------------------------------------------------------ reading
def _read_json(path: Path, what: str):
    path = Path(path)
    if not path.exists():
        raise MobilediffError(f"{what} {path}: not found")
    if not path.is_file():
        raise MobilediffError(f"{what} {path}: is a folder, not a JSON file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MobilediffError(f"corrupt {path}: {e}") from None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_study_rows(rows, path: str) -> list[dict]:
    """The study's rows, each checked (types, finite numbers, ranges) and given its defaults (``pipeline``: the
    model, ``precision``: fp32, ``unet_rows``: 1). Raises MobilediffError naming the row and field."""
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


def read_study(path: Path) -> list[dict]:
    """The checked rows of a scaling study file (:func:`check_study_rows`)."""
    return check_study_rows(_read_json(path, "--table"), str(path))


def study_candidates(rows: list[dict], table: str) -> list[Candidate]:
    """Every study row as a candidate with the study's own (host) latency."""
    return [Candidate(model=r["model"], pipeline=r["pipeline"], method=r["method"], sampler=r["sampler"],
                      steps=r["steps"], guidance=float(r["guidance"]), runtime=r["runtime"], precision=r["precision"],
                      latency_ms=float(r["latency_ms"]), prompt_accuracy=float(r["prompt_accuracy"]), fd=r.get("fd"),
                      n=r.get("n"), unet_rows=r["unet_rows"],
                      latency_from=f"{table} (the study's host, {r['runtime']}, "
                                   f"{r.get('latency_kind', 'measured')})",
                      quality_from=f"{table} ({r.get('n', '?')} fixed prompts and seeds)")
            for r in rows]


@dataclass(frozen=True)
class DeviceCost:
    """Component medians of one model on one runtime and precision, from a run_device file."""

    source: str  # the model's label in the file ("default:unet-xs", a folder name)
    paths: tuple[str, ...]  # the model's folder(s) as the file's bundles record them
    runtime: str
    precision: str
    text_encoder_ms: float | None
    unet_ms: dict[int, float]  # UNet batch -> median
    vae_decoder_ms: float | None


def device_costs(result, path: str) -> list[DeviceCost]:
    """Per (source model, runtime, precision) of a run_device result: its component medians (median or, for runner
    tools without per-run times, mean). A bundle's precision is the bundle's (an int8 bundle keeps a float VAE
    decoder); PyTorch eager rows are fp32. Raises MobilediffError on a file that is not a run_device result."""
    if not isinstance(result, dict) or not isinstance(result.get("schema"), dict) \
            or result["schema"].get("name") != "mobilediff.run_device":
        raise MobilediffError(f"--device {path} is not a run_device result (benchmarks/run_device.py's run_device.json)")
    comps, bundles = result.get("components"), result.get("bundles")
    if not isinstance(comps, list) or not isinstance(bundles, list):
        raise MobilediffError(f"corrupt {path}: no components or bundles list")
    precision, paths = {}, {}
    try:
        for b in bundles:
            precision[b["name"]] = b["precision"]
            src = b.get("source") or {}
            for p in (src.get("path"), src.get("model")):
                if isinstance(p, str) and p:
                    paths.setdefault(b["name"], set()).add(p)
        groups: dict[tuple, dict] = {}
        for r in comps:
            lat = r["latency"] or {}
            ms = lat.get("median_ms") if lat.get("median_ms") is not None else lat.get("mean_ms")
            if not _finite(ms) or ms <= 0:
                continue
            prec = precision.get(r["bundle"], r["precision"]) if r["bundle"] else r["precision"]
            key = (r["source"], r["runtime"], prec)
            g = groups.setdefault(key, {"text_encoder": [], "unet": {}, "vae_decoder": [], "paths": set()})
            g["paths"] |= paths.get(r["bundle"], set())
            if r["component"] == "unet":
                shapes = r["input_shapes"]
                batch = int((shapes.get("sample") or next(iter(shapes.values())))[0])
                g["unet"].setdefault(batch, []).append(float(ms))
            elif r["component"] in ("text_encoder", "vae_decoder"):
                g[r["component"]].append(float(ms))
    except (KeyError, TypeError, ValueError, IndexError, StopIteration, AttributeError) as e:
        raise MobilediffError(f"corrupt {path}: a bundle or component row lacks {e}") from None
    return [DeviceCost(source=src, paths=tuple(sorted(g["paths"])), runtime=rt, precision=prec,
                       text_encoder_ms=statistics.median(g["text_encoder"]) if g["text_encoder"] else None,
                       unet_ms={b: statistics.median(v) for b, v in g["unet"].items()},
                       vae_decoder_ms=statistics.median(g["vae_decoder"]) if g["vae_decoder"] else None)
            for (src, rt, prec), g in groups.items()]


def read_device(path: Path) -> list[DeviceCost]:
    return device_costs(_read_json(path, "--device"), str(path))


def reestimate(rows: list[dict], costs: list[DeviceCost], device: str,
               aliases: dict[str, set[str]] | None = None) -> tuple[list[Candidate], tuple[str, ...]]:
    """Candidates with device latencies: every study row whose pipeline the device file covers, once per runtime and
    precision the file measured it on, latency composed from the file's component medians. ``aliases``: pipeline label
    -> other names of the same model (its folder), matched against the file's source labels and bundle paths.
    Returns the candidates and notes saying which rows were re-estimated and which were left out."""
    from mobilediff.bench.scaling import compose_latency

    aliases = aliases or {}
    out, covered, uncovered, no_batch = [], set(), set(), 0
    for r in rows:
        names = {r["pipeline"]} | set(aliases.get(r["pipeline"], set()))
        mine = [c for c in costs if names & ({c.source} | set(c.paths))]
        if not mine:
            uncovered.add(r["pipeline"])
            continue
        usable = [c for c in mine if r["unet_rows"] in c.unet_ms and c.text_encoder_ms and c.vae_decoder_ms]
        if not usable:
            no_batch += 1
            continue
        covered.add(r["pipeline"])
        for c in usable:
            unet = c.unet_ms[r["unet_rows"]]
            ms = compose_latency(c.text_encoder_ms, unet, c.vae_decoder_ms, r["steps"])
            quality = f"the study ({r.get('n', '?')} fixed prompts and seeds)"
            if c.precision != r["precision"]:
                quality += f", measured at {r['precision']}: {c.precision} quality not measured"
            out.append(Candidate(
                model=r["model"], pipeline=r["pipeline"], method=r["method"], sampler=r["sampler"], steps=r["steps"],
                guidance=float(r["guidance"]), runtime=c.runtime, precision=c.precision, latency_ms=ms,
                prompt_accuracy=float(r["prompt_accuracy"]), fd=r.get("fd"), n=r.get("n"), unet_rows=r["unet_rows"],
                latency_from=f"re-estimated from {device} ({c.source}, {c.runtime}, {c.precision}): "
                             f"{c.text_encoder_ms:.2f} + {r['steps']} x {unet:.2f} + {c.vae_decoder_ms:.2f} ms",
                quality_from=quality))
    notes = [f"{len({(c.pipeline, c.sampler, c.steps, c.guidance) for c in out})} of {len(rows)} study rows "
             f"re-estimated from {device} (models: {', '.join(sorted(covered)) or 'none'})"]
    if uncovered:
        notes.append(f"not in {device}, left out: {', '.join(sorted(uncovered))}")
    if no_batch:
        notes.append(f"{no_batch} row(s) left out: {device} did not time their UNet batch (a teacher bundle's UNet is "
                     f"timed at its CFG batch of 2; guidance <= 1 needs batch 1)")
    return out, tuple(notes)


# --------------------------------------------------------------------------------------------------- choosing
def _describe(c: Candidate) -> str:
    return (f"{c.pipeline} ({c.method}), {c.sampler} {c.steps} step{'s' * (c.steps != 1)}, guidance {c.guidance:g}, "
            f"{c.runtime} {c.precision}")


def recommend(candidates: list[Candidate], latency_ms: float | None = None, min_accuracy: float | None = None,
              runtime: str | None = None, precision: str | None = None, k: int = RUNNER_UPS,
              notes: tuple[str, ...] = (), source: str = "the table") -> Recommendation:
    """The best candidate under exactly one constraint: the highest prompt accuracy (then lower FD, then lower latency)
    with ``latency_ms`` or less; or the lowest latency (then higher accuracy, lower FD) with at least
    ``min_accuracy``; and the next ``k`` in the same order. ``runtime`` / ``precision`` keep only candidates on them.
    Raises MobilediffError: both or neither constraint, a number that is not finite or out of range, a runtime or
    precision no candidate has, or nothing meeting the constraint."""
    if (latency_ms is None) == (min_accuracy is None):
        raise MobilediffError("give exactly one of --latency-ms or --min-accuracy")
    if latency_ms is not None and not (_finite(latency_ms) and latency_ms > 0):
        raise MobilediffError(f"--latency-ms must be a finite number > 0, got {latency_ms}")
    if min_accuracy is not None and not (_finite(min_accuracy) and 0 <= min_accuracy <= 1):
        raise MobilediffError(f"--min-accuracy must be a number in [0, 1], got {min_accuracy}")
    if not candidates:
        raise MobilediffError(f"no configuration in {source} to choose from")
    for flag, value, attr in (("--runtime", runtime, "runtime"), ("--precision", precision, "precision")):
        if value is not None:
            have = sorted({getattr(c, attr) for c in candidates})
            if value not in have:
                raise MobilediffError(f"{flag} {value}: not in {source} (there: {', '.join(have)})")
            candidates = [c for c in candidates if getattr(c, attr) == value]
    scope = " ".join(x for x in (runtime, precision) if x)
    scope = f" on {scope}" if scope else ""

    def fd(c):
        return c.fd if c.fd is not None else math.inf

    if latency_ms is not None:
        ok = sorted((c for c in candidates if c.latency_ms <= latency_ms),
                    key=lambda c: (-c.prompt_accuracy, fd(c), c.latency_ms))
        constraint = f"latency <= {latency_ms:g} ms"
        if not ok:
            fastest = min(candidates, key=lambda c: (c.latency_ms, -c.prompt_accuracy))
            raise MobilediffError(f"nothing{scope} in {source} meets {constraint}: the fastest is {_describe(fastest)} "
                                  f"at {fastest.latency_ms:.1f} ms")
    else:
        ok = sorted((c for c in candidates if c.prompt_accuracy >= min_accuracy),
                    key=lambda c: (c.latency_ms, -c.prompt_accuracy, fd(c)))
        constraint = f"prompt accuracy >= {min_accuracy:g}"
        if not ok:
            best = max(candidates, key=lambda c: (c.prompt_accuracy, -c.latency_ms))
            raise MobilediffError(f"nothing{scope} in {source} meets {constraint}: the most accurate is "
                                  f"{_describe(best)} at {best.prompt_accuracy:.3f}")
    return Recommendation(best=ok[0], runner_ups=tuple(ok[1:1 + k]), constraint=constraint + scope,
                          considered=len(ok), notes=tuple(notes))


def format_recommendation(rec: Recommendation) -> str:
    """The recommendation as the command prints it: the best configuration, its expected quality and latency and
    where they come from, the runner-ups, and the notes."""
    b = rec.best
    fd = "" if b.fd is None else f", FD {b.fd:.1f}"
    lines = [f"best for {rec.constraint} ({rec.considered} configuration{'s' * (rec.considered != 1)} meet it):",
             f"  {_describe(b)}",
             f"  expected prompt accuracy {b.prompt_accuracy:.3f}{fd}; latency {b.latency_ms:.1f} ms per image",
             f"  model size: {b.model}",
             f"  quality from {b.quality_from}",
             f"  latency from {b.latency_from}"]
    if rec.runner_ups:
        lines.append("runner-ups:")
        for i, c in enumerate(rec.runner_ups, 2):
            cfd = "" if c.fd is None else f", FD {c.fd:.1f}"
            lines.append(f"  {i}. {_describe(c)}: prompt accuracy {c.prompt_accuracy:.3f}{cfd}, {c.latency_ms:.1f} ms")
    lines += [f"note: {n}" for n in rec.notes]
    return "\n".join(lines)


def candidates_for(table: Path, device: str = "host") -> tuple[list[Candidate], tuple[str, ...], str]:
    """Read the study (and a run_device file unless ``device`` is "host"): the candidates, notes and a name of their
    source for messages. Names of models in the study are matched to the device file's by label and by folder."""
    from mobilediff.loading import resolve_model

    rows = read_study(table)
    if device == "host":
        return study_candidates(rows, str(table)), (), str(table)
    costs = read_device(Path(device))
    aliases = {}
    for r in rows:
        p = Path(resolve_model(r["pipeline"]))
        aliases[r["pipeline"]] = {str(p), str(p.resolve())} if p.exists() else set()
    cands, notes = reestimate(rows, costs, device, aliases)
    return cands, notes, f"{table} re-estimated with {device}"

