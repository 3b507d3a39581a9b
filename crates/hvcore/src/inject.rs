//! Exceptions the hypervisor makes a guest take at EL1, computed as the CPU would: the vector from where the guest was, the syndrome, the saved state.
//!
//! [`take`] is pure: given the vCPU's registers at the exit, its
//! `VBAR_EL1` and what to inject, it returns the EL1 registers to write
//! ([`Injection`]) and moves the vCPU's PC and PSTATE to the vector. The
//! hardware layer writes the four EL1 registers; nothing here touches one.
//!
//! As Linux KVM does (`inject_fault.c`), the injected syndrome's `IL`
//! copies the trapped instruction's (`ESR_EL2.IL`), so a 16-bit T32
//! instruction at AArch32 EL0 is reported as one.
//!
//! ## A vector that cannot be fetched
//!
//! [`enters_itself`] says when injecting an abort would lock the vCPU up:
//! the exit is an **instruction abort** that the hypervisor refuses (the
//! fetch address is in no memory slot, or in a device window), and the
//! vector the injection would enter, `VBAR_EL1` + the offset for where the
//! guest was, **is the address whose fetch just failed** (the PC). Then:
//!
//! - the injection sets the PC to that same address and PSTATE to EL1h with
//!   D, A, I and F masked; the next fetch is of the same IPA, which is still
//!   in no slot (slots never appear while a VM runs) or a device, so it is
//!   refused again and taken from EL1h, to `VBAR_EL1` + 0x200: the same
//!   address if it was the first time (the guest was at EL1h), else the
//!   second abort meets the condition itself;
//! - nothing in between can change it: no instruction of the guest runs (each
//!   fetch aborts before executing), so `VBAR_EL1`, the translation tables
//!   and the registers stay as they are, and interrupts are masked, so none
//!   is taken. Another vCPU cannot change what is at that IPA either;
//! - so every later exit of this vCPU is the same refused fetch, forever: a
//!   real CPU in this state has locked up, and the hypervisor stops the VM
//!   (`Failure::VectorLockup`) instead of looping with a log line each time.
//!
//! The same holds when the failed fetch is the guest's own stage-1 table walk
//! for the vector (`S1PTW`: the table is in no slot, and stays there). What
//! the rule leaves out, on purpose: a *data* abort whose PC is the vector
//! (the vector's code is in RAM and loads from nowhere) also repeats, but
//! another vCPU may rewrite that code, so it is not final; it costs one
//! rate-limited log line per round and never holds up the hypervisor, like
//! any guest spinning in a loop. A vector unmapped in the guest's own
//! stage 1 loops inside the guest without exiting, as on a real CPU.

use crate::regs::{mode, GuestRegs, PSTATE_EL1H_MASKED};

/// `ESR_ELx.EC` values of the exceptions injected.
pub mod ec {
    /// Unknown reason: an undefined instruction.
    pub const UNKNOWN: u64 = 0x00;
    /// Instruction abort from a lower exception level.
    pub const IABT_LOWER: u64 = 0x20;
    /// Instruction abort without a change of exception level.
    pub const IABT_SAME: u64 = 0x21;
    /// Data abort from a lower exception level.
    pub const DABT_LOWER: u64 = 0x24;
    /// Data abort without a change of exception level.
    pub const DABT_SAME: u64 = 0x25;
}

/// `ESR_ELx.IL`: the instruction was 32 bits long.
pub const ESR_IL: u64 = 1 << 25;
/// `ESR_ELx.ISS.WnR` of a data abort: the access was a write.
pub const ESR_WNR: u64 = 1 << 6;
/// Fault status: synchronous external abort, not on a table walk.
pub const FSC_EXTERNAL: u64 = 0x10;
/// Fault status: synchronous external abort on a translation table walk,
/// level 0 (add the level).
pub const FSC_EXTERNAL_WALK: u64 = 0x14;

/// Offsets of the synchronous vectors from `VBAR_EL1`.
pub mod vector {
    /// From EL1 with `SP_EL0`.
    pub const CURRENT_SP0: u64 = 0x000;
    /// From EL1 with `SP_EL1`.
    pub const CURRENT_SPX: u64 = 0x200;
    /// From EL0 in AArch64.
    pub const LOWER_A64: u64 = 0x400;
    /// From EL0 in AArch32.
    pub const LOWER_A32: u64 = 0x600;
}

/// What the guest is made to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// An undefined instruction at the PC (`EC` 0x00).
    Undefined,
    /// A synchronous external abort on the access to virtual address `far`,
    /// as a bus error looks to the CPU.
    ExternalAbort {
        /// An instruction fetch (else a data access).
        instruction: bool,
        /// A data write (sets `WnR`; ignored for fetches).
        write: bool,
        /// The faulting virtual address (`FAR_EL1`).
        far: u64,
        /// The abort happened on the guest's own stage-1 table walk, at
        /// this level: reported as such (`FSC` 0x14 + level).
        walk_level: Option<u8>,
    },
}

