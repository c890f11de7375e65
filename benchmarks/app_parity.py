"""App parity: the demo apps' engines against Python on the same bundles, seeds and goldens.

    python benchmarks/app_parity.py [--fixtures DIR [--fixtures-ready]] [--app android] [--out benchmarks/results] [--no-apk]

For every app whose `<app>_demo/scripts/engine.sh` exists (android_demo, ios_demo) and every fixture model
(`python -m mobilediff.fixtures DIR`: default DDIM-50 + CFG, progressive-4, lcm): the engine's `check-goldens`
(token ids, torch noise, the sampler replayed on recorded model outputs and driven by the real ONNX graphs), then
`generate` at each reference seed on every backend the app runs here, compared with Python's `generate --bundle`
image (bar: >= 40 dB PSNR), with the engine's milliseconds beside Python's for the same bundle and runtime (both
measured alike: one untimed image, then the median of REPEATS). For android, `build-apk.sh` gives the `apk` row (signed, `apksigner verify`).
Writes app_parity.json (rows {app, check, backend, model, seed, psnr_db, max_abs_error, passed, ...}, the machine)
and app_parity.md, atomically. psnr_db null means identical.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.app_parity import main
from mobilediff.bench.envelope import run_script

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
