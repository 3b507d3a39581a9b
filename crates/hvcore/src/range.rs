//! Physical address ranges and a fixed-capacity set of disjoint ranges.
//!
//! Used at boot to compute usable memory: the memory regions the device tree
//! reports, minus the hypervisor image, the device tree blob, any initrd and
//! the reserved-memory entries. No allocation: the heap does not exist yet.

use core::fmt;

use crate::addr::PhysAddr;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PhysRange {
    start: u64,
    end: u64,
}

/// Why a range could not be built or a set could not be updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// `base + size` overflows the 64-bit address space.
    Overflow {
        /// The base address.
        base: u64,
        /// The size.
        size: u64,
    },
    /// `end` lies before `start`.
    Inverted {
        /// The start address.
        start: u64,
        /// The end address.
        end: u64,
    },
    /// The set has no room for another disjoint range.
    Full {
        /// The set's capacity.
        capacity: usize,
    },
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overflow { base, size } => {
                write!(f, "range {base:#x} + {size:#x} overflows the address space")
            }
            Self::Inverted { start, end } => {
                write!(f, "range end {end:#x} before start {start:#x}")
            }
            Self::Full { capacity } => write!(f, "more than {capacity} disjoint memory ranges"),
        }
    }
}

impl PhysRange {
    /// The range `[start, end)`.
    ///
    /// # Errors
    ///
    /// [`RangeError::Inverted`] if `end < start`.
    pub const fn new(start: u64, end: u64) -> Result<Self, RangeError> {
        if end < start {
            return Err(RangeError::Inverted { start, end });
        }
        Ok(Self { start, end })
    }

    /// The range `[base, base + size)`.
    ///
    /// # Errors
    ///
    /// [`RangeError::Overflow`] if the end is not representable.
    pub const fn from_base_size(base: u64, size: u64) -> Result<Self, RangeError> {
        match base.checked_add(size) {
            Some(end) => Ok(Self { start: base, end }),
            None => Err(RangeError::Overflow { base, size }),
        }
    }

    /// First address in the range.
    #[must_use]
    pub const fn start(self) -> PhysAddr {
        PhysAddr::new(self.start)
    }

    /// First address past the range.
    #[must_use]
    pub const fn end(self) -> PhysAddr {
        PhysAddr::new(self.end)
    }

