//! Which level of a guest's own stage-1 table walk read a given page: the level an external abort on that walk reports (`FSC` 0x14 + level).
//!
//! When the guest's stage-1 walk reads a descriptor from an IPA in no
//! memory slot, the CPU exits with a stage-2 fault marked `S1PTW`, and
//! `HPFAR_EL2` names the page of the descriptor, not the level. On a real
//! machine with nothing at that address the walk gets a *synchronous
//! external abort on translation table walk*, whose fault status carries
//! the stage-1 lookup level (Arm ARM, `ESR_ELx.DFSC` 0b0101xx: "level 0"
//! to "level 3"). [`table_level`] finds that level the way the CPU found
//! the descriptor: it walks the guest's stage 1 from `TTBRn_EL1` for the
//! faulting VA, reading each descriptor through the caller's `read`, and
//! returns the level whose descriptor lies in the faulting page.
//!
//! What it covers: VMSAv8-64 stage 1 with the 4 KiB, 16 KiB and 64 KiB
//! granules, 48-bit output addresses, `TTBR0`/`TTBR1` chosen by VA bit 55.
//! It returns `None` when its walk does not reach that page (the guest
//! changed its tables meanwhile, or uses what this does not model, such as
//! 52-bit addresses); the caller then reports a plain external abort.

/// `TCR_EL1` fields.
mod tcr {
    pub const T0SZ_SHIFT: u32 = 0;
    pub const TG0_SHIFT: u32 = 14;
    pub const T1SZ_SHIFT: u32 = 16;
    pub const TG1_SHIFT: u32 = 30;
}

/// Output address bits of a descriptor (48-bit OA).
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
/// `TTBRn_EL1.BADDR` (bits 47:1; bit 0 is `CnP`).
const BADDR_MASK: u64 = 0x0000_ffff_ffff_fffe;

/// The guest's stage-1 registers at the fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage1 {
    /// `TCR_EL1`.
    pub tcr: u64,
    /// `TTBR0_EL1`.
    pub ttbr0: u64,
    /// `TTBR1_EL1`.
    pub ttbr1: u64,
}

/// The granule's size in address bits (12, 14 or 16), from a `TGn` field,
/// for the `TTBR0` (`upper` false) or `TTBR1` half.
const fn granule_bits(tg: u64, upper: bool) -> u32 {
    match (upper, tg) {
        (false, 0b01) | (true, 0b11) => 16,
        (false, 0b10) | (true, 0b01) => 14,
        // 4 KiB (and reserved values, treated as 4 KiB as the Arm ARM allows).
        _ => 12,
    }
}

