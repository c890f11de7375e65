"""The LCM-LoRA adapter (default:lcm-lora, `distill --method lcm-lora`): the teacher's prompt accuracy at 1-8 steps
with and without it, against the teacher's DDIM-50 and the LCM student, and on a fine-tune it was not trained on
(default:swap-red-blue merged). mobilediff/bench/lcm_lora.py has the method.

Writes to --out (default benchmarks/results/): lcm_lora.json, lcm_lora.md, lcm_lora.png (images per row).

Run:  python benchmarks/lcm_lora.py [--n 128] [--steps 1 2 4 8]
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.lcm_lora import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
