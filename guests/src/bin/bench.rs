//! `bench`: brackets hypervisor operations with the benchmark hypercalls (`bench=on`), so the hypervisor prints the EL2 instructions each costs; `block=4K` (with the hypervisor's `guest.block=4K`) for the page-sized faults, `irq=on` for interrupts.
//!
//! One vCPU (the brackets count exits VM-wide), two with `irq=on`. Each bracket is
//! `BENCH_START(id)`, `ops` operations that each exit once, `BENCH_STOP(id,
//! ops)`; an empty one first calibrates the bracket's own cost. What runs at
//! EL1 between exits is not counted, but nothing else may exit inside a
//! bracket: every code path a bracket runs is run once beforehand on memory
//! that is already mapped (with 4 KiB mappings, this image's own code pages
//! fault in one by one), and the hypervisor prints the exits it saw so
//! `scripts/bench.sh` can check there is exactly one per operation.
//!
//! Default (`block=2M`): null hypercalls, console MMIO writes, then 2 MiB
//! block faults, relaxes to X and access-flag faults on 16 fresh blocks,
//! and 16 MiB touched with blocks. `block=4K`: the same three faults on the
//! 512 pages of one fresh 2 MiB region, and 16 MiB touched with pages.
//!
//! `irq=on`: the interrupt brackets instead, [`IRQ_OPS`] operations each,
//! on vCPU 0 and vCPU 1 (the first two in the device tree; the others stay
//! off; with one vCPU the two SGI brackets are skipped), MMU off as above:
//!
//! - `sgi-send` (vCPU 0's bracket): SGIs to vCPU 1, each sent once vCPU 1
//!   counted the previous one (vCPU 0 spins on that count in memory);
//! - `ipi-receive` (vCPU 1's bracket, opened before vCPU 0 sends and closed
//!   once it counted them all): the same SGIs, taken with IRQs unmasked
//!   while vCPU 1 spins in the guest; vCPU 1 then powers off, and vCPU 0
//!   waits until `AFFINITY_INFO` says so before its next bracket;
//! - `vtimer`: the virtual timer armed [`VTIMER_AHEAD_US`] ahead, its
//!   interrupt awaited in a spin loop with IRQs unmasked (the handler stops
//!   the timer), re-armed;
//! - `gicd-read`: reads of `GICD_TYPER`;
//! - `wfi`: the virtual timer armed [`WFI_AHEAD_US`] ahead, then `WFI` with
//!   IRQs masked until it is pending (`ISR_EL1.I`), then unmasked to take
//!   it; the operations reported are the WFIs executed (more than one per
//!   wakeup only if one returned early, which is printed).
//!
//! Each vCPU warms every path first (an SGI received, a timer interrupt and
//! a WFI taken, a `GICD_TYPER` read, every page of its stack touched) and
//! opens its own calibration bracket. `stub=on` (only with `irq=on`) makes
//! no benchmark hypercall, so the mode's logic runs on bare QEMU.

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use guests::mem::{self, Ram, BLOCK, MIB, PAGE};
use guests::timer::{self, Timer};
use guests::{check, cpu, fail, fault, gic, irq, println, psci, Platform};

guests::entry!(main, secondary_main);

/// `BENCH_NULL`.
const NULL: u32 = 0xc600_0000;
/// `BENCH_START(id)`.
const START: u32 = 0xc600_0001;
/// `BENCH_STOP(id, ops)`.
const STOP: u32 = 0xc600_0002;
/// `BENCH_AGE(ipa, size)`.
const AGE: u32 = 0xc600_0003;
/// `BENCH_DIRTY_LOG(op)`: 0 on, 1 get-and-clear (metered), 2 off.
const DIRTY_LOG: u32 = 0xc600_0004;
/// Pages written with dirty logging on before the metered get-and-clear.
const DIRTY_PAGES: u64 = 1024;

/// Bracket ids (`docs/guest-abi.md`).
mod id {
    pub const CALIBRATE: u64 = 0;
    pub const HVC: u64 = 1;
    pub const FAULT_4K: u64 = 2;
    pub const FAULT_2M: u64 = 3;
    pub const RELAX_4K: u64 = 4;
    pub const RELAX_2M: u64 = 5;
    pub const ACCESS_FLAG_4K: u64 = 6;
    pub const ACCESS_FLAG_2M: u64 = 7;
    pub const MMIO_WRITE: u64 = 8;
    pub const TOUCH_4K: u64 = 9;
    pub const TOUCH_BLOCKS: u64 = 10;
    pub const SGI_SEND: u64 = 11;
    pub const IPI_RECEIVE: u64 = 12;
    pub const VTIMER: u64 = 13;
    pub const GICD_READ: u64 = 14;
    pub const WFI: u64 = 15;
}

