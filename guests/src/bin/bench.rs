//! `bench`: brackets hypervisor operations with the benchmark hypercalls (`bench=on`), so the hypervisor prints the EL2 instructions each costs; `block=4K` (with the hypervisor's `guest.block=4K`) for the page-sized faults.
//!
//! One vCPU (the brackets count exits VM-wide). Each bracket is
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

#![no_std]
#![no_main]

use core::arch::asm;

use guests::mem::{self, Ram, BLOCK, MIB, PAGE};
use guests::{check, cpu, fail, fault, println, psci, Platform};

guests::entry!(main);

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
}

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

/// A benchmark hypercall; returns `x0` as the SMCCC result.
fn call(fid: u32, a1: u64, a2: u64) -> i64 {
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
