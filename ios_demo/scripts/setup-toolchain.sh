#!/usr/bin/env bash
# Builds the Swift toolchain for MobileDiffKit on a Debian/Ubuntu x86-64 host with root: a Debian trixie root
# (debootstrap, minbase) holding trixie's Swift 6 (`swiftlang`), libc/libstdc++ headers, ONNX Runtime's C
# library and headers (`libonnxruntime-dev` 1.21) and libcrypto (`libssl-dev`, for sha256 on Linux).
#
# Idempotent and cached: the root lives in ios_demo/.toolchain/trixie (MOBILEDIFF_TOOLCHAIN_DIR moves it) and
# is built in a side folder that is renamed into place only when complete, so an interrupted run leaves
# nothing half-built behind; a second run returns at once. A change of the package list rebuilds it.
# Needs: root, network access to the Debian archive (MOBILEDIFF_DEBIAN_MIRROR, default deb.debian.org), ~3.5 GB.
# Mounts (proc, /dev for apt inside the root) live in a private mount namespace and are gone on exit.
set -euo pipefail
. "$(dirname "$0")/lib/chroot.sh"

MIRROR="${MOBILEDIFF_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if toolchain_ready; then
    echo "toolchain: cached at $TRIXIE_ROOT"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "setup-toolchain.sh needs root (debootstrap and chroot)"
[ "$(uname -m)" = x86_64 ] || die "setup-toolchain.sh supports x86-64 hosts only (found $(uname -m))"

start=$(date +%s)
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if ! command -v debootstrap >/dev/null || [ ! -f "$keyring" ]; then
    echo "toolchain: installing debootstrap"
    # one host apt at a time: android_demo's setup may be installing beside this one (CI runs them side by side)
    (
        flock 9
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap \
            debian-archive-keyring >/dev/null
    ) 9>/var/lock/mobilediff-host-apt
fi

partial="$TOOLCHAIN_DIR/trixie.partial"
for d in "$partial" "$TRIXIE_ROOT"; do
    if [ -e "$d" ]; then
        # a leftover from an interrupted or outdated build; never delete through a live mount
        [ -z "$(mounts_under "$d")" ] || die "$d has mounts under it ($(mounts_under "$d" | tr '\n' ' ')); unmount them first"
        rm -rf "$d"
    fi
done
mkdir -p "$TOOLCHAIN_DIR"

echo "toolchain: debootstrap trixie (minbase) into $partial"
debootstrap --variant=minbase --keyring="$keyring" trixie "$partial" "$MIRROR" >"$TOOLCHAIN_DIR/debootstrap.log" 2>&1 ||
    { tail -20 "$TOOLCHAIN_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $TOOLCHAIN_DIR/debootstrap.log)"; }

echo "toolchain: apt-get install $TOOLCHAIN_PACKAGES"
cp /etc/resolv.conf "$partial/etc/resolv.conf" 2>/dev/null || true
chroot_run "$partial" -- /bin/bash -c "
    set -euo pipefail
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $TOOLCHAIN_PACKAGES >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/*
    swift --version 2>&1 | head -1
    dpkg-query -W -f='\${Package} \${Version}\n' libonnxruntime-dev libssl-dev
"
printf '%s' "$TOOLCHAIN_PACKAGES" >"$partial/$TOOLCHAIN_STAMP_NAME"
mv "$partial" "$TRIXIE_ROOT"
echo "toolchain: ready at $TRIXIE_ROOT in $(( $(date +%s) - start )) s"
