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
# scripts/bench.sh --profile drives it. An exit starts at the vector for
# synchronous exceptions from a lower EL (exception_vectors + 0x400); a
# bracket's exits are those between a BENCH_START (an exit that reads the
# PMU: hyp::pmu::read_evcntr) and the BENCH_STOP that reports it
# (hyp::vm::bench::report). The instructions per exit printed here must
# equal the table's per-operation figures: the PMU and the trace agree.
set -euo pipefail

[[ $# == 3 ]] || { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2 && exit 2; }
command -v nm >/dev/null || { echo "bench-profile.sh: needs nm (binutils)" >&2 && exit 1; }

exec python3 - "$@" <<'EOF'
import bisect, collections, re, subprocess, sys

elf, runlog, trace = sys.argv[1:4]
TOP = 16  # functions listed per bracket

syms = []
nm = subprocess.run(["nm", "-n", "-C", elf], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[1] in "tTwW":
        syms.append((int(parts[0], 16), re.sub(r"::h[0-9a-f]{16}$", "", parts[2])))
addrs = [a for a, _ in syms]
by_name = {n: a for a, n in syms}
for needed in ("exception_vectors", "hyp::pmu::read_evcntr", "hyp::vm::bench::report"):
    if needed not in by_name:
        sys.exit(f"bench-profile.sh: no symbol {needed} in {elf}")
VECTOR = by_name["exception_vectors"] + 0x400
READ = by_name["hyp::pmu::read_evcntr"]
REPORT = by_name["hyp::vm::bench::report"]

def symbol(pc):
    i = bisect.bisect_right(addrs, pc) - 1
    return syms[i][1] if i >= 0 else "?"

# Bracketed measurements only: one metered inside the hypervisor (no
# BENCH_START, `bracket 0`, e.g. dirty-log) has no bracket in the trace.
keys = [m.group(1) for m in re.finditer(r"^bench: ([a-z0-9-]+): .*bracket (\d+)", open(runlog).read(), re.M)
        if m.group(2) != "0"]

# Each exit: (read the PMU, reported a bracket, instructions by function).
exits, names, cur = [], {}, None
pc_in = re.compile(r"\[[0-9a-f]+/([0-9a-f]+)/")
with open(trace) as f:
    for line in f:
        m = pc_in.search(line)
        if not m:
            continue
        pc = int(m.group(1), 16)
        if pc == VECTOR:
            cur = [False, False, collections.Counter()]
            exits.append(cur)
        if cur is None:
            continue
        if pc == READ:
            cur[0] = True
        elif pc == REPORT:
            cur[1] = True
        name = names.get(pc)
        if name is None:
            name = names[pc] = symbol(pc)
        cur[2][name] += 1

brackets, start = [], None
for i, (read, reported, _) in enumerate(exits):
    if reported and start is not None:
        brackets.append((start, i))
        start = None
    elif read and not reported:
        start = i
if len(brackets) != len(keys):
    sys.exit(f"bench-profile.sh: {len(brackets)} brackets in the trace, {len(keys)} in {runlog}")

for key, (a, b) in zip(keys, brackets):
    inside = [c for _, _, c in exits[a + 1:b]]
    if not inside:
        continue
    total = collections.Counter()
    for c in inside:
        total.update(c)
    n = len(inside)
    print(f"### {key}: {n} exits, {sum(total.values()) / n:.1f} EL2 instructions per exit\n")
    print("| per exit | function |\n|---:|---|")
    for name, count in total.most_common(TOP):
        print(f"| {count / n:.1f} | `{name}` |")
    rest = sum(total.values()) - sum(c for _, c in total.most_common(TOP))
    if rest:
        print(f"| {rest / n:.1f} | (others) |")
    print()
EOF
