# Shared by run.sh, debug.sh and smoke.sh (sourced, not run): where the
# hypervisor is built, how the bootable image is made, and the QEMU machine.
# Expects $root = the repository root.

HYP_PROFILE=release
HYP_TARGET=aarch64-unknown-none-softfloat
HYP_ELF="$root/target/$HYP_TARGET/$HYP_PROFILE/hyp"
HYP_IMG="$HYP_ELF.img"

# The machine every script boots: EL2 (virtualization=on), GICv3, 4 CPUs.
QEMU_BASE_ARGS=(
    -machine virt,virtualization=on,gic-version=3
    -cpu cortex-a72
    -smp 4
    -m 1G
    -nographic
    -semihosting
)

# An objcopy that handles aarch64 ELF: rustup's llvm-tools, Debian's LLVM,
# or Debian's aarch64 binutils (.ci/run installs the latter if none exists).
find_objcopy() {
    local sysroot host candidate
    sysroot="$(rustc --print sysroot 2>/dev/null || true)"
    host="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')"
    for candidate in \
        "$sysroot/lib/rustlib/$host/bin/llvm-objcopy" \
        "$(command -v llvm-objcopy || true)" \
        "$(command -v aarch64-linux-gnu-objcopy || true)"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    echo "no objcopy for aarch64 found: install llvm-tools (rustup) or binutils-aarch64-linux-gnu" >&2
    return 1
}

# Builds the ELF and turns it into a raw arm64 Image for `qemu -kernel`
# (as a raw Image, QEMU passes the device tree in x0; as an ELF it would not).
build_image() {
    local objcopy
    (cd "$root" && cargo build --profile "$HYP_PROFILE")
    objcopy="$(find_objcopy)"
    "$objcopy" -O binary "$HYP_ELF" "$HYP_IMG"
}
