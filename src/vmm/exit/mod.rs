//! Every exit from a guest starts here: the vector and the syndrome say why, one handler serves it and returns an [`ExitAction`].
//!
//! Handlers by exception class, as Linux KVM's `arm_exit_handlers`: `HVC`
//! → `hypercall`, `SMC` → refused, data and instruction aborts → `abort`,
//! `WFI`/`WFE` → `wfx`, trapped system registers → `sysreg` (its trap
//! table), anything else → an undefined instruction (`inject`). A physical
//! interrupt is a kick from another CPU (see `hvcore::request`):
//! acknowledged here; whatever was asked is served before the next entry.

use hvcore::esr::{ec, ExceptionClass};
use hvcore::inject::Exception;
use hvcore::psci::ret;

mod abort;
mod hypercall;
mod inject;
mod psci;
mod sysreg;
mod wfx;

use super::running::{ExitAction, Running};
use super::stats::ExitReason;
use super::vcpu::Vcpu;
use super::vm::Vm;
use super::{console, irq};
use crate::arch::exception::{self, Kind, Vector};
use crate::arch::gic;

/// `ESR_ELx.IL`: the trapped instruction is 32 bits long.
const ESR_IL: u64 = 1 << 25;

/// Serves one exit of the vCPU `run`, taken through vector `index`.
#[inline(always)]
pub fn handle(run: &mut Running<'_>, index: u64) -> ExitAction {
    if !Vector::index_is_sync(index) {
        return asynchronous(run, Vector::from_index(index));
    }
    let esr = exception::syndrome();
    // The class alone picks the handler; each decodes what it needs (the
    // fault path its abort), so the syndrome is not decoded twice. The
    // common classes on the shortest path: hypercalls, then aborts.
    match ((esr >> 26) & 0x3f) as u8 {
        ec::HVC64 => {
            run.vcpu.stats.exit(ExitReason::Hvc);
            hypercall::hvc(run)
        }
        ec::DABT_LOWER => {
            run.vcpu.stats.exit(ExitReason::DataAbort);
            abort::guest_abort(run, esr)
        }
        _ => synchronous(run, esr),
    }
}

/// A physical interrupt (a kick), or an FIQ or SError.
#[inline(never)]
fn asynchronous(run: &mut Running<'_>, vector: Vector) -> ExitAction {
    let stats = &run.vcpu.stats;
    match vector.kind {
        Kind::Irq => {
            stats.exit(ExitReason::Irq);
            take_irqs(run.vm, run.vcpu);
            ExitAction::Resume
        }
        _ => {
            // No FIQ or SError is routed to a guest: note it and carry on.
            stats.exit(ExitReason::Other);
            guest_log!(
                run.vm,
                Warn,
                "vm{}/vcpu{}: unexpected {vector}",
                run.vm.id,
                run.vcpu.id()
            );
            ExitAction::Resume
        }
    }
}

/// Takes the physical interrupts pending at this CPU, which runs `vcpu`:
/// the console's input, or one for the vCPU (its timers).
pub fn take_irqs(vm: &Vm, vcpu: &Vcpu) {
    gic::handle_irqs(|intid| {
        // The timers' first: they are the common case.
        if irq::is_forwarded(intid) || !console::host_irq(intid) {
            irq::forward_hw(vm, vcpu, intid);
        }
    });
}

/// Every synchronous exit but a hypercall or a data abort.
#[inline(never)]
fn synchronous(run: &mut Running<'_>, esr: u64) -> ExitAction {
    let stats = &run.vcpu.stats;
    match ((esr >> 26) & 0x3f) as u8 {
        ec::SMC64 => {
            // Trapped by HCR_EL2.TSC; the PC points at the SMC itself.
            stats.exit(ExitReason::Smc);
            let regs = run.regs();
            regs.x[0] = ret::NOT_SUPPORTED as u64;
            regs.skip_instruction(true);
            ExitAction::Resume
        }
        ec::WFX => {
            stats.exit(ExitReason::Wfx);
            wfx::wfx(run, esr)
        }
        ec::SYS64 => {
            stats.exit(ExitReason::SysReg);
            sysreg::access(run, esr)
        }
        ec::IABT_LOWER => {
            stats.exit(ExitReason::InstructionAbort);
            abort::guest_abort(run, esr)
        }
        raw => {
            let class = ExceptionClass::from_bits(raw);
            stats.exit(ExitReason::Other);
            guest_log!(
                run.vm,
                Warn,
                "vm{}/vcpu{}: unhandled exit ({class}) at pc {:#x}: injecting an undefined instruction",
                run.vm.id,
                run.vcpu.id(),
                run.regs().pc
            );
            inject::exception(run, esr & ESR_IL != 0, Exception::Undefined);
            ExitAction::Resume
        }
    }
}
