"""ONNX Runtime's mobile format on real bundles: each graph's ORT form against PyTorch and against its .onnx form
(bytes, session start, one call), and ONNX Runtime's per-EP mobile usability report, for whole bundles of named
models and for real UNet architectures with random weights (mobilediff.bench.real_architectures).
``benchmarks/ort_format.py`` runs :func:`main`."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilediff.bench.envelope import Parser, command_line, count, write_results
from mobilediff.errors import MobilediffError

CALLS = 5  # timed calls per graph after one untimed call; the median is reported


def _session_ms(path: Path, threads: int) -> tuple[float, object]:
    from mobilediff.targets.onnx import load_session

    t0 = time.perf_counter()
    sess = load_session(path, threads)
    return (time.perf_counter() - t0) * 1000, sess


def _call_ms(sess, spec, inputs) -> float:
    from mobilediff.targets.onnx import run

    run(sess, spec, inputs)
    times = []
    for _ in range(CALLS):
        t0 = time.perf_counter()
        run(sess, spec, inputs)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def graph_row(case: str, spec, onnx_entry: dict, ort_entry: dict | str, bundle: Path, threads: int) -> dict:
    """One component: its .onnx and ORT forms side by side (sizes, parity, session start, call time, usability)."""
    row = {"case": case, "component": spec.name, "precision": onnx_entry["precision"],
           "quantization": onnx_entry["quantization"], "onnx_bytes": onnx_entry["size_bytes"]
           + sum(e["size_bytes"] for e in onnx_entry["external_data"]),
           "onnx_psnr_db": onnx_entry["parity"]["psnr_db"]}
    inputs = spec.example_inputs(0)
    load_ms, sess = _session_ms(bundle / onnx_entry["path"], threads)
    row.update(onnx_session_ms=round(load_ms, 1), onnx_call_ms=round(_call_ms(sess, spec, inputs), 2))
    del sess
    if isinstance(ort_entry, str):
        return {**row, "ort": None, "ort_refused": ort_entry}
    load_ms, sess = _session_ms(bundle / ort_entry["path"], threads)
    facts = ort_entry["export"]
    row.update(ort_bytes=ort_entry["size_bytes"], ort_psnr_db=ort_entry["parity"]["psnr_db"],
               ort_session_ms=round(load_ms, 1), ort_call_ms=round(_call_ms(sess, spec, inputs), 2),
               operators=sum(len(v) for v in facts["required_operators"].values()),
               usability=facts["usability"]["eps"], optimization=facts["optimization"])
    return row


def bundle_rows(model: str, work: Path, threads: int, say) -> list[dict]:
    """Export ``model`` (a named model or pipeline folder) to an ONNX bundle with its ORT forms and compare them."""
    from mobilediff.bundle import read_manifest
    from mobilediff.components import declare, latent_geometry
    from mobilediff.exporter import export_bundle
    from mobilediff.loading import load_pipeline

    pipe = load_pipeline(model)
    out = work / model.replace(":", "_").replace("/", "_")
    say(f"{model}: export onnx + ort")
    export_bundle(pipe, "onnx", out, source=model)
    m = read_manifest(out)
    specs = declare(pipe, latent_geometry(pipe), cfg_batch=m.component("unet").dims.get("batch"))
    rows = []
    for name, comp in m.components.items():
        onnx_entry = comp.file("onnx").to_dict()
        ort = comp.file("ort")
        rows.append(graph_row(model, specs[name], onnx_entry, ort.to_dict() if ort else onnx_entry["export"]
                              .get("ort_format", "no ORT form"), out, threads))
    return rows


def architecture_row(arch: str, scale: str, precision: str, resolution: int, work: Path, threads: int, say) -> dict:
    """A real UNet architecture (seeded random weights; ``scale`` "full", or "tiny": every width / 10, the same
    blocks and operators) at ``resolution``: the project's export of it to ONNX at ``precision``, then its ORT form
    (or the one-line reason it has none)."""
    from mobilediff.bench.real_architectures import ARCHITECTURES, build_spec
    from mobilediff.exporter import export_component, export_ort_form

    spec = build_spec(arch, scale, resolution, 2, 0)
    folder = work / f"{arch}_{scale}_{precision}_{resolution}"
    title = f"{ARCHITECTURES[arch].title}{' (widths / 10)' if scale == 'tiny' else ''} {resolution} px"
    say(f"{title}, {precision}: export onnx + ort")
    onnx_entry = export_component(spec, "onnx", precision, folder)
    ort = export_ort_form(spec, onnx_entry, folder)
    row = graph_row(title, spec, onnx_entry, ort, folder, threads)
    del spec
    return row


def parse_architecture(spec: str) -> tuple[str, str, str, int]:
    """``ARCH:SCALE:PRECISION:RESOLUTION`` -> its parts, checked; MobilediffError names what is wrong."""
    from mobilediff.bench.real_architectures import ARCHITECTURES, SCALES

    parts = spec.split(":")
    if len(parts) != 4:
        raise MobilediffError(f"--architecture {spec!r}: expected ARCH:SCALE:PRECISION:RESOLUTION, e.g. sd15:full:fp16:256")
    arch, scale, precision, resolution = parts
    for what, value, known in (("architecture", arch, ARCHITECTURES), ("scale", scale, SCALES),
                               ("precision", precision, ("fp32", "fp16"))):
        if value not in known:
            raise MobilediffError(f"--architecture {spec!r}: unknown {what} {value!r}; choose one of: {', '.join(known)}")
    if not resolution.isdigit() or int(resolution) < 8 or int(resolution) % 8:
        raise MobilediffError(f"--architecture {spec!r}: the resolution must be a multiple of 8 pixels, got {resolution!r}")
    return arch, scale, precision, int(resolution)


def _verdicts(row: dict) -> str:
    if not row.get("usability"):
        return "-"
    return "; ".join(f"{ep}: {u['verdict']} ({u['supported_nodes']}/{u['nodes']} nodes, {u['partitions']} partitions"
                     f"{', fixed shapes: ' + u['verdict_with_fixed_shapes'] if 'verdict_with_fixed_shapes' in u else ''})"
                     for ep, u in row["usability"].items())


def _f(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(result: dict) -> str:
    m = result["machine"]
    md = ["# ONNX Runtime's mobile format (ORT) against the .onnx graphs", "",
          f"Generated by `{result['command']}` in {result['wall_seconds'] / 60:.1f} min on {m['cpu']} ({m['cores']} "
          f"cores; 1-min load average {result['load_average_1min']['start']} at the start, "
          f"{result['load_average_1min']['end']} at the end: other work ran beside it, so milliseconds are "
          f"indicative only), onnxruntime {result['versions'].get('onnxruntime')} CPU provider, {result['threads']} "
          f"intra-op thread(s). PSNR: each graph's outputs against PyTorch on the same seeded inputs (the export's "
          f"parity check). Session: creating the session from the file; call: median of {CALLS} calls after one.", "",
          "| case | component | precision | .onnx MB | .ort MB | .onnx PSNR dB | .ort PSNR dB | session ms .onnx / .ort "
          "| call ms .onnx / .ort | operators |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        md.append(f"| {r['case']} | {r['component']} | {r['quantization'] or r['precision']} | "
                  f"{r['onnx_bytes'] / 1e6:.1f} | {_f(r.get('ort_bytes') and r['ort_bytes'] / 1e6)} | "
                  f"{_f(r['onnx_psnr_db'])} | {_f(r.get('ort_psnr_db'))} | "
                  f"{_f(r['onnx_session_ms'], '.0f')} / {_f(r.get('ort_session_ms'), '.0f')} | "
                  f"{_f(r['onnx_call_ms'], '.2f')} / {_f(r.get('ort_call_ms'), '.2f')} | {_f(r.get('operators'), 'd')} |")
    md += ["", "## Mobile usability (onnxruntime.tools.check_onnx_model_mobile_usability)", "",
           "The checker's verdict per execution provider (YES / MAYBE / NO: whether the EP should take the graph), "
           "the nodes it supports and the partitions they fall into, as exported (dynamic batch) and with the "
           "dynamic dimensions fixed.", "", "| case | component | verdicts | ops the EPs lack |", "|---|---|---|---|"]
    for r in result["rows"]:
        lacks = "; ".join(f"{ep}: {', '.join(o.split(':')[-1] for o in u['unsupported_ops']) or 'none'}"
                          for ep, u in (r.get("usability") or {}).items()) or r.get("ort_refused", "-")
        md.append(f"| {r['case']} | {r['component']} | {_verdicts(r)} | {lacks} |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    from mobilediff.bench.envelope import library_versions, machine_info
    from mobilediff.quiet import quiet_libraries

    ap = Parser(doc)
    ap.add_argument("--model", action="append", default=None,
                    help="a named model or pipeline folder whose bundle is compared (default: default, "
                         "default:progressive-4)")
    ap.add_argument("--architecture", action="append", default=None, metavar="ARCH:SCALE:PRECISION:RESOLUTION",
                    help="a real UNet architecture with random weights, e.g. sd15:full:fp16:256 (default: none; "
                         "architectures: sd15, bk-sdm-tiny; scale full, or tiny: every width / 10)")
    ap.add_argument("--threads", type=count(1), default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_out(results, "result folder")
    args = ap.parse_args(argv)
    architectures = [parse_architecture(spec) for spec in args.architecture or []]  # all checked before any work
    quiet_libraries()
    t0 = time.perf_counter()
    load_start = round(os.getloadavg()[0], 1)
    say = lambda msg: print(f"ort_format: {msg}", file=sys.stderr)  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory(prefix="ort_format_") as tmp:
        for model in args.model or ["default", "default:progressive-4"]:
            rows += bundle_rows(model, Path(tmp), args.threads, say)
        for arch, scale, precision, resolution in architectures:
            rows.append(architecture_row(arch, scale, precision, resolution, Path(tmp), args.threads, say))
    result = {"command": command_line("ort_format", argv), "wall_seconds": round(time.perf_counter() - t0, 1),
              "machine": machine_info(), "versions": library_versions(), "threads": args.threads,
              "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 1)}, "rows": rows}
    write_results(args.out, {"ort_format.md": markdown(result), "ort_format.json": result})
    print(f"wrote {args.out / 'ort_format.md'}: {len(rows)} graphs")
