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

exec python3 - "$dir" "$check" <<'EOF'
import json, os, signal, sys

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`

crit, check = sys.argv[1], sys.argv[2] == "1"
TARGET = 1.5
OPS = ["map_4k", "map_2m", "map_1g", "walk_4k", "walk_2m",
       "wrprotect_4k", "wrprotect_2m", "unmap_4k", "unmap_2m"]
# (title, ours, baseline); the first is the headline comparison.
PAIRS = [
    ("Stage2 exclusive vs aarch64-paging Stage2 (headline)", "pgtable", "aarch64_paging"),
    ("Stage2 shared vs aarch64-paging Stage2", "pgtable_shared", "aarch64_paging"),
    ("Hyp (EL2 stage 1) vs aarch64-paging El2", "pgtable_hyp", "aarch64_paging_el2"),
]

def mean_ns(group, name):
    path = os.path.join(crit, group, name, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["mean"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None

def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3f} {unit}"
    return f"{ns:.1f} ns"

if not os.path.isdir(crit):
    sys.exit(f"no criterion output in {crit}: run the walker benchmark first")

missed = []
for i, (title, ours, base) in enumerate(PAIRS):
    rows = []
    for op in OPS:
        a, b = mean_ns(op, ours), mean_ns(op, base)
        if a is None or b is None:
            if i == 0:
                missed.append(f"{op} (no data)")
            continue
        ratio = b / a
        mark = "" if ratio >= TARGET else f"  < {TARGET}x"
        if i == 0 and ratio < TARGET:
            missed.append(f"{op} ({ratio:.3g}x)")
        rows.append(f"{op:<13} | {fmt(a):>11} | {fmt(b):>14} | {ratio:7.3g}x{mark}")
    if not rows:
        continue
    print(f"## {title}")
    print(f"{'operation':<13} | {ours:>11} | {base:>14} | ratio")
    print("\n".join(rows))
    print()

if missed:
    print(f"below the {TARGET}x target: " + ", ".join(missed))
    sys.exit(1 if check else 0)
print(f"every headline operation is at least {TARGET}x the baseline")
EOF
