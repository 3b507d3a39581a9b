#!/usr/bin/env bash
# Every check, one PASS/FAIL line each, ending with "N passed, N failed";
# exits non-zero if any failed. Step logs go to target/test-logs/.
#
# To add a check, add a `step "name" command...` line below (or a function
# for anything longer); see scripts/lib.sh.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh" test || exit 1 # what a fresh machine lacks
# shellcheck source=scripts/image.sh
source "$root/scripts/image.sh"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
# shellcheck source=scripts/smoke.sh
source "$root/scripts/smoke.sh"
# shellcheck source=scripts/fuzz.sh
source "$root/scripts/fuzz.sh"

HOST=x86_64-unknown-linux-gnu

# --- static checks ---------------------------------------------------------
step "cargo fmt --check (hyp, hvcore)" cargo fmt --check -p hyp -p hvcore
step "cargo fmt --check (pgtable)" cargo fmt --check -p pgtable
step "cargo fmt --check (guests)" cargo fmt --check -p guests
step "cargo fmt --check (xtask)" cargo fmt --check -p xtask
step "cargo fmt --check (fuzz targets)" cargo fmt --check --manifest-path fuzz/Cargo.toml
step "clippy host (hvcore)" cargo clippy --target "$HOST" -p hvcore --all-targets -- -D warnings
step "clippy host (pgtable)" cargo clippy --target "$HOST" -p pgtable --all-targets -- -D warnings
step "clippy host (xtask)" cargo clippy --target "$HOST" -p xtask --all-targets -- -D warnings
step "clippy aarch64 (workspace)" cargo clippy --workspace --exclude xtask -- -D warnings
step "cargo doc, no warnings (hyp, hvcore)" env RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps -p hyp -p hvcore
step "cargo doc, no warnings (pgtable)" env RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps -p pgtable
# The module graphs: no two modules use each other (directly or round a
# loop), and the hypervisor's layers point down only (src/layers.txt).
step "module graph: hypervisor layers, no cycle" cargo xtask deps --rules src/layers.txt src
step "module graph: hvcore, pgtable, guests, xtask, no cycle" sh -c \
    'for d in crates/hvcore/src crates/pgtable/src guests/src crates/xtask/src; do cargo xtask deps "$d" >/dev/null || exit 1; done'

# --- host unit tests -------------------------------------------------------
step "host tests (hvcore)" cargo test --target "$HOST" -p hvcore
step "host tests (pgtable)" cargo test --target "$HOST" -p pgtable
step "host tests (guests: device-tree reading)" cargo test --target "$HOST" -p guests --lib
step "host tests (xtask: bench table, profile, ratios)" cargo test --target "$HOST" -p xtask
# The walker's unit tests under Miri: no undefined behaviour in the table
# access, the deferred frees or the host memory backend.
step "Miri: pgtable unit tests" cargo +nightly miri test --target "$HOST" -p pgtable --lib

# --- fuzzing -----------------------------------------------------------------
# Every cargo fuzz target (fuzz/) for a few seconds each, as
# `scripts/fuzz.sh --quick` does: hvcore's decoders of guest- and
# user-controlled input against their invariants. Longer runs: scripts/fuzz.sh.
fuzz_targets 5

# --- the hypervisor under QEMU ---------------------------------------------
step "aarch64 build (image)" build_image
if [[ -f "$HYP_IMG" ]]; then
    smoke_tests
    step "gdb: break at the Rust entry and in the guest-abort handler, at EL2" env HYP_NO_BUILD=1 "$root/scripts/debug.sh" --check
else
    fail "QEMU smoke tests and gdb check" "no image was built"
fi

summary
