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

from mobilediff.bench.decoder import STUDENTS, DecoderBenchConfig, measure, output_files
from mobilediff.bench.envelope import Parser, command_line, count, run_command, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict:
    ap = Parser(__doc__)
    ap.add_argument("--decoder", default="default:tiny", help="Decoder folder (mobilediff distill-decoder) or 'default:tiny'.")
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), help="Distilled students (folders or named models).")
    ap.add_argument("--lcm-steps", type=count(1), nargs="+", default=[1, 2, 4, 8], help="Step counts of an LCM student.")
    ap.add_argument("--n", type=count(2), default=256, help="Prompts (images) per row.")
    ap.add_argument("--psnr-samples", type=count(1), default=256, help="Fresh samples for the decoders' image PSNR.")
    ap.add_argument("--out", type=Path, default=RESULTS, help="Result folder (default benchmarks/results).")
    a = ap.parse_args(argv)
    cfg = DecoderBenchConfig(decoder=a.decoder, students=tuple(a.students), lcm_steps=tuple(a.lcm_steps), n=a.n,
                             psnr_samples=a.psnr_samples)
    res = measure(cfg, command_line("decoder", argv))
    write_results(a.out, output_files(res))
    for t in res["targets"]:
        print(f"{t['check']} {t['where']}: {t['value']:.3f} (bar {t['op']} {t['bar']:g}): {'met' if t['met'] else 'NOT met'}")
    return res


if __name__ == "__main__":
    sys.exit(run_command(main))
