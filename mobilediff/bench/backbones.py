"""The backbone study: a UNet and a diffusion transformer of equal FLOPs per call, trained with the same recipe on
the same data (the shapes domain, frozen default text encoder and VAE, v-prediction on the family's schedule, the
same steps and batch: equal training compute), compared on quality against cost.

Every row is one (model, sampler, steps, guidance) scored on the fixed prompts and noise seeds of the scaling study
(:func:`mobilediff.bench.scaling.measure`, whose rows, caching and --reuse it takes), and costed in every unit the
inputs give: FLOPs, PyTorch eager (composed from this run's component medians) and each runtime and precision of a
run_device result over both models' bundles (--device; composed from its component medians as
:mod:`mobilediff.bench.deploy_scaling` does). A budget's winner is the model with the higher best prompt accuracy
within it, by more than the rule's margin (else a tie).

Training compute per model is read from its training.json: optimizer steps x global batch x 3 x the denoiser's
forward GFLOP at one row (forward and backward, the common 3x estimate), and the wall time the run recorded.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from mobilediff.bench.envelope import Parser, command_line, count, finite, json_safe, pyplot, savefig, write_results
from mobilediff.errors import MobilediffError

OUTPUT_NAMES = ("backbones.json", "backbones.md", "backbones.png")
MARGIN = 0.02  # prompt accuracy: a budget's winner must lead by more than this (else a tie)


def default_pairs() -> list[tuple[str, str]]:
    """(UNet, DiT) of every registered diffusion transformer whose UNet size is registered too."""
    from mobilediff.loading import DIT_FAMILY, NAMED_MODELS

    return [(f"default:unet-{m.size}", m.name) for m in DIT_FAMILY if f"default:unet-{m.size}" in NAMED_MODELS]


def training_record(path: Path) -> dict:
    """What a model's training.json says of its denoiser stage: steps, batch, wall seconds, torch threads, backbone."""
    f = Path(path) / "training.json"
    try:
        info = json.loads(f.read_text())
        c, st = info["config"], info["stats"]
        return {"steps": int(st["unet_steps"]), "batch": int(c["batch_size"]), "seconds": float(st.get("unet_seconds", 0)),
                "threads": info.get("machine", {}).get("torch_threads"),
                "backbone": c.get("model", {}).get("backbone", "unet"), "lr": c.get("lr"),
                "text_encoder_frozen": bool(c.get("freeze_text_encoder"))}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MobilediffError(f"cannot read the training record {f}: {e}") from None


def budgets(rows: list[dict], n: int = 10) -> list[float]:
    """``n`` budgets spaced evenly in log from the first at which every model has a configuration (the dearest of the
    models' cheapest) to the dearest configuration."""
    by_model: dict[str, list[float]] = {}
    for r in rows:
        by_model.setdefault(r["pipeline"], []).append(r["latency_ms"])
    lo, hi = max(min(v) for v in by_model.values()), max(r["latency_ms"] for r in rows)
    if hi <= lo:
        return [lo]
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def budget_table(rows: list[dict], labels: tuple[str, str], margin: float = MARGIN) -> list[dict]:
    """For each budget (:func:`budgets` over the rows' ``latency_ms``): each model's best prompt accuracy within it
    (None: nothing fits) and the winner ("tie" within ``margin``)."""
    out = []
    for b in budgets(rows):
        best = {}
        for label in labels:
            fit = [r for r in rows if r["pipeline"] == label and r["latency_ms"] <= b * (1 + 1e-9)]
            top = max(fit, key=lambda r: r["prompt_accuracy"], default=None)
            best[label] = None if top is None else {"prompt_accuracy": top["prompt_accuracy"], "fd": top["fd"],
                                                    "config": f"{top['sampler']}-{top['steps']} g{top['guidance']:g}",
                                                    "cost": top["latency_ms"]}
        a, d = (best[x]["prompt_accuracy"] if best[x] else -1.0 for x in labels)
        winner = labels[0] if a > d + margin else labels[1] if d > a + margin else "tie"
        out.append({"budget": b, "best": best, "winner": winner})
    return out


