#!/usr/bin/env bash
# The benchmark report: exact instruction counts at EL2 per exit and per
# fault, measured under QEMU with -icount (runs are then repeatable to the
# instruction), as one table, printed and written to target/bench/report.md.
#
#   scripts/bench.sh [--once] [--host] [--profile] [--out FILE]
#
# How: each run boots the hypervisor with bench=on and the `bench` test guest
# on one vCPU (scripts/run.sh --guest bench --smp 1), under
# -icount shift=0,sleep=off. The guest brackets N operations with the
# benchmark hypercalls (docs/guest-abi.md); the hypervisor counts the
# instructions it retires at EL2 in between with a PMU counter reserved for
# EL2 (src/pmu.rs) and prints one line per bracket:
#   bench: <key>: <ops> ops, <exits> exits, <n> EL2 instructions, bracket <b>...
# A row of the table is (n - b) / ops: b, the bracket's own cost, is measured
# by an empty bracket first. Two runs (RUNS below): blocks (the default
# guest.block) and 4 KiB pages (guest.block=4K). The dirty-log row is
# metered inside the hypervisor around one get-and-clear the guest asks for
# (BENCH_DIRTY_LOG), after it wrote 1024 pages with logging on.
#
# Options:
#   --once      one pass instead of two (by default every run is made twice
#               and the counts must be identical)
#   --host      also run the walker benchmarks on the host (criterion, takes
#               minutes, noisy on a loaded machine) and add
#               scripts/bench-ratios.sh's table to the report
#   --profile   also run each run once more with QEMU's exec trace (one
#               instruction per line, EL2 code only) and write, per bracket,
#               the instructions per exit by function to target/bench/profile.md
#               (scripts/bench-profile.sh); slower (about a minute)
#   --out FILE  write the report there instead of target/bench/report.md
#
# Exit status: 0 if every run passed and (unless --once) both passes gave
# identical counts; 1 otherwise (a run failed, a row is missing, a bracket
# saw exits other than its operations', counts differ between passes, or
# --host / --profile failed). A missed target is reported, not a failure:
# these are benchmarks, not tests.
#
# To add a row: make the hypervisor print a `bench: <key>: ...` line (a
# bracket id in hvcore::bench, or vm::bench::report for a measurement taken
# inside the hypervisor with pmu::el2_instructions), and add the key to
# ROWS in the table program below (and a run to RUNS if it needs other boot
# arguments).
#
# Environment: HYP_NO_BUILD=1 (use the last build), BENCH_DIR (where logs
# and the report go, default target/bench), RUN_TIMEOUT (per run, default 300).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/image.sh
source "$root/scripts/image.sh"

passes=2 host=0 profile=0 out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --once) passes=1 && shift ;;
        --host) host=1 && shift ;;
        --profile) profile=1 && shift ;;
        --out)
            [[ $# -ge 2 ]] || { echo "bench.sh: --out needs a file" >&2 && exit 2; }
            out="$2" && shift 2
            ;;
        --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2 && exit 2 ;;
    esac
done

dir="${BENCH_DIR:-$root/target/bench}"
out="${out:-$dir/report.md}"
mkdir -p "$dir" "$(dirname "$out")"

# The QEMU clock: one instruction per nanosecond, never waiting for real time.
ICOUNT=(-icount shift=0,sleep=off)

# RUNS: name, then the guest's block size (its bootarg block=) and the
# hypervisor's extra boot arguments.
RUNS=(blocks pages)
run_guest_block() { case "$1" in blocks) echo 2M ;; pages) echo 4K ;; esac; }
run_host_args() { case "$1" in blocks) echo "" ;; pages) echo "guest.block=4K" ;; esac; }

# run_args NAME: scripts/run.sh's arguments for a run.
run_args() {
    local extra
    extra="$(run_host_args "$1")"
    printf '%s\n' --guest bench --smp 1 --guest-args "block=$(run_guest_block "$1")" \
        "${ICOUNT[@]}" -append "log=info bench=on${extra:+ $extra}"
}

if [[ "${HYP_NO_BUILD:-0}" != 1 ]]; then
    build_image >"$dir/build.log" 2>&1 || {
        echo "bench.sh: build failed (log: $dir/build.log)" >&2
        tail -n 20 "$dir/build.log" >&2
        exit 1
    }
fi

failed=0

# The hypervisor's text, as QEMU's -dfilter takes an address range.
text_range() {
    nm "$HYP_ELF" | awk '$3 == "_text_start" { s = $1 } $3 == "_text_end" { e = $1 }
        END { if (s == "" || e == "") exit 1; printf "0x%s..0x%s", s, e }'
}

