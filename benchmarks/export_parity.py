"""Export parity of the default model: every target and component against PyTorch, and end-to-end images
of `generate --bundle` against the PyTorch pipeline at the same seeds and steps.

    python benchmarks/export_parity.py [--model default] [--out benchmarks/results]

Writes export_parity.json (rows: target, component, precision, max_abs_error, psnr_db, checked, file size,
export seconds; then end-to-end rows) and export_parity.md. Targets: fp32 components >= 60 dB, end-to-end
images >= 40 dB. Core ML is checked structurally here (coremltools cannot predict on Linux).
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.export_parity import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
