"""Peak memory of the demo apps' engines: per bundle, app and mode, ONE ``generate`` (one denoiser step, seed 0, a
fixed prompt, ONNX Runtime) in a fresh engine process, with what the engine reports (peak resident memory, runtime,
milliseconds), the weights it loaded, the bundle's variant (quantization recipe, attention budget, decoder tiling)
and its image against Python's (mobilediff.engine.BundleRunner, run the way ``benchmarks/memory.py`` runs its
default generate row, in a fresh process whose peak is recorded beside the engines'). ``benchmarks/app_memory.py``
runs :func:`main`; its module docstring holds the result schema.

The modes (:data:`MODES`): ``resident`` loads the three components before the generate and keeps them;
``low-memory`` loads each when its turn comes and releases it before the next, ONNX Runtime without its CPU arena
and memory pattern (the engines' ``--low-memory``; Python's ``generate --bundle --low-memory``, BundleRunner with
``resident=False`` and ``mobilediff.targets.LOW_MEMORY``). Every image is compared with Python's resident one.

What the peaks count (each engine's own report, the same in both modes; the apps' CLIs, android_demo/cli and
ios_demo/.../mobilediff-engine, say it in ``peak_memory_scope``):

=========  =====================  ==================================================================================
app        field                  scope
=========  =====================  ==================================================================================
android    ``peak_rss_bytes``     VmHWM of the JVM since it started: the JVM, every load and the generate
ios        ``peak_memory_bytes``  VmHWM of the engine since it started: the Swift runtime, every load and the
                                  generate (``peak_memory_method`` says how it was read)
python     (measured)             VmHWM of a spawned Python process since it started: interpreter, torch,
                                  transformers, onnxruntime, every load and the generate (``baseline_mib``: before
                                  the first load)
=========  =====================  ==================================================================================
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mobilediff.bench.app_parity import APPS, REPO, _last_line, _mib, engine_runtime
from mobilediff.bench.envelope import Parser, command_line, finite, fmt, json_safe, write_results
from mobilediff.bench.memory import COMPONENTS, MIB, PROMPT, _one_line, _record_path, file_bytes
from mobilediff.errors import MobilediffError

SCHEMA = "app_memory"
BACKEND = "onnx"
SEED = 0
STEPS = 1
PEAK_FIELDS = {"android": "peak_rss_bytes", "ios": "peak_memory_bytes"}  # what each engine's --json calls its peak
PEAK_SCOPES = {
    "android": "process (JVM start, loads, generate)",
    "ios": "process (engine start, loads, generate)",
    "python": "process (imports, loads, generate)",
}
# an engine's own peak_memory_scope (its --json) where it is not "process": what its peak then counts
REPORTED_SCOPES = {"generation": "generate (VmHWM reset as the generate starts)",
                   "last_reset": "since the last VmHWM reset"}
RESIDENT, LOW_MEMORY_MODE = "resident", "low-memory"
MODES = (RESIDENT, LOW_MEMORY_MODE)


# ------------------------------------------------------------------------------------------------ the bundle
def engine_files(manifest) -> dict:
    """The file entry each app's ONNX Runtime backend loads per component, as both apps choose it (android_demo
    Bundle.componentFile, ios_demo Bundle.file): the precision of the component's first ``onnx`` file, and its
    ORT-format form (target ``ort``) of that precision where the manifest lists one, else that ``onnx`` file."""
    out = {}
    for c in COMPONENTS:
        comp = manifest.component(c)
        onnx = comp.file("onnx")
        ort = next((f for f in comp.files if f.target == "ort" and f.precision == onnx.precision
                    and f.quantization == onnx.quantization), None)
        ort = ort or next((f for f in comp.files if f.target == "ort" and f.precision == onnx.precision), None)
        out[c] = ort or onnx
    return out


def weight_bytes(manifest, entries: dict) -> int:
    """Bytes on disk of the given file entries (graph + external data, mobilediff.bench.memory.file_bytes)."""
    return sum(file_bytes(manifest, c, e.target, e.tag)[0] for c, e in entries.items())


def variant_facts(manifest) -> dict:
    """The variant a bundle is, from its manifest: the UNet file's quantization recipe and attention budget, the VAE
    decoder file's tiling (None: one whole graph)."""
    unet = manifest.component("unet").file("onnx")
    vae = manifest.component("vae_decoder").file("onnx")
    return {"unet_quantization": unet.quantization,
            "unet_attention_budget_mib": (unet.export.get("attention") or {}).get("budget_mib"),
            "vae_tiling": vae.export.get("tiling")}


