"""The transformer families' architecture matrix: PixArt-alpha/Sigma, SANA, SANA-Sprint and SD3/3.5 denoisers, T5,
Gemma-2 and projected-CLIP text encoders, the deep-compression and 16-channel decoders, as tiny random modules of
diffusers' and transformers' own classes, each exported to ONNX, ExecuTorch and Core ML and checked against PyTorch.

    python benchmarks/transformer_matrix.py [--targets onnx executorch coreml] [--variant NAME ...] [--out DIR]

Writes transformer_matrix.json (one row per variant and target: parity, XNNPACK delegation, how the graph was
captured, a failure's one-line reason) and transformer_matrix.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.transformer_matrix import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
