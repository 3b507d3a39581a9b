//! Hypercalls: a guest's `x0`-`x3` through the SMCCC service router and each service's decoder (`psci`, `smccc` architecture calls, `bench`), which must agree on who owns a function id, keep the arguments the calling convention keeps, and answer within the values the ABI allows.
#![no_main]

use arbitrary::Arbitrary;
use hvcore::bench::{self, BenchCall, BenchId};
use hvcore::psci::{self, ret, Call, PsciCall};
use hvcore::slots::MemSlot;
use hvcore::smccc::{self, ArchCall, CpuFacts, Service, Workarounds};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    regs: [u64; 4],
    /// Replaces the function id with one near the implemented ones.
    near: Option<(u8, u16)>,
    /// What the CPU and the firmware say about the workarounds.
    csv2: u8,
    ssbs: bool,
    ecbhb: bool,
    firmware: [i8; 3],
    slot: (u64, u64, bool),
}

fuzz_target!(|input: Input| {
    let mut regs = input.regs;
    if let Some((base, low)) = input.near {
        let base = [0x8400_0000u64, 0xc400_0000, 0x8000_0000, 0xc600_0000][usize::from(base % 4)];
        regs[0] = (regs[0] & !0xffff_ffff) | base | u64::from(low % 0x40);
    }
    let fid = regs[0] as u32;
    // The upper half of x0 is not the function id.
    let mut other = regs;
    other[0] ^= 0xffff_ffff_0000_0000;
    assert_eq!(psci::decode(&regs), psci::decode(&other));
    assert_eq!(bench::decode(&regs), bench::decode(&other));
    assert_eq!(smccc::decode_arch(&regs), smccc::decode_arch(&other));

    let service = smccc::service(fid);

    // --- PSCI ---------------------------------------------------------------
    let smc32 = fid & 1 << 30 == 0;
    let arg = |n: usize| {
        if smc32 {
            regs[n] & 0xffff_ffff
        } else {
            regs[n]
        }
    };
    match psci::decode(&regs) {
        Call::Psci(call) => {
            assert_eq!(
                service,
                Service::Psci,
                "PSCI call {fid:#x} routed elsewhere"
            );
            assert_eq!(psci::features(fid), ret::SUCCESS);
            assert!(!call.to_string().is_empty());
            match call {
                PsciCall::CpuOn {
                    target,
                    entry,
                    context,
                } => {
                    assert_eq!((target, entry, context), (arg(1), arg(2), arg(3)));
                }
                PsciCall::AffinityInfo {
                    target,
                    lowest_level,
                } => {
                    assert_eq!((target, lowest_level), (arg(1), arg(2)));
                }
                PsciCall::SystemOff { status } => assert_eq!(status, arg(1)),
                PsciCall::Features { fid } => assert_eq!(u64::from(fid), arg(1) & 0xffff_ffff),
                _ => {}
            }
        }
        Call::Unknown { fid: f } => {
            assert_eq!(f, fid);
            if fid != smccc::fid::VERSION {
                assert_eq!(psci::features(fid), ret::NOT_SUPPORTED);
            }
        }
    }
    // PSCI_FEATURES answers for any id: success or not supported only.
    let asked = regs[1] as u32;
    assert!(matches!(
        psci::features(asked),
        ret::SUCCESS | ret::NOT_SUPPORTED
    ));

    // --- architecture calls ---------------------------------------------------
    let arch = smccc::decode_arch(&regs);
    if arch != ArchCall::Unknown {
        assert_eq!(service, Service::Arch, "{arch:?} from {fid:#x}");
    }
    let facts = CpuFacts {
        csv2: input.csv2,
        ssbs: input.ssbs,
        ecbhb: input.ecbhb,
        firmware: input.firmware.map(i64::from),
    };
    for w in [Workarounds::decide(&facts), Workarounds::NONE] {
        for (n, &v) in w.0.iter().enumerate() {
            let allowed: &[i64] = match n {
                1 => &[ret::SUCCESS, ret::NOT_SUPPORTED, smccc::NOT_REQUIRED],
                _ => &[ret::SUCCESS, ret::NOT_SUPPORTED, smccc::UNAFFECTED],
            };
            assert!(allowed.contains(&v), "workaround {} = {v}", n + 1);
            assert_eq!(w.forwarded(n as u8 + 1), v == ret::SUCCESS);
        }
        assert!(!w.forwarded(0) && !w.forwarded(4));
        let answer = smccc::answer_arch(arch, &w);
        match arch {
            ArchCall::Version => assert_eq!(answer, smccc::VERSION_1_1),
            ArchCall::Features { fid } => {
                let want = match fid {
                    smccc::fid::VERSION | smccc::fid::ARCH_FEATURES => ret::SUCCESS,
                    smccc::fid::WORKAROUND_1 => w.0[0],
                    smccc::fid::WORKAROUND_2 => w.0[1],
                    smccc::fid::WORKAROUND_3 => w.0[2],
                    _ => ret::NOT_SUPPORTED,
                };
                assert_eq!(answer, want);
            }
            ArchCall::Workaround(n) => {
                assert!((1..=3).contains(&n));
                let want = if w.forwarded(n) {
                    ret::SUCCESS
                } else {
                    ret::NOT_SUPPORTED
                };
                assert_eq!(answer, want);
            }
            ArchCall::Unknown => assert_eq!(answer, ret::NOT_SUPPORTED),
        }
    }

    // --- benchmark calls ------------------------------------------------------
    match bench::decode(&regs) {
        None => assert!(!(0xc600_0000..=0xc600_0004).contains(&fid)),
        Some(call) => {
            assert_eq!(service, Service::VendorHyp);
            match call {
                BenchCall::Null => assert_eq!(fid, bench::fid::NULL),
                BenchCall::Start { id } => {
                    assert_eq!((fid, id as u64), (bench::fid::START, regs[1]));
                }
                BenchCall::Stop { id, ops } => {
                    assert_eq!((fid, id as u64, ops), (bench::fid::STOP, regs[1], regs[2]));
                }
                BenchCall::Age { ipa, size } => {
                    assert_eq!((fid, ipa, size), (bench::fid::AGE, regs[1], regs[2]));
                }
                BenchCall::DirtyLog { op } => {
                    assert_eq!((fid, op as u64), (bench::fid::DIRTY_LOG, regs[1]));
                }
                BenchCall::Invalid { fid: f } => {
                    assert_eq!(f, fid);
                    assert!(regs[1] >= 3, "a valid argument refused");
                }
            }
        }
    }
    if let Some(id) = BenchId::from_raw(regs[1]) {
        assert_eq!(id as u64, regs[1]);
        assert!(!id.key().is_empty());
    }
    assert_eq!(
        BenchId::from_raw(regs[1]).is_some(),
        regs[1] < BenchId::ALL.len() as u64
    );

    // BENCH_AGE's range check against any slot.
    let (slot_ipa, slot_size, readonly) = input.slot;
    let slot = MemSlot {
        name: "ram",
        ipa: slot_ipa,
        size: slot_size,
        host: 0,
        readonly,
    };
    let (ipa, size) = (regs[1], regs[2]);
    if bench::age_range_ok(&slot, ipa, size) {
        assert!(!readonly && size > 0 && ipa % 4096 == 0 && size % 4096 == 0);
        assert!(ipa >= slot.ipa && size <= slot.size && ipa - slot.ipa <= slot.size - size);
        assert!(slot.contains(ipa) && slot.contains(ipa + size - 1));
    }
});
