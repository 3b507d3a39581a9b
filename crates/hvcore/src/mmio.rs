//! MMIO emulation: the bus that finds which device an address belongs to, and what a trapped load or store means for the vCPU's registers.
//!
//! An access goes through three steps, each a plain function here:
//! [`Bus::find`] names the device and the offset; [`decode`] turns the
//! abort's syndrome into an [`MmioOp`] (or refuses an access it cannot
//! emulate); after the device has served it, [`complete`] writes a load's
//! value into its register (width, sign extension, `wzr`/`xzr`, 32-bit
//! destination) and moves the PC past the instruction.

use alloc::vec::Vec;
use core::fmt;

use crate::guest_abort::{GuestAbort, MmioAccess};
use crate::regs::GuestRegs;

/// One device's window on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region<D> {
    /// First IPA of the window.
    pub base: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The device that serves it.
    pub device: D,
}

/// Why a window was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// A window of size 0, or one that wraps past the top of the IPA space.
    Empty {
        /// Its base.
        base: u64,
    },
    /// It overlaps a window already on the bus.
    Overlap {
        /// Its base.
        base: u64,
        /// The base of the window it overlaps.
        with: u64,
    },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty { base } => write!(f, "MMIO window at {base:#x} is empty or wraps"),
            Self::Overlap { base, with } => {
                write!(f, "MMIO window at {base:#x} overlaps the one at {with:#x}")
            }
        }
    }
}

/// Device windows, disjoint, in the order they were inserted: a lookup
/// scans them in that order, so the busiest device goes first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bus<D> {
    regions: Vec<Region<D>>,
}

impl<D> Bus<D> {
    /// An empty bus.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            regions: Vec::new(),
        }
    }

    /// Puts `device` at `[base, base + size)`.
    ///
    /// # Errors
    ///
    /// [`BusError::Empty`] for a window of no size (or one that wraps),
    /// [`BusError::Overlap`] if it overlaps a window already there.
    pub fn insert(&mut self, base: u64, size: u64, device: D) -> Result<(), BusError> {
        let end = base
            .checked_add(size)
            .filter(|_| size > 0)
            .ok_or(BusError::Empty { base })?;
        let clash = self
            .regions
            .iter()
            .find(|r| r.base < end && base < r.base + r.size);
        if let Some(r) = clash {
            return Err(BusError::Overlap { base, with: r.base });
        }
        self.regions.push(Region { base, size, device });
        Ok(())
    }

    /// The device whose window holds `ipa`, and the offset into it. A
    /// linear scan: a VM has a handful of devices, and the scan costs
    /// fewer instructions than a binary search (this runs on every MMIO
    /// exit).
    #[must_use]
    pub fn find(&self, ipa: u64) -> Option<(&D, u64)> {
        self.regions.iter().find_map(|r| {
            let offset = ipa.wrapping_sub(r.base);
            (offset < r.size).then_some((&r.device, offset))
        })
    }

    /// Every window, in the order inserted.
    pub fn regions(&self) -> impl Iterator<Item = &Region<D>> {
        self.regions.iter()
    }
}

/// What a device is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioOp {
    /// Read `size` bytes (1, 2, 4 or 8).
    Read {
        /// Access width in bytes.
        size: u8,
    },
    /// Write the low `size` bytes of `value`.
    Write {
        /// Access width in bytes.
        size: u8,
        /// The value, already cut to `size` bytes.
        value: u64,
    },
}

impl MmioOp {
    /// The access width in bytes.
    #[must_use]
    pub const fn size(self) -> u8 {
        match self {
            Self::Read { size } | Self::Write { size, .. } => size,
        }
    }
}

/// Why an access to a device cannot be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The syndrome carries no instruction details (`ISV` = 0: a load or
    /// store pair, a writeback form, SIMD...).
    NoSyndrome,
    /// An instruction fetch from a device.
    Fetch,
}

impl Refusal {
    /// Why, for the log line.
    #[must_use]
    pub const fn why(self) -> &'static str {
        match self {
            Self::NoSyndrome => "MMIO access with no valid syndrome (ISV=0)",
            Self::Fetch => "instruction fetch from a device",
        }
    }
}

/// The mask of the low `size` bytes.
const fn width_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1 << (size as u32 * 8)) - 1
    }
}

/// What the trapped instruction asks of the device: a read, or a write of
/// its transfer register's low bytes (`wzr`/`xzr` writes 0).
///
/// # Errors
///
/// A [`Refusal`] for a fetch or an access without a valid syndrome.
pub fn decode(regs: &GuestRegs, abort: &GuestAbort) -> Result<MmioOp, Refusal> {
    if abort.instruction {
        return Err(Refusal::Fetch);
    }
    let access = abort.access.ok_or(Refusal::NoSyndrome)?;
    Ok(if abort.write {
        MmioOp::Write {
            size: access.size,
            value: regs.get(access.reg) & width_mask(access.size),
        }
    } else {
        MmioOp::Read { size: access.size }
    })
}

