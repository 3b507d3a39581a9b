#!/usr/bin/env bash
# Prints pgtable's walker benchmarks against the aarch64-paging baseline,
# from criterion's output of
#   cargo bench --target x86_64-unknown-linux-gnu -p pgtable --bench walker
# (mean point estimates in target/criterion/<group>/<function>/new/estimates.json).
#
# ratio = baseline time / pgtable time: above 1 we are faster; the target
# is 1.5 on every headline operation.
#
# Usage: scripts/bench-ratios.sh [--check] [CRITERION_DIR]
#   --check        exit 1 if a headline ratio is below the target (or missing)
#   CRITERION_DIR  default: $CARGO_TARGET_DIR/criterion or <repo>/target/criterion
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
check=0
if [[ "${1:-}" == "--check" ]]; then
    check=1
    shift
fi
dir="${1:-${CARGO_TARGET_DIR:-$root/target}/criterion}"

# Absolute: cargo xtask (crates/xtask/src/bench_ratios.rs) runs from the root.
[[ "$dir" == /* ]] || dir="$PWD/$dir"
cd "$root"
if [[ $check == 1 ]]; then
    exec cargo xtask bench-ratios --check "$dir"
fi
exec cargo xtask bench-ratios "$dir"
