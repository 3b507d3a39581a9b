#!/usr/bin/env bash
# The benchmark report: exact instruction counts at EL2 per exit and per
# fault, measured under QEMU with -icount (runs are then repeatable to the
# instruction), as one table, printed and written to target/bench/report.md.
#
#   scripts/bench.sh [--once] [--host] [--profile] [--no-linux] [--out FILE]
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
#   --no-linux  leave out the Linux boot section (below)
#   --out FILE  write the report there instead of target/bench/report.md
#
# The Linux boot section (once, whatever --once says): Debian's kernel and
# a busybox initramfs (scripts/linux.sh) booted to the userspace marker on
# bare QEMU at EL1 and under the hypervisor, with the same device tree
# (cargo xtask guest-dtb): instructions under -icount (one vCPU), wall time
# from QEMU's start (two vCPUs, cargo xtask stopwatch), exits by reason, and
# console exits per character (a boot with the kernel log against a quiet
# one); cargo xtask linux-table builds the table.
#
# Exit status: 0 if every run passed and (unless --once) both passes gave
# identical counts; 1 otherwise (a run failed, a row is missing, a bracket
# saw exits other than its operations', counts differ between passes, or
# --host / --profile failed). A missed target is reported, not a failure:
# these are benchmarks, not tests.
#
# To add a row: make the hypervisor print a `bench: <key>: ...` line (a
# bracket id in hvcore::bench, or jobs::bench::report for a measurement taken
# inside the hypervisor with pmu::el2_instructions), and add the key to
# ROWS in crates/xtask/src/bench_table.rs, which builds the table (`cargo
# xtask bench-table`), and a run to RUNS below if it needs other boot
# arguments.
#
# Environment: HYP_NO_BUILD=1 (use the last build), BENCH_DIR (where logs
# and the report go, default target/bench), RUN_TIMEOUT (per run, default 300).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/image.sh
source "$root/scripts/image.sh"

