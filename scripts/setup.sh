#!/usr/bin/env bash
# Installs what the scripts need and a fresh Debian machine lacks; does
# nothing, quietly, when everything is there (about a second: a few
# `command -v` and rustup queries). scripts/run.sh, scripts/test.sh and
# .ci/run call it first.
#
#   scripts/setup.sh boot   QEMU (qemu-system-aarch64, Debian's qemu-system-arm):
#                           booting images already built (run.sh with HYP_NO_BUILD=1)
#   scripts/setup.sh run    boot, and what building needs: a C linker for build
#                           scripts (gcc), an aarch64 objcopy (llvm-objcopy,
#                           aarch64-linux-gnu-objcopy or rustup's llvm-tools, else
#                           Debian's binutils-aarch64-linux-gnu), and the Rust
#                           toolchain of rust-toolchain.toml with its targets and
#                           components
#   scripts/setup.sh test   run, and gdb-multiarch, and nightly Rust with Miri and
#                           rust-src (plus `cargo miri setup`), and cargo-fuzz
#                           with a C++ compiler for libFuzzer (g++):
#                           scripts/test.sh, scripts/fuzz.sh
#
# Debian packages come from apt-get (through `sudo -n` when not root),
# toolchains from rustup (explicitly: RUSTUP_AUTO_INSTALL=0 may be set).
# Nothing asks questions. When something cannot be installed (no root, no
# network, no rustup), one line says what is missing and how to install it,
# and the exit status is 1 (2 for a bad mode). Installers' output goes to
# target/setup.log; all of this script's to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-test}"
case "$mode" in
    boot | run | test) ;;
    *) echo "setup.sh: unknown mode $mode (boot, run or test)" >&2 && exit 2 ;;
esac
exec >&2 # run.sh's stdout is the hypervisor's console

log="$root/target/setup.log"

# give_up WHAT HOW: the one line when something is missing for good.
give_up() {
    echo "setup.sh: missing $1: $2"
    exit 1
}

# run_logged COMMAND...: runs it, its output in $log (begun afresh by the
# first installer of this run).
logged=0
run_logged() {
    if [[ $logged == 0 ]]; then
        mkdir -p "$(dirname "$log")"
        : >"$log"
        logged=1
    fi
    echo "+ $*" >>"$log"
    "$@" >>"$log" 2>&1
}

# --- Debian packages --------------------------------------------------------
missing=() packages=()
need() { # need COMMAND PACKAGE...: the packages if COMMAND is not found
    if ! command -v "$1" >/dev/null; then
        missing+=("$1")
        shift
        packages+=("$@")
    fi
}

# rustup's llvm-tools (what scripts/image.sh's find_objcopy looks for first).
have_llvm_tools() {
    local sysroot host
    sysroot="$(RUSTUP_AUTO_INSTALL=0 rustc --print sysroot 2>/dev/null)" || return 1
    host="$(RUSTUP_AUTO_INSTALL=0 rustc -vV 2>/dev/null | sed -n 's/^host: //p')"
    [[ -x "$sysroot/lib/rustlib/$host/bin/llvm-objcopy" ]]
}

# A QEMU of the caller's choice (QEMU=...) is theirs to provide.
if [[ -z "${QEMU:-}" ]]; then need qemu-system-aarch64 qemu-system-arm; fi
if [[ $mode != boot ]]; then
    need cc gcc libc6-dev
    if ! command -v llvm-objcopy >/dev/null && ! command -v aarch64-linux-gnu-objcopy >/dev/null &&
        ! (cd "$root" && have_llvm_tools); then
        missing+=("an aarch64 objcopy")
        packages+=(binutils-aarch64-linux-gnu)
    fi
fi
if [[ $mode == test ]]; then
    need gdb-multiarch gdb-multiarch
    need c++ g++ # libfuzzer-sys builds libFuzzer (scripts/fuzz.sh)
fi

