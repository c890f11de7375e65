"""Peak memory of whole pipelines and of each component, per runtime, precision and runtime setting, each in a fresh
process: the weights on disk, the runtime's own overhead and the largest activation beside every peak.

    python benchmarks/memory.py --bundle B [B ...]
    python benchmarks/memory.py --arch sd15 bk-sdm-tiny --resolution 256 512 [--variants fp32 fp16 int8-dynamic]
        [--runtimes onnx executorch] [--settings default lean sequential ...] [--no-components] [--runs 3]
        [--threads N] [--out benchmarks/results] [--work DIR] [--keep]

What is measured, per bundle (``--bundle``, as it is) or per pipeline (``--arch``: a whole Stable Diffusion pipeline
with seeded random weights around a real UNet architecture, as mobilediff.bench.real_architectures builds it, with
CLIP ViT-L/14's text encoder and SD-1.x's VAE, exported per ``--variants`` and runtime with the project's own export
path, measured, then deleted), per host runtime and precision or recipe the bundle holds:

1. each component alone (default settings): load, one call on the manifest's example inputs (its static shapes: the
   UNet's CFG batch of 2 for a guided teacher), then ``--runs`` timed calls. ExecuTorch's load is split into the
   program (the file mapped, or read) and the method (the XNNPACK delegate initialised: its weights packed);
2. the whole generate of mobilediff.engine (the Python reference of the apps): text encoder, **one** denoiser step at
   the plan's batch, VAE decode, per runtime setting (``--settings``; see mobilediff.bench.memory.SETTINGS): ONNX
   Runtime's arena, memory pattern, initializer allocation and weight pre-packing; ExecuTorch's program loaded from
   its file or from a buffer; and the engine holding every component (default) or one at a time (``sequential``).
   With the components resident, ``--runs`` UNet steps are then timed alone: a setting must not slow the step.

Every row runs in its own spawned process (mobilediff.bench.stats.peak_rss_of_call) whose baseline already holds the
interpreter, torch, transformers and the runtime's libraries. Peak = VmHWM of that process. No row loads a model
with pickle: bundles hold ONNX / ExecuTorch files, pipelines safetensors.

Output: ``memory.json``, ``memory.md`` and ``memory.png`` (peak RSS against weight bytes) in ``--out``, rewritten
after every row. JSON (schema {"name": "mobilediff.memory", "version": 1}; fields are only ever added)::

    schema, created, command, machine (+ load_average_at_start: what else was running), versions, wall_seconds,
    complete        false while running or when interrupted
    settings        bundles, archs, resolutions, scale, variants, runtimes, settings, components, runs, threads,
                    seed, prompt, steps (1: the generate's denoiser steps)
    setting_definitions  {runtime: {setting: {settings (the loader's), resident (bool), note}}}
    exports         per --arch bundle: pipeline, resolution, variant, runtime, seconds, peak_mib (the export's)
    failures        what could not be measured: pipeline, resolution, runtime, variant, stage, reason
    rows            one per measurement:
      pipeline, resolution, variant (--arch), bundle (--bundle: its path), runtime, precision (the file tag: fp32,
      fp16 or a recipe), what ("text_encoder" | "unet" | "vae_decoder" | "generate"), setting, status ("ok" |
      "failed"), reason, geometry {height, width, latent}, plan {sampler, steps, guidance, unet_batch},
      weight_bytes   bytes on disk of the files it loads (graph + external data; all three for a generate)
      weight_mib, baseline_mib, peak_mib, delta_mib (peak - baseline), overhead_mib (delta - weights), source
                     (how the peak was read: VmHWM)
      marks          [{stage, rss_mib, anon_mib, file_mib, hwm_mib, seconds}] after each stage
      packing_mib, packing_anon_mib   ExecuTorch component rows: RSS (anonymous RSS) added by loading the method
      largest_activation   {name, op, shape, dtype, bytes, from}: the largest intermediate tensor of the ONNX graph
                     (of the bundle, or of the same pipeline's ONNX bundle for an ExecuTorch one); generate rows: the
                     largest of the three components
      step           summarize() of the timed calls (component rows: that component; generate rows: the UNet), or
                     null
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.memory import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
