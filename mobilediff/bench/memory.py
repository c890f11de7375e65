"""Peak memory of bundles as a benchmark: every component loaded and called once, and a whole generate, each in a
fresh process, per runtime, precision and runtime setting; the weights on disk, the runtime's own overhead and the
largest activation beside each peak. ``benchmarks/memory.py`` runs :func:`main`; its module docstring holds the
result schema.

What a row's numbers mean (all in MiB but ``weight_bytes``; read from ``/proc/self/status`` of the measuring process):

==================  ==================================================================================================
``baseline_mib``    peak RSS before the measured work: the interpreter, torch, transformers and the runtime imported
``peak_mib``        peak RSS (VmHWM) after it: what a phone's memory killer compares with its limit
``weight_mib``      the measured files' bytes on disk (graph + external data), in MiB
``overhead_mib``    ``peak - baseline - weights``: what the runtime holds beyond one copy of the weights (copies made
                    at load, packed weights, the activation arena, workspaces); negative where weights were never
                    all resident at once
``marks``           RSS (total, anonymous, file-backed) and peak RSS after each stage (load, call, ...): a weight
                    page mapped from the file counts as file-backed, a copy of it as anonymous
``largest_activation``  the largest intermediate tensor of the component's ONNX graph at the manifest's static
                    shapes (onnx shape inference): the least a runtime that materialises it must hold at once
==================  ==================================================================================================
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mobilediff.bench.envelope import Parser, command_line, count, finite, fmt
from mobilediff.errors import MobilediffError
from mobilediff.targets import LOW_MEMORY

SCHEMA = "memory"
COMPONENTS = ("text_encoder", "unet", "vae_decoder")
RUNTIMES = ("onnx", "executorch")
MIB = 1 << 20
GIB = 1 << 30
PROMPT = "a red circle at the top left on a white background"

# Runtime settings measured as separate rows: name -> {settings: the target loader's, resident: components kept
# loaded (False: mobilediff.engine loads each when its turn comes and releases it before the next), ort_format: the
# ORT-format files (ONNX Runtime's mobile format, where the bundle has them)}
_ORT_LEAN = LOW_MEMORY["onnx"]
_ORT_MAPPED = {"session.use_memory_mapped_ort_model": "1", "session.use_ort_model_bytes_for_initializers": "1"}


def _s(settings: dict | None = None, resident: bool = True, ort_format: bool = False) -> dict:
    return {"settings": settings or {}, "resident": resident, "ort_format": ort_format}


SETTINGS = {
    "onnx": {
        "default": _s(),
        "no-arena": _s({"enable_cpu_mem_arena": False}),
        "no-mem-pattern": _s({"enable_mem_pattern": False}),
        "initializers-unpooled": _s({"session.use_device_allocator_for_initializers": "1"}),
        "no-prepack": _s({"session.disable_prepacking": "1"}),
        "lean": _s(_ORT_LEAN),
        "opt-extended": _s({"graph_optimization_level": "ORT_ENABLE_EXTENDED"}),
        "ort-format": _s(ort_format=True),
        "ort-format-mapped": _s(_ORT_MAPPED, ort_format=True),
        "sequential": _s(resident=False),
        "lean+sequential": _s(_ORT_LEAN, resident=False),
    },
    "executorch": {
        "default": _s(),  # the program file handed over by path: the runtime maps it
        "buffer": _s({"load": "buffer"}),  # the file read into Python bytes first
        "sequential": _s(resident=False),
    },
}
SETTING_NOTES = {
    "default": "as mobilediff loads it today",
    "no-arena": "enable_cpu_mem_arena off: tensors malloc'd and freed, no arena that keeps its high-water mark",
    "no-mem-pattern": "enable_mem_pattern off: no pre-planned block for all activations of a run",
    "initializers-unpooled": "session.use_device_allocator_for_initializers: weights allocated outside the arena",
    "no-prepack": "session.disable_prepacking: no packed copy of GEMM/convolution weights (MLAS) at load",
    "lean": "no arena, no memory pattern, weights outside the arena",
    "opt-extended": "graph optimizations up to 'extended': no layout transformation (NCHWc) that rewrites the "
                    "convolution weights into new tensors at load",
    "sequential": "mobilediff.engine with resident=False: one component loaded at a time, released before the next",
    "lean+sequential": "lean, and one component at a time",
    "buffer": "program read into Python bytes and loaded from the buffer (the bytes stay alive with the program)",
    "ort-format": "the bundle's ORT-format files (ONNX Runtime's mobile format, optimized at export) loaded from their "
                  "path",
    "ort-format-mapped": "the ORT-format files memory-mapped, initializers used in place "
                         "(session.use_memory_mapped_ort_model, session.use_ort_model_bytes_for_initializers)",
}
ALL_SETTINGS = tuple(dict.fromkeys(s for rt in SETTINGS.values() for s in rt))
# Variants of an --arch pipeline: a precision (both runtimes) or a quantization recipe (the runtime that has it),
# optionally with export options after colons: "fp32:attn=0" (attention whole), "int8-weights:tile=40" (the VAE
# decoder in tiles of 40 latent pixels), "fp32:attn=32:tile=32:overlap=4"
VARIANTS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8-weights", "int4-weights", "int8", "int8-decoder")
VARIANT_OPTIONS = {"attn": ("attention_budget_mib", float), "tile": ("decoder_tile", int),
                   "overlap": ("decoder_overlap", int)}


def parse_variant(text: str) -> tuple[str, dict]:
    """``"int8-weights:tile=40"`` -> ("int8-weights", {"decoder_tile": 40}); MobilediffError naming the problem."""
    import math

    base, *opts = text.split(":")
    if base not in VARIANTS:
        raise MobilediffError(f"unknown variant {base!r} in {text!r}; choose from: {', '.join(VARIANTS)}")
    out = {}
    for o in opts:
        key, eq, value = o.partition("=")
        if key not in VARIANT_OPTIONS or not eq:
            raise MobilediffError(f"variant {text!r}: unknown option {o!r}; options: "
                                  f"{', '.join(k + '=N' for k in VARIANT_OPTIONS)}")
        name, kind = VARIANT_OPTIONS[key]
        try:
            v = kind(value)
        except ValueError:
            raise MobilediffError(f"variant {text!r}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(v) or v < 0 or (key == "tile" and v < 1):
            raise MobilediffError(f"variant {text!r}: {key} must be a finite number >= {1 if key == 'tile' else 0}")
        out[name] = v
    return base, out


@dataclass(frozen=True)
class MemoryConfig:
    out: Path  # folder for memory.json, memory.md and memory.png
    bundles: tuple[Path, ...] = ()  # bundles measured as they are
    archs: tuple[str, ...] = ()  # whole pipelines built around a real UNet architecture (real_architectures)
    resolutions: tuple[int, ...] = (512,)  # square image sizes of the --arch pipelines
    scale: str = "full"  # full widths, or tiny (every UNet channel width / 10) for a smoke run
    variants: tuple[str, ...] = ("fp32",)  # precisions and recipes of the --arch pipelines
    runtimes: tuple[str, ...] = RUNTIMES  # host runtimes measured
    settings: tuple[str, ...] = ALL_SETTINGS  # runtime settings measured on the whole generate (default always)
    components: bool = True  # also each component alone (default setting)
    only: tuple[str, ...] = COMPONENTS  # which components alone
    generate: bool = True  # the whole generate per setting
    runs: int = 3  # timed UNet steps after the generate, per resident row
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    work: Path | None = None  # where --arch pipelines and bundles are written (None: a temporary folder)
    keep: bool = False  # keep them
    cell_timeout: float = 3600.0  # seconds before one measurement is stopped

    def check(self) -> None:
        """Raise MobilediffError on bad settings, before any work."""
        from mobilediff.bench.real_architectures import SCALES, UNET_ARCHITECTURES as ARCHITECTURES
        from mobilediff.bench.stats import check_count

        check_count("--runs", self.runs, 0)
        check_count("--threads", self.threads, 1)
        if not self.bundles and not self.archs:
            raise MobilediffError("nothing to measure: pass --bundle B [B ...] and/or --arch A [A ...]")
        if not self.components and not self.generate:
            raise MobilediffError("nothing to measure: --no-components and --no-generate leave no row")
        for rt in self.runtimes:
            if rt not in RUNTIMES:
                raise MobilediffError(f"unknown runtime {rt!r}; choose from: {', '.join(RUNTIMES)}")
        for s in self.settings:
            if s not in ALL_SETTINGS:
                raise MobilediffError(f"unknown setting {s!r}; choose from: {', '.join(ALL_SETTINGS)}")
        for v in self.variants:
            parse_variant(v)
        if self.scale not in SCALES:
            raise MobilediffError(f"unknown scale {self.scale!r}; choose from: {', '.join(SCALES)}")
        for arch in self.archs:
            if arch not in ARCHITECTURES:
                raise MobilediffError(f"unknown architecture {arch!r}; choose from: {', '.join(ARCHITECTURES)}")
            multiple = ARCHITECTURES[arch].pixel_multiple()
            for res in self.resolutions:
                if res <= 0 or res % multiple:
                    raise MobilediffError(f"--resolution must be a positive multiple of {multiple} for {arch}, "
                                          f"got {res}")
        for b in self.bundles:
            if not (Path(b) / "manifest.json").is_file():
                raise MobilediffError(f"{b} is not a bundle (no manifest.json)")


# ------------------------------------------------------------------------------------ in the measuring process
def _status_mib() -> dict:
    """RSS now, split into anonymous and file-backed pages, and the peak so far, in MiB (/proc/self/status)."""
    want = {"VmRSS": "rss_mib", "RssAnon": "anon_mib", "RssFile": "file_mib", "VmHWM": "hwm_mib"}
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in want:
                    out[want[key]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def _mark(marks: list, stage: str, t0: float | None = None) -> None:
    marks.append({"stage": stage, **_status_mib(), **({"seconds": round(time.perf_counter() - t0, 3)} if t0 else {})})


def _write(result: str, obj: dict) -> None:
    from mobilediff.io import atomic_write_json

    atomic_write_json(Path(result), obj)


def _time_step(call, runs: int) -> list[float]:
    from mobilediff.bench.stats import time_callable

    return time_callable(call, 0, runs) if runs else []


def cell_component(job: dict, result: str) -> None:
    """Load one component file with the job's settings and call it once on the manifest's example inputs; then time
    ``runs`` more calls. ExecuTorch's load is split into the program (the file mapped or read) and the method (the
    delegate initialised: XNNPACK packs its weights), each with its own mark."""
    import torch

    from mobilediff.bench.bundles import component_inputs
    from mobilediff.bundle import component_file, read_manifest
    from mobilediff.targets import get_runtime

    m = read_manifest(Path(job["bundle"]))
    path, _ = component_file(m, Path(job["bundle"]), job["component"], job["runtime"], job["tag"])
    inputs = component_inputs(m, job["component"], job["seed"])
    marks: list = []
    _mark(marks, "start")
    t0 = time.perf_counter()
    if job["runtime"] == "executorch":
        from executorch.runtime import Runtime

        from mobilediff.quiet import quiet_stderr

        form = job["settings"].get("load", "file")
        with quiet_stderr():
            program = Runtime.get().load_program(str(path) if form == "file" else path.read_bytes())
            _mark(marks, "program loaded", t0)
            t1 = time.perf_counter()
            method = program.load_method("forward")
        _mark(marks, "method loaded (delegate initialised, weights packed)", t1)

        def call():
            return method.execute([a.contiguous() for a in inputs])
    else:
        part = get_runtime(job["runtime"]).load(path, m.component(job["component"]), job["threads"], job["component"],
                                                settings=job["settings"] or None)
        _mark(marks, "loaded", t0)

        def call():
            return part(*inputs)
    with torch.no_grad():
        t1 = time.perf_counter()
        call()
        _mark(marks, "first call", t1)
        steps = _time_step(call, job["runs"])
    _write(result, {"marks": marks, "samples_ms": steps})


def cell_generate(job: dict, result: str) -> None:
    """mobilediff.engine's generate at the bundle's default plan with one denoiser step (the plan's batch: the CFG
    pair for a guided teacher), loading as the job's setting says; then, components resident, ``runs`` UNet steps
    timed alone on the manifest's example inputs."""
    import torch

    from mobilediff.bench.bundles import component_inputs
    from mobilediff.engine import BundleRunner

    marks: list = []
    _mark(marks, "start")
    t0 = time.perf_counter()
    runner = BundleRunner(Path(job["bundle"]), job["runtime"], job["tag"], job["threads"],
                          settings=job["settings"] or None, resident=job["resident"], ort_format=job["ort_format"])
    _mark(marks, "loaded" if job["resident"] else "runner made (nothing loaded)", t0)
    t1 = time.perf_counter()
    image = runner.generate(PROMPT, job["seed"], steps=1)
    _mark(marks, "generated (1 step)", t1)
    steps = []
    if job["resident"] and job["runs"]:
        inputs = component_inputs(runner.manifest, "unet", job["seed"])
        unet = runner.parts["unet"]
        with torch.no_grad():
            steps = _time_step(lambda: unet(*inputs), job["runs"])
    if job.get("image_out"):
        import numpy as np

        np.save(job["image_out"], image.float().numpy())
    _write(result, {"marks": marks, "samples_ms": steps, "image_shape": list(image.shape),
                    "image_finite": bool(torch.isfinite(image).all())})


