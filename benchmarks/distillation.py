"""Few-step students against their 50-step teacher: LCM and progressive students at 1, 2, 4, 8 steps next to the
teacher with DDIM and DPM-Solver++ at the same step counts and the teacher's 50-step DDIM.

Every row is scored on the same fixed prompts and noise seeds (n >= 256) with the shapes-domain evaluator.
Guidance is swept for every row that takes it (the teacher's samplers: a CFG batch, 2 UNet calls per step; the
LCM student: its guidance embedding, 1 call per step); progressive students sample without guidance (it is
distilled in). The table keeps the best guidance per (method, steps) and lists every row.

Writes to --out (default benchmarks/results/):
  distillation.json       list of rows: method, steps, nfe, guidance, prompt_accuracy, fd, attribute accuracy
  distillation_meta.json  models and their hashes, students' training time and machine, targets, wall time
  distillation.md         best row per method and step count, the targets checked, every row
  distillation.png        prompt accuracy and FD against steps, per method
  distillation_grid.png   the same prompts and seeds from the teacher (DDIM-50) and each student at 1 and 4 steps

Run:  python benchmarks/distillation.py --lcm DIR --progressive DIR   (about 15 minutes on 2 CPU cores)
      DIR: a student pipeline (lcm) or a folder of steps-N pipelines (progressive); default: the committed ones.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilediff.benchmarking import library_versions, machine_info, tree_sha256  # noqa: E402
from mobilediff.evaluator import Evaluator  # noqa: E402
from mobilediff.io import atomic_path, atomic_write_bytes, atomic_write_json  # noqa: E402
from mobilediff.loading import load_pipeline, resolve_model  # noqa: E402
from mobilediff.quality import EVAL_SEED, NOISE_SEED, eval_scenes, evaluate_pipeline, progress_batches  # noqa: E402

TARGETS = {"4-step prompt accuracy / teacher": 0.95, "4-step FD / teacher": 1.5, "1-step prompt accuracy / teacher": 0.85}
METHOD_LABEL = {"teacher-ddim50": "teacher, DDIM 50 steps", "teacher-ddim": "teacher, DDIM",
                "teacher-dpmpp": "teacher, DPM-Solver++", "lcm": "LCM student", "progressive": "progressive student"}


def best_rows(rows: list[dict]) -> list[dict]:
    """For each (method, steps): the row with the highest prompt accuracy (lower FD breaks ties)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        k = (r["method"], r["steps"])
        if k not in best or (r["prompt_accuracy"], -r["fd"]) > (best[k]["prompt_accuracy"], -best[k]["fd"]):
            best[k] = r
    order = list(METHOD_LABEL)
    return sorted(best.values(), key=lambda r: (order.index(r["method"]), r["steps"]))


def check_targets(rows: list[dict]) -> list[dict]:
    """Each issue target per student method: the measured ratio, the bar, and whether it is met."""
    best = {(r["method"], r["steps"]): r for r in best_rows(rows)}
    ref = best[("teacher-ddim50", 50)]
    out = []
    for method in ("lcm", "progressive"):
        for steps, key, bar, higher in ((4, "prompt_accuracy", 0.95, True), (4, "fd", 1.5, False),
                                        (1, "prompt_accuracy", 0.85, True)):
            r = best.get((method, steps))
            if r is None:
                continue
            ratio = r[key] / ref[key]
            out.append({"method": method, "steps": steps, "metric": key, "ratio_to_teacher": ratio, "bar": bar,
                        "met": ratio >= bar if higher else ratio <= bar, "value": r[key], "teacher": ref[key]})
    return out


