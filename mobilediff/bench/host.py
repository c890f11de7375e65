"""The host harness: load and time bundle components and whole generates on this machine's runtimes (ONNX Runtime,
ExecuTorch, PyTorch eager as the reference), their cold loads, their peak memory in fresh processes, and the
quality of the images they make on the fixed prompts and seeds (the shapes evaluator), or on a user's prompts with
the metric set (:mod:`mobilediff.bench.device_quality`).

Bundle components load through the same classes as ``mobilediff generate --bundle``
(:class:`mobilediff.engine.BundleRunner`), so component and end-to-end numbers measure the same code. The eager
reference is the PyTorch pipeline a bundle was exported from; it is opened only when eager rows are asked for, and
only after its weights are checked against the manifest's ``source.weights_sha256``.
"""
from __future__ import annotations

import functools
import json
import statistics
import time
from pathlib import Path
from typing import Callable

from mobilediff.bench.bundles import COMPONENTS, BundleInfo, Plan, component_inputs, file_precision, fused_entry
from mobilediff.bench.device_quality import baseline_teachers, make_teacher_images, score_row
from mobilediff.bench.stats import peak_rss_of_call, row_median, summarize, time_callable
from mobilediff.errors import MobilediffError
from mobilediff.targets import HOST_RUNTIMES as TARGET_RUNTIMES
from mobilediff.targets import get_runtime

BUNDLE_RUNTIMES = TARGET_RUNTIMES  # host runtimes that read a bundle (mobilediff.targets)
HOST_RUNTIMES = (*BUNDLE_RUNTIMES, "eager")  # and the reference pipeline run by PyTorch
LOAD_WHAT = {"eager": "from_pretrained of the source folder's component", "onnx": "onnxruntime.InferenceSession",
             "executorch": "executorch.runtime load_program + load_method"}


# ------------------------------------------------------------------------------------------- eager reference
def resolve_eager_reference(b: BundleInfo, given: str) -> None:
    """Find the PyTorch pipeline of ``b``'s eager rows: ``given`` (a folder or model name), or with "manifest" the
    manifest's ``source.model``; checked against ``source.weights_sha256`` so the reference is the very model the
    bundle was exported from. "none": no eager rows for this bundle. Sets ``b.eager_dir`` and ``b.source``."""
    from mobilediff.io import tree_sha256
    from mobilediff.loading import check_pipeline_dir, resolve_model

    model, sha = b.manifest.source.model, b.manifest.source.weights_sha256
    if given == "none" or (given == "manifest" and not model):
        return
    decoder = b.manifest.source.decoder
    if decoder:  # the source folder's own VAE is not what the bundle decodes with: it is no reference for it
        b.source["note"] = (f"no eager reference: the bundle decodes with {decoder.get('path', 'another decoder')}, "
                            f"not its source model's VAE")
        return
    path = Path(resolve_model(model if given == "manifest" else given))
    if given == "manifest" and not path.is_dir():
        raise MobilediffError(f"the bundle's source model {model!r} (manifest source.model) is not a folder here; "
                              f"pass --source MODEL for this bundle, or --source none to skip its eager reference")
    check_pipeline_dir(path)
    from mobilediff.bench.envelope import record_path

    b.source.update(path=record_path(path), **{"from": "manifest" if given == "manifest" else "--source"})
    if sha is not None:
        if tree_sha256(path) != sha:
            raise MobilediffError(f"source model {path} no longer matches the weights the bundle was exported from "
                                  f"(manifest source.weights_sha256); re-export, or pass --source none")
        b.source["checked"] = True
    b.eager_dir = path


def load_eager_pipelines(bundles: list[BundleInfo]) -> dict:
    """The eager reference pipeline of every bundle that has one, loaded before any measurement so that one that
    cannot run at its bundle's size fails first. Returns {reference folder: pipeline}."""
    from mobilediff.components import image_size
    from mobilediff.loading import load_pipeline

    pipes = {}
    for b in bundles:
        if b.eager_dir is None:
            continue
        pipe = pipes.get(str(b.eager_dir)) or load_pipeline(b.eager_dir, transformers=True)
        geo = b.manifest.geometry
        height, width = image_size(pipe)  # what mobilediff.sampling.generate makes
        if (geo.height, geo.width) != (height, width):
            raise MobilediffError(f"bundle {b.name} was exported at {geo.height}x{geo.width} but its source model "
                                  f"generates {height}x{width}; the eager reference cannot run at the bundle's size "
                                  f"(leave eager out of --runtimes, or pass --source none for this bundle)")
        pipes[str(b.eager_dir)] = pipe
    return pipes


