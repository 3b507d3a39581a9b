//! A guest's data or instruction abort taken to EL2, decoded into what the fault path needs.
//!
//! The raw fields come from [`crate::esr`]; this module adds the guest's view:
//! the faulting IPA (from `HPFAR_EL2` and `FAR_EL2`), whether the access
//! must be treated as a write, and the instruction syndrome an MMIO
//! emulation needs.

use core::fmt;

#[cfg(doc)]
use crate::esr::Esr;
use crate::esr::{FaultKind, FaultStatus};

/// What went wrong, from the DFSC/IFSC field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortKind {
    /// Address size fault: the address is beyond the configured IPA/PA size.
    AddressSize,
    /// Translation fault: no valid mapping.
    Translation,
    /// Access flag fault: the mapping's access flag is clear.
    AccessFlag,
    /// Permission fault: the mapping forbids this access.
    Permission,
    /// Synchronous external abort, on the access itself or on a table walk.
    External,
    /// Alignment fault.
    Alignment,
    /// Any other fault status code (parity, TLB conflict, tag check, ...):
    /// the raw 6-bit code.
    Other(u8),
}

impl AbortKind {
    /// The kind a decoded fault status reports.
    #[must_use]
    pub const fn from_status(status: FaultStatus) -> Self {
        match status.kind {
            FaultKind::AddressSize => Self::AddressSize,
            FaultKind::Translation => Self::Translation,
            FaultKind::AccessFlag => Self::AccessFlag,
            FaultKind::Permission => Self::Permission,
            FaultKind::SyncExternal | FaultKind::SyncExternalOnWalk => Self::External,
            FaultKind::Alignment => Self::Alignment,
            _ => Self::Other(status.code),
        }
    }
}

impl fmt::Display for AbortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddressSize => f.write_str("address size fault"),
            Self::Translation => f.write_str("translation fault"),
            Self::AccessFlag => f.write_str("access flag fault"),
            Self::Permission => f.write_str("permission fault"),
            Self::External => f.write_str("external abort"),
            Self::Alignment => f.write_str("alignment fault"),
            Self::Other(code) => write!(f, "fault status {code:#04x}"),
        }
    }
}

/// The instruction syndrome of a data abort (`ISV` set): enough to emulate
/// the load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// Access width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Transfer register, 0..=31; 31 is `xzr`/`wzr` (reads as 0, writes are discarded).
    pub reg: u8,
    /// A load sign-extends the value to the register width (`SSE`).
    pub sign_extend: bool,
    /// The register is 64-bit (`SF`); otherwise a load clears bits 63:32.
    pub sixty_four: bool,
}

/// A data or instruction abort from the guest (EL1/EL0), taken to EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAbort {
    /// What kind of fault.
    pub kind: AbortKind,
    /// The translation table level (0..=3), for level-reporting faults.
    pub level: Option<u8>,
    /// Whether to treat the access as a write; see [`GuestAbort::decode`].
    pub write: bool,
    /// An instruction fetch (EC 0x20), not a data access (EC 0x24).
    pub instruction: bool,
    /// The fault is on the stage-2 translation of a stage-1 table walk
    /// (`S1PTW`): `ipa` is the table's address, not the access's.
    pub s1ptw: bool,
    /// The faulting intermediate physical address.
    pub ipa: u64,
    /// The faulting virtual address (`FAR_EL2`), as reported.
    pub far: u64,
    /// The instruction syndrome, for data aborts with `ISV` set.
    pub access: Option<MmioAccess>,
    /// The faulting instruction is 32 bits long (`IL`): add 4 to the PC to
    /// skip it, otherwise 2.
    pub il32: bool,
}

#[cfg(test)]
impl GuestAbort {
    /// A stage-2 abort on `ipa` (also the FAR), by a 4-byte instruction,
    /// with no syndrome access: the fault-path tests' input.
    pub(crate) fn at(kind: AbortKind, level: u8, write: bool, instruction: bool, ipa: u64) -> Self {
        GuestAbort {
            kind,
            level: Some(level),
            write,
            instruction,
            s1ptw: false,
            ipa,
            far: ipa,
            access: None,
            il32: true,
        }
    }
}