def cell_activations(job: dict, result: str) -> None:
    """The largest intermediate tensor of each component's ONNX graph in the bundle (see :func:`largest_activation`)."""
    from mobilediff.bundle import component_file, read_manifest

    m = read_manifest(Path(job["bundle"]))
    out = {}
    for comp in COMPONENTS:
        path, _ = component_file(m, Path(job["bundle"]), comp, "onnx", job["tag"])
        shapes = {s.name: list(s.static_shape) for s in m.component(comp).inputs}
        out[comp] = largest_activation(path, shapes)
    _write(result, out)


def largest_activation(path: Path, input_shapes: dict[str, list[int]]) -> dict | None:
    """The largest intermediate (or output) tensor of the ONNX graph at ``path`` with its inputs fixed at
    ``input_shapes`` ({name: shape}), by onnx shape inference (the weights are not read): {name, op, shape, dtype,
    bytes}; None when no tensor gets a fully known shape."""
    import numpy as np
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, n in zip(dims, input_shapes[inp.name]):
                d.Clear()
                d.dim_value = int(n)
    del model.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    producer = {o: n.op_type for n in inferred.graph.node for o in n.output}
    best = None
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape") or not t.elem_type:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if any(d is None for d in dims):
            continue
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        size = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if best is None or size > best["bytes"]:
            best = {"name": vi.name, "op": producer.get(vi.name), "shape": dims, "dtype": dtype.name, "bytes": size}
    return best


