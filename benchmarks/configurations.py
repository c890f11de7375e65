"""The store of measured configurations (benchmarks/results/configurations.jsonl), rebuilt from the result files.

One JSON line per configuration a benchmark measured: model, method, sampler, steps, guidance, runtime, precision,
decoder, machine and threads, with its latency (measured end to end, or composed from component medians), its
quality (measured on that exact bundle, on the PyTorch model, or borrowed from the float model), where each comes
from, and the `mobilediff export` command that makes its bundle. docs/configurations.md describes every field;
`mobilediff recommend` answers from it.

Read from --results (default benchmarks/results/; a file that is not there is skipped):
  scaling.json (+ scaling_meta.json)            every configuration of the UNet-size family, composed host latency
  run_device.json (every one under --results)   every end-to-end row: bundles and PyTorch models, measured
  quantization.json                             every --quantize recipe of one student, measured on the host
  distillation.json, baseline_quality.json      quality of the PyTorch models without a latency
    (+ their _meta.json)

Writes --out (default RESULTS/configurations.jsonl), whole and atomically, and prints the rows taken from each file.
benchmarks/scaling.py and benchmarks/run_device.py also append their rows to the configurations.jsonl in their --out
folder at the end of a run (a row of the same file and configuration is replaced, never duplicated).

Run:  python benchmarks/configurations.py     (seconds: JSON files and safetensors headers; nothing is measured)
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.configurations import main
from mobilediff.bench.envelope import run_script

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