/// Operations per interrupt bracket.
const IRQ_OPS: u64 = 100;
/// How far ahead the `vtimer` bracket arms the virtual timer.
const VTIMER_AHEAD_US: u64 = 50;
/// How far ahead the `wfi` bracket arms it: the WFI comes well before.
const WFI_AHEAD_US: u64 = 200;
/// The SGI vCPU 0 sends vCPU 1.
const BENCH_SGI: u32 = 1;
/// The `CPU_ON` context id of vCPU 1.
const CONTEXT: u64 = 0x4245_0000;
const WAIT_MS: u64 = 15_000;

/// `stub=on`: benchmark hypercalls are not made (each "returns" 0).
static STUB: AtomicBool = AtomicBool::new(false);
/// vCPU 1's progress, written by vCPU 1 only: 1 online, 2 warmed and
/// calibrated, 3 bracket open, 4 bracket closed.
static RECEIVER: AtomicU64 = AtomicU64::new(0);
/// SGIs vCPU 1 took (written by vCPU 1 only).
static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Virtual timer interrupts vCPU 0 took (written by vCPU 0 only).
static FIRED: AtomicU64 = AtomicU64::new(0);
static VTIMER_INTID: AtomicU64 = AtomicU64::new(0);

/// Null hypercalls in the `hvc` bracket.
const HVCS: u64 = 1000;
/// Blocks (2 MiB mode) faulted, relaxed and aged.
const BLOCKS: u64 = 16;
/// MiB touched for the faults-per-MiB rows.
const TOUCH_MIB: u64 = 16;

/// The line the `mmio-write` bracket writes, one `UARTDR` write per byte;
/// its newline is written after the bracket.
const MMIO_LINE: &[u8] =
    b"guest: bench: console MMIO: one UARTDR write per byte of this line, none of them ending it";

/// A benchmark hypercall; returns `x0` as the SMCCC result (0 without
/// making it, with `stub=on`).
fn call(fid: u32, a1: u64, a2: u64) -> i64 {
    if STUB.load(Ordering::Relaxed) {
        return 0;
    }
    // SAFETY: the benchmark calls change no guest memory (BENCH_AGE only
    // clears stage-2 access flags, which the guest cannot see).
    unsafe { psci::hvc(fid, a1, a2, 0) as i64 }
}

/// Runs `op(base, count, stride)` inside bracket `id`, telling the
/// hypervisor it made `ops` operations.
#[inline(never)]
fn measured(id: u64, ops: u64, op: fn(u64, u64, u64), base: u64, count: u64, stride: u64) {
    let got = call(START, id, 0);
    if got != 0 {
        fail!("bench: BENCH_START({id}) returned {got}");
    }
    op(base, count, stride);
    let got = call(STOP, id, ops);
    if got != 0 {
        fail!("bench: BENCH_STOP({id}, {ops}) returned {got}");
    }
}

/// No operation: the calibration bracket's.
#[inline(never)]
fn nothing(_: u64, _: u64, _: u64) {}

/// `count` null hypercalls.
#[inline(never)]
fn null_calls(_: u64, count: u64, _: u64) {
    for _ in 0..count {
        call(NULL, 0, 0);
    }
}

/// Writes one word at `base + i * stride` for `i` in `0..count`.
#[inline(never)]
fn write_each(base: u64, count: u64, stride: u64) {
    for i in 0..count {
        let addr = base + i * stride;
        // SAFETY: the callers pass claimed RAM (see `main`), 8-byte
        // aligned, which nothing else uses.
        unsafe { asm!("str {0}, [{0}]", in(reg) addr, options(nostack, preserves_flags)) };
    }
}

/// Reads one word at `base + i * stride` for `i` in `0..count`.
#[inline(never)]
fn read_each(base: u64, count: u64, stride: u64) {
    for i in 0..count {
        let addr = base + i * stride;
        // SAFETY: as for `write_each`; a load has no other effect.
        unsafe {
            asm!("ldr {0}, [{0}]", inout(reg) addr => _, options(nostack, preserves_flags, readonly))
        };
    }
}

