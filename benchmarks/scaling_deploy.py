"""The scaling study on the deployment axis: the verdicts on "Bigger is not Always Better" with the sampling budget
in FLOPs (the paper's unit), in eager PyTorch latency (the study's own) and in the latency of each runtime and
precision the family's bundles were timed on (run_device results), side by side; and whether a UNet step is bound by
its kernels or by its FLOPs, with the crossover model size (mobilediff/bench/deploy_scaling.py has the method).

Writes to --out (default benchmarks/results/):
  scaling_deploy.json   settings, judged (per unit: rows, left out, models, verdicts a-c), kernel_bound (per latency
                        unit: family step points, fit, crossover GFLOP and UNet params, real-size UNets)
  scaling_deploy.md     the verdict table per unit, the evidence, the kernel-bound table
  scaling_deploy.png    step time against GFLOP per unit; best accuracy within a budget per model, per unit

Run:  python benchmarks/scaling_deploy.py --device RUN_DEVICE.json [...] [--real benchmarks/results/real_architectures.json]
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.deploy_scaling import main
from mobilediff.bench.envelope import run_script

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