/// The register value a load of `raw` from a device leaves: cut to the
/// access width, sign-extended if the instruction asks (`SSE`), and, for a
/// 32-bit destination (`SF` clear), with bits 63:32 zero.
#[must_use]
pub const fn load_value(access: &MmioAccess, raw: u64) -> u64 {
    let mask = width_mask(access.size);
    let mut value = raw & mask;
    let top = 1u64 << (access.size as u32 * 8 - 1);
    if access.sign_extend && access.size < 8 && value & top != 0 {
        value |= !mask;
    }
    if !access.sixty_four {
        value &= u32::MAX as u64;
    }
    value
}

/// Finishes an emulated access: a load's `read` value goes into its
/// register ([`load_value`]; a load into `xzr` is dropped), and the PC
/// moves past the instruction. `read` is ignored for a write.
pub fn complete(regs: &mut GuestRegs, abort: &GuestAbort, op: MmioOp, read: u64) {
    if let (MmioOp::Read { .. }, Some(access)) = (op, abort.access) {
        regs.set(access.reg, load_value(&access, read));
    }
    regs.skip_instruction(abort.il32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_abort::AbortKind;
    use proptest::prelude::*;

    fn access(size: u8, reg: u8, sign_extend: bool, sixty_four: bool) -> MmioAccess {
        MmioAccess {
            size,
            reg,
            sign_extend,
            sixty_four,
        }
    }

    fn abort(write: bool, access: Option<MmioAccess>, il32: bool) -> GuestAbort {
        GuestAbort {
            kind: AbortKind::Translation,
            level: Some(1),
            write,
            instruction: false,
            s1ptw: false,
            ipa: 0x0900_0000,
            far: 0x0900_0000,
            access,
            il32,
        }
    }

    #[test]
    fn bus_finds_the_window_and_offset() {
        let mut bus = Bus::new();
        bus.insert(0x0900_0000, 0x1000, "uart").unwrap();
        bus.insert(0x0800_0000, 0x1_0000, "gicd").unwrap();
        bus.insert(0x080a_0000, 0x4_0000, "gicr").unwrap();
        assert_eq!(bus.find(0x0900_0018), Some((&"uart", 0x18)));
        assert_eq!(bus.find(0x0900_0000), Some((&"uart", 0)));
        assert_eq!(bus.find(0x0900_0fff), Some((&"uart", 0xfff)));
        assert_eq!(bus.find(0x0900_1000), None, "one past the end");
        assert_eq!(bus.find(0x08ff_ffff), None, "one before");
        assert_eq!(bus.find(0x0800_0004), Some((&"gicd", 4)));
        assert_eq!(bus.find(0x080d_ffff), Some((&"gicr", 0x3_ffff)));
        assert_eq!(bus.find(0), None);
        assert_eq!(bus.find(u64::MAX), None);
        let bases: Vec<u64> = bus.regions().map(|r| r.base).collect();
        assert_eq!(
            bases,
            [0x0900_0000, 0x0800_0000, 0x080a_0000],
            "in insertion order"
        );
    }

    #[test]
    fn bus_refuses_overlaps_and_empty_windows() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x1000, 1).unwrap();
        assert_eq!(
            bus.insert(0x1800, 0x1000, 2),
            Err(BusError::Overlap {
                base: 0x1800,
                with: 0x1000
            })
        );
        assert_eq!(
            bus.insert(0x0800, 0x1000, 3),
            Err(BusError::Overlap {
                base: 0x0800,
                with: 0x1000
            })
        );
        assert_eq!(
            bus.insert(0x0, 0x10000, 4),
            Err(BusError::Overlap {
                base: 0,
                with: 0x1000
            }),
            "a window that covers another"
        );
        assert_eq!(
            bus.insert(0x5000, 0, 5),
            Err(BusError::Empty { base: 0x5000 })
        );
        assert_eq!(
            bus.insert(u64::MAX - 1, 4, 6),
            Err(BusError::Empty { base: u64::MAX - 1 })
        );
        // Touching windows are fine on both sides.
        bus.insert(0x0, 0x1000, 7).unwrap();
        bus.insert(0x2000, 0x1000, 8).unwrap();
        assert_eq!(bus.find(0xfff), Some((&7, 0xfff)));
        assert_eq!(bus.find(0x2000), Some((&8, 0)));
        assert!(!BusError::Empty { base: 1 }.to_string().is_empty());
    }

    proptest! {
        /// Against a linear scan: whatever was inserted (or refused), find
        /// answers as a search of the accepted windows would.
        #[test]
        fn bus_matches_a_linear_scan(windows in prop::collection::vec((0u64..64, 1u64..8), 1..12), probes in prop::collection::vec(0u64..80, 1..40)) {
            let mut bus = Bus::new();
            let mut accepted: Vec<(u64, u64, usize)> = Vec::new();
            for (i, &(base, size)) in windows.iter().enumerate() {
                let overlaps = accepted.iter().any(|&(b, s, _)| b < base + size && base < b + s);
                let res = bus.insert(base, size, i);
                prop_assert_eq!(res.is_ok(), !overlaps);
                if res.is_ok() {
                    accepted.push((base, size, i));
                }
            }
            for p in probes {
                let want = accepted.iter().find(|&&(b, s, _)| p >= b && p < b + s).map(|&(b, _, i)| (i, p - b));
                prop_assert_eq!(bus.find(p).map(|(d, o)| (*d, o)), want);
            }
        }
    }

    #[test]
    fn stores_take_the_low_bytes_and_xzr_writes_zero() {
        let mut regs = GuestRegs::default();
        regs.x[3] = 0x1122_3344_5566_7788;
        let op = |size, reg| {
            decode(
                &regs,
                &abort(true, Some(access(size, reg, false, true)), true),
            )
        };
        assert_eq!(
            op(1, 3),
            Ok(MmioOp::Write {
                size: 1,
                value: 0x88
            })
        );
        assert_eq!(
            op(2, 3),
            Ok(MmioOp::Write {
                size: 2,
                value: 0x7788
            })
        );
        assert_eq!(
            op(4, 3),
            Ok(MmioOp::Write {
                size: 4,
                value: 0x5566_7788
            })
        );
        assert_eq!(
            op(8, 3),
            Ok(MmioOp::Write {
                size: 8,
                value: 0x1122_3344_5566_7788
            })
        );
        assert_eq!(op(4, 31), Ok(MmioOp::Write { size: 4, value: 0 }), "wzr");
        assert_eq!(op(4, 31).unwrap().size(), 4);
    }

    #[test]
    fn refusals() {
        let regs = GuestRegs::default();
        assert_eq!(
            decode(&regs, &abort(false, None, true)),
            Err(Refusal::NoSyndrome)
        );
        let mut fetch = abort(false, Some(access(4, 0, false, false)), true);
        fetch.instruction = true;
        assert_eq!(decode(&regs, &fetch), Err(Refusal::Fetch));
        assert_ne!(Refusal::Fetch.why(), Refusal::NoSyndrome.why());
    }

    #[test]
    fn loads_cut_extend_and_clear_the_top_half() {
        // ldrb w0: zero-extended byte.
        assert_eq!(load_value(&access(1, 0, false, false), 0xffff_ff80), 0x80);
        // ldrsb w0: sign-extended to 32 bits only.
        assert_eq!(load_value(&access(1, 0, true, false), 0x80), 0xffff_ff80);
        // ldrsb x0: to 64 bits.
        assert_eq!(
            load_value(&access(1, 0, true, true), 0x80),
            0xffff_ffff_ffff_ff80
        );
        // ldrsb x0 of a positive byte.
        assert_eq!(load_value(&access(1, 0, true, true), 0x7f), 0x7f);
        // ldrsh x0, ldrsw x0.
        assert_eq!(
            load_value(&access(2, 0, true, true), 0x8001),
            0xffff_ffff_ffff_8001
        );
        assert_eq!(
            load_value(&access(4, 0, true, true), 0x8000_0000),
            0xffff_ffff_8000_0000
        );
        // ldr w0: 32 bits of a wider device value.
        assert_eq!(
            load_value(&access(4, 0, false, false), 0x1_2345_6789),
            0x2345_6789
        );
        // ldr x0: all 64.
        assert_eq!(load_value(&access(8, 0, false, true), u64::MAX), u64::MAX);
    }

    #[test]
    fn complete_sets_the_register_and_advances_the_pc() {
        let mut regs = GuestRegs::at_entry(0x1000, 0);
        regs.x[5] = 0xaaaa;
        let a = abort(false, Some(access(2, 5, false, true)), true);
        complete(&mut regs, &a, MmioOp::Read { size: 2 }, 0x1234_5678);
        assert_eq!(regs.x[5], 0x5678);
        assert_eq!(regs.pc, 0x1004);

        // A 16-bit T32 instruction (IL = 0) moves the PC by 2.
        let a = abort(false, Some(access(4, 6, false, false)), false);
        complete(&mut regs, &a, MmioOp::Read { size: 4 }, 9);
        assert_eq!((regs.x[6], regs.pc), (9, 0x1006));

        // A load into xzr changes no register.
        let before = regs.x;
        let a = abort(false, Some(access(8, 31, false, true)), true);
        complete(&mut regs, &a, MmioOp::Read { size: 8 }, 0xffff);
        assert_eq!(regs.x, before);

        // A write leaves every register alone.
        let a = abort(true, Some(access(8, 5, false, true)), true);
        complete(&mut regs, &a, MmioOp::Write { size: 8, value: 1 }, 0xdead);
        assert_eq!(regs.x, before);
        assert_eq!(regs.pc, 0x100e);
    }
}
