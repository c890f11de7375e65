#!/usr/bin/env bash
# Build the toolchain (cached), the fixtures (cached: bundles, goldens and Python's reference images, written by
# `python -m mobilediff.fixtures`), the engine, and run the Kotlin JUnit tests on the JVM; then build the APK and
# its static link check (build-apk.sh: about 50 s on 2 cores, up to 2 minutes when they are busy).
#   MOBILEDIFF_FIXTURES=DIR     use/cache the fixtures in DIR (default: android_demo/build/fixtures)
#   MOBILEDIFF_FIXTURES_READY=1 use DIR as it is (do not run the fixtures module)
#   MOBILEDIFF_SKIP_APK=1       the engine's tests only
set -euo pipefail
. "$(dirname "$0")/env.sh"
start=$SECONDS
"$ANDROID_DEMO/scripts/setup-toolchain.sh"

FIXTURES="${MOBILEDIFF_FIXTURES:-$BUILD/fixtures}"
mkdir -p "$FIXTURES" && FIXTURES="$(cd "$FIXTURES" && pwd)"
if [[ -n "${MOBILEDIFF_FIXTURES_READY:-}" ]]; then
  echo "[test] fixtures in $FIXTURES (as they are: MOBILEDIFF_FIXTURES_READY)" >&2
elif "$VENV/bin/python" -c "import mobilediff.fixtures" 2>/dev/null; then
  echo "[test] fixtures in $FIXTURES (python -m mobilediff.fixtures; cached)" >&2
  HF_HUB_OFFLINE=1 "$VENV/bin/python" -m mobilediff.fixtures "$FIXTURES" >&2
elif [[ ! -f "$FIXTURES/index.json" && -z "${MOBILEDIFF_FIXTURES:-}" ]]; then
  echo "error: this mobilediff has no fixtures module (python -m mobilediff.fixtures): cannot make the bundles and goldens the tests check against" >&2
  exit 1
fi

"$ANDROID_DEMO/scripts/build-engine.sh"
TESTS_JAR="$BUILD/engine-tests.jar"
TEST_SRC="$ANDROID_DEMO/core/src/test/kotlin"
if [[ ! -f "$TESTS_JAR" || -n "$(find "$TEST_SRC" "$BUILD/engine.jar" -newer "$TESTS_JAR" | head -1)" ]]; then
  echo "[test] kotlinc core/src/test -> $TESTS_JAR" >&2
  "$KOTLINC" -jvm-target 1.8 -nowarn -cp "$BUILD/engine.jar:$RUNTIME_CP:$JUNIT_CP" -d "$TESTS_JAR.partial.jar" "$TEST_SRC" 2>&1 \
    | { grep -v 'unable to find kotlin-stdlib' || true; }
  mv "$TESTS_JAR.partial.jar" "$TESTS_JAR"
fi
CLASSES=$(unzip -Z1 "$TESTS_JAR" | grep -E 'Test\.class$' | sed 's/\.class$//; s#/#.#g' | sort)
echo "[test] JUnit: $(echo $CLASSES | wc -w) classes" >&2
java $JAVA_NATIVE_OPTS $(runtime_version_opts) -Dmobilediff.fixtures="$FIXTURES" -Dmobilediff.repo="$REPO_ROOT" -cp "$TESTS_JAR:$BUILD/engine.jar:$RUNTIME_CP:$JUNIT_CP" \
  org.junit.runner.JUnitCore $CLASSES
if [[ -z "${MOBILEDIFF_SKIP_APK:-}" ]]; then
  "$ANDROID_DEMO/scripts/build-apk.sh"
fi
echo "[test] done in $((SECONDS - start)) s" >&2