/// The level of the stage-1 walk for `va` whose descriptor read is in the
/// 4 KiB page `table_page` (an IPA, low 12 bits ignored); `read` returns
/// the descriptor at an IPA, `None` where it cannot be read.
pub fn table_level(
    regs: &Stage1,
    va: u64,
    table_page: u64,
    mut read: impl FnMut(u64) -> Option<u64>,
) -> Option<u8> {
    let upper = va & (1 << 55) != 0;
    let (tsz, tg, ttbr) = if upper {
        (
            (regs.tcr >> tcr::T1SZ_SHIFT) & 0x3f,
            (regs.tcr >> tcr::TG1_SHIFT) & 0b11,
            regs.ttbr1,
        )
    } else {
        (
            (regs.tcr >> tcr::T0SZ_SHIFT) & 0x3f,
            (regs.tcr >> tcr::TG0_SHIFT) & 0b11,
            regs.ttbr0,
        )
    };
    let g = granule_bits(tg, upper);
    let stride = g - 3;
    // Input address bits, clamped to what VMSAv8-64 allows (16..=48 for
    // these granules: TnSZ 16..=39 here, larger values as 39).
    let ia_bits = 64 - (tsz.clamp(16, 39) as u32);
    // Levels needed to resolve ia_bits - g bits, `stride` bits a level.
    let levels = (ia_bits - g).div_ceil(stride);
    if levels > 4 || levels == 0 {
        return None;
    }
    let start = 4 - levels;
    let page = table_page >> 12;
    // The first table is aligned to its size, at least 64 bytes; the
    // `TTBRn_EL1.BADDR` bits below are RES0, read as 0 here (one of the
    // behaviours the Arm ARM allows when a guest sets them).
    let first_bits = ia_bits - (g + stride * (3 - start));
    let align = (8u64 << first_bits).max(64);
    let mut table = ttbr & BADDR_MASK & !(align - 1);
    for level in start..=3 {
        let shift = g + stride * (3 - level);
        let bits = if level == start {
            ia_bits - shift
        } else {
            stride
        };
        let index = (va >> shift) & ((1u64 << bits) - 1);
        let at = table + index * 8;
        if at >> 12 == page {
            return Some(level as u8);
        }
        // The last level's descriptor leads nowhere: no need to read it.
        if level == 3 {
            return None;
        }
        let desc = read(at)?;
        // A table descriptor (valid, bit 1 set) leads on; anything else
        // ends the walk short of the page.
        if desc & 0b11 != 0b11 {
            return None;
        }
        table = desc & OA_MASK & !((1u64 << g) - 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A guest memory of descriptors, and the tables of a walk for `va`.
    struct Mem(HashMap<u64, u64>);

    impl Mem {
        fn read(&self, ipa: u64) -> Option<u64> {
            self.0.get(&ipa).copied()
        }
    }

    /// 4 KiB granule, 39-bit VA (start level 1), as the test guests' map.
    const TCR_4K_39: u64 = 25 | (0b10 << 30) | (1 << 23);

    #[test]
    fn ttbr_bits_below_the_first_tables_alignment_read_as_zero() {
        // Found by the s1walk fuzz target: a TTBR0 with low BADDR bits set
        // made the walk read unaligned "descriptors".
        let va = 0x12_3456_7000u64;
        let l1 = 0x4000_0000u64;
        let i1 = (va >> 30) & 0x1ff;
        let regs = Stage1 {
            tcr: TCR_4K_39,
            ttbr0: l1 | 0xff2, // CnP clear, RES0 bits 11:1 set
            ttbr1: 0,
        };
        let mut reads = std::vec::Vec::new();
        let level = table_level(&regs, va, 0x5000_0000, |at| {
            reads.push(at);
            None
        });
        assert_eq!(level, None);
        assert_eq!(reads, [l1 + i1 * 8]);
        // And the level is found in the table's page all the same.
        assert_eq!(table_level(&regs, va, l1, |_| None), Some(1));
    }

    #[test]
    fn finds_each_level_of_a_4k_walk() {
        let va = 0x12_3456_7000u64; // below 2^39
        let (l1, l2, l3) = (0x4000_0000u64, 0x4000_1000u64, 0x4000_2000u64);
        let i1 = (va >> 30) & 0x1ff;
        let i2 = (va >> 21) & 0x1ff;
        let i3 = (va >> 12) & 0x1ff;
        let mut m = Mem(HashMap::new());
        m.0.insert(l1 + i1 * 8, l2 | 0b11);
        m.0.insert(l2 + i2 * 8, l3 | 0b11);
        m.0.insert(l3 + i3 * 8, 0x4100_0000 | 0b11);
        let regs = Stage1 {
            tcr: TCR_4K_39,
            ttbr0: l1,
            ttbr1: 0,
        };
        let walk = |page| table_level(&regs, va, page, |a| m.read(a));
        assert_eq!(walk(l1), Some(1));
        assert_eq!(walk(l2 | 0xabc), Some(2), "low bits ignored");
        assert_eq!(walk(l3), Some(3));
        assert_eq!(walk(0x2000_0000), None, "never read");
        // A level-2 table in no slot: the walk stops there, which is level 2.
        let mut m2 = Mem(HashMap::new());
        m2.0.insert(l1 + i1 * 8, 0x2000_0000 | 0b11);
        assert_eq!(table_level(&regs, va, 0x2000_0000, |a| m2.read(a)), Some(2));
        // A block at level 1: the walk ends before any level-2 read.
        let mut m3 = Mem(HashMap::new());
        m3.0.insert(l1 + i1 * 8, 0x4000_0000 | 0b01);
        assert_eq!(table_level(&regs, va, 0x2000_0000, |a| m3.read(a)), None);
    }

    #[test]
    fn four_levels_and_the_upper_half() {
        // 48-bit VA, 4 KiB granule: start level 0; TTBR1 for the upper half.
        let tcr = 16 | (16 << 16) | (0b10 << 30);
        let va = 0xffff_8000_1234_5000u64;
        let root = 0x4010_0000u64;
        let i0 = (va >> 39) & 0x1ff;
        let regs = Stage1 {
            tcr,
            ttbr0: 0x4020_0000,
            ttbr1: root | 1, // CnP ignored
        };
        assert_eq!(table_level(&regs, va, root, |_| None), Some(0));
        let mut m = Mem(HashMap::new());
        m.0.insert(root + i0 * 8, 0x5000_0000 | 0b11);
        assert_eq!(table_level(&regs, va, 0x5000_0000, |a| m.read(a)), Some(1));
        // The lower half goes through TTBR0.
        assert_eq!(table_level(&regs, 0x1000, 0x4020_0000, |_| None), Some(0));
    }

    #[test]
    fn sixty_four_k_granule() {
        // 64 KiB granule, 42-bit VA: levels 2 and 3 (13 bits each, 16 offset).
        let tcr = 22 | (0b01 << 14);
        let va = 0x2_1234_0000u64;
        let root = 0x4000_0000u64;
        let regs = Stage1 {
            tcr,
            ttbr0: root,
            ttbr1: 0,
        };
        assert_eq!(table_level(&regs, va, root, |_| None), Some(2));
        let i2 = (va >> 29) & 0x1fff;
        let mut m = Mem(HashMap::new());
        m.0.insert(root + i2 * 8, 0x3000_0000 | 0b11);
        let i3 = (va >> 16) & 0x1fff;
        assert_eq!(
            table_level(&regs, va, 0x3000_0000 + i3 * 8, |a| m.read(a)),
            Some(3)
        );
    }
}
