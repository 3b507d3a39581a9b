//! The benchmark hypercalls (`bench=on`): SMCCC vendor-specific hypervisor calls that bracket guest operations, decoded here.
//!
//! `docs/guest-abi.md` is the contract. The functions are fast calls with
//! the SMC64 convention in the vendor-specific hypervisor service range
//! (owning entity 6): function ids `0xc600_00nn`. A guest brackets `n`
//! operations with [`fid::START`] and [`fid::STOP`]; the hypervisor counts
//! the instructions it retires at EL2 in between and prints them. This
//! module only turns a guest's `x0`-`x3` into a [`BenchCall`] and checks the
//! one argument that needs the VM's memory map ([`age_range_ok`]); the
//! hypervisor answers nothing here unless booted with `bench=on`.

use crate::slots::MemSlot;

/// Function ids (`w0`) of the benchmark hypercalls.
pub mod fid {
    /// `BENCH_NULL`: does nothing, returns 0. The null hypercall.
    pub const NULL: u32 = 0xc600_0000;
    /// `BENCH_START(id)`: opens a bracket on the calling vCPU.
    pub const START: u32 = 0xc600_0001;
    /// `BENCH_STOP(id, ops)`: closes it; the hypervisor prints the count.
    pub const STOP: u32 = 0xc600_0002;
    /// `BENCH_AGE(ipa, size)`: clears the stage-2 access flags of a RAM range.
    pub const AGE: u32 = 0xc600_0003;
    /// `BENCH_DIRTY_LOG(op)`: dirty logging of RAM on, a metered
    /// get-and-clear, or off ([`super::DirtyLogOp`]).
    pub const DIRTY_LOG: u32 = 0xc600_0004;
}

/// What `BENCH_DIRTY_LOG` does (its `x1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyLogOp {
    /// Turn dirty logging of guest RAM on (split, write-protect).
    Enable = 0,
    /// Get and clear the log; the hypervisor prints the instructions the
    /// get-and-clear alone took (`bench: dirty-log: ...`).
    GetAndClear = 1,
    /// Turn it off.
    Disable = 2,
}

/// What a bracket measures: its `x1` in `BENCH_START`/`BENCH_STOP`, and the
/// key the hypervisor prints it under (`bench: <key>: ...`), which
/// `scripts/bench.sh` turns into a row of its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchId {
    /// An empty bracket (no operation): the cost of the bracket itself,
    /// subtracted from every later one on the same vCPU.
    Calibrate = 0,
    /// `BENCH_NULL` hypercalls: the round trip of an `HVC`.
    Hvc = 1,
    /// Translation faults that each map one 4 KiB page.
    Fault4K = 2,
    /// Translation faults that each map one 2 MiB block.
    Fault2M = 3,
    /// Instruction fetches from data pages: permission faults adding X to a page.
    Relax4K = 4,
    /// The same on 2 MiB blocks.
    Relax2M = 5,
    /// Accesses to aged 4 KiB pages: access-flag faults.
    AccessFlag4K = 6,
    /// The same on 2 MiB blocks.
    AccessFlag2M = 7,
    /// Writes to the emulated PL011's data register (no line completed).
    MmioWrite = 8,
    /// Touching fresh RAM, one write per 4 KiB, with 4 KiB mappings only:
    /// the operations are MiB, the exits are the faults.
    Touch4K = 9,
    /// The same where faults map blocks.
    TouchBlocks = 10,
    /// Trapped `ICC_SGI1R_EL1` writes sending an SGI to another vCPU: the
    /// sender's exit.
    SgiSend = 11,
    /// IPIs taken by a vCPU running its guest: the receiver's exits (the
    /// kick, and the delivery into a list register).
    IpiReceive = 12,
    /// Virtual timer interrupts, from the physical interrupt to the guest's
    /// vector.
    Vtimer = 13,
    /// Reads of an emulated distributor register (`GICD_TYPER`).
    GicdRead = 14,
    /// `WFI`s that block the vCPU until its virtual timer wakes it.
    Wfi = 15,
}

impl BenchId {
    /// Every id, in order of value.
    pub const ALL: [BenchId; 16] = [
        BenchId::Calibrate,
        BenchId::Hvc,
        BenchId::Fault4K,
        BenchId::Fault2M,
        BenchId::Relax4K,
        BenchId::Relax2M,
        BenchId::AccessFlag4K,
        BenchId::AccessFlag2M,
        BenchId::MmioWrite,
        BenchId::Touch4K,
        BenchId::TouchBlocks,
        BenchId::SgiSend,
        BenchId::IpiReceive,
        BenchId::Vtimer,
        BenchId::GicdRead,
        BenchId::Wfi,
    ];

    /// The id a guest passes as `raw`, if there is one.
    #[must_use]
    pub const fn from_raw(raw: u64) -> Option<Self> {
        if raw < Self::ALL.len() as u64 {
            Some(Self::ALL[raw as usize])
        } else {
            None
        }
    }

