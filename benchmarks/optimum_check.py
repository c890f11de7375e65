"""Do the ecosystem's own tools read what mobilediff writes? optimum's ONNX Runtime diffusion pipeline loads each ONNX
bundle folder as is and samples it; its images are compared with `mobilediff generate --bundle`. And the embedded
default model's text encoder, loaded by transformers 4.x, is compared with transformers 5's.

    python benchmarks/optimum_check.py [--models default,default:progressive-4,default:lcm] [--seed 0] [--out DIR]

optimum-onnx pins transformers < 4.58, so it runs in its own virtual environment, built once (idempotently) under
build/optimum_check/venv from PyPI with the local CPU torch wheel (never a CUDA build). Each model is exported to an
ONNX bundle with this mobilediff, sampled with the bundle's default plan (sampler, steps, guidance) at a fixed seed
by both, from the same initial latents (torch.randn with manual_seed, as mobilediff draws them; LCM's fresh noise
continues from that generator). Rows: uint8 values that differ out of H*W*3, and the largest difference.
Writes optimum_check.json and optimum_check.md (default benchmarks/results). Not part of the test suite.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.optimum_check import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