def eager_key(b: BundleInfo) -> tuple:
    """Bundles with one eager key share their eager rows (same reference weights, geometry and shapes)."""
    m = b.manifest
    return (str(b.eager_dir), json.dumps(m.geometry.to_dict(), sort_keys=True),
            json.dumps({c: m.component(c).dims for c in COMPONENTS}, sort_keys=True))


# -------------------------------------------------------------------------------- loaders (also in children)
def import_runtime(runtime: str, threads: int | None = None) -> None:
    """Import (and initialise) a runtime's libraries and set its thread count: done before load timing and before
    a memory baseline. ONNX Runtime's threads are a session option (see load_component)."""
    import torch
    from transformers import CLIPTokenizer  # noqa: F401 - every pipeline tokenizes; its import is library code

    if threads is not None:
        torch.set_num_threads(threads)
    if runtime in BUNDLE_RUNTIMES:
        get_runtime(runtime).prepare_runtime(threads)
    elif runtime == "eager":
        # diffusers and transformers import their model classes lazily: import them here, not inside the measurement
        from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401
        from transformers import CLIPTextModel  # noqa: F401


def runtime_threads(runtimes, threads: int | None) -> dict:
    """The thread count each runtime actually runs with (after import_runtime)."""
    import torch

    out = {"torch (eager)": torch.get_num_threads()}
    for runtime in runtimes:
        if runtime in BUNDLE_RUNTIMES:
            out.update(get_runtime(runtime).runtime_threads(threads))
    return out


def eager_component(source_dir: str, component: str):
    """The PyTorch module behind one exported component (the exporter's own wrapper), loaded from the reference
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
    model = getattr(importlib.import_module(library), cls_name).from_pretrained(str(folder), use_safetensors=True)
    model = model.to(torch.float32).eval()
    if component == "text_encoder":
        return TextEncoderWrapper(model).eval()
    if component == "unet":
        return UnetWrapper(model, bool(model.config.time_cond_proj_dim)).eval()
    return VaeDecoderWrapper(model).eval()


def load_component(runtime: str, location: str, io, threads: int | None = None, component: str = "component"):
    """A callable ``f(*inputs) -> outputs`` for one component. ``location``: the verified bundle file (onnx,
    executorch), loaded by its target (``mobilediff.targets``, as BundleRunner loads it; ``io`` its manifest
    ComponentEntry, checked against the graph; ``component`` its name in messages), or the reference pipeline folder
    (eager; ``io`` the component's name)."""
    import torch

    if runtime == "eager":
        module = eager_component(location, io)

        def call(*args):
            with torch.no_grad():
                return module(*args)
        return call
    from mobilediff.targets import get_target

    return get_target(runtime).load(Path(location), io, threads, component)


def bundle_runner(bundle: Path, runtime: str, threads: int | None):
    """mobilediff.engine.BundleRunner (it checks every file's sha256) with ``threads`` runtime threads."""
    from mobilediff.engine import BundleRunner

    return BundleRunner(bundle, runtime, threads=threads)


def component_once(runtime: str, location: str, bundle: str, component: str, threads: int | None) -> None:
    """Load and run one component once (the body of a memory measurement)."""
    from mobilediff.bundle import read_manifest

    m = read_manifest(Path(bundle))
    io = m.component(component)
    fn = load_component(runtime, location, component if runtime == "eager" else io, threads, component)
    fn(*component_inputs(m, component))


def generate_once(runtime: str, location: str, sampler: str, steps: int, guidance: float, prompt: str,
                  seed: int, threads: int | None) -> None:
    """Load a whole pipeline (bundle through a runtime, or the reference pipeline) and generate one image."""
    if runtime == "eager":
        from mobilediff.loading import load_pipeline
        from mobilediff.sampling import generate

        generate(load_pipeline(location, transformers=True), [prompt], [seed], steps, sampler, guidance)
    else:
        bundle_runner(Path(location), runtime, threads).generate(prompt, seed, steps, sampler, guidance)


def memory(fn, *args, runtime: str, threads: int | None) -> dict:
    """Peak RSS of ``fn(*args)`` in a fresh process whose baseline already holds the runtime's libraries."""
    m = peak_rss_of_call(fn, *args, setup=functools.partial(import_runtime, runtime, threads))
    m = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in m.items()}
    m["what"] = "fresh process; baseline: interpreter + the runtime's libraries imported; delta: load + one run"
    return m


