//! The guest's PMU accesses, trapped (`MDCR_EL2.TPM`): which register, and what the guest may do with it while the event counters from `HPMN` up belong to EL2.
//!
//! Architecturally `MDCR_EL2.HPMN` already hides the EL2 counters from EL1
//! and EL0, but QEMU 7.2 does not apply it to EL1's accesses (a `PMCR_EL0.P`
//! resets every counter, `PMCNTENCLR_EL0` stops any), and without `HPMD`
//! (before PMUv3p1) a guest's counter filtered with `NSH` counts events at
//! EL2. So every PMU access traps, and is done on the hardware as follows
//! ([`decode`], then [`resolve`], [`guest_read`], [`guest_write`]):
//!
//! | register | read | write |
//! |----------|------|-------|
//! | `PMCR_EL0` | `N` shows `HPMN` | `P` resets counters `0..HPMN` one by one, not the EL2 ones |
//! | `PMCNTEN{SET,CLR}`, `PMOVS{SET,CLR}`, `PMINTEN{SET,CLR}`, `PMSWINC` | bits `HPMN..=30` read 0 | those bits ignored |
//! | `PMEVCNTR<n>`, `PMEVTYPER<n>`, and `PMXEV*` with `PMSELR.SEL` = n | n < `HPMN`: the counter | n < `HPMN`: the counter, `NSH` cleared (never counts at EL2) |
//! | the same, n ≥ `HPMN` | undefined instruction | undefined instruction |
//! | `PMCCFILTR_EL0` (or `PMXEVTYPER` with `SEL` = 31) | as is | `NSH` cleared |
//! | `PMSELR`, `PMCCNTR`, `PMUSERENR` | as is | as is |
//! | `PMCEID0/1`, `PMMIR` | as is | undefined instruction (read-only) |
//! | `PMSWINC` | undefined instruction (write-only) | bits `HPMN..=30` ignored |

use crate::sysreg::SysReg;

/// A PMU register as a guest names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmuReg {
    /// `PMCR_EL0`.
    Pmcr,
    /// `PMCNTENSET_EL0`.
    CntenSet,
    /// `PMCNTENCLR_EL0`.
    CntenClr,
    /// `PMOVSCLR_EL0`.
    OvsClr,
    /// `PMOVSSET_EL0`.
    OvsSet,
    /// `PMINTENSET_EL1`.
    IntenSet,
    /// `PMINTENCLR_EL1`.
    IntenClr,
    /// `PMSWINC_EL0`.
    Swinc,
    /// `PMSELR_EL0`.
    Selr,
    /// `PMCEID0_EL0`.
    Ceid0,
    /// `PMCEID1_EL0`.
    Ceid1,
    /// `PMCCNTR_EL0`.
    Ccntr,
    /// `PMXEVTYPER_EL0` (the counter `PMSELR_EL0.SEL` names).
    Xevtyper,
    /// `PMXEVCNTR_EL0`.
    Xevcntr,
    /// `PMUSERENR_EL0`.
    Userenr,
    /// `PMMIR_EL1`.
    Mmir,
    /// `PMEVCNTR<n>_EL0`.
    Evcntr(u8),
    /// `PMEVTYPER<n>_EL0`.
    Evtyper(u8),
    /// `PMCCFILTR_EL0`.
    Ccfiltr,
}

/// `PMEVTYPER<n>_EL0.NSH` (and `PMCCFILTR_EL0.NSH`): count at EL2.
pub const NSH: u64 = 1 << 27;
/// `PMCR_EL0.P`: reset the event counters.
pub const PMCR_P: u64 = 1 << 1;
/// `PMCR_EL0.N`, the number of event counters (bits 15:11).
const PMCR_N_SHIFT: u32 = 11;
/// `PMCR_EL0` bits a guest may write: E, P, C, D, X, DP, LC, LP.
const PMCR_WRITABLE: u64 = 0xff;