def unit_rows(rows: list[dict], costs: dict) -> dict[str, list[dict]]:
    """unit -> the rows costed in it (FLOPs, eager, each runtime and precision of ``costs``)."""
    from mobilediff.bench.deploy_scaling import rows_in_unit, units_of

    out = {}
    for unit in units_of(costs):
        got, _ = rows_in_unit(rows, unit, costs)
        labels = {r["pipeline"] for r in got}
        if len(labels) == len({r["pipeline"] for r in rows}):  # a unit is compared only where both models are timed
            out[unit] = got
    return out


def equal_steps(rows: list[dict], labels: tuple[str, str]) -> list[dict]:
    """Per (sampler, steps): each model's best prompt accuracy over the guidance sweep, with its FD and guidance."""
    out = []
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        for steps in sorted({r["steps"] for r in rows if r["sampler"] == sampler}):
            entry = {"sampler": sampler, "steps": steps}
            for label in labels:
                cand = [r for r in rows if r["pipeline"] == label and r["sampler"] == sampler and r["steps"] == steps]
                top = max(cand, key=lambda r: (r["prompt_accuracy"], -r["fd"]), default=None)
                entry[label] = None if top is None else {"prompt_accuracy": top["prompt_accuracy"], "fd": top["fd"],
                                                         "guidance": top["guidance"]}
            out.append(entry)
    return out


def measure(unet: str, dit: str, n: int, samplers, steps, guidance, threads: int, runs: int, cache, reuse,
            device: list[Path], command: str) -> dict:
    from mobilediff.bench.deploy_scaling import merge_costs
    from mobilediff.bench.envelope import envelope
    from mobilediff.bench.scaling import ScalingConfig, measure as scaling_measure, resolve_subjects
    from mobilediff.configurations import device_costs

    t0 = time.time()
    costs = []
    for f in device:
        try:
            costs += device_costs(json.loads(Path(f).read_text()), str(f))
        except (OSError, ValueError) as e:
            raise MobilediffError(f"--device {f}: cannot read it ({e})") from None
    merged = merge_costs(costs)
    models, _ = resolve_subjects([unet, dit], [])
    cfg = ScalingConfig(models=models, samplers=tuple(samplers), steps=tuple(steps), guidance=tuple(guidance), n=n,
                        threads=threads, runs=runs, cache=cache, reuse=reuse)
    study = scaling_measure(cfg, command)
    rows, labels = study["rows"], (unet, dit)
    info = {}
    for m in study["meta"]["models"]:
        subject = next(s for s in models if s.label == m["label"])
        train = training_record(subject.path)
        step_gflop = m["gflop"]["unet"].get(1) or m["gflop"]["unet"].get("1")
        train["tflop"] = 3 * step_gflop * train["batch"] * train["steps"] / 1e3
        info[m["label"]] = {"params": m["unet_params"], "gflop_per_call": step_gflop, "training": train,
                            "weights_sha256": m["weights_sha256"], "latency": m["latency"],
                            "latency_check": m["latency_check"]}
    units = unit_rows(rows, {k: v for k, v in merged.items() if k[0] in labels})
    meta = {"models": info, "labels": list(labels), "n": n, "margin": MARGIN,
            "settings": study["meta"]["settings"], "fd_real_vs_real": study["meta"]["fd_real_vs_real"],
            "device_results": [str(f) for f in device],
            "equal_steps": equal_steps(rows, labels),
            "budgets": {unit: budget_table(r, labels) for unit, r in units.items()},
            **envelope("backbones", command, t0)}
    return {"rows": rows, "unit_rows": units, "meta": meta}


def _acc(entry) -> str:
    return "-" if not entry else f"{entry['prompt_accuracy']:.3f}"