/// Calls the function at `base + i * stride` for `i` in `0..count`.
#[inline(never)]
fn call_each(base: u64, count: u64, stride: u64) {
    for i in 0..count {
        // SAFETY: the callers wrote `ret` at each address and made it
        // visible to instruction fetch.
        unsafe { fault::probe_call(base + i * stride) };
    }
}

/// Writes the `count` bytes at `base` to the UART data register at `stride`
/// (the arguments fit `measured`'s operation shape), with no flag polling:
/// every byte is one MMIO write, one exit.
#[inline(never)]
fn uart_write(base: u64, count: u64, uartdr: u64) {
    for i in 0..count {
        // SAFETY: `base..base + count` is a byte string in this image.
        let byte = unsafe { *((base + i) as *const u8) };
        // SAFETY: `uartdr` is the PL011's data register: a write sends a byte.
        unsafe {
            asm!("str {0:w}, [{1}]", in(reg) u32::from(byte), in(reg) uartdr, options(nostack, preserves_flags))
        };
    }
}

/// `ret; nop`, as one little-endian u64.
const RET_NOP: u64 = (0xd503_201f << 32) | 0xd65f_03c0;

/// Writes `ret` at `base + i * stride` for `i` in `0..count` and makes it
/// fetchable (the pages are mapped for data, not yet executable).
fn plant_ret(ram: &Ram, offset: u64, count: u64, stride: u64) {
    for i in 0..count {
        ram.write(offset + i * stride, RET_NOP);
        cpu::sync_icache(ram.addr(offset + i * stride), 8);
    }
}

/// Checks that a bad call is refused with `want`.
fn refused(what: &str, got: i64, want: i64) {
    check!(got == want, "bench: {what} returned {got}, expected {want}");
}

