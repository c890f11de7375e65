"""The scaling study on the deployment axis: the claims of "Bigger is not Always Better" (rules in
:mod:`mobilediff.bench.claims`) judged with the sampling budget in three units side by side:

- ``FLOPs``: GFLOP per image (the paper's unit; ``gflops_per_image`` of the study's rows);
- ``eager``: the study's own latency (PyTorch eager, composed from component medians, ``latency_ms``);
- ``<runtime> <precision>``: the latency a phone's runtime gives the same configuration, composed from that runtime's
  component medians in run_device results of the family's bundles (``text_encoder_ms + steps x unet_ms(rows) +
  vae_decoder_ms``, :func:`mobilediff.bench.scaling.compose_latency`; one text-encoder call, as the bundle runner
  and the apps encode the unconditional prompt once).

Quality is the study's in every unit (the same fixed prompts and seeds on the PyTorch pipeline; an fp32 bundle is
checked against it at export, so its images are the same; an int8 unit borrows the float quality and says so).
A row whose pipeline, or UNet batch, a runtime did not time is left out of that unit, and the count is recorded.

Why the units can disagree: at this family's size a UNet call is bound by the number of kernels it launches, not by
its arithmetic, so time per call barely grows with FLOPs on eager PyTorch, and the largest model costs little more
per step than the smallest. :func:`step_fit` fits ``ms = fixed + slope x GFLOP`` to each unit's UNet step times
across model sizes; ``fixed / slope`` is the crossover, the GFLOP per step above which arithmetic outweighs the fixed
cost (the model is FLOP-bound). Real-size UNets (SD-1.5, BK-SDM-Tiny at 256 and 512 px, latency only) show where
real models sit on that curve.

Pure functions over rows; ``benchmarks/scaling_deploy.py`` is the command over them.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from mobilediff.bench.claims import BudgetRule, claim_a, claim_b, claim_c
from mobilediff.errors import MobilediffError

FLOPS_UNIT = "FLOPs"
EAGER_UNIT = "eager"


@dataclass(frozen=True)
class StepCost:
    """One pipeline's component medians on one runtime and precision (merged over run_device files)."""

    pipeline: str
    runtime: str
    precision: str
    text_encoder_ms: float | None
    unet_ms: dict  # UNet batch -> median ms
    vae_decoder_ms: float | None


def merge_costs(costs) -> dict[tuple[str, str, str], StepCost]:
    """(pipeline, runtime, precision) -> :class:`StepCost` from run_device cost records
    (:func:`mobilediff.configurations.device_costs` of each file): bundles with the model's own VAE decoder only
    (the study's pipelines decode with it); eager rows are left out (the study has its own). Later files fill UNet
    batches earlier ones did not time."""
    out: dict[tuple[str, str, str], StepCost] = {}
    for c in costs:
        if c.runtime == "eager" or c.decoder_model:
            continue
        key = (c.source, c.runtime, c.precision)
        old = out.get(key)
        unet = {**(old.unet_ms if old else {}), **{int(b): float(ms) for b, ms in c.unet_ms.items()}}
        out[key] = StepCost(c.source, c.runtime, c.precision,
                            c.text_encoder_ms if c.text_encoder_ms is not None else (old and old.text_encoder_ms),
                            unet,
                            c.vae_decoder_ms if c.vae_decoder_ms is not None else (old and old.vae_decoder_ms))
    return out


def units_of(costs: dict[tuple[str, str, str], StepCost]) -> list[str]:
    """The budget units available: FLOPs, eager, then every (runtime precision) timed."""
    return [FLOPS_UNIT, EAGER_UNIT] + sorted({f"{rt} {prec}" for (_, rt, prec) in costs})


def rows_in_unit(rows: list[dict], unit: str, costs: dict[tuple[str, str, str], StepCost]) -> tuple[list[dict], int]:
    """The study's rows with ``latency_ms`` the budget cost in ``unit`` (and ``latency_parts`` where composed), and how
    many rows the unit could not cost (a pipeline or UNet batch the runtime did not time)."""
    from mobilediff.bench.scaling import compose_latency

    if unit == FLOPS_UNIT:
        return [{**r, "latency_ms": float(r["gflops_per_image"])} for r in rows], 0
    if unit == EAGER_UNIT:
        return [dict(r) for r in rows], 0
    runtime, _, precision = unit.partition(" ")
    out, dropped = [], 0
    for r in rows:
        # a student without bundles of its own costs what its teacher's components cost on the runtime: the same UNet
        # architecture (an LCM student's adds the guidance embedding's one linear layer), text encoder and decoder
        own = costs.get((r["pipeline"], runtime, precision))
        c = own or costs.get((r["model"], runtime, precision))
        unet = c.unet_ms.get(int(r["unet_rows"])) if c else None
        if c is None or unet is None or c.text_encoder_ms is None or c.vae_decoder_ms is None:
            dropped += 1
            continue
        ms = compose_latency(c.text_encoder_ms, unet, c.vae_decoder_ms, int(r["steps"]))
        out.append({**r, "runtime": runtime, "precision": precision, "latency_ms": ms,
                    "latency_parts": {"text_encoder_ms": c.text_encoder_ms, "text_encoder_calls": 1,
                                      "unet_step_ms": unet, "vae_decoder_ms": c.vae_decoder_ms},
                    "latency_kind": "composed" if own else "composed (the teacher's component medians)"})
    return out, dropped


