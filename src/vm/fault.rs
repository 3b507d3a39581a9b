//! The guest-abort path: a stage-2 fault is served by a shared, fault-mode walk; anything else is MMIO or an injected abort.
//!
//! What a fault needs (map, relax, set the access flag, mark dirty, or
//! refuse) is decided by `hvcore::s2fault::plan`, host-tested; this file
//! is the plumbing. Lock protocol: the vCPU's memory cache is topped up
//! *before* the stage-2 read lock is taken, so no allocator runs under it;
//! the slot's dirty-log state is read *under* the read lock (enabling the
//! log takes the write lock, so a fault either finished before or sees
//! it); the walk itself is a shared fault-mode walk, which never waits for
//! another vCPU: when it loses a race, or finds the work done, it returns
//! `Error::Refault` and the vCPU simply resumes the guest (which faults
//! again if it still needs to, or just proceeds).

use aarch64_cpu::registers::{Readable, FAR_EL2, HPFAR_EL2};
use hvcore::guest_abort::GuestAbort;
use hvcore::s2fault::{self, Plan};
use log::{error, warn};
use pgtable::Error;

use super::inject;
use super::machine::Vm;
use super::mmio;
use super::vcpu::FAULT_CACHE_PAGES;
use crate::exception::TrapFrame;
use crate::exit::{exit, ExitStatus};
use crate::percpu;

/// Handles a data or instruction abort from the guest.
#[inline(never)]
pub fn guest_abort(vm: &'static Vm, frame: &mut TrapFrame, esr: u64) {
    let Some(abort) = GuestAbort::decode(esr, FAR_EL2.get(), HPFAR_EL2.get()) else {
        inject::undefined(frame);
        return;
    };
    let Some((index, slot)) = vm.slots.find_indexed(abort.ipa) else {
        if !mmio::access(vm, frame, &abort) {
            refuse(vm, frame, &abort, "no memory slot or device there");
        }
        return;
    };
    vm.stats.fault(abort.kind, abort.level);
    let log = vm.logs.get(index);
    let vcpu = &vm.vcpus[percpu::current_id().index()];
    let mut cache = vcpu.cache.lock();
    // Pages first, with no lock held: the walk below takes only from here.
    if let Err(e) = cache.topup(&vm.s2mm, FAULT_CACHE_PAGES) {
        fatal(vm, &abort, e);
    }
    let result = {
        let stage2 = vm.stage2.read();
        // Read under the read lock: enabling the log takes the write lock.
        let logging = log.is_some_and(|log| log.is_enabled());
        let fault = s2fault::plan(&abort, slot, vm.max_block, logging);
        if let Plan::Refuse(why) = fault.plan {
            drop(stage2);
            return refuse(vm, frame, &abort, why);
        }
        s2fault::serve(&stage2, fault, abort.ipa, log, &mut cache)
    };
    match result {
        Ok(served) => vm.stats.served(&served),
        Err(Error::Refault { .. }) => vm.stats.refault(),
        Err(e) => fatal(vm, &abort, e),
    }
}

/// A fault the hypervisor cannot serve (memory exhausted, retries
/// exhausted): the run ends with a failure.
fn fatal(vm: &Vm, abort: &GuestAbort, e: Error) -> ! {
    error!(
        "vm{}/vcpu{}: cannot serve {abort}: {e}",
        vm.id,
        percpu::current_id()
    );
    exit(ExitStatus::Failure);
}

/// Refuses an access: logs it and makes the guest take a synchronous
/// external abort. The hypervisor stays up; the guest decides.
pub fn refuse(vm: &Vm, frame: &mut TrapFrame, abort: &GuestAbort, why: &str) {
    warn!(
        "vm{}/vcpu{}: {why}: {abort} at pc {:#x}: injecting an external abort",
        vm.id,
        percpu::current_id(),
        frame.elr
    );
    vm.stats.injected();
    inject::external_abort(frame, abort.instruction, abort.far);
}