def write_markdown(result: dict) -> str:
    meta = result["meta"]
    u, d = meta["labels"]
    mu, md = meta["models"][u], meta["models"][d]
    lines = ["# Backbones: a UNet and a diffusion transformer at equal FLOPs and equal training compute", "",
             f"`{meta['command']}`", "",
             f"Quality: prompt accuracy and FD on {meta['n']} fixed prompts and noise seeds (the scaling study's); "
             f"FD of real against real images: {meta['fd_real_vs_real']:.3f}. Machine: {meta['machine'].get('cpu', '')} "
             f"({meta['machine'].get('cores', '?')} cores); latency with {meta['settings']['threads']} thread(s).", "",
             "## Models", "",
             "| model | denoiser | parameters | GFLOP per call | training | training compute | training wall time |",
             "|---|---|---|---|---|---|---|"]
    for label, m in ((u, mu), (d, md)):
        t = m["training"]
        lines.append(f"| `{label}` | {t['backbone']} | {m['params']:,} | {m['gflop_per_call']:.4f} | {t['steps']} steps x "
                     f"batch {t['batch']}, lr {t['lr']} | {t['tflop']:.1f} TFLOP (3 x forward) | "
                     f"{t['seconds'] / 60:.0f} min on {t['threads']} thread(s) |")
    lines += ["", "Training wall times come from each run's record; other work shared the machine during both, so "
              "they are not a compute measure (the TFLOP column is).", "",
              "## Equal steps (best guidance of the sweep per row)", "",
              f"| sampler | steps | `{u}` | `{d}` | difference |", "|---|---|---|---|---|"]
    for e in meta["equal_steps"]:
        a, b = e[u], e[d]
        diff = f"{b['prompt_accuracy'] - a['prompt_accuracy']:+.3f}" if a and b else "-"
        lines.append(f"| {e['sampler']} | {e['steps']} | {_acc(a)} (g{a['guidance']:g}, FD {a['fd']:.2f}) | "
                     f"{_acc(b)} (g{b['guidance']:g}, FD {b['fd']:.2f}) | {diff} |")
    heading = f"## Budgets (best prompt accuracy within each; the winner leads by more than {meta['margin']})"
    lines += ["", heading, "", "| unit | UNet wins | DiT wins | ties |", "|---|---|---|---|"]
    for unit, table in meta["budgets"].items():
        wins = [r["winner"] for r in table]
        lines.append(f"| {unit} | {wins.count(u)} | {wins.count(d)} | {wins.count('tie')} |")
    lines.append("")
    for unit, table in meta["budgets"].items():
        lines += [f"### {unit}", "", f"| budget | `{u}` | `{d}` | winner |", "|---|---|---|---|"]
        for r in table:
            budget = f"{r['budget']:.3f} GFLOP" if unit == "FLOPs" else f"{r['budget']:.1f} ms"
            cells = [f"{_acc(r['best'][x])} ({r['best'][x]['config']})" if r["best"][x] else "-" for x in (u, d)]
            lines.append(f"| {budget} | {cells[0]} | {cells[1]} | {r['winner']} |")
        lines.append("")
    lines += ["## Composition checks (eager)", "", "| model | configuration | measured | composed | error |",
              "|---|---|---|---|---|"]
    for label in (u, d):
        c = meta["models"][label]["latency_check"]
        if c:
            lines.append(f"| `{label}` | {c['sampler']}-{c['steps']} g{c['guidance']:g} | {c['measured_ms']:.1f} ms | "
                         f"{c['composed_ms']:.1f} ms | {100 * c['relative_error']:+.0f} % |")
    return "\n".join(lines) + "\n"