def bundle_info(path: Path) -> dict:
    """What the result records of a bundle; MobilediffError (bad input) when ``path`` is not a bundle the apps' ONNX
    engines can run."""
    from mobilediff.bundle import read_manifest

    if not (Path(path) / "manifest.json").is_file():
        raise MobilediffError(f"{path} is not a bundle (no manifest.json)")
    m = read_manifest(Path(path))
    missing = [c for c in COMPONENTS if m.component(c).file("onnx") is None]
    if missing:
        raise MobilediffError(f"{path}: the bundle has no onnx file for {', '.join(missing)} (the apps' engines run "
                              f"ONNX bundles here)")
    files = engine_files(m)
    plan = m.plan
    return {"bundle": _record_path(path), "name": Path(path).resolve().name,
            "geometry": {"height": m.geometry.height, "width": m.geometry.width},
            "plan": {"sampler": plan.sampler, "steps": plan.steps, "guidance": plan.guidance,
                     "unet_batch": m.component("unet").dims.get("batch")},
            **variant_facts(m),
            "onnx_weight_bytes": weight_bytes(m, {c: m.component(c).file("onnx") for c in COMPONENTS}),
            "app_files": {c: {"target": e.target, "tag": e.tag, "path": e.path} for c, e in files.items()},
            "app_weight_bytes": weight_bytes(m, files)}


# --------------------------------------------------------------------------------------------------- the runs
def run_engine(cmd: list[str], timeout_s: float) -> tuple[int | None, str, float]:
    """``cmd`` in its own process group: (exit status, None when it ran past ``timeout_s`` and its group was killed;
    its stderr; wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout_s)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, err = proc.communicate()
        code = None
    return code, err or "", time.perf_counter() - t0


def engine_command(engine: Path, bundle: Path, png: Path, rec: Path, mode: str = RESIDENT) -> list[str]:
    """One generate, no warm-up: the engine's load(s) and a single image are all its process does; ``mode``
    low-memory adds the engine's ``--low-memory``."""
    return [str(engine), "generate", "--bundle", str(Path(bundle).resolve()), "--backend", BACKEND, "--prompt", PROMPT,
            "--seed", str(SEED), "--steps", str(STEPS), "--warmup", "0", "--repeats", "1", "--out", str(png),
            "--json", str(rec)] + (["--low-memory"] if mode == LOW_MEMORY_MODE else [])