def judge(rows: list[dict], costs: dict[tuple[str, str, str], StepCost], rule: BudgetRule = BudgetRule()) -> list[dict]:
    """Per unit: {"unit", "rows", "dropped", "models", "unit_rows" (:func:`rows_in_unit`), "verdicts": claims (a),
    (b), (c)} (claim (d) does not depend on
    the budget's unit). A unit where fewer than two model sizes have rows gives no verdicts and says so."""
    out = []
    for unit in units_of(costs):
        urows, dropped = rows_in_unit(rows, unit, costs)
        models = sorted({r["model"] for r in urows})
        entry = {"unit": unit, "rows": len(urows), "dropped": dropped, "models": models, "unit_rows": urows}
        if len(models) < 2:
            entry["verdicts"] = []
            entry["reason"] = f"{len(models)} model size(s) costed in this unit: no comparison"
        else:
            entry["verdicts"] = [claim_a(urows, rule), claim_b(urows, rule), claim_c(urows, rule)]
            if unit == FLOPS_UNIT:  # the rules speak of budgets in ms; here a budget is GFLOP per image
                for v in entry["verdicts"]:
                    v["evidence"] = re.sub(r"(\d) ms\b", r"\1 GFLOP", v["evidence"])
        out.append(entry)
    return out


def step_points(rows: list[dict], unit: str, costs: dict[tuple[str, str, str], StepCost]) -> list[dict]:
    """One UNet step per teacher model in ``unit`` (a latency unit) at batch 1: {"model", "unet_params", "gflop",
    "ms"}; the GFLOP of one step is the difference of two of the model's rows at different step counts, divided by
    the difference of their steps."""
    out = []
    for model in sorted({r["model"] for r in rows}):
        teacher = [r for r in rows if r["pipeline"] == model and r["unet_rows"] == 1]
        if len(teacher) < 2:
            continue
        a, b = min(teacher, key=lambda r: r["steps"]), max(teacher, key=lambda r: r["steps"])
        if a["steps"] == b["steps"]:
            continue
        gflop = (b["gflops_per_image"] - a["gflops_per_image"]) / (b["steps"] - a["steps"])
        if unit == EAGER_UNIT:
            ms = (b.get("latency_parts") or {}).get("unet_step_ms")
        else:
            runtime, _, precision = unit.partition(" ")
            c = costs.get((model, runtime, precision))
            ms = c.unet_ms.get(1) if c else None
        if ms is not None:
            out.append({"model": model, "unet_params": a["unet_params"], "gflop": gflop, "ms": float(ms)})
    return out


def step_fit(points: list[tuple[float, float]]) -> dict | None:
    """Least squares ``ms = fixed_ms + ms_per_gflop x gflop`` over (gflop, ms) points (at least two distinct GFLOP
    values): {"fixed_ms", "ms_per_gflop", "r2", "n", "crossover_gflop"} where the crossover is ``fixed / slope`` (the
    GFLOP per step at which arithmetic costs as much as the fixed part; None when the slope is not positive)."""
    pts = [(float(g), float(m)) for g, m in points if math.isfinite(g) and math.isfinite(m)]
    if len({g for g, _ in pts}) < 2:
        return None
    n = len(pts)
    mg = sum(g for g, _ in pts) / n
    mm = sum(m for _, m in pts) / n
    sxx = sum((g - mg) ** 2 for g, _ in pts)
    sxy = sum((g - mg) * (m - mm) for g, m in pts)
    slope = sxy / sxx
    fixed = mm - slope * mg
    ss_tot = sum((m - mm) ** 2 for _, m in pts)
    ss_res = sum((m - fixed - slope * g) ** 2 for g, m in pts)
    return {"fixed_ms": fixed, "ms_per_gflop": slope, "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0, "n": n,
            "crossover_gflop": fixed / slope if slope > 0 and fixed > 0 else None}


