#!/usr/bin/env bash
# Fetches the phone's runtimes and lays them out where MobileDiffKit (Package.swift) and the app's XcodeGen spec
# (App/project.yml) find them: ios_demo/MobileDiffKit/Vendor (git-ignored; nothing here is committed).
#
# The packages come from the npm registry through `python -m mobilediff.runtimes fetch NAME`, which pins each by
# name, version and sha512 (mobilediff/runtimes.py), checks the tarball and prints the unpacked package's root:
#   onnxruntime-mobile  com.github.asus4.onnxruntime (official ONNX Runtime builds, one version for every platform)
#   executorch-mobile   react-native-executorch (ExecuTorch's iOS framework and its C++ headers)
# and, for Linux, the host runtime of the executorch wheel installed in the project's Python (a dependency of
# mobilediff; ExecutorchLib has iOS slices only): the same C++ Module API, the library Python's `generate --bundle`
# and the Android engine's JVM tests run `.pte` files on.
#
# Layout (Vendor/):
#   onnxruntime.xcframework/         ORT's static C API framework for iOS (device, simulator, Mac Catalyst); the app
#                                    links it. Its headers are the ones the package compiles against everywhere.
#   onnxruntime/linux-x64/           the same version's Linux library (the engine's tests and command line)
#   onnxruntime/macos-arm64/         the same version's macOS library (`swift build` on a Mac)
#   ExecutorchLib.xcframework/       ExecuTorch's dynamic framework for iOS (device, simulator); the app embeds it
#   executorch/include/              ExecuTorch's C++ headers of that framework (the CExecuTorch shim's)
#   executorch/linux-x64/            the executorch wheel's host runtime: lib/ (libexecutorch, its optimized kernels,
#                                    its XNNPACK backend and thread pool) and include/ (its headers); the engine's
#                                    Linux builds (tests, command line) link it
#   runtimes.json                    what was laid out: the pins (package, version, sha512, runtime version), the ORT
#                                    version of the Linux library (checked against the pin), the headers' C API and
#                                    the executorch wheel's version
# A second run with the same pins and executorch wheel returns at once; others lay everything out again. Without an
# executorch wheel in that Python, executorch/linux-x64/ is not laid out (the Linux builds hold ONNX Runtime alone).
#   MOBILEDIFF_PYTHON=PY   the Python with mobilediff installed (default: the repository's .venv, else python3)
set -euo pipefail
. "$(dirname "$0")/lib/chroot.sh"

REPO="$(cd "$IOS_DEMO/.." && pwd)"
PYTHON="${MOBILEDIFF_PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" -c "import mobilediff.runtimes" 2>/dev/null || die "$PYTHON cannot import mobilediff.runtimes (install the project: pip install -e .)"

# the pins of the two packages, as the runtimes module records them: a change lays everything out again
pins="$("$PYTHON" -m mobilediff.runtimes list)" || die "python -m mobilediff.runtimes list failed"
pins="$(printf '%s' "$pins" | "$PYTHON" -c '
import json, sys
pins = json.load(sys.stdin)
if isinstance(pins, list):  # a list of records, or a mapping name -> record
    pins = {p["name"]: p for p in pins}
missing = [n for n in ("onnxruntime-mobile", "executorch-mobile") if n not in pins]
if missing:
    sys.exit(f"error: mobilediff.runtimes has no pin for {missing}")
print(json.dumps({n: pins[n] for n in ("onnxruntime-mobile", "executorch-mobile")}, sort_keys=True))
')" || exit 1
# the executorch wheel in that Python: its package folder and version (empty where it is not installed)
et_host="$("$PYTHON" -c '
import importlib.metadata, importlib.util
spec = importlib.util.find_spec("executorch")
if spec and spec.submodule_search_locations:
    print(importlib.metadata.version("executorch"))
    print(list(spec.submodule_search_locations)[0])