# run_once NAME PASS [QEMU ARGS...]: boots run NAME, its output to
# $dir/NAME.PASS.log and its bench lines to $dir/NAME.PASS.lines.
run_once() {
    local name="$1" pass="$2" log status=0 args=()
    shift 2
    log="$dir/$name.$pass.log"
    mapfile -t args < <(run_args "$name")
    HYP_NO_BUILD=1 RUN_TIMEOUT="${RUN_TIMEOUT:-300}" "$root/scripts/run.sh" "${args[@]}" "$@" \
        </dev/null >"$log" 2>&1 || status=$?
    grep '^bench: ' "$log" >"$dir/$name.$pass.lines" || true
    if [[ $status != 0 ]] || ! grep -q 'guest: bench: done' "$log"; then
        echo "bench.sh: run $name (pass $pass) failed with status $status (log: $log)" >&2
        tail -n 15 "$log" | sed 's/^/    | /' >&2
        return 1
    fi
}

for ((pass = 1; pass <= passes; pass++)); do
    for name in "${RUNS[@]}"; do
        run_once "$name" "$pass" || failed=1
    done
done

repeat="one pass (--once): repeatability not checked"
if [[ $passes == 2 && $failed == 0 ]]; then
    repeat="two passes: identical counts"
    for name in "${RUNS[@]}"; do
        if ! cmp -s "$dir/$name.1.lines" "$dir/$name.2.lines"; then
            echo "bench.sh: run $name gave different counts in the two passes:" >&2
            diff "$dir/$name.1.lines" "$dir/$name.2.lines" | sed 's/^/    /' >&2 || true
            repeat="two passes: counts DIFFER (run $name)"
            failed=1
        fi
    done
fi

lines=()
for name in "${RUNS[@]}"; do lines+=("$name=$dir/$name.1.lines"); done
machine="$(qemu-system-aarch64 --version | head -n 1 | sed 's/ (.*//; s/^QEMU emulator version /QEMU /')"
commit="$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"

# The table: one row per key, from the first run that printed it.
python3 - "$out" "$repeat" "$machine" "$commit" "${lines[@]}" <<'EOF' || failed=1
import re, sys

out, repeat, machine, commit, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]

# (key the hypervisor prints, measurement, unit, what an operation is,
#  target or None, metric, scale, one exit per operation).
#   metric "insns": (instructions - bracket) / ops * scale;
#   metric "exits": exits / ops * scale.
# One exit per operation is checked where it must hold: anything else that
# exited inside the bracket would be counted as the operations' cost.
ROWS = [
    ("hvc", "HVC round trip (null hypercall)", "EL2 instructions", "calls", 150, "insns", 1, True),
    ("fault-4k", "lazy fault, 4K page", "EL2 instructions", "faults", 1000, "insns", 1, True),
    ("fault-2m", "lazy fault, 2M block", "EL2 instructions", "faults", 1000, "insns", 1, True),
    ("relax-4k", "permission relax (exec from a data page), 4K page", "EL2 instructions", "faults", None, "insns", 1, True),
    ("relax-2m", "permission relax (exec from a data page), 2M block", "EL2 instructions", "faults", None, "insns", 1, True),
    ("access-flag-4k", "access-flag fault, 4K page", "EL2 instructions", "faults", None, "insns", 1, True),
    ("access-flag-2m", "access-flag fault, 2M block", "EL2 instructions", "faults", None, "insns", 1, True),
    ("mmio-write", "emulated console MMIO write (PL011 UARTDR)", "EL2 instructions", "writes", None, "insns", 1, True),
    ("touch-4k", "faults per MiB touched, 4K pages only (guest.block=4K)", "faults", "MiB", None, "exits", 1, False),
    ("touch-blocks", "faults per MiB touched, blocks enabled (default)", "faults", "MiB", 0.5, "exits", 1, False),
    ("dirty-log", "dirty-log get-and-clear per 1,000 pages", "EL2 instructions", "pages", None, "insns", 1000, False),
]
LINE = re.compile(r"^bench: (?P<key>[a-z0-9-]+): (?P<ops>\d+) ops, (?P<exits>\d+) exits, "
                  r"(?P<insns>\d+) EL2 instructions, bracket (?P<bracket>\d+)")

