//! Interrupts for guests: the one door through which devices, timers and SGIs raise an interrupt for a VM, and the hardware half of the virtual GIC (its list registers, around every entry and exit).
//!
//! The model (`hvcore::vgic`) lives in the VM behind a lock; this file
//! moves interrupts between it and the CPU:
//!
//! - **The door** ([`forward_hw`], [`send_sgi`], and every
//!   register write through [`apply`]): the model changes under the lock,
//!   then each vCPU that may now have an interrupt to take gets the
//!   [`req::IRQ`] request: a vCPU in its guest is kicked out (an SGI to its
//!   CPU), a blocked one woken, one in the hypervisor sees the request
//!   before it enters again (`hvcore::request`).
//! - **Exit** ([`fold`]): if the vCPU ran with list registers in use, they
//!   are read back into the model (and `EOIcount`); **entry**
//!   ([`flush`]): the model picks what the vCPU enters with. A vCPU with
//!   nothing in flight pays one comparison per exit.
//!
//! The timers: a guest uses the virtual timer and the EL1 physical timer
//! directly; their interrupts (PPIs 27 and 30) reach EL2 (`HCR_EL2.IMO`),
//! which acknowledges and ends them but leaves them active, and forwards
//! each to the vCPU that runs on the CPU through a hardware-linked list
//! register: the guest's own end of the virtual interrupt deactivates the
//! physical one. Until then it cannot fire again, so a timer left asserted
//! cannot hold the hypervisor in an interrupt storm (the choice Linux KVM
//! makes too when the hardware supports it). A vCPU reset deactivates
//! whatever it still held.

use hvcore::vgic::lr::hcr;
use hvcore::vgic::{Effects, FlushInfo, PTIMER_INTID, VTIMER_INTID};
use log::warn;

use super::running::Running;
use super::vcpu::{req, Vcpu};
use super::vm::{CpuKick, Vm};
use crate::arch::{gic, vgic};

/// Asks each vCPU named in `effects` to look at its interrupts.
pub fn apply(vm: &Vm, effects: Effects) {
    let mut kick = effects.kick;
    while kick != 0 {
        let v = kick.trailing_zeros() as usize;
        kick &= kick - 1;
        if let Some(vcpu) = vm.vcpus.get(v) {
            vcpu.requests.make(req::IRQ, v, &CpuKick(vm));
        }
    }
}

/// An emulated device of `vm` drives interrupt `intid`'s line to `level`
/// (an SPI: whichever vCPU it is routed to is asked to look).
pub fn set_line(vm: &Vm, intid: u32, level: bool) {
    let effects = vm.vgic.lock().set_line(0, intid, level);
    apply(vm, effects);
}

/// `vcpu` wrote `value` to an SGI generation register.
pub fn send_sgi(vm: &Vm, vcpu: usize, value: u64, group1: bool) {
    let effects = vm.vgic.lock().send_sgi(vcpu, value, group1);
    apply(vm, effects);
}

/// Whether physical interrupt `intid` is one forwarded to the vCPU that
/// runs on its CPU (a timer's).
pub fn is_forwarded(intid: u32) -> bool {
    intid == VTIMER_INTID || intid == PTIMER_INTID
}

/// A physical interrupt acknowledged (and ended) on the CPU of the running
/// vCPU: a timer's goes to that vCPU, still active, hardware-linked; any
/// other is deactivated and reported.
pub fn forward_hw(vm: &Vm, vcpu: &Vcpu, intid: u32) {
    if is_forwarded(intid) {
        let effects = vm.vgic.lock().inject_hw(vcpu.id(), intid, intid);
        apply(vm, effects);
    } else {
        gic::deactivate(intid);
        warn!(
            "vm{}/vcpu{}: unexpected physical interrupt {intid} ended",
            vm.id,
            vcpu.id()
        );
    }
}

/// Whether `vcpu` has an interrupt to take (a `WFI` does not block then).
pub fn has_pending(vm: &Vm, vcpu: &Vcpu) -> bool {
    vm.vgic.lock().has_pending(vcpu.id())
}

/// After an exit: the list registers the vCPU ran with go back into the
/// model. Only called when some were in use.
#[inline(never)]
pub fn fold(run: &mut Running<'_>) {
    let used = run.state.lrs_used;
    let eoicount = (vgic::read_hcr() >> 27) as u32;
    run.vm.vgic.lock().fold_with(
        run.vcpu.id(),
        |i| (i < used).then(|| vgic::read_lr(i)),
        eoicount,
    );
    run.state.lrs_used = 0;
}

/// Before an entry: the list registers the vCPU enters with, from the
/// model (after [`fold`]), written as the model picks them; registers the
/// previous flush left and this one does not need are cleared.
#[inline(never)]
pub fn flush(run: &mut Running<'_>) {
    let info = run.vm.vgic.lock().flush_with(run.vcpu.id(), vgic::write_lr);
    for i in info.used..run.state.lrs_written {
        vgic::write_lr(i, 0);
    }
    write_hcr(&info);
    run.state.lrs_used = info.used;
    run.state.lrs_written = info.used;
}

/// `ICH_HCR_EL2` for what a flush found: the interface on, and the
/// maintenance interrupts it asked for.
fn write_hcr(info: &FlushInfo) {
    let mut hcr = hcr::EN;
    if info.underflow {
        hcr |= hcr::UIE;
    }
    if info.eoicount {
        hcr |= hcr::LRENPIE;
    }
    vgic::write_hcr(hcr);
}

/// A vCPU starts running from reset on this CPU: its interrupts back to
/// reset in the model, any physical timer interrupt it still held
/// deactivated, its virtual CPU interface cleared.
pub fn reset(run: &mut Running<'_>) {
    let mut held = run.vm.vgic.lock().reset_vcpu(run.vcpu.id());
    while held != 0 {
        let intid = held.trailing_zeros();
        held &= held - 1;
        gic::deactivate(intid);
    }
    run.state.vif = vgic::VcpuIf::default();
    run.state.vif.load();
    for i in 0..vgic::nr_lrs() {
        vgic::write_lr(i, 0);
    }
    write_hcr(&FlushInfo {
        used: 0,
        underflow: false,
        eoicount: false,
    });
    run.state.lrs_used = 0;
    run.state.lrs_written = 0;
}

/// A vCPU stops running on this CPU: its list registers back into the
/// model, its interface state saved, the interface off.
pub fn put(run: &mut Running<'_>) {
    if run.state.lrs_used != 0 {
        fold(run);
    }
    run.state.vif.save();
    for i in 0..run.state.lrs_written {
        vgic::write_lr(i, 0);
    }
    run.state.lrs_written = 0;
    vgic::write_hcr(0);
}