def params_at(gflop: float, points: list[dict]) -> float | None:
    """UNet parameters at ``gflop`` per step, log-log interpolated (or extrapolated from the two nearest) between the
    family's step points; None with fewer than two."""
    pts = sorted({(p["gflop"], p["unet_params"]) for p in points if p["gflop"] > 0 and p["unet_params"] > 0})
    if len(pts) < 2 or gflop <= 0:
        return None
    lo, hi = pts[0], pts[1]
    for a, b in zip(pts, pts[1:]):
        lo, hi = a, b
        if gflop <= b[0]:
            break
    t = (math.log(gflop) - math.log(lo[0])) / (math.log(hi[0]) - math.log(lo[0]))
    return math.exp(math.log(lo[1]) + t * (math.log(hi[1]) - math.log(lo[1])))


def kernel_bound_table(rows: list[dict], costs: dict[tuple[str, str, str], StepCost],
                       real: list[dict] | None = None) -> list[dict]:
    """Per latency unit: the family's UNet step points, the fit (:func:`step_fit`) and the crossover in GFLOP per
    step and in UNet parameters; ``real`` points ({"label", "runtime", "gflop", "ms"}, real-size UNets) of the same
    runtime are listed beside, with the fit's prediction for each (how far the family's line reaches)."""
    out = []
    for unit in units_of(costs)[1:]:
        pts = step_points(rows, unit, costs)
        fit = step_fit([(p["gflop"], p["ms"]) for p in pts])
        runtime, _, precision = ("eager fp32" if unit == EAGER_UNIT else unit).partition(" ")
        reals = [dict(p) for p in (real or []) if p["runtime"] == runtime and p.get("precision", "fp32") == precision]
        for p in reals:
            p["family_fit_ms"] = (fit["fixed_ms"] + fit["ms_per_gflop"] * p["gflop"]) if fit else None
        cross = fit and fit["crossover_gflop"]
        out.append({"unit": unit, "points": pts, "fit": fit, "crossover_gflop": cross,
                    "crossover_params": params_at(cross, pts) if cross else None, "real": reals})
    return out


def check_rows(rows, path: str) -> list[dict]:
    """The study's rows with the fields this analysis reads; MobilediffError naming the first row that lacks one."""
    need = ("model", "pipeline", "method", "sampler", "steps", "guidance", "unet_rows", "unet_params",
            "gflops_per_image", "latency_ms", "prompt_accuracy")
    if not isinstance(rows, list) or not rows:
        raise MobilediffError(f"{path}: expected the scaling study's rows (benchmarks/scaling.py's scaling.json)")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or any(k not in r for k in need):
            missing = [k for k in need if not isinstance(r, dict) or k not in r]
            raise MobilediffError(f"corrupt {path}: row {i} lacks {', '.join(missing)}")
    return rows


# ------------------------------------------------------------------------------------------ real-size UNet points
def real_points(result: dict) -> list[dict]:
    """Per measured row of a real_architectures result (``benchmarks/real_architectures.py``: real-size UNets with
    random weights, latency only): {"label", "runtime" (pytorch -> eager), "gflop" (one call at the row's inputs,
    counted on the meta device: no weights are made), "ms", "params"}."""
    import torch
    from diffusers import UNet2DConditionModel

    from mobilediff.flops import count_gflop

    archs, out, counted = result.get("architectures") or {}, [], {}
    precision = (result.get("settings") or {}).get("precision", "fp32")
    for r in result.get("rows") or []:
        lat = r.get("latency") or {}
        if r.get("status") != "ok" or lat.get("median_ms") is None or r.get("arch") not in archs:
            continue
        shapes = r.get("input_shapes") or {}
        key = (r["arch"], tuple(shapes.get("sample") or ()), tuple(shapes.get("encoder_hidden_states") or ()))
        if key not in counted:
            with torch.device("meta"):
                unet = UNet2DConditionModel(**archs[r["arch"]]["unet_config"]).eval()
                sample = torch.randn(*key[1])
                inputs = (sample, torch.full((key[1][0],), 10), torch.randn(*key[2]))
                counted[key] = count_gflop(unet, inputs)
        out.append({"label": f"{archs[r['arch']].get('title', r['arch'])} {r.get('resolution')} px, batch "
                             f"{key[1][0]}", "runtime": "eager" if r["runtime"] == "pytorch" else r["runtime"],
                    "precision": "fp32" if r["runtime"] == "pytorch" else precision,
                    "gflop": counted[key], "ms": float(lat["median_ms"]),
                    "params": archs[r["arch"]].get("params")})
    return out