def cell_pipeline(job: dict, result: str) -> None:
    """A whole pipeline folder around an architecture's UNet (real_architectures.peer_pipeline_dir: the UNet of
    build_spec's seeded weights, SD-1.x's VAE and CLIP ViT-L/14's text encoder, random)."""
    from mobilediff.bench.real_architectures import _prepare, peer_pipeline_dir

    _prepare({**job, "max_memory_bytes": None})
    peer_pipeline_dir(job["arch"], job["scale"], job["seed"], Path(job["dir"]))
    _write(result, {"dir": job["dir"]})


def cell_export(job: dict, result: str) -> None:
    """Export one bundle of the pipeline: one target at one precision or recipe, at the job's resolution (ORT format
    left out), with the exporter's parity checks."""
    from mobilediff.bench.real_architectures import _prepare
    from mobilediff.exporter import ExportConfig, run_export
    from mobilediff.loading import load_pipeline

    _prepare({**job, "max_memory_bytes": None})
    variant, options = parse_variant(job["variant"])
    precision = variant if variant in ("fp32", "fp16") else "fp32"
    quantize = None if variant in ("fp32", "fp16") else variant
    cfg = ExportConfig.of(job["runtime"], Path(job["out"]), height=job["resolution"], width=job["resolution"],
                          precision=precision, quantize=quantize, source=f"memory:{job['arch']}",
                          model_dir=Path(job["dir"]), ort_format=False, calibration_prompts=4, calibration_rows=4,
                          **options)
    t0 = time.time()
    run_export(load_pipeline(job["dir"]), cfg)
    _write(result, {"seconds": round(time.time() - t0, 1)})


