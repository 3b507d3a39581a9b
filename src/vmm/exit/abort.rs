//! The guest-abort path: a stage-2 fault in a memory slot is served by a shared, fault-mode walk; an access to a device window is emulated; anything else gets an injected abort.
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

use hvcore::guest_abort::GuestAbort;
use hvcore::inject::Exception;
use hvcore::mmio;
use hvcore::s1walk;
use hvcore::s2fault::{self, Plan};
use hvcore::verdict::{Failure, VmEnd};
use log::error;
use pgtable::Error;

use super::super::devices;
use super::super::running::{ExitAction, Running};
use super::super::vcpu::FAULT_CACHE_PAGES;
use super::inject;
use crate::arch::{context, exception};

/// Handles a data or instruction abort from the guest with syndrome `esr`.
#[inline(never)]
pub fn guest_abort(run: &mut Running<'_>, esr: u64) -> ExitAction {
    let (far, hpfar) = exception::fault_addresses();
    let Some(abort) = GuestAbort::decode(esr, far, hpfar) else {
        inject::exception(run, true, Exception::Undefined);
        return ExitAction::Resume;
    };
    let vm = run.vm;
    let Some((index, slot)) = vm.slots.find_indexed(abort.ipa) else {
        return outside_memory(run, &abort);
    };
    let stats = &run.vcpu.stats;
    stats.fault(abort.kind, abort.level);
    let log = vm.logs.get(index);
    let cache = &mut run.state.cache;
    // Pages first, with no lock held: the walk below takes only from here.
    if let Err(e) = cache.topup(&vm.s2mm, FAULT_CACHE_PAGES) {
        return fatal(run, &abort, e);
    }
    let result = {
        let stage2 = vm.stage2.read();
        // Read under the read lock: enabling the log takes the write lock.
        let logging = log.is_some_and(|log| log.is_enabled());
        let fault = s2fault::plan(&abort, slot, vm.max_block, logging);
        if let Plan::Refuse(why) = fault.plan {
            drop(stage2);
            return refuse(run, &abort, why);
        }
        s2fault::serve(&stage2, fault, abort.ipa, log, cache)
    };
    match result {
        Ok(served) => stats.served(&served),
        Err(Error::Refault { .. }) => stats.refault(),
        Err(e) => return fatal(run, &abort, e),
    }
    ExitAction::Resume
}

/// An abort on an IPA in no memory slot: a device's access, or refused.
fn outside_memory(run: &mut Running<'_>, abort: &GuestAbort) -> ExitAction {
    if abort.s1ptw {
        // The guest's own stage-1 walk read a table from nowhere: the CPU
        // reports that as an external abort on the walk, not as the access.
        return refuse(run, abort, "stage-1 table walk outside guest memory");
    }
    let Some((&device, offset)) = run.vm.bus.find(abort.ipa) else {
        return refuse(run, abort, "no memory slot or device there");
    };
    run.vcpu.stats.mmio();
    match mmio::decode(run.regs(), abort) {
        Ok(op) => {
            let value = devices::access(run, device, offset, op);
            mmio::complete(run.regs(), abort, op, value);
        }
        Err(refusal) => return refuse(run, abort, refusal.why()),
    }
    ExitAction::Resume
}

/// A fault the hypervisor cannot serve (memory exhausted, retries
/// exhausted): the VM is stopped; the hypervisor and other VMs carry on.
fn fatal(run: &Running<'_>, abort: &GuestAbort, e: Error) -> ExitAction {
    // Out of pages with its budget spent: the VM's own limit, not the
    // machine's.
    let budget = matches!(e, Error::NoMemory) && run.vm.s2mm.budget_left() < FAULT_CACHE_PAGES;
    error!(
        "vm{}/vcpu{}: cannot serve {abort}: {e}{}: stopping the VM",
        run.vm.id,
        run.vcpu.id(),
        if budget {
            " (its stage-2 table budget is spent)"
        } else {
            ""
        }
    );
    ExitAction::StopVm(VmEnd::Failed(if budget {
        Failure::Stage2Budget
    } else {
        Failure::Stage2Fault
    }))
}

/// Refuses an access: logs it (rate-limited) and makes the guest take a
/// synchronous external abort. The hypervisor stays up; the guest decides.
/// A refused fetch of the very vector the abort would enter stops the VM
/// instead (`hvcore::inject`, *A vector that cannot be fetched*).
fn refuse(run: &mut Running<'_>, abort: &GuestAbort, why: &str) -> ExitAction {
    if abort.instruction && inject::fetch_locks_up(run) {
        let vbar = context::live_vbar();
        error!(
            "vm{}/vcpu{}: {why}: {abort} at pc {:#x}, which is the exception vector the abort would enter (VBAR_EL1 {vbar:#x}): the vCPU would take the same abort forever, stopping the VM",
            run.vm.id,
            run.vcpu.id(),
            run.regs().pc
        );
        return ExitAction::StopVm(VmEnd::Failed(Failure::VectorLockup));
    }
    guest_log!(
        run.vm,
        Warn,
        "vm{}/vcpu{}: {why}: {abort} at pc {:#x}: injecting an external abort",
        run.vm.id,
        run.vcpu.id(),
        run.regs().pc
    );
    // On the guest's own table walk: the level whose table was read from
    // nowhere (hvcore::s1walk), as the CPU reports such an abort.
    let walk_level = if abort.s1ptw {
        let vm = run.vm;
        s1walk::table_level(&context::live_stage1(), abort.far, abort.ipa, |ipa| {
            vm.read_u64(ipa)
        })
    } else {
        None
    };
    let exception = Exception::ExternalAbort {
        instruction: abort.instruction,
        write: abort.write && !abort.s1ptw,
        far: abort.far,
        walk_level,
    };
    inject::exception(run, abort.il32, exception);
    ExitAction::Resume
}
