"""What a tiny decoder (``mobilediff distill-decoder``) costs and buys: for each student, the same prompts and noise
seeds sampled once with the model's own VAE decoder and once with the tiny decoder (the same latents reach both),
scored with the shapes evaluator; the decoders' GFLOP, parameters and image PSNR against the VAE decoder on fresh
samples the VAE encoded. ``benchmarks/decoder.py`` runs :func:`main`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mobilediff.bench import bars
from mobilediff.bench.envelope import Parser, command_line, count, envelope, fmt, pyplot, savefig, write_results
from mobilediff.errors import MobilediffError

STUDENTS = ("default:progressive-1", "default:progressive-2", "default:progressive-4", "default:progressive-8",
            "default:lcm")
PSNR_SEED = 4242  # a dataset seed no training run reads


@dataclass(frozen=True)
class DecoderBenchConfig:
    decoder: str = "default:tiny"
    students: tuple[str, ...] = STUDENTS
    lcm_steps: tuple[int, ...] = (1, 2, 4, 8)  # an LCM student is measured at each, with its own guidance
    n: int = 256
    psnr_samples: int = 256


def plan(model: str) -> list[tuple[str, int, float]]:
    """(sampler, steps, guidance) rows a student is measured at: its own plan (distillation.json); an LCM student at
    every step count of the config is added by :func:`measure`. Refuses a model that is not a distilled student."""
    from mobilediff.loading import resolve_model
    from mobilediff.card import distillation_record

    record = distillation_record(resolve_model(model))  # a corrupt record is refused there
    rec = record["sampling"] if record else None
    if not rec:
        raise MobilediffError(f"{model} is not a distilled student (no distillation.json with its sampling plan)")
    try:
        return [(str(rec["sampler"]), int(rec["steps"]), float(rec["guidance"]))]
    except (KeyError, TypeError, ValueError) as e:
        raise MobilediffError(f"corrupt distillation.json of {model}: sampling plan lacks {e}") from None


@torch.no_grad()
def decoder_psnr(vae, tiny, image_size: int, n: int, seed: int = PSNR_SEED, batch: int = 64) -> float:
    """PSNR (dB; images in [-1, 1], peak-to-peak 2) of the tiny decoder's images against the VAE decoder's, both
    decoding the VAE's latents of ``n`` fresh shapes-domain samples."""
    from mobilediff.data import ShapesConfig, ShapesDataset

    data = ShapesDataset(seed=seed, config=ShapesConfig(resolution=image_size, supersample=2 if image_size <= 32 else 4))
    se, count = 0.0, 0
    for first in range(0, n, batch):
        images, _, _ = data.batch(first, min(batch, n - first))
        z = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        target = vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
        got = tiny.decode(z).sample.clamp(-1, 1)
        se += float(((got - target) ** 2).sum())
        count += target.numel()
    return float(10 * torch.log10(torch.tensor(4.0 / (se / count))))