# ----------------------------------------------------------------------------------------------- the driver
def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _one_line(text, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _import_quietly(runtime: str | None, threads: int) -> None:
    """The measuring process's baseline: interpreter, torch, transformers and the runtime's libraries."""
    from mobilediff.bench.host import import_runtime

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    warnings.filterwarnings("ignore")
    if runtime is None:
        import torch

        torch.set_num_threads(threads)
    else:
        import_runtime(runtime, threads)


def run_cell(fn, job: dict, work: Path, timeout_s: float) -> tuple[dict | None, dict | None, str | None]:
    """``fn(job, result_file)`` in a fresh process whose baseline already holds the runtime's libraries; returns
    (its result, its memory: baseline and peak MiB, or None, the error in one line or None)."""
    from mobilediff.bench.stats import peak_rss_of_call

    fd, result = tempfile.mkstemp(prefix=".memory.", suffix=".json", dir=work)
    os.close(fd)
    try:
        mem = peak_rss_of_call(fn, job, result, timeout_s=timeout_s,
                               setup=functools.partial(_import_quietly, job.get("runtime"), job["threads"]))
        return json.loads(Path(result).read_text()), mem, None
    except MobilediffError as e:
        return None, None, _one_line(e)
    finally:
        Path(result).unlink(missing_ok=True)


def file_bytes(manifest, component: str, runtime: str, tag: str | None) -> tuple[int, str]:
    """Bytes on disk of ``component``'s file for ``runtime`` (graph + external data) and its tag."""
    entry = manifest.component(component).file(runtime, tag)
    return entry.size_bytes + sum(e.size_bytes for e in entry.external_data), entry.tag


def bundle_variants(manifest, runtimes) -> list[tuple[str, str, str]]:
    """(runtime, tag, label) of every complete set of files in the bundle: a precision or recipe tag that finds a file
    of all three components (a recipe leaves some components float: an int8-weights bundle's decoder is fp32, found
    by the tag "fp32" with the quantized UNet); ``label`` names the set by its quantization where it has one."""
    out = []
    for rt in runtimes:
        seen = set()
        tags = sorted({f.tag for c in COMPONENTS for f in manifest.component(c).files if f.target == rt})
        for tag in tags:
            files = [manifest.component(c).file(rt, tag) for c in COMPONENTS]
            if any(f is None for f in files) or tuple(f.path for f in files) in seen:
                continue
            seen.add(tuple(f.path for f in files))
            quantized = sorted({f.quantization for f in files if f.quantization})
            out.append((rt, tag, "+".join(quantized) if quantized else tag))
    return out

def _has_ort_format(manifest, tag: str) -> bool:
    """Whether every component has an ORT-format file of ``tag``."""
    return all(manifest.component(c).file("ort", tag) is not None for c in COMPONENTS)


def derive(row: dict, mem: dict | None, got: dict | None) -> None:
    """Fill a measured row's memory numbers (see the module docstring) and its step latency."""
    from mobilediff.bench.stats import summarize

    if mem is None:
        return
    row["baseline_mib"] = round(mem["baseline_mib"], 1)
    row["peak_mib"] = round(mem["peak_mib"], 1)
    row["delta_mib"] = round(mem["peak_mib"] - mem["baseline_mib"], 1)
    row["weight_mib"] = round(row["weight_bytes"] / MIB, 1)
    row["overhead_mib"] = round(row["delta_mib"] - row["weight_mib"], 1)
    row["source"] = mem["source"]
    row["marks"] = got["marks"]
    marks = {m["stage"]: m for m in got["marks"]}
    prog = marks.get("program loaded")
    meth = marks.get("method loaded (delegate initialised, weights packed)")
    if prog and meth and "rss_mib" in prog:
        # what the delegate's initialisation added and kept: XNNPACK's packed weights, less any mapped pages dropped
        row["packing_mib"] = round(meth["rss_mib"] - prog["rss_mib"], 1)
        row["packing_anon_mib"] = round(meth["anon_mib"] - prog["anon_mib"], 1)
    row["step"] = summarize(got["samples_ms"], min_runs=1) if got.get("samples_ms") else None


def measure(cfg: MemoryConfig, command: str = "") -> dict:
    """Run the benchmark and write its files to ``cfg.out``; return the result (schema: benchmarks/memory.py)."""
    from mobilediff.bench.envelope import envelope
    from mobilediff.bundle import read_manifest

    cfg.check()
    _IMAGES.clear()
    started = time.time()
    owns_work = cfg.work is None
    work = Path(tempfile.mkdtemp(prefix="memory.")) if owns_work else Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {**envelope(SCHEMA, command, started),
              "settings": {"bundles": [_record_path(b) for b in cfg.bundles], "archs": list(cfg.archs),
                           "resolutions": list(cfg.resolutions), "scale": cfg.scale, "variants": list(cfg.variants),
                           "runtimes": list(cfg.runtimes), "settings": list(cfg.settings),
                           "components": cfg.components, "only": list(cfg.only), "generate": cfg.generate,
                           "runs": cfg.runs, "threads": cfg.threads, "seed": cfg.seed,
                           "prompt": PROMPT, "steps": 1},
              "setting_definitions": {rt: {name: {**v, "note": SETTING_NOTES[name]} for name, v in d.items()}
                                      for rt, d in SETTINGS.items()},
              "rows": [], "failures": [], "complete": False}
    result["machine"]["load_average_at_start"] = result["machine"].get("load_average")
    try:
        for b in cfg.bundles:
            m = read_manifest(Path(b))
            pipeline = {"pipeline": Path(b).name, "bundle": _record_path(b), "resolution": m.geometry.height}
            measure_bundle(cfg, Path(b), pipeline, work, result)
        for res in cfg.resolutions:
            for arch in cfg.archs:
                measure_arch(cfg, arch, res, work, result)
        result["complete"] = True
        image_psnr(result)
    finally:
        result["wall_seconds"] = round(time.time() - started, 1)
        write(cfg.out, result)
        if owns_work and not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


# row index -> the .npy image its generate wrote (in the work folder; paths of this machine stay out of the record)
_IMAGES: dict[int, str] = {}


def _is_reference(row: dict, image: str | None) -> bool:
    return (row["what"] == "generate" and row["setting"] == "default" and row["precision"] == "fp32"
            and row.get("variant") in (None, "fp32", "fp32:attn=0") and row["status"] == "ok" and image is not None)


def image_psnr(result: dict) -> None:
    """Each generate row's image against its pipeline's fp32 reference (the first default-setting fp32 generate of
    the same pipeline and resolution, the ONNX one where there is one): ``psnr_vs_fp32_db`` and
    ``psnr_reference``."""
    import math

    import numpy as np
    import torch

    from mobilediff.metrics import psnr

    rows = result["rows"]
    refs = {}
    for i in sorted(range(len(rows)), key=lambda i: rows[i]["runtime"] != "onnx"):
        if _is_reference(rows[i], _IMAGES.get(i)):
            refs.setdefault((rows[i]["pipeline"], rows[i].get("resolution")), i)
    for i, r in enumerate(rows):
        j = refs.get((r["pipeline"], r.get("resolution")))
        if r["what"] == "generate" and r["status"] == "ok" and _IMAGES.get(i) and j is not None:
            ref = rows[j]
            try:
                a = torch.from_numpy(np.load(_IMAGES[i])).clamp(-1, 1)
                b = torch.from_numpy(np.load(_IMAGES[j])).clamp(-1, 1)
                db = float(psnr(a, b).min())
                r["psnr_vs_fp32_db"] = round(db, 2) if math.isfinite(db) else None  # None: the same image
                r["identical_to_reference"] = not math.isfinite(db)
                r["psnr_reference"] = f"{ref['runtime']} fp32 {ref.get('variant') or ''} default".replace("  ", " ")
            except (OSError, ValueError, MobilediffError) as e:
                r["psnr_vs_fp32_db"], r["psnr_reference"] = None, _one_line(e)


def _record_path(p) -> str:
    """A bundle's path as the result records it: relative to the repository (no path of this machine), as the
    command line is."""
    root = Path(__file__).resolve().parents[2]
    return os.path.relpath(Path(p).resolve(), root)


def measure_arch(cfg: MemoryConfig, arch: str, res: int, work: Path, result: dict) -> None:
    """Build the pipeline folder once, then per variant and runtime export a bundle, measure it and delete it."""
    from mobilediff.quantize import RECIPES

    label = f"{arch}{'' if cfg.scale == 'full' else '-' + cfg.scale}"
    folder = work / f"{label}_pipeline"
    job = {"arch": arch, "scale": cfg.scale, "seed": cfg.seed, "threads": cfg.threads, "dir": str(folder)}
    if not folder.is_dir():
        _say(f"{label}: writing the pipeline folder (seeded random weights)")
        got, _, err = run_cell(cell_pipeline, job, work, cfg.cell_timeout)
        if got is None:
            result["failures"].append({"pipeline": label, "resolution": res, "stage": "pipeline", "reason": err})
            write(cfg.out, result)
            return
    activations = {}  # per export options: the largest activations of that variant's ONNX graph
    for variant in cfg.variants:
        base, options = parse_variant(variant)
        key = json.dumps(options, sort_keys=True)
        for rt in cfg.runtimes:
            if base not in ("fp32", "fp16") and base not in RECIPES[rt]:
                continue
            out = work / f"{label}_{res}_{rt}_{variant.replace(':', '_').replace('=', '')}"
            info = {"pipeline": label, "resolution": res, "variant": variant}
            if not (out / "manifest.json").is_file():
                _say(f"{label} {res}px {rt} {variant}: export")
                got, mem, err = run_cell(cell_export, {**job, "runtime": rt, "variant": variant, "resolution": res,
                                                       "out": str(out)}, work, cfg.cell_timeout)
                if got is None:
                    _say(f"  export failed: {err}")
                    result["failures"].append({**info, "runtime": rt, "stage": "export", "reason": err})
                    write(cfg.out, result)
                    continue
                result.setdefault("exports", []).append({**info, "runtime": rt, "seconds": got["seconds"],
                                                         "peak_mib": round(mem["peak_mib"], 1)})
            try:
                found = measure_bundle(cfg, out, {**info, "bundle": None, "export_options": options}, work, result,
                                       activations.get(key))
                if found is not None:
                    activations[key] = found
            finally:
                if not cfg.keep:
                    shutil.rmtree(out, ignore_errors=True)
    if not cfg.keep:
        shutil.rmtree(folder, ignore_errors=True)


def measure_bundle(cfg: MemoryConfig, bundle: Path, info: dict, work: Path, result: dict,
                   activations: dict | None = None) -> dict | None:
    """Every row of one bundle: per (runtime, tag) it holds, each component alone (default setting) and the whole
    generate per setting. Returns the largest activations it found ({"found": per component, "from": which graph}: an
    ONNX graph of the bundle), which the rows of an ExecuTorch-only bundle of the same pipeline reuse
    (``activations``)."""
    from mobilediff.bundle import read_manifest

    m = read_manifest(bundle)
    variants = bundle_variants(m, cfg.runtimes)
    if not variants:
        result["failures"].append({**info, "stage": "bundle", "reason": f"no file for {', '.join(cfg.runtimes)}"})
        return activations
    base = {"bundle": str(bundle), "seed": cfg.seed, "threads": cfg.threads, "runs": cfg.runs}
    own = None
    for rt, tag, label in variants:
        if rt == "onnx" and own is None:
            got, _, err = run_cell(cell_activations, {**base, "tag": tag, "runtime": None}, work, cfg.cell_timeout)
            own = {"found": got, "from": f"this bundle's ONNX graph ({tag})"} if got else None
            if got is None:
                _say(f"  largest activations not found: {err}")
    if own is None and activations is not None:  # an ExecuTorch bundle of a pipeline whose ONNX bundle came first
        own_or_given = {**activations, "from": activations["from"].replace("this bundle's", "the pipeline's")}
    else:
        own_or_given = own
    acts = own_or_given["found"] if own_or_given else None
    act_source = own_or_given["from"] if own_or_given else None
    geometry = {"height": m.geometry.height, "width": m.geometry.width,
                "latent": list(m.geometry.latent_shape)}
    plan = m.plan
    for rt, tag, label in variants:
        weights = {c: file_bytes(m, c, rt, tag)[0] for c in COMPONENTS}
        weights_ort = {c: file_bytes(m, c, "ort", tag)[0] for c in COMPONENTS} if _has_ort_format(m, tag) else None
        row0 = {**info, "runtime": rt, "precision": label, "geometry": geometry,
                "plan": {"sampler": plan.sampler, "steps": plan.steps, "guidance": plan.guidance,
                         "unet_batch": m.component("unet").dims.get("batch")}}
        jobs = []
        if cfg.components:
            jobs += [("component", c, "default") for c in COMPONENTS if c in cfg.only]
        if cfg.generate:
            jobs += [("generate", None, s) for s in cfg.settings if s in SETTINGS[rt]
                     and (not SETTINGS[rt][s]["ort_format"] or _has_ort_format(m, tag))]
        for kind, comp, setting in jobs:
            chosen = SETTINGS[rt][setting]
            what = comp or "generate"
            files = weights_ort if chosen["ort_format"] else weights
            row = {**row0, "what": what, "setting": setting, "status": "ok", "reason": None,
                   "weight_bytes": files[comp] if comp else sum(files.values())}
            if acts:
                found = [acts.get(c) for c in ([comp] if comp else COMPONENTS) if acts.get(c)]
                if found:
                    row["largest_activation"] = {**max(found, key=lambda a: a["bytes"]), "from": act_source}
            _say(f"{info['pipeline']} {info.get('resolution')}px {rt} {tag} {what} [{setting}]")
            job = {**base, "runtime": rt, "tag": tag, **chosen, "component": comp}
            if kind == "generate":
                images = work / "images"
                images.mkdir(exist_ok=True)
                job["image_out"] = str(images / f"{len(result['rows']):04d}.npy")
                _IMAGES[len(result["rows"])] = job["image_out"]  # beside the row, never in the record
            got, mem, err = run_cell(cell_component if kind == "component" else cell_generate, job, work,
                                     cfg.cell_timeout)
            if got is None:
                row.update(status="failed", reason=err)
                _say(f"  failed: {err}")
            else:
                derive(row, mem, got)
                _say(f"  peak {row['peak_mib']:.0f} MiB (baseline {row['baseline_mib']:.0f}, weights "
                     f"{row['weight_mib']:.0f}, overhead {row['overhead_mib']:.0f})"
                     + (f", step {row['step']['median_ms']:.1f} ms" if row.get("step") else ""))
            result["rows"].append(row)
            write(cfg.out, result)
    return own or activations


# ---------------------------------------------------------------------------------------------- the files
def _f(x, spec: str = ".0f") -> str:
    return fmt(x, spec, none="-")


def _export_options(options: dict | None) -> str:
    """How a variant was exported beyond its precision: attention budget, decoder tiles."""
    if options is None:
        return "-"
    from mobilediff.attention import DEFAULT_BUDGET_MIB

    attn = options.get("attention_budget_mib", DEFAULT_BUDGET_MIB)
    out = ["whole attention" if not attn else f"attention <= {attn:g} MiB"]
    if options.get("decoder_tile"):
        out.append(f"decoder tiles {options['decoder_tile']}/{options.get('decoder_overlap', 8)}")
    return ", ".join(out)


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    load = m.get("load_average_at_start") or ["?"]
    lines = [
        "# Peak memory of whole pipelines and their components", "",
        f"Generated by `{result['command']}` on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), "
        f"{s['threads']} threads, load average {load[0]} at the start (1 min; > 0.5 means something else was "
        f"running), {result['created']}{'' if result.get('complete') else ' (incomplete)'}.", "",
        *([f"Note: {result['note']}.", ""] if result.get("note") else []),
        "Every row is one fresh process (`mobilediff.bench.stats.peak_rss_of_call`): its baseline holds the "
        "interpreter, torch, transformers and the runtime's libraries; then the component is loaded and called once "
        "on the manifest's example inputs, or mobilediff.engine generates one image with **one denoiser step at the "
        "plan's batch** (text encoder, UNet, VAE decode). Peak = VmHWM. Weights = the files on disk. Overhead = peak "
        "- baseline - weights: what the runtime holds beyond one copy of the weights. Largest activation: the "
        "largest intermediate tensor of the ONNX graph at the static shapes (onnx shape inference). Step = the UNet "
        "alone after the generate, median of the timed runs. Random-weight pipelines say nothing about image "
        "quality.", "",
        "| pipeline | px | runtime | precision | export | measured | setting | weights (MiB) | baseline (MiB) "
        "| peak (MiB) | peak (GiB) | peak - baseline (MiB) | overhead (MiB) | largest activation | packing (MiB) "
        "| step (ms) | PSNR vs fp32 (dB) | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        act = r.get("largest_activation")
        act_s = (f"{act['bytes'] / MIB:{'.0f' if act['bytes'] >= 10 * MIB else '.2f'}} MiB {act.get('op') or ''} "
                 f"{'x'.join(map(str, act['shape']))}") if act else "-"
        step = (r.get("step") or {}).get("median_ms")
        status = "ok" if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        peak = r.get("peak_mib")
        lines.append(
            f"| {r['pipeline']} | {r.get('resolution')} | {r['runtime']} | {r['precision']} "
            f"| {_export_options(r.get('export_options'))} | {r['what']} "
            f"| {r['setting']} | {_f(r['weight_bytes'] / MIB)} | {_f(r.get('baseline_mib'))} | {_f(peak)} "
            f"| {_f(peak / 1024 if peak else None, '.2f')} | {_f(r.get('delta_mib'))} | {_f(r.get('overhead_mib'))} "
            f"| {act_s} | {_f(r.get('packing_mib'))} | {_f(step, '.1f')} | {'same' if r.get('identical_to_reference') else _f(r.get('psnr_vs_fp32_db'), '.1f')} "
            f"| {status} |")
    if result.get("failures"):
        lines += ["", "Not measured:", ""]
        lines += [f"- {f.get('pipeline')} {f.get('resolution')} {f.get('runtime', '')} {f.get('variant', '')} "
                  f"({f['stage']}): {f['reason']}" for f in result["failures"]]
    lines += ["", "Settings:", ""]
    for rt, d in result["setting_definitions"].items():
        for name, v in d.items():
            if name in s["settings"]:
                lines.append(f"- {rt} `{name}`: {v['note']}" + (f" (`{json.dumps(v['settings'])}`)" if v["settings"]
                                                                 else ""))
    lines += ["", "Packing (ExecuTorch component rows): RSS after the method was loaded (the XNNPACK delegate "
              "initialised: its weights packed) minus RSS after the program was loaded."]
    return "\n".join(lines) + "\n"


def plot(result: dict):
    """Peak RSS against weight bytes, one point per measured row; the lines peak = baseline + weights x 1, 2, 3."""
    from mobilediff.bench.envelope import pyplot, savefig

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = {"onnx": "tab:blue", "executorch": "tab:orange"}
    markers = {"generate": "o", "text_encoder": "^", "unet": "s", "vae_decoder": "D"}
    rows = [r for r in result["rows"] if r.get("peak_mib") is not None]
    seen = set()
    for r in rows:
        key = (r["runtime"], r["what"])
        hollow = r["setting"] != "default"
        ax.scatter(r["weight_bytes"] / GIB, r["peak_mib"] / 1024, marker=markers[r["what"]],
                   facecolors="none" if hollow else colors[r["runtime"]], edgecolors=colors[r["runtime"]],
                   label=None if key in seen else f"{r['runtime']} {r['what']}")
        seen.add(key)
    if rows:
        top = max(r["weight_bytes"] for r in rows) / GIB * 1.05
        base = min(r["baseline_mib"] for r in rows) / 1024
        for k in (1, 2, 3):
            ax.plot([0, top], [base, base + k * top], color="grey", lw=0.8, ls=":")
            ax.annotate(f"baseline + {k}x weights", (top, base + k * top), fontsize=7, color="grey")
    ax.set_xlabel("weights on disk (GiB)")
    ax.set_ylabel("peak RSS (GiB)")
    ax.set_title("Peak memory against weight bytes (filled: default settings; hollow: other settings)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return savefig(fig)


def write(out: Path, result: dict) -> None:
    from mobilediff.bench.envelope import json_safe, write_results

    write_results(out, {"memory.md": markdown(result), "memory.png": plot(result), "memory.json": json_safe(result)})


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    """The command line of ``benchmarks/memory.py``."""
    from mobilediff.bench.real_architectures import SCALES, UNET_ARCHITECTURES as ARCHITECTURES

    ap = Parser(doc)
    ap.add_argument("--bundle", nargs="+", type=Path, default=[], help="bundles to measure as they are")
    ap.add_argument("--arch", nargs="+", choices=list(ARCHITECTURES), default=[],
                    help="whole pipelines with seeded random weights around a real UNet architecture (CLIP ViT-L/14 "
                         "text encoder, SD VAE decoder), exported per --variants and runtime, measured, deleted")
    ap.add_argument("--resolution", nargs="+", type=count(1), default=[512], help="--arch image sizes (square)")
    ap.add_argument("--scale", choices=list(SCALES), default="full",
                    help="--arch UNet widths: full, or tiny (every channel width / 10; a smoke run)")
    ap.add_argument("--variants", nargs="+", default=["fp32"],
                    help="--arch precisions and quantization recipes (a recipe for the runtime that has it: "
                         f"{', '.join(VARIANTS)}), each optionally with export options: attn=MIB (attention "
                         "budget; 0: whole), tile=N (VAE decoder tiles of N latent pixels), overlap=N; e.g. "
                         "fp32:attn=0 int8-weights:tile=40")
    ap.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), default=list(RUNTIMES), help="host runtimes")
    ap.add_argument("--settings", nargs="+", choices=list(ALL_SETTINGS), default=list(ALL_SETTINGS),
                    help="runtime settings measured on the whole generate (each where its runtime has it)")
    ap.add_argument("--no-components", action="store_true", help="only whole generates, not each component alone")
    ap.add_argument("--component", nargs="+", choices=list(COMPONENTS), default=list(COMPONENTS),
                    help="which components are measured alone")
    ap.add_argument("--no-generate", action="store_true", help="only components alone, no whole generate")
    ap.add_argument("--runs", type=count(0), default=3, help="timed UNet steps per resident generate row")
    ap.add_argument("--threads", type=count(1), default=os.cpu_count() or 1, help="runtime threads")
    ap.add_argument("--seed", type=count(0, 2**63 - 1), default=0, help="seed of the random weights and inputs")
    ap.add_out(results, "folder for memory.json, memory.md and memory.png")
    ap.add_argument("--work", type=Path, default=None, help="folder for --arch pipelines and bundles "
                                                            "(default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the --arch pipelines and bundles")
    ap.add_argument("--cell-timeout", type=finite(0, open_min=True), default=3600.0,
                    help="seconds before one measurement is stopped")
    a = ap.parse_args(argv)
    cfg = MemoryConfig(out=a.out, bundles=tuple(a.bundle), archs=tuple(a.arch), resolutions=tuple(a.resolution),
                       scale=a.scale, variants=tuple(a.variants), runtimes=tuple(a.runtimes),
                       settings=tuple(a.settings), components=not a.no_components,
                       only=tuple(a.component), generate=not a.no_generate, runs=a.runs, threads=a.threads,
                       seed=a.seed, work=a.work, keep=a.keep, cell_timeout=a.cell_timeout)
    return measure(cfg, command_line("memory", argv))
