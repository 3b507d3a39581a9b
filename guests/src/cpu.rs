//! The few CPU registers, timers and cache operations the scenarios need.

use core::arch::asm;

pub use crate::dt::MAX_CPUS;

/// `MPIDR_EL1`.
pub fn mpidr() -> u64 {
    let value: u64;
    // SAFETY: reading an ID register has no side effect.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// This vCPU's id: `MPIDR_EL1.Aff0`, which the ABI makes the vCPU number
/// (always below [`MAX_CPUS`]: the entry code parks any other).
pub fn id() -> usize {
    (mpidr() & 0xff) as usize
}

/// The exception level running now (`CurrentEL.EL`).
pub fn current_el() -> u64 {
    let value: u64;
    // SAFETY: reading CurrentEL has no side effect.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) value, options(nomem, nostack, preserves_flags)) };
    (value >> 2) & 3
}

/// The virtual counter (`CNTVCT_EL0`).
fn counter() -> u64 {
    let value: u64;
    // SAFETY: reading the counter has no side effect; the isb keeps the read
    // from being done early.
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// The counter frequency (`CNTFRQ_EL0`), in Hz.
fn counter_freq() -> u64 {
    let value: u64;
    // SAFETY: reading a register has no side effect.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Polls `done` until it returns true or `ms` milliseconds of the virtual
/// counter have passed; returns whether `done` held. Keeps every wait in the
/// scenarios bounded, so a vCPU that never answers is a FAIL, not a hang.
pub fn wait_until(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    // A counter frequency of 0 (firmware never set it) would make the wait
    // endless: assume QEMU's 62.5 MHz then.
    let freq = match counter_freq() {
        0 => 62_500_000,
        f => f,
    };
    let end = counter().saturating_add(freq / 1000 * ms);
    loop {
        if done() {
            return true;
        }
        if counter() >= end {
            return done();
        }
        core::hint::spin_loop();
    }
}

fn ctr() -> u64 {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effect.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    ctr
}

/// The smallest data cache line, in bytes (`CTR_EL0.DminLine`).
pub fn dcache_line() -> u64 {
    4 << ((ctr() >> 16) & 0xf)
}

/// Makes instructions written as data at `[addr, addr + len)` visible to
/// instruction fetch: clean the data cache to the point of unification,
/// invalidate the instruction cache, with the barriers in between.
pub fn sync_icache(addr: u64, len: u64) {
    let ctr = ctr();
    let dline = 4u64 << ((ctr >> 16) & 0xf);
    let iline = 4u64 << (ctr & 0xf);
    let end = addr + len;
    let mut line = addr & !(dline - 1);
    while line < end {
        // SAFETY: cleaning a data cache line writes back what the line holds
        // and changes no memory contents.
        unsafe { asm!("dc cvau, {}", in(reg) line, options(nostack, preserves_flags)) };
        line += dline;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
    let mut line = addr & !(iline - 1);
    while line < end {
        // SAFETY: invalidating instruction cache lines only drops cached copies.
        unsafe { asm!("ic ivau, {}", in(reg) line, options(nostack, preserves_flags)) };
        line += iline;
    }
    // SAFETY: barriers.
    unsafe { asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
}