def measure(cfg: DecoderBenchConfig, command: str) -> dict:
    from mobilediff.bench.sweep import Point, sweep
    from mobilediff.decoder import (check_decoder_dir, check_fits, decoder_gflop, decoder_source, latent_space,
                                    resolve_decoder, vae_folder, with_decoder)
    from mobilediff.evaluator import Evaluator
    from mobilediff.loading import load_pipeline, resolve_model
    from mobilediff.quality import EVAL_SEED, NOISE_SEED, eval_scenes

    t0 = time.time()
    decoder_dir = resolve_decoder(cfg.decoder)
    record = check_decoder_dir(decoder_dir)
    plans = {m: plan(m) for m in cfg.students}  # every student checked before any sampling
    for m in cfg.students:
        check_fits(decoder_dir, record, latent_space(vae_folder(resolve_model(m))))
    points, pipes = [], {}
    for m in cfg.students:
        pipe = load_pipeline(m)
        tiny = with_decoder(pipe, decoder_dir, resolve_model(m))
        pipes[m] = (pipe, tiny)
        rows = plans[m]
        if rows[0][0] == "lcm":
            rows = [("lcm", k, rows[0][2]) for k in cfg.lcm_steps]
        for sampler, steps, guidance in rows:
            for label, p in (("vae", pipe), ("tiny", tiny)):
                points.append(Point(p, sampler, steps, guidance, {"model": m, "decoder": label}))
    evaluator = Evaluator.load()
    real = evaluator.real_features(eval_scenes(cfg.n))
    rows = sweep(points, evaluator, cfg.n, real, "decoder quality (UNet calls per batch)")
    pipe, tiny = next(iter(pipes.values()))
    from mobilediff.components import latent_size

    shape = (pipe.unet.config.in_channels, *latent_size(pipe.unet.config))  # (c, h, w): sample_size int or pair
    image_size = shape[1] * int(pipe.vae_scale_factor) if shape[1] == shape[2] else [n * int(pipe.vae_scale_factor) for n in shape[1:]]
    decoders = [
        {"decoder": "vae", "class": type(pipe.vae).__name__, "params": _params(pipe.vae.decoder) +
         _params(pipe.vae.post_quant_conv), "gflop_per_image": decoder_gflop(pipe.vae, shape), "psnr_db": None},
        {"decoder": "tiny", "class": type(tiny.vae).__name__, "params": _params(tiny.vae.decoder),
         "gflop_per_image": decoder_gflop(tiny.vae, shape),
         "psnr_db": decoder_psnr(pipe.vae, tiny.vae, image_size, cfg.psnr_samples), **decoder_source(decoder_dir)},
    ]
    pairs = pair_rows(rows)
    targets = check_targets(decoders, pairs)
    meta = {"decoder": cfg.decoder, "students": list(cfg.students), "n": cfg.n, "prompt_seed": EVAL_SEED,
            "noise_seed": NOISE_SEED, "psnr_samples": cfg.psnr_samples, "psnr_seed": PSNR_SEED,
            "image_size": image_size, "latent_shape": list(shape), **envelope("decoder", command, t0)}
    return {"meta": meta, "decoders": decoders, "rows": rows, "pairs": pairs, "targets": targets,
            "grid": _grid(pipes, plans)}


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def pair_rows(rows: list[dict]) -> list[dict]:
    """One row per (model, sampler, steps, guidance): both decoders' accuracy and FD and the change (tiny - VAE)."""
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["sampler"], r["steps"], r["guidance"]), {})[r["decoder"]] = r
    out = []
    for (model, sampler, steps, guidance), d in by.items():
        if {"vae", "tiny"} <= set(d):
            v, t = d["vae"], d["tiny"]
            out.append({"model": model, "sampler": sampler, "steps": steps, "guidance": guidance,
                        "vae_accuracy": v["prompt_accuracy"], "tiny_accuracy": t["prompt_accuracy"],
                        "accuracy_drop_points": 100 * (v["prompt_accuracy"] - t["prompt_accuracy"]),
                        "vae_fd": v["fd"], "tiny_fd": t["fd"], "fd_ratio": t["fd"] / v["fd"] if v["fd"] else None})
    return out


def check_targets(decoders: list[dict], pairs: list[dict]) -> list[dict]:
    """The tiny-decoder bars: its GFLOP, and the accuracy drop of every student row (the worst one decides)."""
    tiny = next(d for d in decoders if d["decoder"] == "tiny")
    out = [{"check": "tiny_decoder_gflop", "value": tiny["gflop_per_image"], "where": "decoder"}]
    out += [{"check": "tiny_decoder_accuracy_drop_points", "value": p["accuracy_drop_points"],
             "where": f"{p['model']} {p['sampler']}-{p['steps']} g{p['guidance']:g}"} for p in pairs]
    for t in out:
        b = bars.bar(t["check"])
        t.update({"bar": b.value, "op": b.op, "met": bars.check(t["check"], t["value"])})
    return out


def _grid(pipes: dict, plans: dict, n_prompts: int = 6):
    """Sample images of the first student with each decoder and of the others at their plans (figure callback)."""
    from mobilediff.bench.sweep import image_grid
    from mobilediff.data import to_uint8
    from mobilediff.quality import NOISE_SEED, eval_scenes
    from mobilediff.sampling import generate

    prompts = [s.caption for s in eval_scenes(n_prompts)]
    seeds = [NOISE_SEED + 20_000 + i for i in range(n_prompts)]
    cols, titles = [], []
    for m, (pipe, tiny) in list(pipes.items())[:3]:
        sampler, steps, guidance = plans[m][0]
        for label, p in (("VAE", pipe), ("tiny", tiny)):
            cols.append(to_uint8(generate(p, prompts, seeds, steps, sampler, guidance)))
            titles.append(f"{m.removeprefix('default:')}\n{label} decoder")
    return image_grid(cols, prompts, titles, None, cell=1.3)


