//! Trapped system-register accesses (exception class 0x18): which register, read or write, and the general register involved, for the exit layer's trap table.
//!
//! A register is named by its encoding `(op0, op1, CRn, CRm, op2)`
//! ([`SysReg`]); the constants below are the ones the hypervisor traps.

use crate::esr::SysRegAccess;

/// A system register's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SysReg {
    /// `op0`.
    pub op0: u8,
    /// `op1`.
    pub op1: u8,
    /// `CRn`.
    pub crn: u8,
    /// `CRm`.
    pub crm: u8,
    /// `op2`.
    pub op2: u8,
}

impl SysReg {
    /// The encoding `(op0, op1, CRn, CRm, op2)`.
    #[must_use]
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        Self {
            op0,
            op1,
            crn,
            crm,
            op2,
        }
    }
}

impl core::fmt::Display for SysReg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "S{}_{}_C{}_C{}_{}",
            self.op0, self.op1, self.crn, self.crm, self.op2
        )
    }
}

/// `ICC_SGI1R_EL1`: generate a group 1 SGI.
pub const ICC_SGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 5);
/// `ICC_ASGI1R_EL1`: generate a group 1 SGI for the other security state.
pub const ICC_ASGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 6);
/// `ICC_SGI0R_EL1`: generate a group 0 SGI.
pub const ICC_SGI0R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 7);

/// `DC ISW`: invalidate a data cache line by set/way.
pub const DC_ISW: SysReg = SysReg::new(1, 0, 7, 6, 2);
/// `DC CSW`: clean a data cache line by set/way.
pub const DC_CSW: SysReg = SysReg::new(1, 0, 7, 10, 2);
/// `DC CISW`: clean and invalidate a data cache line by set/way.
pub const DC_CISW: SysReg = SysReg::new(1, 0, 7, 14, 2);

/// Whether `reg` is a set/way cache operation (trapped by `HCR_EL2.TSW`).
#[must_use]
pub const fn is_set_way(reg: SysReg) -> bool {
    matches!(
        (reg.op0, reg.op1, reg.crn, reg.crm, reg.op2),
        (1, 0, 7, 6 | 10 | 14, 2)
    )
}

/// Whether a trapped set/way operation, the vCPU's exit number `exit`,
/// needs the whole-RAM flush that stands for a run of them: yes unless
/// the previous exit (`exit - 1`) was a set/way operation that already
/// flushed (`flushed_at`). A guest's loop over every set and way makes
/// one flush; any other exit in between (an interrupt, a fault) starts a
/// new run, so a flush is never older than the guest's last other exit.
#[must_use]
pub const fn set_way_needs_flush(flushed_at: Option<u64>, exit: u64) -> bool {
    match flushed_at {
        Some(at) => at.wrapping_add(1) != exit,
        None => true,
    }
}

/// A trapped access, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trapped {
    /// The register (or system instruction) accessed.
    pub reg: SysReg,
    /// The general register read into or written from: 31 is `xzr`.
    pub rt: u8,
    /// A read (`MRS`), else a write (`MSR`).
    pub read: bool,
}

impl Trapped {
    /// Decodes the ISS of a trapped access (`ESR_EL2[24:0]`).
    #[must_use]
    pub const fn from_iss(iss: u32) -> Self {
        let a = SysRegAccess::from_iss(iss);
        Self {
            reg: SysReg::new(a.op0, a.op1, a.crn, a.crm, a.op2),
            rt: a.reg,
            read: a.read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn one_flush_per_run_of_set_way_operations() {
        // Exits 10..20 all set/way: the first flushes, each next one is
        // the exit right after the last flush... only if it flushed there.
        let mut flushed_at = None;
        let mut flushes = 0;
        for exit in 10..20 {
            if set_way_needs_flush(flushed_at, exit) {
                flushes += 1;
                flushed_at = Some(exit);
            } else {
                // Skipped: the run goes on from this exit.
                flushed_at = Some(exit);
            }
        }
        assert_eq!(flushes, 1);
        // Another exit (21) in between: exit 22 starts a new run.
        assert!(set_way_needs_flush(flushed_at, 21 + 1));
        assert!(!set_way_needs_flush(Some(5), 6));
        assert!(set_way_needs_flush(None, 0));
        assert!(!set_way_needs_flush(Some(u64::MAX), 0), "wraps");
    }

    /// The ISS of `MSR <reg>, x<rt>` (or `MRS` when `read`).
    fn iss(r: SysReg, rt: u8, read: bool) -> u32 {
        u32::from(r.op0) << 20
            | u32::from(r.op2) << 17
            | u32::from(r.op1) << 14
            | u32::from(r.crn) << 10
            | u32::from(rt) << 5
            | u32::from(r.crm) << 1
            | u32::from(read)
    }

    #[test]
    fn decodes_every_field() {
        for (reg, rt, read) in [
            (ICC_SGI1R_EL1, 3, false),
            (ICC_SGI0R_EL1, 31, false),
            (ICC_ASGI1R_EL1, 0, true),
            // op0 = 1: a system instruction (DC ISW is 1, 0, 7, 6, 2).
            (SysReg::new(1, 0, 7, 6, 2), 5, false),
            (SysReg::new(2, 3, 0, 5, 0), 30, true),
        ] {
            let t = Trapped::from_iss(iss(reg, rt, read));
            assert_eq!(t, Trapped { reg, rt, read });
        }
        assert_eq!(ICC_SGI1R_EL1.to_string(), "S3_0_C12_C11_5");
        assert!(is_set_way(DC_ISW) && is_set_way(DC_CSW) && is_set_way(DC_CISW));
        assert!(!is_set_way(SysReg::new(1, 0, 7, 14, 1)), "DC CIVAC");
        assert!(!is_set_way(SysReg::new(1, 3, 7, 14, 1)));
        assert_ne!(ICC_SGI1R_EL1, ICC_ASGI1R_EL1);
    }
}
