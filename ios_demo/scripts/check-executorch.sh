#!/usr/bin/env bash
# Checks the iOS ExecuTorch backend on Linux, where ExecutorchLib.xcframework cannot run (it has iOS slices only):
#   1. compiles the CExecuTorch shim against the package's own C++ headers (Vendor/executorch/include) and the
#      Swift backend over it (ExecuTorchBackend.swift): `swift build --target MobileDiffKit` with
#      MOBILEDIFF_CHECK_EXECUTORCH=1 (Package.swift), in its own scratch folder, without linking;
#   2. compiles the shim again against libc++ (the C++ library iOS uses) and checks that every ExecuTorch symbol
#      it needs is exported by the framework's device and simulator binaries (lib/macho_symbols.py): the static
#      half of "it would link".
# Needs the toolchain (setup-toolchain.sh) and the runtimes (fetch-runtimes.sh). Prints one summary line.
set -euo pipefail
. "$(dirname "$0")/lib/chroot.sh"
"$IOS_DEMO/scripts/setup-toolchain.sh" >/dev/null
[ -f "$VENDOR_DIR/runtimes.json" ] || die "no runtimes in $VENDOR_DIR: run ios_demo/scripts/fetch-runtimes.sh first"
PYTHON="${MOBILEDIFF_PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

scratch=".build/executorch-check"
out="$PACKAGE_DIR/$scratch"
mkdir -p "$out"
log="$out/build.log"
if ! swift_run -- "MOBILEDIFF_CHECK_EXECUTORCH=1 swift build --target MobileDiffKit --scratch-path $scratch >$scratch/build.log 2>&1"; then
    cat "$log" >&2
    die "the ExecuTorch shim or backend does not compile against the package's headers (log above)"
fi
if grep -q "warning:" "$log"; then grep -A2 "warning:" "$log" >&2; die "the ExecuTorch shim or backend compiles with warnings (above)"; fi

# the shim against libc++, then its undefined symbols, demangled
swift_run -- "/usr/libexec/swift/bin/clang++ -std=c++17 -nostdinc++ -isystem \$(ls -d /usr/lib/llvm-*/include/c++/v1 | sort -V | tail -1) \
    -I Vendor/executorch/include -I Sources/CExecuTorch/include -c Sources/CExecuTorch/ExecuTorchModule.cpp \
    -o $scratch/shim-libcxx.o && nm -u -C --format=just-symbols $scratch/shim-libcxx.o > $scratch/needed.txt" ||
    die "the ExecuTorch shim does not compile against libc++"
libraries=()
for slice in ios-arm64 ios-arm64-simulator; do
    binary="$VENDOR_DIR/ExecutorchLib.xcframework/$slice/ExecutorchLib.framework/ExecutorchLib"
    [ -f "$binary" ] || die "no $binary"
    "$PYTHON" "$IOS_DEMO/scripts/lib/macho_symbols.py" exports "$binary" "$out/exports-$slice.mangled.txt"
    swift_run -- "c++filt < $scratch/exports-$slice.mangled.txt > $scratch/exports-$slice.txt"
    libraries+=("ExecutorchLib $slice=$out/exports-$slice.txt")
done
"$PYTHON" "$IOS_DEMO/scripts/lib/macho_symbols.py" check "$out/needed.txt" "${libraries[@]}" ||
    die "ExecutorchLib.xcframework does not export every ExecuTorch symbol the shim needs (above)"
echo "[ios] executorch: shim + Swift backend compile against react-native-executorch's headers; every ExecuTorch symbol they need is exported by ExecutorchLib (device and simulator)" >&2
