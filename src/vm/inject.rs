//! Exceptions the hypervisor makes the guest take: a synchronous external abort, an undefined instruction.

use aarch64_cpu::registers::{Readable, Writeable, ELR_EL1, ESR_EL1, FAR_EL1, SPSR_EL1, VBAR_EL1};

use super::context::SPSR_EL1H_MASKED;
use crate::exception::TrapFrame;

/// `ESR.EC` values of exceptions taken to EL1.
const EC_UNKNOWN: u64 = 0x00;
const EC_IABT_LOWER: u64 = 0x20;
const EC_IABT_SAME: u64 = 0x21;
const EC_DABT_LOWER: u64 = 0x24;
const EC_DABT_SAME: u64 = 0x25;
/// `ESR.IL`: a 32-bit instruction.
const ESR_IL: u64 = 1 << 25;
/// DFSC / IFSC: synchronous external abort, not on a table walk.
const FSC_SEA: u64 = 0x10;

/// `SPSR.M` values.
const M_EL0T: u64 = 0b0000;
const M_EL1T: u64 = 0b0100;
const M_EL1H: u64 = 0b0101;

/// Takes the guest to its EL1 vector for a synchronous exception with
/// syndrome `esr_for(same_el)`, as the CPU would: the interrupted PC and
/// state go to `ELR_EL1` / `SPSR_EL1`, execution resumes at `VBAR_EL1` +
/// the offset for where it came from, at EL1h with interrupts masked.
fn take_sync(frame: &mut TrapFrame, far: Option<u64>, esr_for: impl FnOnce(bool) -> u64) {
    let mode = frame.spsr & 0b1111;
    let (offset, same_el) = match mode {
        M_EL1T => (0x000, true),
        M_EL1H => (0x200, true),
        M_EL0T => (0x400, false),
        _ => (0x600, false), // AArch32 EL0
    };
    ESR_EL1.set(esr_for(same_el));
    if let Some(far) = far {
        FAR_EL1.set(far);
    }
    ELR_EL1.set(frame.elr);
    SPSR_EL1.set(frame.spsr);
    frame.elr = VBAR_EL1.get() + offset;
    frame.spsr = SPSR_EL1H_MASKED;
}

/// A synchronous external abort on the access at `far` (an instruction
/// fetch if `instruction`): what a bus error looks like to the guest.
pub fn external_abort(frame: &mut TrapFrame, instruction: bool, far: u64) {
    take_sync(frame, Some(far), |same_el| {
        let ec = match (instruction, same_el) {
            (true, true) => EC_IABT_SAME,
            (true, false) => EC_IABT_LOWER,
            (false, true) => EC_DABT_SAME,
            (false, false) => EC_DABT_LOWER,
        };
        (ec << 26) | ESR_IL | FSC_SEA
    });
}

/// An undefined-instruction exception at the current guest PC.
pub fn undefined(frame: &mut TrapFrame) {
    take_sync(frame, None, |_| (EC_UNKNOWN << 26) | ESR_IL);
}
