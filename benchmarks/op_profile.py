"""Operator profiles of exported components: where a UNet step's (or a decoder's) time goes on ONNX Runtime and
ExecuTorch, float against int8, so that "int8 that pays" is answered by measurement (mobilediff/bench/op_profile.py
has the profilers and the operator kinds).

For every --bundle and every ONNX / ExecuTorch file of each --component in it: --runs profiled calls after --warmup
on the manifest's example inputs (mobilediff.bench.bundles.component_inputs), at --threads, each row with the
median profiled call, time per operator kind (gemm, quantize, norm, elementwise, other, overhead), the top
operators, and the component's FLOPs (the manifest's gflop) as GFLOP/s and as a share of this machine's GEMM peak
(fp32 for float files, int8 for int8 ones; mobilediff.bench.peak).

Writes to --out (default benchmarks/results/):
  op_profile.json   rows {bundle, component, runtime, precision, total_ms, kernel_ms, kinds, ops, gflop,
                    gflops_per_s, peak_fraction}, gemm_peak, settings, machine, versions
  op_profile.md     per component: the kinds table (ms per call) and each row's top operators
  op_profile.png    stacked time per operator kind, one bar per row

Run:  python benchmarks/op_profile.py --bundle DIR [--bundle DIR ...] [--component unet vae_decoder] [--runs 30]
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.op_profile import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