def reuse_teacher_rows(path: Path, teacher_sha: str, n: int, steps: list[int], guidance: list[float]) -> list[dict]:
    """The teacher's rows from benchmarks/baseline_quality.py's results, if (and only if) its meta file records the
    same teacher weights (sha256), prompt set, noise seeds and n; else []. Same prompts and seeds make them the
    very numbers this script would measure."""
    meta_path = path.with_name(path.stem + "_meta.json")
    if not path.is_file() or not meta_path.is_file():
        return []
    meta = json.loads(meta_path.read_text())
    if (meta.get("model_sha256"), meta.get("n"), meta.get("prompt_seed"), meta.get("noise_seed")) != \
            (teacher_sha, n, EVAL_SEED, NOISE_SEED):
        return []
    out = []
    for r in json.loads(path.read_text()):
        if r["sampler"] == "ddim" and r["steps"] == 50 and r["guidance"] == 3.5:
            method = "teacher-ddim50"
        elif r["sampler"] in ("ddim", "dpmpp") and r["steps"] in steps and r["guidance"] in guidance:
            method = f"teacher-{r['sampler']}"
        else:
            continue
        out.append({"method": method, **{k: r[k] for k in ("sampler", "steps", "nfe", "guidance", "prompt_accuracy",
                                                           "fd", "n", "attribute_accuracy")}})
    return out if any(r["method"] == "teacher-ddim50" for r in out) else []