def engine_row(app: str, info: dict, code: int | None, stderr: str, wall_s: float, result: dict | None,
               timeout_s: float, manifest=None, mode: str = RESIDENT) -> dict:
    """A row from one engine run in ``mode``: its exit status, stderr and ``--json`` record (None: none written). A
    failed run is a row with status "failed" and the reason in one line; a record whose ``low_memory`` contradicts
    ``mode`` (an engine without the mode) is a failed row too."""
    row = {**_row_base(info), "app": app, "mode": mode, "status": "ok", "reason": None, "exit_status": code,
           "wall_seconds": round(wall_s, 1), "peak_field": PEAK_FIELDS.get(app), "peak_scope": PEAK_SCOPES.get(app),
           "weight_bytes": info["app_weight_bytes"], "graph_forms": {c: f["target"] for c, f in info["app_files"].items()}}
    if code is None:
        return {**row, "status": "failed", "reason": f"timed out after {timeout_s:g} s (process group killed)",
                "stderr_tail": _one_line(stderr[-2000:]) if stderr.strip() else None}
    if code != 0 or result is None:
        why = _last_line(stderr) if stderr.strip() else "(no output on stderr)"
        return {**row, "status": "failed", "reason": f"exit status {code}: {why}" if code else f"no --json record: {why}",
                "stderr_tail": _one_line(stderr[-2000:])}
    if bool(result.get("low_memory", False)) != (mode == LOW_MEMORY_MODE):
        return {**row, "status": "failed",
                "reason": f"the engine's record says low_memory {result.get('low_memory')!r} for mode {mode}"}
    peak = result.get(PEAK_FIELDS.get(app, ""), result.get("peak_memory_bytes", result.get("peak_rss_bytes")))
    scope = result.get("peak_memory_scope")
    if scope is not None:
        row["engine_peak_scope"] = scope
        if scope != "process":
            row["peak_scope"] = REPORTED_SCOPES.get(scope, str(scope))
    files = result.get("files")
    if isinstance(files, dict) and manifest is not None:  # the engine says which files it ran (ios)
        by_path = {f.path: f for c in COMPONENTS for f in manifest.component(c).files}
        entries = {c: by_path.get(str(v.get("path"))) for c, v in files.items() if isinstance(v, dict)}
        if set(entries) == set(COMPONENTS) and all(entries.values()):
            row["weight_bytes"] = weight_bytes(manifest, entries)
            row["graph_forms"] = {c: e.target for c, e in entries.items()}
    row.update(runtime=engine_runtime(result, BACKEND), peak_bytes=peak, peak_mib=_mib(peak),
               peak_method=result.get("peak_memory_method"), load_ms=_load_ms(result.get("load_ms")),
               generate_ms=_round(result.get("ms_total")),
               component_ms={k: _round(v) for k, v in (result.get("ms") or {}).items()},
               plan={"sampler": result.get("sampler"), "steps": result.get("steps"), "guidance": result.get("guidance")})
    if peak is None:
        row["reason"] = "the engine reported no peak memory"
    return row


def _round(x, nd: int = 1):
    return None if x is None else round(float(x), nd)


def _load_ms(load) -> float | None:
    """The engine's load time: a number (ios) or per component (android)."""
    if isinstance(load, dict):
        return _round(sum(float(v) for v in load.values()))
    return _round(load)


def _row_base(info: dict) -> dict:
    return {"bundle": info["bundle"], "name": info["name"], "px": info["geometry"]["height"],
            "width": info["geometry"]["width"], "backend": BACKEND,
            "variant": {k: info[k] for k in ("unet_quantization", "unet_attention_budget_mib", "vae_tiling")}}


def python_job(bundle: Path, mode: str, image_out: Path) -> dict:
    """mobilediff.bench.memory.cell_generate's job for Python's generate in ``mode``: resident, or (low-memory)
    BundleRunner(resident=False) with mobilediff.targets.LOW_MEMORY's ONNX Runtime settings; the image saved to
    ``image_out`` (.npy)."""
    from mobilediff.targets import LOW_MEMORY

    low = mode == LOW_MEMORY_MODE
    return {"bundle": str(Path(bundle).resolve()), "runtime": BACKEND, "tag": None, "threads": os.cpu_count() or 1,
            "settings": dict(LOW_MEMORY[BACKEND]) if low else {}, "resident": not low, "ort_format": False,
            "seed": SEED, "runs": 0, "image_out": str(image_out)}


def python_row(info: dict, got: dict | None, mem: dict | None, err: str | None, wall_s: float, runtime: str | None,
               mode: str = RESIDENT) -> dict:
    """A Python row: mobilediff.engine's generate in a fresh process (mobilediff.bench.memory.cell_generate) in
    ``mode``; the resident one is the reference. ``load_ms``: the load before the generate (resident; null in
    low-memory mode, whose loads are inside ``generate_ms``)."""
    row = {**_row_base(info), "app": "python", "mode": mode, "status": "ok", "reason": None, "exit_status": None,
           "wall_seconds": round(wall_s, 1), "peak_field": "VmHWM", "peak_scope": PEAK_SCOPES["python"],
           "weight_bytes": info["onnx_weight_bytes"], "graph_forms": {c: "onnx" for c in COMPONENTS},
           "runtime": runtime}
    if got is None:
        return {**row, "status": "failed", "reason": err}
    return {**row, "peak_mib": round(mem["peak_mib"], 1), "peak_bytes": int(mem["peak_mib"] * MIB),
            "baseline_mib": round(mem["baseline_mib"], 1), "peak_method": mem["source"],
            "generate_ms": _round(next((m["seconds"] * 1000 for m in got["marks"] if m["stage"].startswith("generated")),
                                       None)),
            "load_ms": _round(next((m["seconds"] * 1000 for m in got["marks"] if m["stage"] == "loaded"), None)),
            "image_finite": got.get("image_finite")}


