"""The scaling study: quality against latency for every UNet size of the model family (teachers over samplers, step
counts and guidance, and their distilled students), and verdicts on the claims of "Bigger is not Always Better"
(Mei et al. 2024): (a) under a fixed sampling budget smaller models often give better images; (b) whichever the
sampler; (c) after step distillation too; (d) guidance moves FD more than prompt accuracy.

Every row is scored on the same fixed prompts and noise seeds (mobilediff.quality) with the shapes-domain evaluator.
FLOPs are counted on the real modules (torch.utils.flop_counter). Latency is one image end to end at batch 1,
composed from each pipeline's component medians (text encoder + steps x UNet step + VAE decoder) and checked
against one measured end-to-end generate per pipeline: mobilediff/bench/scaling.py's docstring has the row schema
and the latency model, mobilediff/bench/claims.py the verdict rules.

Writes to --out (default benchmarks/results/):
  scaling.json           list of rows: model, pipeline, unet_params, gflops_per_image, sampler, method, steps,
                         guidance, runtime, latency_ms, prompt_accuracy, attribute_accuracy, fd, ...
  scaling_meta.json      models (hashes, component FLOPs and latencies, end-to-end checks), settings, verdicts,
                         machine, versions, wall time
  scaling.md             verdicts and rules, models, which size wins at which budget, students, best guidance, rows
  scaling_quality.png    prompt accuracy and FD against latency per size, a panel per sampler, students marked
  scaling_budget.png     best accuracy within a latency budget per size, and the winner per budget
  scaling_guidance.png   guidance sweeps per size

Run:  python benchmarks/scaling.py     (every registered default:unet-* model and its students; hours on 2 CPU cores;
                                        scored rows are cached, so an interrupted run picks up where it stopped)
      python benchmarks/scaling.py --model default:unet-xs --model DIR --students DIR ... --n 64
`mobilediff recommend` answers budget questions from scaling.json.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from mobilediff.bench.envelope import Parser, command_line, count, finite, run_command, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def default_cache() -> Path:
    """$XDG_CACHE_HOME/mobilediff/scaling-rows (~/.cache when unset)."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobilediff" / "scaling-rows"


def build_parser() -> Parser:
    from mobilediff.samplers import samplers_for

    ap = Parser(__doc__)
    ap.add_argument("--model", action="append", default=None, metavar="NAME_OR_DIR",
                    help="a model (UNet size) to study, repeatable: default:unet-<size> or a pipeline folder "
                         "(default: every default:unet-* family member registered)")
    ap.add_argument("--students", nargs="*", default=None, metavar="NAME_OR_DIR",
                    help="distilled students (folders with a distillation.json), each put with the --model it was "
                         "distilled from; progressive-N samples at N steps with its own plan, LCM at --student-steps "
                         "(default: the registered progressive-1, progressive-4 and lcm students of each family "
                         "model; the flag alone: none)")
    ap.add_argument("--samplers", nargs="+", default=["ddim", "dpmpp"], choices=samplers_for(False),
                    help="the teachers' samplers (default: ddim dpmpp)")
    ap.add_argument("--steps", type=count(1), nargs="+", default=[1, 2, 4, 8, 16, 32, 50],
                    help="the teachers' step counts (default: 1 2 4 8 16 32 50)")
    ap.add_argument("--guidance", type=finite(0), nargs="+", default=[1.0, 2.0, 3.5, 6.0],
                    help="the teachers' guidance sweep (default: 1 2 3.5 6; <= 1: no CFG batch)")
    ap.add_argument("--student-steps", type=count(1), nargs="+", default=[1, 4],
                    help="step counts of LCM students (default: 1 4)")
    ap.add_argument("--n", type=count(2), default=256, help="prompts (and images) per row (default 256)")
    ap.add_argument("--runtime", choices=("eager", "onnx"), default="eager",
                    help="where latency is measured: PyTorch eager (default) or ONNX Runtime (each pipeline exported "
                         "and checked against PyTorch first)")
    ap.add_argument("--threads", type=count(1), default=1, help="CPU threads of the latency measurements (default 1)")
    ap.add_argument("--runs", type=count(1), default=20, help="timed calls per component after warm-up (default 20)")
    ap.add_argument("--warmup", type=count(0), default=3, help="untimed calls per component first (default 3)")
    ap.add_argument("--e2e-runs", type=count(1), default=5,
                    help="timed end-to-end generates per pipeline that check the composed latency (default 5)")
    ap.add_argument("--work", type=Path, default=None,
                    help="--runtime onnx: folder for the exported bundles (default: a temporary folder, removed)")
    ap.add_argument("--cache", type=Path, default=default_cache(), metavar="DIR",
                    help="scored rows are kept here as they are scored, so an interrupted run resumes and a run with "
                         "one more model scores only its rows; a row is reused only for the same weights, settings, "
                         "evaluator and mobilediff version (default: %(default)s)")
    ap.add_argument("--no-cache", action="store_true", help="score every row again and keep nothing")
    ap.add_argument("--out", type=Path, default=RESULTS, help="result folder (default benchmarks/results)")
    return ap


def main(argv: list[str] | None = None) -> None:
    from mobilediff.bench.scaling import ScalingConfig, measure, output_files, resolve_subjects

    args = build_parser().parse_args(argv)
    t0 = time.time()
    models, students = resolve_subjects(args.model, args.students)
    cfg = ScalingConfig(models=models, students=students, samplers=tuple(dict.fromkeys(args.samplers)),
                        steps=tuple(dict.fromkeys(args.steps)), guidance=tuple(dict.fromkeys(args.guidance)),
                        student_steps=tuple(dict.fromkeys(args.student_steps)), n=args.n, runtime=args.runtime,
                        threads=args.threads, runs=args.runs, warmup=args.warmup, e2e_runs=args.e2e_runs,
                        work=args.work, cache=None if args.no_cache else args.cache)
    cfg.check()
    result = measure(cfg, command_line("scaling", argv))
    result["meta"]["wall_seconds"] = time.time() - t0
    write_results(args.out, output_files(result))
    for v in result["meta"]["verdicts"]:
        print(f"({v['claim']}) {v['verdict']}: {v['evidence']}")
    print(f"wrote {args.out / 'scaling.json'}, scaling_meta.json, scaling.md and plots")


if __name__ == "__main__":
    sys.exit(run_command(main))
