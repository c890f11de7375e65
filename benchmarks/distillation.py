"""Few-step students against their 50-step teacher: LCM and progressive students at 1, 2, 4, 8 steps next to the
teacher with DDIM and DPM-Solver++ at the same step counts and the teacher's 50-step DDIM, and the slim student
(`distill --method slim`: a student's UNet with blocks removed) at its own plan.

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

Run:  python benchmarks/distillation.py --lcm DIR --progressive DIR --slim DIR   (about 15 minutes on 2 CPU cores)
      DIR: a student pipeline (lcm, slim) or a folder of steps-N pipelines (progressive); default: the committed
      ones; a folder that does not exist is left out (progressive, slim).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mobilediff.bench import bars
from mobilediff.bench.envelope import (Parser, command_line, count, envelope, finite, pyplot, run_command, savefig,
                                       write_results)
from mobilediff.bench.sweep import Point, best_rows as best_by, image_grid, sweep
from mobilediff.errors import MobilediffError
from mobilediff.io import tree_sha256
from mobilediff.quality import EVAL_SEED, NOISE_SEED, eval_scenes

RESULTS = Path(__file__).resolve().parent / "results"
# the bars checked, each on the best row of a student at a step count: (bar id, steps, metric)
CHECKS = (("student_4step_accuracy_ratio", 4, "prompt_accuracy"), ("student_4step_fd_ratio", 4, "fd"),
          ("student_1step_accuracy_ratio", 1, "prompt_accuracy"))
METHOD_LABEL = {"teacher-ddim50": "teacher, DDIM 50 steps", "teacher-ddim": "teacher, DDIM",
                "teacher-dpmpp": "teacher, DPM-Solver++", "lcm": "LCM student", "progressive": "progressive student",
                "slim": "slim student (blocks removed)"}


def best_rows(rows: list[dict]) -> list[dict]:
    """For each (method, steps): the best row (mobilediff.bench.sweep.best_rows), in METHOD_LABEL and step order."""
    best = best_by(rows, ("method", "steps"))
    order = list(METHOD_LABEL)
    return sorted(best.values(), key=lambda r: (order.index(r["method"]), r["steps"]))


def check_targets(rows: list[dict]) -> list[dict]:
    """The student bars (mobilediff.bench.bars) per student method: the measured ratio, the bar, whether it is met."""
    best = {(r["method"], r["steps"]): r for r in best_rows(rows)}
    ref = best[("teacher-ddim50", 50)]
    out = []
    for method in ("lcm", "progressive", "slim"):
        for bar_id, steps, key in CHECKS:
            r = best.get((method, steps))
            if r is None:
                continue
            ratio = r[key] / ref[key]
            out.append({"method": method, "steps": steps, "metric": key, "bar_id": bar_id,
                        "ratio_to_teacher": ratio, "bar": bars.bar(bar_id).value, "op": bars.bar(bar_id).op,
                        "met": bars.check(bar_id, ratio), "value": r[key], "teacher": ref[key]})
    return out


def reuse_teacher_rows(path: Path, teacher_sha: str, n: int, steps: list[int], guidance: list[float]) -> list[dict]:
    """The teacher's rows from benchmarks/baseline_quality.py's results, if (and only if) its meta file records the
    same teacher weights (sha256), prompt set, noise seeds and n; else []. Same prompts and seeds make them the
    very numbers this script would measure."""
    meta_path = path.with_name(path.stem + "_meta.json")
    if not path.is_file() or not meta_path.is_file():
        return []
    meta = _read_json(meta_path)
    if not isinstance(meta, dict):
        raise MobilediffError(f"corrupt {meta_path}: expected an object")
    if (meta.get("model_sha256"), meta.get("n"), meta.get("prompt_seed"), meta.get("noise_seed")) != \
            (teacher_sha, n, EVAL_SEED, NOISE_SEED):
        return []
    out = []
    try:
        for r in _read_json(path):
            if r["sampler"] == "ddim" and r["steps"] == 50 and r["guidance"] == 3.5:
                method = "teacher-ddim50"
            elif r["sampler"] in ("ddim", "dpmpp") and r["steps"] in steps and r["guidance"] in guidance:
                method = f"teacher-{r['sampler']}"
            else:
                continue
            out.append({"method": method, **{k: r[k] for k in ("sampler", "steps", "nfe", "guidance",
                                                               "prompt_accuracy", "fd", "n", "attribute_accuracy")}})
    except (KeyError, TypeError) as e:
        raise MobilediffError(f"corrupt {path}: a row lacks {e} (not baseline_quality.py's rows)") from None
    return out if any(r["method"] == "teacher-ddim50" for r in out) else []


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MobilediffError(f"corrupt {path}: {e}") from None


def write_markdown(rows: list[dict], meta: dict) -> str:
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
        op = t.get("op") or bars.bar(t["bar_id"]).op
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
    return "\n".join(lines) + "\n"


def plot(rows: list[dict]):
    plt = pyplot()

    best = best_rows(rows)
    ref = next(r for r in best if r["method"] == "teacher-ddim50")
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, marker in (("teacher-ddim", "o"), ("teacher-dpmpp", "s"), ("lcm", "^"), ("progressive", "D"),
                           ("slim", "*")):
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
    acc4, fd4, acc1 = (bars.bar(b).value for b, _, _ in CHECKS)
    ax[0].axhline(acc4 * ref["prompt_accuracy"], color="g", ls=":", lw=1, label=f"{acc4:.0%} of teacher (4-step bar)")
    ax[0].axhline(acc1 * ref["prompt_accuracy"], color="r", ls=":", lw=1, label=f"{acc1:.0%} of teacher (1-step bar)")
    ax[1].axhline(fd4 * ref["fd"], color="g", ls=":", lw=1, label=f"{fd4:g}x teacher FD (4-step bar)")
    ax[0].set_ylabel("prompt accuracy (best guidance)")
    ax[1].set_ylabel("FD (best guidance)")
    ax[1].set_yscale("log")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    fig.suptitle("Few-step students against the 50-step DDIM teacher")
    fig.tight_layout()
    return fig


def sample_grid(columns: list[tuple[str, object, str, int, float]], n_prompts: int = 8):
    """Rows: prompts; columns: (label, pipeline, sampler, steps, guidance), the same noise seed per row."""
    from mobilediff.data import to_uint8
    from mobilediff.sampling import generate

    prompts = [s.caption for s in eval_scenes(n_prompts)]
    seeds = [NOISE_SEED + 20_000 + i for i in range(n_prompts)]
    images = [to_uint8(generate(pipe, prompts, seeds, steps, sampler, g)) for _, pipe, sampler, steps, g in columns]
    return image_grid(images, prompts, [c[0] for c in columns], None, cell=1.4)


def _student_info(path: Path) -> dict:
    d = _read_json(path / "distillation.json")
    try:
        m = d["machine"]
        return {"path": str(path), "sha256": tree_sha256(path), "train_steps": d["stats"]["train_steps"],
                "train_seconds": d["stats"]["train_seconds"], "batch_size": d["config"]["batch_size"],
                "command": d["command"], "machine": f"{m['processor']}, {m['torch_threads']} threads, "
                                                    f"accelerator {m.get('accelerator', 'none')}"}
    except (KeyError, TypeError) as e:
        raise MobilediffError(f"corrupt {path / 'distillation.json'}: no {e} (not written by mobilediff distill)") from None


def main(argv: list[str] | None = None) -> None:
    from mobilediff.evaluator import Evaluator
    from mobilediff.loading import DEFAULT_STUDENTS, load_pipeline, resolve_model

    ap = Parser(__doc__)
    ap.add_argument("--teacher", default="default", help="teacher pipeline folder or 'default'")
    ap.add_argument("--lcm", type=Path, default=DEFAULT_STUDENTS / "lcm", help="LCM student pipeline")
    ap.add_argument("--progressive", type=Path, default=DEFAULT_STUDENTS / "progressive",
                    help="folder of steps-N progressive students")
    ap.add_argument("--slim", type=Path, default=DEFAULT_STUDENTS / "slim-4",
                    help="slim student pipeline (distill --method slim), scored at its own plan")
    ap.add_argument("--n", type=count(2), default=256, help="prompts (and images) per row")
    ap.add_argument("--steps", type=count(1), nargs="+", default=[1, 2, 4, 8], help="step counts")
    ap.add_argument("--teacher-guidance", type=finite(0), nargs="+", default=[1.0, 2.0, 3.5, 6.0], help="teacher sweep")
    ap.add_argument("--lcm-guidance", type=finite(0), nargs="+", default=[1.5, 2.5, 3.5, 5.0], help="LCM student sweep")
    ap.add_argument("--teacher-rows", type=Path, default=RESULTS / "baseline_quality.json",
                    help="take the teacher's rows from this baseline_quality.json when it was measured on the same "
                         "teacher weights, prompts and seeds (its _meta.json says so); else they are measured here")
    ap.add_argument("--out", type=Path, default=RESULTS, help="result folder (default benchmarks/results)")
    args = ap.parse_args(argv)

    t0 = time.time()
    teacher = load_pipeline(args.teacher)
    lcm = load_pipeline(args.lcm)
    progressive = {k: load_pipeline(args.progressive / f"steps-{k}") for k in args.steps
                   if (args.progressive / f"steps-{k}").is_dir()}
    slim = load_pipeline(args.slim) if args.slim.is_dir() else None
    slim_plan = None
    if slim is not None:
        from mobilediff.card import distillation_record

        record = distillation_record(args.slim)
        slim_plan = record["sampling"] if record else None
        if slim_plan is None:
            raise MobilediffError(f"--slim {args.slim}: not a distilled student (no distillation.json)")
    evaluator = Evaluator.load()
    real = evaluator.real_features(eval_scenes(args.n))
    teacher_sha = tree_sha256(resolve_model(args.teacher))
    reused = reuse_teacher_rows(args.teacher_rows, teacher_sha, args.n, args.steps, args.teacher_guidance)
    points = []
    if reused:
        print(f"teacher rows: {len(reused)} from {args.teacher_rows} (same teacher weights, prompts and seeds)")
    else:
        points += [Point(teacher, "ddim", 50, g, {"method": "teacher-ddim50"}) for g in args.teacher_guidance if g == 3.5]
        points += [Point(teacher, s, k, g, {"method": f"teacher-{s}"}) for s in ("ddim", "dpmpp") for k in args.steps
                   for g in args.teacher_guidance]
    points += [Point(lcm, "lcm", k, g, {"method": "lcm"}) for k in args.steps for g in args.lcm_guidance]
    points += [Point(pipe, "ddim", k, 1.0, {"method": "progressive"}) for k, pipe in progressive.items()]
    if slim is not None:
        points.append(Point(slim, slim_plan["sampler"], int(slim_plan["steps"]), float(slim_plan["guidance"]),
                            {"method": "slim"}))
    rows = list(reused) + sweep(points, evaluator, args.n, real, "distillation quality (UNet calls per batch)")
    best = {(r["method"], r["steps"]): r for r in best_rows(rows)}
    cols = [("teacher DDIM-50", teacher, "ddim", 50, best[("teacher-ddim50", 50)]["guidance"])]
    for k in (1, 4):
        if ("teacher-ddim", k) in best:
            cols.append((f"teacher DDIM-{k}", teacher, "ddim", k, best[("teacher-ddim", k)]["guidance"]))
        if ("lcm", k) in best:
            cols.append((f"LCM {k} step{'s' * (k > 1)}", lcm, "lcm", k, best[("lcm", k)]["guidance"]))
        if k in progressive:
            cols.append((f"progressive {k} step{'s' * (k > 1)}", progressive[k], "ddim", k, 1.0))
        if ("slim", k) in best:
            cols.append((f"slim {k} step{'s' * (k > 1)}", slim, slim_plan["sampler"], k, float(slim_plan["guidance"])))
    students = {"lcm": _student_info(args.lcm)}
    students.update({f"progressive steps-{k}": _student_info(args.progressive / f"steps-{k}") for k in progressive})
    if slim is not None:
        students["slim"] = _student_info(args.slim)
    meta = {"teacher": str(args.teacher), "teacher_sha256": teacher_sha,
            "teacher_rows_from": str(args.teacher_rows) if reused else None,
            "students": students, "n": args.n, "prompt_seed": EVAL_SEED, "noise_seed": NOISE_SEED,
            "targets": check_targets(rows), **envelope("distillation", command_line("distillation", argv), t0)}
    write_results(args.out, {"distillation_grid.png": savefig(sample_grid(cols), dpi=100),
                             "distillation.md": write_markdown(rows, meta), "distillation.png": savefig(plot(rows)),
                             "distillation_meta.json": meta, "distillation.json": rows})
    for t in meta["targets"]:
        print(f"{t['method']} {t['steps']}-step {t['metric']}: {t['value']:.3f} vs teacher {t['teacher']:.3f} "
              f"(ratio {t['ratio_to_teacher']:.3f}, bar {t['bar']}): {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(run_command(main))
