#!/usr/bin/env bash
# The Android engine's command line on the JVM (same engine code as the app; ONNX Runtime's Java API and the
# ExecuTorch host shim as runtimes). See android_demo/README.md and notes in benchmarks/app_parity.py.
#   engine.sh generate --bundle B --backend onnx|executorch --prompt P --seed S [--steps N] [--sampler NAME] [--guidance G]
#                      [--init-image IMG.png [--mask MASK.png] [--strength S]] [--lora NAME[:SCALE] ...] --out IMG.png --json R.json
#   engine.sh check-goldens --bundle B --goldens DIR --backend onnx [--model NAME] --json ROWS.json
set -euo pipefail
. "$(dirname "$0")/env.sh"
"$ANDROID_DEMO/scripts/setup-toolchain.sh" >/dev/null 2>&1 \
  || { echo "error: android_demo/scripts/setup-toolchain.sh failed (run it to see why)" >&2; exit 1; }
"$ANDROID_DEMO/scripts/build-engine.sh" 2>/dev/null || "$ANDROID_DEMO/scripts/build-engine.sh"
exec java $JAVA_NATIVE_OPTS $(runtime_version_opts) -cp "$BUILD/engine.jar:$RUNTIME_CP" com.mobilediff.cli.EngineCliKt "$@"