/// The EL1 registers the exception sets, beside the vCPU's new PC and
/// PSTATE (which [`take`] writes into the registers it is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// `ESR_EL1`.
    pub esr: u64,
    /// `FAR_EL1`, for an abort (unchanged otherwise).
    pub far: Option<u64>,
    /// `ELR_EL1`: the instruction that caused it.
    pub elr: u64,
    /// `SPSR_EL1`: the PSTATE it interrupted.
    pub spsr: u64,
    /// The vector it enters: `VBAR_EL1` + the offset.
    pub vector: u64,
}

/// Where the guest was, as the vector offset and whether the exception is
/// taken from the same exception level (EL1).
#[must_use]
pub const fn origin(pstate: u64) -> (u64, bool) {
    if pstate & mode::AARCH32 != 0 {
        return (vector::LOWER_A32, false);
    }
    match pstate & mode::MASK {
        mode::EL1T => (vector::CURRENT_SP0, true),
        mode::EL1H => (vector::CURRENT_SPX, true),
        _ => (vector::LOWER_A64, false),
    }
}

/// Whether an abort on fetching the instruction at `pc`, taken from
/// `pstate` with `VBAR_EL1` = `vbar`, would enter `pc` itself: the vCPU
/// would fetch the same address again, forever (see *A vector that cannot
/// be fetched* above).
#[must_use]
pub const fn enters_itself(pc: u64, pstate: u64, vbar: u64) -> bool {
    vbar.wrapping_add(origin(pstate).0) == pc
}

/// The syndrome of `exception` taken from the same EL or not, with the
/// trapped instruction's length.
#[must_use]
pub const fn syndrome(exception: Exception, same_el: bool, il32: bool) -> u64 {
    let il = if il32 { ESR_IL } else { 0 };
    match exception {
        Exception::Undefined => (ec::UNKNOWN << 26) | il,
        Exception::ExternalAbort {
            instruction,
            write,
            walk_level,
            ..
        } => {
            let class = match (instruction, same_el) {
                (true, true) => ec::IABT_SAME,
                (true, false) => ec::IABT_LOWER,
                (false, true) => ec::DABT_SAME,
                (false, false) => ec::DABT_LOWER,
            };
            let fsc = match walk_level {
                Some(level) if level <= 3 => FSC_EXTERNAL_WALK + level as u64,
                _ => FSC_EXTERNAL,
            };
            let wnr = if write && !instruction { ESR_WNR } else { 0 };
            (class << 26) | il | wnr | fsc
        }
    }
}

