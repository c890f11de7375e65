"""What each quantization recipe costs and buys, per component and end to end for a few-step student.

For the student (default: the committed 4-step LCM student) the script exports one float bundle per target and one
bundle per recipe (`mobilediff.exporter.export_bundle(..., quantize=RECIPE)`, calibrated on the student's own
sampling trajectories), then measures:

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

from mobilediff.bench.envelope import Parser, command_line, count, run_command, write_results
from mobilediff.bench.quantization import TARGETS, QuantizationConfig, measure, output_files

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict:
    ap = Parser(__doc__)
    ap.add_argument("--model", default="default:lcm", help="Student pipeline folder or a named model.")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS, help="Targets to export.")
    ap.add_argument("--n", type=count(0), default=256, help="Prompts (images) per end-to-end row; 0 skips end to end.")
    ap.add_argument("--runs", type=count(1), default=30, help="Timed calls per component (after warm-up).")
    ap.add_argument("--warmup", type=count(0), default=5, help="Untimed calls per component first.")
    ap.add_argument("--calibration-prompts", type=count(1), default=32, help="Prompts whose trajectories calibrate.")
    ap.add_argument("--calibration-rows", type=count(1), default=64, help="Calibration rows kept per component.")
    ap.add_argument("--out", type=Path, default=RESULTS, help="Result folder (default benchmarks/results).")
    ap.add_argument("--work", type=Path, default=None, help="Folder for the bundles (default: a temporary folder).")
    ap.add_argument("--reuse", action="store_true", help="With --work: measure the bundles already exported there "
                                                         "(complete ones: manifest.json is written last) again.")
    a = ap.parse_args(argv)
    cfg = QuantizationConfig(model=a.model, targets=tuple(a.targets), n=a.n, runs=a.runs, warmup=a.warmup,
                             calibration_prompts=a.calibration_prompts, calibration_rows=a.calibration_rows,
                             work=a.work, reuse=a.reuse)
    res = measure(cfg, command_line("quantization", argv))
    write_results(a.out, output_files(res))
    for t in res["targets"]:
        print(f"{t['target']} {t['recipe']} {t['check']}: {t['value']:.3f} (bar {t['op']} {t['bar']}): "
              f"{'met' if t['met'] else 'NOT met'}")
    return res


if __name__ == "__main__":
    sys.exit(run_command(main))
