"""The best model, sampler, steps, runtime, precision and decoder for a latency budget or a quality floor, from the
store of measured configurations (:mod:`mobilediff.configurations`, ``benchmarks/results/configurations.jsonl``).
Pure functions over its rows; ``mobilediff recommend`` is the command over them.

Candidates are the rows with both a latency and a prompt accuracy: the run_device rows (bundles and PyTorch models
timed end to end, quality measured on the bundle itself), the quantization benchmark's, and the scaling study's
(latency composed from component medians, quality measured on the PyTorch pipeline). Quality sweeps without a latency
(distillation, baseline quality) are not candidates by themselves; with ``--device FILE`` they become candidates
where the file timed their model's components (:func:`mobilediff.configurations.compose_from_device`).

Where the latencies come from (``--device``):

- nothing (default): every row of the store, whatever machine measured it (a note names the machines when there are
  several);
- a machine's id, kind ("host", "android", "apple") or part of its description: the rows measured on it;
- a run_device result file: its own rows (measured, quality on the bundle), plus every configuration with PyTorch
  quality in the store whose model the file timed, composed from its component medians; a measured row wins over a
  composed one of the same configuration.

Every answer says whether its latency was measured end to end or composed, and whether its quality was measured on
that exact configuration or borrowed, and gives the ``mobilediff export`` command that makes its bundle.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from mobilediff.configurations import (DEFAULT_STORE, Configuration, check_study_rows,  # noqa: F401 (re-exported)
                                       compose_from_device, device_costs, fill_from, from_run_device, from_scaling,
                                       plan_key, read_store)
from mobilediff.errors import MobilediffError

RUNNER_UPS = 3
Candidate = Configuration  # a configuration that can be recommended: one with a latency and a prompt accuracy


@dataclass(frozen=True)
class Recommendation:
    best: Configuration
    runner_ups: tuple[Configuration, ...]
    constraint: str  # "latency <= 50 ms" | "prompt accuracy >= 0.9"
    considered: int  # candidates that met the constraint
    notes: tuple[str, ...] = ()  # what the reader must know: rows left out, machines, composed rows


# ------------------------------------------------------------------------------------------------------ reading
def read_json(path: Path, what: str):
    """The JSON file at ``path`` (``what``: the flag that named it); one MobilediffError line when it is missing, a
    folder or not JSON."""
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


def read_table(path: Path) -> list[Configuration]:
    """The rows of ``--table``: a store (``.jsonl``) or a scaling study's ``scaling.json`` (imported with the
    ``scaling_meta.json`` beside it, when there is one). Raises MobilediffError naming the file and the problem."""
    path = Path(path)
    if path.suffix == ".jsonl":
        if path.exists() and not path.is_file():
            raise MobilediffError(f"--table {path}: is a folder, not a configurations file")
        if not path.exists():
            raise MobilediffError(f"--table {path}: not found")
        return read_store(path)
    rows = read_json(path, "--table")
    meta_file = path.with_name(path.stem + "_meta.json")
    meta = None
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = None  # the rows alone still answer; the machine is then unknown
    return from_scaling(rows, meta, str(path))


def is_candidate(c: Configuration) -> bool:
    return c.latency_ms is not None and c.prompt_accuracy is not None


def candidates_for(table: Path, device: str | None = None) -> tuple[list[Configuration], tuple[str, ...], str]:
    """The candidates for ``--table`` (a store or a scaling.json) and ``--device`` (None | a machine | a run_device
    file), the notes that go with them and a name of their source for messages."""
    rows = read_table(table)
    notes = []
    if device is None or device == "":
        cands = [r for r in rows if is_candidate(r)]
        source = str(table)
    elif _looks_like_file(device):
        result = read_json(Path(device), "--device")
        composed, notes = compose_from_device(result, device, rows)  # first: it refuses a file of another kind
        device_rows = fill_from(from_run_device(result, device), rows)
        measured = [r for r in device_rows if is_candidate(r)]
        have = {plan_key(r) for r in measured}
        composed = [r for r in composed if plan_key(r) not in have]
        cands = measured + composed
        notes = [f"{len(measured)} configuration(s) measured end to end in {device}; {len(composed)} more composed "
                 f"from its component medians with quality from {table}"] + notes
        source = f"{device} (with {table})"
    else:
        cands = [r for r in rows if is_candidate(r) and _on_machine(r, device)]
        if not any(_on_machine(r, device) for r in rows):
            machines = sorted({(r.machine_id, r.machine) for r in rows})
            raise MobilediffError(f"--device {device}: no such file, and no machine of {table} matches it (there: "
                                  + "; ".join(f"{i} = {m}" for i, m in machines) + ")")
        source = f"{table} on {device}"
    left = sum(1 for r in rows if not is_candidate(r))
    if left and (device is None or not _looks_like_file(device)):
        notes.append(f"{left} of {len(rows)} rows of {table} have no latency or no prompt accuracy (quality sweeps of "
                     f"the PyTorch models, runs scored on other prompts) and are not candidates; --device "
                     f"RUN_DEVICE.json composes latencies for them")
    machines = sorted({(r.machine_id, r.machine) for r in cands})
    if len(machines) > 1:
        notes.append(f"latencies from {len(machines)} machines (" + "; ".join(f"{i} = {m}" for i, m in machines)
                     + "): --device MACHINE keeps one")
    return cands, tuple(notes), source


def _looks_like_file(device: str) -> bool:
    return Path(device).exists() or device.endswith(".json") or "/" in device


def _on_machine(r: Configuration, name: str) -> bool:
    name = name.lower()
    return r.machine_id.lower() == name or r.machine_id.lower().startswith(name + "-") or name in r.machine.lower()


# --------------------------------------------------------------------------------------------------- choosing
def _describe(c: Configuration) -> str:
    decoder = f", {'tiny decoder ' + c.decoder_model if c.decoder_model else 'tiny decoder'}" \
        if c.decoder == "tiny" else ""
    fused = ", fused program" if c.fused else ""
    return (f"{c.model} ({c.method}), {c.sampler} {c.steps} step{'s' * (c.steps != 1)}, guidance {c.guidance:g}, "
            f"{c.runtime} {c.precision}{decoder}{fused}")


def recommend(candidates: list[Configuration], latency_ms: float | None = None, min_accuracy: float | None = None,
              runtime: str | None = None, precision: str | None = None, k: int = RUNNER_UPS,
              notes: tuple[str, ...] = (), source: str = "the table") -> Recommendation:
    """The best candidate under exactly one constraint: the highest prompt accuracy (then lower FD, then lower latency)
    with ``latency_ms`` or less; or the lowest latency (then higher accuracy, lower FD) with at least
    ``min_accuracy``; and the next ``k`` in the same order. Only candidates with a latency and a prompt accuracy
    count. ``runtime`` / ``precision`` keep only candidates on them. Raises MobilediffError: both or neither
    constraint, a number that is not finite or out of range, a runtime or precision no candidate has, or nothing
    meeting the constraint (naming the nearest option)."""
    if (latency_ms is None) == (min_accuracy is None):
        raise MobilediffError("give exactly one of --latency-ms or --min-accuracy")
    if latency_ms is not None and not (_finite(latency_ms) and latency_ms > 0):
        raise MobilediffError(f"--latency-ms must be a finite number > 0, got {latency_ms}")
    if min_accuracy is not None and not (_finite(min_accuracy) and 0 <= min_accuracy <= 1):
        raise MobilediffError(f"--min-accuracy must be a number in [0, 1], got {min_accuracy}")
    candidates = [c for c in candidates if is_candidate(c)]
    if not candidates:
        raise MobilediffError(f"no configuration in {source} has both a latency and a prompt accuracy to choose from")
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


# --------------------------------------------------------------------------------------------------- printing
def latency_origin(c: Configuration) -> str:
    """Where a row's latency comes from, in words: measured end to end, or composed (and from what)."""
    threads = "" if c.threads is None else f", {c.threads} thread{'s' * (c.threads != 1)}"
    where = f"on {c.machine}{threads} ({c.source['file']})"
    if c.latency_kind == "measured":
        return f"measured end to end {where}"
    p = c.latency_parts or {}
    if {"text_encoder_ms", "unet_step_ms", "vae_decoder_ms"} <= set(p):
        calls = int(p.get("text_encoder_calls", 1))
        te = f"{p['text_encoder_ms']:.2f}" + (f" x {calls}" if calls != 1 else "")
        return (f"composed from component medians, {te} + {c.steps} x {p['unet_step_ms']:.2f} + "
                f"{p['vae_decoder_ms']:.2f} ms, {where}")
    return f"composed from component medians {where}"


