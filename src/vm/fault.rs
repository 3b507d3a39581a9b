//! The guest-abort path: a stage-2 fault is served by a shared, fault-mode walk; anything else is MMIO or an injected abort.
//!
//! Lock protocol: the vCPU's memory cache is topped up *before* the stage-2
//! read lock is taken, so no allocator runs under it; the walk itself is a
//! shared fault-mode walk (`Stage2::fault`), which never waits for another
//! vCPU: when it loses a race, or finds the work done, it returns
//! `Error::Refault` and the vCPU simply resumes the guest (which faults
//! again if it still needs to, or just proceeds).

use aarch64_cpu::registers::{Readable, FAR_EL2, HPFAR_EL2};
use hvcore::guest_abort::{AbortKind, GuestAbort};
use hvcore::slots::MemSlot;
use log::{error, warn};
use pgtable::{Error, Prot};

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
    let Some(slot) = vm.slots.find(abort.ipa) else {
        if !mmio::access(vm, frame, &abort) {
            refuse(vm, frame, &abort, "no memory slot or device there");
        }
        return;
    };
    vm.stats.fault(abort.kind, abort.level);
    if abort.write && slot.readonly {
        return refuse(vm, frame, &abort, "write to a read-only slot");
    }
    let result = match abort.kind {
        AbortKind::Translation => map(vm, slot, &abort),
        AbortKind::Permission => relax(vm, slot, &abort),
        AbortKind::AccessFlag => vm.stage2.read().fault().mkyoung(abort.ipa),
        _ => return refuse(vm, frame, &abort, "unexpected fault kind"),
    };
    match result {
        Ok(()) => {}
        Err(Error::Refault { .. }) => vm.stats.refault(),
        Err(e) => {
            error!(
                "vm{}/vcpu{}: cannot serve {abort}: {e}",
                vm.id,
                percpu::current_id()
            );
            exit(ExitStatus::Failure);
        }
    }
}

/// The permissions a fault earns: read (and write unless read-only); exec
/// only for an instruction fetch, so data pages never need instruction
/// cache care until they are executed.
fn prot_for(slot: &MemSlot, abort: &GuestAbort) -> Prot {
    let mut prot = if slot.readonly { Prot::R } else { Prot::RW };
    if abort.instruction {
        prot = prot.union(Prot::X);
    }
    prot
}

/// Translation fault in a slot: map the largest block that alignment allows.
fn map(vm: &Vm, slot: &MemSlot, abort: &GuestAbort) -> Result<(), Error> {
    let (ipa, size) = slot.block_for(abort.ipa, vm.max_block);
    let host = slot.host + (ipa - slot.ipa);
    let vcpu = &vm.vcpus[percpu::current_id().index()];
    let mut cache = vcpu.cache.lock();
    cache.topup(&vm.s2mm, FAULT_CACHE_PAGES)?;
    let mapped =
        vm.stage2
            .read()
            .fault()
            .map(ipa, size, host, prot_for(slot, abort), &mut cache)?;
    vm.stats.mapped(&mapped);
    Ok(())
}

/// Permission fault in a slot: add what the access needs.
fn relax(vm: &Vm, slot: &MemSlot, abort: &GuestAbort) -> Result<(), Error> {
    let need = if abort.instruction {
        Prot::X
    } else if abort.write && !slot.readonly {
        Prot::W
    } else {
        Prot::R
    };
    vm.stage2.read().fault().relax_perms(abort.ipa, need)
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
