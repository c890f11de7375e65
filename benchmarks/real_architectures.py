"""Export and latency of real denoiser architectures with random weights: an SD-1.5-shaped and a
BK-SDM-Tiny-shaped UNet and a PixArt-alpha-shaped diffusion transformer, one denoiser step, on each host runtime
against PyTorch eager.

    python benchmarks/real_architectures.py [--arch sd15 bk-sdm-tiny pixart-alpha] [--targets onnx executorch]
        [--resolution 256] [--runs 10] [--warmup 3] [--out benchmarks/results] [--work DIR] [--keep]

No weights can be downloaded here, so each UNet is built from its checkpoint's ``unet/config.json`` with
seeded random weights. Export time, file sizes, parity and latency depend on the architecture and the
input shapes, not on the weights' values: these are **latency-only** numbers, and say nothing about
image quality.

What runs, per (architecture, resolution):

1. PyTorch eager: the UNet as ``mobilediff.components`` declares it (``UnetWrapper``), one step, timed.
2. Per target, the project's own export path, :func:`mobilediff.exporter.export_component`: the file(s),
   export seconds, and the parity check every export ends in (max abs error, PSNR against PyTorch eager,
   ``mobilediff.parity``; it raises below the fp32 floor). ONNX weights over
   ``mobilediff.targets.onnx.EXTERNAL_DATA_MIN_BYTES`` (the fp32 SD-1.5 UNet, 3.4 GB) go to an external
   data file beside the graph. Core ML (opt-in ``--targets coreml``) converts on Linux but cannot predict
   there: its row is a structural check and has no latency.
3. Per runnable target, in a fresh process: cold load (session or program creation from the file; the
   file is in the OS page cache, having just been written), the first call, then ``--warmup`` untimed and
   ``--runs`` timed calls, summarized by :func:`mobilediff.bench.stats.summarize`.

Every step runs in its own spawned process (:func:`mobilediff.bench.stats.peak_rss_of_call`, which also gives
its peak RSS) under a memory limit (``RLIMIT_DATA``, ``--max-memory-gib``), so one that runs out of memory
or crashes is recorded with its reason and the others still run; the result files are rewritten after
every step. Input batch: the declared classifier-free-guidance batch of 2 (uncond + cond rows, what a phone
runs per step for a CFG model; ``mobilediff.components.declare``), unless ``--batch``.

Architectures (``mobilediff.bench.real_architectures.ARCHITECTURES``; the steps run there too):

- ``sd15``: runwayml/stable-diffusion-v1-5 ``unet/config.json`` (diffusers' UNet2DConditionModel defaults):
  channels 320/640/1280/1280, 2 layers per block, CrossAttnDownBlock2D x3 + DownBlock2D, UNetMidBlock2DCrossAttn,
  UpBlock2D + CrossAttnUpBlock2D x3, 8 heads, cross-attention dim 768. 859,520,964 parameters.
- ``bk-sdm-tiny``: the BK-SDM-Tiny student's UNet as its authors' training code builds it
  (github.com/Nota-NetsPresso/BK-SDM, ``src/unet_config/bk_tiny/config.json``; the Hugging Face checkpoint
  nota-ai/bk-sdm-tiny itself could not be read offline): channels 320/640/1280, 1 layer per down block
  (diffusers adds one per up block: 2), CrossAttnDownBlock2D x3, no mid block, CrossAttnUpBlock2D x3.
  323,384,964 parameters: the 0.32 B that the BK-SDM paper (Kim et al. 2023) gives for BK-SDM-Tiny's UNet.

- ``pixart-alpha``: PixArt-alpha XL/2 (PixArt-alpha/PixArt-XL-2-512x512 ``transformer/config.json``: diffusers'
  PixArtTransformer2DModel defaults with sample_size 64): 28 blocks of width 1152 (16 heads of 72), 2x2 patches,
  adaLN-single, cross-attention to 120 T5-XXL tokens of width 4096 with their mask, learned variance (the exported
  step drops that half, as the pipeline does). 610,856,096 parameters: PixArt-alpha's 0.6 B (Chen et al. 2023).
  Its T5 encoder (4.7 B parameters) is a one-layer stand-in of the real width that fixes the context; the
  stable-diffusion.cpp peer (--peer) runs the UNets only.

Text context of the UNets 77 x 768 (CLIP ViT-L/14, as both models read). Only the UNet is exported; the text encoder and
VAE of the pipeline handed to ``declare`` are tiny stand-ins that fix that context and the latent geometry
(4 channels, factor 8: 256 x 256 -> 32 x 32 latents). ``--scale tiny`` divides every channel width by 10
(same blocks, depth and inputs) so that the whole script runs in a test.

Output: ``real_architectures.json`` and ``real_architectures.md`` in ``--out``. JSON schema (version 1)::

    schema              "mobilediff.real_architectures/1"
    latency_only        true: random weights; numbers are about speed, size and export, never quality
    command, created, complete, wall_seconds, versions (library_versions), parity_floor_db,
    machine             mobilediff.bench.envelope.machine_info + load_average_at_start (1/5/15 min)
    settings            archs, targets, resolutions, scale, batch (null: the declared one), precision, runs, warmup,
                        threads, seed, max_memory_gib, cell_timeout_s, text_context
    architectures       {arch: {title, source, unet_config, params, weight_bytes}}
    rows                one per (arch, resolution, runtime); runtime "pytorch" (eager) or a target:
      arch, resolution, runtime, status ("ok" | "failed" | "skipped" | "not run"), reason (why not ok, or null;
                        Core ML, unless in --targets, has a "not run" row saying why),
      input_shapes      {input name: static shape}, batch
      latency_only      true
      eager:   latency (summarize()), first_call_ms, peak_rss_mib, cell_seconds
      targets: export {seconds, files [{path, bytes}], total_bytes, facts (target's export facts), peak_rss_mib},
               parity {max_abs_error, psnr_db, min_psnr_db, checked},
               load_seconds (cold), first_call_ms, latency (summarize()), runtime_threads, peak_rss_mib (of the
               load + timing process), speedup_vs_eager (eager median / this median; > 1 is faster)
      peers (--peer): runtime "stable-diffusion.cpp", peer true, latency (summarize() of per-step estimates:
               (t(N-step generate) - t(1-step generate)) / (N - 1), one per pair of generates), load_seconds,
               peer_run {generate_1_ms, generate_N_ms, cfg_scale, threads, package, weights, sampler},
               speedup_vs_eager; status "not run" with the reason when the package is not installed

The peer (--peer sdcpp) loads a checkpoint, not a graph: the script writes a whole diffusers-layout SD pipeline
folder around the same seeded UNet (SD-1.x's VAE and CLIP ViT-L/14 text encoder, random too;
mobilediff.bench.real_architectures.peer_pipeline_dir), which stable-diffusion.cpp reads directly, and times whole
generates (euler, CFG scale 7 against our CFG batch of 2) at the same thread count.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mobilediff.bench.envelope import run_script
from mobilediff.bench.real_architectures import main

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__, RESULTS))
