"""Few-step students of any model on your prompts: teacher fidelity (PSNR/SSIM against the teacher's DDIM-50 image of
the same prompt and seed), Fréchet distance with your feature extractor and CLIP score with your CLIP folder, for the
teacher's DDIM-50 and few-step DDIM rows and each student at 1, 2, 4, 8 steps (or its own plan); the 4-step bars of
mobilediff.bench.bars checked per student.

Writes to --out (default benchmarks/results/), named by --name (default student_quality):
  NAME.json      the rows (model, sampler, steps, NFE, guidance, metrics), the bars checked, settings, machine
  NAME.md        the same as tables
  NAME.png       fidelity, FD and CLIP score against steps, the teacher's DDIM-50 as a line
  NAME_grid.png  --grid prompts (default 16): the teacher's DDIM-50 and every row at --grid-steps, same seeds

Run:  python benchmarks/student_quality.py --teacher T --student S [--student S2] --prompts FILE
          [--fd-features F --reference-images DIR] [--clip DIR] [--n 256] [--steps 1 2 4 8] [--name NAME]
      e.g. the emoji model (data: mobilediff build-emoji-data --out runs/data/emoji):
      python benchmarks/student_quality.py --teacher default:emoji --student default:emoji:lcm
          --prompts mobilediff/assets/emoji/prompts.txt --fd-features mobilediff/assets/emoji/features
          --reference-images runs/data/emoji --name emoji_quality
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.student_quality import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
