"""Every sampler table against the loop it replaces: the table's run (:func:`mobilediff.sampler_table.run_table`, what
the bundle engine and both apps do) and diffusers' own loop over the scheduler, from the same initial noise and the
same fresh draws, with the same denoiser, compared by the largest absolute difference of the final latent.

- discrete-time samplers (DDIM, DPM-Solver++(2M), Euler, LCM) built from two schedules: the default model's (cosine,
  v-prediction, trailing spacing) and Stable Diffusion 1.5's (scaled-linear, epsilon, leading spacing);
- flow matching (``FlowMatchEulerDiscreteScheduler``): a static shift (SD3's 3.0), none, a resolution-dependent shift
  with explicit sigmas (Flux's), a linear time shift, a terminal shift, stochastic sampling;
- SANA-Sprint's sCM (TrigFlow) steps: ``SanaSprintPipeline`` itself around a tiny random SANA-Sprint transformer.

The denoiser of the scheduler loops is a fixed field, non-linear in the latent and dependent on the timestep, so a
table that fed the wrong input scale, timestep or history would differ; SANA-Sprint's is the pipeline's transformer.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from mobilediff.bench.envelope import Parser, command_line, count, json_safe, pyplot, savefig, write_results

SD15_SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                 "beta_end": 0.012, "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1}
FLOW_CONFIGS = [  # (label, scheduler config, flow_timestep_args options)
    ("static shift 3 (SD3)", {"shift": 3.0}, {}),
    ("no shift", {}, {}),
    ("resolution shift, explicit sigmas (Flux)", {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
                                                  "base_image_seq_len": 256, "max_image_seq_len": 4096},
     {"explicit_sigmas": True}),
    ("resolution shift, linear", {"use_dynamic_shifting": True, "time_shift_type": "linear"}, {}),
    ("terminal shift 0.1", {"shift": 2.0, "shift_terminal": 0.1}, {}),
    ("stochastic, shift 3", {"shift": 3.0, "stochastic_sampling": True}, {}),
]
SHAPE = (1, 4, 8, 8)


def field(x: torch.Tensor, t) -> torch.Tensor:
    """The fixed denoiser of the scheduler loops."""
    t = float(t)
    return 0.6 * x - 0.3 * torch.tanh(2 * x) + (t / 1000.0) * torch.linspace(-1, 1, x.numel()).reshape(x.shape)


def _scheduler_loop(sched, steps: int, noise: torch.Tensor, seed: int, timestep_args: dict | None = None,
                    scale_input: bool = True) -> torch.Tensor:
    """diffusers' text-to-image loop over ``sched``: noise x init_noise_sigma, then per timestep the (scaled) input,
    the field, the step (fresh noise from a generator seeded ``seed``)."""
    import importlib

    from mobilediff.sampler_table import _symbolic_noise

    sched.set_timesteps(steps, **(timestep_args or {}))
    x = noise * getattr(sched, "init_noise_sigma", 1.0)  # the flow pipelines start from the draw itself
    g = torch.Generator().manual_seed(seed)
    # every fresh draw is made in float32 and cast, so the float64 run re-noises with the same values
    with _symbolic_noise(importlib.import_module(type(sched).__module__),
                         lambda: torch.randn(noise.shape, generator=g).to(noise.dtype)):
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t) if scale_input else x
            x = sched.step(field(inp, t), t, x, generator=g, return_dict=False)[0]
    return x


def _draws(seed: int, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g) for _ in range(n)]


def discrete_rows(steps_list) -> list[dict]:
    from mobilediff.models import SchedulerConfig
    from mobilediff.sampler_table import run_table, sampler_table
    from mobilediff.samplers import SAMPLERS, make_scheduler

    base = SchedulerConfig().build().config
    from diffusers import DDIMScheduler

    sd15 = DDIMScheduler(**SD15_SCHEDULE).config
    rows = []
    for schedule, config in (("default model (cosine, v-prediction)", base), ("SD-1.5 (scaled-linear, epsilon)", sd15)):
        for name in SAMPLERS:
            for steps in steps_list:
                noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(steps))
                table = sampler_table(make_scheduler(name, config), steps)
                draws = _draws(11, steps)
                got = run_table(table, field, noise, fresh_noise=lambda i: draws[i])
                want = _scheduler_loop(make_scheduler(name, config), steps, noise, 11)
                exact = _scheduler_loop(make_scheduler(name, config), steps, noise.double(), 11)
                rows.append(_row("discrete", name, schedule, steps, got, want, exact))
    return rows


def flow_rows(steps_list) -> list[dict]:
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    from mobilediff.errors import MobilediffError
    from mobilediff.sampler_table import flow_table, flow_timestep_args, run_table

    rows = []
    for label, config, options in FLOW_CONFIGS:
        for steps in steps_list:
            sched = FlowMatchEulerDiscreteScheduler(**config)
            args = flow_timestep_args(sched, 64, 64, patch_size=2, **options)
            try:
                table = flow_table(sched, steps, args)
            except MobilediffError as e:  # what diffusers itself cannot run (a terminal stretch of one sigma)
                rows.append({"family": "flow", "sampler": "flow-euler", "schedule": label, "steps": steps,
                             "max_abs_error": None, "scale": None, "reference_rounding": None, "note": str(e)})
                continue
            noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(steps))
            draws = _draws(11, steps)
            got = run_table(table, field, noise, fresh_noise=lambda i: draws[i])
            call = dict(args)
            if call.get("sigmas") == "linspace":
                call["sigmas"] = np.linspace(1.0, 1.0 / steps, steps).tolist()
            want, exact = (_scheduler_loop(FlowMatchEulerDiscreteScheduler(**config), steps, x, 11, call,
                                           scale_input=False) for x in (noise, noise.double()))
            rows.append(_row("flow", "flow-euler", label, steps, got, want, exact))
    return rows


def tiny_sana_sprint_pipeline():
    """diffusers' own SanaSprintPipeline around a tiny random SANA-Sprint transformer (guidance embedding, RMS q/k
    norm, timestep scale 1000; seeded with 0), without text encoder or VAE: fed prompt embeddings, stopped at the
    latent."""
    from diffusers import SanaSprintPipeline, SanaTransformer2DModel, SCMScheduler

    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=32,
        mlp_ratio=2.5, sample_size=8, patch_size=1, norm_elementwise_affine=False, guidance_embeds=True,
        guidance_embeds_scale=0.1, qk_norm="rms_norm_across_heads", timestep_scale=1000.0).eval()
    pipe = SanaSprintPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                              scheduler=SCMScheduler(sigma_data=0.5))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def scm_rows(steps_list) -> list[dict]:
    from diffusers import SCMScheduler

    from mobilediff.sampler_table import run_table, scm_table

    pipe = tiny_sana_sprint_pipeline()
    transformer = pipe.transformer
    embeds, mask = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1)), torch.ones(1, 16)
    guidance = torch.full([1], 4.5) * transformer.config.guidance_embeds_scale
    rows = []
    for steps in steps_list:
        with torch.no_grad():
            want = pipe(prompt_embeds=embeds, prompt_attention_mask=mask, num_inference_steps=steps, height=256,
                        width=256, generator=torch.Generator().manual_seed(3), output_type="latent",
                        use_resolution_binning=False, guidance_scale=4.5,
                        intermediate_timesteps=1.3 if steps == 2 else None).images
            table = scm_table(SCMScheduler(sigma_data=0.5), steps)
            g = torch.Generator().manual_seed(3)
            noise = torch.randn(want.shape, generator=g)
            fresh = [torch.randn(want.shape, generator=g) for _ in range(steps)]

            def denoise(x, t):
                return transformer(x, encoder_hidden_states=embeds, encoder_attention_mask=mask, guidance=guidance,
                                   timestep=torch.full([1], float(t)), return_dict=False)[0]

            got = run_table(table, denoise, noise, fresh_noise=lambda i: fresh[i])
        rows.append(_row("scm", "scm (SANA-Sprint)", "TrigFlow, sigma_data 0.5, SanaSprintPipeline", steps, got,
                         want))
    return rows


def _row(family: str, sampler: str, schedule: str, steps: int, got: torch.Tensor, want: torch.Tensor,
         exact: torch.Tensor | None = None) -> dict:
    """``exact``: diffusers' loop in float64, whose difference from its float32 loop (``want``) is the reference's
    own rounding: the closest any other float32 run can be expected to come to it."""
    return {"family": family, "sampler": sampler, "schedule": schedule, "steps": steps,
            "max_abs_error": float((got - want).abs().max()), "scale": float(want.abs().max()),
            "reference_rounding": None if exact is None else float((want.double() - exact).abs().max()), "note": None}


def allowed(row: dict, bar: float) -> float:
    """A row's bar: ``bar``, or twice the reference loop's own float32 rounding where that is larger."""
    return max(bar, 2 * (row.get("reference_rounding") or 0.0))


def write_markdown(result: dict) -> str:
    rows, meta = result["rows"], result["meta"]
    lines = ["# Sampler tables against diffusers' loops", "", f"`{meta['command']}`", "",
             "Largest absolute difference of the final latent between the table's run (the bundle engine's and the "
             "apps' loop) and diffusers' own loop over the scheduler: same initial noise, same fresh draws, same "
             f"denoiser. Bar: {meta['bar']:g}.", "",
             "A row's bar is the larger of that and twice the difference between diffusers' float32 loop and the same "
             "loop in float64 (its own rounding: no other float32 run can be expected to come closer to it).", "",
             "| sampler | schedule | " + " | ".join(f"{k} steps" for k in meta["steps"]) +
             " | worst | diffusers fp32 vs fp64, worst | within the bar |",
             "|---|---|" + "---|" * (len(meta["steps"]) + 3)]
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["sampler"], r["schedule"]), {})[r["steps"]] = r
    for (sampler, schedule), by_steps in groups.items():
        cells, worst, rounding, ok = [], 0.0, None, True
        for k in meta["steps"]:
            r = by_steps.get(k)
            if r is None:
                cells.append("-")
            elif r["max_abs_error"] is None:
                cells.append("refused")
            else:
                cells.append(f"{r['max_abs_error']:.1e}")
                worst = max(worst, r["max_abs_error"])
                ok = ok and r["max_abs_error"] <= allowed(r, meta["bar"])
                if r["reference_rounding"] is not None:
                    rounding = max(rounding or 0.0, r["reference_rounding"])
        lines.append(f"| {sampler} | {schedule} | " + " | ".join(cells) + f" | {worst:.1e} | "
                     f"{'-' if rounding is None else f'{rounding:.1e}'} | {'yes' if ok else 'NO'} |")
    refused = [r for r in rows if r["max_abs_error"] is None]
    if refused:
        lines += ["", "Refused (diffusers itself cannot run them): " +
                  "; ".join(f"{r['schedule']} at {r['steps']} step(s): {r['note']}" for r in refused) + "."]
    lines += ["", f"Largest error over all rows: {meta['worst']:.1e}; rows beyond {meta['bar']:g}: "
              f"{meta['over_bar']} (every one of them within its reference's own rounding: "
              f"{'yes' if not meta['failed'] else 'NO'}).", ""]
    return "\n".join(lines)


def plot(result: dict):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    groups: dict[str, list] = {}
    for r in result["rows"]:
        if r["max_abs_error"] is not None:
            groups.setdefault(f"{r['sampler']}: {r['schedule']}", []).append((r["steps"], max(r["max_abs_error"], 1e-12)))
    for label, pts in groups.items():
        ax.plot(*zip(*sorted(pts)), "o-", ms=3, lw=1, label=label)
    ax.axhline(result["meta"]["bar"], color="red", ls="--", lw=1, label="bar")
    ax.set(xscale="log", yscale="log", xlabel="steps", ylabel="max |table - diffusers|",
           title="Sampler tables against diffusers' loops (zeros drawn at 1e-12)")
    ax.legend(fontsize=5.5, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


BAR = 1e-5


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> None:
    from mobilediff.bench.envelope import envelope

    ap = Parser(doc)
    ap.add_argument("--steps", type=count(1), nargs="+", default=[1, 2, 4, 8, 28, 50],
                    help="step counts (default: 1 2 4 8 28 50; sCM runs at the ones up to 4)")
    ap.add_out(results, "result folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    t0 = time.time()
    steps = sorted(set(args.steps))
    rows = discrete_rows(steps) + flow_rows(steps) + scm_rows([k for k in steps if k <= 4] or [1])
    done = [r for r in rows if r["max_abs_error"] is not None]
    worst = max(r["max_abs_error"] for r in done)
    failed = [r for r in done if r["max_abs_error"] > allowed(r, BAR)]
    meta = {"steps": steps, "bar": BAR, "worst": worst, "over_bar": sum(r["max_abs_error"] > BAR for r in done),
            "failed": len(failed), **envelope("sampler_tables", command_line("sampler_tables", argv), t0)}
    result = {"rows": rows, "meta": meta}
    write_results(args.out, {"sampler_tables.json": json_safe(result), "sampler_tables.md": write_markdown(result),
                             "sampler_tables.png": savefig(plot(result))})
    print(f"{len(done)} tables against diffusers' loops: largest error {worst:.1e}; {meta['over_bar']} beyond {BAR:g}, "
          f"{len(failed)} beyond their reference's own float32 rounding")
    if failed:
        from mobilediff.errors import MobilediffError

        r = failed[0]
        raise MobilediffError(f"the {r['sampler']} table ({r['schedule']}, {r['steps']} steps) differs from diffusers' "
                              f"loop by {r['max_abs_error']:.1e}, beyond {allowed(r, BAR):.1e}: see "
                              f"{Path(args.out) / 'sampler_tables.md'}")