/// Makes the vCPU whose registers are `regs` take `exception` at EL1, as
/// the CPU would: `regs.pc` moves to `vbar` + the vector for where it was,
/// PSTATE to EL1h with D, A, I and F masked; the returned [`Injection`]
/// holds what goes into `ESR_EL1`, `FAR_EL1`, `ELR_EL1` and `SPSR_EL1`.
/// `il32` is the trapped instruction's length (`ESR_EL2.IL`).
pub fn take(regs: &mut GuestRegs, vbar: u64, il32: bool, exception: Exception) -> Injection {
    let (offset, same_el) = origin(regs.pstate);
    let far = match exception {
        Exception::ExternalAbort { far, .. } => Some(far),
        Exception::Undefined => None,
    };
    let injection = Injection {
        esr: syndrome(exception, same_el, il32),
        far,
        elr: regs.pc,
        spsr: regs.pstate,
        vector: vbar.wrapping_add(offset),
    };
    regs.pc = injection.vector;
    regs.pstate = PSTATE_EL1H_MASKED;
    injection
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esr::{Esr, ExceptionClass, FaultKind, Iss};

    fn regs_at(pstate: u64) -> GuestRegs {
        let mut r = GuestRegs::at_entry(0x4000_1234, 0);
        r.pstate = pstate;
        r
    }

    #[test]
    fn vector_offsets_follow_where_the_guest_was() {
        // EL1h, EL1t, EL0t (AArch64) and AArch32 EL0 (user mode 0x10).
        for (pstate, offset, same) in [
            (0x3c5, 0x200, true),
            (0x3c4, 0x000, true),
            (0x000, 0x400, false),
            (0x010, 0x600, false),
            (0x01f, 0x600, false),
        ] {
            assert_eq!(origin(pstate), (offset, same), "pstate {pstate:#x}");
            let mut r = regs_at(pstate);
            let inj = take(&mut r, 0x8000, true, Exception::Undefined);
            assert_eq!(inj.vector, 0x8000 + offset);
            assert_eq!(r.pc, 0x8000 + offset);
            assert_eq!(r.pstate, PSTATE_EL1H_MASKED);
            assert_eq!((inj.elr, inj.spsr), (0x4000_1234, pstate));
        }
    }

    #[test]
    fn undefined_syndrome() {
        let mut r = regs_at(0x3c5);
        let inj = take(&mut r, 0, true, Exception::Undefined);
        assert_eq!(inj.esr, 0x0200_0000);
        assert_eq!(inj.far, None);
        let mut r = regs_at(0x010);
        let inj = take(&mut r, 0, false, Exception::Undefined);
        assert_eq!(inj.esr, 0, "a 16-bit T32 instruction has IL clear");
    }

    #[test]
    fn abort_syndromes_decode_as_what_they_claim() {
        let cases = [
            (
                false,
                false,
                0x3c5,
                None,
                ExceptionClass::DataAbortCurrent,
                0x10,
            ),
            (
                false,
                true,
                0x000,
                None,
                ExceptionClass::DataAbortLower,
                0x10,
            ),
            (
                true,
                false,
                0x3c5,
                None,
                ExceptionClass::InstrAbortCurrent,
                0x10,
            ),
            (
                true,
                false,
                0x010,
                None,
                ExceptionClass::InstrAbortLower,
                0x10,
            ),
            (
                false,
                false,
                0x3c5,
                Some(2),
                ExceptionClass::DataAbortCurrent,
                0x16,
            ),
            (
                true,
                false,
                0x3c5,
                Some(0),
                ExceptionClass::InstrAbortCurrent,
                0x14,
            ),
            (
                false,
                true,
                0x3c4,
                Some(3),
                ExceptionClass::DataAbortCurrent,
                0x17,
            ),
            (
                false,
                false,
                0x3c5,
                Some(9),
                ExceptionClass::DataAbortCurrent,
                0x10,
            ),
        ];
        for (instruction, write, pstate, walk_level, class, fsc) in cases {
            let mut r = regs_at(pstate);
            let exc = Exception::ExternalAbort {
                instruction,
                write,
                far: 0x1234_5678,
                walk_level,
            };
            let inj = take(&mut r, 0x8000_0000, true, exc);
            let esr = Esr::decode(inj.esr);
            assert_eq!(esr.class, class, "{exc:?}");
            assert!(esr.il);
            assert_eq!(inj.esr & 0x3f, fsc, "{exc:?}");
            assert_eq!(inj.far, Some(0x1234_5678));
            let want = if walk_level.is_some_and(|l| l <= 3) {
                FaultKind::SyncExternalOnWalk
            } else {
                FaultKind::SyncExternal
            };
            let status = match esr.iss {
                Iss::DataAbort(d) => {
                    assert_eq!(d.write, write);
                    d.status
                }
                Iss::InstructionAbort(i) => i.status,
                other => panic!("{other:?}"),
            };
            assert_eq!(status.kind, want, "{exc:?}");
            assert_eq!(status.level, walk_level.filter(|&l| l <= 3), "{exc:?}");
        }
    }

    #[test]
    fn a_fetch_abort_at_its_own_vector_locks_up() {
        let vbar = 0x1000_0000;
        // From EL1h the vector is VBAR + 0x200; from EL0 + 0x400.
        assert!(enters_itself(vbar + 0x200, 0x3c5, vbar));
        assert!(
            enters_itself(vbar + 0x200, 0x3c5 & !0x3c0, vbar),
            "DAIF aside"
        );
        assert!(!enters_itself(vbar + 0x200, 0x3c4, vbar), "EL1t: + 0x000");
        assert!(enters_itself(vbar, 0x3c4, vbar));
        assert!(!enters_itself(vbar + 0x400, 0x000, vbar + 0x1000));
        assert!(enters_itself(vbar + 0x400, 0x000, vbar));
        assert!(enters_itself(vbar + 0x600, 0x010, vbar), "AArch32 EL0");
        // From EL0 to an unfetchable + 0x400: not yet; the next abort, from
        // EL1h at + 0x400, goes to + 0x200, and the one there locks up.
        assert!(!enters_itself(vbar + 0x400, PSTATE_EL1H_MASKED, vbar));
        let mut r = regs_at(0x3c5);
        r.pc = vbar + 0x200;
        let exc = Exception::ExternalAbort {
            instruction: true,
            write: false,
            far: vbar + 0x200,
            walk_level: None,
        };
        let inj = take(&mut r, vbar, true, exc);
        assert_eq!(
            (r.pc, r.pstate, inj.elr),
            (vbar + 0x200, PSTATE_EL1H_MASKED, vbar + 0x200),
            "the fixed point: injecting leaves the vCPU where it was"
        );
        assert!(enters_itself(r.pc, r.pstate, vbar));
        // Wrapping at the top of the address space does not panic.
        assert!(enters_itself(0x1ff, 0x3c5, u64::MAX));
    }

    #[test]
    fn fetch_never_sets_wnr() {
        let exc = Exception::ExternalAbort {
            instruction: true,
            write: true,
            far: 0,
            walk_level: None,
        };
        assert_eq!(syndrome(exc, true, true) & ESR_WNR, 0);
    }
}