# ------------------------------------------------------------------------------------------------- the report
def write_markdown(result: dict) -> str:
    s = result["settings"]
    lines = ["# The scaling study on the deployment axis", "",
             f"Generated by `{result['command']}` ({result['created']}). Quality: the scaling study's rows "
             f"(`{s['scaling']}`, the same fixed prompts and seeds for every row, PyTorch fp32). Runtime latencies: "
             f"composed from the component medians of {', '.join(f'`{d}`' for d in s['device']) or 'no file'} "
             "(text encoder once + steps x UNet step at the row's batch + VAE decoder; a student without bundles of "
             "its own at its teacher's medians: the same UNet architecture, an LCM student's with one more linear "
             "layer); an int8 unit keeps the float quality (not measured at int8). Rules: "
             "mobilediff/bench/claims.py.", "",
             "## Verdicts per budget unit", "",
             "| unit | rows (left out) | models | (a) smaller wins under a budget | (b) whichever sampler | "
             "(c) after distillation |", "|---|---|---|---|---|---|"]
    for j in result["judged"]:
        v = {x["claim"]: x["verdict"] for x in j["verdicts"]}
        cells = [v.get(c, "not measured") for c in "abc"] if j["verdicts"] else [j.get("reason", "-")] * 3
        lines.append(f"| {j['unit']} | {j['rows']} ({j['dropped']}) | {', '.join(j['models'])} | "
                     + " | ".join(f"**{c}**" if c in ("holds", "does not hold", "mixed") else c for c in cells) + " |")
    lines += ["", "Evidence:", ""]
    for j in result["judged"]:
        for x in j["verdicts"]:
            lines.append(f"- {j['unit']} ({x['claim']}): {x['evidence']}")
    lines += ["", "## Kernel-bound or FLOP-bound: one UNet step against its FLOPs", "",
              "Fit `ms = fixed + slope x GFLOP` over the family's teachers at batch 1; the crossover is `fixed / "
              "slope`, the GFLOP per step above which arithmetic outweighs the fixed (per-kernel) cost, and the UNet "
              "size there (log-log interpolation over the family, extrapolated beyond it).", "",
              "| unit | family points (model: GFLOP, ms, GFLOP/s) | fixed ms | ms per GFLOP | r2 | crossover GFLOP | "
              "crossover UNet params |", "|---|---|---|---|---|---|---|"]
    for t in result["kernel_bound"]:
        f = t["fit"] or {}
        pts = "; ".join(f"{p['model']}: {p['gflop']:.3f}, {p['ms']:.2f}, {1000 * p['gflop'] / p['ms']:.0f}"
                        for p in t["points"]) or "-"
        cross = f"{t['crossover_gflop']:.3g}" if t["crossover_gflop"] else "none"
        params = f"{t['crossover_params']:,.0f}" if t["crossover_params"] else "-"
        lines.append(f"| {t['unit']} | {pts} | {f.get('fixed_ms', float('nan')):.3f} | "
                     f"{f.get('ms_per_gflop', float('nan')):.3f} | {f.get('r2', float('nan')):.3f} | {cross} | {params} |")
    reals = [(t["unit"], p) for t in result["kernel_bound"] for p in t["real"]]
    if reals:
        lines += ["", "Real-size UNets (random weights, latency only) against the family's line (a local fit: where a "
                  "real-size UNet runs at more GFLOP/s than the family's largest, the line over-predicts its time):", "",
                  "| unit | UNet | GFLOP per call | measured ms | GFLOP/s | the family's line predicts ms |",
                  "|---|---|---|---|---|---|"]
        for unit, p in reals:
            pred = f"{p['family_fit_ms']:.0f}" if p.get("family_fit_ms") is not None else "-"
            lines.append(f"| {unit} | {p['label']} | {p['gflop']:.1f} | {p['ms']:.0f} | "
                         f"{1000 * p['gflop'] / p['ms']:.0f} | {pred} |")
    return "\n".join(lines) + "\n"


