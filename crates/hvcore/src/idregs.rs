//! The ID registers a guest reads (`HCR_EL2.TID3` traps them): the CPU's own values, with every feature the guest cannot use hidden. One table, [`ID_REGS`], checked against the one in `docs/guest-abi.md`.
//!
//! Each row names a register, its encoding and the fields the guest sees
//! as the hardware has them (`keep`, a mask of whole 4-bit fields); every
//! other field reads 0 ("not implemented"), and a field may be capped
//! ([`IdReg::cap`]: the guest's physical address range is its 40-bit IPA
//! space). What is hidden, and why:
//!
//! - EL2 and EL3, Secure EL2, RME: the guest runs at EL1 only;
//! - SVE, SME, MTE, MPAM, AMU, RAS, SPE, trace, BRBE: their state is neither
//!   switched nor trapped by the hypervisor, so a guest using them would
//!   share or corrupt state it does not own;
//! - pointer authentication: its instructions trap to EL2 (`HCR_EL2.API`
//!   is clear) and are not emulated;
//! - VHE, nested virtualization, FWB, XNX, HCX, fine-grained traps, ECV,
//!   TWED: EL2 features;
//! - anything the table does not know (the reserved encodings of the ID
//!   space, and registers newer than this table) reads 0.
//!
//! Kept: the instruction sets (AdvSIMD, FP, crypto, atomics, ...), the
//! translation granules and ASID size, the GIC system-register interface
//! (the guest's virtual CPU interface), PMUv3 (the guest's own counters),
//! the debug breakpoints and watchpoints, the Spectre/Meltdown CSV fields.

use crate::sysreg::SysReg;

/// One ID register as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdReg {
    /// Its architectural name.
    pub name: &'static str,
    /// Its encoding.
    pub reg: SysReg,
    /// The fields shown as the hardware has them (whole 4-bit fields).
    pub keep: u64,
    /// A field capped at a value: (shift, largest value).
    pub cap: Option<(u32, u64)>,
}

/// A mask of the 4-bit fields at the given shifts.
const fn fields(shifts: &[u32]) -> u64 {
    let mut mask = 0;
    let mut i = 0;
    while i < shifts.len() {
        mask |= 0xf << shifts[i];
        i += 1;
    }
    mask
}

const fn id(name: &'static str, crm: u8, op2: u8, keep: u64) -> IdReg {
    IdReg {
        name,
        reg: SysReg::new(3, 0, 0, crm, op2),
        keep,
        cap: None,
    }
}

/// `ID_AA64MMFR0_EL1.PARange` of a 40-bit space (the VM's IPA size).
pub const PARANGE_40: u64 = 0b0010;