def write_markdown(rows: list[dict], meta: dict, path: Path) -> None:
    lines = ["# Step distillation: students against the 50-step teacher", "",
             f"{meta['n']} prompts of the fixed evaluation set (seed {meta['prompt_seed']}), noise seeds "
             f"{meta['noise_seed']}..{meta['noise_seed'] + meta['n'] - 1}, the same for every row. NFE = UNet "
             f"evaluations per image (a CFG step costs 2). Machine: {meta['machine']['cpu']}, "
             f"{meta['machine']['cores']} cores. Generated by `{meta['command']}` in {meta['wall_seconds'] / 60:.1f} min.",
             "", *([f"The teacher's rows are those of `{Path(meta['teacher_rows_from']).name}` (benchmarks/baseline_quality.py), "
                   "measured on the same teacher weights (sha256 checked), prompts and seeds.", ""]
                  if meta.get("teacher_rows_from") else []),
             "## Best guidance per method and step count", "",
             "| method | steps | NFE | guidance | prompt accuracy | FD | background | position | shape | colour | size | count |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in best_rows(rows):
        a = r["attribute_accuracy"]
        lines.append(f"| {METHOD_LABEL[r['method']]} | {r['steps']} | {r['nfe']} | {r['guidance']} | "
                     f"{r['prompt_accuracy']:.3f} | {r['fd']:.1f} | {a['background']:.3f} | {a['position']:.3f} | "
                     f"{a['shape']:.3f} | {a['color']:.3f} | {a['size']:.3f} | {a['count']:.3f} |")
    lines += ["", "## Targets (against the teacher's DDIM-50 at its best guidance)", "",
              "| student | steps | metric | student | teacher | ratio | bar | met |", "|---|---|---|---|---|---|---|---|"]
    for t in meta["targets"]:
        op = ">=" if t["metric"] == "prompt_accuracy" else "<="
        lines.append(f"| {t['method']} | {t['steps']} | {t['metric']} | {t['value']:.3f} | {t['teacher']:.3f} | "
                     f"{t['ratio_to_teacher']:.3f} | {op} {t['bar']} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", "## Training of the students", "", "| student | optimizer steps | batch | training time | machine |",
              "|---|---|---|---|---|"]
    for name, s in meta["students"].items():
        lines.append(f"| {name} | {s['train_steps']} | {s['batch_size']} | {s['train_seconds'] / 60:.1f} min | "
                     f"{s['machine']} |")
    lines += ["", "## Every row", "", "| method | steps | guidance | prompt accuracy | FD |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['steps']} | {r['guidance']} | {r['prompt_accuracy']:.3f} | {r['fd']:.1f} |")
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_rows(rows)
    ref = next(r for r in best if r["method"] == "teacher-ddim50")
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, marker in (("teacher-ddim", "o"), ("teacher-dpmpp", "s"), ("lcm", "^"), ("progressive", "D")):
        rs = [r for r in best if r["method"] == method]
        if not rs:
            continue
        for a, key in ((ax[0], "prompt_accuracy"), (ax[1], "fd")):
            a.plot([r["steps"] for r in rs], [r[key] for r in rs], marker=marker, label=METHOD_LABEL[method])
    for a, key in ((ax[0], "prompt_accuracy"), (ax[1], "fd")):
        a.axhline(ref[key], color="k", ls="--", lw=1, label="teacher, DDIM 50 steps")
        a.set_xscale("log", base=2)
        a.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        a.set_xlabel("sampling steps")
        a.grid(alpha=0.3)
    ax[0].axhline(0.95 * ref["prompt_accuracy"], color="g", ls=":", lw=1, label="95 % of teacher (4-step bar)")
    ax[0].axhline(0.85 * ref["prompt_accuracy"], color="r", ls=":", lw=1, label="85 % of teacher (1-step bar)")
    ax[1].axhline(1.5 * ref["fd"], color="g", ls=":", lw=1, label="1.5x teacher FD (4-step bar)")
    ax[0].set_ylabel("prompt accuracy (best guidance)")
    ax[1].set_ylabel("FD (best guidance)")
    ax[1].set_yscale("log")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    fig.suptitle("Few-step students against the 50-step DDIM teacher")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def sample_grid(columns: list[tuple[str, object, str, int, float]], path: Path, n_prompts: int = 8) -> None:
    """Rows: prompts; columns: (label, pipeline, sampler, steps, guidance), the same noise seed per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobilediff.data import to_uint8
    from mobilediff.sampling import generate

    scenes = eval_scenes(n_prompts)
    prompts = [s.caption for s in scenes]
    seeds = [NOISE_SEED + 20_000 + i for i in range(n_prompts)]
    cols = [to_uint8(generate(pipe, prompts, seeds, steps, sampler, g)) for _, pipe, sampler, steps, g in columns]
    fig, axes = plt.subplots(n_prompts, len(columns), figsize=(len(columns) * 1.4 + 4.5, n_prompts * 1.4))
    for j, (label, *_rest) in enumerate(columns):
        axes[0, j].set_title(label, fontsize=7)
        for i in range(n_prompts):
            axes[i, j].imshow(cols[j][i], interpolation="nearest")
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
    for i, p in enumerate(prompts):
        axes[i, 0].set_ylabel(p, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _student_info(path: Path) -> dict:
    d = json.loads((path / "distillation.json").read_text())
    m = d["machine"]
    return {"path": str(path), "sha256": tree_sha256(path), "train_steps": d["stats"]["train_steps"],
            "train_seconds": d["stats"]["train_seconds"], "batch_size": d["config"]["batch_size"],
            "command": d["command"], "machine": f"{m['processor']}, {m['torch_threads']} threads, "
                                                f"accelerator {m.get('accelerator', 'none')}"}


def main(argv=None) -> None:
    from mobilediff.loading import DEFAULT_STUDENTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", default="default", help="teacher pipeline folder or 'default'")
    ap.add_argument("--lcm", type=Path, default=DEFAULT_STUDENTS / "lcm", help="LCM student pipeline")
    ap.add_argument("--progressive", type=Path, default=DEFAULT_STUDENTS / "progressive",
                    help="folder of steps-N progressive students")
    ap.add_argument("--n", type=int, default=256, help="prompts (and images) per row")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--teacher-guidance", type=float, nargs="+", default=[1.0, 2.0, 3.5, 6.0])
    ap.add_argument("--lcm-guidance", type=float, nargs="+", default=[1.5, 2.5, 3.5, 5.0])
    ap.add_argument("--teacher-rows", type=Path, default=ROOT / "benchmarks" / "results" / "baseline_quality.json",
                    help="take the teacher's rows from this baseline_quality.json when it was measured on the same "
                         "teacher weights, prompts and seeds (its _meta.json says so); else they are measured here")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    from tqdm.auto import tqdm

    t0 = time.time()
    teacher = load_pipeline(args.teacher)
    lcm = load_pipeline(args.lcm)
    progressive = {k: load_pipeline(args.progressive / f"steps-{k}") for k in args.steps
                   if (args.progressive / f"steps-{k}").is_dir()}
    evaluator = Evaluator.load()
    real = evaluator.real_features(eval_scenes(args.n))
    teacher_sha = tree_sha256(resolve_model(args.teacher))
    reused = reuse_teacher_rows(args.teacher_rows, teacher_sha, args.n, args.steps, args.teacher_guidance)
    if reused:
        print(f"teacher rows: {len(reused)} from {args.teacher_rows} (same teacher weights, prompts and seeds)")
        plan = []
    else:
        plan = [("teacher-ddim50", teacher, "ddim", 50, g, 2) for g in args.teacher_guidance if g == 3.5]
        plan += [(f"teacher-{s}", teacher, s, k, g, 2 if g > 1 else 1) for s in ("ddim", "dpmpp") for k in args.steps
                 for g in args.teacher_guidance]
    plan += [("lcm", lcm, "lcm", k, g, 1) for k in args.steps for g in args.lcm_guidance]
    plan += [("progressive", pipe, "ddim", k, 1.0, 1) for k, pipe in progressive.items()]
    rows = list(reused)
    total = progress_batches(args.n) * sum(k * f for *_, k, _g, f in plan)
    with tqdm(total=total, desc="distillation quality (UNet calls per batch)") as bar:
        for method, pipe, sampler, steps, g, f in plan:
            rep = evaluate_pipeline(pipe, evaluator, sampler, steps, g, n=args.n, real_features=real,
                                    progress=lambda k, f=f: bar.update(k * f))
            rows.append({"method": method, "sampler": sampler, "steps": steps, "nfe": steps * f, "guidance": g,
                         "prompt_accuracy": rep.prompt_accuracy, "fd": rep.fd, "n": rep.n,
                         "attribute_accuracy": rep.attribute_accuracy})
            bar.set_postfix(last=f"{method}-{steps} g{g}: acc {rep.prompt_accuracy:.3f} fd {rep.fd:.1f}")
    best = {(r["method"], r["steps"]): r for r in best_rows(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    cols = [("teacher DDIM-50", teacher, "ddim", 50, best[("teacher-ddim50", 50)]["guidance"])]
    for k in (1, 4):
        if ("teacher-ddim", k) in best:
            cols.append((f"teacher DDIM-{k}", teacher, "ddim", k, best[("teacher-ddim", k)]["guidance"]))
        if ("lcm", k) in best:
            cols.append((f"LCM {k} step{'s' * (k > 1)}", lcm, "lcm", k, best[("lcm", k)]["guidance"]))
        if k in progressive:
            cols.append((f"progressive {k} step{'s' * (k > 1)}", progressive[k], "ddim", k, 1.0))
    sample_grid(cols, args.out / "distillation_grid.png")
    students = {"lcm": _student_info(args.lcm)}
    students.update({f"progressive steps-{k}": _student_info(args.progressive / f"steps-{k}") for k in progressive})
    meta = {"teacher": str(args.teacher), "teacher_sha256": teacher_sha,
            "teacher_rows_from": str(args.teacher_rows) if reused else None,
            "students": students, "n": args.n, "prompt_seed": EVAL_SEED, "noise_seed": NOISE_SEED,
            "targets": check_targets(rows), "machine": machine_info(), "versions": library_versions(),
            "wall_seconds": time.time() - t0,
            "command": "python benchmarks/distillation.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    atomic_write_json(args.out / "distillation.json", rows)
    atomic_write_json(args.out / "distillation_meta.json", meta)
    write_markdown(rows, meta, args.out / "distillation.md")
    plot(rows, args.out / "distillation.png")
    for t in meta["targets"]:
        print(f"{t['method']} {t['steps']}-step {t['metric']}: {t['value']:.3f} vs teacher {t['teacher']:.3f} "
              f"(ratio {t['ratio_to_teacher']:.3f}, bar {t['bar']}): {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
