#!/usr/bin/env bash
# The iOS engine's command line on Linux (the MobileDiffKit code the app runs; ONNX Runtime 1.29.0, the phone's
# version, through its C API; ExecuTorch, the executorch wheel's host runtime, for `--backend executorch`).
# Builds the toolchain and the engine when needed, then runs it on the host through the toolchain's loader.
#   engine.sh generate --bundle B --backend onnx|executorch --prompt P --seed S [--steps N] [--guidance G] [--sampler NAME]
#                      [--threads T] [--warmup N] [--repeats N] [--low-memory]
#                      [--init-image IMG.png [--mask MASK.png] [--strength S]] --out IMG.png --json RESULT.json
#   engine.sh check-goldens --bundle B --goldens DIR --backend onnx [--model NAME] --json ROWS.json
# RESULT.json: ms_total, ms {component: ms}, steps, sampler, guidance, mode (txt2img, img2img, inpaint), strength
# (null for txt2img), image_raw (float32 LE (H, W, 3) in [-1, 1]);
# the timed run follows N untimed warm-up runs (default 1).
# ROWS.json: [{check: tokenizer|noise|sampler, backend, model, seed, psnr_db, max_abs_error, passed, detail}]
# (psnr_db is null for an exact match). Bad input (bundle, option, prompt, output path): one line `error: ...` on
# stderr, exit status 2; a runtime failing inside a call or a failed row: exit status 1.
set -euo pipefail
. "$(dirname "$0")/lib/chroot.sh"
"$IOS_DEMO/scripts/setup-toolchain.sh" >/dev/null
# the runtimes (cached after the first run); its messages are shown only when it fails
runtimes_log="$("$IOS_DEMO/scripts/fetch-runtimes.sh" 2>&1)" || { echo "$runtimes_log" >&2; exit 1; }
# a rebuild's output is shown only when it fails: on success stderr holds the engine's own lines alone
build_log="$(build_if_stale 2>&1)" || { echo "$build_log" >&2; exit 1; }
status=0
run_on_host "$ENGINE_BIN" "$@" 2> >(filter_schema_noise >&2) || status=$?
wait
exit "$status"
