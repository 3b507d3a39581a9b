//! Translation-table geometry of the 4 KiB granule: levels, entry spans, indices.

/// log2 of the 4 KiB translation granule.
pub const PAGE_SHIFT: u32 = 12;
/// Size of a page and of a table page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Address bits resolved by one level (512 entries of 8 bytes).
pub const BITS_PER_LEVEL: u32 = 9;
/// Entries in one table page.
pub const ENTRIES_PER_TABLE: usize = 1 << BITS_PER_LEVEL;
/// Largest input-address size this crate builds tables for (no LPA2).
pub const MAX_IA_BITS: u32 = 48;
/// The largest leaf of the 4 KiB granule: a level-1 block.
pub const MAX_BLOCK: u64 = 1 << 30;
/// The most table pages a stage-2 root may concatenate.
pub const MAX_CONCAT_ROOT_PAGES: usize = 16;

/// A lookup level, 0 (top) to 3 (pages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(u8);

impl Level {
    /// The last level, whose entries map 4 KiB pages.
    pub const LAST: Level = Level(3);

    /// The level `n`, if it exists (0..=3).
    #[must_use]
    #[inline]
    pub const fn new(n: u8) -> Option<Level> {
        if n <= 3 {
            Some(Level(n))
        } else {
            None
        }
    }

    /// The level number.
    #[must_use]
    #[inline]
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The level below this one, if any.
    #[must_use]
    #[inline]
    pub const fn next(self) -> Option<Level> {
        Level::new(self.0 + 1)
    }

    /// Bit position of the lowest address bit this level's index resolves.
    #[must_use]
    #[inline]
    pub const fn shift(self) -> u32 {
        PAGE_SHIFT + BITS_PER_LEVEL * (3 - self.0 as u32)
    }

    /// Bytes one entry of this level spans: 512 GiB, 1 GiB, 2 MiB, 4 KiB.
    #[must_use]
    #[inline]
    pub const fn entry_size(self) -> u64 {
        1 << self.shift()
    }

    /// Whether an entry of this level may be a leaf (a block or a page).
    /// With the 4 KiB granule and no LPA2, level-0 entries are tables only.
    #[must_use]
    #[inline]
    pub const fn can_be_leaf(self) -> bool {
        self.0 >= 1
    }

    /// The start of the entry of this level that contains `addr`.
    #[must_use]
    #[inline]
    pub const fn align_down(self, addr: u64) -> u64 {
        addr & !(self.entry_size() - 1)
    }
}

/// The shape of one tree: where it starts and how wide its root is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input-address bits the tree translates.
    pub ia_bits: u32,
    /// The level of the root table.
    pub start_level: Level,
    /// Entries in the root (more than 512 for concatenated stage-2 roots).
    pub root_entries: usize,
}

impl Geometry {
    /// Stage-2 geometry for `ia_bits` of IPA: as few levels as possible,
    /// using up to 16 concatenated root tables (Arm ARM D8.2.6), as
    /// KVM chooses for `VTCR_EL2.SL0`.
    #[must_use]
    pub fn stage2(ia_bits: u32) -> Option<Geometry> {
        Self::with_concat(ia_bits, MAX_CONCAT_ROOT_PAGES)
    }

    /// Stage-1 geometry (one root page, no concatenation) for `va_bits`.
    #[must_use]
    pub fn stage1(va_bits: u32) -> Option<Geometry> {
        Self::with_concat(va_bits, 1)
    }

    fn with_concat(ia_bits: u32, max_pages: usize) -> Option<Geometry> {
        if !(25..=MAX_IA_BITS).contains(&ia_bits) {
            return None;
        }
        let extra = max_pages.trailing_zeros(); // log2: 0 or 4 bits
                                                // Levels needed when the root may resolve `extra` more bits.
        let levels = (ia_bits - extra - PAGE_SHIFT).div_ceil(BITS_PER_LEVEL);
        let start_level = Level::new((4 - levels) as u8)?;
        let root_bits = ia_bits - start_level.shift();
        Some(Geometry {
            ia_bits,
            start_level,
            root_entries: 1 << root_bits,
        })
    }

    /// Table pages the root occupies (1 to 16).
    #[must_use]
    pub const fn root_pages(&self) -> usize {
        self.root_entries.div_ceil(ENTRIES_PER_TABLE)
    }

    /// One past the highest input address the tree translates.
    #[must_use]
    pub const fn limit(&self) -> u64 {
        1 << self.ia_bits
    }

    /// `VTCR_EL2.T0SZ` / `TCR_EL2.T0SZ` for this tree.
    #[must_use]
    pub const fn t0sz(&self) -> u64 {
        64 - self.ia_bits as u64
    }

    /// `VTCR_EL2.SL0` for this tree (4 KiB granule encoding: 2 = level 0,
    /// 1 = level 1, 0 = level 2).
    #[must_use]
    pub const fn vtcr_sl0(&self) -> u64 {
        2 - self.start_level.0 as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes() {
        let sizes: [u64; 4] = [1 << 39, 1 << 30, 1 << 21, 1 << 12];
        for (n, size) in sizes.iter().enumerate() {
            assert_eq!(Level::new(n as u8).unwrap().entry_size(), *size);
        }
        assert_eq!(Level::new(4), None);
        assert_eq!(Level::LAST.next(), None);
        assert!(!Level::new(0).unwrap().can_be_leaf());
    }

    #[test]
    fn stage2_start_levels_use_concatenation() {
        // (ia_bits, start level, root pages) as KVM picks them.
        let cases = [
            (32, 2, 4),
            (36, 1, 1),
            (39, 1, 1),
            (40, 1, 2),
            (42, 1, 8),
            (43, 1, 16),
            (44, 0, 1),
            (48, 0, 1),
        ];
        for (ia, level, pages) in cases {
            let g = Geometry::stage2(ia).unwrap();
            assert_eq!(g.start_level.get(), level, "ia {ia}");
            assert_eq!(g.root_pages(), pages, "ia {ia}");
            assert_eq!((g.root_entries as u64) << g.start_level.shift(), 1u64 << ia);
        }
        assert_eq!(Geometry::stage2(49), None);
        assert_eq!(Geometry::stage2(24), None);
    }

    #[test]
    fn stage1_never_concatenates() {
        let g = Geometry::stage1(40).unwrap();
        assert_eq!((g.start_level.get(), g.root_entries), (0, 2));
        let g = Geometry::stage1(39).unwrap();
        assert_eq!((g.start_level.get(), g.root_entries), (1, 512));
        assert_eq!(g.t0sz(), 25);
    }
}
