//! Trapped system-register accesses: the trap table. Today the SGI generation registers (`ICC_SGI1R_EL1` and friends, trapped while `HCR_EL2.IMO` is set); anything else is an undefined instruction, as on a CPU without the register.

use hvcore::inject::Exception;
use hvcore::sysreg::{self, Trapped};

use super::super::irq;
use super::super::running::{ExitAction, Running};
use super::inject;

/// `ESR_ELx.IL`.
const ESR_IL: u64 = 1 << 25;

/// Handles the trapped access whose syndrome is `esr`.
pub fn access(run: &mut Running<'_>, esr: u64) -> ExitAction {
    let t = Trapped::from_iss((esr & 0x1ff_ffff) as u32);
    let il32 = esr & ESR_IL != 0;
    let handled = match (t.reg, t.read) {
        (sysreg::ICC_SGI1R_EL1, false) => {
            let value = run.regs().get(t.rt);
            irq::send_sgi(run.vm, run.vcpu.id(), value, true);
            true
        }
        (sysreg::ICC_SGI0R_EL1 | sysreg::ICC_ASGI1R_EL1, false) => {
            let value = run.regs().get(t.rt);
            irq::send_sgi(run.vm, run.vcpu.id(), value, false);
            true
        }
        _ => false,
    };
    if handled {
        run.regs().skip_instruction(il32);
    } else {
        guest_log!(
            run.vm,
            Warn,
            "vm{}/vcpu{}: {} of {} at pc {:#x}: injecting an undefined instruction",
            run.vm.id,
            run.vcpu.id(),
            if t.read { "read" } else { "write" },
            t.reg,
            run.regs().pc
        );
        inject::exception(run, il32, Exception::Undefined);
    }
    ExitAction::Resume
}
