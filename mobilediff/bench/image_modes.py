"""Image-to-image and inpainting on the shapes domain: how the teacher and its few-step students edit an image.

Each task starts from a ground-truth render of an evaluation scene (:func:`mobilediff.quality.eval_scenes`) and
asks, by the prompt, for one change to its first object: ``recolour`` (another colour) or ``move`` (another, free
cell). Per model, mode (image-to-image, or inpainting with the object's old and new cells masked) and strength, the
edited images are scored by the shapes evaluator against the *edited* scene (edit accuracy: every attribute of the
new prompt right) and compared with the input (PSNR; for inpainting also outside the mask, the part that should not
change). Strength 1 is the reference where the input no longer counts (text-to-image for image-to-image; inpainting
from noise). Images come from diffusers' own pipelines (:func:`mobilediff.sampling.generate_from_image`), which the
bundles reproduce (tests/test_image_modes.py); image ``i`` from noise seed NOISE_SEED + i, the same for every row.

A student of N steps runs ``floor(N x strength)`` of them (diffusers' rule), so a 4-step student edits at strengths
0.25, 0.5, 0.75 and 1 only, and a 1-step student not at all below strength 1: the rows say how many steps ran.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mobilediff.bench.envelope import Parser, command_line, count, envelope, json_safe, savefig, write_results
from mobilediff.errors import MobilediffError

MODELS = ("default", "default:progressive-4", "default:lcm", "default:slim-4")
STRENGTHS = (0.3, 0.5, 0.8, 1.0)
TASKS = ("recolour", "move")
MODES = ("img2img", "inpaint")
EDIT_SEED = 37  # the rng of the edits (new colour, new cell, caption phrasing)


def edit(scene, task: str, rng: np.random.Generator):
    """The scene with its first object recoloured or moved to a free cell, and its caption rewritten."""
    from mobilediff.data import COLORS, GRID, Scene, make_caption

    o = scene.objects[0]
    if task == "recolour":
        new = replace(o, color=int((o.color + 1 + rng.integers(len(COLORS) - 1)) % len(COLORS)))
    elif task == "move":
        taken = {x.position for x in scene.objects}
        new = replace(o, position=int(rng.choice([c for c in range(GRID * GRID) if c not in taken])))
    else:
        raise MobilediffError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    objects = (new, *scene.objects[1:])
    return Scene(background=scene.background, objects=objects, caption=make_caption(rng, scene.background, objects),
                 jitter=scene.jitter, tint=scene.tint)


def cell_mask(cells: set[int], height: int, width: int) -> np.ndarray:
    """(height, width) bool: the grid cells ``cells`` (row-major 3x3), each grown by a pixel."""
    from mobilediff.data import GRID

    m = np.zeros((height, width), bool)
    for c in cells:
        r, k = divmod(c, GRID)
        y0, y1 = int(r * height / GRID) - 1, int((r + 1) * height / GRID) + 1
        x0, x1 = int(k * width / GRID) - 1, int((k + 1) * width / GRID) + 1
        m[max(0, y0):y1, max(0, x0):x1] = True
    return m


def _psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Mean over images of the PSNR (images in [-1, 1], peak 2) over all pixels or those ``where`` is true."""
    err = (a - b) ** 2
    if where is None:
        mse = err.flatten(1).mean(1)
    else:
        w = where.expand_as(err).flatten(1).float()
        mse = (err.flatten(1) * w).sum(1) / w.sum(1).clamp(min=1)
    return float((10 * torch.log10(4.0 / mse.clamp(min=1e-10))).mean())


def run(models, n: int, strengths, tasks, modes, evaluator, say=print) -> list[dict]:
    from mobilediff.card import model_card
    from mobilediff.data import render
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.quality import NOISE_SEED, eval_scenes
    from mobilediff.sampler_table import strength_steps
    from mobilediff.sampling import generate_from_image, image_size

    scenes = eval_scenes(n)
    init = render(scenes)
    seeds = [NOISE_SEED + i for i in range(n)]
    rows = []
    for name in models:
        pipe = load_pipeline(name)
        plan = model_card(pipe, resolve_model(name), name).plan
        height, width = image_size(pipe)
        if tuple(init.shape[-2:]) != (height, width):
            raise MobilediffError(f"{name} makes {width}x{height} images; the tasks are {init.shape[-1]} px scenes")
        factor = int(pipe.vae_scale_factor)
        for task in tasks:
            rng = np.random.default_rng(EDIT_SEED)
            targets = [edit(s, task, rng) for s in scenes]
            prompts = [t.caption for t in targets]
            pixel_masks = torch.from_numpy(np.stack([
                cell_mask({s.objects[0].position, t.objects[0].position}, height, width)
                for s, t in zip(scenes, targets)]))[:, None]
            latent_masks = pixel_masks[:, :, ::factor, ::factor].float()
            for mode in modes:
                for strength in strengths:
                    try:
                        k = strength_steps(plan.steps, strength)
                    except MobilediffError:
                        rows.append({"model": name, "task": task, "mode": mode, "strength": strength,
                                     "steps": plan.steps, "steps_run": 0, "n": 0,
                                     "note": f"{plan.steps}-step plan: strength {strength:g} runs no step"})
                        continue
                    t0 = time.perf_counter()
                    images = generate_from_image(pipe, prompts, seeds, plan.steps, plan.sampler, plan.guidance,
                                                 init, strength, latent_masks if mode == "inpaint" else None)
                    seconds = time.perf_counter() - t0
                    edited = evaluator.score(images, targets)
                    kept = evaluator.score(images, scenes)
                    keep = ~pixel_masks
                    row = {"model": name, "task": task, "mode": mode, "strength": strength, "sampler": plan.sampler,
                           "steps": plan.steps, "steps_run": k, "guidance": plan.guidance, "n": n,
                           "edit_accuracy": edited.prompt_accuracy, "edit_attributes": edited.attribute_accuracy,
                           "source_accuracy": kept.prompt_accuracy, "psnr_db": _psnr(images, init),
                           "psnr_outside_mask_db": _psnr(images, init, keep) if mode == "inpaint" else None,
                           "seconds": round(seconds, 2)}
                    rows.append(row)
                    say(f"{name} {task} {mode} strength {strength:g} ({k}/{plan.steps} steps): edit accuracy "
                        f"{row['edit_accuracy']:.3f}, source accuracy {row['source_accuracy']:.3f}, "
                        f"PSNR vs input {row['psnr_db']:.1f} dB")
    return rows


