#!/usr/bin/env bash
# Builds the Swift toolchain for MobileDiffKit on a Debian/Ubuntu x86-64 host with root: a Debian trixie root
# (debootstrap, minbase) holding trixie's Swift 6 (`swiftlang`), libc/libstdc++ headers, libcrypto (`libssl-dev`,
# for sha256 on Linux) and libc++'s headers (`libc++-dev`, for the ExecuTorch shim's symbol check). ONNX Runtime
# and ExecuTorch are not Debian's: fetch-runtimes.sh lays out the phone's versions beside the package.
#
# Idempotent and cached: the root lives in ios_demo/.toolchain/trixie (MOBILEDIFF_TOOLCHAIN_DIR moves it) and
# is built in a side folder that replaces it only when complete, so an interrupted run leaves nothing half-built
# behind and an outdated root stays usable until then; a second run returns at once. A change of the package list
# rebuilds it.
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
outdated="$TOOLCHAIN_DIR/trixie.outdated"
# removes a leftover of an interrupted or outdated build; never deletes through a live mount
remove_root() {
    [ -e "$1" ] || return 0
    [ -z "$(mounts_under "$1")" ] || die "$1 has mounts under it ($(mounts_under "$1" | tr '\n' ' ')); unmount them first"
    rm -rf "$1"
}
remove_root "$partial"
remove_root "$outdated"
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
    dpkg-query -W -f='\${Package} \${Version}\n' libssl-dev libc++-dev
"
printf '%s' "$TOOLCHAIN_PACKAGES" >"$partial/$TOOLCHAIN_STAMP_NAME"
# the outdated root (if any) is moved aside and deleted only once the new one is in place
if [ -e "$TRIXIE_ROOT" ]; then mv "$TRIXIE_ROOT" "$outdated"; fi
mv "$partial" "$TRIXIE_ROOT"
remove_root "$outdated"
echo "toolchain: ready at $TRIXIE_ROOT in $(( $(date +%s) - start )) s"