' 2>/dev/null || true)"
et_host_version="$(printf '%s\n' "$et_host" | sed -n 1p)"
et_host_dir="$(printf '%s\n' "$et_host" | sed -n 2p)"
layout="$(printf '%s' "$pins" | "$PYTHON" -c 'import json, sys; print(json.dumps({"pins": json.load(sys.stdin), "executorch_host": sys.argv[1] or None}, sort_keys=True))' "$et_host_version")"
stamp="$VENDOR_DIR/runtimes.json"
if [ -f "$stamp" ] && [ "$("$PYTHON" -c 'import json,sys; d = json.load(open(sys.argv[1])); print(json.dumps({"pins": d["pins"], "executorch_host": (d.get("executorch_host") or {}).get("version")}, sort_keys=True))' "$stamp")" = "$layout" ]; then
    echo "[ios] runtimes: cached in $VENDOR_DIR" >&2
    exit 0
fi

fetch() {
    local root
    root="$("$PYTHON" -m mobilediff.runtimes fetch "$1" | tail -1)" || die "python -m mobilediff.runtimes fetch $1 failed"
    [ -d "$root" ] || die "python -m mobilediff.runtimes fetch $1 printed '$root', not a folder"
    printf '%s' "$root"
}
echo "[ios] runtimes: fetching onnxruntime-mobile and executorch-mobile (python -m mobilediff.runtimes)" >&2
ort="$(fetch onnxruntime-mobile)"
et="$(fetch executorch-mobile)"

need() { [ -e "$1" ] || die "the fetched package lacks $1"; }
ort_xcf="$ort/Plugins/iOS~/onnxruntime.xcframework"
ort_headers="$ort_xcf/ios-arm64/onnxruntime.framework/Headers"
et_xcf="$et/third-party/ios/ExecutorchLib.xcframework"
for f in "$ort_xcf/Info.plist" "$ort_headers/onnxruntime_c_api.h" "$ort/Plugins/Linux/x64/libonnxruntime.so" \
         "$ort/Plugins/macOS/arm64/libonnxruntime.dylib" "$et_xcf/Info.plist" \
         "$et_xcf/ios-arm64/ExecutorchLib.framework/ExecutorchLib" \
         "$et/third-party/include/executorch/extension/module/module.h"; do
    need "$f"
done

# built beside the old layout and swapped in whole: the package never sees half a layout
partial="$VENDOR_DIR.partial"
rm -rf "$partial"
mkdir -p "$partial/onnxruntime/linux-x64" "$partial/onnxruntime/macos-arm64" "$partial/executorch"
# hard links where the cache shares the file system (the frameworks are ~270 MB), copies otherwise
copy() { cp -a --link "$1" "$2" 2>/dev/null || { rm -rf "$2"; cp -a "$1" "$2"; }; }
copy "$ort_xcf" "$partial/onnxruntime.xcframework"
copy "$et_xcf" "$partial/ExecutorchLib.xcframework"
copy "$et/third-party/include" "$partial/executorch/include"
cp "$ort/Plugins/Linux/x64/libonnxruntime.so" "$partial/onnxruntime/linux-x64/"
cp "$ort/Plugins/macOS/arm64/libonnxruntime.dylib" "$partial/onnxruntime/macos-arm64/"
# the names the libraries are loaded by (their SONAME / install name)
ln -s libonnxruntime.so "$partial/onnxruntime/linux-x64/libonnxruntime.so.1"
ln -s libonnxruntime.dylib "$partial/onnxruntime/macos-arm64/libonnxruntime.1.dylib"
# the executorch wheel's host runtime (the libraries find each other through their $ORIGIN run path)
et_host_libs="libexecutorch.so libexecutorch_kernels_optimized.so libexecutorch_backend_xnnpack.so libexecutorch_threadpool.so"
if [ -n "$et_host_version" ]; then
    for f in $et_host_libs; do need "$et_host_dir/lib/$f"; done
    need "$et_host_dir/include/executorch/extension/module/module.h"
    mkdir -p "$partial/executorch/linux-x64/lib"
    for f in $et_host_libs; do copy "$et_host_dir/lib/$f" "$partial/executorch/linux-x64/lib/$f"; done
    copy "$et_host_dir/include" "$partial/executorch/linux-x64/include"
