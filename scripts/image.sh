# Shared by run.sh, debug.sh and smoke.sh (sourced, not run): where the
# hypervisor and the test guests are built, how the bootable images are
# made, and the QEMU machine.
# Expects $root = the repository root.

HYP_PROFILE=release
HYP_TARGET=aarch64-unknown-none-softfloat
HYP_ELF="$root/target/$HYP_TARGET/$HYP_PROFILE/hyp"
HYP_IMG="$HYP_ELF.img"

# The machine every script boots: EL2 (virtualization=on), GICv3, 4 CPUs.
# Never QEMU's semihosting option: QEMU would serve a guest's semihosting calls itself
# (host files, host commands) before the hypervisor could refuse them.
# No NIC: the hypervisor drives none, and QEMU's default one needs a boot ROM
# (efi-virtio.rom) that minimal installs lack (Debian ships it in ipxe-qemu).
# The console is QEMU's standard input and output with no escape of QEMU's
# own (not -nographic's mon:stdio, whose Ctrl-A would never reach the
# hypervisor) and Ctrl-C passed on: the hypervisor has the escape keys.
QEMU_BASE_ARGS=(
    -machine virt,virtualization=on,gic-version=3
    -cpu cortex-a72
    -smp 4
    -m 1G
    -display none
    -monitor none
    -chardev stdio,id=console,signal=off
    -serial chardev:console
    -nic none
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
# (as a raw Image, QEMU passes the device tree in x0; as an ELF it would not),
# then the test guests (build_guests).
build_image() {
    local objcopy
    (cd "$root" && cargo build --profile "$HYP_PROFILE")
    objcopy="$(find_objcopy)"
    "$objcopy" -O binary "$HYP_ELF" "$HYP_IMG"
    build_guests
}

# The test guests (guests/src/bin/<name>.rs): raw arm64 Images, one per
# scenario, at $GUEST_DIR/<name>.img (guest_image NAME), handed to the
# hypervisor with `-initrd` (scripts/run.sh --guest NAME). GUEST_DEFAULT is
# the one run.sh boots without --guest.
GUEST_DIR="$root/target/$HYP_TARGET/$HYP_PROFILE/guests"
GUEST_DEFAULT=smp

# The test guests' names, one per line.
guest_names() {
    local src
    for src in "$root"/guests/src/bin/*.rs; do
        basename "$src" .rs
    done
}

# Where the image of test guest NAME is (built or not).
guest_image() {
    echo "$GUEST_DIR/$1.img"
}

# Builds every test guest (release) and makes its raw image.
build_guests() {
    local objcopy name
    (cd "$root" && cargo build --profile "$HYP_PROFILE" -p guests)
    objcopy="$(find_objcopy)"
    mkdir -p "$GUEST_DIR"
    for name in $(guest_names); do
        "$objcopy" -O binary "$root/target/$HYP_TARGET/$HYP_PROFILE/$name" "$(guest_image "$name")"
    done
}
