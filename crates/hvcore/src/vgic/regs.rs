//! The distributor's and redistributors' registers as a guest reads and writes them.
//!
//! Offsets are from the GICv3 architecture specification (IHI 0069),
//! chapter 12. Any offset and access width is accepted: a register that
//! does not exist, or an access of a width the register does not allow,
//! reads as zero and ignores the write.

use super::{affinity_of, Effects, Irq, Vgic, IRM, NR_IRQS, PRIORITY_MASK, PRIVATE, ROUTE_AFF};

/// Size of the distributor's window.
pub const DIST_SIZE: u64 = 0x1_0000;
/// Size of one vCPU's redistributor (`RD_base` then `SGI_base`).
pub const REDIST_STRIDE: u64 = 0x2_0000;
/// Offset of the `SGI_base` frame in a redistributor.
const SGI_BASE: u64 = 0x1_0000;

/// `GICD_CTLR` bits (single security state).
const CTLR_ENABLE_GRP0: u64 = 1 << 0;
const CTLR_ENABLE_GRP1: u64 = 1 << 1;
const CTLR_ARE: u64 = 1 << 4;
const CTLR_DS: u64 = 1 << 6;
/// `GICD_IIDR`, `GICR_IIDR`: implementer Arm (JEP106 0x43B), product 0.
const IIDR: u64 = 0x43b;
/// `GICD_PIDR2` / `GICR_PIDR2`: architecture revision 3 (bits 7:4).
const PIDR2: u64 = 0x3b;
/// `GICR_WAKER` bits.
const WAKER_PROCESSOR_SLEEP: u64 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u64 = 1 << 2;
/// The identification registers' window.
const ID_REGS: core::ops::Range<u64> = 0xffd0..0x1_0000;

/// Reads an identification register at `offset` (in `0xffd0..0x10000`).
const fn id_register(offset: u64) -> u64 {
    match offset {
        0xffe8 => PIDR2,
        // CIDR0-3: the CoreSight component id 0xb105f00d.
        0xfff0 => 0x0d,
        0xfff4 => 0xf0,
        0xfff8 => 0x05,
        0xfffc => 0xb1,
        _ => 0,
    }
}

/// The bit-per-interrupt registers, by their offset from the first one of
/// their bank (`GICD_IGROUPR0` is 0x080, ..., `GICD_ICACTIVER0` 0x380).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bits {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

impl Bits {
    /// Which bank starts at `base` (0x080, 0x100, ... 0x380).
    const fn at(base: u64) -> Option<Self> {
        Some(match base {
            0x080 => Self::Group,
            0x100 => Self::SetEnable,
            0x180 => Self::ClearEnable,
            0x200 => Self::SetPending,
            0x280 => Self::ClearPending,
            0x300 => Self::SetActive,
            0x380 => Self::ClearActive,
            _ => return None,
        })
    }

    fn read(self, irq: &Irq) -> bool {
        match self {
            Self::Group => irq.group1,
            Self::SetEnable | Self::ClearEnable => irq.enabled,
            Self::SetPending | Self::ClearPending => irq.pending(),
            Self::SetActive | Self::ClearActive => irq.active,
        }
    }

    fn write(self, irq: &mut Irq, bit: bool) {
        match (self, bit) {
            (Self::Group, b) => irq.group1 = b,
            (_, false) => {}
            (Self::SetEnable, true) => irq.enabled = true,
            (Self::ClearEnable, true) => irq.enabled = false,
            (Self::SetPending, true) => irq.latch = true,
            (Self::ClearPending, true) => irq.latch = false,
            (Self::SetActive, true) => irq.active = true,
            (Self::ClearActive, true) => irq.active = false,
        }
    }
}

impl Vgic {
    /// The bits of `bank` for the 32 interrupts from `first`, as `vcpu`
    /// sees them.
    fn read_bits(&self, vcpu: usize, first: u32, bank: Bits) -> u64 {
        (0..32).fold(0, |acc, i| match self.irq(vcpu, first + i) {
            Some(irq) if bank.read(irq) => acc | 1 << i,
            _ => acc,
        })
    }

    /// Writes `value` to `bank` for the 32 interrupts from `first`, as
    /// `vcpu` sees them.
    fn write_bits(&mut self, vcpu: usize, first: u32, bank: Bits, value: u64) -> Effects {
        let mut kick = 0;
        for i in 0..32 {
            let intid = first + i;
            let owner = self.owner(vcpu, intid);
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            bank.write(irq, value & (1 << i) != 0);
            if irq.pending() || irq.active {
                self.heat(vcpu, intid);
            }
            kick |= self.kick_if_needed(owner, vcpu, intid);
        }
        Effects { kick }
    }

    /// The kick bit of `owner` if the interrupt now needs its attention:
    /// it can be delivered, or it sits in one of its list registers.
    fn kick_if_needed(&self, owner: Option<usize>, vcpu: usize, intid: u32) -> u64 {
        match self.irq(vcpu, intid) {
            Some(irq) if irq.in_lr || self.deliverable(irq) => Self::kick_of(owner),
            _ => 0,
        }
    }

