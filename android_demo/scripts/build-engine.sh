#!/usr/bin/env bash
# Compile the engine (core/) and its JVM command line + golden checks (cli/) into build/engine.jar, when any
# source is newer than the jar. Needs the toolchain (setup-toolchain.sh).
set -euo pipefail
. "$(dirname "$0")/env.sh"
JAR="$BUILD/engine.jar"
SOURCES=("$ANDROID_DEMO/core/src/main/kotlin" "$ANDROID_DEMO/cli/src/main/kotlin")
# rebuilt when a source or a runtime API jar it compiles against is newer than it
if [[ -f "$JAR" ]] && [[ -z "$(find "${SOURCES[@]}" "$ORT_JAR" "$ET_JAR" -newer "$JAR" \( -name '*.kt' -o -name '*.jar' \) | head -1)" ]]; then
  exit 0
fi
[[ -x "$KOTLINC" ]] || { echo "error: no Kotlin compiler; run android_demo/scripts/setup-toolchain.sh first" >&2; exit 1; }
mkdir -p "$BUILD"
echo "[build-engine] kotlinc core/ cli/ -> $JAR" >&2
"$KOTLINC" -jvm-target 1.8 -no-reflect -nowarn -cp "$JSON_JAR:$ORT_JAR:$ET_JAR" -d "$BUILD/engine.jar.partial.jar" "${SOURCES[@]}" 2>&1 \
  | { grep -v 'unable to find kotlin-stdlib' || true; }
# the ONNX Runtime natives the engine can reach must all exist in the JVM's JNI library (see check-ort-jni.sh)
"$ANDROID_DEMO/scripts/check-ort-jni.sh" "$BUILD/engine.jar.partial.jar"
mv "$BUILD/engine.jar.partial.jar" "$JAR"
