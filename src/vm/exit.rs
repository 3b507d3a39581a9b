//! Every exit from a guest starts here: the syndrome says why, and one handler serves it.

use aarch64_cpu::registers::{Readable, ESR_EL2};
use hvcore::esr::{Esr, ExceptionClass};
use hvcore::psci::ret;
use log::warn;

use super::machine;
use super::stats::ExitReason;
use super::{fault, inject, psci};
use crate::exception::{Kind, TrapFrame, Vector};
use crate::exit::{exit, ExitStatus};
use crate::percpu;

/// Handles an exception taken from the guest; when it returns, the frame
/// is restored and the guest resumes at `frame.elr`.
pub fn handle_exit(frame: &mut TrapFrame, vector: Vector) {
    let Some(vm) = machine::get() else {
        crate::console::println!("error: exception from a lower EL, but no guest runs");
        exit(ExitStatus::Exception);
    };
    if vector.kind != Kind::Sync {
        // No interrupt is routed to a guest yet: note it and carry on.
        vm.stats.exit(ExitReason::Other);
        warn!(
            "vm{}/vcpu{}: unexpected {vector}",
            vm.id,
            percpu::current_id()
        );
        return;
    }
    let esr = ESR_EL2.get();
    match Esr::decode(esr).class {
        ExceptionClass::Hvc64 => {
            vm.stats.exit(ExitReason::Hvc);
            psci::hypercall(vm, frame);
        }
        ExceptionClass::Smc64 => {
            // Trapped by HCR_EL2.TSC; ELR points at the SMC itself.
            vm.stats.exit(ExitReason::Smc);
            frame.regs[0] = ret::NOT_SUPPORTED as u64;
            frame.elr += 4;
        }
        ExceptionClass::DataAbortLower => {
            vm.stats.exit(ExitReason::DataAbort);
            fault::guest_abort(vm, frame, esr);
        }
        ExceptionClass::InstrAbortLower => {
            vm.stats.exit(ExitReason::InstructionAbort);
            fault::guest_abort(vm, frame, esr);
        }
        class => {
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