def quality_origin(c: Configuration) -> str:
    """Where a row's quality comes from, in words: measured on this exact configuration, or borrowed (from what)."""
    on = f"{c.n or '?'} fixed prompts and seeds, {c.quality_source or c.source['file']}"
    if c.quality_kind == "bundle":
        return f"measured on this exact bundle ({on})"
    if c.quality_kind == "bundle-unfused":
        return (f"borrowed from the same bundle's step-by-step program ({on}); the fused graph was checked against "
                f"PyTorch at export")
    if c.quality_kind == "pytorch" and c.runtime == "eager":
        return f"measured on this exact configuration, the PyTorch model ({on})"
    if c.quality_kind == "pytorch":
        return f"borrowed from the PyTorch model at {c.precision} ({on}); the bundle's graphs match it at export"
    return f"borrowed from the float PyTorch model ({on}): {c.precision} quality not measured"


def how_to_get(c: Configuration) -> str:
    """The command that makes the configuration's bundle, or, for a PyTorch row, the command that runs it."""
    if c.export:
        return f"export: {c.export}"
    if c.runtime == "eager":
        return (f"run: mobilediff generate --model {c.model} --sampler {c.sampler} --steps {c.steps} "
                f"--guidance {c.guidance:g} --prompt TEXT --out FILE.png (PyTorch; no bundle measured)")
    return "export: not recorded in the source file"


