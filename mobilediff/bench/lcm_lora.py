"""The LCM-LoRA adapter (``distill --method lcm-lora``): does one adapter make the teacher, and a fine-tune of it, sample
in a few steps?

On the shapes domain's evaluation scenes (their captions as prompts, fixed noise seeds), the shapes evaluator's
prompt accuracy of:

- the teacher at its own plan (DDIM-50, its guidance): the reference;
- the teacher at 1-8 steps without the adapter (DDIM at its guidance, and the LCM sampler at guidance 1): what few
  steps give without distillation;
- the teacher with the LCM-LoRA at 1-8 LCM steps, guidance 1;
- the LCM student (``default:lcm``, a whole distilled UNet with a guidance embedding) at its plan;
- a fine-tune: the teacher with ``default:swap-red-blue`` merged, at DDIM-50 and with the LCM-LoRA at 4 LCM steps:
  the share of red and blue objects drawn in the exchanged colour (the fine-tune's effect) and the prompt accuracy
  against the swapped scenes -- whether the adapter carries over to a model it was not trained on.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mobilediff.bench.envelope import Parser, command_line, count, envelope, json_safe, savefig, write_results

ADAPTER = "default:lcm-lora"
STEPS = (1, 2, 4, 8)


def _pipe(model: str, adapters: list[str]):
    from mobilediff.loading import load_pipeline
    from mobilediff.lora import apply_adapters, parse_adapter

    pipe = load_pipeline(model)
    if adapters:
        apply_adapters(pipe, [parse_adapter(a) for a in adapters])
    return pipe


def _swap_counts(evaluator, out, scenes) -> float:
    from mobilediff.data import COLORS

    red, blue = COLORS.index("red"), COLORS.index("blue")
    p = evaluator.predict(out)
    total = swapped = 0
    for i, s in enumerate(scenes):
        for o in s.objects:
            if o.color in (red, blue):
                total += 1
                swapped += int(p.color[i, o.position] == {red: blue, blue: red}[o.color])
    return swapped / max(total, 1)


def run(n: int, steps_list, say) -> tuple[list[dict], dict]:
    from mobilediff.data import COLORS
    from mobilediff.evaluator import Evaluator
    from mobilediff.quality import NOISE_SEED, eval_scenes
    from mobilediff.sampling import generate

    evaluator = Evaluator.load()
    scenes = eval_scenes(n)
    prompts = [s.caption for s in scenes]
    seeds = [NOISE_SEED + i for i in range(len(scenes))]
    real = evaluator.real_features(scenes)  # FD against the rendered scenes (the evaluator's features)
    rows, images = [], {}

    def row(name: str, model: str, adapters: list[str], sampler: str, steps: int, guidance: float, pipe=None):
        pipe = pipe or _pipe(model, adapters)
        out = generate(pipe, prompts, seeds, steps, sampler, guidance)
        score = evaluator.score(out, scenes, real)
        r = {"case": name, "model": model, "adapters": adapters, "sampler": sampler, "steps": steps,
             "guidance": guidance, "n": len(scenes), "prompt_accuracy": score.prompt_accuracy, "fd": score.fd}
        rows.append(r)
        images[f"{name} {sampler}-{steps}"] = out[:8]
        say(f"{name} {sampler}-{steps} g{guidance:g}: prompt accuracy {r['prompt_accuracy']:.3f}, FD {r['fd']:.1f}")
        return r

    teacher = _pipe("default", [])
    row("teacher", "default", [], "ddim", 50, 5.0, teacher)
    for k in steps_list:
        row("teacher", "default", [], "ddim", k, 5.0, teacher)
        row("teacher", "default", [], "lcm", k, 1.0, teacher)
    del teacher
    adapted = _pipe("default", [ADAPTER])
    for k in steps_list:
        row("teacher + lcm-lora", "default", [ADAPTER], "lcm", k, 1.0, adapted)
    del adapted
    row("lcm student", "default:lcm", [], "lcm", 4, 3.5)
    # the fine-tune: red and blue exchanged
    red, blue = COLORS.index("red"), COLORS.index("blue")
    colour = [s for s in eval_scenes(4 * n) if any(o.color in (red, blue) for o in s.objects)][:n]
    swapped = [replace(s, objects=tuple(replace(o, color={red: blue, blue: red}.get(o.color, o.color))
                                        for o in s.objects)) for s in colour]
    cseeds = [NOISE_SEED + i for i in range(len(colour))]
    for adapters, sampler, k, g in ((["default:swap-red-blue"], "ddim", 50, 5.0),
                                    (["default:swap-red-blue"], "lcm", 4, 1.0),
                                    (["default:swap-red-blue", ADAPTER], "lcm", 4, 1.0)):
        pipe = _pipe("default", adapters)
        out = generate(pipe, [s.caption for s in colour], cseeds, k, sampler, g)
        r = {"case": "fine-tune " + " + ".join(a.split(":")[-1] for a in adapters), "model": "default",
             "adapters": adapters, "sampler": sampler, "steps": k, "guidance": g, "n": len(colour),
             "drawn_in_swapped_colour": _swap_counts(evaluator, out, colour),
             "swapped_scene_accuracy": evaluator.score(out, swapped).prompt_accuracy}
        rows.append(r)
        images[f"{r['case']} {sampler}-{k}"] = out[:8]
        say(f"{r['case']} {sampler}-{k}: swapped colour {r['drawn_in_swapped_colour']:.3f}, swapped-scene accuracy "
            f"{r['swapped_scene_accuracy']:.3f}")
    return rows, images


def write_markdown(result: dict) -> str:
    rows = result["rows"]
    ref = next(r for r in rows if r["case"] == "teacher" and r["steps"] == 50)
    lines = ["# LCM-LoRA: one adapter for few-step sampling", "",
             f"Generated by `{result['command']}` ({result['created']}). Shapes-domain evaluation scenes "
             f"({ref['n']}), their captions as prompts, the same noise seeds in every row; prompt accuracy by the "
             f"shapes evaluator and FD (Fréchet distance of its features against the rendered scenes; lower is "
             f"better). Reference: the teacher at DDIM-50, guidance 5: **{ref['prompt_accuracy']:.3f}**, FD "
             f"{ref['fd']:.1f}. Cells: prompt accuracy / FD.", "",
             "| steps | teacher DDIM (g 5) | teacher LCM sampler (g 1), no adapter | teacher + LCM-LoRA (LCM, g 1) |",
             "|---|---|---|---|"]
    by = {(r["case"], r["sampler"], r["steps"]): r for r in rows if "prompt_accuracy" in r}
    for k in result["settings"]["steps"]:
        cells = [by.get(key) for key in (("teacher", "ddim", k), ("teacher", "lcm", k), ("teacher + lcm-lora", "lcm", k))]
        lines.append(f"| {k} | " + " | ".join(f"{c['prompt_accuracy']:.3f} / {c['fd']:.1f}" if c else "–"
                                             for c in cells) + " |")
    student = next((r for r in rows if r["case"] == "lcm student"), None)
    if student:
        lines += ["", f"The LCM student (`default:lcm`, a whole distilled UNet with a guidance embedding) at LCM-4, "
                      f"guidance 3.5: {student['prompt_accuracy']:.3f} / {student['fd']:.1f}."]
    lines += ["", "## On a fine-tune it was not trained on (`default:swap-red-blue` merged)", "",
              "| model | plan | red/blue objects drawn in the exchanged colour | prompt accuracy vs the swapped scene |",
              "|---|---|---|---|"]
    for r in rows:
        if r["case"].startswith("fine-tune"):
            lines.append(f"| {r['case'][len('fine-tune '):]} | {r['sampler']}-{r['steps']}, g {r['guidance']:g} | "
                         f"{r['drawn_in_swapped_colour']:.3f} | {r['swapped_scene_accuracy']:.3f} |")
    lines += ["", "`lcm_lora.png`: the first 8 images of each row."]
    return "\n".join(lines) + "\n"


def grid(images: dict):
    import torch

    from mobilediff.bench.envelope import pyplot
    from mobilediff.data import to_uint8

    plt = pyplot()
    fig, axes = plt.subplots(len(images), 1, figsize=(8, 1.15 * len(images)), squeeze=False)
    for ax, (name, imgs) in zip(axes[:, 0], images.items()):
        arr = to_uint8(torch.nn.functional.interpolate(imgs, size=64, mode="nearest"))
        ax.imshow(np.concatenate(list(arr), axis=1))
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    ap = Parser(doc)
    ap.add_argument("--n", type=count(2), default=128, help="Evaluation scenes (default 128).")
    ap.add_argument("--steps", type=count(1, 50), nargs="+", default=list(STEPS), help="LCM step counts (default 1 2 4 8).")
    ap.add_out(results, "result folder (default benchmarks/results)")
    a = ap.parse_args(argv)
    from mobilediff.adapters import adapter_path

    adapter_path(ADAPTER)  # refused in one line when the adapter is not embedded
    t0 = time.time()
    rows, images = run(a.n, a.steps, print)
    result = {**envelope("lcm_lora", command_line("lcm_lora", argv), t0),
              "settings": {"n": a.n, "steps": a.steps, "adapter": ADAPTER}, "rows": rows}
    write_results(a.out, {"lcm_lora.png": savefig(grid(images)), "lcm_lora.md": write_markdown(result),
                          "lcm_lora.json": json_safe(result)})
    print(f"wrote {a.out / 'lcm_lora.md'}, .json and .png")
    return result
