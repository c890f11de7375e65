"""Every distinct convolution of a real UNet architecture on XNNPACK, whole and split over input channels as the
exporter lowers it (:func:`mobilediff.targets.xnnpack_forms.split_wide_convs`), each timed from an ETDump, summed
over one UNet step; and the whole UNet step profiled both ways. ``benchmarks/xnnpack_convs.py`` runs :func:`main`;
its docstring tells why the split exists and what is measured."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from mobilediff.bench.envelope import Parser, command_line, count, envelope, fmt, pyplot, savefig, write_results

def conv_configs(arch: str, scale: str, resolution: int, seed: int) -> list[dict]:
    """The distinct Conv2d calls of one UNet step at ``resolution`` (CFG batch 2), with how often each occurs."""
    import collections

    import torch

    from mobilediff.bench.real_architectures import build_spec

    spec = build_spec(arch, scale, resolution, None, seed)
    seen: collections.Counter = collections.Counter()

    def hook(m, inputs, _out):
        x = inputs[0]
        seen[(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups, tuple(x.shape))] += 1

    handles = [m.register_forward_hook(hook) for m in spec.module.modules() if type(m) is torch.nn.Conv2d]
    with torch.no_grad():
        spec.module(*spec.example_inputs(seed))
    for h in handles:
        h.remove()
    return [{"in_channels": ci, "out_channels": co, "kernel": list(k), "stride": list(s), "padding": list(p),
             "groups": g, "input_shape": list(shape), "count": n}
            for (ci, co, k, s, p, g, shape), n in seen.items()]


def measure_conv(cfg: dict, runs: int, warmup: int, seed: int, folder: Path) -> dict:
    """One convolution: eager, XNNPACK whole and XNNPACK as the exporter lowers it (kernel times from an ETDump)."""
    import torch

    from mobilediff.bench.op_profile import profile_executorch
    from mobilediff.bench.stats import time_callable
    from mobilediff.targets import xnnpack_forms
    from mobilediff.targets.executorch import lower

    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cfg["in_channels"], cfg["out_channels"], tuple(cfg["kernel"]), tuple(cfg["stride"]),
                           tuple(cfg["padding"]), groups=cfg["groups"]).eval()
    x = torch.randn(cfg["input_shape"])
    with torch.no_grad():
        out = conv(x)
        eager = sorted(time_callable(lambda: conv(x), warmup, runs))[runs // 2]
    gflop = 2 * out.numel() * (cfg["in_channels"] // cfg["groups"]) * cfg["kernel"][0] * cfg["kernel"][1] / 1e9
    budget = xnnpack_forms.CONV_WEIGHT_BUDGET_BYTES
    parts = xnnpack_forms.split_parts(conv, budget)
    row = {**cfg, "weight_mib": conv.weight.numel() * 4 / 2**20, "parts": parts, "gflop": gflop, "eager_ms": eager}
    for name, conv_budget in (("whole", float("inf")), ("split", budget)):
        if name == "split" and parts == 1:
            row["split_ms"] = row["whole_ms"]
            continue
        program, _ = lower(conv, (x,), conv_budget=conv_budget)
        path = folder / f"{name}.pte"
        path.write_bytes(program.buffer)
        prof = profile_executorch(path, [x], runs, warmup)
        path.unlink()
        # a 1x1 convolution runs as XNNPACK's fully connected operator
        row[f"{name}_ms"] = sum(ms for op, ms in prof["ops"].items()
                                if op.startswith(("Convolution", "Fully Connected", "Add", "Slice")))
    for name in ("eager", "whole", "split"):
        row[f"{name}_gflops_per_s"] = gflop / (row[f"{name}_ms"] / 1e3) if row[f"{name}_ms"] else None
    return row


def unet_profile(arch: str, scale: str, resolution: int, seed: int, runs: int, warmup: int, folder: Path,
                 split: bool, threads: int = 2) -> dict:
    """One UNet step lowered as the exporter lowers it (``split``) or with every convolution whole, profiled, in a
    process of its own (a lowering's memory is given back only when its process ends)."""
    from mobilediff.bench.real_architectures import cell_profile, run_cell
    from mobilediff.errors import MobilediffError
    from mobilediff.targets import xnnpack_forms

    job = {"arch": arch, "scale": scale, "resolution": resolution, "batch": None, "seed": seed, "runs": runs,
           "warmup": warmup, "threads": threads, "max_memory_bytes": None, "dir": str(folder),
           "budget": xnnpack_forms.CONV_WEIGHT_BUDGET_BYTES if split else None}
    out, peak_mib, error = run_cell(cell_profile, job, folder, f"unet-{'split' if split else 'whole'}", 3 * 3600.0)
    if error:
        raise MobilediffError(f"profiling the {arch} UNet ({'split' if split else 'whole'}) failed: {error}")
    return {**out, "peak_rss_mib": peak_mib}


def totals(rows: list[dict]) -> dict:
    """Eager, whole and as-exported milliseconds, GFLOP and convolutions of one UNet step: each row times its count."""
    t = {f"{k}_ms": sum(r[f"{k}_ms"] * r["count"] for r in rows) for k in ("eager", "whole", "split")}
    t["gflop"] = sum(r["gflop"] * r["count"] for r in rows)
    t["convolutions"] = sum(r["count"] for r in rows)
    t["split_convolutions"] = sum(r["count"] for r in rows if r["parts"] > 1)
    return t


def write_markdown(res: dict) -> str:
    s, t = res["settings"], res["totals"]
    lines = ["# XNNPACK convolutions, whole and split over input channels", "",
             f"`{res['command']}`", "",
             f"Every distinct convolution of the {s['arch']} UNet (scale {s['scale']}, seeded random weights) at "
             f"{s['resolution']} px with the CFG batch of 2, lowered alone for XNNPACK; {s['runs']} profiled calls "
             f"after {s['warmup']} warm-up, {s['threads']} thread(s), median; machine: "
             f"{res['machine'].get('cpu') or res['machine'].get('platform')} ({res['machine'].get('cores', '?')} cores), "
             f"load average {res['machine'].get('load_average', ['?'])[0]} at the end. XNNPACK times are the "
             "convolution kernels' own (an ETDump), with a split one's input slices and partial-sum adds; eager is the whole "
             f"call. Split rule: weight over {s['budget_mib']:g} MiB -> groups of input channels of at most that "
             "much weight each.", "",
             "| in | out | kernel | stride | input | count | weight MiB | parts | GFLOP | eager ms | whole ms | "
             "as exported ms | eager GFLOP/s | whole GFLOP/s | as exported GFLOP/s |",
             "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['in_channels']} | {r['out_channels']} | {r['kernel'][0]}x{r['kernel'][1]} | "
                     f"{r['stride'][0]} | {'x'.join(map(str, r['input_shape'][2:]))} | {r['count']} | "
                     f"{r['weight_mib']:.1f} | {r['parts']} | {r['gflop']:.2f} | {r['eager_ms']:.1f} | "
                     f"{r['whole_ms']:.1f} | {r['split_ms']:.1f} | {fmt(r['eager_gflops_per_s'], '.0f')} | "
                     f"{fmt(r['whole_gflops_per_s'], '.0f')} | {fmt(r['split_gflops_per_s'], '.0f')} |")
    lines += ["", f"Over one UNet step ({t['convolutions']} convolutions, {t['gflop']:.0f} GFLOP, "
              f"{t['split_convolutions']} of them split): eager {t['eager_ms']:.0f} ms, XNNPACK whole "
              f"{t['whole_ms']:.0f} ms, XNNPACK as exported {t['split_ms']:.0f} ms.", ""]
    if res.get("unet"):
        from mobilediff.bench.op_profile import KINDS

        whole, split = res["unet"]["whole"], res["unet"]["split"]
        lines += ["## The whole UNet step", "",
                  f"Lowered with every convolution whole and as exported ({split['facts']['split_convolutions']} "
                  f"convolutions split), {s['unet_runs']} profiled calls after 1 warm-up each (ms per call; a profiled "
                  "call runs a little slower than an unprofiled one).", "",
                  "| lowering | total ms | " + " | ".join(KINDS) + " | delegated subgraphs |",
                  "|---|---:|" + "---:|" * len(KINDS) + "---:|"]
        for name, p in (("whole", whole), ("as exported", split)):
            lines.append(f"| {name} | {p['total_ms']:.0f} | " + " | ".join(f"{p['kinds'][k]:.0f}" for k in KINDS)
                         + f" | {p['facts']['delegated_subgraphs']} |")
        lines += ["", "| XNNPACK kernel | whole ms | as exported ms |", "|---|---:|---:|"]
        for op in list(dict.fromkeys([*whole["ops"], *split["ops"]]))[:12]:
            lines.append(f"| {op} | {whole['ops'].get(op, 0.0):.1f} | {split['ops'].get(op, 0.0):.1f} |")
        lines.append("")
    return "\n".join(lines)


def plot(res: dict):
    plt = pyplot()
    unet = res.get("unet")
    fig, axes = plt.subplots(1, 2 if unet else 1, figsize=(13 if unet else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    rows = res["rows"]
    mib = [r["weight_mib"] for r in rows]
    ax.scatter(mib, [r["whole_gflops_per_s"] or 0 for r in rows], label="XNNPACK, whole", marker="o")
    ax.scatter(mib, [r["split_gflops_per_s"] or 0 for r in rows], label="XNNPACK, as exported", marker="x")
    ax.scatter(mib, [r["eager_gflops_per_s"] or 0 for r in rows], label="PyTorch eager", marker=".")
    ax.axvline(res["settings"]["budget_mib"], color="grey", linestyle=":", label="split above this weight")
    ax.set_xscale("log")
    ax.set_xlabel("convolution weight (MiB, fp32)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"{res['settings']['arch']} convolutions at {res['settings']['resolution']} px, "
                 f"{res['settings']['threads']} thread(s)")
    ax.legend(fontsize=8)
    if unet:
        ax = axes[0][1]
        ops = list(dict.fromkeys([*unet["whole"]["ops"], *unet["split"]["ops"]]))[:8]
        y = range(len(ops))
        ax.barh([i + 0.2 for i in y], [unet["whole"]["ops"].get(o, 0.0) for o in ops], 0.4, label="whole")
        ax.barh([i - 0.2 for i in y], [unet["split"]["ops"].get(o, 0.0) for o in ops], 0.4, label="as exported")
        ax.set_yticks(list(y), [o[:34] for o in ops], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms per profiled UNet step")
        ax.set_title(f"UNet step: {unet['whole']['total_ms']:.0f} ms whole, {unet['split']['total_ms']:.0f} ms as exported")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return savefig(fig)


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    """The command line of ``benchmarks/xnnpack_convs.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, every distinct
    convolution (and unless ``--no-unet`` the whole UNet) measured, written to ``--out``; returns the result.
    ``doc``: the script's docstring (its ``--help``); ``results``: the default ``--out`` (None: ``--out`` is
    required)."""
    from mobilediff.bench.real_architectures import SCALES, UNET_ARCHITECTURES as ARCHITECTURES

    ap = Parser(doc)
    ap.add_argument("--arch", choices=sorted(ARCHITECTURES), default="sd15", help="UNet architecture (default sd15)")
    ap.add_argument("--scale", choices=sorted(SCALES), default="full", help="channel widths (default full)")
    ap.add_argument("--resolution", type=count(8), default=512, help="image size in pixels (default 512)")
    ap.add_argument("--runs", type=count(1), default=5, help="timed calls after warm-up (default 5)")
    ap.add_argument("--warmup", type=count(0), default=2, help="untimed calls first (default 2)")
    ap.add_argument("--threads", type=count(1), default=2, help="threads of every runtime (default 2)")
    ap.add_argument("--seed", type=count(0), default=0, help="weights and inputs seed (default 0)")
    ap.add_argument("--unet-runs", type=count(1), default=2, help="profiled whole-UNet calls (default 2)")
    ap.add_argument("--no-unet", action="store_true", help="skip the whole-UNet profiles")
    ap.add_out(results, "result folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    started = time.time()

    import torch
    from tqdm.auto import tqdm

    from mobilediff.bench.host import import_runtime
    from mobilediff.bench.real_architectures import build_spec
    from mobilediff.targets.xnnpack_forms import CONV_WEIGHT_BUDGET_BYTES

    build_spec(args.arch, "tiny", args.resolution, None, args.seed)  # a resolution the UNet cannot take, cheaply
    torch.set_num_threads(args.threads)
    import_runtime("executorch", args.threads)
    configs = conv_configs(args.arch, args.scale, args.resolution, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for cfg in tqdm(configs, desc="convolutions"):
            rows.append(measure_conv(cfg, args.runs, args.warmup, args.seed, Path(td)))
        unet = None
        if not args.no_unet:
            unet = {name: unet_profile(args.arch, args.scale, args.resolution, args.seed, args.unet_runs, 1, Path(td),
                                       name == "split", args.threads)
                    for name in tqdm(("whole", "split"), desc="whole UNet, profiled")}
    res = {**envelope("xnnpack_convs", command_line("xnnpack_convs", argv), started),
           "settings": {"arch": args.arch, "scale": args.scale, "resolution": args.resolution, "batch": 2,
                        "runs": args.runs, "warmup": args.warmup, "threads": args.threads, "seed": args.seed,
                        "budget_mib": CONV_WEIGHT_BUDGET_BYTES / 2**20, "unet_runs": args.unet_runs},
           "rows": rows, "totals": totals(rows), "unet": unet}
    write_results(args.out, {"xnnpack_convs.md": write_markdown(res), "xnnpack_convs.png": plot(res),
                             "xnnpack_convs.json": res})
    return res
