"""Every distinct convolution of a real UNet architecture on XNNPACK, whole and split over input channels: the
measurement behind mobilediff.targets.xnnpack_forms.split_wide_convs.

XNNPACK's convolution streams its whole packed weight once per tile of output pixels, so a weight larger than the
last-level cache is read from memory again for every tile. The exporter splits a convolution whose weight exceeds
CONV_WEIGHT_BUDGET_BYTES (16 MiB) into a sum of convolutions over groups of its input channels. This script checks
that rule on the convolutions of --arch (seeded random weights, real shapes; mobilediff.bench.real_architectures) at
--resolution with the CFG batch of 2: for each distinct (in, out, kernel, stride, input size) it lowers the convolution
alone twice -- whole, and as the exporter lowers it -- profiles both with an ETDump (XNNPACK's per-kernel times:
the convolution kernels' own time with a split one's input slices and partial-sum adds, without the layout
transposes a lone convolution needs at its edges), times
PyTorch eager, and sums everything over the UNet by how often each convolution occurs. Then (unless --no-unet) it
lowers the whole UNet both ways and profiles one step of each: where the step's time goes per XNNPACK kernel.

Writes to --out (default benchmarks/results/):
  xnnpack_convs.json  rows {in_channels, out_channels, kernel, stride, input_hw, count, weight_mib, parts, gflop,
                      eager_ms, whole_ms, split_ms, whole/split/eager gflops_per_s}, totals, unet {whole, split:
                      {total_ms, kinds, ops, facts}}, settings, machine, versions
  xnnpack_convs.md    the tables and the totals
  xnnpack_convs.png   GFLOP/s per convolution against its weight size, whole and as exported; the UNet step's kernels

Run:  python benchmarks/xnnpack_convs.py [--arch sd15] [--resolution 512] [--threads 2] [--runs 5] [--no-unet]
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.xnnpack_convs import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
