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
        assert_ne!(ICC_SGI1R_EL1, ICC_ASGI1R_EL1);
    }
}
