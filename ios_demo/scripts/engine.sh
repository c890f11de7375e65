#!/usr/bin/env bash
# The iOS engine's command line on Linux (the MobileDiffKit code the app runs; ONNX Runtime through its C API).
# Builds the toolchain and the engine when needed, then runs it on the host through the toolchain's loader.
#   engine.sh generate --bundle B --backend onnx --prompt P --seed S [--steps N] [--guidance G] [--sampler NAME]
#                      [--threads T] [--warmup N] [--repeats N] --out IMG.png --json RESULT.json
#   engine.sh check-goldens --bundle B --goldens DIR --backend onnx [--model NAME] --json ROWS.json
# RESULT.json: ms_total, ms {component: ms}, steps, sampler, guidance, image_raw (float32 LE (H, W, 3) in [-1, 1]);
# the timed run follows N untimed warm-up runs (default 1).
# ROWS.json: [{check: tokenizer|noise|sampler, backend, model, seed, psnr_db, max_abs_error, passed, detail}]
# (psnr_db is null for an exact match). Exit status 1 on error or a failed row.
set -euo pipefail
. "$(dirname "$0")/lib/chroot.sh"
"$IOS_DEMO/scripts/setup-toolchain.sh" >/dev/null
build_if_stale
status=0
run_on_host "$ENGINE_BIN" "$@" 2> >(filter_schema_noise >&2) || status=$?
wait
exit "$status"
