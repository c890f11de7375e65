"""Image-to-image and inpainting on the shapes domain: the teacher and its few-step students asked to recolour or
move a shape of a rendered scene, per mode and strength (mobilediff/bench/image_modes.py has the method).

Writes to --out (default benchmarks/results/):
  image_modes.json   settings and rows (model, task, mode, strength, steps run, edit/source accuracy, PSNR vs input)
  image_modes.md     the table, with the few-step caveats
  image_modes.png    edit accuracy and PSNR against strength, per task and mode

Run:  python benchmarks/image_modes.py [--model M ...] [--n 64] [--strength 0.3 0.5 0.8 1] [--task recolour move]
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.image_modes import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