    /// The priority bytes of `count` interrupts from `first`.
    fn read_priorities(&self, vcpu: usize, first: u32, count: u32) -> u64 {
        (0..count).fold(0, |acc, i| {
            let p = self.irq(vcpu, first + i).map_or(0, |irq| irq.priority);
            acc | u64::from(p) << (8 * i)
        })
    }

    fn write_priorities(&mut self, vcpu: usize, first: u32, count: u32, value: u64) -> Effects {
        let mut kick = 0;
        for i in 0..count {
            let intid = first + i;
            let owner = self.owner(vcpu, intid);
            if let Some(irq) = self.irq_mut(vcpu, intid) {
                irq.priority = (value >> (8 * i)) as u8 & PRIORITY_MASK;
            }
            kick |= self.kick_if_needed(owner, vcpu, intid);
        }
        Effects { kick }
    }

    /// The configuration bits (2 per interrupt, the upper one "edge") of
    /// the 16 interrupts from `first`.
    fn read_config(&self, vcpu: usize, first: u32) -> u64 {
        (0..16).fold(0, |acc, i| match self.irq(vcpu, first + i) {
            Some(irq) if irq.edge => acc | 2 << (2 * i),
            _ => acc,
        })
    }

    fn write_config(&mut self, vcpu: usize, first: u32, value: u64) {
        for i in 0..16 {
            if let Some(irq) = self.irq_mut(vcpu, first + i) {
                irq.edge = value & (2 << (2 * i)) != 0;
            }
        }
    }

    /// Kicks every vCPU with a deliverable interrupt (after an enable).
    fn kick_all_pending(&self) -> Effects {
        let kick = (0..self.cpus.len())
            .filter(|&v| self.has_pending(v))
            .fold(0, |acc, v| acc | Self::kick_of(Some(v)));
        Effects { kick }
    }

    // -- distributor ---------------------------------------------------------

    /// A read of `size` bytes at `offset` in the distributor by `vcpu`.
    #[must_use]
    pub fn dist_read(&self, vcpu: usize, offset: u64, size: u8) -> u64 {
        let word = size == 4;
        match offset {
            0x0000 if word => {
                let mut v = CTLR_ARE | CTLR_DS;
                if self.group_enabled[0] {
                    v |= CTLR_ENABLE_GRP0;
                }
                if self.group_enabled[1] {
                    v |= CTLR_ENABLE_GRP1;
                }
                v
            }
            // TYPER: ITLinesNumber, IDbits = 10 bits (9), no LPIs, no MBIs.
            0x0004 if word => u64::from(NR_IRQS / 32 - 1) | 9 << 19,
            0x0008 if word => IIDR,
            0x0080..0x0400 if word && offset.is_multiple_of(4) => {
                let (bank, n) = (offset & !0x7f, (offset & 0x7f) / 4);
                match Bits::at(bank) {
                    // Bank 0 is the private interrupts: in the
                    // redistributor when affinity routing is on.
                    Some(b) if n > 0 => self.read_bits(vcpu, 32 * n as u32, b),
                    _ => 0,
                }
            }
            0x0400..0x0800 if matches!(size, 1 | 2 | 4 | 8) => {
                let first = (offset - 0x400) as u32;
                if first < PRIVATE {
                    0
                } else {
                    self.read_priorities(vcpu, first, u32::from(size))
                }
            }
            0x0c00..0x0d00 if word && offset.is_multiple_of(4) => {
                let first = ((offset - 0xc00) / 4 * 16) as u32;
                if first < PRIVATE {
                    0
                } else {
                    self.read_config(vcpu, first)
                }
            }
            0x6000..0x8000 if matches!(size, 4 | 8) => {
                let intid = ((offset - 0x6000) / 8) as u32;
                let route = match self.routes.get(intid.wrapping_sub(PRIVATE) as usize) {
                    Some(&r) if intid >= PRIVATE => r,
                    _ => 0,
                };
                if size == 8 && offset.is_multiple_of(8) {
                    route
                } else if size == 4 && offset.is_multiple_of(4) {
                    if offset.is_multiple_of(8) {
                        route & 0xffff_ffff
                    } else {
                        route >> 32
                    }
                } else {
                    0
                }
            }
            o if ID_REGS.contains(&o) && word => id_register(o),
            _ => 0,
        }
    }

