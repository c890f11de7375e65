"""The tiny decoder against the VAE decoder, with every student: cost (GFLOP, parameters), image PSNR against the VAE
decoder, and prompt accuracy and FD of each student sampled once and decoded by each (the same latents reach both).

Students: the committed progressive students (1, 2, 4, 8 steps, each at its own plan) and the LCM student at 1, 2, 4
and 8 steps with its own guidance. Decoder: the embedded `default:tiny` (mobilediff distill-decoder) unless --decoder.

Writes to --out (default benchmarks/results/):
  decoder.json      {"meta", "decoders": cost and PSNR, "rows": every sampled row, "pairs": VAE vs tiny per student
                     row, "targets": the tiny-decoder bars of mobilediff.bench.bars checked}
  decoder.md        the tables and bars
  decoder.png       prompt accuracy and FD per student row, both decoders
  decoder_grid.png  the same prompts and seeds decoded by each decoder

Run:  python benchmarks/decoder.py            (about 10 minutes on 2 CPU cores)
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.decoder import main
from mobilediff.bench.envelope import run_script

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