/// Every ID register the guest reads through the trap, in encoding order
/// (the order of the table in `docs/guest-abi.md`).
pub const ID_REGS: [IdReg; 30] = [
    // AArch32 ID registers (an AArch32 EL0): as the hardware has them, but
    // the Security and Virtualization extensions of ID_PFR1.
    id("ID_PFR0_EL1", 1, 0, u64::MAX),
    id("ID_PFR1_EL1", 1, 1, !fields(&[4, 12])),
    id("ID_DFR0_EL1", 1, 2, fields(&[0, 4, 8, 12, 16, 24])),
    id("ID_AFR0_EL1", 1, 3, 0),
    id("ID_MMFR0_EL1", 1, 4, u64::MAX),
    id("ID_MMFR1_EL1", 1, 5, u64::MAX),
    id("ID_MMFR2_EL1", 1, 6, u64::MAX),
    id("ID_MMFR3_EL1", 1, 7, u64::MAX),
    id("ID_ISAR0_EL1", 2, 0, u64::MAX),
    id("ID_ISAR1_EL1", 2, 1, u64::MAX),
    id("ID_ISAR2_EL1", 2, 2, u64::MAX),
    id("ID_ISAR3_EL1", 2, 3, u64::MAX),
    id("ID_ISAR4_EL1", 2, 4, u64::MAX),
    id("ID_ISAR5_EL1", 2, 5, u64::MAX),
    id("ID_MMFR4_EL1", 2, 6, u64::MAX),
    id("ID_ISAR6_EL1", 2, 7, u64::MAX),
    id("MVFR0_EL1", 3, 0, u64::MAX),
    id("MVFR1_EL1", 3, 1, u64::MAX),
    id("MVFR2_EL1", 3, 2, u64::MAX),
    // EL0, EL1, FP, AdvSIMD, GIC, DIT, CSV2, CSV3.
    id(
        "ID_AA64PFR0_EL1",
        4,
        0,
        fields(&[0, 4, 16, 20, 24, 48, 56, 60]),
    ),
    // BT, SSBS, CSV2_frac.
    id("ID_AA64PFR1_EL1", 4, 1, fields(&[0, 4, 32])),
    // SVE.
    id("ID_AA64ZFR0_EL1", 4, 4, 0),
    // DebugVer, PMUVer, BRPs, WRPs, CTX_CMPs, DoubleLock.
    id("ID_AA64DFR0_EL1", 5, 0, fields(&[0, 8, 12, 20, 28, 36])),
    id("ID_AA64DFR1_EL1", 5, 1, 0),
    // Every field: the base instruction set extensions.
    id("ID_AA64ISAR0_EL1", 6, 0, u64::MAX),
    // DPB, JSCVT, FCMA, LRCPC, FRINTTS, SB, SPECRES, BF16, DGH, I8MM: not
    // APA, API, GPA, GPI (pointer authentication), nor LS64 and XS.
    id(
        "ID_AA64ISAR1_EL1",
        6,
        1,
        fields(&[0, 12, 16, 20, 32, 36, 40, 44, 48, 52]),
    ),
    // RPRES only.
    id("ID_AA64ISAR2_EL1", 6, 2, fields(&[4])),
    // PARange (capped at 40 bits), ASIDBits, BigEnd, SNSMem, BigEndEL0,
    // TGran16/64/4, ExS.
    IdReg {
        name: "ID_AA64MMFR0_EL1",
        reg: SysReg::new(3, 0, 0, 7, 0),
        keep: fields(&[0, 4, 8, 12, 16, 20, 24, 28, 44]),
        cap: Some((0, PARANGE_40)),
    },
    // HAFDBS, HPDS, LO, PAN, SpecSEI, ETS, AFP, nTLBPA, CMOW, ECBHB: not
    // VMIDBits, VH, XNX, TWED, HCX, TIDCP1.
    id(
        "ID_AA64MMFR1_EL1",
        7,
        1,
        fields(&[0, 12, 16, 20, 24, 36, 44, 48, 56, 60]),
    ),
    // CnP, UAO, LSM, IESB, VARange, CCIDX, ST, AT, IDS, TTL, BBM, E0PD:
    // not NV, FWB, EVT.
    id(
        "ID_AA64MMFR2_EL1",
        7,
        2,
        fields(&[0, 4, 8, 12, 16, 20, 28, 32, 36, 48, 52, 60]),
    ),
];

/// Whether `reg` is in the ID space `HCR_EL2.TID3` traps: op0 3, op1 0,
/// CRn 0, CRm 1 to 7 (the AArch32 and AArch64 feature registers and the
/// reserved encodings among them).
#[must_use]
pub const fn is_tid3(reg: SysReg) -> bool {
    reg.op0 == 3 && reg.op1 == 0 && reg.crn == 0 && reg.crm >= 1 && reg.crm <= 7
}

/// The table's row for `reg`, if it has one.
#[must_use]
pub fn lookup(reg: SysReg) -> Option<&'static IdReg> {
    ID_REGS.iter().find(|r| r.reg == reg)
}

