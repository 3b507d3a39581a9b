//! The few CPU registers, cache operations and interrupt masks the scenarios need.

use core::arch::asm;

pub use crate::dt::MAX_CPUS;
use crate::timer;

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

/// A spin-wait hint (`YIELD`, Linux's `cpu_relax`): lets another vCPU
/// sharing the hardware thread run. QEMU's single-threaded TCG (with
/// `-icount`) switches to the next vCPU on it, so a vCPU spinning for
/// another one's store or interrupt does not hold the others off for a
/// whole time slice.
pub fn relax() {
    // SAFETY: a hint, no effect on state.
    unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// Spins for `us` microseconds of the virtual counter.
pub fn delay_us(us: u64) {
    let end = timer::counter().saturating_add(timer::ticks_from_us(us));
    while timer::counter() < end {
        relax();
    }
}

/// Polls `done` until it returns true or `ms` milliseconds of the virtual
/// counter have passed; returns whether `done` held. Keeps every wait in the
/// scenarios bounded, so a vCPU that never answers is a FAIL, not a hang.
pub fn wait_until(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = timer::counter().saturating_add(timer::ticks_from_us(ms * 1000));
    loop {
        if done() {
            return true;
        }
        if timer::counter() >= end {
            return done();
        }
        relax();
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

/// Unmasks IRQs (`PSTATE.I` = 0): a pending one is taken from here on.
pub fn irq_unmask() {
    // SAFETY: changes only this vCPU's interrupt mask; the vectors are set
    // up at entry. Not `nomem`: memory accesses stay on their side, so what
    // a handler reads is written before it can run.
    unsafe { asm!("msr daifclr, #2", "isb", options(nostack, preserves_flags)) };
}

/// Masks IRQs (`PSTATE.I` = 1).
pub fn irq_mask() {
    // SAFETY: changes only this vCPU's interrupt mask (a compiler barrier
    // too, as for `irq_unmask`).
    unsafe { asm!("msr daifset, #2", options(nostack, preserves_flags)) };
}

/// Whether IRQs are masked (`DAIF.I`).
pub fn irqs_masked() -> bool {
    let daif: u64;
    // SAFETY: reading DAIF has no side effect.
    unsafe { asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack, preserves_flags)) };
    daif & (1 << 7) != 0
}

/// `WFI`: waits until an interrupt is pending for this vCPU (taken next if
/// IRQs are unmasked), or returns early (the architecture allows it).
pub fn wfi() {
    // SAFETY: waits; no memory effect of its own (not `nomem`, so memory
    // accesses are not moved across the wait).
    unsafe { asm!("dsb sy", "wfi", options(nostack, preserves_flags)) };
}

/// Unmasks IRQs, `WFI`, masks them again: an interrupt that wakes the WFI
/// is taken before this returns. Call with IRQs masked, after checking
/// what the interrupt would change: one already pending is taken at the
/// unmask, before the WFI, which then sleeps until the next one.
pub fn wfi_unmasked() {
    // SAFETY: as for `wfi` and `irq_unmask`: waits and changes this vCPU's
    // interrupt mask (left masked); not `nomem`, since a handler may run
    // in between.
    unsafe {
        asm!(
            "dsb sy",
            "msr daifclr, #2",
            "wfi",
            "msr daifset, #2",
            options(nostack, preserves_flags)
        )
    };
}

/// Whether an IRQ is pending at this vCPU (`ISR_EL1.I`), taken or not:
/// how a vCPU with IRQs masked sees what woke its `WFI`.
pub fn irq_pending() -> bool {
    let isr: u64;
    // SAFETY: reading ISR_EL1 has no side effect.
    unsafe { asm!("mrs {}, isr_el1", out(reg) isr, options(nomem, nostack, preserves_flags)) };
    isr & (1 << 7) != 0
}
