# Shared by the ios_demo scripts (source it, do not run it): where the Swift toolchain lives and how to run a
# command inside it.
#
# The toolchain is a Debian trixie root (Swift 6 from trixie's `swiftlang`, libcrypto from `libssl-dev`, libc++'s
# headers for the ExecuTorch shim's symbol check) built by setup-toolchain.sh under ios_demo/.toolchain/ (git-ignored;
# MOBILEDIFF_TOOLCHAIN_DIR moves it). Trixie's binaries need glibc 2.38, newer than the bookworm host's, so they run
# chrooted. ONNX Runtime is not Debian's: fetch-runtimes.sh lays out the phone's version (1.29.0, from npm) under
# MobileDiffKit/Vendor, inside the repository that every chroot command sees.
#
# Mounts: every command runs in its own private mount namespace (`unshare --mount`), so the proc, /dev and bind
# mounts it needs are visible only to that command and disappear with it, even if it is killed; an EXIT trap
# unmounts them in order as well. Nothing is ever mounted in the host's namespace. The command also gets its own
# PID namespace, so no process it started outlives it.

IOS_DEMO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLCHAIN_DIR="${MOBILEDIFF_TOOLCHAIN_DIR:-$IOS_DEMO/.toolchain}"
TRIXIE_ROOT="$TOOLCHAIN_DIR/trixie"
# What the toolchain holds; a change here rebuilds it (the list is written into the stamp file).
TOOLCHAIN_PACKAGES="swiftlang libc6-dev libstdc++-14-dev libssl-dev libc++-dev"
TOOLCHAIN_STAMP_NAME=".mobilediff-toolchain"

die() { echo "error: $*" >&2; exit 1; }

toolchain_ready() {
    [ -f "$TRIXIE_ROOT/$TOOLCHAIN_STAMP_NAME" ] &&
        [ "$(cat "$TRIXIE_ROOT/$TOOLCHAIN_STAMP_NAME")" = "$TOOLCHAIN_PACKAGES" ]
}

# mounts_under DIR: prints the host-namespace mount points at or below DIR (there should never be any).
mounts_under() {
    local dir
    dir="$(readlink -f "$1")"
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts
}

# chroot_run ROOT [--bind HOST_PATH:CHROOT_PATH]... -- COMMAND...
# Runs COMMAND (through /bin/bash -c inside ROOT when it is one string) with proc, /dev, /dev/pts and the
# given bind mounts, all in a private mount namespace. Returns COMMAND's exit status.
chroot_run() {
    local root="$1"; shift
    local binds=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
        case "$1" in
            --bind) binds+=("$2"); shift 2 ;;
            *) die "chroot_run: unknown option $1" ;;
        esac
    done
    [ "${1:-}" = "--" ] && shift
    [ "$(id -u)" = 0 ] || die "the Swift toolchain runs in a chroot: run this as root"
    # --pid --fork: the command's processes live in their own PID namespace, so the kernel ends any that outlive
    # it (e.g. a compiler job orphaned by a failed build) when it exits.
    unshare --mount --pid --fork --propagation private /bin/bash -s -- "$root" "$#" "$@" "${binds[@]}" <<'INNER'
set -euo pipefail
root="$1"; ncmd="$2"; shift 2
cmd=("${@:1:$ncmd}"); shift "$ncmd"
mounted=()
cleanup() {
    local i
    for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mnt() { mount "$@"; mounted+=("${@: -1}"); }
mkdir -p "$root/proc" "$root/dev"
mnt -t proc proc "$root/proc"
mnt --bind /dev "$root/dev"
if [ -d /dev/pts ]; then mkdir -p "$root/dev/pts"; mnt --bind /dev/pts "$root/dev/pts"; fi
for b in "$@"; do
    src="${b%%:*}"; dst="$root${b#*:}"
    if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; touch "$dst"; fi
    mnt --bind "$src" "$dst"
done
export LANG=C.UTF-8 LC_ALL=C.UTF-8 HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
status=0
chroot "$root" "${cmd[@]}" || status=$?
exit "$status"
INNER
}

REPO_DIR="$(cd "$IOS_DEMO/.." && pwd)"
PACKAGE_DIR="$IOS_DEMO/MobileDiffKit"
# Where the repository is seen inside the chroot: bind-mounted whole (so .build/ stays on the host between runs),
# with the package at the same place in it as on the host; the contract tests read the repository's tests/contract
# and tokenizer files relative to their own source file.
CHROOT_REPO=/src/mobilediff
CHROOT_PACKAGE="$CHROOT_REPO/ios_demo/MobileDiffKit"

# swift_run [--bind HOST:CHROOT]... -- SHELL_COMMAND: runs SHELL_COMMAND in the package folder inside the chroot.
swift_run() {
    local binds=(--bind "$REPO_DIR:$CHROOT_REPO")
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do binds+=("$1" "$2"); shift 2; done
    [ "${1:-}" = "--" ] && shift
    chroot_run "$TRIXIE_ROOT" "${binds[@]}" -- /bin/bash -c "cd $CHROOT_PACKAGE && $*"
}

# A libonnxruntime linked beside a shared libonnx (Debian's) registers ONNX's operator schemas twice and prints one
# "Schema error" paragraph per duplicate on stderr at load (harmless: the first registration is kept). The official
# library the engine links links ONNX statically and prints none; the filter stays for engines built against a
# distribution's library.
filter_schema_noise() {
    grep -v -E '^(Schema error: Trying to register schema with name .* but it is already registered from file .*)?$' || true
}

# The engine binary (debug build, shared with the tests) and how to run it on the host: trixie's dynamic loader
# with the root's libraries, so it sees the host's paths (bundles, outputs) without a chroot.
ENGINE_BIN="$PACKAGE_DIR/.build/debug/mobilediff-engine"
# The runtimes fetch-runtimes.sh lays out for the package (git-ignored): ONNX Runtime's Linux library and its
# xcframework's headers, ExecuTorch's xcframework and headers, the executorch wheel's host runtime.
VENDOR_DIR="$PACKAGE_DIR/Vendor"
run_on_host() {
    local libs="$VENDOR_DIR/onnxruntime/linux-x64:$VENDOR_DIR/executorch/linux-x64/lib:$TRIXIE_ROOT/usr/lib/x86_64-linux-gnu:$TRIXIE_ROOT/lib/x86_64-linux-gnu:$TRIXIE_ROOT/usr/lib/swift/linux"
    "$TRIXIE_ROOT/lib64/ld-linux-x86-64.so.2" --library-path "$libs" "$@"
}

# Builds the package (library, engine and tests) if any source, or the runtimes' layout, is newer than the engine.
build_if_stale() {
    local inputs=("$PACKAGE_DIR/Package.swift" "$PACKAGE_DIR/Sources" "$PACKAGE_DIR/Tests")
    [ -f "$VENDOR_DIR/runtimes.json" ] && inputs+=("$VENDOR_DIR/runtimes.json")
    if [ ! -x "$ENGINE_BIN" ] || [ -n "$(find "${inputs[@]}" -newer "$ENGINE_BIN" -print -quit)" ]; then
        echo "[ios] swift build --build-tests" >&2
        if ! swift_run -- "swift build --build-tests 2>&1" | filter_schema_noise >&2; then die "swift build failed"; fi
        touch "$ENGINE_BIN"
    fi
}