    /// The key the hypervisor prints the bracket under.
    #[must_use]
    pub const fn key(self) -> &'static str {
        match self {
            BenchId::Calibrate => "calibrate",
            BenchId::Hvc => "hvc",
            BenchId::Fault4K => "fault-4k",
            BenchId::Fault2M => "fault-2m",
            BenchId::Relax4K => "relax-4k",
            BenchId::Relax2M => "relax-2m",
            BenchId::AccessFlag4K => "access-flag-4k",
            BenchId::AccessFlag2M => "access-flag-2m",
            BenchId::MmioWrite => "mmio-write",
            BenchId::Touch4K => "touch-4k",
            BenchId::TouchBlocks => "touch-blocks",
            BenchId::SgiSend => "sgi-send",
            BenchId::IpiReceive => "ipi-receive",
            BenchId::Vtimer => "vtimer",
            BenchId::GicdRead => "gicd-read",
            BenchId::Wfi => "wfi",
        }
    }
}

/// A decoded benchmark hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchCall {
    /// `BENCH_NULL`.
    Null,
    /// `BENCH_START(id)`.
    Start {
        /// What the bracket measures.
        id: BenchId,
    },
    /// `BENCH_STOP(id, ops)`.
    Stop {
        /// What the bracket measured (must be the open bracket's).
        id: BenchId,
        /// How many operations the guest made inside it.
        ops: u64,
    },
    /// `BENCH_AGE(ipa, size)`: unchecked until [`age_range_ok`].
    Age {
        /// First IPA.
        ipa: u64,
        /// Size in bytes.
        size: u64,
    },
    /// `BENCH_DIRTY_LOG(op)`.
    DirtyLog {
        /// What to do.
        op: DirtyLogOp,
    },
    /// A benchmark function with an id no bracket has (or an operation
    /// `BENCH_DIRTY_LOG` does not know): answer `INVALID_PARAMETERS`.
    Invalid {
        /// The function id (`w0`).
        fid: u32,
    },
}

/// Decodes a benchmark hypercall from the guest's `x0`-`x3`; `None` for any
/// other function id (including other ids in the vendor range, and the
/// SMC32 forms `0x8600_00nn`), which are someone else's to answer. The
/// function id is `w0`: the upper half of `x0` is ignored, as SMCCC requires.
#[must_use]
pub const fn decode(regs: &[u64; 4]) -> Option<BenchCall> {
    let fid = regs[0] as u32;
    Some(match fid {
        fid::NULL => BenchCall::Null,
        fid::START => match BenchId::from_raw(regs[1]) {
            Some(id) => BenchCall::Start { id },
            None => BenchCall::Invalid { fid },
        },
        fid::STOP => match BenchId::from_raw(regs[1]) {
            Some(id) => BenchCall::Stop { id, ops: regs[2] },
            None => BenchCall::Invalid { fid },
        },
        fid::AGE => BenchCall::Age {
            ipa: regs[1],
            size: regs[2],
        },
        fid::DIRTY_LOG => match regs[1] {
            0 => BenchCall::DirtyLog {
                op: DirtyLogOp::Enable,
            },
            1 => BenchCall::DirtyLog {
                op: DirtyLogOp::GetAndClear,
            },
            2 => BenchCall::DirtyLog {
                op: DirtyLogOp::Disable,
            },
            _ => BenchCall::Invalid { fid },
        },
        _ => return None,
    })
}

/// Granule of `BENCH_AGE` ranges.
const PAGE: u64 = 4096;

