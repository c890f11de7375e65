"""What each quantization recipe costs and buys, per component and end to end for a few-step student.

For the student (default: the committed 4-step LCM student) the script exports one float bundle per target and one
bundle per recipe (`mobilediff.exporter.run_export` with `quantize=RECIPE`), calibrated on the student's own
sampling trajectories, then measures:

- per recipe and component: file size, PSNR and max abs error against the float PyTorch component (the parity
  record the export wrote into the manifest), and host latency on the component's runtime (ONNX Runtime,
  ExecuTorch; warm median / p90 over --runs after warm-up, `mobilediff.bench.host.component_latency`);
- end to end (ONNX and ExecuTorch; Core ML cannot predict on Linux): --n images from the fixed prompt set and
  noise seeds through `BundleRunner`, scored with the shapes evaluator (prompt accuracy, FD), and their image
  PSNR against the same runtime's float bundle, image for image;
- ablations of the keep-float defaults on ONNX int8-static (nothing kept float; the VAE decoder quantized too),
  which is where the defaults come from.

Core ML bundles are exported and checked structurally here (sizes, compressed-weight counts); their numerical
parity and latency need macOS (`benchmarks/run_device.py --device apple`).

Writes to --out (default benchmarks/results/):
  quantization.json   {"meta": machine, versions, settings, wall time; "components": rows; "end_to_end": rows;
                       "targets": the int8 bars of mobilediff.bench.bars checked}
  quantization.md     the tables and targets
  quantization.png    denoiser size, denoiser latency and end-to-end prompt accuracy / FD per recipe

Run:  python benchmarks/quantization.py            (about 15 minutes on 2 CPU cores)
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.quantization import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