passes=2 host=0 profile=0 linux=1 out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --once) passes=1 && shift ;;
        --host) host=1 && shift ;;
        --profile) profile=1 && shift ;;
        --no-linux) linux=0 && shift ;;
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
# Absolute paths: cargo xtask (crates/xtask) runs from the repository root.
[[ "$dir" == /* ]] || dir="$PWD/$dir"
[[ "$out" == /* ]] || out="$PWD/$out"
xtask() { (cd "$root" && cargo xtask "$@"); }

# The QEMU clock: one instruction per nanosecond, never waiting for real time.
ICOUNT=(-icount shift=0,sleep=off)

# RUNS: name, then the guest's arguments and the hypervisor's extra boot
# arguments, and its vCPUs. irq: the interrupt brackets, on two vCPUs (the
# IPI's sender and receiver each bracket their own side).
RUNS=(blocks pages irq)
run_guest_args() { case "$1" in blocks) echo block=2M ;; pages) echo block=4K ;; irq) echo irq=on ;; esac; }
run_host_args() { case "$1" in pages) echo "guest.block=4K" ;; *) echo "" ;; esac; }
run_smp() { case "$1" in irq) echo 2 ;; *) echo 1 ;; esac; }

# run_args NAME: scripts/run.sh's arguments for a run.
run_args() {
    local extra
    extra="$(run_host_args "$1")"
    printf '%s\n' --guest bench --smp "$(run_smp "$1")" --guest-args "$(run_guest_args "$1")" \
        "${ICOUNT[@]}" -append "log=info bench=on${extra:+ $extra}"
}

"$root/scripts/setup.sh" run || exit 1 # QEMU, Rust (also for cargo xtask), an objcopy
if [[ "${HYP_NO_BUILD:-0}" != 1 ]]; then
    build_image >"$dir/build.log" 2>&1 || {
        echo "bench.sh: build failed (log: $dir/build.log)" >&2
        tail -n 20 "$dir/build.log" >&2
        exit 1
    }
fi
# Built now, not after the runs: the --profile trace reader must start at once.
xtask help >/dev/null || { echo "bench.sh: cannot build crates/xtask (cargo xtask)" >&2 && exit 1; }

failed=0

# The hypervisor's text, as QEMU's -dfilter takes an address range.
text_range() {
    xtask text-range "$HYP_ELF"
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
    if [[ $status != 0 ]] || ! grep -q 'guest: bench: \(done\|irq done\)' "$log"; then
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

# The table (crates/xtask/src/bench_table.rs): one row per key, from the first
# run that printed it; with two passes, each run's lines must be the same in both.
table_args=()
for name in "${RUNS[@]}"; do
    table_args+=("$name=$dir/$name.1.lines")
    if [[ $passes == 2 && $failed == 0 ]]; then table_args+=(--pass2 "$name=$dir/$name.2.lines"); fi
done
machine="$(qemu-system-aarch64 --version | head -n 1 | sed 's/ (.*//; s/^QEMU emulator version /QEMU /')"
commit="$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
xtask bench-table --out "$out" --machine "$machine" --commit "$commit" "${table_args[@]}" || failed=1

# The benchmark guest again with a second VM busy beside it (its vCPU
# counting on CPU 1), once: the same rows must stay within a few percent.
busy_log="$dir/busy.log"
HYP_NO_BUILD=1 RUN_TIMEOUT="${RUN_TIMEOUT:-300}" "$root/scripts/run.sh" \
    --vm "guest=bench,cpus=0,mem=128M,args=block=2M" \
    --vm "guest=isolate,cpus=1,mem=32M,args=role=progress ms=4000 every_ms=1000" \
    "${ICOUNT[@]}" -append "log=info bench=on" </dev/null >"$busy_log" 2>&1 || true
grep '^bench: ' "$busy_log" >"$dir/busy.lines" || true
if grep -q 'guest: bench: done' "$busy_log" && grep -q 'never stalled' "$busy_log"; then
    {
        echo
        echo "## The same brackets beside a second, busy VM"
        echo
        echo "The benchmark guest on CPU 0 (VM 0) while VM 1 counts in a loop on CPU 1, same build."
        echo "Left out: the permission-relax rows. Their guest invalidates its instruction cache, which"
        echo "makes QEMU flush every CPU's translations at a point where all CPUs stop, and under"
        echo "-icount (one thread for all CPUs) QEMU's PMU counts the instruction count of every CPU:"
        echo "the busy VM's loop is then counted as this CPU's EL2 instructions (about 100 M per flush)."
        echo
        xtask bench-compare --base "$dir/blocks.1.lines" --other "$dir/busy.lines" --what "beside a busy VM" \
            --skip relax-4k,relax-2m
    } | tee -a "$out"
else
    echo "bench.sh: the run beside a busy VM failed (log: $busy_log)" >&2
    failed=1
fi

if [[ $linux == 1 ]]; then
    echo
    echo "bench.sh: Linux boot, bare QEMU and under the hypervisor..."
    if ! mapfile -t linux_files < <("$root/scripts/linux.sh" 2>"$dir/linux-fetch.log") ||
        [[ ${#linux_files[@]} != 2 ]]; then
        echo "bench.sh: scripts/linux.sh failed (log: $dir/linux-fetch.log)" >&2
        failed=1
    else
        kernel="${linux_files[0]}" initramfs="${linux_files[1]}"
        xtask guest-dtb --cpus 1 --mem-mib 512 -o "$dir/guest-1.dtb"
        xtask guest-dtb --cpus 2 --mem-mib 512 -o "$dir/guest-2.dtb"
        xtask bundle -o "$dir/linux.bundle" --kernel "$kernel" --initrd "$initramfs"
        bare=(qemu-system-aarch64 -machine virt,gic-version=3 -cpu cortex-a72 -m 512M -display none
            -monitor none -chardev stdio,id=console,signal=off -serial chardev:console -nic none
            -kernel "$kernel" -initrd "$initramfs" -append "console=ttyAMA0 quiet hyp.init=bench")
        # hyp ARGS...: the hypervisor's QEMU command line for the bundle (run.sh's own).
        hyp() {
            local line
            line="$(RUN_DRY=1 "$root/scripts/run.sh" --guest "$dir/linux.bundle" --mem 512M \
                -append "log=info reset=exit -- console=ttyAMA0 panic=-1 hyp.init=bench $1" "${@:2}")"
            eval "hyp_cmd=($line)"
        }
        hyp quiet --smp 1 "${ICOUNT[@]}"
        timeout 300 "${bare[@]}" -smp 1 -dtb "$dir/guest-1.dtb" "${ICOUNT[@]}" </dev/null \
            >"$dir/linux-bare.log" 2>&1 || failed=1
        timeout 300 "${hyp_cmd[@]}" </dev/null >"$dir/linux-hyp.log" 2>&1 || failed=1
        hyp "" --smp 1 "${ICOUNT[@]}"
        timeout 300 "${hyp_cmd[@]}" </dev/null >"$dir/linux-loud.log" 2>&1 || failed=1
        xtask stopwatch --until "linux-guest: marker" --log "$dir/linux-bare-wall.log" -- \
            timeout 300 "${bare[@]}" -smp 2 -dtb "$dir/guest-2.dtb" >/dev/null || failed=1
        hyp quiet --smp 2
        xtask stopwatch --until "linux-guest: marker" --log "$dir/linux-hyp-wall.log" -- \
            timeout 300 "${hyp_cmd[@]}" >/dev/null || failed=1
        xtask linux-table --bare "$dir/linux-bare.log" --hyp "$dir/linux-hyp.log" \
            --loud "$dir/linux-loud.log" --bare-wall "$dir/linux-bare-wall.log" \
            --hyp-wall "$dir/linux-hyp-wall.log" --vcpus 2 | tee -a "$out" || failed=1
    fi
fi

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