seen, brackets, errors = {}, set(), []
for run in runs:
    name, path = run.split("=", 1)
    try:
        text = open(path).read()
    except OSError:
        errors.append(f"run {name}: no output ({path})")
        continue
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        key = m["key"]
        nums = {k: int(m[k]) for k in ("ops", "exits", "insns", "bracket")}
        if key == "calibrate":
            brackets.add(nums["insns"])
        seen.setdefault(key, (name, nums))

def num(v):
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return text if text != "-0" else "0"

rows = []
for key, label, unit, noun, target, metric, scale, one_exit in ROWS:
    if key not in seen:
        errors.append(f"no `bench: {key}:` line in any run")
        rows.append((label, "no data", unit, "", target, ""))
        continue
    run, n = seen[key]
    ops = n["ops"]
    if ops == 0:
        errors.append(f"bench {key}: 0 operations")
        continue
    if one_exit and n["exits"] != ops:
        errors.append(f"bench {key} (run {run}): {n['exits']} exits for {ops} operations: "
                      "something else exited inside the bracket, so its cost would be counted")
    if metric == "insns":
        value = (n["insns"] - n["bracket"]) / ops * scale
    else:
        value = n["exits"] / ops * scale
    sample = f"{ops} {noun}" + (f", {n['exits']} faults" if metric == "exits" else "")
    if target is None:
        result = "—"
    elif value <= target:
        result = "met"
    else:
        result = f"missed by {num(value - target)} (+{(value - target) / target:.0%})"
    rows.append((label, num(value), unit, sample, "—" if target is None else f"≤ {num(target)}", result))

head = ["measurement", "value", "unit", "sample", "target", "result"]
table = [head, ["---", "---:", "---", "---", "---", "---"]] + [list(r) for r in rows]
text = "\n".join("| " + " | ".join(r) + " |" for r in table)
bracket = ", ".join(str(b) for b in sorted(brackets)) or "not measured"
report = f"""## hyp: EL2 instructions per exit and per fault

{machine}, `-icount shift=0,sleep=off`, `-machine virt,virtualization=on,gic-version=3 -cpu cortex-a72`,
one vCPU; hyp {commit}. Instructions retired at EL2 (PMU event `INST_RETIRED`, counted at EL2 only),
from the exception vector to `eret`, per operation; the bracket's own cost ({bracket} instructions)
subtracted. The dirty-log row is one get-and-clear alone (take the bitmap words, write-protect each
run of dirty pages with a shared walk, one TLB invalidation), metered inside the hypervisor, per
1,000 pages taken.

{text}

{repeat}.
"""
print(report, end="")
with open(out, "w") as f:
    f.write(report)
for e in errors:
    print(f"bench.sh: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

if [[ $host == 1 ]]; then
    echo
    echo "bench.sh: walker benchmarks on the host (criterion; minutes)..."
    if (cd "$root" && cargo bench --target x86_64-unknown-linux-gnu -p pgtable --bench walker) \
        >"$dir/host.log" 2>&1; then
        {
            echo
            echo "## Walker on the host, against aarch64-paging (ratio = baseline time / ours)"
            echo
            echo '```'
            "$root/scripts/bench-ratios.sh"
            echo '```'
        } | tee -a "$out"
    else
        echo "bench.sh: host benchmarks failed (log: $dir/host.log)" >&2
        failed=1
    fi
fi

if [[ $profile == 1 ]]; then
    echo
    profile_out="$dir/profile.md"
    echo "# Where the EL2 instructions go, per bracket (scripts/bench.sh --profile)" >"$profile_out"
    for name in "${RUNS[@]}"; do
        fifo="$dir/$name.trace"
        rm -f "$fifo"
        mkfifo "$fifo"
        {
            echo
            echo "## run $name"
            echo
        } >>"$profile_out"
        "$root/scripts/bench-profile.sh" "$HYP_ELF" "$dir/$name.1.log" "$fifo" >>"$profile_out" &
        reader=$!
        if ! run_once "$name" profile -singlestep -d exec,nochain \
            -dfilter "$(text_range)" -D "$fifo"; then
            failed=1
            # QEMU may never have opened the trace: let the reader see its end.
            timeout 2 sh -c ': >"$1"' _ "$fifo" || true
        fi
        wait "$reader" || failed=1
        rm -f "$fifo"
        if ! cmp -s "$dir/$name.1.lines" "$dir/$name.profile.lines"; then
            echo "bench.sh: run $name counted differently under the trace (see $dir/$name.profile.log)" >&2
            failed=1
        fi
    done
    echo "bench.sh: profile written to $profile_out"
fi

echo "bench.sh: report written to $out"
exit "$failed"
