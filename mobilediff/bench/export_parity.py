"""Export parity of a model (the default one unless told): every target and component against PyTorch, as each
export recorded it, and end-to-end images of ``generate --bundle`` against the PyTorch pipeline at the same prompts,
seeds and steps, checked against the export bars. ``benchmarks/export_parity.py`` runs :func:`main`."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from mobilediff.bench import bars
from mobilediff.bench.envelope import Parser, command_line, count, envelope, fmt, write_results
from mobilediff.targets import HOST_RUNTIMES

COMPONENT_BAR, IMAGE_BAR = bars.bar("export_fp32_component_psnr_db"), bars.bar("export_e2e_image_psnr_db")

PROMPTS = ["a large red triangle in the lower right against a white background",
           "a small cyan square in the middle, a big green circle at the bottom right, black background",
           "gray background with a small yellow diamond at the right",
           "a picture of a big blue square in the middle against a pink background"]
E2E = [("ddim", 50, 6.0), ("ddim", 8, 2.0), ("dpmpp", 4, 2.0)]


def _fmt(x: float) -> str:
    return fmt(x, ".1f")


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    """The command line of ``benchmarks/export_parity.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, the model
    exported to every target and checked, written to ``--out``. ``doc``: the script's docstring (its ``--help``);
    ``results``: the default ``--out`` (None: ``--out`` is required)."""
    ap = Parser(doc)
    ap.add_argument("--model", default="default", help="pipeline folder or a named model (default: default)")
    ap.add_out(results, "result folder (default benchmarks/results)")
    ap.add_argument("--fused-steps", type=count(0, 16), default=4, help="also export and check a fused N-step program (0: skip)")
    args = ap.parse_args(argv)

    import torch

    from mobilediff.bundle import read_manifest
    from mobilediff.exporter import export_bundle
    from mobilediff.io import tree_sha256
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.parity import psnr
    from mobilediff.engine import BundleRunner
    from mobilediff.sampling import generate

    t_start = time.time()
    pipe = load_pipeline(args.model)
    rows, e2e = [], []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        bundle = export_bundle(pipe, "all", Path(tmp) / "bundle", fused_steps=args.fused_steps or None,
                               progress=lambda m: print("export", m, flush=True), source=str(resolve_model(args.model)))
        export_seconds = time.time() - t0
        m = read_manifest(bundle)
        sections = [(name, [f.to_dict() for f in c.files]) for name, c in m.components.items()]
        if m.fused:  # the fused program's record is untyped in the manifest: its files as written
            sections.append((m.fused["name"], m.fused["files"]))
        for name, files in sections:
            for f in files:
                p = f["parity"]
                rows.append({"target": f["target"], "component": name, "precision": f["precision"],
                             "max_abs_error": p.get("max_abs_error"), "psnr_db": p.get("psnr_db"),
                             "checked": p["checked"], "size_bytes": f["size_bytes"],
                             "export_seconds": f["export_seconds"],
                             "met": bars.check(COMPONENT_BAR.id, p.get("psnr_db")) if f["precision"] == "fp32" else None,
                             **({"delegated_nodes": f["export"]["delegated_nodes"],
                                 "non_delegated_nodes": f["export"]["non_delegated_nodes"],
                                 "delegated_subgraphs": f["export"].get("delegated_subgraphs"),
                                 "non_delegated_ops": f["export"].get("non_delegated_ops", {})}
                                if f["target"] == "executorch" else {})})
        for runtime in HOST_RUNTIMES:
            runner = BundleRunner(bundle, runtime)
            for sampler, steps, guidance in E2E:
                seeds = list(range(len(PROMPTS)))
                ref = generate(pipe, PROMPTS, seeds, steps, sampler, guidance)
                got = torch.cat([runner.generate(p, s, steps, sampler, guidance) for p, s in zip(PROMPTS, seeds)])
                vals = [psnr(got[i:i + 1], ref[i:i + 1]) for i in range(len(PROMPTS))]
                e2e.append({"runtime": runtime, "sampler": sampler, "steps": steps, "guidance": guidance,
                            "images": len(PROMPTS), "min_psnr_db": min(vals),
                            "max_abs_error": (got - ref).abs().max().item(),
                            "met": bars.check(IMAGE_BAR.id, min(vals))})
                print(e2e[-1], flush=True)
    result = {"model": str(resolve_model(args.model)), "model_sha256": tree_sha256(resolve_model(args.model)),
              "export_seconds_all_targets": export_seconds,
              "targets": {"fp32_component_min_psnr_db": COMPONENT_BAR.value, "end_to_end_min_psnr_db": IMAGE_BAR.value},
              "rows": rows, "end_to_end": e2e,
              **envelope("export_parity", command_line("export_parity", argv), t_start)}
    md = ["# Export parity of the default model", "",
          f"Generated by `{result['command'].strip()}` in {result['wall_seconds'] / 60:.1f} min on "
          f"{result['machine']['cpu']} ({result['machine']['cores']} cores). Targets: fp32 components "
          f">= {COMPONENT_BAR.value:g} dB PSNR against PyTorch, end-to-end images >= {IMAGE_BAR.value:g} dB. "
          "Core ML cannot run predictions on Linux: its rows are "
          "structural checks (I/O names, shapes, dtypes, deployment target, precision).", "",
          "| target | component | precision | max abs error | PSNR (dB) | checked | size (KiB) | export (s) | XNNPACK nodes (delegated / not) | XNNPACK subgraphs |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        err = "-" if r["max_abs_error"] is None else f"{r['max_abs_error']:.2e}"
        ps = "-" if r["psnr_db"] is None else _fmt(r["psnr_db"])
        xn = f"{r['delegated_nodes']} / {r['non_delegated_nodes']}" if "delegated_nodes" in r else "-"
        sub = r.get("delegated_subgraphs")
        md.append(f"| {r['target']} | {r['component']} | {r['precision']} | {err} | {ps} | {r['checked']} | "
                  f"{r['size_bytes'] / 1024:.0f} | {r['export_seconds']:.1f} | {xn} | {'-' if sub is None else sub} |")
    md += ["", "## End to end: `generate --bundle` against the PyTorch pipeline (same prompts, seeds, steps)", "",
           "| runtime | sampler | steps | guidance | images | min PSNR (dB) | max abs error |", "|---|---|---|---|---|---|---|"]
    for r in e2e:
        md.append(f"| {r['runtime']} | {r['sampler']} | {r['steps']} | {r['guidance']} | {r['images']} | "
                  f"{_fmt(r['min_psnr_db'])} | {r['max_abs_error']:.2e} |")
    write_results(args.out, {"export_parity.md": "\n".join(md) + "\n", "export_parity.json": result})
    print(f"wrote {args.out / 'export_parity.json'} and .md")
