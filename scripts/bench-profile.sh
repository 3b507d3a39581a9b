#!/usr/bin/env bash
# Where the EL2 instructions of each benchmark bracket go, by function: reads
# QEMU's exec trace of a bench run (one line per instruction, EL2 code only)
# and prints, for every bracket, the instructions per exit by function.
#
#   scripts/bench-profile.sh ELF RUNLOG TRACE
#
#   ELF     the hypervisor's ELF (symbols)
#   RUNLOG  the console output of the same run (its `bench: <key>:` lines name
#           the brackets, in order)
#   TRACE   the trace file (or FIFO) of QEMU run with
#           -singlestep -d exec,nochain -dfilter <EL2 text range> -D TRACE
#
# scripts/bench.sh --profile drives it; the work is `cargo xtask
# bench-profile` (crates/xtask/src/bench_profile.rs). An exit starts at the
# vector for synchronous exceptions from a lower EL (exception_vectors +
# 0x400); a bracket's exits are those between a BENCH_START (an exit that
# reads the PMU: hyp::arch::pmu::read_evcntr) and the BENCH_STOP that reports it
# (hyp::jobs::bench::report). The instructions per exit printed here must
# equal the table's per-operation figures: the PMU and the trace agree.
set -euo pipefail

[[ $# == 3 ]] || { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2 && exit 2; }
command -v nm >/dev/null || { echo "bench-profile.sh: needs nm (binutils)" >&2 && exit 1; }

# Absolute paths: cargo xtask runs from the repository root.
args=()
for arg in "$@"; do
    [[ "$arg" == /* ]] || arg="$PWD/$arg"
    args+=("$arg")
done
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo xtask bench-profile "${args[@]}"
