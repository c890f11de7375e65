"""What the embedded LoRA adapters do, at scales 0 (the model alone) to 1, measured on the images they change.

- ``default:swap-red-blue`` on the default model: evaluation scenes whose objects are red or blue, generated from
  their captions; the shapes evaluator reads each object's colour. Reported: the share of those objects drawn in the
  caption's colour and in the exchanged one (the adapter's aim), and the prompt accuracy against the caption and
  against the swapped scene.
- ``default:emoji-monochrome`` on the emoji model: its prompts (benchmarks/prompts/emoji.txt); the mean colour saturation of the images (HSV S,
  0..1) falls towards 0 as the adapter turns them grayscale.

Every image of a row comes from the same prompt and noise seed at every scale: only the adapter's scale changes.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mobilediff.bench.envelope import Parser, command_line, count, envelope, json_safe, savefig, write_results
from mobilediff.errors import MobilediffError

SCALES = (0.0, 0.5, 1.0)


def _pipe(model: str, adapter: str, scale: float):
    from mobilediff.lora import apply_adapters, parse_adapter
    from mobilediff.loading import load_pipeline

    pipe = load_pipeline(model)
    if scale != 0:
        apply_adapters(pipe, [replace(parse_adapter(adapter), scale=scale)])
    return pipe


def swap_rows(n: int, scales, evaluator, say) -> tuple[list[dict], dict]:
    from mobilediff.card import model_card
    from mobilediff.data import COLORS
    from mobilediff.loading import resolve_model
    from mobilediff.quality import NOISE_SEED, eval_scenes
    from mobilediff.sampling import generate

    red, blue = COLORS.index("red"), COLORS.index("blue")
    scenes = [s for s in eval_scenes(4 * n) if any(o.color in (red, blue) for o in s.objects)][:n]
    swapped = [replace(s, objects=tuple(replace(o, color={red: blue, blue: red}.get(o.color, o.color))
                                        for o in s.objects)) for s in scenes]
    seeds = [NOISE_SEED + i for i in range(len(scenes))]
    rows, images = [], {}
    for scale in scales:
        pipe = _pipe("default", "default:swap-red-blue", scale)
        plan = model_card(pipe, resolve_model("default"), "default").plan
        out = generate(pipe, [s.caption for s in scenes], seeds, plan.steps, plan.sampler, plan.guidance)
        p = evaluator.predict(out)
        as_caption = as_swapped = total = 0
        for i, s in enumerate(scenes):
            for o in s.objects:
                if o.color in (red, blue):
                    total += 1
                    got = p.color[i, o.position]
                    as_caption += int(got == o.color)
                    as_swapped += int(got == {red: blue, blue: red}[o.color])
        row = {"adapter": "default:swap-red-blue", "model": "default", "scale": scale, "n": len(scenes),
               "red_blue_objects": total, "drawn_in_caption_colour": as_caption / total,
               "drawn_in_swapped_colour": as_swapped / total,
               "prompt_accuracy": evaluator.score(out, scenes).prompt_accuracy,
               "swapped_scene_accuracy": evaluator.score(out, swapped).prompt_accuracy}
        rows.append(row)
        images[scale] = out[:8]
        say(f"swap-red-blue scale {scale:g}: caption colour {row['drawn_in_caption_colour']:.3f}, swapped colour "
            f"{row['drawn_in_swapped_colour']:.3f}")
    return rows, images


def saturation(images: torch.Tensor) -> float:
    """Mean HSV saturation of images in [-1, 1]."""
    x = (images.clamp(-1, 1) + 1) / 2
    mx, mn = x.max(1).values, x.min(1).values
    return float(torch.where(mx > 1e-6, (mx - mn) / mx.clamp(min=1e-6), torch.zeros_like(mx)).mean())


def mono_rows(n: int, scales, say) -> tuple[list[dict], dict]:
    from mobilediff.card import model_card
    from mobilediff.loading import resolve_model
    from mobilediff.quality import NOISE_SEED
    from mobilediff.sampling import generate

    prompts_file = Path(__file__).resolve().parents[2] / "benchmarks" / "prompts" / "emoji.txt"
    prompts = [p for p in prompts_file.read_text(encoding="utf-8").splitlines() if p.strip()][:n]
    seeds = [NOISE_SEED + i for i in range(len(prompts))]
    rows, images = [], {}
    for scale in scales:
        pipe = _pipe("default:emoji", "default:emoji-monochrome", scale)
        plan = model_card(pipe, resolve_model("default:emoji"), "default:emoji").plan
        out = generate(pipe, prompts, seeds, plan.steps, plan.sampler, plan.guidance)
        rows.append({"adapter": "default:emoji-monochrome", "model": "default:emoji", "scale": scale,
                     "n": len(prompts), "mean_saturation": saturation(out)})
        images[scale] = out[:8]
        say(f"emoji-monochrome scale {scale:g}: mean saturation {rows[-1]['mean_saturation']:.3f}")
    return rows, images


def write_markdown(result: dict) -> str:
    lines = ["# The embedded LoRA adapters", "", f"Generated by `{result['command']}` ({result['created']}). Each "
             f"adapter fused into its model at each scale (`--lora default:NAME:SCALE`), the same prompts and noise "
             f"seeds at every scale; each model with its own plan.", "",
             "## default:swap-red-blue (default model)", "",
             "| scale | scenes | red/blue objects | in the caption's colour | in the exchanged colour | prompt accuracy "
             "(caption) | prompt accuracy (swapped scene) |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["adapter"] == "default:swap-red-blue":
            lines.append(f"| {r['scale']:g} | {r['n']} | {r['red_blue_objects']} | {r['drawn_in_caption_colour']:.3f} | "
                         f"{r['drawn_in_swapped_colour']:.3f} | {r['prompt_accuracy']:.3f} | "
                         f"{r['swapped_scene_accuracy']:.3f} |")
    lines += ["", "## default:emoji-monochrome (emoji model)", "", "| scale | prompts | mean HSV saturation |",
              "|---|---|---|"]
    for r in result["rows"]:
        if r["adapter"] == "default:emoji-monochrome":
            lines.append(f"| {r['scale']:g} | {r['n']} | {r['mean_saturation']:.3f} |")
    lines += ["", "`adapters.png`: the first 8 images of each adapter at each scale (rows: scales)."]
    return "\n".join(lines) + "\n"


def grid(images: dict) -> "object":
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobilediff.data import to_uint8

    blocks = [(name, scale, imgs) for name, per in images.items() for scale, imgs in per.items()]
    fig, axes = plt.subplots(len(blocks), 1, figsize=(8, 1.2 * len(blocks)), squeeze=False)
    for ax, (name, scale, imgs) in zip(axes[:, 0], blocks):
        arr = to_uint8(torch.nn.functional.interpolate(imgs, size=64, mode="nearest"))
        ax.imshow(np.concatenate(list(arr), axis=1))
        ax.set_title(f"{name} at scale {scale:g}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    from mobilediff.evaluator import Evaluator

    ap = Parser(doc)
    ap.add_argument("--n", type=count(2), default=128, help="Scenes / prompts per scale (default 128).")
    ap.add_argument("--scale", type=float, nargs="+", default=list(SCALES), help="Adapter scales (default 0 0.5 1).")
    ap.add_out(results, "result folder (default benchmarks/results)")
    a = ap.parse_args(argv)
    if not all(np.isfinite(s) for s in a.scale):
        raise MobilediffError("--scale takes finite numbers")
    t0 = time.time()
    rows_s, img_s = swap_rows(a.n, a.scale, Evaluator.load(), print)
    rows_m, img_m = mono_rows(a.n, a.scale, print)
    result = {**envelope("adapters", command_line("adapters", argv), t0),
              "settings": {"n": a.n, "scales": a.scale}, "rows": rows_s + rows_m}
    write_results(a.out, {"adapters.png": savefig(grid({"swap-red-blue": img_s, "emoji-monochrome": img_m})),
                          "adapters.md": write_markdown(result), "adapters.json": json_safe(result)})
    print(f"wrote {a.out / 'adapters.md'}, .json and .png")
    return result