def time_loads(make: Callable[[], object], n: int) -> tuple[object, dict]:
    """Call ``make()`` ``n`` times; return the last object and the load times (first = cold, median)."""
    times, obj = [], None
    for _ in range(n):
        obj = None  # drop the previous instance first: its memory would otherwise stay live during the load
        t0 = time.perf_counter_ns()
        obj = make()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return obj, {"first_ms": times[0], "median_ms": statistics.median(times), "n": n}


def latency(samples: list[float], warmup: int, source: str = "perf_counter") -> dict:
    return {**summarize(samples), "warmup": warmup, "source": source}


# ------------------------------------------------------------------------------------------------ the rows
def host_components(bundles: list[BundleInfo], runtimes, runs: int, warmup: int, load_runs: int, threads: int | None,
                    with_memory: bool, bar) -> list[dict]:
    """Per bundle, per component, every runtime back to back (so they see the machine in the same state); eager
    rows once per eager key. Each row: cold loads, warm latency, peak memory in a fresh process."""
    import torch

    from mobilediff.bundle import verify_file

    rows, eager_done, imported = [], set(), set()
    for b in bundles:
        for comp in COMPONENTS:
            io = b.manifest.component(comp)
            inputs = component_inputs(b.manifest, comp)
            shapes = {spec.name: list(x.shape) for spec, x in zip(io.inputs, inputs)}
            jobs = []
            for runtime in runtimes:
                if runtime == "eager":
                    key = (eager_key(b), comp)
                    if b.eager_dir is None or key in eager_done:
                        continue
                    eager_done.add(key)
                    jobs.append(("eager", str(b.eager_dir), None, f"eager:{b.source_label}", None, "fp32"))
                elif runtime in b.targets:
                    entry = io.file(runtime)
                    jobs.append((runtime, str(verify_file(b.path, entry)), entry, b.name, b.name, file_precision(entry)))
            for runtime, location, entry, model, bundle_name, precision in jobs:
                bar.set_postfix_str(f"{model} {comp} {runtime}")
                if runtime not in imported:  # library initialisation is not part of a model's load time
                    import_runtime(runtime, threads)
                    imported.add(runtime)
                what = comp if runtime == "eager" else io
                fn, load = time_loads(lambda: load_component(runtime, location, what, threads, comp), load_runs)
                load["what"] = LOAD_WHAT[runtime]
                with torch.no_grad():
                    samples = time_callable(lambda: fn(*inputs), warmup, runs)
                mem = (memory(component_once, runtime, location, str(b.path), comp, threads, runtime=runtime,
                              threads=threads) if with_memory else None)
                lat = latency(samples, warmup)
                rows.append({"model": model, "bundle": bundle_name, "source": b.source_label, "component": comp,
                             "runtime": runtime, "file": entry.path if entry else None, "precision": precision,
                             "input_shapes": shapes, "gflop": io.gflop, "load": load, "latency": lat, "memory": mem,
                             "speedup_vs_eager": None, "note": lat["note"]})
                fn = None  # release the runtime's session or program before the next one loads
                bar.update(1)
    speedups_vs_eager(rows)
    return rows


def speedups_vs_eager(rows: list[dict]) -> None:
    """speedup_vs_eager of every bundle row: the eager median of the same source, component and shapes / its own."""
    eager = {(r["source"], r["component"], json.dumps(r["input_shapes"], sort_keys=True)): r
             for r in rows if r["runtime"] == "eager"}
    for r in rows:
        e = eager.get((r["source"], r["component"], json.dumps(r["input_shapes"], sort_keys=True)))
        if r["runtime"] != "eager" and e and row_median(r):
            r["speedup_vs_eager"] = row_median(e) / row_median(r)