else
    echo "[ios] runtimes: $PYTHON has no executorch wheel: the Linux builds will hold ONNX Runtime alone" >&2
fi
# npm tarballs hold no symbolic links, so the Mac Catalyst slice (a versioned macOS-style framework) arrives without
# the links Xcode expects at its top level; they are made again here
catalyst="$partial/onnxruntime.xcframework/ios-arm64_x86_64-maccatalyst/onnxruntime.framework"
if [ -d "$catalyst/Versions/A" ] && [ ! -e "$catalyst/Versions/Current" ]; then
    ln -s A "$catalyst/Versions/Current"
    for entry in onnxruntime Headers Resources; do
        [ -e "$catalyst/Versions/A/$entry" ] && ln -s "Versions/Current/$entry" "$catalyst/$entry"
    done
fi

# the version the headers declare (ORT_API_VERSION 29 is ONNX Runtime 1.29) and the libraries' own version strings
api="$(sed -n -E 's/^#define ORT_API_VERSION ([0-9]+).*/\1/p' "$ort_headers/onnxruntime_c_api.h")"
[ -n "$api" ] || die "no ORT_API_VERSION in $ort_headers/onnxruntime_c_api.h"
linux_version="$(grep -a -o -E "^1\.${api}\.[0-9]+$" <(strings -n 6 "$ort/Plugins/Linux/x64/libonnxruntime.so" 2>/dev/null || tr -c '[:print:]' '\n' <"$ort/Plugins/Linux/x64/libonnxruntime.so") | head -1 || true)"
[ -n "$linux_version" ] || die "the Linux libonnxruntime.so does not carry a 1.${api}.x version string (headers declare C API ${api})"
pinned_version="$(printf '%s' "$pins" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["onnxruntime-mobile"].get("runtime_version") or "")')"
[ -z "$pinned_version" ] || [ "$pinned_version" = "$linux_version" ] ||
    die "the package's ONNX Runtime is $linux_version but mobilediff.runtimes pins onnxruntime-mobile as ONNX Runtime $pinned_version"

"$PYTHON" - "$partial/runtimes.json" "$pins" "$ort" "$et" "$api" "$linux_version" "$et_host_version" "$et_host_libs" <<'PY'
import json, sys
from pathlib import Path
out, pins, ort, et, api, linux_version, et_host_version, et_host_libs = sys.argv[1:]
record = {
    "pins": json.loads(pins),
    "onnxruntime": {
        "package": json.loads((Path(ort) / "package.json").read_text())["version"],
        "c_api_version": int(api),
        "linux_library_version": linux_version,
        "files": ["onnxruntime.xcframework", "onnxruntime/linux-x64/libonnxruntime.so",
                  "onnxruntime/macos-arm64/libonnxruntime.dylib"],
    },
    "executorch": {
        "package": json.loads((Path(et) / "package.json").read_text())["version"],
        "files": ["ExecutorchLib.xcframework", "executorch/include"],
    },
    "executorch_host": {
        "wheel": "executorch",
        "version": et_host_version,
        "files": [f"executorch/linux-x64/lib/{f}" for f in et_host_libs.split()] + ["executorch/linux-x64/include"],
    } if et_host_version else None,
}
Path(out).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
PY
rm -rf "$VENDOR_DIR.old"
[ -e "$VENDOR_DIR" ] && mv "$VENDOR_DIR" "$VENDOR_DIR.old"
mv "$partial" "$VENDOR_DIR"
rm -rf "$VENDOR_DIR.old"
host_et="${et_host_version:+ and the host runtime of the executorch $et_host_version wheel}"
echo "[ios] runtimes: ONNX Runtime $linux_version (C API $api), ExecuTorch's framework$host_et laid out in $VENDOR_DIR" >&2
