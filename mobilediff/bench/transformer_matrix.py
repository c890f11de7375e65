"""The architecture matrix of the transformer families (benchmarks/transformer_matrix.py): every variant of
:func:`mobilediff.transformer_components.tiny_specs` exported to every target and checked against PyTorch."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from mobilediff.bench import bars
from mobilediff.bench.envelope import Parser, command_line, envelope, fmt, write_results

TARGETS = ("onnx", "executorch", "coreml")
COMPONENT_BAR = bars.bar("export_fp32_component_psnr_db")


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    """The command line of ``benchmarks/transformer_matrix.py``: ``argv`` parsed, each variant exported to each
    target and checked, rows written to ``--out`` (transformer_matrix.json and .md). A failed export is a row with
    its one-line reason, not a crash."""
    from mobilediff.transformer_components import tiny_specs

    ap = Parser(doc)
    ap.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS), help="targets (default: all)")
    ap.add_argument("--variant", action="append", default=None, metavar="NAME",
                    help="only this variant, repeatable (default: all of them)")
    ap.add_argument("--no-pipelines", action="store_true",
                    help="skip the end-to-end rows (tiny PixArt-alpha and -Sigma pipelines exported whole and generated "
                         "from their bundles against diffusers' pipeline)")
    ap.add_out(results, "result folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    variants = tiny_specs()
    known = [v.name for v in variants]
    for name in args.variant or ():
        if name not in known:
            ap.error(f"unknown variant {name!r}; one of: {', '.join(known)}")
    variants = [v for v in variants if not args.variant or v.name in args.variant]

    from mobilediff.exporter import export_component

    t_start = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mobilediff-transformer-matrix-") as tmp:
        for v in variants:
            for target in args.targets:
                t0 = time.time()
                row = {"variant": v.name, "family": v.family, "component": v.component, "class": v.spec.source_class,
                       "what": v.what, "target": target, "inputs": [s.name for s in v.spec.inputs]}
                try:
                    entry = export_component(v.spec, target, "fp32", Path(tmp) / f"{v.name}-{target}")
                except Exception as e:  # noqa: BLE001 - a failed export is a result row with its reason
                    row.update({"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
                else:
                    p, facts = entry["parity"], entry["export"]
                    row.update({"ok": True, "checked": p["checked"], "psnr_db": p.get("psnr_db"),
                                "max_abs_error": p.get("max_abs_error"), "size_bytes": entry["size_bytes"],
                                "met": bars.check(COMPONENT_BAR.id, p.get("psnr_db")) if p.get("psnr_db") is not None
                                else None,
                                **{k: facts[k] for k in ("capture", "noop_squeezes_removed", "delegated_nodes",
                                                         "non_delegated_nodes", "non_delegated_ops") if k in facts}})
                row["seconds"] = round(time.time() - t0, 2)
                rows.append(row)
                print(f"{v.name} {target}: " + (f"{row.get('psnr_db') or row['checked']}" if row["ok"]
                                                 else row["error"]), flush=True)
        pipelines = [] if args.no_pipelines else pipeline_rows(Path(tmp), [t for t in args.targets if t != "coreml"])
    result = {"bar": {"id": COMPONENT_BAR.id, "psnr_db": COMPONENT_BAR.value}, "rows": rows, "pipelines": pipelines,
              **envelope("transformer_matrix", command_line("transformer_matrix", argv), t_start)}
    write_results(args.out, {"transformer_matrix.json": result, "transformer_matrix.md": markdown(result)})
    print(f"wrote {args.out / 'transformer_matrix.json'} and .md")


# (sampler, steps, guidance) each pipeline's bundle generates with: the pipeline's own DPM-Solver++ with its
# classifier-free-guidance batch, and DDIM without guidance (the masks and a one-row batch)
PLANS = (("dpmpp", 4, 4.5), ("ddim", 2, 1.0))
PROMPTS = ("a red circle on the left", "Two BIG blue squares, top right")


def pipeline_rows(work: Path, targets: list[str], seed: int = 1) -> list[dict]:
    """Tiny PixArt-alpha and PixArt-Sigma pipelines (mobilediff.transformer_family) and a PixArt transformer on a CLIP
    text encoder (mobilediff.tiny.tiny_dit_pipeline, what train-base --backbone dit writes), loaded from disk as a user's
    would be, exported whole to each runtime target and generated from their bundles by the bundle engine, against
    ``mobilediff generate --model``'s image (diffusers' own pipeline with the same sampler): one row per pipeline,
    target, plan and prompt."""
    from mobilediff.engine import BundleRunner
    from mobilediff.exporter import export_bundle
    from mobilediff.loading import load_pipeline
    from mobilediff.parity import psnr
    from mobilediff.sampling import generate
    from mobilediff.transformer_family import tiny_pixart_pipeline

    from mobilediff.loading import save_pipeline
    from mobilediff.tiny import tiny_dit_pipeline

    rows = []
    makers = {"pixart-alpha": lambda: tiny_pixart_pipeline(seed=seed),
              "pixart-sigma": lambda: tiny_pixart_pipeline(seed=seed, sigma=True),
              "pixart-clip": lambda: tiny_dit_pipeline(seed=seed)}  # train-base --backbone dit's form
    for name, make in makers.items():
        folder = work / f"pipeline-{name}"
        save_pipeline(make(), folder)
        pipe = load_pipeline(folder, transformers=True)
        for target in targets:
            t0 = time.time()
            base = {"pipeline": name, "class": type(pipe).__name__, "target": target}
            try:
                bundle = export_bundle(pipe, target, work / f"bundle-{name}-{target}", source=name, model_dir=folder,
                                       ort_format=False)
                runner = BundleRunner(bundle, target)
            except Exception as e:  # noqa: BLE001 - a failed export is a result row with its reason
                rows.append({**base, "ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
                continue
            export_s = round(time.time() - t0, 2)
            for sampler, steps, scale in PLANS:
                for k, prompt in enumerate(PROMPTS):
                    got = runner.generate(prompt, seed=k, steps=steps, sampler=sampler, guidance=scale)
                    want = generate(pipe, [prompt], [k], steps, sampler, scale)
                    rows.append({**base, "ok": True, "format_version": runner.manifest.format_version,
                                 "sampler": sampler, "steps": steps, "guidance": scale, "prompt": prompt, "seed": k,
                                 "psnr_db": round(psnr(got, want), 2),
                                 "max_abs_error": float((got - want).abs().max()),
                                 "met": bars.check(COMPONENT_BAR.id, psnr(got, want)), "export_seconds": export_s})
            print(f"{name} {target}: min {min(r['psnr_db'] for r in rows if r.get('target') == target and r.get('pipeline') == name and r['ok']):.1f} dB", flush=True)
    return rows


def compute_ops(non_delegated: dict) -> dict:
    """The operators left outside XNNPACK that compute (not the memory planner's allocations, tuple indexing, view
    and layout copies)."""
    bookkeeping = ("alloc", "getitem")
    return {op: n for op, n in non_delegated.items()
            if op not in bookkeeping and not op.endswith("_copy_default") and "dim_order" not in op}


def markdown(result: dict) -> str:
    rows = result["rows"]
    md = ["# Transformer families: every component variant on every target", "",
          f"Generated by `{result['command'].strip()}` in {result['wall_seconds'] / 60:.1f} min on "
          f"{result['machine']['cpu']} ({result['machine']['cores']} cores). Tiny random modules of diffusers' and "
          f"transformers' own classes (`mobilediff/transformer_components.py`), each exported by the exporter's "
          f"`export_component` and checked against PyTorch on seeded inputs at the traced batch (bar: fp32 >= "
          f"{result['bar']['psnr_db']:g} dB). Core ML rows are structural checks (coremltools cannot predict on "
          f"Linux). End-to-end images of the pipelines the loader takes: the table after this one.", "",
          "| variant | family | component | class | target | PSNR (dB) / check | met | XNNPACK nodes (delegated / not) | outside XNNPACK (besides memory and view ops) | capture | export (s) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["ok"]:
            cell, met = f"failed: {r['error']}", "no"
        else:
            cell = fmt(r["psnr_db"], ".1f") if r.get("psnr_db") is not None else r["checked"]
            met = {True: "yes", False: "no", None: "-"}[r.get("met")]
        xn = f"{r['delegated_nodes']} / {r['non_delegated_nodes']}" if "delegated_nodes" in r else "-"
        cap = r.get("capture", "torch.onnx" if r["target"] == "onnx" else "-")
        outside = ", ".join(f"{op} {n}" for op, n in compute_ops(r.get("non_delegated_ops", {})).items()) \
            if "non_delegated_ops" in r else "-"
        md.append(f"| {r['variant']} | {r['family']} | {r['component']} | {r['class']} | {r['target']} | {cell} | "
                  f"{met} | {xn} | {outside or 'none'} | {cap} | {r['seconds']:.1f} |")
    lowest = {}
    for r in rows:
        if r["ok"] and r.get("psnr_db") is not None:
            lowest[r["target"]] = min(lowest.get(r["target"], float("inf")), r["psnr_db"])
    md += ["", "Lowest parity per target: " + ", ".join(f"{t} {fmt(v, '.1f')} dB" for t, v in sorted(lowest.items()))
           + f"; {sum(not r['ok'] for r in rows)} of {len(rows)} exports failed."]
    pipes = result.get("pipelines") or []
    if pipes:
        md += ["", "## Whole pipelines: the bundle's image against diffusers' pipeline", "",
               "Tiny PixArt-alpha and PixArt-Sigma pipelines (`mobilediff.transformer_family.tiny_pixart_pipeline`: "
               "T5 encoder, PixArt transformer, AutoencoderKL, DPM-Solver) and a PixArt transformer on a CLIP text "
               "encoder (`pixart-clip`: `mobilediff.tiny.tiny_dit_pipeline`, what `train-base --backbone dit` writes; "
               "its bundle's tokenizer is CLIP's BPE with the caption mask) saved, loaded by `load_pipeline`, "
               "exported whole (`export_bundle`, format 2) and generated by the bundle engine (`generate --bundle`: "
               "sampler tables, caption masks, classifier-free guidance) against `generate --model` (diffusers' "
               "own pipeline with the same sampler), same prompt and seed; PSNR of the final images in [-1, 1].", "",
               "| pipeline | target | plan | prompts | lowest PSNR (dB) | largest abs error | met |",
               "|---|---|---|---|---|---|---|"]
        groups = {}
        for r in pipes:
            key = (r["pipeline"], r["target"], (r.get("sampler"), r.get("steps"), r.get("guidance")))
            groups.setdefault(key, []).append(r)
        for (name, target, plan), rs in groups.items():
            if not rs[0]["ok"]:
                md.append(f"| {name} | {target} | - | - | failed: {rs[0]['error']} | - | no |")
                continue
            md.append(f"| {name} | {target} | {plan[0]} {plan[1]} steps, guidance {plan[2]:g} | {len(rs)} | "
                      f"{fmt(min(r['psnr_db'] for r in rs), '.1f')} | {max(r['max_abs_error'] for r in rs):.2e} | "
                      f"{'yes' if all(r['met'] for r in rs) else 'no'} |")
    return "\n".join(md) + "\n"
