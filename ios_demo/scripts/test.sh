#!/usr/bin/env bash
# Builds and tests the iOS engine (MobileDiffKit) on Linux: the toolchain (cached), the runtimes (cached:
# fetch-runtimes.sh, ONNX Runtime 1.29.0 and ExecuTorch's iOS framework from npm, the executorch wheel's host runtime
# from the project's Python), the fixtures (cached: bundles,
# goldens and Python's reference images from `python -m mobilediff.fixtures`), the ExecuTorch backend's static check
# (check-executorch.sh), then `swift build` and `swift test` (XCTest) inside the trixie chroot against the runtimes'
# ONNX Runtime. Fails on any failed or skipped test.
#   MOBILEDIFF_FIXTURES=DIR   use/cache the fixtures in DIR (default: ios_demo/.toolchain/fixtures); share one DIR
#                             with android_demo/scripts/test.sh to build them once
#   MOBILEDIFF_FIXTURES_READY=1  use DIR as it is (do not run the fixtures module)
#   MOBILEDIFF_PYTHON=PY      the Python with mobilediff installed (default: the repo's .venv, else python3)
set -euo pipefail
. "$(dirname "$0")/lib/chroot.sh"
start=$SECONDS
"$IOS_DEMO/scripts/setup-toolchain.sh"

REPO="$(cd "$IOS_DEMO/.." && pwd)"
PYTHON="${MOBILEDIFF_PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
MOBILEDIFF_PYTHON="$PYTHON" "$IOS_DEMO/scripts/fetch-runtimes.sh"
# the ONNX Runtime version the tests must find loaded: the pin's (mobilediff/runtimes.py), the phone's
ort_version="$("$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["pins"]["onnxruntime-mobile"].get("runtime_version") or d["onnxruntime"]["linux_library_version"])' "$VENDOR_DIR/runtimes.json")"
# the ExecuTorch the tests must find compiled in: the executorch wheel's host runtime, where it was laid out
et_version="$("$PYTHON" -c 'import json, sys; print((json.load(open(sys.argv[1])).get("executorch_host") or {}).get("version") or "")' "$VENDOR_DIR/runtimes.json")"
FIXTURES="${MOBILEDIFF_FIXTURES:-$TOOLCHAIN_DIR/fixtures}"
if [ -n "${MOBILEDIFF_FIXTURES_READY:-}" ]; then
    echo "[ios] fixtures in $FIXTURES (as they are: MOBILEDIFF_FIXTURES_READY)" >&2
elif "$PYTHON" -c "import mobilediff.fixtures" 2>/dev/null; then
    echo "[ios] fixtures in $FIXTURES ($PYTHON -m mobilediff.fixtures, cached)" >&2
    HF_HUB_OFFLINE=1 "$PYTHON" -m mobilediff.fixtures "$FIXTURES" >&2
elif [ ! -d "$FIXTURES/default" ]; then
    die "this mobilediff has no fixtures module (python -m mobilediff.fixtures) and $FIXTURES holds none: nothing to test against"
fi
FIXTURES="$(cd "$FIXTURES" && pwd -P)"

MOBILEDIFF_PYTHON="$PYTHON" "$IOS_DEMO/scripts/check-executorch.sh"
build_if_stale
echo "[ios] swift test (fixtures bound at /fixtures; ONNX Runtime $ort_version${et_version:+ and ExecuTorch $et_version (host runtime)} from $VENDOR_DIR)" >&2
log="$TOOLCHAIN_DIR/swift-test.log"
status=0
swift_run --bind "$FIXTURES:/fixtures" -- "MOBILEDIFF_FIXTURES=/fixtures MOBILEDIFF_ORT_VERSION=$ort_version ${et_version:+MOBILEDIFF_EXECUTORCH_VERSION=$et_version }swift test --skip-build --disable-swift-testing 2>&1" \
    | filter_schema_noise | tee "$log" || status=$?
summary="$(grep -E 'Executed [0-9]+ tests' "$log" | tail -1 | sed 's/^[[:space:]]*//' || true)"
ran_on="$(sed -n -E 's/^onnxruntime_version ([^ ]+).*/\1/p' "$log" | head -1)"
et_ran_on="$(sed -n -E 's/^executorch_version ([^ ]+).*/\1/p' "$log" | head -1)"
failures="$(echo "$summary" | sed -n -E 's/.* ([0-9]+) failures? .*/\1/p')"
skipped="$(echo "$summary" | sed -n -E 's/.* ([0-9]+) tests? skipped.*/\1/p')"
echo "[ios] ${summary:-no XCTest summary}; ONNX Runtime ${ran_on:-not reported}; ExecuTorch ${et_ran_on:-not reported}; $((SECONDS - start)) s in all" >&2
[ -n "$summary" ] && [ "${failures:-1}" = 0 ] || status=1
if [ "${skipped:-0}" != 0 ] && [ -z "${MOBILEDIFF_ALLOW_SKIPS:-}" ]; then
    echo "error: ${skipped} test(s) skipped (a fixture is missing?); MOBILEDIFF_ALLOW_SKIPS=1 accepts that" >&2
    status=1
fi
exit "$status"
