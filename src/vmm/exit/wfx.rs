//! A trapped `WFI` (`HCR_EL2.TWI`): the vCPU blocks until it has an interrupt to take; a `WFE` is not trapped, but one that traps anyway just continues.

use super::super::irq;
use super::super::running::{ExitAction, Running};

/// `ESR_EL2.ISS.TI`, bit 0: a `WFE` (else a `WFI`).
const ISS_WFE: u64 = 1;
/// `ESR_ELx.IL`.
const ESR_IL: u64 = 1 << 25;

/// Handles the `WFI`/`WFE` whose syndrome is `esr`.
pub fn wfx(run: &mut Running<'_>, esr: u64) -> ExitAction {
    run.regs().skip_instruction(esr & ESR_IL != 0);
    if esr & ISS_WFE != 0 || irq::has_pending(run.vm, run.vcpu) {
        return ExitAction::Resume;
    }
    ExitAction::Block
}