/// `HPFAR_EL2.FIPA`, bits \[43:4\]: bits \[51:12\] of the faulting IPA.
const HPFAR_FIPA_MASK: u64 = ((1 << 44) - 1) & !0xf;

impl GuestAbort {
    /// Decodes an abort from `ESR_EL2`, `FAR_EL2` and `HPFAR_EL2`.
    ///
    /// Returns `None` unless the exception class is an instruction abort
    /// (0x20) or data abort (0x24) from a lower exception level.
    ///
    /// The IPA is `HPFAR_EL2.FIPA << 8 | FAR_EL2[11:0]`. `HPFAR_EL2` is
    /// valid for stage-2 faults (translation, access flag, permission,
    /// address size) and for faults on a stage-1 table walk; for other
    /// kinds (alignment, some external aborts) the caller should not rely
    /// on `ipa`.
    ///
    /// `write` follows the rule KVM uses to decide what a fault needs:
    /// - a data access: `WnR`;
    /// - an instruction fetch: false;
    /// - a fault on a stage-1 table walk (`S1PTW`), data or fetch: true
    ///   only for a permission fault, which means the walker needed to
    ///   write the descriptor (hardware access flag / dirty state update).
    ///   A translation or access-flag fault on a walk is reported as a
    ///   read, so stage-1 tables in a read-only slot still work.
    ///
    /// This runs on every guest abort, so it reads the few fields it needs
    /// straight from the register rather than decoding the whole syndrome
    /// with [`Esr::decode`]; a property test checks the two agree.
    #[must_use]
    pub const fn decode(esr: u64, far: u64, hpfar: u64) -> Option<Self> {
        // The two classes by their raw values: no table lookup on every
        // abort.
        let instruction = match ((esr >> 26) & 0x3f) as u8 {
            crate::esr::ec::DABT_LOWER => false,
            crate::esr::ec::IABT_LOWER => true,
            _ => return None,
        };
        let iss = (esr & 0x1ff_ffff) as u32;
        let status = FaultStatus::from_bits((iss & 0x3f) as u8);
        let s1ptw = iss & (1 << 7) != 0;
        // WnR (bit 6) and ISV (bit 24) exist for data aborts only.
        let wnr = !instruction && iss & (1 << 6) != 0;
        let access = if !instruction && iss & (1 << 24) != 0 {
            Some(MmioAccess {
                size: 1 << ((iss >> 22) & 0b11),
                reg: ((iss >> 16) & 0x1f) as u8,
                sign_extend: iss & (1 << 21) != 0,
                sixty_four: iss & (1 << 15) != 0,
            })
        } else {
            None
        };
        let kind = AbortKind::from_status(status);
        let write = if s1ptw {
            matches!(kind, AbortKind::Permission)
        } else {
            wnr
        };
        Some(Self {
            kind,
            level: status.level,
            write,
            instruction,
            s1ptw,
            ipa: ((hpfar & HPFAR_FIPA_MASK) << 8) | (far & 0xfff),
            far,
            access,
            il32: esr & (1 << 25) != 0,
        })
    }
}

