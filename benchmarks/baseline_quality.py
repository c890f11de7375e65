"""Baseline quality of the default model: DDIM-50, and DDIM / DPM-Solver++ at 1-16 steps, over a guidance sweep.

Writes to --out (default benchmarks/results/):
  baseline_quality.json       list of rows: sampler, steps, nfe, guidance, prompt_accuracy, fd, attribute accuracy
  baseline_quality_meta.json  model hash, prompt set, machine, versions, wall time
  baseline_quality.md         tables: every row, and the best guidance per sampler and step budget
  baseline_quality.png        prompt accuracy and FD against steps (best guidance), and the guidance sweep
  baseline_grid.png           DDIM-50 samples at the best guidance, prompts as row labels

Run:  python benchmarks/baseline_quality.py            (about 10 minutes on 2 CPU cores)
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.baseline_quality import main
from mobilediff.bench.envelope import run_script

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
