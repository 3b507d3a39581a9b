//! Trapped system-register accesses: the trap table. The SGI generation registers (`ICC_SGI1R_EL1` and friends, trapped while `HCR_EL2.IMO` is set), the ID registers (`HCR_EL2.TID3`: `hvcore::idregs`), set/way cache maintenance (`HCR_EL2.TSW`); anything else is an undefined instruction, as on a CPU without the register.

use hvcore::idregs;
use hvcore::inject::Exception;
use hvcore::sysreg::{self, Trapped};

use super::super::irq;
use super::super::running::{ExitAction, Running};
use super::inject;
use crate::arch::{context, mm};

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
        (reg, true) if idregs::is_tid3(reg) => {
            let value = idregs::guest_value(reg, |row| context::read_id_reg(row.reg));
            run.regs().set(t.rt, value);
            true
        }
        (reg, false) if sysreg::is_set_way(reg) => {
            set_way(run);
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

/// A trapped `DC ISW`/`CSW`/`CISW`: the first of a run of them cleans and
/// invalidates all of the guest's RAM by VA to the point of coherency (on
/// every CPU and cache level, which is what a loop over every set and way
/// is for); the others of the run do nothing more. See `docs/guest-abi.md`.
fn set_way(run: &mut Running<'_>) {
    let exit = run.vcpu.stats.exits_total();
    if sysreg::set_way_needs_flush(run.state.set_way_at, exit) {
        let ram = run.vm.ram_host;
        mm::dcache_clean_inval_poc(ram.start(), ram.size());
    }
    run.state.set_way_at = Some(exit);
}
