"""Latency, memory and quality of exported bundles, per component and end to end, on the host or a device.

    python benchmarks/run_device.py --bundle DIR [--bundle DIR ...] --device host|android|apple --out DIR
        [--steps 1 2 4 8] [--baseline ddim50] [--runs 10] [--warmup 3] [--quality-n 256]
        [--runtimes onnx executorch eager] [--source MODEL ...] [--no-memory]
        quality of any model (host): [--prompts FILE [--fd-features F --reference-images DIR] [--fd-image-size N]
                 [--clip DIR]]
        android: [--adb PATH] [--serial S] [--et-runner DEVICE_PATH] [--ort-perf-test DEVICE_PATH]
                 [--ort-lib DEVICE_DIR] [--ort-provider cpu|nnapi|xnnpack|qnn] [--threads N]
        apple:   [--compute-units CPU_ONLY CPU_AND_GPU CPU_AND_NE ALL]

A bundle is the output of ``mobilediff export`` (manifest.json). Every bundle given is measured in one run, so
ratios between runtimes, precisions and step counts come from the same machine in the same state.

What runs where
---------------
host     Every bundle through each host runtime it has files for -- ONNX Runtime (CPU execution provider) and
         ExecuTorch's Python runtime (XNNPACK + portable kernels), through the same classes as
         ``mobilediff generate --bundle`` (:class:`mobilediff.engine.BundleRunner`) -- and PyTorch eager as the
         reference: the *source pipeline* the bundle was exported from, found from the manifest's
         ``source.model`` (checked against ``source.weights_sha256``) or given with ``--source``. A quantized
         bundle's eager reference is its float source, so eager rows are per source model, not per bundle. The
         source pipeline is opened for eager rows only: without ``eager`` in ``--runtimes`` the bundles alone
         are enough.
android  Over adb (binaries on the device given by the user): the bundle is pushed to
         /data/local/tmp/mobilediff/<name>/, every ExecuTorch component runs in ExecuTorch's
         ``executor_runner`` (``--et-runner``) and every ONNX component in ``onnxruntime_perf_test``
         (``--ort-perf-test``); their logs are parsed by :mod:`mobilediff.bench.android`; the bundle is
         removed afterwards. The runners feed their own inputs (all ones; random), so end to end is
         *estimated* from the component medians (see end-to-end rows) and quality is not measured there.
apple    macOS only: Core ML ``predict`` per compute unit (CPU_ONLY, CPU_AND_GPU, CPU_AND_NE, ALL) through
         :func:`mobilediff.bench.apple.time_coreml_predictions`; end to end estimated as on Android.

Roles and sampling plans
------------------------
A bundle's role (teacher, or a student and its method) and its default sampling plan come from its manifest only
(``model`` and ``default_sampling``; docs/bundle.md). Teachers run the baseline (``--baseline``, default 50-step
DDIM) with classifier-free guidance (a batch of 2 rows per UNet call, as the manifest's guidance record says); LCM
students run their LCM tables at each of ``--steps``; other students run their default plan (progressive: DDIM at
their own step count, without a CFG batch). Guidance: ``--baseline-guidance`` / ``--student-guidance`` if given,
else the bundle's default plan's ("manifest"); each row records which.
The baseline of a row is the float (unquantized) teacher's baseline row *on the same runtime*.

Quality (host only; --quality-n 0 skips it)
-------------------------------------------
Without --prompts, the shapes-domain evaluator (:mod:`mobilediff.quality`): every end-to-end row generates the first
--quality-n prompts of the fixed evaluation set (seed ``prompt_seed``), image i from noise seed ``noise_seed`` + i,
scored with prompt accuracy, per-attribute accuracy and FD in the evaluator's features against renders of the same
scenes.

With --prompts FILE (:mod:`mobilediff.bench.device_quality`), any model: every end-to-end row generates the first
--quality-n prompts of the file (.txt one a line, .jsonl or .csv with a ``text`` field; all of them, with a warning,
if it holds fewer; at least 2), image i from noise seed ``noise_seed`` + i, scored with the metric set of
:mod:`mobilediff.metrics`:
  teacher fidelity  PSNR (dB) and SSIM of each image against the image of the same prompt and seed made by the row's
                    baseline row -- the float teacher's baseline (``--baseline``) on the same runtime; for eager rows
                    the eager teacher's -- generated once per runtime and kept; the baseline row itself gets PSNR +inf
                    (JSON null) and SSIM 1; a row whose runtime has no float teacher gets null. Every bundle must then
                    make images of one size.
  FD                --fd-features F (a TorchScript file such as clean-fid's Inception, or a CLIP, DINOv2 or
                    ``mobilediff train-features`` folder; --fd-image-size N: a TorchScript extractor's input side)
                    against --reference-images DIR (every image under it, decoded at the bundles' image size); both
                    or neither.
  CLIP score        --clip DIR, a local CLIP folder (0..100).
Prompt accuracy is not measured then: accuracy_ratio and pareto_accuracy are null, and the 4-step bars are the FD
ratio (``student_4step_fd_ratio``) and the CLIP score ratio (``student_4step_clip_ratio``), each where measured.
Every file is read and every network loaded before any timing starts.

Statistics: :func:`mobilediff.bench.stats.summarize` (median, p90, trimmed mean, spread, ``too_noisy``,
``reportable``, ``note``); its module docstring defines each key. Runner-reported statistics (Android) fill
the same keys where the tool prints them and leave the others null.

Output (written into --out only after everything was measured; each file atomically)
-----------------------------------------------------------------------------------
run_device.json          the schema below
configurations.jsonl     the end-to-end rows appended to the store of measured configurations (docs/configurations.md)
run_device.md            tables: targets, components, end to end; which machine ran it and what did not run
run_device_latency.png   median latency per component, per runtime (bars; log scale)
run_device_quality.png   prompt accuracy and FD against end-to-end latency, Pareto frontier marked (host only,
                         when --quality-n > 0); with --prompts: PSNR against the teacher's images (baseline rows, at
                         +inf, not drawn), FD and CLIP score (those measured) against latency

run_device.json schema (version 1; keys are only ever added)
------------------------------------------------------------
schema        {"name": "mobilediff.run_device", "version": 1, "doc": "benchmarks/run_device.py docstring"}
created       UTC time, ISO 8601
command       the command line that produced the file
wall_seconds  total run time
device        {"kind": "host"|"android"|"apple", "machine": mobilediff.bench.envelope.machine_info() of the host,
               "android": {"serial", "model", "soc", "android_version", "abi"} | null,
               "apple": {"platform"} | null,
               "not_run": [one sentence per device kind that this file has no measurement from]}
versions      mobilediff.bench.envelope.library_versions() of the host
gemm_peak     host: mobilediff.bench.peak.gemm_peak() at --threads {"n", "threads", "runs", "fp32_gflops",
               "int8_gops", "measured": {how: GFLOP/s}} | null (device kinds)
settings      {"runs", "warmup", "e2e_warmup", "load_runs", "steps", "baseline": {"sampler", "steps"},
               "baseline_guidance", "student_guidance", "quality_n", "prompt_seed" (null with --prompts), "noise_seed",
               "memory", "runtimes", "threads", "runtime_threads": {...}, "android": {...} | null,
               "apple": {...} | null,
               "prompts": the --prompts file | null (the shapes evaluator's fixed set),
               "metric_set": {"prompts", "n" (prompts scored per row), "metrics": "teacher-fidelity/fd/clip",
                 "fd_features": {"path", "kind", "dim", "image_size"} | null, "reference_images": {"path", "count",
                 "decoded_at": [H, W]} | null, "clip": folder | null} | null (no --prompts)}
bundles       [{"name", "path", "role": "teacher"|"student", "method": "teacher"|"lcm"|"progressive",
                "precision": "fp32"|"fp16"|<quantization recipe>, "quantization": recipe name | null,
                "targets": [targets with all three components], "guidance_type", "geometry": {...},
                "source": {"model", "path" (relative to the repository when inside it, else resolved; or null), "weights_sha256", "checked": bool, "from":
                "manifest"|"--source"|"none" (no eager reference), "decoder": the swapped-in decoder's name or
                folder | null (such a bundle has no eager reference), "note"?}, "plans": [{"sampler", "steps", "guidance",
                "guidance_from": "--baseline-guidance"|"--student-guidance"|"manifest"}],
                "default_plan": the manifest's default sampling plan {"sampler", "steps", "guidance"}}]
components    [{"model": bundle name, or "eager:<source>" for PyTorch rows, "bundle": name | null,
                "source": source label, "component": "text_encoder"|"unet"|"vae_decoder",
                "runtime": "onnx"|"executorch"|"eager"|"executor_runner"|"onnxruntime_perf_test:<provider>"|
                "coreml:<compute unit>", "file": bundle file | null, "precision",
                "input_shapes": {input name: static shape} (the manifest's static shapes: a teacher's UNet row is
                  its CFG batch of 2),
                "load": {"first_ms", "median_ms", "n", "what"} (cold load: create the session / load the program /
                  from_pretrained, file in the OS page cache; first = first load in this process),
                "latency": summarize() keys + "warmup" and "source" ("perf_counter" or the tool's name),
                "memory": {"baseline_mib", "peak_mib", "delta_mib", "source", "what"} | null,
                "speedup_vs_eager": eager median / this median (same source and component) | null,
                "gflop": one call at input_shapes (the manifest's components.<name>.gflop) | null,
                "gflops_per_s": gflop / median latency | null, "peak_fraction": gflops_per_s / gemm_peak's fp32
                  or int8 (int8 recipes) peak | null,
                "note": problems in one sentence each | null}]
end_to_end    [{"model", "bundle", "source", "role", "method", "runtime", "precision", "sampler", "steps",
                "guidance", "guidance_from", "cfg": bool, "unet_calls_per_step", "unet_batch", "nfe",
                "gflop": text encoder + steps x UNet (at unet_batch) + decoder, from the manifest | null,
                "fused": true for the fused N-step program of a bundle exported with --fused-steps (host: one
                  call of the one graph, tokenizing included; model "<bundle> (fused)"),
                "latency_kind": "measured" (one full generate: text encode + steps x denoiser + VAE decode, one
                  image, timed whole) | "measured (fused program)" | "estimate" (device kinds: text_encoder +
                  steps x unet + vae_decoder component medians; no sampler arithmetic, no tokenizer),
                "latency": as in components, "memory": peak of one full generate in a fresh process | null,
                "baseline": {"model", "runtime", "sampler", "steps", "guidance", "median_ms", "quality", "gflop"}
                  | null, "speedup_vs_baseline": baseline median /
                  this median | null,
                "quality": {"n", "prompt_accuracy", "fd", "attribute_accuracy"} | null (a fused row: copied from
                  the same bundle's row at the same plan and runtime, "quality_from" naming it; the graph was
                  checked against PyTorch at export);
                  with --prompts: {"n", "metrics": "teacher-fidelity/fd/clip", "psnr_db_vs_teacher" (mean over the
                  images, dB; null for the baseline row itself, whose PSNR is +inf), "ssim_vs_teacher", "fd",
                  "clip_score", "prompt_accuracy": null, "attribute_accuracy": null, "fidelity_vs": the baseline
                  row's model whose images the fidelity compares with}; a metric not measured is null,
                "pareto_accuracy", "pareto_fd": on the frontier of (latency, quality) over all rows that have that
                  metric | null,
                "note"}]
targets       [{"name": "e2e_int8_4step_vs_ddim50", "runtime", "student", "baseline", "student_ms",
                "baseline_ms", "speedup", "bar": 25.0, "speed_met", "accuracy_ratio", "fd_ratio",
                "quality_met" (accuracy >= 0.95x and FD <= 1.5x the baseline's on this run's prompts; null: not
                scored; with --prompts: FD <= 1.5x and CLIP score >= 0.95x, each where measured, null when neither
                was), "clip_ratio" (with --prompts only; accuracy_ratio is then null), "met" (speed_met and
                quality_met not false), "latency_kind", "flop_ratio" (baseline GFLOP / student GFLOP: the speedup
                at equal efficiency) | null} ... ,
               {"name": "e2e_4step_vs_ddim50", the same keys + "candidates", "within_quality": per runtime, the
                fastest 4-step student (any precision, decoder or size) within the quality bars, "bar": 50.0} ...,
               {"name": "e2e_fewstep_vs_ddim50", the same keys + "steps": per runtime, the fastest 1- or 2-step
                student within the same quality bars, "bar": 150.0} ...,
               {"name": "denoiser_step_vs_eager", "source", "fastest": {"model", "runtime", "precision"},
                "fastest_ms", "eager_ms", "speedup", "bar": 2.0, "met"} ...;
               a target with nothing to measure has "met": null and a "reason"; every target has "bar_id", its row
               in mobilediff.bench.bars.BARS, where its numbers come from]

Bad input (a missing bundle folder, a corrupt or missing manifest, a bundle file whose sha256 no longer matches,
a source model that changed since export, --runs < 1, an unknown --device, android without adb or a device,
apple off macOS; with --prompts: a missing or malformed prompt file, --fd-features without --reference-images or
the reverse, a metric flag without --prompts, --prompts on a device or with --quality-n 0, bundles of different image
sizes, an extractor or CLIP folder that does not load -- a folder without its config.json, pickle weights --, a
reference folder without a readable image) gives one line ``error: ...`` on stderr and exit code 2, and nothing is
written.
"""
from __future__ import annotations

import sys

from mobilediff.bench.device_run import main
from mobilediff.bench.envelope import run_script


if __name__ == "__main__":
    sys.exit(run_script(main, __doc__))
