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