/// The PMU register `reg` encodes, if it is one.
#[must_use]
pub const fn decode(reg: SysReg) -> Option<PmuReg> {
    use PmuReg::*;
    Some(match (reg.op0, reg.op1, reg.crn, reg.crm, reg.op2) {
        (3, 3, 9, 12, 0) => Pmcr,
        (3, 3, 9, 12, 1) => CntenSet,
        (3, 3, 9, 12, 2) => CntenClr,
        (3, 3, 9, 12, 3) => OvsClr,
        (3, 3, 9, 12, 4) => Swinc,
        (3, 3, 9, 12, 5) => Selr,
        (3, 3, 9, 12, 6) => Ceid0,
        (3, 3, 9, 12, 7) => Ceid1,
        (3, 3, 9, 13, 0) => Ccntr,
        (3, 3, 9, 13, 1) => Xevtyper,
        (3, 3, 9, 13, 2) => Xevcntr,
        (3, 3, 9, 14, 0) => Userenr,
        (3, 3, 9, 14, 3) => OvsSet,
        (3, 0, 9, 14, 1) => IntenSet,
        (3, 0, 9, 14, 2) => IntenClr,
        (3, 0, 9, 14, 6) => Mmir,
        (3, 3, 14, 15, 7) => Ccfiltr,
        (3, 3, 14, crm @ 8..=11, op2) => Evcntr((crm - 8) * 8 + op2),
        (3, 3, 14, crm @ 12..=15, op2) => Evtyper((crm - 12) * 8 + op2),
        _ => return None,
    })
}

/// The register an access really reaches: `PMXEV*` through `sel`
/// (`PMSELR_EL0.SEL`), every other as itself; `None` for an event counter
/// at or above `hpmn` (the guest gets an undefined instruction).
#[must_use]
pub const fn resolve(reg: PmuReg, hpmn: u8, sel: u8) -> Option<PmuReg> {
    let reg = match (reg, sel) {
        (PmuReg::Xevtyper, 31) => PmuReg::Ccfiltr,
        (PmuReg::Xevtyper, n) => PmuReg::Evtyper(n),
        (PmuReg::Xevcntr, n) => PmuReg::Evcntr(n),
        (other, _) => other,
    };
    match reg {
        PmuReg::Evcntr(n) | PmuReg::Evtyper(n) if n >= hpmn => None,
        other => Some(other),
    }
}

/// The bits of the guest's event counters (`0..hpmn`) and the cycle
/// counter (31) in a per-counter mask.
#[must_use]
pub const fn guest_counters(hpmn: u8) -> u64 {
    let events = if hpmn >= 31 {
        0x7fff_ffff
    } else {
        (1u64 << hpmn) - 1
    };
    events | 1 << 31
}

/// Whether `reg` can be read (`PMSWINC_EL0` is write-only: reading it is
/// an undefined instruction).
#[must_use]
pub const fn readable(reg: PmuReg) -> bool {
    !matches!(reg, PmuReg::Swinc)
}

/// What the guest reads from `reg` (resolved) whose hardware value is `hw`.
#[must_use]
pub const fn guest_read(reg: PmuReg, hw: u64, hpmn: u8) -> u64 {
    match reg {
        PmuReg::Pmcr => (hw & !(0x1f << PMCR_N_SHIFT)) | ((hpmn as u64) << PMCR_N_SHIFT),
        PmuReg::CntenSet
        | PmuReg::CntenClr
        | PmuReg::OvsClr
        | PmuReg::OvsSet
        | PmuReg::IntenSet
        | PmuReg::IntenClr => hw & guest_counters(hpmn),
        _ => hw,
    }
}

/// What a guest's write becomes on the hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Write this value to the register.
    Value(u64),
    /// Zero the event counters in this mask one by one, then write
    /// `pmcr` (without `P`) to `PMCR_EL0`.
    ResetThenPmcr {
        /// The counters to zero.
        counters: u64,
        /// `PMCR_EL0`'s new value.
        pmcr: u64,
    },
    /// A read-only register: an undefined instruction.
    Undefined,
}

