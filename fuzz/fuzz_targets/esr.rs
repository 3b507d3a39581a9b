//! Exception syndromes and guest aborts: `hvcore::esr` decodes every `ESR_EL2` value the same way it was encoded, and `GuestAbort::decode` (the fast path every abort takes) agrees with the full syndrome decoder.
#![no_main]

use hvcore::esr::{AccessSize, Esr, ExceptionClass, FaultKind, FaultStatus, Iss};
use hvcore::guest_abort::{AbortKind, GuestAbort, MmioAccess};
use libfuzzer_sys::fuzz_target;

/// `HPFAR_EL2.FIPA`, bits \[43:4\].
const FIPA: u64 = ((1 << 44) - 1) & !0xf;

/// The abort as the full syndrome decoder sees it: the reference for the
/// fast path (as `guest_abort`'s property test builds it).
fn via_esr(raw: u64, far: u64, hpfar: u64) -> Option<GuestAbort> {
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
        ipa: ((hpfar & FIPA) << 8) | (far & 0xfff),
        far,
        access,
        il32: esr.il,
    })
}

fn bit(v: u64, n: u32) -> bool {
    v & (1 << n) != 0
}

fn check_status(s: FaultStatus, code: u64) {
    assert_eq!(u64::from(s.code), code & 0x3f);
    let walk_kinds = matches!(
        s.kind,
        FaultKind::AddressSize
            | FaultKind::Translation
            | FaultKind::AccessFlag
            | FaultKind::Permission
            | FaultKind::SyncExternalOnWalk
            | FaultKind::ParityOnWalk
    );
    // A level exactly for the level-reporting kinds, and it is the low
    // two bits.
    assert_eq!(s.level.is_some(), walk_kinds, "{s:?}");
    if let Some(level) = s.level {
        assert_eq!(u64::from(level), code & 3);
    }
    assert!(!s.to_string().is_empty());
}

fuzz_target!(|input: (u64, u64, u64)| {
    let (raw, far, hpfar) = input;
    let esr = Esr::decode(raw);
    assert_eq!(esr.raw, raw);
    assert_eq!(esr.il, bit(raw, 25));
    assert_eq!(esr.class, ExceptionClass::from_bits((raw >> 26) as u8));
    let ec = (raw >> 26) & 0x3f;
    if let ExceptionClass::Other(code) = esr.class {
        assert_eq!(u64::from(code), ec);
    }
    let _ = (esr.class.to_string(), esr.iss.to_string());
    let imm = (raw & 0xffff) as u16;
    match esr.iss {
        Iss::DataAbort(da) => {
            assert!(ec == 0x24 || ec == 0x25);
            check_status(da.status, raw);
            assert_eq!(da.access.is_some(), bit(raw, 24));
            if let Some(a) = da.access {
                let size = match a.size {
                    AccessSize::Byte => 0,
                    AccessSize::Halfword => 1,
                    AccessSize::Word => 2,
                    AccessSize::Doubleword => 3,
                };
                assert_eq!(size, (raw >> 22) & 3);
                assert_eq!(a.size.bytes(), 1 << size);
                assert_eq!(u64::from(a.reg), (raw >> 16) & 0x1f);
                assert_eq!(a.sign_extend, bit(raw, 21));
                assert_eq!(a.sixty_four, bit(raw, 15));
                assert_eq!(a.acquire_release, bit(raw, 14));
            }
            assert_eq!(
                (da.far_not_valid, da.external, da.cache_maintenance),
                (bit(raw, 10), bit(raw, 9), bit(raw, 8))
            );
            assert_eq!((da.s1ptw, da.write), (bit(raw, 7), bit(raw, 6)));
        }
        Iss::InstructionAbort(ia) => {
            assert!(ec == 0x20 || ec == 0x21);
            check_status(ia.status, raw);
            assert_eq!(
                (ia.far_not_valid, ia.external, ia.s1ptw),
                (bit(raw, 10), bit(raw, 9), bit(raw, 7))
            );
        }
        Iss::Hvc { imm: i } => assert!((ec == 0x12 || ec == 0x16) && i == imm),
        Iss::Smc { imm: i } => assert!((ec == 0x13 || ec == 0x17) && i == imm),
        Iss::Svc { imm: i } => assert!((ec == 0x11 || ec == 0x15) && i == imm),
        Iss::Brk { comment } => assert!(ec == 0x3c && comment == imm),
        Iss::SysReg(s) => {
            assert_eq!(ec, 0x18);
            // Every field back where it came from: the ISS re-encoded.
            let iss = u64::from(s.op0) << 20
                | u64::from(s.op2) << 17
                | u64::from(s.op1) << 14
                | u64::from(s.crn) << 10
                | u64::from(s.reg) << 5
                | u64::from(s.crm) << 1
                | u64::from(s.read);
            assert_eq!(iss, raw & 0x3f_ffff);
        }
        Iss::Raw(iss) => assert_eq!(u64::from(iss), raw & 0x1ff_ffff),
    }

    // The fast path against the full decoder, on the raw value and on the
    // same value with the class forced to each abort class (so that most
    // inputs exercise an abort).
    for raw in [
        raw,
        (raw & !(0x3f << 26)) | 0x24 << 26,
        (raw & !(0x3f << 26)) | 0x20 << 26,
    ] {
        let fast = GuestAbort::decode(raw, far, hpfar);
        assert_eq!(fast, via_esr(raw, far, hpfar), "esr {raw:#x}");
        let ec = (raw >> 26) & 0x3f;
        assert_eq!(fast.is_some(), ec == 0x20 || ec == 0x24);
        if let Some(a) = fast {
            assert_eq!(a.ipa & 0xfff, far & 0xfff);
            assert_eq!(a.ipa >> 12, (hpfar >> 4) & ((1 << 40) - 1));
            assert!(a.ipa < 1 << 52, "an IPA has at most 52 bits");
            assert!(
                !a.instruction || (!a.write || a.s1ptw),
                "a fetch never writes"
            );
            assert!(!a.instruction || a.access.is_none());
            if let Some(m) = a.access {
                assert!(matches!(m.size, 1 | 2 | 4 | 8) && m.reg < 32);
            }
            if let AbortKind::Other(code) = a.kind {
                assert_eq!(u64::from(code), raw & 0x3f);
            }
            assert!(a.to_string().ends_with(&format!(", ipa {:#x}", a.ipa)));
        }
    }
});