def plot(result: dict):
    """Left: one UNet step's time against its GFLOP per unit (family points, fit, real-size UNets), log-log. Right:
    the best prompt accuracy within a budget per model, one panel row per unit."""
    from mobilediff.bench.claims import best_under, budget_grid
    from mobilediff.bench.envelope import pyplot

    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    judged = [j for j in result["judged"] if j["verdicts"]]
    fig, axes = plt.subplots(1, 1 + len(judged), figsize=(4.2 * (1 + len(judged)), 3.8), squeeze=False)
    ax = axes[0][0]
    for i, t in enumerate(result["kernel_bound"]):
        color = f"C{i}"
        pts = t["points"] + [{"gflop": p["gflop"], "ms": p["ms"]} for p in t["real"]]
        if not pts:
            continue
        ax.scatter([p["gflop"] for p in t["points"]], [p["ms"] for p in t["points"]], color=color, label=t["unit"])
        ax.scatter([p["gflop"] for p in t["real"]], [p["ms"] for p in t["real"]], color=color, marker="x")
        if t["fit"]:
            lo, hi = min(p["gflop"] for p in pts), max(p["gflop"] for p in pts)
            xs = [lo * (hi / lo) ** (k / 40) for k in range(41)]
            ys = [t["fit"]["fixed_ms"] + t["fit"]["ms_per_gflop"] * x for x in xs]
            ax.plot([x for x, y in zip(xs, ys) if y > 0], [y for y in ys if y > 0], color=color, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GFLOP per UNet call")
    ax.set_ylabel("ms per UNet call")
    ax.set_title("step time vs FLOPs (x: real-size UNets)", fontsize=9)
    ax.legend(fontsize=7)
    for ax, j in zip(axes[0][1:], judged):
        rows = j["unit_rows"]
        grid = budget_grid(rows, 24)
        for m in sorted({r["model"] for r in rows}, key=lambda m: max(r["unet_params"] for r in rows
                                                                       if r["model"] == m)):
            ys = [(b, best_under(rows, b).get(m)) for b in grid]
            ax.plot([b for b, r in ys if r], [r["prompt_accuracy"] for b, r in ys if r], marker="o", ms=3, label=m)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("GFLOP per image" if j["unit"] == FLOPS_UNIT else "ms per image")
        ax.set_title(f"{j['unit']}: (a) {j['verdicts'][0]['verdict']}", fontsize=9)
        ax.set_ylabel("best prompt accuracy within the budget")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    """``benchmarks/scaling_deploy.py``: the study's rows and run_device results in, the verdicts per unit and the
    kernel-bound table out (scaling_deploy.json, .md, .png in ``--out``)."""
    import time

    from mobilediff.bench.envelope import Parser, command_line, envelope, json_safe, savefig, write_results
    from mobilediff.configurations import device_costs
    from mobilediff.recommend import read_json

    ap = Parser(doc)
    ap.add_argument("--scaling", type=Path, default=(results or Path(".")) / "scaling.json",
                    help="the scaling study's rows (default: benchmarks/results/scaling.json)")
    ap.add_argument("--device", type=Path, nargs="+", default=[], metavar="RUN_DEVICE_JSON",
                    help="run_device results of the family's bundles (component medians per runtime and precision)")
    ap.add_argument("--real", type=Path, nargs="*", default=[], metavar="REAL_ARCHITECTURES_JSON",
                    help="real_architectures results: real-size UNets placed on the step-time curve")
    ap.add_out(results, "result folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    t0 = time.time()

    rows = check_rows(read_json(args.scaling, "--scaling"), str(args.scaling))
    costs = merge_costs([c for d in args.device for c in device_costs(read_json(d, "--device"), str(d))])
    real = [p for f in args.real for p in real_points(read_json(f, "--real"))]
    judged = judge(rows, costs)
    def rel(p: Path) -> str:
        import os
        root = Path(__file__).resolve().parents[2]
        return os.path.relpath(p.resolve(), root)

    result = {**envelope("scaling_deploy", command_line("scaling_deploy", argv), t0),
              "settings": {"scaling": rel(args.scaling), "device": [rel(d) for d in args.device],
                           "real": [rel(f) for f in args.real]},
              "judged": judged, "kernel_bound": kernel_bound_table(rows, costs, real)}
    record = {**result, "judged": [{k: v for k, v in j.items() if k != "unit_rows"} for j in judged]}
    write_results(args.out, {"scaling_deploy.png": savefig(plot(result)), "scaling_deploy.md": write_markdown(result),
                             "scaling_deploy.json": json_safe(record)})
    for j in judged:
        verdicts = ", ".join(f"({x['claim']}) {x['verdict']}" for x in j["verdicts"]) or j.get("reason", "")
        print(f"{j['unit']}: {verdicts}")
    for t in result["kernel_bound"]:
        if t["crossover_gflop"]:
            print(f"{t['unit']}: crossover at {t['crossover_gflop']:.3g} GFLOP per step"
                  + (f" (~{t['crossover_params']:,.0f} UNet parameters)" if t["crossover_params"] else ""))
    print(f"wrote {args.out / 'scaling_deploy.md'}, .json and .png")