fn main(p: &Platform) {
    match p.arg("irq") {
        None | Some("off") => {}
        Some("on") => return irq_main(p),
        Some(other) => fail!("bench: bad bootarg irq={other}: expected irq=on or irq=off"),
    }
    check!(
        p.arg("stub").is_none(),
        "bench: stub= only goes with irq=on"
    );
    let pages = match p.arg("block") {
        None | Some("2M") => false,
        Some("4K") => true,
        Some(other) => fail!("bench: bad bootarg block={other}: expected block=2M or block=4K"),
    };
    check!(
        p.cpus().len() == 1,
        "bench: {} vCPUs: the brackets count exits VM-wide, run one (--smp 1)",
        p.cpus().len()
    );
    let got = call(NULL, 0, 0);
    if got != 0 {
        fail!("bench: BENCH_NULL returned {got}: boot the hypervisor with bench=on");
    }

    // A guest may pass anything: bad calls are refused, nothing breaks.
    refused(
        "BENCH_START(99)",
        call(START, 99, 0),
        psci::INVALID_PARAMETERS,
    );
    refused(
        "BENCH_STOP with no bracket open",
        call(STOP, id::HVC, 1),
        psci::INVALID_PARAMETERS,
    );
    refused(
        "BENCH_AGE(0x1000) outside RAM",
        call(AGE, 0x1000, PAGE),
        psci::INVALID_PARAMETERS,
    );
    refused(
        "BENCH_AGE(ROM)",
        call(AGE, 0x0400_0000, PAGE),
        psci::INVALID_PARAMETERS,
    );
    refused(
        "BENCH_AGE(unaligned)",
        call(AGE, p.ram.base + 8, PAGE),
        psci::INVALID_PARAMETERS,
    );
    refused(
        "BENCH_AGE(size 0)",
        call(AGE, p.ram.base, 0),
        psci::INVALID_PARAMETERS,
    );
    refused(
        "BENCH_AGE(past RAM)",
        call(AGE, p.ram.base, p.ram.size + PAGE),
        psci::INVALID_PARAMETERS,
    );
    refused(
        "function 0xc60000ff",
        call(0xc600_00ff, 0, 0),
        psci::NOT_SUPPORTED,
    );
    println!("guest: bench: bad calls refused ok");

    // Fresh RAM: the measured region, the touched region, and one block to
    // run every operation once before measuring (see the module doc).
    let region = if pages { BLOCK } else { BLOCKS * BLOCK };
    let touch = region;
    let warm = touch + TOUCH_MIB * MIB;
    let Some(ram) = mem::claim(p, warm + BLOCK) else {
        fail!("bench: {} MiB of free RAM needed", (warm + BLOCK) / MIB);
    };
    let (stride, count) = if pages {
        (PAGE, region / PAGE)
    } else {
        (BLOCK, BLOCKS)
    };

    // Warm up: every code path below, once, on the warm block.
    let w = ram.addr(warm);
    write_each(w, 1, PAGE);
    read_each(w, 1, PAGE);
    plant_ret(&ram, warm, 1, PAGE);
    call_each(w, 1, PAGE);
    uart_write(b"guest: bench: warm\n".as_ptr() as u64, 19, p.uart);
    let sum: u32 = MMIO_LINE.iter().map(|&b| u32::from(b)).sum();
    core::hint::black_box(sum);
    null_calls(0, 1, 0);

    measured(id::CALIBRATE, 0, nothing, 0, 0, 0);
    if !pages {
        measured(id::HVC, HVCS, null_calls, 0, HVCS, 0);
        let line = MMIO_LINE.as_ptr() as u64;
        let len = MMIO_LINE.len() as u64;
        measured(id::MMIO_WRITE, len, uart_write, line, len, p.uart);
        uart_write(b"\n".as_ptr() as u64, 1, p.uart);
    }
    let [fault, relax, aged, touched] = if pages {
        [id::FAULT_4K, id::RELAX_4K, id::ACCESS_FLAG_4K, id::TOUCH_4K]
    } else {
        [
            id::FAULT_2M,
            id::RELAX_2M,
            id::ACCESS_FLAG_2M,
            id::TOUCH_BLOCKS,
        ]
    };
    let base = ram.addr(0);
    measured(fault, count, write_each, base, count, stride);
    plant_ret(&ram, 0, count, stride);
    measured(relax, count, call_each, base, count, stride);
    let got = call(AGE, base, region);
    check!(
        got == 0,
        "bench: BENCH_AGE({base:#x}, {region:#x}) returned {got}"
    );
    measured(aged, count, read_each, base, count, stride);
    let t = ram.addr(touch);
    measured(
        touched,
        TOUCH_MIB,
        write_each,
        t,
        TOUCH_MIB * MIB / PAGE,
        PAGE,
    );
    if !pages {
        // Dirty logging of RAM on (blocks split, pages write-protected), one
        // write fault per page that marks it, then one get-and-clear that
        // the hypervisor meters itself (no bracket) as `dirty-log`. It also
        // takes the pages this guest's own stack dirtied meanwhile.
        let got = call(DIRTY_LOG, 0, 0);
        check!(got == 0, "bench: BENCH_DIRTY_LOG(on) returned {got}");
        write_each(t, DIRTY_PAGES, PAGE);
        let got = call(DIRTY_LOG, 1, 0);
        check!(
            got >= DIRTY_PAGES as i64,
            "bench: BENCH_DIRTY_LOG(get-and-clear) took {got} pages, expected at least {DIRTY_PAGES}"
        );
        let again = call(DIRTY_LOG, 1, 0);
        check!(
            (0..16).contains(&again),
            "bench: a second get-and-clear took {again} pages: the first did not clear"
        );
        let got = call(DIRTY_LOG, 2, 0);
        check!(got == 0, "bench: BENCH_DIRTY_LOG(off) returned {got}");
        refused(
            "BENCH_DIRTY_LOG(get-and-clear) with logging off",
            call(DIRTY_LOG, 1, 0),
            psci::DENIED,
        );
        refused(
            "BENCH_DIRTY_LOG(7)",
            call(DIRTY_LOG, 7, 0),
            psci::INVALID_PARAMETERS,
        );
    }
    println!(
        "guest: bench: done ({} faults per bracket on {} KiB {})",
        count,
        stride / 1024,
        if pages { "pages" } else { "blocks" }
    );
}

/// Runs `op(a, b, c)` inside bracket `id`; `op` returns how many
/// operations it made, which `BENCH_STOP` reports.
#[inline(never)]
fn measured_irq(id: u64, op: fn(u64, u64, u64) -> u64, a: u64, b: u64, c: u64) -> u64 {
    let got = call(START, id, 0);
    if got != 0 {
        fail!("bench: vcpu{}: BENCH_START({id}) returned {got}", cpu::id());
    }
    let ops = op(a, b, c);
    let got = call(STOP, id, ops);
    if got != 0 {
        fail!(
            "bench: vcpu{}: BENCH_STOP({id}, {ops}) returned {got}",
            cpu::id()
        );
    }
    ops
}

/// No operation: the calibration bracket's.
#[inline(never)]
fn no_ops(_: u64, _: u64, _: u64) -> u64 {
    0
}