impl fmt::Display for GuestAbort {
    /// E.g. `translation fault level 2, write, ipa 0x40200000`, or
    /// `permission fault level 3, write by stage-1 walk for a fetch, ipa 0x40001000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(level) = self.level {
            write!(f, " level {level}")?;
        }
        let rw = if self.write { "write" } else { "read" };
        match (self.s1ptw, self.instruction) {
            (false, false) => write!(f, ", {rw}")?,
            (false, true) => f.write_str(", fetch")?,
            (true, false) => write!(f, ", {rw} by stage-1 walk for a data access")?,
            (true, true) => write!(f, ", {rw} by stage-1 walk for a fetch")?,
        }
        write!(f, ", ipa {:#x}", self.ipa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esr::ExceptionClass;
    use proptest::prelude::*;

    const EC_IABT_LOWER: u64 = 0x20;
    const EC_IABT_CUR: u64 = 0x21;
    const EC_DABT_LOWER: u64 = 0x24;
    const EC_DABT_CUR: u64 = 0x25;
    const IL: u64 = 1 << 25;
    const ISV: u64 = 1 << 24;
    const S1PTW: u64 = 1 << 7;
    const WNR: u64 = 1 << 6;

    fn esr(ec: u64, iss: u64) -> u64 {
        (ec << 26) | iss
    }

    /// HPFAR_EL2 for an IPA: FIPA = IPA\[51:12\] in bits \[43:4\].
    fn hpfar(ipa: u64) -> u64 {
        (ipa >> 12) << 4
    }

    #[test]
    fn store_with_syndrome() {
        // str w3, [x?] to the UART's data register: SAS=word, SRT=3.
        let raw = esr(EC_DABT_LOWER, IL | ISV | (2 << 22) | (3 << 16) | WNR | 0x06);
        let a = GuestAbort::decode(raw, 0xffff_0000_0900_0000, hpfar(0x0900_0000)).unwrap();
        assert_eq!(a.kind, AbortKind::Translation);
        assert_eq!(a.level, Some(2));
        assert!(a.write);
        assert!(!a.instruction);
        assert!(!a.s1ptw);
        assert!(a.il32);
        assert_eq!(a.ipa, 0x0900_0000);
        assert_eq!(a.far, 0xffff_0000_0900_0000);
        assert_eq!(
            a.access,
            Some(MmioAccess {
                size: 4,
                reg: 3,
                sign_extend: false,
                sixty_four: false
            })
        );
        assert_eq!(
            a.to_string(),
            "translation fault level 2, write, ipa 0x9000000"
        );
    }

    #[test]
    fn load_sizes_and_flags() {
        for (sas, bytes) in [(0u64, 1u8), (1, 2), (2, 4), (3, 8)] {
            // ldrs* x31 style: SSE, SRT=31, SF.
            let raw = esr(
                EC_DABT_LOWER,
                IL | ISV | (sas << 22) | (1 << 21) | (31 << 16) | (1 << 15) | 0x07,
            );
            let a = GuestAbort::decode(raw, 0x18, hpfar(0x0900_0000)).unwrap();
            assert!(!a.write);
            assert_eq!(
                a.access,
                Some(MmioAccess {
                    size: bytes,
                    reg: 31,
                    sign_extend: true,
                    sixty_four: true
                })
            );
            assert_eq!(a.ipa, 0x0900_0018);
        }
    }

    #[test]
    fn no_syndrome_without_isv() {
        // ldp to the UART: ISV clear, so nothing to emulate with.
        let raw = esr(EC_DABT_LOWER, IL | (3 << 16) | 0x07);
        let a = GuestAbort::decode(raw, 0x0900_0008, hpfar(0x0900_0000)).unwrap();
        assert_eq!(a.access, None);
        assert!(!a.write);
        assert_eq!(
            a.to_string(),
            "translation fault level 3, read, ipa 0x9000008"
        );
    }

    #[test]
    fn ipa_from_hpfar_and_far() {
        // The example from the brief: a 2 MiB-block translation fault.
        let raw = esr(EC_DABT_LOWER, IL | WNR | 0x06);
        let a = GuestAbort::decode(raw, 0x1234_5000, hpfar(0x4020_0000)).unwrap();
        assert_eq!(a.ipa, 0x4020_0000);
        assert_eq!(
            a.to_string(),
            "translation fault level 2, write, ipa 0x40200000"
        );
        // Page offset from FAR, page number from HPFAR; HPFAR bits outside
        // FIPA (3:0, 63:44) are ignored; a 52-bit IPA survives.
        let a = GuestAbort::decode(
            raw,
            0xdead_beef_0000_0abc,
            0xf000_0000_0000_000f | hpfar(0x000f_ffff_ffff_f000),
        )
        .unwrap();
        assert_eq!(a.ipa, 0x000f_ffff_ffff_fabc);
    }

    #[test]
    fn instruction_abort_is_never_a_write() {
        // IFSC permission level 3; WnR is RES0 for instruction aborts but
        // set it anyway: it must not leak into `write`.
        let raw = esr(EC_IABT_LOWER, IL | WNR | 0x0f);
        let a = GuestAbort::decode(raw, 0x4000_1234, hpfar(0x4000_1000)).unwrap();
        assert!(a.instruction);
        assert!(!a.write);
        assert_eq!(a.kind, AbortKind::Permission);
        assert_eq!(a.level, Some(3));
        assert_eq!(a.access, None);
        assert_eq!(
            a.to_string(),
            "permission fault level 3, fetch, ipa 0x40001234"
        );
    }

    #[test]
    fn stage1_walk_is_a_write_only_for_permission_faults() {
        // Translation fault on a walk, WnR clear: a read of the table.
        let a = GuestAbort::decode(esr(EC_DABT_LOWER, IL | S1PTW | 0x07), 0, hpfar(0x4100_0000))
            .unwrap();
        assert!(a.s1ptw);
        assert!(!a.write);
        assert_eq!(
            a.to_string(),
            "translation fault level 3, read by stage-1 walk for a data access, ipa 0x41000000"
        );
        // WnR set on a walk's translation fault still reads as a read: the
        // page is mapped first, a hardware update then takes a permission fault.
        let a = GuestAbort::decode(esr(EC_DABT_LOWER, IL | S1PTW | WNR | 0x07), 0, 0).unwrap();
        assert!(!a.write);
        // Permission fault on a walk: the walker writes the descriptor.
        for ec in [EC_DABT_LOWER, EC_IABT_LOWER] {
            let a = GuestAbort::decode(esr(ec, IL | S1PTW | 0x0f), 0, hpfar(0x4100_0000)).unwrap();
            assert!(a.write, "ec {ec:#x}");
            assert_eq!(a.instruction, ec == EC_IABT_LOWER);
        }
        let a = GuestAbort::decode(esr(EC_IABT_LOWER, IL | S1PTW | 0x0f), 0, hpfar(0x4100_0000))
            .unwrap();
        assert_eq!(
            a.to_string(),
            "permission fault level 3, write by stage-1 walk for a fetch, ipa 0x41000000"
        );
    }

    #[test]
    fn every_kind() {
        let cases: [(u64, AbortKind, Option<u8>, &str); 10] = [
            (
                0x00,
                AbortKind::AddressSize,
                Some(0),
                "address size fault level 0",
            ),
            (
                0x05,
                AbortKind::Translation,
                Some(1),
                "translation fault level 1",
            ),
            (
                0x0a,
                AbortKind::AccessFlag,
                Some(2),
                "access flag fault level 2",
            ),
            (
                0x0d,
                AbortKind::Permission,
                Some(1),
                "permission fault level 1",
            ),
            (0x10, AbortKind::External, None, "external abort"),
            (0x15, AbortKind::External, Some(1), "external abort level 1"),
            (0x21, AbortKind::Alignment, None, "alignment fault"),
            (0x30, AbortKind::Other(0x30), None, "fault status 0x30"),
            (0x18, AbortKind::Other(0x18), None, "fault status 0x18"),
            (0x3f, AbortKind::Other(0x3f), None, "fault status 0x3f"),
        ];
        for (dfsc, kind, level, text) in cases {
            let a = GuestAbort::decode(esr(EC_DABT_LOWER, IL | dfsc), 0x10, 0).unwrap();
            assert_eq!(a.kind, kind, "dfsc {dfsc:#x}");
            assert_eq!(a.level, level, "dfsc {dfsc:#x}");
            assert_eq!(a.to_string(), format!("{text}, read, ipa 0x10"));
        }
    }

    #[test]
    fn only_aborts_from_a_lower_el() {
        assert!(GuestAbort::decode(esr(EC_DABT_CUR, IL | 0x07), 0, 0).is_none());
        assert!(GuestAbort::decode(esr(EC_IABT_CUR, IL | 0x07), 0, 0).is_none());
        assert!(GuestAbort::decode(esr(0x16, IL), 0, 0).is_none()); // HVC
        assert!(GuestAbort::decode(esr(0x22, IL), 0, 0).is_none()); // PC alignment
        assert!(GuestAbort::decode(0, 0, 0).is_none());
    }

    #[test]
    fn sixteen_bit_instruction() {
        let a = GuestAbort::decode(esr(EC_DABT_LOWER, ISV | 0x07), 0, 0).unwrap();
        assert!(!a.il32);
    }

    /// The reference: the abort as the full syndrome decoder sees it.
    fn decode_via_esr(raw: u64, far: u64, hpfar: u64) -> Option<GuestAbort> {
        use crate::esr::{Esr, Iss};
        let esr = Esr::decode(raw);
        let (instruction, status, s1ptw, wnr, access) = match (esr.class, esr.iss) {
            (ExceptionClass::DataAbortLower, Iss::DataAbort(da)) => (
                false,
                da.status,
                da.s1ptw,
                da.write,
                da.access.map(|a| MmioAccess {
                    size: a.size.bytes(),
                    reg: a.reg,
                    sign_extend: a.sign_extend,
                    sixty_four: a.sixty_four,
                }),
            ),
            (ExceptionClass::InstrAbortLower, Iss::InstructionAbort(ia)) => {
                (true, ia.status, ia.s1ptw, false, None)
            }
            _ => return None,
        };
        let kind = AbortKind::from_status(status);
        Some(GuestAbort {
            kind,
            level: status.level,
            write: if s1ptw {
                kind == AbortKind::Permission
            } else {
                wnr
            },
            instruction,
            s1ptw,
            ipa: ((hpfar & HPFAR_FIPA_MASK) << 8) | (far & 0xfff),
            far,
            access,
            il32: esr.il,
        })
    }

    proptest! {
        #[test]
        fn the_fast_decode_agrees_with_the_full_syndrome_decoder(
            raw in any::<u64>(), far in any::<u64>(), hpfar in any::<u64>(), ec in prop_oneof![
                Just(EC_DABT_LOWER), Just(EC_IABT_LOWER), Just(EC_IABT_CUR), 0u64..0x40
            ],
        ) {
            let raw = (raw & !(0x3f << 26)) | ec << 26;
            prop_assert_eq!(GuestAbort::decode(raw, far, hpfar), decode_via_esr(raw, far, hpfar));
        }

        #[test]
        fn decode_matches_the_raw_fields(raw in any::<u64>(), far in any::<u64>(), hpfar_raw in any::<u64>()) {
            let ec = (raw >> 26) & 0x3f;
            let decoded = GuestAbort::decode(raw, far, hpfar_raw);
            prop_assert_eq!(decoded.is_some(), ec == EC_DABT_LOWER || ec == EC_IABT_LOWER);
            if let Some(a) = decoded {
                prop_assert_eq!(a.instruction, ec == EC_IABT_LOWER);
                prop_assert_eq!(a.ipa & 0xfff, far & 0xfff);
                prop_assert_eq!(a.ipa >> 12, (hpfar_raw >> 4) & ((1 << 40) - 1));
                prop_assert_eq!(a.far, far);
                prop_assert_eq!(a.il32, raw & IL != 0);
                prop_assert_eq!(a.s1ptw, raw & S1PTW != 0);
                let wnr = raw & WNR != 0;
                let expect_write = if a.s1ptw {
                    a.kind == AbortKind::Permission
                } else {
                    !a.instruction && wnr
                };
                prop_assert_eq!(a.write, expect_write);
                prop_assert_eq!(a.access.is_some(), !a.instruction && raw & ISV != 0);
                if let Some(m) = a.access {
                    prop_assert_eq!(m.size, 1u8 << ((raw >> 22) & 3));
                    prop_assert_eq!(u64::from(m.reg), (raw >> 16) & 0x1f);
                }
                let text = a.to_string();
                let ipa_suffix = format!(", ipa {:#x}", a.ipa);
                prop_assert!(text.ends_with(&ipa_suffix));
            }
        }
    }
}