/// Whether `BENCH_AGE` may age `[ipa, ipa + size)` in `slot`: a non-empty
/// range of whole 4 KiB pages, wholly inside the slot, and the slot is
/// writable RAM (the ROM is left alone).
#[must_use]
pub fn age_range_ok(slot: &MemSlot, ipa: u64, size: u64) -> bool {
    let aligned = ipa.is_multiple_of(PAGE) && size.is_multiple_of(PAGE);
    let inside = ipa
        .checked_add(size)
        .zip(slot.ipa.checked_add(slot.size))
        .is_some_and(|(end, slot_end)| ipa >= slot.ipa && end <= slot_end);
    !slot.readonly && size > 0 && aligned && inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn call(regs: [u64; 4]) -> Option<BenchCall> {
        decode(&regs)
    }

    const RAM: MemSlot = MemSlot {
        name: "ram",
        ipa: 0x4000_0000,
        size: 128 << 20,
        host: 0x4840_0000,
        readonly: false,
    };

    #[test]
    fn every_function() {
        assert_eq!(call([0xc600_0000, 7, 8, 9]), Some(BenchCall::Null));
        assert_eq!(
            call([0xc600_0001, 1, 0, 0]),
            Some(BenchCall::Start { id: BenchId::Hvc })
        );
        assert_eq!(
            call([0xc600_0002, 2, 512, 0]),
            Some(BenchCall::Stop {
                id: BenchId::Fault4K,
                ops: 512
            })
        );
        assert_eq!(
            call([0xc600_0003, 0x4020_0000, 0x20_0000, 0]),
            Some(BenchCall::Age {
                ipa: 0x4020_0000,
                size: 0x20_0000
            })
        );
        // SMC64: every argument keeps its 64 bits.
        assert_eq!(
            call([0xc600_0002, 0, u64::MAX, 0]),
            Some(BenchCall::Stop {
                id: BenchId::Calibrate,
                ops: u64::MAX
            })
        );
        // The function id is w0.
        assert_eq!(
            call([0xdead_beef_c600_0000, 0, 0, 0]),
            Some(BenchCall::Null)
        );
    }

    #[test]
    fn unknown_bracket_ids_are_invalid() {
        let first_unknown = BenchId::ALL.len() as u64;
        for raw in [first_unknown, first_unknown + 1, 255, 1 << 32, u64::MAX] {
            assert_eq!(
                call([0xc600_0001, raw, 0, 0]),
                Some(BenchCall::Invalid { fid: fid::START })
            );
            assert_eq!(
                call([0xc600_0002, raw, 1, 0]),
                Some(BenchCall::Invalid { fid: fid::STOP })
            );
        }
    }

    #[test]
    fn dirty_log_operations() {
        let ops = [
            DirtyLogOp::Enable,
            DirtyLogOp::GetAndClear,
            DirtyLogOp::Disable,
        ];
        for op in ops {
            assert_eq!(
                call([0xc600_0004, op as u64, 0, 0]),
                Some(BenchCall::DirtyLog { op })
            );
        }
        for raw in [3, 4, u64::MAX] {
            assert_eq!(
                call([0xc600_0004, raw, 0, 0]),
                Some(BenchCall::Invalid {
                    fid: fid::DIRTY_LOG
                })
            );
        }
    }

    #[test]
    fn other_functions_are_not_ours() {
        for fid in [
            0xc600_0005u32, // next in the range: not implemented
            0xc600_ffff,
            0x8600_0000, // SMC32 forms
            0x8600_0001,
            0xc500_0000, // another owner
            0x8400_0000, // PSCI_VERSION
            0,
            u32::MAX,
        ] {
            assert_eq!(call([u64::from(fid), 1, 2, 3]), None, "{fid:#x}");
        }
    }

    #[test]
    fn ids_round_trip_with_unique_keys() {
        for (i, id) in BenchId::ALL.iter().enumerate() {
            assert_eq!(*id as usize, i);
            assert_eq!(BenchId::from_raw(i as u64), Some(*id));
            let key = id.key();
            assert!(key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            assert_eq!(BenchId::ALL.iter().filter(|o| o.key() == key).count(), 1);
        }
        assert_eq!(BenchId::from_raw(BenchId::ALL.len() as u64), None);
    }

    #[test]
    fn age_ranges() {
        let end = RAM.ipa + RAM.size;
        assert!(age_range_ok(&RAM, RAM.ipa, RAM.size));
        assert!(age_range_ok(&RAM, 0x4020_0000, 0x20_0000));
        assert!(age_range_ok(&RAM, end - 4096, 4096));
        // Empty, unaligned, outside, across an end, wrapping.
        assert!(!age_range_ok(&RAM, 0x4020_0000, 0));
        assert!(!age_range_ok(&RAM, 0x4020_0008, 4096));
        assert!(!age_range_ok(&RAM, 0x4020_0000, 4095));
        assert!(!age_range_ok(&RAM, RAM.ipa - 4096, 4096));
        assert!(!age_range_ok(&RAM, RAM.ipa - 4096, 8192));
        assert!(!age_range_ok(&RAM, end, 4096));
        assert!(!age_range_ok(&RAM, end - 4096, 8192));
        assert!(!age_range_ok(&RAM, 0x4020_0000, !0xfffu64));
        assert!(!age_range_ok(&RAM, !0xfffu64, 0x2000));
        // Never the read-only slot.
        let rom = MemSlot {
            readonly: true,
            ..RAM
        };
        assert!(!age_range_ok(&rom, RAM.ipa, 4096));
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_keeps_the_range(regs in any::<[u64; 4]>(), f in 0u32..6) {
            let mut regs = regs;
            regs[0] = u64::from(0xc600_0000 + f) | (regs[0] & !0xffff_ffff);
            match call(regs) {
                None => prop_assert!(f > 4),
                Some(BenchCall::Start { id } | BenchCall::Stop { id, .. }) => {
                    prop_assert_eq!(id as u64, regs[1]);
                }
                Some(_) => prop_assert!(f <= 4),
            }
        }

        #[test]
        fn aged_ranges_are_inside_ram(ipa in any::<u64>(), size in any::<u64>()) {
            if age_range_ok(&RAM, ipa, size) {
                prop_assert!(ipa >= RAM.ipa && size > 0);
                prop_assert!(ipa - RAM.ipa + size <= RAM.size);
                prop_assert!(ipa % 4096 == 0 && size % 4096 == 0);
            }
        }
    }
}