    /// Length in bytes.
    #[must_use]
    pub const fn size(self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no address.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// Whether `addr` lies in the range.
    #[must_use]
    pub const fn contains(self, addr: PhysAddr) -> bool {
        self.start <= addr.as_u64() && addr.as_u64() < self.end
    }

    /// The largest sub-range whose ends are multiples of `align` (a power of
    /// two); empty if there is none.
    #[must_use]
    pub const fn shrink_to_alignment(self, align: u64) -> Self {
        let mask = align - 1;
        let start = match self.start.checked_add(mask) {
            Some(s) => s & !mask,
            None => return Self { start: 0, end: 0 },
        };
        let end = self.end & !mask;
        if end <= start {
            Self { start: 0, end: 0 }
        } else {
            Self { start, end }
        }
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#012x}..{:#012x})", self.start, self.end)
    }
}

/// A sorted set of at most `N` disjoint, non-adjacent, non-empty ranges.
#[derive(Clone, Debug)]
pub struct RangeSet<const N: usize> {
    ranges: [PhysRange; N],
    len: usize,
}

impl<const N: usize> Default for RangeSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> RangeSet<N> {
    /// An empty set.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            ranges: [PhysRange { start: 0, end: 0 }; N],
            len: 0,
        }
    }

    /// The ranges, sorted by address.
    #[must_use]
    pub fn as_slice(&self) -> &[PhysRange] {
        &self.ranges[..self.len]
    }

    /// Total bytes covered.
    #[must_use]
    pub fn total_size(&self) -> u64 {
        self.as_slice().iter().map(|r| r.size()).sum()
    }

    /// Whether the set covers no address.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `range`, merging it with any range it overlaps or touches.
    ///
    /// # Errors
    ///
    /// [`RangeError::Full`] if the result would need more than `N` ranges;
    /// the set is then unchanged.
    pub fn insert(&mut self, range: PhysRange) -> Result<(), RangeError> {
        if range.is_empty() {
            return Ok(());
        }
        // Ranges [first, last) overlap or touch `range`.
        let first = self
            .as_slice()
            .iter()
            .position(|r| r.end >= range.start)
            .unwrap_or(self.len);
        let last = self.as_slice()[first..]
            .iter()
            .position(|r| r.start > range.end)
            .map_or(self.len, |i| first + i);
        let merged = if first < last {
            PhysRange {
                start: range.start.min(self.ranges[first].start),
                end: range.end.max(self.ranges[last - 1].end),
            }
        } else {
            range
        };
        let new_len = self.len - (last - first) + 1;
        if new_len > N {
            return Err(RangeError::Full { capacity: N });
        }
        // Replace ranges[first..last] with the single merged range.
        if last == first {
            self.ranges.copy_within(first..self.len, first + 1);
        } else {
            self.ranges.copy_within(last..self.len, first + 1);
        }
        self.ranges[first] = merged;
        self.len = new_len;
        Ok(())
    }

    /// Removes every address of `range` from the set.
    ///
    /// # Errors
    ///
    /// [`RangeError::Full`] if `range` splits a range in two and the set is
    /// already full; the set is then unchanged.
    pub fn remove(&mut self, range: PhysRange) -> Result<(), RangeError> {
        if range.is_empty() {
            return Ok(());
        }
        let mut out = [PhysRange::default(); N];
        let mut len = 0;
        for r in self.as_slice() {
            let pieces = [
                PhysRange {
                    start: r.start,
                    end: r.end.min(range.start),
                },
                PhysRange {
                    start: r.start.max(range.end),
                    end: r.end,
                },
            ];
            for piece in pieces {
                if piece.start < piece.end {
                    if len == N {
                        return Err(RangeError::Full { capacity: N });
                    }
                    out[len] = piece;
                    len += 1;
                }
            }
        }
        self.ranges = out;
        self.len = len;
        Ok(())
    }

    /// Shrinks every range to `align` (a power of two) boundaries, dropping
    /// ranges too small to hold one aligned block.
    pub fn shrink_to_alignment(&mut self, align: u64) {
        let mut len = 0;
        for i in 0..self.len {
            let r = self.ranges[i].shrink_to_alignment(align);
            if !r.is_empty() {
                self.ranges[len] = r;
                len += 1;
            }
        }
        self.len = len;
    }

    /// Carves `size` bytes aligned to `align` (a power of two) out of the
    /// lowest range that can hold them, and returns the carved range.
    pub fn take(&mut self, size: u64, align: u64) -> Option<PhysRange> {
        let found = self.as_slice().iter().find_map(|r| {
            let start = r.start.checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(size)?;
            (end <= r.end).then_some(PhysRange { start, end })
        })?;
        // Removing an interior piece may split a range; fall back to
        // refusing rather than losing memory if the set is full.
        self.remove(found).ok()?;
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    #[test]
    fn constructors_reject_bad_input() {
        assert_eq!(
            PhysRange::new(2, 1),
            Err(RangeError::Inverted { start: 2, end: 1 })
        );
        assert!(PhysRange::from_base_size(u64::MAX, 2).is_err());
        assert_eq!(
            PhysRange::from_base_size(0x1000, 0x1000).unwrap(),
            r(0x1000, 0x2000)
        );
    }

    #[test]
    fn memory_minus_image_dtb_and_initrd() {
        let mut set = RangeSet::<8>::new();
        set.insert(r(0x4000_0000, 0x8000_0000)).unwrap();
        set.remove(r(0x4008_0000, 0x4012_3456)).unwrap(); // image
        set.remove(r(0x4800_0000, 0x4810_0000)).unwrap(); // dtb
        set.remove(r(0x4400_0000, 0x4500_0000)).unwrap(); // initrd
        set.shrink_to_alignment(0x1000);
        assert_eq!(
            set.as_slice(),
            [
                r(0x4000_0000, 0x4008_0000),
                r(0x4012_4000, 0x4400_0000),
                r(0x4500_0000, 0x4800_0000),
                r(0x4810_0000, 0x8000_0000),
            ]
        );
    }

    #[test]
    fn insert_merges_overlapping_and_adjacent() {
        let mut set = RangeSet::<4>::new();
        set.insert(r(10, 20)).unwrap();
        set.insert(r(30, 40)).unwrap();
        set.insert(r(0, 5)).unwrap();
        assert_eq!(set.as_slice(), [r(0, 5), r(10, 20), r(30, 40)]);
        set.insert(r(20, 30)).unwrap();
        assert_eq!(set.as_slice(), [r(0, 5), r(10, 40)]);
        set.insert(r(3, 12)).unwrap();
        assert_eq!(set.as_slice(), [r(0, 40)]);
    }

    #[test]
    fn capacity_errors_leave_the_set_unchanged() {
        let mut set = RangeSet::<2>::new();
        set.insert(r(0, 10)).unwrap();
        set.insert(r(20, 30)).unwrap();
        assert_eq!(set.insert(r(40, 50)), Err(RangeError::Full { capacity: 2 }));
        assert_eq!(set.remove(r(2, 4)), Err(RangeError::Full { capacity: 2 }));
        assert_eq!(set.as_slice(), [r(0, 10), r(20, 30)]);
    }

    #[test]
    fn take_carves_aligned_blocks() {
        let mut set = RangeSet::<4>::new();
        set.insert(r(0x1000, 0x3000)).unwrap();
        set.insert(r(0x10_1000, 0x40_0000)).unwrap();
        assert_eq!(
            set.take(0x10_0000, 0x10_0000),
            Some(r(0x20_0000, 0x30_0000))
        );
        assert_eq!(
            set.as_slice(),
            [
                r(0x1000, 0x3000),
                r(0x10_1000, 0x20_0000),
                r(0x30_0000, 0x40_0000)
            ]
        );
        assert_eq!(set.take(0x100_0000, 0x1000), None);
    }

    #[test]
    fn take_from_an_aligned_start_uses_the_first_block() {
        // Boot carves the heap, guest RAM and the ROM out of memory that
        // usually starts aligned: the first block is the one to take.
        let mut set = RangeSet::<4>::new();
        set.insert(r(0x4000_0000, 0x4800_0000)).unwrap();
        assert_eq!(
            set.take(0x20_0000, 0x20_0000),
            Some(r(0x4000_0000, 0x4020_0000))
        );
        assert_eq!(set.as_slice(), [r(0x4020_0000, 0x4800_0000)]);
        // Alignment 1 (any address) takes from the very start too.
        assert_eq!(set.take(0x1000, 1), Some(r(0x4020_0000, 0x4020_1000)));
        // The whole of what is left, exactly.
        assert_eq!(
            set.take(0x4800_0000 - 0x4020_1000, 0x1000),
            Some(r(0x4020_1000, 0x4800_0000))
        );
        assert!(set.is_empty());
        assert_eq!(set.take(0x1000, 0x1000), None);
    }

    #[test]
    fn take_refuses_rather_than_lose_memory_when_full() {
        // Carving from the middle splits the range, and a full set has no
        // room for the second piece: refused, the set unchanged.
        let mut set = RangeSet::<1>::new();
        set.insert(r(0x1000, 0x10_0000)).unwrap();
        assert_eq!(set.take(0x1000, 0x8000), None);
        assert_eq!(set.as_slice(), [r(0x1000, 0x10_0000)]);
        // From an end, nothing splits.
        assert_eq!(set.take(0x1000, 0x1000), Some(r(0x1000, 0x2000)));
        assert_eq!(set.as_slice(), [r(0x2000, 0x10_0000)]);
    }

    #[test]
    fn emptiness_of_sets_and_ranges() {
        // The device-tree code rejects a tree with no memory this way.
        let mut set = RangeSet::<2>::new();
        assert!(set.is_empty());
        assert!(RangeSet::<2>::default().is_empty());
        set.insert(r(5, 5)).unwrap();
        assert!(set.is_empty(), "an empty range adds nothing");
        set.insert(r(5, 6)).unwrap();
        assert!(!set.is_empty());
        set.remove(r(0, 10)).unwrap();
        assert!(set.is_empty(), "everything removed");
        assert!(r(7, 7).is_empty());
        assert!(!r(7, 8).is_empty());
        assert_eq!(r(7, 8).size(), 1);
        assert!(PhysRange::default().is_empty());
    }

    #[test]
    fn ranges_and_errors_print_for_the_boot_log() {
        assert_eq!(
            r(0x4000_0000, 0x4800_0000).to_string(),
            "[0x0040000000..0x0048000000)"
        );
        assert_eq!(
            RangeError::Overflow { base: 1, size: 2 }.to_string(),
            "range 0x1 + 0x2 overflows the address space"
        );
        assert_eq!(
            RangeError::Inverted { start: 2, end: 1 }.to_string(),
            "range end 0x1 before start 0x2"
        );
        assert_eq!(
            RangeError::Full { capacity: 8 }.to_string(),
            "more than 8 disjoint memory ranges"
        );
    }

    #[test]
    fn contains_is_half_open() {
        let range = r(0x1000, 0x3000);
        let at = PhysAddr::new;
        assert!(!range.contains(at(0xfff)));
        assert!(range.contains(at(0x1000)));
        assert!(range.contains(at(0x2fff)));
        assert!(!range.contains(at(0x3000)));
        assert!(!r(0x1000, 0x1000).contains(at(0x1000)), "empty");
        assert!(r(0, u64::MAX).contains(at(u64::MAX - 1)));
        assert!(!r(0, u64::MAX).contains(at(u64::MAX)));
        assert_eq!(range.start(), at(0x1000));
        assert_eq!(range.end(), at(0x3000));
    }

    /// A model: the set of 64 unit addresses, one bit each.
    fn bits<const N: usize>(set: &RangeSet<N>) -> u64 {
        set.as_slice()
            .iter()
            .map(|r| (r.start..r.end).fold(0u64, |acc, a| acc | 1 << a))
            .fold(0, |a, b| a | b)
    }

    fn mask(start: u64, end: u64) -> u64 {
        (start..end).fold(0, |acc, a| acc | 1 << a)
    }

    proptest! {
        #[test]
        fn matches_bit_model(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..64), 0..24)) {
            let mut set = RangeSet::<64>::new();
            let mut model = 0u64;
            for (add, a, b) in ops {
                let (start, end) = (a.min(b), a.max(b));
                if add {
                    set.insert(r(start, end)).unwrap();
                    model |= mask(start, end);
                } else {
                    set.remove(r(start, end)).unwrap();
                    model &= !mask(start, end);
                }
                prop_assert_eq!(bits(&set), model);
                // Sorted, non-empty, disjoint and non-adjacent.
                for w in set.as_slice().windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
                prop_assert!(set.as_slice().iter().all(|r| !r.is_empty()));
                prop_assert_eq!(set.total_size(), u64::from(model.count_ones()));
                prop_assert_eq!(set.is_empty(), model == 0);
            }
        }

        /// `take` against the bit model: the lowest `align`-aligned start
        /// whose `size` units are all in the set, and only those go.
        #[test]
        fn take_matches_bit_model(
            ranges in proptest::collection::vec((0u64..64, 0u64..64), 0..6),
            takes in proptest::collection::vec((1u64..12, 0u32..5), 1..6),
        ) {
            // Six ranges and six takes: at most 12 pieces.
            let mut set = RangeSet::<12>::new();
            let mut model = 0u64;
            for (a, b) in ranges {
                let (start, end) = (a.min(b), a.max(b));
                set.insert(r(start, end)).unwrap();
                model |= mask(start, end);
            }
            for (size, align_log) in takes {
                let align = 1u64 << align_log;
                let want = (0..=64 - size)
                    .step_by(align as usize)
                    .find(|&s| mask(s, s + size) & !model == 0);
                let got = set.take(size, align);
                prop_assert_eq!(got, want.map(|s| r(s, s + size)), "take({}, {})", size, align);
                if let Some(s) = want {
                    model &= !mask(s, s + size);
                }
                prop_assert_eq!(bits(&set), model);
            }
        }
    }
}
