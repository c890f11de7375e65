"""Every sampler table against the loop it replaces: the table's run (the bundle engine's and the apps' loop) and
diffusers' own loop over the scheduler, largest absolute difference of the final latent per sampler, schedule and
step count: DDIM, DPM-Solver++(2M), Euler and LCM on two schedules, flow-matching Euler with every shift form, and
SANA-Sprint's sCM steps (against SanaSprintPipeline itself). mobilediff/bench/sampler_tables.py has the method.

Writes to --out (default benchmarks/results/):
  sampler_tables.json   rows: family, sampler, schedule, steps, max_abs_error, scale (largest |latent|), note
  sampler_tables.md     the table, worst row, what diffusers itself refuses
  sampler_tables.png    error against steps per sampler and schedule

Run:  python benchmarks/sampler_tables.py      (about a minute)
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.sampler_tables import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