/// What the guest's write of `value` to `reg` (resolved) does.
#[must_use]
pub const fn guest_write(reg: PmuReg, value: u64, hpmn: u8) -> Write {
    match reg {
        PmuReg::Pmcr => {
            let pmcr = value & PMCR_WRITABLE;
            if pmcr & PMCR_P != 0 {
                Write::ResetThenPmcr {
                    counters: guest_counters(hpmn) & 0x7fff_ffff,
                    pmcr: pmcr & !PMCR_P,
                }
            } else {
                Write::Value(pmcr)
            }
        }
        PmuReg::CntenSet
        | PmuReg::CntenClr
        | PmuReg::OvsClr
        | PmuReg::OvsSet
        | PmuReg::IntenSet
        | PmuReg::IntenClr
        | PmuReg::Swinc => Write::Value(value & guest_counters(hpmn)),
        PmuReg::Evtyper(_) | PmuReg::Ccfiltr | PmuReg::Xevtyper => Write::Value(value & !NSH),
        PmuReg::Selr => Write::Value(value & 0x1f),
        PmuReg::Ceid0 | PmuReg::Ceid1 | PmuReg::Mmir => Write::Undefined,
        _ => Write::Value(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HPMN: u8 = 5;

    #[test]
    fn decodes_every_register() {
        assert_eq!(decode(SysReg::new(3, 3, 9, 12, 0)), Some(PmuReg::Pmcr));
        assert_eq!(decode(SysReg::new(3, 3, 14, 8, 0)), Some(PmuReg::Evcntr(0)));
        assert_eq!(
            decode(SysReg::new(3, 3, 14, 11, 6)),
            Some(PmuReg::Evcntr(30))
        );
        assert_eq!(
            decode(SysReg::new(3, 3, 14, 12, 5)),
            Some(PmuReg::Evtyper(5))
        );
        assert_eq!(
            decode(SysReg::new(3, 3, 14, 15, 6)),
            Some(PmuReg::Evtyper(30))
        );
        assert_eq!(decode(SysReg::new(3, 3, 14, 15, 7)), Some(PmuReg::Ccfiltr));
        assert_eq!(decode(SysReg::new(3, 0, 9, 14, 2)), Some(PmuReg::IntenClr));
        assert_eq!(decode(SysReg::new(3, 0, 12, 11, 5)), None, "ICC_SGI1R_EL1");
    }

    #[test]
    fn the_el2_counter_cannot_be_named() {
        assert_eq!(resolve(PmuReg::Evcntr(HPMN), HPMN, 0), None);
        assert_eq!(resolve(PmuReg::Evtyper(30), HPMN, 0), None);
        assert_eq!(resolve(PmuReg::Xevcntr, HPMN, HPMN), None);
        assert_eq!(resolve(PmuReg::Xevtyper, HPMN, HPMN), None);
        assert_eq!(resolve(PmuReg::Xevcntr, HPMN, 4), Some(PmuReg::Evcntr(4)));
        assert_eq!(resolve(PmuReg::Xevtyper, HPMN, 31), Some(PmuReg::Ccfiltr));
        assert_eq!(
            resolve(PmuReg::Xevcntr, HPMN, 31),
            None,
            "no event counter 31"
        );
        assert_eq!(resolve(PmuReg::Pmcr, HPMN, 9), Some(PmuReg::Pmcr));
    }

    #[test]
    fn the_el2_counter_cannot_be_reset_stopped_or_seen() {
        let el2 = 1u64 << HPMN;
        for reg in [
            PmuReg::CntenSet,
            PmuReg::CntenClr,
            PmuReg::OvsClr,
            PmuReg::OvsSet,
            PmuReg::IntenSet,
            PmuReg::IntenClr,
            PmuReg::Swinc,
        ] {
            match guest_write(reg, u64::MAX, HPMN) {
                Write::Value(v) => {
                    assert_eq!(v & el2, 0, "{reg:?}");
                    assert_eq!(
                        v, 0x8000_001f,
                        "{reg:?}: the guest's own and the cycle counter"
                    );
                }
                other => panic!("{reg:?}: {other:?}"),
            }
            if readable(reg) {
                assert_eq!(guest_read(reg, u64::MAX, HPMN) & el2, 0, "{reg:?}");
            }
        }
        // PMCR.P resets the guest's counters only; N shows HPMN.
        assert_eq!(
            guest_write(PmuReg::Pmcr, 0b11, HPMN),
            Write::ResetThenPmcr {
                counters: 0x1f,
                pmcr: 0b01
            }
        );
        assert_eq!(guest_write(PmuReg::Pmcr, !PMCR_P, HPMN), Write::Value(0xfd));
        assert_eq!(
            guest_read(PmuReg::Pmcr, 0x4100_3001, HPMN),
            0x4100_2801,
            "N 6 -> 5"
        );
    }

    #[test]
    fn guest_counters_never_count_at_el2() {
        for reg in [PmuReg::Evtyper(0), PmuReg::Ccfiltr] {
            assert_eq!(guest_write(reg, u64::MAX, HPMN), Write::Value(!NSH));
        }
        assert_eq!(guest_write(PmuReg::Ceid0, 1, HPMN), Write::Undefined);
        assert!(!readable(PmuReg::Swinc) && readable(PmuReg::Pmcr));
        assert_eq!(guest_counters(31), 0xffff_ffff);
        assert_eq!(guest_counters(0), 0x8000_0000);
    }
}