def write_markdown(result: dict) -> str:
    s = result["settings"]
    lines = ["# Image-to-image and inpainting on the shapes domain", "",
             f"Generated by `{result['command']}` ({result['created']}). {s['n']} evaluation scenes, rendered as the "
             f"input; the prompt asks for one change to the first object (`recolour`: another colour; `move`: "
             f"another free cell). Edit accuracy: the shapes evaluator finds every attribute of the new prompt; "
             f"source accuracy: it still finds the unedited scene; PSNR against the input image (inpainting: also "
             f"outside the masked cells, the old and new cell of the object). Strength 1: the input no longer "
             f"counts (image-to-image: text-to-image; inpainting: from noise), the reference. Each model with its "
             f"own plan; it runs floor(steps x strength) steps (diffusers' rule).", "",
             "| model | task | mode | strength | steps run | edit acc. | source acc. | PSNR vs input dB | "
             "PSNR outside mask dB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if not r.get("n"):
            lines.append(f"| {r['model']} | {r['task']} | {r['mode']} | {r['strength']:g} | 0/{r['steps']} | - | - | "
                         f"- | - |")
            continue
        out = "-" if r["psnr_outside_mask_db"] is None else f"{r['psnr_outside_mask_db']:.1f}"
        lines.append(f"| {r['model']} | {r['task']} | {r['mode']} | {r['strength']:g} | {r['steps_run']}/"
                     f"{r['steps']} | {r['edit_accuracy']:.3f} | {r['source_accuracy']:.3f} | {r['psnr_db']:.1f} | "
                     f"{out} |")
    lines += ["", "Caveats: a few-step student's strength is coarse (a 4-step plan edits at 0.25, 0.5, 0.75 or 1; "
              "0.3 runs one step) and its single large steps are what it was distilled for only from pure noise: "
              "from a partly noised input it was never trained on that start, which the edit accuracy at low "
              "strength measures. Inpainting here is the 4-channel UNet's latent blend (no inpainting UNet), so "
              "the kept region is re-encoded and decoded by the VAE: its PSNR is bounded by the VAE's "
              "reconstruction."]
    return "\n".join(lines) + "\n"


def plot(result: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("n")]
    tasks = sorted({r["task"] for r in rows})
    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(2, len(tasks) * len(modes), figsize=(4 * len(tasks) * len(modes), 6.5), squeeze=False)
    for j, (task, mode) in enumerate((t, m) for t in tasks for m in modes):
        for model in dict.fromkeys(r["model"] for r in rows):
            pts = sorted((r["strength"], r["edit_accuracy"], r["psnr_db"]) for r in rows
                         if r["model"] == model and r["task"] == task and r["mode"] == mode)
            if not pts:
                continue
            x, acc, psnr = zip(*pts)
            axes[0, j].plot(x, acc, marker="o", label=model)
            axes[1, j].plot(x, psnr, marker="o", label=model)
        axes[0, j].set_title(f"{task}, {mode}", fontsize=9)
        axes[0, j].set_ylabel("edit accuracy")
        axes[1, j].set_ylabel("PSNR vs input (dB)")
        axes[1, j].set_xlabel("strength")
        axes[0, j].set_ylim(0, 1)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    from mobilediff.evaluator import Evaluator

    ap = Parser(doc)
    ap.add_argument("--model", action="append", default=None, help=f"Model (repeatable; default: {', '.join(MODELS)}).")
    ap.add_argument("--n", type=count(2), default=64, help="Evaluation scenes per row (default 64).")
    ap.add_argument("--strength", type=float, nargs="+", default=list(STRENGTHS), help="Strengths (default 0.3 0.5 0.8 1).")
    ap.add_argument("--task", choices=TASKS, nargs="+", default=list(TASKS), help="Edit tasks (default both).")
    ap.add_argument("--mode", choices=MODES, nargs="+", default=list(MODES), help="Modes (default both).")
    ap.add_out(results, "result folder (default benchmarks/results)")
    a = ap.parse_args(argv)
    for s in a.strength:
        if not (np.isfinite(s) and 0 < s <= 1):
            raise MobilediffError(f"--strength must be in (0, 1], got {s:g}")
    t0 = time.time()
    models = a.model or list(MODELS)
    rows = run(models, a.n, a.strength, a.task, a.mode, Evaluator.load())
    result = {**envelope("image_modes", command_line("image_modes", argv), t0),
              "settings": {"models": models, "n": a.n, "strengths": a.strength, "tasks": a.task, "modes": a.mode,
                           "edit_seed": EDIT_SEED}, "rows": rows}
    write_results(a.out, {"image_modes.png": savefig(plot(result)), "image_modes.md": write_markdown(result),
                          "image_modes.json": json_safe(result)})
    print(f"wrote {a.out / 'image_modes.md'}, .json and .png")
    return result
