//! MMIO emulation: a data abort's syndrome through `hvcore::mmio::decode` and `complete` changes exactly the transfer register (width, sign extension, 32-bit destination, `xzr`) and the PC; the `Bus` finds what a linear scan of the accepted windows finds.
#![no_main]

use arbitrary::Arbitrary;
use hvcore::guest_abort::GuestAbort;
use hvcore::mmio::{self, Bus, BusError, MmioOp, Refusal};
use hvcore::regs::GuestRegs;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    esr_iss: u32,
    instruction: bool,
    far: u64,
    hpfar: u64,
    x: [u64; 31],
    pc: u64,
    device_value: u64,
    /// Windows: `(base, size)`; a small base in a 1 MiB space when the flag
    /// is set, so windows meet and overlap.
    windows: Vec<(bool, u64, u64)>,
    probes: Vec<u64>,
}

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1 << (8 * u32::from(size))) - 1
    }
}

fuzz_target!(|input: Input| {
    // --- one access ------------------------------------------------------
    let ec: u64 = if input.instruction { 0x20 } else { 0x24 };
    let esr = ec << 26 | u64::from(input.esr_iss & 0x3ff_ffff);
    let abort = GuestAbort::decode(esr, input.far, input.hpfar).expect("an abort class");
    let mut regs = GuestRegs {
        x: input.x,
        pc: input.pc,
        pstate: 0,
    };
    let before = regs;
    match mmio::decode(&regs, &abort) {
        Err(Refusal::Fetch) => assert!(abort.instruction),
        Err(Refusal::NoSyndrome) => assert!(!abort.instruction && abort.access.is_none()),
        Ok(op) => {
            let access = abort.access.expect("an op needs a syndrome");
            assert!(!abort.instruction);
            assert!(matches!(op.size(), 1 | 2 | 4 | 8));
            assert_eq!(op.size(), access.size);
            match op {
                MmioOp::Write { value, .. } => {
                    assert!(abort.write);
                    // The register's low bytes; xzr stores zero.
                    let reg = if access.reg < 31 {
                        regs.x[usize::from(access.reg)]
                    } else {
                        0
                    };
                    assert_eq!(value, reg & mask(access.size));
                }
                MmioOp::Read { .. } => assert!(!abort.write),
            }
            mmio::complete(&mut regs, &abort, op, input.device_value);
            let step = if abort.il32 { 4 } else { 2 };
            assert_eq!(regs.pc, before.pc.wrapping_add(step));
            for n in 0..31u8 {
                let (now, was) = (regs.x[usize::from(n)], before.x[usize::from(n)]);
                if n != access.reg || matches!(op, MmioOp::Write { .. }) {
                    assert_eq!(now, was, "x{n} changed");
                    continue;
                }
                // The load's register (Arm ARM, the LDR/LDRS* pseudocode):
                // the device's value cut to the access width, sign-extended
                // to the register width if asked, and a W register's top
                // half zero.
                let width = access.size;
                let mut want = input.device_value & mask(width);
                let negative = want >> (8 * u32::from(width) - 1) & 1 == 1;
                if access.sign_extend && negative {
                    want |= !mask(width);
                }
                if !access.sixty_four {
                    want &= 0xffff_ffff;
                }
                assert_eq!(now, want, "x{n}");
            }
            assert_eq!(regs.pstate, before.pstate);
        }
    }

    // --- the bus ---------------------------------------------------------
    let mut bus = Bus::new();
    let mut accepted: Vec<(u64, u64, usize)> = Vec::new();
    for (i, &(small, base, size)) in input.windows.iter().take(16).enumerate() {
        let (base, size) = if small {
            (base % (1 << 20), size % (1 << 16))
        } else {
            (base, size)
        };
        let res = bus.insert(base, size, i);
        match base.checked_add(size).filter(|_| size > 0) {
            None => assert_eq!(res, Err(BusError::Empty { base })),
            Some(end) => {
                let clash = accepted.iter().find(|&&(b, s, _)| b < end && base < b + s);
                match clash {
                    Some(&(with, _, _)) => assert_eq!(res, Err(BusError::Overlap { base, with })),
                    None => {
                        assert_eq!(res, Ok(()));
                        accepted.push((base, size, i));
                    }
                }
            }
        }
        if let Err(e) = res {
            assert!(!e.to_string().is_empty());
        }
    }
    let probes = input.probes.iter().copied().chain(
        accepted
            .iter()
            .flat_map(|&(b, s, _)| [b, b + s - 1, b + s, b.wrapping_sub(1)]),
    );
    for p in probes.take(64) {
        let want = accepted
            .iter()
            .find(|&&(b, s, _)| p >= b && p - b < s)
            .map(|&(b, _, i)| (i, p - b));
        assert_eq!(bus.find(p).map(|(d, o)| (*d, o)), want, "probe {p:#x}");
    }
    assert_eq!(
        bus.regions().map(|r| r.device).collect::<Vec<_>>(),
        accepted.iter().map(|a| a.2).collect::<Vec<_>>()
    );
});