def end_to_end_row(b: BundleInfo, plan: Plan, runtime: str, model: str, bundle_name: str | None,
                   precision: str) -> dict:
    """An end-to-end row before measurement: what it runs (plan, CFG batch, NFE), measurements empty."""
    cfg = b.cfg and plan.guidance > 1.0
    batch = 2 if cfg else 1
    return {"model": model, "bundle": bundle_name, "source": b.source_label, "role": b.role, "method": b.method,
            "runtime": runtime, "precision": precision, "sampler": plan.sampler, "steps": plan.steps,
            "guidance": plan.guidance, "guidance_from": plan.guidance_from, "cfg": cfg, "unet_calls_per_step": 1,
            "unet_batch": batch, "nfe": plan.steps * batch, "fused": False, "latency_kind": "measured", "latency": None,
            "memory": None, "baseline": None, "speedup_vs_baseline": None, "quality": None, "pareto_accuracy": None,
            "pareto_fd": None, "note": None}


def host_end_to_end(bundles: list[BundleInfo], runtimes, runs: int, e2e_warmup: int, threads: int | None,
                    with_memory: bool, quality_n: int, pipes: dict, bar, quality_bar, evaluator=None,
                    prompt_quality=None) -> list[dict]:
    """One full generate per row, timed whole; then the quality of the same row on the fixed prompts and seeds:
    the shapes ``evaluator``'s, or with ``prompt_quality`` (:class:`mobilediff.bench.device_quality.PromptQuality`)
    the metric set's on the user's prompts, whose teacher images are made first, once per runtime.
    ``pipes``: the eager reference pipelines by folder (:func:`load_eager_pipelines`)."""
    from mobilediff.quality import eval_scenes
    from mobilediff.sampling import generate

    prompt, seed = eval_scenes(1)[0].caption, 0
    rows, eager_done = [], set()
    real = evaluator.real_features(eval_scenes(quality_n)) if evaluator is not None else None
    if prompt_quality is not None:
        teacher_images(prompt_quality, bundles, runtimes, pipes, threads, quality_bar)
    for b in bundles:
        for rt in runtimes:
            import_runtime(rt, threads)
        runners = {rt: bundle_runner(b.path, rt, threads) for rt in runtimes if rt in b.targets}
        for plan in b.plans:
            jobs = list(runners.items())
            ekey = (eager_key(b), plan)
            if str(b.eager_dir) in pipes and "eager" in runtimes and ekey not in eager_done:
                eager_done.add(ekey)
                jobs.append(("eager", pipes[str(b.eager_dir)]))
            for rt, obj in jobs:
                eager = rt == "eager"
                model = f"eager:{b.source_label}" if eager else b.name
                row = end_to_end_row(b, plan, rt, model, None if eager else b.name, "fp32" if eager else b.precision)
                bar.set_postfix_str(f"{model} {rt} {plan.sampler}-{plan.steps}")
                call = (functools.partial(generate, obj, [prompt], [seed], plan.steps, plan.sampler, plan.guidance)
                        if eager else functools.partial(obj.generate, prompt, seed, plan.steps, plan.sampler,
                                                        plan.guidance))
                row["latency"] = latency(time_callable(call, e2e_warmup, runs), e2e_warmup)
                row["note"] = row["latency"]["note"]
                if with_memory:
                    row["memory"] = memory(generate_once, rt, str(b.eager_dir if eager else b.path), plan.sampler,
                                           plan.steps, plan.guidance, prompt, seed, threads, runtime=rt,
                                           threads=threads)
                bar.update(1)
                if evaluator is not None:
                    row["quality"] = quality(evaluator, real, rt, obj, plan, quality_n, quality_bar)
                elif prompt_quality is not None:
                    row["quality"] = score_row(prompt_quality, rt, model, obj, plan, quality_bar)
                rows.append(row)
    return rows


def teacher_images(pq, bundles: list[BundleInfo], runtimes, pipes: dict, threads: int | None, bar) -> None:
    """The images of each runtime's baseline row on the user's prompts, made once and kept in ``pq.teachers``
    (:mod:`mobilediff.bench.device_quality`): every row of that runtime is compared with them."""
    for rt, (b, plan) in baseline_teachers(bundles, runtimes, pipes).items():
        import_runtime(rt, threads)
        if rt == "eager":
            make_teacher_images(pq, rt, f"eager:{b.source_label}", pipes[str(b.eager_dir)], plan, bar)
        else:
            make_teacher_images(pq, rt, b.name, bundle_runner(b.path, rt, threads), plan, bar)