/// Sends `count` SGIs to the vCPU `mpidr`, each once the previous one was
/// counted there (`RECEIVED` starts at `base`).
#[inline(never)]
fn sgi_sends(base: u64, count: u64, mpidr: u64) -> u64 {
    for i in 0..count {
        gic::send_sgi(BENCH_SGI, mpidr);
        while RECEIVED.load(Ordering::Acquire) < base + i + 1 {
            cpu::relax();
        }
    }
    count
}

/// Spins with IRQs unmasked until `RECEIVED` reaches `until`; returns how
/// many SGIs that was from `base`.
#[inline(never)]
fn ipi_receives(base: u64, until: u64, _: u64) -> u64 {
    cpu::irq_unmask();
    while RECEIVED.load(Ordering::Acquire) < until {
        cpu::relax();
    }
    cpu::irq_mask();
    until - base
}

/// `count` virtual timer interrupts, each armed `ahead` ticks ahead and
/// awaited in a spin loop with IRQs unmasked.
#[inline(never)]
fn vtimer_irqs(_: u64, count: u64, ahead: u64) -> u64 {
    let base = FIRED.load(Ordering::Relaxed);
    cpu::irq_unmask();
    for i in 0..count {
        Timer::Virtual.arm_at(timer::counter() + ahead);
        while FIRED.load(Ordering::Relaxed) < base + i + 1 {
            cpu::relax();
        }
    }
    cpu::irq_mask();
    count
}

/// `count` reads of `GICD_TYPER`.
#[inline(never)]
fn gicd_reads(_: u64, count: u64, _: u64) -> u64 {
    for _ in 0..count {
        core::hint::black_box(gic::distributor_typer());
    }
    count
}

/// `count` wakeups from `WFI` by the virtual timer, each armed `ahead`
/// ticks ahead; returns the WFIs executed.
#[inline(never)]
fn timer_wfis(_: u64, count: u64, ahead: u64) -> u64 {
    let base = FIRED.load(Ordering::Relaxed);
    let mut wfis = 0;
    for i in 0..count {
        Timer::Virtual.arm_at(timer::counter() + ahead);
        loop {
            cpu::wfi();
            wfis += 1;
            if cpu::irq_pending() {
                break;
            }
        }
        cpu::irq_unmask();
        while FIRED.load(Ordering::Relaxed) < base + i + 1 {
            cpu::relax();
        }
        cpu::irq_mask();
    }
    wfis
}

fn irq_handler(intid: u32) {
    if intid == BENCH_SGI && cpu::id() != 0 {
        RECEIVED.store(RECEIVED.load(Ordering::Relaxed) + 1, Ordering::Release);
    } else if u64::from(intid) == VTIMER_INTID.load(Ordering::Relaxed) {
        Timer::Virtual.stop();
        FIRED.store(FIRED.load(Ordering::Relaxed) + 1, Ordering::Release);
    } else {
        fail!("bench: vcpu{}: unexpected interrupt {intid}", cpu::id());
    }
}

/// Reads a word of every page of this vCPU's stack, so no bracket takes a
/// stage-2 fault on it (an interrupt may push a frame deeper than the
/// code before it ever went).
fn touch_stack() {
    let stack = guests::start::stack(cpu::id());
    for page in (stack.base..stack.end()).step_by(PAGE as usize) {
        // SAFETY: a read of this vCPU's own stack, in RAM; an `ldr` from
        // asm, so the compiler neither keeps nor assumes anything.
        unsafe {
            asm!("ldr {0}, [{0}]", inout(reg) page => _, options(nostack, preserves_flags, readonly))
        };
    }
}

/// Waits (bounded) until vCPU 1 reaches `state`.
fn wait_receiver(state: u64) {
    if !cpu::wait_until(WAIT_MS, || RECEIVER.load(Ordering::Acquire) >= state) {
        fail!(
            "bench: vCPU 1 stuck at state {}, expected {state}",
            RECEIVER.load(Ordering::Acquire)
        );
    }
}