if [[ ${#packages[@]} -gt 0 ]]; then
    what="$(printf '%s, ' "${missing[@]}")" && what="${what%, }"
    how="install with: sudo apt-get install ${packages[*]}"
    command -v apt-get >/dev/null || give_up "$what" "$how (Debian's packages, or your system's equivalent)"
    sudo=()
    if [[ $EUID != 0 ]]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            give_up "$what" "$how (not root, and sudo needs a password or is absent)"
        fi
    fi
    echo "setup.sh: installing ${packages[*]} (apt-get)"
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y)
    if ! run_logged "${apt[@]}" update || ! run_logged "${apt[@]}" install --no-install-recommends "${packages[@]}"; then
        give_up "$what" "apt-get failed (log: $log); $how"
    fi
    for c in "${missing[@]}"; do
        [[ "$c" == "an aarch64 objcopy" ]] && c=aarch64-linux-gnu-objcopy
        command -v "$c" >/dev/null || give_up "$c" "still not found after apt-get (log: $log); $how"
    done
fi

[[ $mode != boot ]] || exit 0

# --- Rust -------------------------------------------------------------------
# The pinned toolchain, its targets and components, as rust-toolchain.toml says.
toml_value() { sed -n "s/^$1 *= *//p" "$root/rust-toolchain.toml" | tr -d '[]",'; }
toolchain="$(toml_value channel)"
read -r -a targets <<<"$(toml_value targets)"
read -r -a components <<<"$(toml_value components)"

command -v rustup >/dev/null ||
    give_up "rustup (for Rust $toolchain)" "install it as https://rustup.rs says, then run scripts/setup.sh again"

# installed TOOLCHAIN: its installed components (rust-std-<target> for targets).
installed() {
    RUSTUP_AUTO_INSTALL=0 rustup component list --installed --toolchain "$1" 2>/dev/null
}

# has LIST NAME...: whether LIST (installed's output) has every component NAME.
has() {
    local list="$1" name
    shift
    for name in "$@"; do
        grep -q -e "^$name\$" -e "^$name-" <<<"$list" || return 1
    done
}

list="$(installed "$toolchain" || true)"
wanted=(rustc cargo "${components[@]}")
for t in "${targets[@]}"; do wanted+=("rust-std-$t"); done
if ! has "$list" "${wanted[@]}"; then
    echo "setup.sh: installing Rust $toolchain (rustup)"
    args=(--profile minimal)
    for c in "${components[@]}"; do args+=(-c "$c"); done
    for t in "${targets[@]}"; do args+=(-t "$t"); done
    run_logged rustup toolchain install "$toolchain" "${args[@]}" ||
        give_up "Rust $toolchain" "rustup failed (log: $log); install with: rustup toolchain install $toolchain ${args[*]}"
fi

[[ $mode == test ]] || exit 0

# Nightly with Miri, for the walker's unit tests under Miri.
list="$(installed nightly || true)"
if [[ -z "$list" ]]; then
    echo "setup.sh: installing Rust nightly with Miri (rustup)"
    run_logged rustup toolchain install nightly --profile minimal -c miri -c rust-src ||
        give_up "Rust nightly with Miri" "rustup failed (log: $log); install with: rustup toolchain install nightly --profile minimal -c miri -c rust-src"
elif ! has "$list" miri rust-src; then
    echo "setup.sh: adding Miri to Rust nightly (rustup)"
    run_logged rustup component add --toolchain nightly miri rust-src ||
        give_up "Miri" "rustup failed (log: $log); install with: rustup component add --toolchain nightly miri rust-src"
fi
# Miri's own sysroot: built once (a minute or two, with the network), then
# only checked.
if ! out="$(cd "$root" && RUSTUP_AUTO_INSTALL=0 cargo +nightly miri setup 2>&1)"; then
    run_logged echo "$out"
    give_up "Miri's sysroot" "cargo miri setup failed (log: $log); run: cargo +nightly miri setup"
fi
[[ "$out" == *"already available"* ]] || echo "setup.sh: prepared Miri's sysroot (cargo miri setup)"

# cargo-fuzz, for the fuzz targets (scripts/fuzz.sh; test.sh runs them
# briefly): built from crates.io once (a minute or two), then only found.
if ! command -v cargo-fuzz >/dev/null; then
    echo "setup.sh: installing cargo-fuzz (cargo install)"
    run_logged env RUSTUP_AUTO_INSTALL=0 cargo +nightly install cargo-fuzz --locked ||
        give_up "cargo-fuzz" "cargo install failed (log: $log); install with: cargo +nightly install cargo-fuzz --locked"
fi