def plot(result: dict):
    plt = pyplot()
    meta = result["meta"]
    labels = meta["labels"]
    units = list(result["unit_rows"])
    samplers = list(dict.fromkeys(e["sampler"] for e in meta["equal_steps"]))
    fig, axes = plt.subplots(1, len(samplers) + len(units), figsize=(4.2 * (len(samplers) + len(units)), 3.8))
    colors = dict(zip(labels, ("tab:blue", "tab:orange")))
    for ax, sampler in zip(axes, samplers):
        for label in labels:
            pts = [(e["steps"], e[label]["prompt_accuracy"]) for e in meta["equal_steps"]
                   if e["sampler"] == sampler and e[label]]
            ax.plot(*zip(*pts), "o-", color=colors[label], label=label)
        ax.set_xscale("log")
        ax.set(title=f"{sampler}: best guidance", xlabel="steps", ylabel="prompt accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax, unit in zip(axes[len(samplers):], units):
        for label in labels:
            rs = sorted((r for r in result["unit_rows"][unit] if r["pipeline"] == label), key=lambda r: r["latency_ms"])
            ax.scatter([r["latency_ms"] for r in rs], [r["prompt_accuracy"] for r in rs], s=8, alpha=0.4,
                       color=colors[label])
            front, best = [], -1.0
            for r in rs:
                if r["prompt_accuracy"] > best:
                    best = r["prompt_accuracy"]
                    front.append((r["latency_ms"], best))
            ax.step(*zip(*front), where="post", color=colors[label], label=label)
        ax.set_xscale("log")
        ax.set(title=unit, xlabel="GFLOP per image" if unit == "FLOPs" else "ms per image", ylabel="prompt accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("UNet against diffusion transformer at equal FLOPs per call", fontsize=10)
    fig.tight_layout()
    return fig


def build_parser(doc: str = "", results: Path | None = None) -> Parser:
    from mobilediff.bench.scaling import default_cache

    ap = Parser(doc)
    ap.add_argument("--unet", default=None, metavar="NAME_OR_DIR",
                    help="the UNet model (default: default:unet-<size> of the registered diffusion transformer)")
    ap.add_argument("--dit", default=None, metavar="NAME_OR_DIR",
                    help="the diffusion transformer (default: the registered default:dit-<size>)")
    ap.add_argument("--n", type=count(2), default=128, help="prompts (and images) per row (default 128)")
    ap.add_argument("--samplers", nargs="+", default=["ddim", "dpmpp"], help="samplers (default: ddim dpmpp)")
    ap.add_argument("--steps", type=count(1), nargs="+", default=[1, 2, 4, 8, 16, 32, 50],
                    help="step counts (default: 1 2 4 8 16 32 50)")
    ap.add_argument("--guidance", type=finite(0), nargs="+", default=[1.0, 2.0, 3.5, 6.0],
                    help="guidance sweep (default: 1 2 3.5 6)")
    ap.add_argument("--threads", type=count(1), default=1, help="CPU threads of the eager latency (default 1)")
    ap.add_argument("--runs", type=count(1), default=20, help="timed calls per component (default 20)")
    ap.add_argument("--device", type=Path, nargs="*", default=[], metavar="RUN_DEVICE_JSON",
                    help="run_device results over both models' bundles: a budget unit per runtime and precision")
    ap.add_argument("--cache", type=Path, default=default_cache(), metavar="DIR",
                    help="scored rows kept here, shared with the scaling study (default: %(default)s)")
    ap.add_argument("--no-cache", action="store_true", help="score every row again and keep nothing")
    ap.add_argument("--reuse", type=Path, default=None, metavar="RESULTS",
                    help="a scaling study's result folder whose rows of the same models are taken after a check "
                         "(the UNet's, typically)")
    ap.add_out(results, "result folder (default benchmarks/results)")
    return ap


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    """``benchmarks/backbones.py``: the two models measured, the tables and the plot written to ``--out``."""
    args = build_parser(doc, results).parse_args(argv)
    for f in args.device:
        if not Path(f).is_file():
            raise MobilediffError(f"--device {f}: no such file")
    if (args.unet is None) != (args.dit is None):
        raise MobilediffError("give both --unet and --dit, or neither (the registered pair)")
    if args.unet is None:
        pairs = default_pairs()
        if not pairs:
            raise MobilediffError("no diffusion transformer is registered (mobilediff/assets/family/dit-<size>/ with "
                                  "its unet-<size>/): give --unet and --dit")
        args.unet, args.dit = pairs[-1]
    result = measure(args.unet, args.dit, args.n, args.samplers, args.steps, args.guidance, args.threads, args.runs,
                     None if args.no_cache else args.cache, args.reuse, args.device, command_line("backbones", argv))
    write_results(args.out, {"backbones.json": json_safe({"rows": result["rows"], "meta": result["meta"]}),
                             "backbones.md": write_markdown(result), "backbones.png": savefig(plot(result))})
    for unit, table in result["meta"]["budgets"].items():
        wins = [r["winner"] for r in table]
        print(f"{unit}: {args.unet} wins {wins.count(args.unet)}, {args.dit} wins {wins.count(args.dit)}, "
              f"ties {wins.count('tie')} of {len(wins)} budgets")
    print(f"wrote {Path(args.out) / 'backbones.md'}")