def host_fused(bundles: list[BundleInfo], runtimes, runs: int, e2e_warmup: int, threads: int | None,
               e2e: list[dict], bar) -> list[dict]:
    """An end-to-end row per fused N-step program (``export --fused-steps``) and host runtime: one call of the one
    graph (text encoding, N denoiser steps, decode; the tokenizer's ids and the noise made outside it, as an app
    does, and timed with it). Its quality is that of the same bundle's row at the same plan and runtime (the graph
    was checked against the PyTorch pipeline at export), copied with ``quality_from`` saying so; None without one."""
    import torch

    from mobilediff.bundle import verify_file
    from mobilediff.quality import eval_scenes
    from mobilediff.engine import bundle_tokenizer

    prompt = eval_scenes(1)[0].caption
    rows = []
    for b in bundles:
        entry = fused_entry(b.manifest)
        if entry is None:
            continue
        f = b.manifest.fused
        plan = Plan(f["sampler"], int(f["steps"]), float(f["default_guidance"]), "manifest (fused program)")
        for file in entry.files:
            rt = file.target
            if rt not in runtimes:
                continue
            import_runtime(rt, threads)
            part = load_component(rt, str(verify_file(b.path, file)), entry, threads, "fused program")
            tokenizer = bundle_tokenizer(b.path, b.manifest)
            inputs = component_inputs(b.manifest, "", entry=entry)

            def call():
                inputs[0] = tokenizer.ids(prompt)
                with torch.no_grad():
                    return part(*inputs)
            row = end_to_end_row(b, plan, rt, f"{b.name} (fused)", b.name, file_precision(file))
            row.update(cfg=b.cfg and plan.guidance > 1.0, unet_batch=2 if b.cfg and plan.guidance > 1.0 else 1,
                       fused=True, latency_kind="measured (fused program)")
            row["nfe"] = plan.steps * row["unet_batch"]
            row["latency"] = latency(time_callable(call, e2e_warmup, runs), e2e_warmup)
            twin = next((r for r in e2e if r["bundle"] == b.name and r["runtime"] == rt and r["quality"]
                         and (r["sampler"], r["steps"], r["guidance"]) == (plan.sampler, plan.steps, plan.guidance)),
                        None)
            notes = [row["latency"]["note"]] if row["latency"]["note"] else []
            if twin is not None:
                row["quality"], row["quality_from"] = twin["quality"], f"{twin['model']} {rt} row (same plan)"
            else:
                notes.append("quality not scored: no row of this bundle at the fused plan")
            row["note"] = " ".join(notes) or None
            part = None
            rows.append(row)
            bar.update(1)
    return rows


def quality(evaluator, real, runtime: str, obj, plan: Plan, n: int, bar) -> dict:
    """Prompt accuracy, FD and per-attribute accuracy of ``n`` images of the fixed prompts and noise seeds."""
    from mobilediff.quality import NOISE_SEED, bundle_images, eval_scenes
    from mobilediff.sampling import generate

    bar.set_postfix_str(f"{runtime} {plan.sampler}-{plan.steps}")
    scenes = eval_scenes(n)
    if runtime == "eager":
        images = generate(obj, [sc.caption for sc in scenes], [NOISE_SEED + i for i in range(n)], plan.steps,
                          plan.sampler, plan.guidance, progress=None)
        bar.update(n)
    else:
        images = bundle_images(obj, n, plan.sampler, plan.steps, plan.guidance, progress=bar.update)
    rep = evaluator.score(images, scenes, real)
    return {"n": rep.n, "prompt_accuracy": rep.prompt_accuracy, "fd": rep.fd,
            "attribute_accuracy": rep.attribute_accuracy}


def component_latency(bundle: Path, target: str, component: str, runs: int, warmup: int, seed: int = 0) -> dict:
    """Cold load (seconds) and warm latency (:func:`summarize`) of one component file of a bundle, on the
    manifest's example inputs at the runtime's batch."""
    from mobilediff.bundle import component_file, read_manifest

    m = read_manifest(bundle)
    path, _ = component_file(m, bundle, component, target)
    t0 = time.perf_counter()
    part = load_component(target, str(path), m.component(component), component=component)
    load_s = time.perf_counter() - t0
    inputs = component_inputs(m, component, seed)
    return {"load_seconds": load_s, **summarize(time_callable(lambda: part(*inputs), warmup=warmup, runs=runs))}