def write_markdown(res: dict) -> str:
    meta = res["meta"]
    lines = ["# Tiny decoder: cost and quality with every student", "",
             f"{meta['n']} prompts of the fixed evaluation set (seed {meta['prompt_seed']}), noise seeds "
             f"{meta['noise_seed']}..{meta['noise_seed'] + meta['n'] - 1}: each student samples the same latents once "
             f"and both decoders decode them. Decoder: `{meta['decoder']}`. Machine: {meta['machine']['cpu']}, "
             f"{meta['machine']['cores']} cores. Generated by `{meta['command']}` in "
             f"{meta['wall_seconds'] / 60:.1f} min.", "",
             "## Decoders", "", "| decoder | class | parameters | GFLOP per image | PSNR against the VAE decoder (dB) |",
             "|---|---|---|---|---|"]
    for d in res["decoders"]:
        lines.append(f"| {d['decoder']} | {d['class']} | {d['params']:,} | {d['gflop_per_image']:.3f} | "
                     f"{fmt(d['psnr_db'], '.1f')} |")
    lines += ["", f"PSNR: both decoders decode the VAE's own latents of {meta['psnr_samples']} fresh samples "
              f"(dataset seed {meta['psnr_seed']}, which no training read); images in [-1, 1].", "",
              "## Each student with each decoder", "",
              "| student | sampler | steps | guidance | accuracy, VAE | accuracy, tiny | drop (points) | FD, VAE | "
              "FD, tiny | FD ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in res["pairs"]:
        lines.append(f"| {p['model']} | {p['sampler']} | {p['steps']} | {p['guidance']:g} | {p['vae_accuracy']:.3f} | "
                     f"{p['tiny_accuracy']:.3f} | {p['accuracy_drop_points']:+.2f} | {p['vae_fd']:.1f} | "
                     f"{p['tiny_fd']:.1f} | {fmt(p['fd_ratio'], '.3f')} |")
    lines += ["", "## Bars", "", "| check | where | value | bar | met |", "|---|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['check']} | {t['where']} | {t['value']:.3f} | {t['op']} {t['bar']:g} | "
                     f"{'yes' if t['met'] else '**no**'} |")
    lines += ["", "Accuracy is per prompt (every attribute right); a drop is VAE minus tiny, in points of 100. The "
              "latency of each decoder on each runtime is in `run_device.md`."]
    return "\n".join(lines) + "\n"


def plot(res: dict):
    plt = pyplot()
    pairs = res["pairs"]
    labels = [f"{p['model'].removeprefix('default:')}\n{p['sampler']}-{p['steps']}" for p in pairs]
    x = range(len(pairs))
    fig, ax = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(pairs) + 3), 4))
    w = 0.38
    for a, (vk, tk, name) in zip(ax, (("vae_accuracy", "tiny_accuracy", "prompt accuracy"), ("vae_fd", "tiny_fd", "FD"))):
        a.bar([i - w / 2 for i in x], [p[vk] for p in pairs], w, label="VAE decoder")
        a.bar([i + w / 2 for i in x], [p[tk] for p in pairs], w, label="tiny decoder")
        a.set_xticks(list(x), labels, fontsize=7)
        a.set_ylabel(name)
        a.grid(alpha=0.3, axis="y")
        a.legend(fontsize=7)
    lo = min(min(p["vae_accuracy"], p["tiny_accuracy"]) for p in pairs) if pairs else 0
    ax[0].set_ylim(max(0.0, lo - 0.05), 1.0)
    g = {d["decoder"]: d["gflop_per_image"] for d in res["decoders"]}
    fig.suptitle(f"Tiny decoder ({g['tiny']:.3f} GFLOP) against the VAE decoder ({g['vae']:.3f} GFLOP), same latents")
    fig.tight_layout()
    return fig


def output_files(res: dict) -> dict:
    out = {k: v for k, v in res.items() if k != "grid"}
    return {"decoder.json": out, "decoder.md": write_markdown(res), "decoder.png": savefig(plot(res)),
            "decoder_grid.png": savefig(res["grid"], dpi=100)}


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    """The command line of ``benchmarks/decoder.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, every student row
    measured with both decoders, written to ``--out``, the bars printed; returns the result. ``doc``: the script's
    docstring (its ``--help``); ``results``: the default ``--out`` (None: ``--out`` is required)."""
    ap = Parser(doc)
    ap.add_argument("--decoder", default="default:tiny", help="Decoder folder (mobilediff distill-decoder) or 'default:tiny'.")
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), help="Distilled students (folders or named models).")
    ap.add_argument("--lcm-steps", type=count(1), nargs="+", default=[1, 2, 4, 8], help="Step counts of an LCM student.")
    ap.add_argument("--n", type=count(2), default=256, help="Prompts (images) per row.")
    ap.add_argument("--psnr-samples", type=count(1), default=256, help="Fresh samples for the decoders' image PSNR.")
    ap.add_out(results, "Result folder (default benchmarks/results).")
    a = ap.parse_args(argv)
    cfg = DecoderBenchConfig(decoder=a.decoder, students=tuple(a.students), lcm_steps=tuple(a.lcm_steps), n=a.n,
                             psnr_samples=a.psnr_samples)
    res = measure(cfg, command_line("decoder", argv))
    write_results(a.out, output_files(res))
    for t in res["targets"]:
        print(f"{t['check']} {t['where']}: {t['value']:.3f} (bar {t['op']} {t['bar']:g}): {'met' if t['met'] else 'NOT met'}")
    return res
