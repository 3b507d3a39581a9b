//! Pausing a VM's vCPUs from another CPU: the request, the kick that makes a running vCPU exit, and the check every guest entry makes.
//!
//! Protocol (the same shape as KVM's `vcpu->mode` and requests):
//!
//! - A vCPU's CPU sets its mode to *in guest* and **then** reads the
//!   request, right before every entry into the guest ([`before_entry`]);
//!   if a pause is requested it goes back *outside*, parks until the
//!   request is withdrawn, and checks again.
//! - Every exit sets the mode to *outside* first ([`on_exit`]).
//! - The pauser sets the request and **then** reads each vCPU's mode
//!   ([`pause`]); a vCPU in the guest gets a kick (an SGI, which exits to
//!   EL2 whatever the guest masks). It then waits until no vCPU is in the
//!   guest.
//!
//! Why no vCPU can slip into the guest unseen: the mode store and the
//! request load of a vCPU, and the request store and mode load of the
//! pauser, are all sequentially consistent. If the pauser read *outside*,
//! that read precedes the vCPU's next *in guest* store in the single total
//! order, so the vCPU's following request load comes after the request
//! store and sees it. A vCPU handling an exit (outside) runs no guest code
//! and checks before it goes back.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use log::warn;

use super::machine::Vm;
use super::vcpu::Vcpu;
use crate::gic::{self, GicError};
use crate::percpu::CpuId;

/// How long [`pause`] waits for kicked vCPUs before it warns, in polls.
const WARN_AFTER_POLLS: u64 = 100_000_000;

/// A VM's pause request and what it took.
#[derive(Debug, Default)]
pub struct PauseState {
    requested: AtomicBool,
    kicks: AtomicU64,
}

/// What one [`pause`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Paused {
    /// vCPUs that were in the guest and were kicked out.
    pub kicked: u32,
}

/// Called on every exit, before anything else: the vCPU runs no guest code.
pub fn on_exit(vcpu: &Vcpu) {
    vcpu.set_in_guest(false);
}

/// Called right before every entry into the guest: parks the vCPU while a
/// pause is requested.
pub fn before_entry(vm: &Vm, vcpu: &Vcpu) {
    loop {
        vcpu.set_in_guest(true);
        if !vm.pause.requested.load(SeqCst) {
            return;
        }
        vcpu.set_in_guest(false);
        while vm.pause.requested.load(SeqCst) {
            aarch64_cpu::asm::wfe();
        }
    }
}

/// Stops every vCPU of `vm` from running guest code; returns once none
/// does (and none will until [`resume`]).
///
/// # Errors
///
/// A [`GicError`] if a running vCPU cannot be kicked (no GICv3); the
/// request is then withdrawn.
pub fn pause(vm: &Vm) -> Result<Paused, GicError> {
    vm.pause.requested.store(true, SeqCst);
    let mut paused = Paused::default();
    let vcpus = &vm.vcpus[..vm.nr_vcpus];
    for vcpu in vcpus {
        if vcpu.in_guest() {
            if let Err(e) = gic::kick(CpuId::new(vcpu.id())) {
                resume(vm);
                return Err(e);
            }
            paused.kicked += 1;
        }
    }
    vm.pause.kicks.fetch_add(u64::from(paused.kicked), SeqCst);
    let mut polls = 0u64;
    while vcpus.iter().any(Vcpu::in_guest) {
        polls += 1;
        if polls == WARN_AFTER_POLLS {
            warn!("vm{}: a kicked vCPU has not left the guest yet", vm.id);
        }
        core::hint::spin_loop();
    }
    Ok(paused)
}

/// Lets the vCPUs run again.
pub fn resume(vm: &Vm) {
    vm.pause.requested.store(false, SeqCst);
    // The store must be visible before the event wakes a parked CPU, or it
    // may read the request still set and wait for good: `stlr` does not
    // order a later `sev`, a `dsb` does.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
    aarch64_cpu::asm::sev();
}

impl PauseState {
    /// Kicks sent so far.
    pub fn kicks(&self) -> u64 {
        self.kicks.load(SeqCst)
    }
}
