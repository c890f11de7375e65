"""The embedded LoRA adapters at scales 0 to 1: default:swap-red-blue (the default model draws red as blue and blue
as red; counted by the shapes evaluator) and default:emoji-monochrome (the emoji model in grayscale; mean saturation).
mobilediff/bench/adapters.py has the method.

Writes to --out (default benchmarks/results/): adapters.json, adapters.md, adapters.png (images per scale).

Run:  python benchmarks/adapters.py [--n 128] [--scale 0 0.5 1]
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.adapters import main
from mobilediff.bench.envelope import run_script

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
