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
  configurations.jsonl   the rows appended to the store of measured configurations (docs/configurations.md)

Run:  python benchmarks/scaling.py     (every registered default:unet-* model and its students; hours on 2 CPU cores;
                                        scored rows are cached, so an interrupted run picks up where it stopped)
      python benchmarks/scaling.py --model default:unet-xs --model DIR --students DIR ... --n 64
      python benchmarks/scaling.py --n 128 --reuse benchmarks/results   (a size added to the family: the committed
                                        rows of the other sizes are taken after one row of each -- two where its
                                        files changed since -- is scored again and found equal; only the new size's
                                        rows are scored, every latency measured)
`mobilediff recommend` answers budget questions from the store (benchmarks/results/configurations.jsonl).
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.scaling import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
