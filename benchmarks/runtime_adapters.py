"""Run-time LoRA adapters (export --runtime-lora) against the same adapters merged at export (--lora): parity,
file sizes, switch time and the step-time overhead per runtime, and int8 base + float adapter.
mobilediff/bench/runtime_adapters.py has the method.

Writes to --out (default benchmarks/results/): runtime_adapters.json, runtime_adapters.md, runtime_adapters.png.
Bundles are exported once into --work (default ../runs/runtime-adapters) and reused. Time it on an idle machine.

Run:  python benchmarks/runtime_adapters.py [--adapter default:swap-red-blue] [--fp32-only] [--runs 50] [--threads 1]
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.runtime_adapters import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
