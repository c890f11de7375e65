"""The backbone study: a UNet and a diffusion transformer of equal FLOPs per call and equal training compute (the
family's recipe on the shapes domain), quality against cost in FLOPs, eager latency and each deployment runtime.

Every row is one (model, sampler, steps, guidance) scored on the scaling study's fixed prompts and noise seeds with the
shapes-domain evaluator; rows are cached and can be taken from a scaling study's results (--reuse) after a check.
mobilediff/bench/backbones.py's docstring has the method.

Writes to --out (default benchmarks/results/):
  backbones.json   rows (as scaling.json's) and meta: models (parameters, GFLOP per call, training compute and time),
                   best accuracy per (sampler, steps), budget tables per unit, machine, versions, command
  backbones.md     the tables
  backbones.png    accuracy against steps per sampler, and against cost per unit (frontiers)

Run:  python benchmarks/backbones.py --reuse benchmarks/results --device benchmarks/results/backbones_device/run_device.json
      python benchmarks/backbones.py --unet DIR --dit DIR --n 64
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.backbones import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
