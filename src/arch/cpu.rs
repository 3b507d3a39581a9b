//! Waiting and signalling between CPUs, and the system counter: `wfe`/`wfi`/`sev` with the barriers their callers need, and time since reset.

use aarch64_cpu::asm::{self, barrier};
use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};

/// Waits for an event (`wfe`): a `sev` from another CPU, an interrupt, or
/// spuriously. Callers loop on their condition.
pub fn wait_for_event() {
    asm::wfe();
}

/// Wakes every CPU waiting in [`wait_for_event`], after making this CPU's
/// earlier stores visible to them (`dsb ish`: a store-release does not
/// order a later `sev`).
pub fn wake_all() {
    barrier::dsb(barrier::ISH);
    asm::sev();
}

/// One turn of a loop that waits for another CPU: `yield`, a hint that
/// costs nothing on a CPU of its own, and under QEMU's `-icount` (all
/// CPUs on one thread, switched every 100 ms of virtual time otherwise)
/// hands the thread to the CPU being waited for. (`spin_loop` is an `isb`
/// on aarch64, which QEMU does not take as a hint.)
pub fn relax() {
    // SAFETY: `yield` is a hint with no architectural effect.
    unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// Waits for an interrupt (`wfi`): returns when one is pending at this
/// CPU's interface, masked or not, or spuriously.
pub fn wait_for_interrupt() {
    barrier::dsb(barrier::SY);
    asm::wfi();
}

/// The system counter (`CNTPCT_EL0`).
pub fn counter() -> u64 {
    barrier::isb(barrier::SY);
    CNTPCT_EL0.get()
}

/// The counter's frequency in Hz (at least 1).
pub fn counter_hz() -> u64 {
    CNTFRQ_EL0.get().max(1)
}

/// Milliseconds since the counter started (at reset, under QEMU).
pub fn now_ms() -> u64 {
    counter() / (counter_hz() / 1000).max(1)
}

/// Time since the counter started, as (seconds, microseconds).
pub fn uptime() -> (u64, u64) {
    let (ticks, freq) = (counter(), counter_hz());
    (ticks / freq, (ticks % freq) * 1_000_000 / freq)
}

/// A random number from the CPU's `RNDR` (FEAT_RNG), if it has one and it
/// delivered (`None` also when the hardware reports a failure).
pub fn random() -> Option<u64> {
    use aarch64_cpu::registers::ID_AA64ISAR0_EL1;
    if ID_AA64ISAR0_EL1.get() >> 60 == 0 {
        return None;
    }
    let (value, failed): (u64, u64);
    // SAFETY: `RNDR` (s3_3_c2_c4_0) exists (ID_AA64ISAR0_EL1.RNDR, checked
    // above); reading it only returns a number and sets NZCV.
    unsafe {
        core::arch::asm!(
            "mrs {v}, s3_3_c2_c4_0",
            "cset {f}, eq",
            v = out(reg) value,
            f = out(reg) failed,
            options(nomem, nostack)
        );
    }
    (failed == 0).then_some(value)
}

/// The ID register fields that decide the guests' Spectre workarounds
/// (`hvcore::smccc::CpuFacts`): `ID_AA64PFR0_EL1.CSV2`, whether
/// `ID_AA64PFR1_EL1.SSBS` and `ID_AA64MMFR1_EL1.ECBHB` are present.
pub fn spectre_facts() -> (u8, bool, bool) {
    let (pfr0, pfr1, mmfr1): (u64, u64, u64);
    // SAFETY: reading ID registers has no effect (they exist on every
    // ARMv8.0 CPU; unallocated fields read 0).
    unsafe {
        core::arch::asm!(
            "mrs {a}, s3_0_c0_c4_0",
            "mrs {b}, s3_0_c0_c4_1",
            "mrs {c}, s3_0_c0_c7_1",
            a = out(reg) pfr0,
            b = out(reg) pfr1,
            c = out(reg) mmfr1,
            options(nomem, nostack, preserves_flags)
        );
    }
    (
        ((pfr0 >> 56) & 0xf) as u8,
        (pfr1 >> 4) & 0xf != 0,
        (mmfr1 >> 60) & 0xf != 0,
    )
}
