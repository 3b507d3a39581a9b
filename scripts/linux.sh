#!/usr/bin/env bash
# The Linux guest: Debian's arm64 cloud kernel and a busybox initramfs,
# fetched from Debian's archive and cached under target/linux/.
#
#   scripts/linux.sh    prints the kernel Image's path and the initramfs's,
#                       one per line, fetching and building what is missing
#
# The kernel is the package linux-image-cloud-arm64 depends on (its vmlinuz
# is an uncompressed arm64 Image); busybox comes from busybox-static. Both
# are downloaded with apt-get download (the arm64 architecture is added to
# dpkg if needed) and unpacked with dpkg-deb -x. The initramfs holds
# busybox, /bin/sh, /dev/console and guests/linux/init, built with
# `cargo xtask initramfs`. Nothing here is committed: delete target/linux/
# to fetch again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/target/linux"
mkdir -p "$cache"

say() { echo "linux.sh: $*" >&2; }

# Runs a command as root (apt-get, dpkg), with sudo when not root.
as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

# The arm64 package lists, once.
arm64_ready=0
arm64_lists() {
    [[ $arm64_ready == 0 ]] || return 0
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        say "adding the arm64 architecture to dpkg"
        as_root dpkg --add-architecture arm64
        as_root apt-get update -qq >&2
    elif ! apt-cache show linux-image-cloud-arm64:arm64 >/dev/null 2>&1; then
        as_root apt-get update -qq >&2
    fi
    arm64_ready=1
}

# fetch PACKAGE DIR: downloads PACKAGE (arm64) into the cache and unpacks it
# into DIR, unless DIR exists.
fetch() {
    local pkg="$1" dir="$2" deb
    [[ -d "$dir" ]] && return 0
    if ! compgen -G "$cache/${pkg}_*_arm64.deb" >/dev/null; then
        arm64_lists
        say "downloading $pkg"
        (cd "$cache" && apt-get download -q "$pkg:arm64" >&2)
    fi
    deb="$(ls -t "$cache/${pkg}"_*_arm64.deb | head -n 1 || true)"
    [[ -n "$deb" ]] || { say "apt-get download $pkg:arm64 left no .deb in $cache"; exit 1; }
    dpkg-deb -x "$deb" "$dir.tmp"
    mv "$dir.tmp" "$dir"
}

# The kernel package the meta-package points at (linux-image-6.1.0-N-cloud-arm64).
shopt -s nullglob
unpacked=("$cache"/k-*)
shopt -u nullglob
kernel_pkg=""
if [[ ${#unpacked[@]} -gt 0 ]]; then
    kernel_pkg="${unpacked[0]##*/k-}"
else
    arm64_lists
    kernel_pkg="$(apt-cache depends linux-image-cloud-arm64:arm64 |
        sed -n 's/^ *Depends: \(linux-image-[^:]*\).*/\1/p' | head -n 1)"
    [[ -n "$kernel_pkg" ]] || { say "linux-image-cloud-arm64:arm64 names no kernel package"; exit 1; }
fi
fetch "$kernel_pkg" "$cache/k-$kernel_pkg"
fetch busybox-static "$cache/busybox"

image="$(ls "$cache/k-$kernel_pkg"/boot/vmlinuz-* | head -n 1 || true)"
[[ -f "$image" ]] || { say "no boot/vmlinuz-* in $kernel_pkg"; exit 1; }
busybox="$cache/busybox/bin/busybox"
init="$root/guests/linux/init"
initramfs="$cache/initramfs.cpio"
if [[ ! -f "$initramfs" || "$init" -nt "$initramfs" || "$busybox" -nt "$initramfs" ]]; then
    say "building $initramfs"
    (cd "$root" && cargo xtask initramfs -o "$initramfs.tmp" \
        --dir bin --file bin/busybox="$busybox" --symlink bin/sh=busybox \
        --dir dev --chardev dev/console=5:1 --dir proc --dir sys --dir tmp \
        --file init="$init")
    mv "$initramfs.tmp" "$initramfs"
fi
echo "$image"
echo "$initramfs"