/// What the guest reads from `reg`, whose hardware value `read` gives:
/// the kept fields, capped; 0 for a register the table does not have.
pub fn guest_value(reg: SysReg, read: impl FnOnce(&IdReg) -> u64) -> u64 {
    let Some(row) = lookup(reg) else {
        return 0;
    };
    let mut value = read(row) & row.keep;
    if let Some((shift, max)) = row.cap {
        let field = (value >> shift) & 0xf;
        if field > max {
            value = (value & !(0xf << shift)) | (max << shift);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    fn field(v: u64, shift: u32) -> u64 {
        (v >> shift) & 0xf
    }

    #[test]
    fn hides_el2_el3_sve_mte_sme_and_pauth() {
        let all = |_: &IdReg| u64::MAX;
        let pfr0 = guest_value(SysReg::new(3, 0, 0, 4, 0), all);
        assert_eq!(field(pfr0, 8), 0, "EL2");
        assert_eq!(field(pfr0, 12), 0, "EL3");
        assert_eq!(field(pfr0, 32), 0, "SVE");
        assert_eq!(field(pfr0, 28), 0, "RAS");
        assert_eq!(field(pfr0, 0), 0xf, "EL0 kept");
        assert_eq!(field(pfr0, 24), 0xf, "GIC kept");
        let pfr1 = guest_value(SysReg::new(3, 0, 0, 4, 1), all);
        assert_eq!(field(pfr1, 8), 0, "MTE");
        assert_eq!(field(pfr1, 24), 0, "SME");
        let isar1 = guest_value(SysReg::new(3, 0, 0, 6, 1), all);
        for shift in [4, 8, 24, 28] {
            assert_eq!(field(isar1, shift), 0, "pointer authentication at {shift}");
        }
        let mmfr1 = guest_value(SysReg::new(3, 0, 0, 7, 1), all);
        assert_eq!(field(mmfr1, 8), 0, "VHE");
        let mmfr2 = guest_value(SysReg::new(3, 0, 0, 7, 2), all);
        assert_eq!(field(mmfr2, 24), 0, "NV");
        let dfr0 = guest_value(SysReg::new(3, 0, 0, 5, 0), all);
        assert_eq!(field(dfr0, 8), 0xf, "PMUVer kept");
        assert_eq!(field(dfr0, 32), 0, "SPE");
        assert_eq!(guest_value(SysReg::new(3, 0, 0, 4, 4), all), 0, "SVE IDs");
        assert_eq!(guest_value(SysReg::new(3, 0, 0, 4, 5), all), 0, "SME IDs");
    }

    #[test]
    fn parange_capped_at_the_ipa_size() {
        let mmfr0 = SysReg::new(3, 0, 0, 7, 0);
        // A 44-bit machine (0b0100) shows 40 bits; a 36-bit one stays.
        assert_eq!(field(guest_value(mmfr0, |_| 0x1122_0004), 0), PARANGE_40);
        assert_eq!(guest_value(mmfr0, |_| 0x1122_0001) & 0xf, 1);
        assert_eq!(guest_value(mmfr0, |_| 0x1122_0004) & !0xf, 0x1122_0000);
    }

    #[test]
    fn the_id_space_and_unknown_registers() {
        for crm in 1..=7 {
            for op2 in 0..8 {
                let r = SysReg::new(3, 0, 0, crm, op2);
                assert!(is_tid3(r));
                if lookup(r).is_none() {
                    assert_eq!(guest_value(r, |_| u64::MAX), 0, "{r} reserved: RAZ");
                }
            }
        }
        assert!(
            !is_tid3(SysReg::new(3, 0, 0, 0, 0)),
            "MIDR_EL1 is not TID3's"
        );
        assert!(!is_tid3(SysReg::new(3, 0, 1, 0, 0)));
        // Encodings are unique and in order, each in the trapped space.
        for w in ID_REGS.windows(2) {
            assert!(w[0].reg < w[1].reg, "{w:?}");
        }
        let mut seen: Vec<SysReg> = ID_REGS.iter().map(|r| r.reg).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), ID_REGS.len());
        assert!(ID_REGS.iter().all(|r| is_tid3(r.reg)));
    }

    /// The table in docs/guest-abi.md (after `<!-- id-registers -->`) is
    /// this one: name, encoding, the fields kept (a mask), what is hidden.
    #[test]
    fn table_matches_guest_abi_md() {
        let doc = include_str!("../../../docs/guest-abi.md");
        let start = doc
            .find("<!-- id-registers -->")
            .expect("id-registers marker");
        let rows: Vec<Vec<String>> = doc[start..]
            .lines()
            .skip(3)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().trim_matches('`').into())
                    .collect()
            })
            .collect();
        let want: Vec<[String; 3]> = ID_REGS
            .iter()
            .map(|r| {
                [
                    r.name.into(),
                    std::format!(
                        "{}, {}, {}, {}, {}",
                        r.reg.op0,
                        r.reg.op1,
                        r.reg.crn,
                        r.reg.crm,
                        r.reg.op2
                    ),
                    std::format!("{:#018x}", r.keep),
                ]
            })
            .collect();
        let got: Vec<[String; 3]> = rows
            .iter()
            .map(|r| [r[0].clone(), r[1].clone(), r[2].clone()])
            .collect();
        assert_eq!(got, want, "docs/guest-abi.md's ID register table");
    }
}
