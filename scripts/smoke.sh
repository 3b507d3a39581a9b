#!/usr/bin/env bash
# QEMU boot smoke tests: each boots the built image with some arguments and
# checks both the exit status and what the hypervisor printed.
#
#   scripts/smoke.sh          build, run all, end with "N passed, N failed"
#
# test.sh sources this file and calls smoke_tests after its own build step.
# SMOKE_TIMEOUT (seconds, default 30) bounds each boot.

# verdict NAME WHY LOG: a PASS line if WHY is empty; otherwise a FAIL line
# saying why, and the end of the run's log.
verdict() {
    if [[ -z "$2" ]]; then
        pass "$1"
    else
        fail "$1" "$2 (log: $3)"
        tail -n 25 "$3" | sed 's/^/    | /'
    fi
}

# boot_test NAME STATUS [PATTERN...] -- [QEMU ARGS...]
# Passes if the run exits with STATUS and its output contains every PATTERN
# (fixed strings); a PATTERN written NOT:text means text must NOT appear.
boot_test() {
    local name="smoke: $1" want="$2" log status pattern why=""
    shift 2
    local patterns=()
    while [[ $# -gt 0 && "$1" != -- ]]; do
        patterns+=("$1")
        shift
    done
    shift # --
    log="$(log_path "$name")"
    status=0
    HYP_NO_BUILD=1 RUN_TIMEOUT="${SMOKE_TIMEOUT:-30}" "$root/scripts/run.sh" "$@" \
        </dev/null >"$log" 2>&1 || status=$?
    [[ $status == "$want" ]] || why="exit status $status, expected $want"
    for pattern in "${patterns[@]}"; do
        if [[ "$pattern" == NOT:* ]]; then
            if grep -qF -- "${pattern#NOT:}" "$log"; then
                why="${why:+$why; }unexpected output: ${pattern#NOT:}"
            fi
        elif ! grep -qF -- "$pattern" "$log"; then
            why="${why:+$why; }missing output: $pattern"
        fi
    done
    verdict "$name" "$why" "$log"
}

# Guests (guests/src/bin): each prints what it checked and exits through
# PSCI SYSTEM_OFF; a failed check prints "guest: FAIL" and exits 1.
guest_tests() {
    boot_test "guest hello: console, PSCI version, device tree" 0 \
        "[vm0/vcpu0] guest: hello from vcpu0 at EL1" "[vm0/vcpu0] guest: hello: psci version 1.1" \
        "guest: hello: 4 vCPUs, 128 MiB RAM at 0x40000000, uart 0x9000000" \
        "vm0/vcpu0: SYSTEM_OFF, status 0" "stats: exits: hvc 2," "NOT:guest: FAIL" -- --guest hello

    # 64 MiB from a 2 MiB-aligned address: 32 block faults, plus one for the
    # image's block and one level-1 fault for the first touch of RAM.
    boot_test "guest touch 64 MiB: 2 MiB blocks, one fault per block" 0 \
        "guest: touch: touched 64 MiB at 0x40200000..0x44200000" \
        "stats: translation faults: L0 0, L1 1, L2 33, L3 0" "stats: mappings: 1G 0, 2M 34, 4K 0" \
        "NOT:guest: FAIL" -- --guest touch

    # 8 MiB = 2048 pages, each its own fault and mapping; the other 45 pages
    # are the guest's image, stacks and device tree (faults and mappings agree).
    boot_test "guest touch 8 MiB with guest.block=4K: one fault per page" 0 \
        "guest: touch: touched 8 MiB at 0x40200000..0x40a00000" \
        "stats: translation faults: L0 0, L1 1, L2 5, L3 2087" "stats: mappings: 1G 0, 2M 0, 4K 2093" \
        "NOT:guest: FAIL" -- --guest touch -append "log=info guest.block=4K -- touch=8"

    boot_test "guest smp: 4 vCPUs by CPU_ON race on the same 4K pages" 0 \
        "guest: smp: vcpu1 online" "guest: smp: vcpu2 online" "guest: smp: vcpu3 online" \
        "guest: smp: 4 vCPUs touched 32 MiB" "guest: smp: 3 other vCPUs off" \
        "stats: walker: lost races" "NOT:re-faults 0," "NOT:guest: FAIL" \
        -- --guest smp -append "log=info guest.block=4K"

    boot_test "guest rom: reads the pattern, a write is refused with an abort" 0 \
        "write to a read-only slot: permission fault level 2, write, ipa 0x4000100" \
        "guest: rom: read ok, write faulted (ESR 0x96000050)" "aborts injected 1" \
        "NOT:guest: FAIL" -- --guest rom

    boot_test "guest relax: executing a data page relaxes stage 2 to X" 0 \
        "guest: relax: executed code written to a data page" \
        "stats: permission faults: L0 0, L1 0, L2 1, L3 0" "NOT:guest: FAIL" -- --guest relax

    boot_test "guest noslot: no slot, and MMIO with no syndrome, are aborts the guest sees" 0 \
        "no memory slot or device there: translation fault level 1, read, ipa 0x20000000" \
        "guest: noslot: abort seen at 0x20000000" \
        "guest: noslot: instruction abort seen at 0x20000000" \
        "MMIO access with no valid syndrome (ISV=0): translation fault level 1, read, ipa 0x9000000" \
        "guest: noslot: MMIO without a valid syndrome refused at 0x9000000" \
        "aborts injected 3" "NOT:guest: FAIL" -- --guest noslot

    boot_test "guest psci: bad calls get the SMCCC error codes" 0 \
        "guest: psci: CPU_ON(mpidr 0xff) = INVALID_PARAMETERS ok" \
        "guest: psci: CPU_ON(self) = ALREADY_ON ok" "guest: psci: CPU_ON(entry 0x1000) = INVALID_ADDRESS ok" \
        "guest: psci: AFFINITY_INFO(0xff) = INVALID_PARAMETERS ok" \
        "guest: psci: SMC PSCI_VERSION = NOT_SUPPORTED ok" "guest: psci: all checks passed" \
        "guest: psci: MIGRATE_INFO_TYPE = 2 (no Trusted OS) ok" "guest: psci: SMCCC_VERSION = 1.1 ok" \
        "stats: exits: hvc 15, smc 1," "NOT:guest: FAIL" -- --guest psci

    # The benchmark guest, as scripts/bench.sh runs it: every bracket printed
    # with one exit per operation (no numbers checked: these are benchmarks).
    boot_test "guest bench: brackets counted at EL2, blocks (bench=on, -icount)" 0 \
        "bench: benchmark hypercalls on (bench=on)" "guest: bench: bad calls refused ok" \
        "bench: calibrate: 0 ops, 0 exits, " "bench: hvc: 1000 ops, 1000 exits, " \
        "bench: mmio-write: 90 ops, 90 exits, " "bench: fault-2m: 16 ops, 16 exits, " \
        "bench: relax-2m: 16 ops, 16 exits, " "bench: access-flag-2m: 16 ops, 16 exits, " \
        "bench: touch-blocks: 16 ops, 8 exits, " "guest: bench: done" "NOT:guest: FAIL" \
        -- --guest bench --smp 1 -icount shift=0,sleep=off -append "log=info bench=on"

    boot_test "guest bench: brackets counted at EL2, 4K pages (guest.block=4K)" 0 \
        "bench: fault-4k: 512 ops, 512 exits, " "bench: relax-4k: 512 ops, 512 exits, " \
        "bench: access-flag-4k: 512 ops, 512 exits, " "bench: touch-4k: 16 ops, 4096 exits, " \
        "guest: bench: done" "NOT:guest: FAIL" -- --guest bench --smp 1 --guest-args "block=4K" \
        -icount shift=0,sleep=off -append "log=info bench=on guest.block=4K"

    boot_test "guest bench without bench=on: the calls do not exist" 1 \
        "guest: FAIL: bench: BENCH_NULL returned -1: boot the hypervisor with bench=on" \
        "NOT:bench: calibrate" -- --guest bench --smp 1

    boot_test "guest exit: SYSTEM_OFF status becomes the run's" 7 \
        "guest: exit: status 7" "vm0/vcpu0: SYSTEM_OFF, status 7" -- --guest exit

    boot_test "default guest (scripts/run.sh, no arguments): SMP, lazy faults, statistics" 0 \
        "guest: smp: 4 vCPUs touched 32 MiB" "stats: mappings: 1G 0, 2M" \
        "stats: walker: lost races" "NOT:guest: FAIL" --

    # The seed's case end to end: a pre-copy live migration of guest RAM
    # while 3 vCPUs rewrite it. CPU 3 migrates, CPU 4 ages pages (so vCPUs
    # take access-flag faults on the pages being write-protected), and
    # migrate.window holds each write-protect's compare-and-swap open until
    # another CPU changes the entry (long on a young entry, which the ager
    # is about to age; short on an old one): lost races must happen and be
    # retried, and the copy must match guest RAM byte for byte.
    # migrate.converge=0 runs all 8 rounds unless one finds nothing dirty:
    # converging at 16 pages, a fast machine stopped after 2 rounds and
    # retried as few as 2 races.
    SMOKE_TIMEOUT=120 boot_test "guest migrate: pre-copy beside 3 writing vCPUs, races retried, copy matches" 0 \
        "at most 8 rounds (fewer once a round takes at most 0 pages)" \
        "migrate: round 0: copied all 8192 pages" "migrate: round 1:" \
        "migrate: final round, vCPUs paused" "cleared the access flags of guest RAM" \
        "migrate: the copy matches guest RAM byte for byte (32 MiB); logging off, vCPUs resumed" \
        "NOT:in all, 0 lost races retried" "guest: migrate: 3 vCPUs made" \
        "every stripe and hot word checked" "NOT:FAIL" \
        -- --guest migrate --mem 32M -smp 5 \
        -append "log=info guest.smp=3 migrate=8 migrate.converge=0 migrate.window=500000 -- seconds=15 mib=16"

    # hello powers off at once, before the migration (which waits for
    # every vCPU to be on) could even start.
    boot_test "a guest that powers off before its migration finished fails the run" 68 \
        "vm0/vcpu0: SYSTEM_OFF, status 0" \
        "migrate: FAIL: vm0 powered off before its migration finished" \
        -- --guest hello -append "log=info migrate=8"

    boot_test "migrate= with no CPU to spare is a clear error" 70 \
        "error: migrate= needs a CPU that runs no vCPU, but 4 vCPUs take all 4 CPUs online" \
        -- --guest hello -append "log=info guest.smp=4 migrate=2"

    boot_test "guest.smp above the CPUs online is a clear error" 70 \
        "error: guest.smp=6, but only 4 CPUs are online" -- --guest hello -append "log=info guest.smp=6"

    boot_test "guest image larger than guest RAM is a clear error" 70 \
        "vm: the kernel needs 4194304 bytes of RAM from its base, but 2097152 are free below the device tree" \
        -- --guest "$TEST_LOG_DIR/big.img" --mem 4M
}

# Interrupts (guests/src/bin: timer ipi prio wfi storm noack), each on
# several vCPU counts up to 8 (QEMU -smp N too, on a 2-core host): the
# scenario checks what it saw and prints its summary line; any wrong
# answer is "guest: FAIL" and status 1. noack compares throughput with its
# own baseline, which an oversubscribed host (more vCPUs than cores)
# makes meaningless: it runs where each vCPU has a core. A timer interrupt
# may be late by up to 5 s (late_ms): 8 vCPUs share 2 cores on a loaded
# machine; never early is what is checked.
irq_tests() {
    local n
    for n in 1 2 4 8; do
        boot_test "guest timer on $n vCPU(s): virtual and physical timers, never early" 0 \
            "guest: timer: $n vCPUs x 2 timers x 16 interrupts, worst lateness" "NOT:guest: FAIL" \
            -- --guest timer --smp "$n" --guest-args "late_ms=5000"
    done
    # 8 vCPUs spinning for their pongs on 2 host cores: fewer rounds, more time.
    local rounds
    for n in 1 2 4 8; do
        rounds=8
        [[ $n != 8 ]] || rounds=2
        SMOKE_TIMEOUT=120 boot_test "guest ipi on $n vCPU(s): ping-pong over every pair, broadcasts, SGI0R/ASGI1R" 0 \
            "guest: ipi: ICC_SGI1R_EL1 write of the same SGI: delivered to" "NOT:guest: FAIL" \
            -- --guest ipi --smp "$n" --guest-args "rounds=$rounds"
    done
    for n in 1 4 8; do
        boot_test "guest prio on $n vCPU(s): pending order, preemption, priority mask" 0 \
            "guest: prio: $n vCPUs passed every priority check ok" "NOT:guest: FAIL" \
            -- --guest prio --smp "$n"
    done
    for n in 1 2 8; do
        boot_test "guest wfi on $n vCPU(s): WFI woken by the timer and by an SGI, masked or not" 0 \
            "guest: wfi: $n vCPUs woken by their timers" "NOT:guest: FAIL" \
            -- --guest wfi --smp "$n"
    done
    for n in 2 8; do
        boot_test "guest storm on $n vCPUs: one floods SGIs, the others progress, SYSTEM_OFF mid-storm" 0 \
            "guest: storm: every worker progressed under the storm ok" "NOT:guest: FAIL" \
            -- --guest storm --smp "$n"
    done
    for n in 1 2; do
        boot_test "guest noack on $n vCPU(s): interrupts never acknowledged or never ended starve nobody" 0 \
            "guest: noack: $n vCPUs not starved" "NOT:guest: FAIL" -- --guest noack --smp "$n"
    done
}

# Linux: Debian's stock arm64 kernel and a busybox initramfs (fetched once
# into target/linux/ by scripts/linux.sh), unmodified, through run.sh
# --linux. guests/linux/init prints the marker, runs a workload on every
# CPU, lists /proc/interrupts and powers off (hyp.init=test); cargo xtask
# linux-check reads the log (docs/testing.md says what it checks).
LINUX_TIMEOUT="${LINUX_TIMEOUT:-240}"

linux_boot_test() {
    local cpus="$1" name log status=0 why="" check
    name="smoke: Linux to userspace on $cpus vCPU(s): marker, workload, timer and IPIs on every CPU, clean log"
    log="$(log_path "$name")"
    HYP_NO_BUILD=1 RUN_TIMEOUT="$LINUX_TIMEOUT" "$root/scripts/run.sh" --linux --smp "$cpus" \
        --guest-args "hyp.init=test" -append "log=info reset=exit" </dev/null >"$log" 2>&1 || status=$?
    [[ $status == 0 ]] || why="exit status $status, expected 0"
    if ! check="$(cd "$root" && cargo xtask linux-check --cpus "$cpus" --min-mem-kb 400000 "$log" 2>&1)"; then
        why="${why:+$why; }${check//$'\n'/; }"
    fi
    verdict "$name" "$why" "$log"
    [[ -n "$why" ]] || echo "    $check"
}

# The console: commands typed on QEMU's standard input reach the guest's
# shell through the physical UART's interrupt and the emulated PL011, and
# Ctrl-A x ends the run (status 69). Each line is sent once the previous
# answer is in the log; the answers are computed by the guest, so an echo of
# the typed line cannot pass for them.
linux_console_test() {
    local name="smoke: Linux interactive shell: typed commands run, Ctrl-A x ends the run (69)"
    local log status=0 why="" fifo pattern
    log="$(log_path "$name")"
    fifo="$TEST_LOG_DIR/console.fifo"
    rm -f "$fifo" && mkfifo "$fifo"
    : >"$log"
    # wait_for TEXT: until the log has TEXT (fixed string), at most 200 s.
    wait_for() {
        local i
        for ((i = 0; i < 2000; i++)); do
            grep -qF -- "$1" "$log" && return 0
            sleep 0.1
        done
        return 1
    }
    (
        exec 3>"$fifo"
        wait_for "linux-guest: shell on the console" || exit 0
        sleep 1
        printf 'echo typed-$((6 * 7))\r' >&3
        wait_for "typed-42" || exit 0
        printf 'grep -c ^processor /proc/cpuinfo | sed s/^/cpus-/\r' >&3
        wait_for "cpus-2" || exit 0
        printf '\001x' >&3
    ) &
    local typist=$!
    HYP_NO_BUILD=1 RUN_TIMEOUT="$LINUX_TIMEOUT" "$root/scripts/run.sh" --linux \
        --guest-args "quiet" <"$fifo" >"$log" 2>&1 || status=$?
    wait "$typist" 2>/dev/null
    rm -f "$fifo"
    [[ $status == 69 ]] || why="exit status $status, expected 69"
    for pattern in "typed-42" "cpus-2" "console: Ctrl-A x: ending the run" "vm0: ended from the console"; do
        grep -qF -- "$pattern" "$log" || why="${why:+$why; }missing output: $pattern"
    done
    verdict "$name" "$why" "$log"
}

# SYSTEM_RESET reboots the VM: with reset=2 a guest that reboots at once
# boots three times (userspace each time), and the third reset ends it (66).
linux_reboot_test() {
    local name="smoke: Linux reboot: SYSTEM_RESET reloads the VM, reset=2 allows two, then 66"
    local log status=0 why="" boots resets
    log="$(log_path "$name")"
    HYP_NO_BUILD=1 RUN_TIMEOUT="$LINUX_TIMEOUT" "$root/scripts/run.sh" --linux \
        --guest-args "hyp.init=reboot quiet" -append "log=info reset=2" </dev/null >"$log" 2>&1 || status=$?
    [[ $status == 66 ]] || why="exit status $status, expected 66"
    boots="$(grep -c "linux-guest: userspace up: nproc 2" "$log")"
    resets="$(grep -c "SYSTEM_RESET: rebooting the VM" "$log")"
    [[ $boots == 3 ]] || why="${why:+$why; }$boots boots to userspace, expected 3"
    [[ $resets == 2 ]] || why="${why:+$why; }$resets reboots, expected 2"
    grep -qF "SYSTEM_RESET: the VM ends (reset=: no reboot left)" "$log" ||
        why="${why:+$why; }missing output: the third reset ending the VM"
    verdict "$name" "$why" "$log"
}

linux_tests() {
    local n fetch_log="$TEST_LOG_DIR/linux-fetch.log"
    if ! "$root/scripts/linux.sh" >"$fetch_log" 2>&1; then
        fail "smoke: Linux guest" "scripts/linux.sh could not fetch the kernel and busybox (log: $fetch_log)"
        tail -n 10 "$fetch_log" | sed 's/^/    | /'
        return
    fi
    for n in 1 2 4; do
        linux_boot_test "$n"
    done
    linux_console_test
    linux_reboot_test
    # rdinit=/nope: no init in the initramfs, no root device: the kernel
    # panics ("Unable to mount root fs"); with
    # panic=-1 (run.sh --linux's default) it asks for SYSTEM_RESET, which
    # reset=exit turns into the end of the run: non-zero, and the log says why.
    SMOKE_TIMEOUT="$LINUX_TIMEOUT" boot_test "Linux: a guest kernel panic ends the run with 66 and says why" 66 \
        "Kernel panic - not syncing: VFS: Unable to mount root fs" \
        "SYSTEM_RESET: the VM ends (reset=: no reboot left)" \
        "vm0: asked for a reset, which ends it" "NOT:linux-guest: userspace up" \
        -- --linux --guest-args "rdinit=/nope quiet" -append "log=info reset=exit"
}

# Several VMs (run.sh --vm): each on its own CPUs, ending on its own; the
# run's status is the most severe (hvcore::verdict). isolate (guests/src/
# bin/isolate.rs) plays the other side: fill/scan for isolation, progress
# for containment (its count must keep advancing beside the other VM),
# reset for a VM that reboots.
vm_tests() {
    local kernel initramfs progress="guest=isolate,cpus=2,mem=32M,args=role=progress ms=3000"
    boot_test "two VMs: smp on CPUs 0-1 and exit on CPU 2 end on their own, the run's status is 7" 7 \
        "[vm0/vcpu1] guest: smp: vcpu1 online" "[vm1/vcpu0] guest: exit: status 7" \
        "INFO  cpu2: vm1: powered off with status 7" "run: vm0 powered off with status 0" \
        "run: vm1 powered off with status 7" "vm0: stats: exits:" "vm1: stats: exits:" \
        -- --vm "guest=smp,cpus=0-1,mem=64M" --vm "guest=exit,cpus=2"

    boot_test "three VMs with different guests, RAM sizes and VMIDs" 0 \
        "vm0: stage 2: VMID 1" "vm1: stage 2: VMID 2" "vm2: stage 2: VMID 3" \
        "guest: smp: 2 vCPUs touched 32 MiB" "[vm1/vcpu0] guest: hello: 1 vCPUs, 32 MiB RAM" \
        "[vm2/vcpu0] guest: touch: touched 16 MiB" "run: vm2 powered off with status 0" \
        -- --vm "guest=smp,cpus=0-1,mem=64M" --vm "guest=hello,cpus=2,mem=32M" \
        --vm "guest=touch,cpus=3,mem=48M,args=touch=16"

    boot_test "isolation: one VM's secrets fill its RAM, the other reads all its RAM and 8 GiB of IPA space, finds none" 0 \
        "guest: isolate: fill: 60 MiB of secrets" "guest: isolate: scan: 64 MiB of its RAM read, no secret" \
        "probes of IPA space outside its memory up to 8 GiB, all aborted, no secret" \
        "guest: isolate: fill: secrets held 4000 ms, intact" "NOT:guest: FAIL" \
        -- --vm "guest=isolate,cpus=0,mem=64M,args=role=fill hold_ms=4000" \
        --vm "guest=isolate,cpus=1,mem=64M,args=role=scan wait_ms=1000"

    boot_test "containment: a VM that spends its stage-2 budget is stopped (65), the other keeps counting" 65 \
        "vm0/vcpu0: cannot serve" "(its stage-2 table budget is spent): stopping the VM" \
        "run: vm0 stopped by the hypervisor: its stage-2 table budget is spent" \
        "[vm1/vcpu0] guest: isolate: progress:" "never stalled" "run: vm1 powered off with status 0" \
        -- --vm "guest=touch,cpus=0-1,mem=64M,block=4K,budget=16,args=touch=32" \
        --vm "$progress"

    boot_test "containment: an SGI storm in one VM, the other keeps counting" 0 \
        "guest: storm: every worker progressed under the storm ok" "[vm1/vcpu0] guest: isolate: progress:" \
        "never stalled" "NOT:guest: FAIL" -- --vm "guest=storm,cpus=0-1,mem=64M" --vm "$progress"

    boot_test "containment: thousands of refused accesses in one VM, the other keeps counting" 0 \
        "all aborted, no secret" "[vm1/vcpu0] guest: isolate: progress:" "never stalled" "NOT:guest: FAIL" \
        -- --vm "guest=isolate,cpus=0-1,mem=64M,args=role=scan wait_ms=0" --vm "$progress"

    boot_test "containment: one VM reboots twice (reset=2), the other keeps counting" 66 \
        "SYSTEM_RESET: rebooting the VM" "run: vm0 asked for a reset" \
        "[vm1/vcpu0] guest: isolate: progress:" "never stalled" "run: vm1 powered off with status 0" \
        -- --vm "guest=isolate,cpus=0,mem=32M,args=role=reset" --vm "$progress" -append "log=info reset=2"

    boot_test "a live migration of one VM (migrate.vm=1) while the other keeps counting" 0 \
        "migrate: vm1: pre-copy of RAM" "migrate: the copy matches guest RAM byte for byte (32 MiB)" \
        "[vm1/vcpu0] guest: migrate: 3 vCPUs made" "every stripe and hot word checked" \
        "[vm0/vcpu0] guest: isolate: progress:" "never stalled" "NOT:FAIL" \
        -- --vm "guest=isolate,cpus=0,mem=32M,args=role=progress ms=6000 every_ms=1000" \
        --vm "guest=migrate,cpus=1-3,mem=32M,args=seconds=5 mib=8" -smp 5 \
        -append "log=info migrate=4 migrate.vm=1 migrate.converge=0"

    # Bad descriptions: refused before anything boots, each with its message.
    boot_test "VMs naming the same CPU are refused" 70 \
        "error: vm0 and vm1 both name CPU(s) 1: a CPU runs one VM's vCPU" "NOT:vm0: 2 vCPUs" \
        -- --vm "guest=hello,cpus=0-1" --vm "guest=hello,cpus=1-2"
    boot_test "a VM on a CPU that is not online is refused" 70 \
        "error: vm0: cpus= names CPU 3, but only 2 CPUs are online" -- --vm "guest=hello,cpus=3" -smp 2
    boot_test "VMs that need more memory than the machine has are refused" 70 \
        "error: no contiguous 2048 MiB for guest memory" "NOT:vm0: 1 vCPUs" -- --vm "guest=hello,cpus=0,mem=2G" -m 1G
    boot_test "a VM description with an unknown setting is refused by run.sh (64)" 64 \
        "unknown setting \`smp\`" -- --vm "guest=hello,cpus=0,smp=2"
    boot_test "a VM whose guest file does not exist is refused by run.sh (64)" 64 \
        "VM 1: guest /nonexistent" -- --vm "guest=hello,cpus=0" --vm "guest=/nonexistent,cpus=1"

    # Linux beside a test guest (after linux_tests fetched it).
    if mapfile -t linux_files < <("$root/scripts/linux.sh" 2>/dev/null) && [[ ${#linux_files[@]} == 2 ]]; then
        kernel="${linux_files[0]}" initramfs="${linux_files[1]}"
        SMOKE_TIMEOUT="$LINUX_TIMEOUT" boot_test "Linux on 2 vCPUs beside a test guest on 2 others" 0 \
            "[vm0/vcpu" "linux-guest: userspace up: nproc 2" "linux-guest: workload done on 2 CPUs" \
            "[vm1/vcpu0] guest: smp: 2 vCPUs touched 32 MiB" "run: vm0 powered off with status 0" \
            "run: vm1 powered off with status 0" "NOT:Oops" "NOT:Call trace" \
            -- --vm "guest=$kernel,initrd=$initramfs,cpus=0-1,mem=512M,args=console=ttyAMA0 panic=-1 quiet hyp.init=test" \
            --vm "guest=smp,cpus=2-3,mem=64M" -append "log=info reset=exit"
    else
        fail "smoke: Linux beside a test guest" "scripts/linux.sh could not fetch the kernel"
    fi
}

# scripts/bench.sh itself: both runs twice, identical counts, every row of
# its table present (values are not checked).
bench_script_test() {
    local name="smoke: scripts/bench.sh prints its table, two passes identical" log status=0 why=""
    local row
    log="$(log_path "$name")"
    HYP_NO_BUILD=1 BENCH_DIR="$TEST_LOG_DIR/bench" RUN_TIMEOUT="${SMOKE_TIMEOUT:-30}" \
        "$root/scripts/bench.sh" </dev/null >"$log" 2>&1 || status=$?
    [[ $status == 0 ]] || why="exit status $status, expected 0"
    for row in "| HVC round trip (null hypercall) | " "| lazy fault, 4K page | " \
        "| lazy fault, 2M block | " "| permission relax (exec from a data page), 4K page | " \
        "| access-flag fault, 2M block | " "| emulated console MMIO write (PL011 UARTDR) | " \
        "| faults per MiB touched, blocks enabled (default) | " "two passes: identical counts." \
        "report written to $TEST_LOG_DIR/bench/report.md"; do
        grep -qF -- "$row" "$log" || why="${why:+$why; }missing output: $row"
    done
    verdict "$name" "$why" "$log"
}

# lines_at_most NAME PATTERN MAX: the log of boot test NAME has at most MAX
# lines containing PATTERN (a fixed string): a guest cannot flood the log.
lines_at_most() {
    local name="smoke: $1: at most $3 lines with '$2'" log n
    log="$(log_path "smoke: $1")"
    n="$(grep -cF -- "$2" "$log")"
    if ((n <= $3)); then
        verdict "$name" "" "$log"
    else
        verdict "$name" "$n lines" "$log"
    fi
}

# no_control_bytes NAME: nothing in the log of boot test NAME that a
# terminal acts on (ESC, BEL, BS, DEL, C1 CSI), whatever the guest printed.
no_control_bytes() {
    local name="smoke: $1: no terminal control bytes in the log" log
    log="$(log_path "smoke: $1")"
    if LC_ALL=C grep -q $'[\x1b\x07\x08\x7f]\|\xc2\x9b' "$log"; then
        verdict "$name" "control bytes found" "$log"
    else
        verdict "$name" "" "$log"
    fi
}

# Hostile guests (guests/src/bin/hostile_*): each attacks one way and checks
# what it got back; the hypervisor must stay up, keep its log short and give
# the run the status the guest earned (docs/guest-abi.md, "Hostile guests").
hostile_tests() {
    local t
    t="hostile_log: 3000 refused accesses, each an abort, the log rate-limited"
    boot_test "$t" 0 \
        "guest: hostile_log: 3000 refused accesses, every one an abort" "aborts injected 3000" \
        "guest-triggered log lines suppressed (rate limit)" "run: every VM ended" \
        "NOT:guest: FAIL" -- --guest hostile_log
    lines_at_most "$t" "injecting an external abort" 25

    t="hostile_vector: bad CPU_ON entries refused, VBAR_EL1 in no slot stops the VM"
    boot_test "$t" 65 \
        "guest: hostile_vector: bad CPU_ON entry points refused with INVALID_ADDRESS" \
        "fetch, ipa 0x20000200 at pc 0x20000200, which is the exception vector the abort would enter (VBAR_EL1 0x20000000)" \
        "vm0: stopped by the hypervisor: an exception vector could not be fetched" "aborts injected 1," \
        "NOT:guest: FAIL" -- --guest hostile_vector
    lines_at_most "$t" "injecting an external abort" 1

    boot_test "hostile_vector: VBAR_EL1 at the UART (a device) stops the VM" 65 \
        "instruction fetch from a device: " "(VBAR_EL1 0x9000000)" \
        "vm0: stopped by the hypervisor: an exception vector could not be fetched" \
        "NOT:guest: FAIL" -- --guest hostile_vector --smp 1 --guest-args "vbar=0x9000000"

    t="hostile_cpuoff: CPU_ON/CPU_OFF storm, then every vCPU off ends the VM (67)"
    boot_test "$t" 67 \
        "guest: hostile_cpuoff: storm of 150 CPU_ON/CPU_OFF done" \
        "guest: hostile_cpuoff: relay done on vcpu" \
        "the last vCPU on called CPU_OFF: nothing can run the VM again, ending it" \
        "vm0: every vCPU turned itself off (CPU_OFF): none is left to run it" \
        "NOT:guest: FAIL" -- --guest hostile_cpuoff
    lines_at_most "$t" ": CPU_OFF" 25

    t="hostile_scan: the IPA space outside the slots, ISV=0 MMIO, a stage-1 table in no slot"
    boot_test "$t" 0 \
        "guest: hostile_scan: 1034 addresses in no slot, each load and store an abort" \
        "guest: hostile_scan: MMIO without a valid syndrome (ISV=0) refused" \
        "guest: hostile_scan: stage-1 walk from no slot: external abort on the walk, level 2" \
        "NOT:MMIO access with no valid syndrome (ISV=0): translation fault level 1, read, ipa 0x2000000" \
        "NOT:guest: FAIL" -- --guest hostile_scan
    lines_at_most "$t" "injecting an external abort" 25

    t="hostile_calls: bad hypercalls and PSCI arguments, a forged verdict, control characters"
    boot_test "$t" 5 \
        "guest: hostile_calls: 3828 unknown HVCs and SMCs answered NOT_SUPPORTED" \
        "guest: hostile_calls: PSCI calls with bad arguments answered INVALID_PARAMETERS" \
        "[vm0/vcpu0] run: verdict 0123456789abcdef: exit status 0" \
        "[vm0/vcpu0] run: verdict x: exit status 0" \
        "guest: hostile_calls: ctl[?[2J?]0;owned?|?|?|??31m|" \
        "vm0: powered off with status 5" "NOT:guest: FAIL" -- --guest hostile_calls
    no_control_bytes "$t"

    boot_test "hostile_regs: ID registers hide EL2/EL3/SVE/SME/MTE/PAuth, set/way keeps cached writes, the EL2 PMU counter out of reach" 0 \
        "guest: hostile_regs: EL2, EL3, SVE, SME, MTE, PAuth, VHE, SPE hidden; PARange <= 40 bits" \
        "guest: hostile_regs: 3000 set/way operations, every cached write kept" \
        "guest: hostile_regs: PMU: 5 counters, EL2's counter undefined, NSH ignored" \
        "NOT:guest: FAIL" -- --guest hostile_regs
}

smoke_tests() {
    boot_test "4 CPUs online at EL2, exit 0" 0 \
        "cpu 0 online at EL2 (mpidr 0x0)" "cpu 1 online at EL2 (mpidr 0x1)" \
        "cpu 2 online at EL2 (mpidr 0x2)" "cpu 3 online at EL2 (mpidr 0x3)" \
        "all 4 CPUs online" "gic: v3, distributor" "psci: method smc" \
        "pmu: PMUv3 (PMUVer 1), 6 event counters: counter 5 reserved for EL2 (MDCR_EL2.HPMN 5)" \
        "uart: pl011 at 0x9000000" "no guest to run" "done: no guest ran" "run: verdict " "NOT:DEBUG" \
        -- --no-guest -smp 4

    boot_test "EL2 MMU on through walker-built tables, every CPU" 0 \
        "mmu: EL2 stage-1 tables built by the walker: root 0x" \
        "mmu: on for cpu 0 (text RX, rodata R, data RW, RAM RW-XN, devices nGnRE)" \
        "DEBUG cpu0: mmu: text" "r-x: 0 x 1G, 0 x 2M" "DEBUG cpu0: mmu: uart" "rw- dev" \
        "x 2M" "cpu 3 online at EL2" "all 4 CPUs online" -- -append "log=debug"

    boot_test "a write to hypervisor text is a permission fault (MMU enforces RX)" 70 \
        "EC:     Data Abort from the current EL (0x25)" \
        "ISS:    permission fault, level 3 (0x0f), write" -- -append "fault=write-text"

    boot_test "-smp 1" 0 \
        "cpu 0 online at EL2" "all 1 CPUs online" "NOT:cpu 1 online" -- -smp 1

    boot_test "-smp 10 caps at MAX_CPUS=8" 0 \
        "cpus: 2 more listed, ignored" "cpu 7 online at EL2 (mpidr 0x7)" \
        "all 8 CPUs online" -- -smp 10

    boot_test "-cpu max" 0 \
        "cpu 3 online at EL2" "all 4 CPUs online" -- -cpu max

    boot_test "log=debug shows debug lines" 0 \
        " DEBUG cpu0: heap: " " DEBUG cpu0: frames: " "all 4 CPUs online" -- -append "log=debug"

    boot_test "log=warn hides info lines" 0 \
        "NOT:INFO" "NOT:cpu 0 online" -- -append "log=warn"

    boot_test "bad log= value is a clear error" 70 \
        "error: bad boot argument \`log=loud\`: expected log=off|error|warn|info|debug|trace" \
        "NOT:online" -- -append "log=loud"

    local initrd="$TEST_LOG_DIR/initrd.bin"
    head -c 3145728 /dev/zero >"$initrd"
    boot_test "initrd is found and kept out of the frames" 0 \
        "initrd: [0x" "(3145728 bytes)" "mm: excluding initrd [0x" "all 4 CPUs online" \
        -- --no-guest -initrd "$initrd" -append "log=debug"

    # No device tree, no command line, no token: the verdict cannot count.
    boot_test "ELF without a device tree fails clearly" 71 \
        "error: no device tree: x0 was 0 at entry" "run: verdict -: exit status 70" \
        "run.sh: QEMU ended (status 0) with no verdict line" -- -kernel "$HYP_ELF"

    boot_test "entered at EL1 (virtualization=off) fails clearly" 71 \
        "error: entered at EL1, but the hypervisor must run at EL2" "run: verdict -: exit status 70" \
        -- -machine virt,virtualization=off

    boot_test "data abort at EL2: decoded dump, exit 70" 70 \
        "!!! FATAL on cpu 0: unexpected exception at EL2" \
        "vector: synchronous from current EL with SP_EL2" \
        "EC:     Data Abort from the current EL (0x25)" \
        "ISS:    translation fault, level 0 (0x04), read" \
        "FAR_EL2 0xfffffffffffffff0" "x0  0x" "x30 0x" "run: the hypervisor failed (exception at EL2)" \
        -- -append "fault=abort"

    boot_test "brk at EL2: decoded dump, exit 70" 70 \
        "EC:     BRK (AArch64) (0x3c)" "ISS:    brk #0x1" -- -append "fault=brk"

    boot_test "panic: message and location, exit 70" 70 \
        "!!! PANIC on cpu 0 at src/arch/exception.rs:" "deliberate panic (fault=panic)" \
        "run: the hypervisor failed (panic)" \
        -- -append "fault=panic"

    head -c 4194304 /dev/urandom >"$TEST_LOG_DIR/big.img"
    guest_tests
    irq_tests
    hostile_tests
    linux_tests
    vm_tests
    bench_script_test
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -uo pipefail
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    # shellcheck source=scripts/image.sh
    source "$root/scripts/image.sh"
    # shellcheck source=scripts/lib.sh
    source "$root/scripts/lib.sh"
    step "aarch64 build (image)" build_image
    smoke_tests
    summary
fi