    /// A write of the low `size` bytes of `value` at `offset` in the
    /// distributor by `vcpu`.
    pub fn dist_write(&mut self, vcpu: usize, offset: u64, size: u8, value: u64) -> Effects {
        let word = size == 4;
        match offset {
            0x0000 if word => {
                let was = self.group_enabled;
                self.group_enabled = [value & CTLR_ENABLE_GRP0 != 0, value & CTLR_ENABLE_GRP1 != 0];
                if self.group_enabled != was {
                    return self.kick_all_pending();
                }
                Effects::default()
            }
            0x0080..0x0400 if word && offset.is_multiple_of(4) => {
                let (bank, n) = (offset & !0x7f, (offset & 0x7f) / 4);
                match Bits::at(bank) {
                    Some(b) if n > 0 => self.write_bits(vcpu, 32 * n as u32, b, value),
                    _ => Effects::default(),
                }
            }
            0x0400..0x0800 if matches!(size, 1 | 2 | 4 | 8) => {
                let first = (offset - 0x400) as u32;
                if first < PRIVATE {
                    Effects::default()
                } else {
                    self.write_priorities(vcpu, first, u32::from(size), value)
                }
            }
            0x0c00..0x0d00 if word && offset.is_multiple_of(4) => {
                let first = ((offset - 0xc00) / 4 * 16) as u32;
                if first >= PRIVATE {
                    self.write_config(vcpu, first, value);
                }
                Effects::default()
            }
            0x6000..0x8000 if matches!(size, 4 | 8) => {
                let intid = ((offset - 0x6000) / 8) as u32;
                if intid < PRIVATE {
                    return Effects::default();
                }
                let Some(&old) = self.routes.get((intid - PRIVATE) as usize) else {
                    return Effects::default();
                };
                let new = if size == 8 && offset.is_multiple_of(8) {
                    value
                } else if size == 4 && offset.is_multiple_of(8) {
                    (old & !0xffff_ffff) | (value & 0xffff_ffff)
                } else if size == 4 && offset.is_multiple_of(4) {
                    (old & 0xffff_ffff) | (value & 0xffff_ffff) << 32
                } else {
                    old
                };
                self.routes[(intid - PRIVATE) as usize] = new & (ROUTE_AFF | IRM);
                let owner = self.target(intid);
                Effects {
                    kick: self.kick_if_needed(owner, vcpu, intid),
                }
            }
            _ => Effects::default(),
        }
    }

    // -- redistributors ------------------------------------------------------

    /// A read of `size` bytes at `offset` in the redistributor region (one
    /// [`REDIST_STRIDE`] per vCPU, in vCPU order).
    #[must_use]
    pub fn redist_read(&self, offset: u64, size: u8) -> u64 {
        let frame = (offset / REDIST_STRIDE) as usize;
        let offset = offset % REDIST_STRIDE;
        let Some(cpu) = self.cpus.get(frame) else {
            return 0;
        };
        let word = size == 4;
        if offset < SGI_BASE {
            let typer = affinity_of(frame) << 32
                | (frame as u64) << 8
                | u64::from(frame + 1 == self.cpus.len()) << 4;
            return match offset {
                0x0004 if word => IIDR,
                0x0008 if size == 8 => typer,
                0x0008 if word => typer & 0xffff_ffff,
                0x000c if word => typer >> 32,
                0x0014 if word && cpu.asleep => WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP,
                o if ID_REGS.contains(&o) && word => id_register(o),
                _ => 0,
            };
        }
        match offset - SGI_BASE {
            o @ 0x080..0x400 if word && o & 0x7f == 0 => {
                Bits::at(o).map_or(0, |b| self.read_bits(frame, 0, b))
            }
            o @ 0x400..0x420 if matches!(size, 1 | 2 | 4 | 8) => {
                let first = (o - 0x400) as u32;
                let count = u32::from(size).min(PRIVATE - first);
                self.read_priorities(frame, first, count)
            }
            0xc00 if word => self.read_config(frame, 0),
            0xc04 if word => self.read_config(frame, 16),
            _ => 0,
        }
    }

    /// A write of the low `size` bytes of `value` at `offset` in the
    /// redistributor region.
    pub fn redist_write(&mut self, offset: u64, size: u8, value: u64) -> Effects {
        let frame = (offset / REDIST_STRIDE) as usize;
        let offset = offset % REDIST_STRIDE;
        if frame >= self.cpus.len() {
            return Effects::default();
        }
        let word = size == 4;
        if offset < SGI_BASE {
            if offset == 0x0014 && word {
                self.cpus[frame].asleep = value & WAKER_PROCESSOR_SLEEP != 0;
            }
            return Effects::default();
        }
        match offset - SGI_BASE {
            o @ 0x080..0x400 if word && o & 0x7f == 0 => match Bits::at(o) {
                Some(b) => self.write_bits(frame, 0, b, value),
                None => Effects::default(),
            },
            o @ 0x400..0x420 if matches!(size, 1 | 2 | 4 | 8) => {
                let first = (o - 0x400) as u32;
                let count = u32::from(size).min(PRIVATE - first);
                self.write_priorities(frame, first, count, value)
            }
            // ICFGR0 (SGIs) is read-only: always edge.
            0xc04 if word => {
                self.write_config(frame, 16, value);
                Effects::default()
            }
            _ => Effects::default(),
        }
    }
}