def compare_images(row: dict, engine_raw: Path | None, shape, python_npy: Path | None) -> None:
    """``psnr_vs_python_db`` (mobilediff.metrics.psnr on [-1, 1] images; None with ``identical_to_python`` when the
    images are equal) of an engine's raw image ((H, W, 3) float32 LE) against Python's ((1, 3, H, W) .npy)."""
    import numpy as np

    if python_npy is None or not python_npy.is_file():
        row["psnr_note"] = "no Python image to compare with"
        return
    if engine_raw is None or not shape:
        row["psnr_note"] = "the engine's record names no raw image (image_raw, image_raw_shape)"
        return
    try:
        got = np.fromfile(engine_raw, dtype="<f4").reshape(tuple(shape))
        _compare(row, np.ascontiguousarray(np.moveaxis(got, -1, 0))[None], np.load(python_npy))
    except (OSError, ValueError, TypeError, MobilediffError) as e:
        row["psnr_vs_python_db"], row["psnr_note"] = None, _one_line(e)


def compare_python_images(row: dict, npy: Path | None, python_npy: Path | None) -> None:
    """:func:`compare_images` for a Python image ((1, 3, H, W) .npy: the low-memory generate's) against Python's
    resident one."""
    import numpy as np

    if npy is None or not npy.is_file() or python_npy is None or not python_npy.is_file():
        row["psnr_note"] = "no Python image to compare with"
        return
    try:
        _compare(row, np.load(npy), np.load(python_npy))
    except (OSError, ValueError, TypeError, MobilediffError) as e:
        row["psnr_vs_python_db"], row["psnr_note"] = None, _one_line(e)


def _compare(row: dict, got, ref) -> None:
    """PSNR, identity and largest difference of two (1, 3, H, W) images (numpy), clamped to [-1, 1]."""
    import torch

    from mobilediff.metrics import psnr

    got = torch.from_numpy(got).float().clamp(-1, 1)
    ref = torch.from_numpy(ref).float().clamp(-1, 1)
    if got.shape != ref.shape:
        raise ValueError(f"image shape {tuple(got.shape)} differs from Python's {tuple(ref.shape)}")
    db = float(psnr(got, ref).min())
    row["psnr_vs_python_db"] = round(db, 2) if math.isfinite(db) else None
    row["identical_to_python"] = not math.isfinite(db)
    row["max_abs_vs_python"] = float((got - ref).abs().max())


# ---------------------------------------------------------------------------------------------- the driver
def apps_here(wanted: list[str] | None) -> list[str]:
    """The apps to run: ``wanted`` (each must have its engine.sh here), else every app with one."""
    if wanted:
        for app in wanted:
            if not (REPO / APPS[app][0] / "scripts" / "engine.sh").is_file():
                raise MobilediffError(f"--app {app}: {APPS[app][0]}/scripts/engine.sh does not exist in this checkout")
        return list(dict.fromkeys(wanted))
    apps = [a for a in sorted(APPS) if (REPO / APPS[a][0] / "scripts" / "engine.sh").is_file()]
    if not apps:
        raise MobilediffError("no app engine in this checkout (android_demo/scripts/engine.sh, ios_demo/scripts/engine.sh)")
    return apps


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] app_memory: {msg}", file=sys.stderr, flush=True)


def prepare(app: str, timeout_s: float) -> str | None:
    """The engine's toolchain and build brought up to date, untimed (``engine.sh --help``); the reason in one line
    when that fails, else None."""
    code, err, _ = run_engine([str(REPO / APPS[app][0] / "scripts" / "engine.sh"), "--help"], timeout_s)
    if code == 0:
        return None
    return f"engine.sh --help: {'timed out' if code is None else f'exit status {code}'}: {_last_line(err)}"


