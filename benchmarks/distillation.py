"""Few-step students against their 50-step teacher: LCM and progressive students at 1, 2, 4, 8 steps next to the
teacher with DDIM and DPM-Solver++ at the same step counts and the teacher's 50-step DDIM, and the slim student
(`distill --method slim`: a student's UNet with blocks removed) at its own plan.

Every row is scored on the same fixed prompts and noise seeds (n >= 256) with the shapes-domain evaluator.
Guidance is swept for every row that takes it (the teacher's samplers: a CFG batch, 2 UNet calls per step; the
LCM student: its guidance embedding, 1 call per step); progressive students sample without guidance (it is
distilled in). The table keeps the best guidance per (method, steps) and lists every row.

Writes to --out (default benchmarks/results/):
  distillation.json       list of rows: method, steps, nfe, guidance, prompt_accuracy, fd, attribute accuracy
  distillation_meta.json  models and their hashes, students' training time and machine, targets, wall time
  distillation.md         best row per method and step count, the targets checked, every row
  distillation.png        prompt accuracy and FD against steps, per method
  distillation_grid.png   the same prompts and seeds from the teacher (DDIM-50) and each student at 1 and 4 steps

Run:  python benchmarks/distillation.py --lcm DIR --progressive DIR --slim DIR   (about 15 minutes on 2 CPU cores)
      DIR: a student pipeline (lcm, slim) or a folder of steps-N pipelines (progressive); default: the committed
      ones; a folder that does not exist is left out (progressive, slim).
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.distillation import main
from mobilediff.bench.envelope import run_script

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
