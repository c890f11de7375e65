"""Peak memory of the demo apps' engines: one generate per bundle, app and mode in a fresh engine process, beside
Python's.

    python benchmarks/app_memory.py --bundle B [B ...] [--app android] [--app ios] [--mode resident]
        [--mode low-memory] [--out benchmarks/results] [--timeout 1800]

For every bundle (an ONNX bundle: `python -m mobilediff export --target onnx`), every app whose
`<app>_demo/scripts/engine.sh` exists (android: the Kotlin engine on the JVM, ONNX Runtime's Java API; ios: the
Swift MobileDiffKit engine, ONNX Runtime's C API) and every mode (`resident`: the three components loaded first and
kept; `low-memory`: each loaded when its turn comes and released before the next, ONNX Runtime without its CPU arena
and memory pattern, the engines' `--low-memory`), ONE `engine.sh generate --backend onnx --steps 1 --seed 0
--warmup 0 --repeats 1 [--low-memory]` with a fixed prompt, in a fresh process, after an untimed `engine.sh --help`
that brings the engine's toolchain and build up to date. What is recorded is what the engine reports: its peak
memory (android: `peak_rss_bytes`; ios: `peak_memory_bytes`; both VmHWM since the engine's process started, so
every load is in it; the engine's `peak_memory_scope` says so), its runtime and version, its load and generate
milliseconds; and the process's wall seconds and, when it fails, its exit status and the last line of its stderr (a
row with status "failed", not a crash). Python per bundle and mode: mobilediff.engine.BundleRunner's generate
with the same prompt, seed and step on ONNX Runtime (`.onnx` graphs) in a spawned process (as benchmarks/memory.py
measures its generate rows; low-memory: `resident=False` with mobilediff.targets.LOW_MEMORY, what
`mobilediff generate --bundle --low-memory` runs), whose VmHWM is recorded too. Python's resident image is the
reference: every other image is compared with it (PSNR, mobilediff.metrics.psnr on [-1, 1]).

Output: `app_memory.json`, `app_memory.md` (a resident-against-low-memory table, then every row) and
`app_memory.png` (peak per app and mode, a panel per bundle) in `--out`, written atomically after every row. JSON
(schema {"name": "mobilediff.app_memory", "version": 1}; fields are only ever added)::

    schema, created, command, machine (+ load_average_at_start), versions, wall_seconds
    complete        false while running or when interrupted
    settings        bundles, apps, modes (["resident", "low-memory"]), backend ("onnx"), prompt, seed (0), steps (1),
                    timeout_s, python_threads
    peak_scopes     {app: what its peak counts} (android, ios, python)
    bundles         one per --bundle: bundle (its path relative to the repository), name, geometry {height, width},
                    plan {sampler, steps, guidance, unet_batch}, unet_quantization (the UNet file's recipe; null:
                    float), unet_attention_budget_mib (export.attention.budget_mib), vae_tiling (the VAE decoder
                    file's export.tiling; null: one whole graph), onnx_weight_bytes (.onnx + external data),
                    app_files {component: {target (onnx | ort), tag, path}} (what the apps load: the ORT-format
                    file where the bundle lists one), app_weight_bytes
    rows            one per (bundle, app, mode), per bundle the python rows first (resident, then low-memory),
                    then each app's in the order of settings.modes:
      bundle, name, px (height), width, backend, variant {unet_quantization, unet_attention_budget_mib,
      vae_tiling}, app ("python" | "android" | "ios"), mode ("resident" | "low-memory"), status ("ok" | "failed"),
      reason (one line, or null), exit_status (the engine's; null: timed out, or python), stderr_tail (failed
      engine runs), wall_seconds, runtime ("onnxruntime 1.29.0": what the engine reports), weight_bytes (the files
      it loaded), graph_forms {component: onnx | ort}, peak_bytes, peak_mib, peak_field (the engine's JSON field,
      or VmHWM), peak_scope (words; the engine's own peak_memory_scope where it is not "process"),
      engine_peak_scope (the engine's peak_memory_scope as written), peak_method (ios: how its peak was read;
      python: VmHWM), baseline_mib (python: before the first load), load_ms (engines: the loads the record names,
      in low-memory mode those inside the generate; python: the load before the generate, null in low-memory
      mode), generate_ms (engines: loads excluded; python low-memory: loads included), component_ms (engines: per
      component), plan {sampler, steps, guidance} (engines), psnr_vs_python_db (against Python's resident image;
      null: identical, see identical_to_python, or not comparable, see psnr_note; absent on the reference row),
      identical_to_python, max_abs_vs_python, psnr_note
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.app_memory import main
from mobilediff.bench.envelope import run_script

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