def measure(bundles: list[Path], apps: list[str], out: Path, timeout_s: float, command: str = "",
            modes: tuple[str, ...] = MODES) -> dict:
    """Per bundle, Python's row and every app's row in each of ``modes`` (Python's resident row always: its image is
    the reference); the files written to ``out`` after every row. Bad input raises MobilediffError before
    anything runs or is written."""
    import functools

    from mobilediff.bench.envelope import envelope
    from mobilediff.bench.memory import cell_generate, run_cell
    from mobilediff.bundle import read_manifest

    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise MobilediffError(f"modes must be among {', '.join(MODES)}, got {', '.join(modes) or 'none'}")
    modes = tuple(m for m in MODES if m in modes)
    infos = [bundle_info(b) for b in bundles]  # every bundle checked before any work
    started = time.time()
    result = {**envelope(SCHEMA, command, started),
              "settings": {"bundles": [i["bundle"] for i in infos], "apps": apps, "modes": list(modes),
                           "backend": BACKEND, "prompt": PROMPT, "seed": SEED, "steps": STEPS, "timeout_s": timeout_s,
                           "python_threads": os.cpu_count() or 1},
              "peak_scopes": PEAK_SCOPES, "bundles": infos, "rows": [], "complete": False}
    result["machine"]["load_average_at_start"] = result["machine"].get("load_average")
    ort_version = result["versions"].get("onnxruntime")
    save = functools.partial(write, out)
    ready = {app: prepare(app, timeout_s) for app in apps}

    def add(row: dict) -> None:
        _say(_summary(row))
        result["rows"].append(row)
        save(result)

    with tempfile.TemporaryDirectory(prefix="app_memory.") as tmp:
        work = Path(tmp)
        try:
            for n, (b, info) in enumerate(zip(bundles, infos)):
                manifest = read_manifest(Path(b))
                ref = None  # Python's resident image: what every other image is compared with
                for mode in (RESIDENT, *(m for m in modes if m != RESIDENT)):
                    _say(f"{info['name']}: python, {mode}")
                    npy = work / f"{n}_python_{mode}.npy"
                    t0 = time.perf_counter()
                    got, mem, err = run_cell(cell_generate, python_job(Path(b), mode, npy), work, timeout_s)
                    row = python_row(info, got, mem, err, time.perf_counter() - t0,
                                     f"onnxruntime {ort_version}" if ort_version else None, mode)
                    if mode == RESIDENT:
                        ref = npy if got is not None else None
                    elif got is not None:
                        compare_python_images(row, npy, ref)
                    add(row)
                for app in apps:
                    for mode in modes:
                        _say(f"{info['name']}: {app}, {mode}")
                        if ready[app] is not None:
                            add({**_row_base(info), "app": app, "mode": mode, "status": "failed", "reason": ready[app],
                                 "weight_bytes": info["app_weight_bytes"]})
                            continue
                        png, rec = work / f"{n}_{app}_{mode}.png", work / f"{n}_{app}_{mode}.json"
                        engine = REPO / APPS[app][0] / "scripts" / "engine.sh"
                        code, stderr, wall = run_engine(engine_command(engine, Path(b), png, rec, mode), timeout_s)
                        record = _read_record(rec) if code == 0 else None
                        row = engine_row(app, info, code, stderr, wall, record, timeout_s, manifest, mode)
                        if row["status"] == "ok":
                            raw = record.get("image_raw")
                            compare_images(row, Path(raw) if raw else None, record.get("image_raw_shape"), ref)
                        add(row)
            result["complete"] = True
        finally:
            result["wall_seconds"] = round(time.time() - started, 1)
            save(result)
    return result


