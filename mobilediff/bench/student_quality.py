"""Few-step students of any model on the user's prompts, scored with the metric set of :mod:`mobilediff.metrics`.

Every row generates the same prompts with the same noise seeds:

* ``teacher-ddim50``: the teacher's 50-step DDIM with its own guidance, the reference of every fidelity number;
* ``teacher-ddim`` at each of ``--steps``: what the teacher does in as few steps without distillation;
* each ``--student`` at each of ``--steps`` when its sampler takes any step count (LCM), else at its own plan
  (a progressive student at the step count it was distilled for).

Metrics per row: teacher fidelity (PSNR and SSIM of each image against the teacher's DDIM-50 image of the same
prompt and seed; needs no weights), Fréchet distance in the features of ``--fd-features`` against
``--reference-images`` (the teacher's DDIM-50 row too, so the ratio to it is the bar of
:mod:`mobilediff.bench.bars`), and the CLIP score with ``--clip``. The 4-step bars are checked per student.
``benchmarks/student_quality.py`` runs :func:`main`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mobilediff.bench import bars
from mobilediff.bench.envelope import Parser, command_line, count, envelope, fmt, pyplot, savefig, write_results
from mobilediff.errors import MobilediffError

STEPS = (1, 2, 4, 8)
GRID_ROWS = 16


@dataclass(frozen=True)
class Row:
    """One generated image set: who made it and how."""

    label: str  # "teacher-ddim50", "teacher-ddim", or the student's name
    model: str
    sampler: str
    steps: int
    guidance: float
    cfg: bool  # classifier-free guidance as a second UNet row per step

    @property
    def nfe(self) -> int:
        return self.steps * (2 if self.cfg else 1)


def _plan_rows(teacher: str, teacher_plan, students: list[tuple[str, object]], steps: tuple[int, ...]) -> list[Row]:
    """The rows of a run, teacher first; a student whose sampler is not LCM runs its own plan only."""
    cfg = teacher_plan.guidance > 1
    rows = [Row("teacher-ddim50", teacher, "ddim", 50, teacher_plan.guidance, cfg)]
    rows += [Row("teacher-ddim", teacher, "ddim", n, teacher_plan.guidance, cfg) for n in steps]
    for name, plan in students:
        counts = steps if plan.sampler == "lcm" else (plan.steps,)
        # LCM folds guidance into its embedding (one UNet row); other students guide by CFG when above 1
        rows += [Row(name, name, plan.sampler, n, plan.guidance, plan.sampler != "lcm" and plan.guidance > 1)
                 for n in counts]
    return rows


def _metrics_for(images: torch.Tensor, reference: torch.Tensor | None, prompts: list[str], metric_set) -> dict:
    out = metric_set.compute(images, prompts, reference)
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


def _targets(rows: list[dict]) -> list[dict]:
    """The 4-step bars (FD ratio, CLIP ratio) of each student against the teacher's DDIM-50 row."""
    ref = next(r for r in rows if r["label"] == "teacher-ddim50")
    out = []
    for student in dict.fromkeys(r["label"] for r in rows if not r["label"].startswith("teacher")):
        row = next((r for r in rows if r["label"] == student and r["steps"] == 4), None)
        for key, bar_id in (("fd", "student_4step_fd_ratio"), ("clip_score", "student_4step_clip_ratio")):
            if ref["metrics"].get(key) is None:
                continue
            b = bars.bar(bar_id)
            entry = {"student": student, "bar_id": bar_id, "metric": key, "op": b.op, "bar": b.value}
            if row is None:
                out.append({**entry, "ratio": None, "met": None, "reason": "no 4-step row"})
                continue
            ratio = row["metrics"][key] / ref["metrics"][key] if ref["metrics"][key] else None
            out.append({**entry, "ratio": ratio,
                        "met": bars.check_ratio(bar_id, row["metrics"][key], ref["metrics"][key])})
    return out


