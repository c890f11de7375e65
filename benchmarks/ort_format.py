"""ONNX Runtime's mobile format (ORT) against the .onnx graphs, on the phones' ONNX Runtime (1.29.0): for each graph
of a bundle (and for real UNet architectures with random weights), its ORT form's parity with PyTorch, its size,
session start and call time beside the .onnx form, and ONNX Runtime's mobile usability report per execution
provider (NNAPI, Core ML MLProgram / NeuralNetwork). A graph over the ORT format's 2 GiB limit keeps only its .onnx
form; the row says so.

Writes to --out (default benchmarks/results/): ort_format.json (rows, machine, versions) and ort_format.md.

Run:  python benchmarks/ort_format.py [--model default --model default:progressive-4] [--architecture sd15:full:fp16:256]
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.ort_format import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
