//! IRQ dispatch: the EL1 IRQ vector acknowledges the interrupt (`ICC_IAR1_EL1`), runs the handler the scenario registered, and ends it (`ICC_EOIR1_EL1`, EOImode 0); nesting on request.
//!
//! The vector code (`fault.rs`) saves the interrupted registers, `ELR_EL1`
//! and `SPSR_EL1` in a frame on the vCPU's stack and calls `handle`,
//! which takes one interrupt per entry: a spurious acknowledge (INTID 1020
//! and above) is counted and left, anything else goes to the handler with
//! its INTID. A vCPU takes IRQs only once it unmasks them
//! ([`cpu::irq_unmask`]); with no handler registered an IRQ fails the run.
//!
//! Nesting ([`set_nesting`], per vCPU): the handler runs with IRQs unmasked, so an
//! interrupt of higher priority than the running one (`ICC_RPR_EL1`, the
//! acknowledged interrupt's priority) preempts it, entering the vector again
//! on the same stack; the GIC holds back anything of the same or lower
//! priority until the end of the interrupt. The outer frame already holds
//! the `ELR_EL1`/`SPSR_EL1` a nested entry overwrites, and IRQs are masked
//! again before the end of the interrupt and the frame's restore.
//!
//! A vCPU may leave its interrupts active instead ([`set_leave_active`]),
//! to test a guest that never ends them.
//!
//! The counters are per vCPU and only that vCPU writes them (plain loads
//! and stores, no read-modify-write: fine with the MMU off); a nested
//! handler's updates complete before the one it preempted resumes.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use crate::cpu::{self, MAX_CPUS};
use crate::fail;
use crate::gic;

/// What runs for each acknowledged interrupt, with its INTID, on the vCPU
/// that took it. The end of the interrupt follows when it returns.
pub type Handler = fn(intid: u32);

static HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
#[allow(clippy::declare_interior_mutable_const)]
const OFF: AtomicBool = AtomicBool::new(false);
/// Per vCPU: whether its handlers run with IRQs unmasked.
static NESTING: [AtomicBool; MAX_CPUS] = [OFF; MAX_CPUS];
/// Per vCPU: whether its interrupts are left active (no end of interrupt).
static LEAVE_ACTIVE: [AtomicBool; MAX_CPUS] = [OFF; MAX_CPUS];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static TAKEN: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];
static SPURIOUS: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];
static DEPTH: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];
static MAX_DEPTH: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];

/// Registers the handler for every vCPU (before any unmasks IRQs).
pub fn set_handler(handler: Handler) {
    HANDLER.store(handler as *mut (), Ordering::Release);
}

/// Whether this vCPU's handlers run with IRQs unmasked, so a
/// higher-priority interrupt preempts them (per vCPU: others keep theirs).
pub fn set_nesting(on: bool) {
    NESTING[cpu::id()].store(on, Ordering::Relaxed);
}

/// Whether this vCPU leaves the interrupts it takes active: acknowledged
/// but never ended (no `ICC_EOIR1_EL1` write), so its running priority
/// stays theirs. Only for testing a guest that never ends its interrupts.
pub fn set_leave_active(on: bool) {
    LEAVE_ACTIVE[cpu::id()].store(on, Ordering::Relaxed);
}

fn bump(counter: &AtomicU64) -> u64 {
    let value = counter.load(Ordering::Relaxed) + 1;
    counter.store(value, Ordering::Relaxed);
    value
}

/// Interrupts vCPU `id` has taken (acknowledged and handled or being handled).
pub fn taken_on(id: usize) -> u64 {
    TAKEN[id].load(Ordering::Relaxed)
}

/// Interrupts this vCPU has taken.
pub fn taken() -> u64 {
    taken_on(cpu::id())
}

/// Spurious acknowledges on this vCPU (the IRQ vector entered, `ICC_IAR1_EL1`
/// then reading 1020 or above).
pub fn spurious() -> u64 {
    SPURIOUS[cpu::id()].load(Ordering::Relaxed)
}

/// How many handlers this vCPU is inside now (0 outside any).
pub fn depth() -> u64 {
    DEPTH[cpu::id()].load(Ordering::Relaxed)
}

/// The deepest nesting this vCPU reached.
pub fn max_depth() -> u64 {
    MAX_DEPTH[cpu::id()].load(Ordering::Relaxed)
}

/// The IRQ vector's work (from `fault.rs`): one interrupt acknowledged,
/// handled and ended. Entered with IRQs masked; returns with them masked.
pub(crate) fn handle() {
    let me = cpu::id();
    let intid = gic::ack();
    if intid >= gic::SPECIAL {
        bump(&SPURIOUS[me]);
        return;
    }
    let handler = HANDLER.load(Ordering::Acquire);
    if handler.is_null() {
        fail!("unexpected IRQ {intid} on vcpu{me}: no handler registered");
    }
    // SAFETY: the only non-null value stored is a `Handler` cast to a
    // pointer (`set_handler`): casting it back gives that function.
    let handler = unsafe { core::mem::transmute::<*mut (), Handler>(handler) };
    bump(&TAKEN[me]);
    let depth = bump(&DEPTH[me]);
    if depth > MAX_DEPTH[me].load(Ordering::Relaxed) {
        MAX_DEPTH[me].store(depth, Ordering::Relaxed);
    }
    if NESTING[me].load(Ordering::Relaxed) {
        cpu::irq_unmask();
        handler(intid);
        cpu::irq_mask();
    } else {
        handler(intid);
    }
    DEPTH[me].store(depth - 1, Ordering::Relaxed);
    if !LEAVE_ACTIVE[me].load(Ordering::Relaxed) {
        gic::eoi(intid);
    }
}