def _markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Students of {s['teacher']} on {s['prompts']}", "",
             f"{s['n']} prompts, noise seeds {s['noise_seed']}..; fidelity: PSNR/SSIM against the teacher's "
             f"DDIM-50 image of the same prompt and seed.",
             f"FD: {s['fd_features'] or 'not measured (no --fd-features)'}"
             + (f" against {s['reference_count']} images of {s['reference_images']}" if s["fd_features"] else ""),
             f"CLIP score: {s['clip'] or 'not measured (no --clip)'}", "",
             "| model | sampler | steps | NFE | guidance | PSNR vs teacher-50 (dB) | SSIM vs teacher-50 | FD | CLIP |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        m = r["metrics"]
        lines.append(f"| {r['label']} | {r['sampler']} | {r['steps']} | {r['nfe']} | {r['guidance']:g} | "
                     f"{fmt(m.get('psnr_db_vs_teacher'))} | {fmt(m.get('ssim_vs_teacher'), '.3f')} | "
                     f"{fmt(m.get('fd'))} | {fmt(m.get('clip_score'))} |")
    if result["targets"]:
        lines += ["", "| bar | student | ratio | bar | met |", "|---|---|---:|---:|---|"]
        for t in result["targets"]:
            lines.append(f"| {t['bar_id']} | {t['student']} | {fmt(t['ratio'], '.3f')} | {t['op']} {t['bar']:g} | "
                         f"{'–' if t['met'] is None else 'yes' if t['met'] else 'NO'} |")
    m = result["machine"]
    load = m.get("load_average") or []
    lines += ["", f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch threads {m.get('torch_threads', '?')}"
                  + (f", load average {load[0]:.1f} at the end (other work shared the cores: timings are not the "
                     "point of this report)" if load else "") + f"; wall time {result['wall_seconds']:.0f} s.", "",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _plot(result: dict):
    plt = pyplot()
    rows = [r for r in result["rows"] if r["label"] != "teacher-ddim50"]
    keys = [k for k in ("psnr_db_vs_teacher", "fd", "clip_score") if any(r["metrics"].get(k) is not None for r in rows)]
    titles = {"psnr_db_vs_teacher": "PSNR vs teacher DDIM-50 (dB, higher is closer)", "fd": "FD (lower is better)",
              "clip_score": "CLIP score (higher is better)"}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False)
    ref = next(r for r in result["rows"] if r["label"] == "teacher-ddim50")
    for ax, key in zip(axes[0], keys):
        for label in dict.fromkeys(r["label"] for r in rows):
            pts = sorted((r["steps"], r["metrics"][key]) for r in rows if r["label"] == label
                         and r["metrics"].get(key) is not None)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        if ref["metrics"].get(key) is not None:
            ax.axhline(ref["metrics"][key], color="k", ls="--", lw=0.8, label="teacher DDIM-50")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("denoising steps")
        ax.set_title(titles[key], fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _grid(result: dict, images: dict[str, torch.Tensor], prompts: list[str], n: int):
    from mobilediff.bench.sweep import image_grid
    from mobilediff.data import to_uint8

    columns, titles = [], []
    for key, im in images.items():
        columns.append(list(to_uint8(im[:n])))
        titles.append(key)
    return image_grid(columns, prompts[:n], titles, f"{result['settings']['teacher']}: teacher and students, "
                                                    "same prompts and seeds")


def main(argv: list[str] | None = None, doc: str = __doc__, results: Path | None = None) -> dict:
    from tqdm.auto import tqdm

    from mobilediff.card import model_card
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.metrics import ClipScorer, FeatureExtractor, MetricSet
    from mobilediff.quality import NOISE_SEED
    from mobilediff.sampling import generate, image_size
    from mobilediff.sources import DataOptions, load_prompts, load_reference_images

    p = Parser(doc)
    p.add_argument("--teacher", required=True, help="The teacher pipeline (a folder or an embedded name).")
    p.add_argument("--student", action="append", required=True, help="A student of it (repeatable).")
    p.add_argument("--prompts", type=Path, required=True, help="Prompts (.txt / .jsonl / .csv with 'text').")
    p.add_argument("--n", type=count(2), default=256, help="Prompts used (the first N; default 256).")
    p.add_argument("--steps", type=count(1), nargs="+", default=list(STEPS), help="Step counts (default 1 2 4 8).")
    p.add_argument("--fd-features", type=Path, default=None, help="FD feature extractor (file or folder).")
    p.add_argument("--reference-images", type=Path, default=None, help="Real images for the FD.")
    p.add_argument("--fd-image-size", type=count(8), default=None, help="Input side of a TorchScript extractor.")
    p.add_argument("--clip", type=Path, default=None, help="A local CLIP folder for the CLIP score.")
    p.add_argument("--grid", type=count(0), default=GRID_ROWS, help="Prompts in the image grid (default 16).")
    p.add_argument("--grid-steps", type=count(1), default=4, help="Step count of the grid's few-step columns.")
    p.add_argument("--name", default="student_quality", help="File name stem of the results.")
    p.add_argument("--out", type=Path, default=results, required=results is None, help="Result folder.")
    a = p.parse_args(argv)
    if (a.fd_features is None) != (a.reference_images is None):
        raise MobilediffError("a Fréchet distance needs both --fd-features and --reference-images")
    if not a.name or any(c in a.name for c in "/\\\0") or a.name.startswith("."):
        raise MobilediffError(f"--name must be a plain file name stem, got {a.name!r}")
    started = time.time()
    prompts = load_prompts(DataOptions(prompts=a.prompts))[:a.n]
    if len(prompts) < 2:
        raise MobilediffError(f"{a.prompts} holds {len(prompts)} usable prompt(s); the metrics need at least 2")
    seeds = [NOISE_SEED + i for i in range(len(prompts))]
    # every model, weight file and input is read before any image is generated
    teacher_pipe = load_pipeline(a.teacher)
    teacher_plan = model_card(teacher_pipe, resolve_model(a.teacher), a.teacher).plan
    students = []
    for name in a.student:
        pipe = load_pipeline(name)
        if image_size(pipe) != image_size(teacher_pipe):
            raise MobilediffError(f"student {name} makes {image_size(pipe)} images, the teacher "
                                  f"{image_size(teacher_pipe)}: fidelity compares images of one size")
        students.append((name, pipe, model_card(pipe, resolve_model(name), name).plan))
    extractor = reference = None
    if a.fd_features is not None:
        extractor = FeatureExtractor.load(a.fd_features, image_size=a.fd_image_size)
        real = load_reference_images(a.reference_images, image_size(teacher_pipe))
        reference = extractor.features(real)
    clip = ClipScorer.load(a.clip) if a.clip is not None else None
    metric_set = MetricSet(clip=clip, fd_features=extractor, fd_reference=reference)
    pipes = {a.teacher: teacher_pipe, **{name: pipe for name, pipe, _ in students}}
    plan_rows = _plan_rows(a.teacher, teacher_plan, [(name, plan) for name, _, plan in students], tuple(a.steps))

    rows, kept, teacher_images = [], {}, None
    total = sum(r.steps * -(-len(prompts) // 64) for r in plan_rows)
    with tqdm(total=total, desc="generate", unit="step") as bar:
        for r in plan_rows:
            t0 = time.perf_counter()
            images = generate(pipes[r.model], prompts, seeds, r.steps, r.sampler, r.guidance, progress=bar.update)
            seconds = time.perf_counter() - t0
            if teacher_images is None:
                teacher_images = images
            rows.append({"label": r.label, "model": r.model, "sampler": r.sampler, "steps": r.steps,
                         "guidance": r.guidance, "cfg": r.cfg, "nfe": r.nfe, "generate_seconds": round(seconds, 2),
                         "metrics": _metrics_for(images, teacher_images, prompts, metric_set)})
            if r.label == "teacher-ddim50" or r.steps == a.grid_steps:
                kept[f"{r.label} {r.sampler}-{r.steps}"] = images[:a.grid]
    result = {**envelope("student_quality", command_line("student_quality", argv), started),
              "settings": {"teacher": a.teacher, "students": a.student, "prompts": str(a.prompts), "n": len(prompts),
                           "noise_seed": NOISE_SEED, "steps": a.steps,
                           "fd_features": None if extractor is None else f"{a.fd_features} ({extractor.kind}, "
                                                                         f"{extractor.dim}-d)",
                           "reference_images": None if a.reference_images is None else str(a.reference_images),
                           "reference_count": None if reference is None else len(reference),
                           "clip": None if a.clip is None else str(a.clip)},
              "rows": rows}
    result["targets"] = _targets(rows)
    result["wall_seconds"] = time.time() - started
    files = {f"{a.name}.md": _markdown(result), f"{a.name}.png": savefig(_plot(result)),
             f"{a.name}_grid.png": savefig(_grid(result, kept, prompts, a.grid)) if a.grid else None,
             f"{a.name}.json": result}
    write_results(a.out, files)
    print(_markdown(result))
    return result
