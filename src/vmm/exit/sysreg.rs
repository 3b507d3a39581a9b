//! Trapped system-register accesses: the trap table. The SGI generation registers (`ICC_SGI1R_EL1` and friends, trapped while `HCR_EL2.IMO` is set), the ID registers (`HCR_EL2.TID3`: `hvcore::idregs`), set/way cache maintenance (`HCR_EL2.TSW`); anything else is an undefined instruction, as on a CPU without the register.

use hvcore::idregs;
use hvcore::inject::Exception;
use hvcore::pmu::{self as pmu_rules, Write};
use hvcore::sysreg::{self, Trapped};

use super::super::irq;
use super::super::running::{ExitAction, Running};
use super::inject;
use crate::arch::{context, mm, pmu};

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
        (reg, read) if pmu_rules::decode(reg).is_some() => pmu_access(run, reg, t.rt, read),
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

/// A trapped PMU access (`hvcore::pmu` decides, the hardware does it);
/// false for one the guest gets an undefined instruction for.
fn pmu_access(run: &mut Running<'_>, reg: sysreg::SysReg, rt: u8, read: bool) -> bool {
    let Some(hpmn) = pmu::guest_counters() else {
        return false;
    };
    let Some(reg) = pmu_rules::decode(reg) else {
        return false;
    };
    let sel = (pmu::guest_read(pmu_rules::PmuReg::Selr) & 0x1f) as u8;
    let Some(reg) = pmu_rules::resolve(reg, hpmn, sel) else {
        return false;
    };
    if read {
        if !pmu_rules::readable(reg) {
            return false;
        }
        let value = pmu_rules::guest_read(reg, pmu::guest_read(reg), hpmn);
        run.regs().set(rt, value);
        return true;
    }
    let value = run.regs().get(rt);
    match pmu_rules::guest_write(reg, value, hpmn) {
        Write::Value(v) => pmu::guest_write(reg, v),
        Write::ResetThenPmcr { counters, pmcr } => {
            for n in (0..31u8).filter(|&n| counters & (1 << n) != 0) {
                pmu::guest_write(pmu_rules::PmuReg::Evcntr(n), 0);
            }
            pmu::guest_write(pmu_rules::PmuReg::Pmcr, pmcr);
        }
        Write::Undefined => return false,
    }
    true
}