def _read_record(path: Path) -> dict | None:
    """An engine's --json record; None where it wrote none or not a JSON object."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _summary(row: dict) -> str:
    if row["status"] != "ok":
        return f"  failed: {row['reason']}"
    psnr = "same image" if row.get("identical_to_python") else f"PSNR {fmt(row.get('psnr_vs_python_db'), '.1f', '-')} dB"
    reference = row["app"] == "python" and row.get("mode", RESIDENT) == RESIDENT
    return (f"  peak {fmt(row.get('peak_mib'), '.0f', '-')} MiB, {row['wall_seconds']:.0f} s"
            + ("" if reference else f", {psnr} vs Python's resident image"))


# ---------------------------------------------------------------------------------------------- the files
def _f(x, spec: str = ".0f") -> str:
    return fmt(x, spec, none="-")


def _variant(row: dict) -> str:
    v = row.get("variant") or {}
    parts = [v.get("unet_quantization") or "fp32"]
    if v.get("unet_attention_budget_mib") is not None:
        parts.append(f"attn {v['unet_attention_budget_mib']:g} MiB")
    tiling = v.get("vae_tiling")
    if tiling:
        tile = tiling.get("tile") if isinstance(tiling, dict) else None
        tiles = tiling.get("tiles") if isinstance(tiling, dict) else None
        parts.append("VAE tiles" + (f" of {tile}" if tile else "") + (f" ({tiles[0]}x{tiles[1]})" if tiles else ""))
    return ", ".join(parts)


def _psnr_cell(row: dict) -> str:
    if row["app"] == "python" and row.get("mode", RESIDENT) == RESIDENT:
        return "(reference)"
    if row.get("identical_to_python"):
        return "same"
    return _f(row.get("psnr_vs_python_db"), ".1f")


def markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    load = m.get("load_average_at_start") or ["?"]
    made = (f"Generated by `{result['command']}` on {m['cpu']} ({m['cores']} cores, {m.get('memory_gib', '?')} GiB), "
            f"load average {load[0]} at the start (1 min), {result['created']}"
            f"{'' if result.get('complete') else ' (incomplete)'}.")
    lines = [
        "# Peak memory of the demo apps' engines", "", made, "",
        f"Each row is one fresh process that loads the bundle and generates **one** image with {s['steps']} denoiser "
        f"step (the plan's batch: the CFG pair for a guided teacher), seed {s['seed']}, prompt \"{s['prompt']}\", "
        f"on ONNX Runtime: each app's engine through its `scripts/engine.sh generate` (no warm-up), and Python's "
        f"mobilediff.engine (`python`; its resident image is the reference, as benchmarks/memory.py measures its "
        f"default generate). Mode: `resident` loads the three components first and keeps them; `low-memory` loads "
        f"each when its turn comes and releases it before the next, ONNX Runtime without its CPU arena and memory "
        f"pattern (the engines' `--low-memory`, Python's `generate --bundle --low-memory`). "
        f"Peak: what the process reports, VmHWM; its scope: "
        + "; ".join(f"{app}: {scope}" for app, scope in result["peak_scopes"].items())
        + ". Weights: the files the process loads (graph + external data; the apps load a component's ORT-format "
          "file where the bundle lists one). Seconds: the process's wall time (engines: engine.sh's toolchain and "
          "build checks and the runtime's start included). PSNR: the image against Python's resident one ([-1, 1], "
          "mobilediff.metrics.psnr; 'same' = identical).", ""]
    lines += _saving_table(result["rows"])
    lines += ["| bundle | px | variant | app | mode | runtime | weights MiB | peak MiB | seconds | PSNR vs Python dB "
              "| status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        px = str(r["px"]) if r.get("width") in (None, r["px"]) else f"{r['px']}x{r['width']}"
        status = "ok" if r["status"] == "ok" and not r.get("reason") else f"{r['status']}: {r.get('reason')}"
        lines.append(f"| {r['name']} | {px} | {_variant(r)} | {r['app']} | {r.get('mode', RESIDENT)} "
                     f"| {r.get('runtime') or '-'} "
                     f"| {_f(r['weight_bytes'] / MIB if r.get('weight_bytes') is not None else None)} "
                     f"| {_f(r.get('peak_mib'))} | {_f(r.get('wall_seconds'), '.1f')} | {_psnr_cell(r)} | {status} |")
    lines += ["", "Bundles:", ""]
    lines += [f"- {b['name']}: `{b['bundle']}`, {b['geometry']['height']}x{b['geometry']['width']}, plan "
              f"{b['plan']['sampler']}-{b['plan']['steps']} guidance {b['plan']['guidance']:g} (UNet batch "
              f"{b['plan']['unet_batch']}); app files: "
              + ", ".join(f"{c} {f['target']}/{f['tag']}" for c, f in b["app_files"].items())
              for b in result["bundles"]]
    return "\n".join(lines) + "\n"


def _saving_table(rows: list[dict]) -> list[str]:
    """Markdown lines: per (bundle, app) measured in both modes, the two peaks and what the low-memory mode saves
    (nothing where no pair of ok rows with peaks exists)."""
    peaks: dict = {}
    for r in rows:
        if r["status"] == "ok" and r.get("peak_mib") is not None:
            peaks.setdefault((r["name"], r["app"]), {})[r.get("mode", RESIDENT)] = r
    pairs = [(k, v) for k, v in peaks.items() if set(MODES) <= set(v)]
    if not pairs:
        return []
    lines = ["Resident against low-memory (peak MiB; PSNR of each image against Python's resident one, dB):", "",
             "| bundle | app | resident | low-memory | saved | saved % | PSNR resident | PSNR low-memory |",
             "|---|---|---|---|---|---|---|---|"]
    for (name, app), v in pairs:
        res, low = v[RESIDENT]["peak_mib"], v[LOW_MEMORY_MODE]["peak_mib"]
        lines.append(f"| {name} | {app} | {_f(res)} | {_f(low)} | {_f(res - low)} | {_f(100 * (res - low) / res)} "
                     f"| {_psnr_cell(v[RESIDENT])} | {_psnr_cell(v[LOW_MEMORY_MODE])} |")
    return lines + [""]


def plot(result: dict):
    """Peak MiB per app and mode, one panel per bundle (None: no row with a peak)."""
    from mobilediff.bench.envelope import pyplot, savefig

    rows = [r for r in result["rows"] if r["status"] == "ok" and r.get("peak_mib") is not None]
    names = list(dict.fromkeys(r["name"] for r in rows))
    if not names:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    colors = {RESIDENT: "tab:blue", LOW_MEMORY_MODE: "tab:green"}
    for ax, name in zip(axes[0], names):
        apps = list(dict.fromkeys(r["app"] for r in rows if r["name"] == name))
        for j, mode in enumerate(MODES):
            peaks = [next((r["peak_mib"] for r in rows if (r["name"], r["app"], r.get("mode", RESIDENT)) == (name, a, mode)),
                          0) for a in apps]
            xs = [i + (j - 0.5) * 0.38 for i in range(len(apps))]
            ax.bar(xs, peaks, width=0.38, color=colors[mode], label=mode)
            for x, p in zip(xs, peaks):
                if p:
                    ax.annotate(f"{p:.0f}", (x, p), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(apps)), apps)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("peak MiB (VmHWM)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Peak memory of one generate: resident against low-memory", fontsize=10)
    fig.tight_layout()
    return savefig(fig)


def write(out: Path, result: dict) -> None:
    write_results(out, {"app_memory.md": markdown(result), "app_memory.png": plot(result),
                        "app_memory.json": json_safe(result)})


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    """The command line of ``benchmarks/app_memory.py``."""
    ap = Parser(doc)
    ap.add_argument("--bundle", nargs="+", type=Path, required=True, help="ONNX bundles to generate from")
    ap.add_argument("--app", action="append", choices=sorted(APPS),
                    help="only this app (repeatable; default: every app whose scripts/engine.sh exists)")
    ap.add_out(results, "folder for app_memory.json and app_memory.md")
    ap.add_argument("--mode", action="append", choices=MODES,
                    help="only this mode (repeatable; default: both). Python's resident row, the reference image, "
                         "always runs")
    ap.add_argument("--timeout", type=finite(0, open_min=True), default=1800.0,
                    help="seconds before one engine (or Python) run is stopped")
    a = ap.parse_args(argv)
    apps = apps_here(a.app)
    modes = tuple(dict.fromkeys(a.mode)) if a.mode else MODES
    return measure(list(a.bundle), apps, a.out, a.timeout, command_line("app_memory", argv), modes)