/// `irq=on` on vCPU 0 (see the module doc).
fn irq_main(p: &Platform) {
    match p.arg("stub") {
        None | Some("off") => {}
        Some("on") => STUB.store(true, Ordering::Relaxed),
        Some(other) => fail!("bench: bad bootarg stub={other}: expected stub=on or stub=off"),
    }
    check!(
        p.arg("block").is_none(),
        "bench: irq=on runs only the interrupt brackets: leave out block="
    );
    let stub = STUB.load(Ordering::Relaxed);
    let got = call(NULL, 0, 0);
    if got != 0 {
        fail!("bench: BENCH_NULL returned {got}: boot the hypervisor with bench=on (or stub=on on bare QEMU)");
    }
    gic::init(p);
    let vtimer = Timer::Virtual.intid(p);
    VTIMER_INTID.store(u64::from(vtimer), Ordering::Relaxed);
    irq::set_handler(irq_handler);
    gic::enable(vtimer);
    let receiver = p.cpus().get(1).copied();
    println!(
        "guest: bench: irq=on{}: {} ops per bracket on vcpu0{}",
        if stub {
            ", stub=on (no benchmark hypercall)"
        } else {
            ""
        },
        IRQ_OPS,
        match receiver {
            Some(_) => " and vcpu1",
            None => " (one vCPU: sgi-send and ipi-receive skipped)",
        }
    );

    // Warm up: every path once, outside any bracket.
    touch_stack();
    let vtimer_ahead = timer::ticks_from_us(VTIMER_AHEAD_US);
    let wfi_ahead = timer::ticks_from_us(WFI_AHEAD_US);
    vtimer_irqs(0, 1, vtimer_ahead);
    gicd_reads(0, 1, 0);
    timer_wfis(0, 1, wfi_ahead);
    measured_irq(id::CALIBRATE, no_ops, 0, 0, 0);

    if let Some(mpidr) = receiver {
        let ret = psci::start_secondary(mpidr, CONTEXT);
        check!(ret == 0, "bench: CPU_ON({mpidr:#x}) returned {ret}");
        wait_receiver(1);
        sgi_sends(0, 1, mpidr);
        wait_receiver(3);
        let sent = measured_irq(id::SGI_SEND, sgi_sends, 1, IRQ_OPS, mpidr);
        wait_receiver(4);
        let off = || psci::affinity_info(mpidr) == psci::AFFINITY_OFF;
        check!(
            cpu::wait_until(WAIT_MS, off),
            "bench: vCPU 1 not off after its CPU_OFF"
        );
        println!(
            "guest: bench: sgi-send {sent} SGIs, ipi-receive {} taken by vcpu1",
            RECEIVED.load(Ordering::Acquire) - 1
        );
    }
    measured_irq(id::VTIMER, vtimer_irqs, 0, IRQ_OPS, vtimer_ahead);
    measured_irq(id::GICD_READ, gicd_reads, 0, IRQ_OPS, 0);
    let wfis = measured_irq(id::WFI, timer_wfis, 0, IRQ_OPS, wfi_ahead);
    if wfis != IRQ_OPS {
        println!(
            "guest: bench: wfi: {wfis} WFIs for {IRQ_OPS} timer wakeups (some returned early)"
        );
    }
    println!(
        "guest: bench: irq done ({} brackets of {IRQ_OPS} ops)",
        if receiver.is_some() { 5 } else { 3 }
    );
}

/// vCPU 1 in `irq=on`: warms up, calibrates, then brackets the SGIs it
/// takes from vCPU 0, and powers off.
fn secondary_main(context: u64) -> ! {
    check!(
        context == CONTEXT,
        "bench: vcpu{} started with context {context:#x}",
        cpu::id()
    );
    gic::init_cpu();
    touch_stack();
    RECEIVED.store(0, Ordering::Relaxed);
    RECEIVER.store(1, Ordering::Release);
    ipi_receives(0, 1, 0);
    measured_irq(id::CALIBRATE, no_ops, 0, 0, 0);
    RECEIVER.store(2, Ordering::Release);
    let got = call(START, id::IPI_RECEIVE, 0);
    if got != 0 {
        fail!(
            "bench: vcpu{}: BENCH_START({}) returned {got}",
            cpu::id(),
            id::IPI_RECEIVE
        );
    }
    RECEIVER.store(3, Ordering::Release);
    let ops = ipi_receives(1, 1 + IRQ_OPS, 0);
    let got = call(STOP, id::IPI_RECEIVE, ops);
    if got != 0 {
        fail!(
            "bench: vcpu{}: BENCH_STOP({}, {ops}) returned {got}",
            cpu::id(),
            id::IPI_RECEIVE
        );
    }
    RECEIVER.store(4, Ordering::Release);
    let ret = psci::cpu_off();
    fail!("bench: vcpu{}: CPU_OFF returned {ret}", cpu::id())
}
