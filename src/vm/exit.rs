//! Every exit from a guest starts here: the syndrome says why, and one handler serves it.

use aarch64_cpu::registers::{Readable, ESR_EL2};
use hvcore::esr::{ec, ExceptionClass};
use hvcore::psci::ret;
use log::warn;

use super::machine;
use super::stats::ExitReason;
use super::{fault, inject, pause, psci};
use crate::exception::{Kind, TrapFrame, Vector};
use crate::exit::{exit, ExitStatus};
use crate::{gic, percpu};

/// Handles an exception taken from the guest; when it returns, the frame
/// is restored and the guest resumes at `frame.elr`.
pub fn handle_exit(frame: &mut TrapFrame, vector: Vector) {
    let Some(vm) = machine::get() else {
        crate::console::println!("error: exception from a lower EL, but no guest runs");
        exit(ExitStatus::Exception);
    };
    let vcpu = &vm.vcpus[percpu::current_id().index()];
    pause::on_exit(vcpu);
    dispatch(vm, frame, vector);
    pause::before_entry(vm, vcpu);
}

/// Serves one exit.
fn dispatch(vm: &'static machine::Vm, frame: &mut TrapFrame, vector: Vector) {
    if vector.kind == Kind::Irq {
        // A kick (see `pause.rs`): acknowledged here; the pause, if one is
        // requested, happens before the guest is entered again.
        vm.stats.exit(ExitReason::Irq);
        let (_kicks, others) = gic::handle_irq();
        if others > 0 {
            warn!(
                "vm{}/vcpu{}: {others} unexpected interrupt(s) ended",
                vm.id,
                percpu::current_id()
            );
        }
        return;
    }
    if vector.kind != Kind::Sync {
        // No other interrupt is routed to a guest yet: note it and carry on.
        vm.stats.exit(ExitReason::Other);
        warn!(
            "vm{}/vcpu{}: unexpected {vector}",
            vm.id,
            percpu::current_id()
        );
        return;
    }
    let esr = ESR_EL2.get();
    // The class alone picks the handler; each decodes what it needs (the
    // fault path its abort), so the syndrome is not decoded twice.
    match ESR_EL2::EC.read(esr) as u8 {
        ec::HVC64 => {
            vm.stats.exit(ExitReason::Hvc);
            psci::hypercall(vm, frame);
        }
        ec::SMC64 => {
            // Trapped by HCR_EL2.TSC; ELR points at the SMC itself.
            vm.stats.exit(ExitReason::Smc);
            frame.regs[0] = ret::NOT_SUPPORTED as u64;
            frame.elr += 4;
        }
        ec::DABT_LOWER => {
            vm.stats.exit(ExitReason::DataAbort);
            fault::guest_abort(vm, frame, esr);
        }
        ec::IABT_LOWER => {
            vm.stats.exit(ExitReason::InstructionAbort);
            fault::guest_abort(vm, frame, esr);
        }
        raw => {
            let class = ExceptionClass::from_bits(raw);
            vm.stats.exit(ExitReason::Other);
            warn!(
                "vm{}/vcpu{}: unhandled exit ({class}) at pc {:#x}: injecting an undefined instruction",
                vm.id,
                percpu::current_id(),
                frame.elr
            );
            vm.stats.injected();
            inject::undefined(frame);
        }
    }
}