def _brief(c: Configuration) -> str:
    lat = "measured" if c.latency_kind == "measured" else "composed"
    q = {"bundle": "quality on the bundle", "bundle-unfused": "quality of its unfused program",
         "pytorch": "quality on PyTorch", "borrowed": "quality borrowed from float"}[c.quality_kind]
    return f"{lat}, {q}"


def format_recommendation(rec: Recommendation) -> str:
    """The recommendation as the command prints it: the best configuration, its expected quality and latency and
    where they come from, the command that makes it, the runner-ups, and the notes."""
    b = rec.best
    fd = "" if b.fd is None else f", FD {b.fd:.1f}"
    size = b.base_model or b.model
    if b.unet_params:
        size += f", UNet {b.unet_params:,} parameters"
    lines = [f"best for {rec.constraint} ({rec.considered} configuration{'s' * (rec.considered != 1)} meet it):",
             f"  {_describe(b)}",
             f"  expected prompt accuracy {b.prompt_accuracy:.3f}{fd}; latency {b.latency_ms:.1f} ms per image",
             f"  model size: {size}",
             f"  latency {latency_origin(b)}",
             f"  quality {quality_origin(b)}",
             f"  {how_to_get(b)}"]
    if rec.runner_ups:
        lines.append("runner-ups:")
        for i, c in enumerate(rec.runner_ups, 2):
            cfd = "" if c.fd is None else f", FD {c.fd:.1f}"
            lines.append(f"  {i}. {_describe(c)}: prompt accuracy {c.prompt_accuracy:.3f}{cfd}, {c.latency_ms:.1f} ms "
                         f"({_brief(c)})")
    lines += [f"note: {n}" for n in rec.notes]
    return "\n".join(lines)
