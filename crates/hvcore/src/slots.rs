//! Guest memory slots: which IPA ranges are backed by which host memory, and the largest block a fault can map.

use alloc::vec::Vec;
use core::fmt;

use crate::addr::FRAME_SIZE;

/// Stage-2 blocks larger than a page with a 4 KiB granule, largest first.
const BLOCKS: [u64; 2] = [1 << 30, 2 << 20];

/// A range of guest physical memory backed by contiguous host memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemSlot {
    /// A name for messages (`ram`, `rom`).
    pub name: &'static str,
    /// First IPA of the slot.
    pub ipa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Host physical address backing `ipa`.
    pub host: u64,
    /// Guest writes are refused.
    pub readonly: bool,
}

impl MemSlot {
    /// Whether `ipa` is inside the slot.
    #[must_use]
    pub const fn contains(&self, ipa: u64) -> bool {
        // One comparison: below the slot, the difference wraps to a huge
        // value.
        ipa.wrapping_sub(self.ipa) < self.size
    }

    /// The host physical address backing `ipa`, if it is inside the slot.
    #[must_use]
    pub const fn host_addr(&self, ipa: u64) -> Option<u64> {
        if self.contains(ipa) {
            self.host.checked_add(ipa - self.ipa)
        } else {
            None
        }
    }

    /// The largest block (1 GiB, then 2 MiB, then 4 KiB) that contains
    /// `ipa`, lies wholly inside the slot, and whose IPA and host address
    /// are both aligned to the block size; limited to `max_block` (a power
    /// of two >= 4096). Returns `(block_ipa, size)`.
    ///
    /// `ipa` must be inside the slot and the slot 4 KiB aligned, as
    /// [`SlotMap::insert`] guarantees. If no block fits (a slot built by
    /// hand that breaks this), the 4 KiB page containing `ipa` is returned
    /// and a debug build panics.
    #[must_use]
    pub fn block_for(&self, ipa: u64, max_block: u64) -> (u64, u64) {
        debug_assert!(self.contains(ipa), "{ipa:#x} outside slot {self}");
        for size in BLOCKS {
            let start = ipa & !(size - 1);
            if size <= max_block && self.block_fits(start, size) {
                return (start, size);
            }
        }
        let page = ipa & !(FRAME_SIZE - 1);
        debug_assert!(
            self.block_fits(page, FRAME_SIZE),
            "no 4 KiB page of slot {self} holds {ipa:#x}"
        );
        (page, FRAME_SIZE)
    }

    /// Whether the `size`-aligned block at `start` lies inside the slot
    /// with its host address aligned to `size` too.
    fn block_fits(&self, start: u64, size: u64) -> bool {
        let Some(offset) = start.checked_sub(self.ipa) else {
            return false;
        };
        let inside = offset.checked_add(size).is_some_and(|end| end <= self.size);
        let host_aligned = self
            .host
            .checked_add(offset)
            .is_some_and(|host| host & (size - 1) == 0);
        inside && host_aligned
    }

    /// One past the last IPA, if representable.
    const fn ipa_end(&self) -> Option<u64> {
        self.ipa.checked_add(self.size)
    }
}

impl fmt::Display for MemSlot {
    /// E.g. `ram [0x40000000, 0x48000000) -> host 0x50000000 rw`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{:#x}, {:#x}) -> host {:#x} {}",
            self.name,
            self.ipa,
            self.ipa.wrapping_add(self.size),
            self.host,
            if self.readonly { "ro" } else { "rw" }
        )
    }
}

/// Why [`SlotMap::insert`] refused a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// The slot has size 0.
    Empty {
        /// The slot's name.
        name: &'static str,
    },
    /// An address or the size is not a multiple of 4 KiB.
    Misaligned {
        /// The slot's name.
        name: &'static str,
        /// Which field: `ipa`, `size` or `host`.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The IPA or host range runs past the end of the 64-bit address space.
    Wraps {
        /// The slot's name.
        name: &'static str,
        /// Which range: `ipa` or `host`.
        field: &'static str,
    },
    /// The IPA range overlaps a slot already in the map.
    Overlap {
        /// The new slot's name.
        name: &'static str,
        /// The name of the slot it overlaps.
        other: &'static str,
    },
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty { name } => write!(f, "slot `{name}` is empty"),
            Self::Misaligned { name, field, value } => write!(
                f,
                "slot `{name}`: {field} {value:#x} is not a multiple of 4 KiB"
            ),
            Self::Wraps { name, field } => write!(
                f,
                "slot `{name}`: {field} range wraps past the end of the address space"
            ),
            Self::Overlap { name, other } => {
                write!(f, "slot `{name}` overlaps slot `{other}`")
            }
        }
    }
}

/// A VM's memory slots, disjoint in IPA, kept sorted by IPA.
#[derive(Clone, Debug, Default)]
pub struct SlotMap {
    slots: Vec<MemSlot>,
}

impl SlotMap {
    /// An empty map.
    #[must_use]
    pub const fn new() -> Self {
        Self { slots: Vec::new() }
    }

    /// Adds a slot.
    ///
    /// # Errors
    ///
    /// [`SlotError::Empty`] for size 0, [`SlotError::Misaligned`] if the
    /// IPA, size or host address is not 4 KiB aligned,
    /// [`SlotError::Wraps`] if either range's exclusive end is not
    /// representable in 64 bits,
    /// [`SlotError::Overlap`] if the IPA range meets an existing slot.
    pub fn insert(&mut self, slot: MemSlot) -> Result<(), SlotError> {
        let name = slot.name;
        if slot.size == 0 {
            return Err(SlotError::Empty { name });
        }
        for (field, value) in [("ipa", slot.ipa), ("size", slot.size), ("host", slot.host)] {
            if !value.is_multiple_of(FRAME_SIZE) {
                return Err(SlotError::Misaligned { name, field, value });
            }
        }
        let Some(end) = slot.ipa_end() else {
            return Err(SlotError::Wraps { name, field: "ipa" });
        };
        if slot.host.checked_add(slot.size).is_none() {
            return Err(SlotError::Wraps {
                name,
                field: "host",
            });
        }
        // The first slot ending after the new one's start.
        let at = self
            .slots
            .partition_point(|s| s.ipa_end().is_some_and(|e| e <= slot.ipa));
        if let Some(next) = self.slots.get(at) {
            if next.ipa < end {
                return Err(SlotError::Overlap {
                    name,
                    other: next.name,
                });
            }
        }
        self.slots.insert(at, slot);
        Ok(())
    }

    /// The slot containing `ipa`.
    #[must_use]
    pub fn find(&self, ipa: u64) -> Option<&MemSlot> {
        self.find_indexed(ipa).map(|(_, slot)| slot)
    }

    /// The slot containing `ipa` and its index in [`SlotMap::iter`]
    /// order (stable while no slot is inserted), for per-slot state kept
    /// beside the map. A linear scan: a VM has a few slots, and every
    /// guest abort asks (a binary search costs more instructions until
    /// there are dozens).
    #[must_use]
    pub fn find_indexed(&self, ipa: u64) -> Option<(usize, &MemSlot)> {
        self.slots.iter().enumerate().find(|(_, s)| s.contains(ipa))
    }

    /// The slots, by increasing IPA.
    pub fn iter(&self) -> impl Iterator<Item = &MemSlot> {
        self.slots.iter()
    }

    /// How many slots there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K4: u64 = 4 << 10;
    const M2: u64 = 2 << 20;
    const G1: u64 = 1 << 30;

    fn slot(name: &'static str, ipa: u64, size: u64, host: u64) -> MemSlot {
        MemSlot {
            name,
            ipa,
            size,
            host,
            readonly: false,
        }
    }

    #[test]
    fn contains_and_host_addr() {
        let s = slot("ram", 0x4000_0000, 0x800_0000, 0x1_0000_0000);
        assert!(!s.contains(0x3fff_ffff));
        assert!(s.contains(0x4000_0000));
        assert!(s.contains(0x47ff_ffff));
        assert!(!s.contains(0x4800_0000));
        assert_eq!(s.host_addr(0x4000_0000), Some(0x1_0000_0000));
        assert_eq!(s.host_addr(0x4123_4567), Some(0x1_0123_4567));
        assert_eq!(s.host_addr(0x4800_0000), None);
        assert_eq!(s.host_addr(0), None);
        // A slot at the very top of the IPA space.
        let top = slot("top", u64::MAX - K4 + 1, K4, 0);
        assert!(top.contains(u64::MAX));
        assert_eq!(top.host_addr(u64::MAX), Some(K4 - 1));
    }

    #[test]
    fn block_for_picks_the_largest_fit() {
        // 128 MiB of RAM at 1 GiB, host 2 MiB aligned: 2 MiB blocks.
        let ram = slot("ram", 0x4000_0000, 0x800_0000, 0x5000_0000);
        assert_eq!(ram.block_for(0x4020_1234, G1), (0x4020_0000, M2));
        assert_eq!(ram.block_for(0x47ff_ffff, G1), (0x47e0_0000, M2));
        // Limited by max_block.
        assert_eq!(ram.block_for(0x4020_1234, K4), (0x4020_1000, K4));
        assert_eq!(ram.block_for(0x4020_1234, M2), (0x4020_0000, M2));
        // Host only 4 KiB aligned relative to the IPA: pages only.
        let odd = slot("odd", 0x4000_0000, 0x800_0000, 0x5000_1000);
        assert_eq!(odd.block_for(0x4020_1234, G1), (0x4020_1000, K4));
        // 1 GiB slot with a 1 GiB aligned host: one block.
        let big = slot("big", G1, G1, 2 * G1);
        assert_eq!(big.block_for(G1 + 0x1234_5678, G1), (G1, G1));
        assert_eq!(big.block_for(G1 + 0x1234_5678, M2), (G1 + 0x1220_0000, M2));
        // A slot that is not 2 MiB aligned at its edges: pages at the edges,
        // blocks in the middle.
        let edges = slot("edges", 0x4000_1000, 0x40_0000, 0x8000_1000);
        assert_eq!(edges.block_for(0x4000_1000, G1), (0x4000_1000, K4));
        assert_eq!(edges.block_for(0x4020_0000, G1), (0x4020_0000, M2));
        assert_eq!(edges.block_for(0x4040_0000, G1), (0x4040_0000, K4));
        // The ROM: 2 MiB at 0x4000000.
        let rom = slot("rom", 0x0400_0000, M2, 0x4660_0000);
        assert_eq!(rom.block_for(0x0410_0008, G1), (0x0400_0000, M2));
    }

    #[test]
    fn insert_keeps_slots_disjoint_and_sorted() {
        let mut map = SlotMap::new();
        assert!(map.is_empty());
        map.insert(slot("ram", 0x4000_0000, 0x800_0000, 0x5000_0000))
            .unwrap();
        map.insert(slot("rom", 0x0400_0000, M2, 0x4660_0000))
            .unwrap();
        // Touching on either side is fine.
        map.insert(slot("below", 0x3fff_f000, K4, 0)).unwrap();
        map.insert(slot("above", 0x4800_0000, K4, 0)).unwrap();
        assert_eq!(map.len(), 4);
        assert!(!map.is_empty());
        let names: Vec<_> = map.iter().map(|s| s.name).collect();
        assert_eq!(names, ["rom", "below", "ram", "above"]);

        assert_eq!(map.find(0x4000_0000).map(|s| s.name), Some("ram"));
        assert_eq!(map.find(0x47ff_ffff).map(|s| s.name), Some("ram"));
        assert_eq!(map.find(0x3fff_ffff).map(|s| s.name), Some("below"));
        assert_eq!(map.find(0x4800_0fff).map(|s| s.name), Some("above"));
        assert_eq!(map.find(0x4800_1000), None);
        assert_eq!(map.find(0x0420_0000), None);
        assert_eq!(map.find(0x0900_0000), None);
        assert_eq!(map.find(0), None);
        assert_eq!(map.find(u64::MAX), None);
        // The index is the position in iteration order.
        for (i, slot) in map.iter().enumerate() {
            assert_eq!(map.find_indexed(slot.ipa).map(|(at, _)| at), Some(i));
        }
        assert_eq!(map.find_indexed(0x0900_0000), None);

        // Overlaps: inside, straddling either edge, covering.
        for (ipa, size, other) in [
            (0x4100_0000, K4, "ram"),
            (0x47ff_f000, 2 * K4, "ram"),
            (0x3fff_f000, 2 * K4, "below"),
            (0x0420_0000, G1 + K4 - 0x0420_0000, "below"),
            (0, G1 + K4, "rom"),
            (0, 0x0400_1000, "rom"),
            (0x0400_0000, 16 * G1, "rom"),
        ] {
            assert_eq!(
                map.insert(slot("new", ipa, size, 0)),
                Err(SlotError::Overlap { name: "new", other }),
                "{ipa:#x}+{size:#x}"
            );
        }
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn insert_errors() {
        let mut map = SlotMap::new();
        let cases = [
            (
                slot("a", 0x4000_0000, 0, 0),
                SlotError::Empty { name: "a" },
                "slot `a` is empty",
            ),
            (
                slot("b", 0x4000_0800, K4, 0),
                SlotError::Misaligned {
                    name: "b",
                    field: "ipa",
                    value: 0x4000_0800,
                },
                "slot `b`: ipa 0x40000800 is not a multiple of 4 KiB",
            ),
            (
                slot("c", 0x4000_0000, 0x1800, 0),
                SlotError::Misaligned {
                    name: "c",
                    field: "size",
                    value: 0x1800,
                },
                "slot `c`: size 0x1800 is not a multiple of 4 KiB",
            ),
            (
                slot("d", 0x4000_0000, K4, 0x10),
                SlotError::Misaligned {
                    name: "d",
                    field: "host",
                    value: 0x10,
                },
                "slot `d`: host 0x10 is not a multiple of 4 KiB",
            ),
            (
                slot("e", u64::MAX - K4 + 1, 2 * K4, 0),
                SlotError::Wraps {
                    name: "e",
                    field: "ipa",
                },
                "slot `e`: ipa range wraps past the end of the address space",
            ),
            (
                slot("f", 0, 2 * K4, u64::MAX - K4 + 1),
                SlotError::Wraps {
                    name: "f",
                    field: "host",
                },
                "slot `f`: host range wraps past the end of the address space",
            ),
        ];
        for (s, err, text) in cases {
            assert_eq!(map.insert(s), Err(err));
            assert_eq!(err.to_string(), text);
        }
        assert!(map.is_empty());
        assert_eq!(
            SlotError::Overlap {
                name: "x",
                other: "ram"
            }
            .to_string(),
            "slot `x` overlaps slot `ram`"
        );
        // The exclusive end must be representable: a slot ending at 2^64
        // counts as wrapping, one page below is fine.
        assert_eq!(
            map.insert(slot("top", u64::MAX - K4 + 1, K4, 0)),
            Err(SlotError::Wraps {
                name: "top",
                field: "ipa"
            })
        );
        map.insert(slot("top", u64::MAX - 2 * K4 + 1, K4, 0))
            .unwrap();
        assert_eq!(map.find(u64::MAX - K4).map(|s| s.name), Some("top"));
        assert_eq!(map.find(u64::MAX), None);
    }

    #[test]
    fn display() {
        let mut s = slot("ram", 0x4000_0000, 0x800_0000, 0x5000_0000);
        assert_eq!(
            s.to_string(),
            "ram [0x40000000, 0x48000000) -> host 0x50000000 rw"
        );
        s.readonly = true;
        assert!(s.to_string().ends_with(" ro"));
    }

    /// A 4 KiB aligned slot: IPA and host drawn so that every alignment
    /// relation between them (4 KiB, 2 MiB, 1 GiB) is common, and sizes
    /// both around and far above the block sizes.
    fn any_slot() -> impl Strategy<Value = MemSlot> {
        // 1 GiB, 2 MiB or 4 KiB aligned, a third each.
        let addr = (0u64..4, 0u64..512, 0u64..512, 0u32..3).prop_map(|(g, m, p, fine)| {
            g * G1 + if fine >= 1 { m * M2 } else { 0 } + if fine >= 2 { p * K4 } else { 0 }
        });
        let pages = prop_oneof![1u64..2048, (G1 / K4)..(3 * G1 / K4)];
        (addr.clone(), pages, addr, any::<bool>()).prop_map(|(ipa, pages, host, readonly)| {
            MemSlot {
                name: "p",
                ipa,
                size: pages * K4,
                host,
                readonly,
            }
        })
    }

    fn fits(s: &MemSlot, start: u64, size: u64) -> bool {
        start.is_multiple_of(size)
            && start >= s.ipa
            && start + size <= s.ipa + s.size
            && (s.host + (start - s.ipa)).is_multiple_of(size)
    }

    proptest! {
        // Each case is cheap; many are needed to hit 1 GiB fits often.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn block_for_is_the_largest_valid_block(
            s in any_slot(),
            offset in any::<u64>(),
            max_shift in prop_oneof![Just(30u32), 12u32..=31],
        ) {
            let ipa = s.ipa + offset % s.size;
            let max_block = 1u64 << max_shift;
            let (start, size) = s.block_for(ipa, max_block);
            prop_assert!(size == FRAME_SIZE || BLOCKS.contains(&size));
            prop_assert!(size <= max_block);
            prop_assert!(start <= ipa && ipa < start + size, "block misses ipa");
            prop_assert!(fits(&s, start, size), "block {start:#x}+{size:#x} not valid in {s}");
            for bigger in BLOCKS.into_iter().filter(|&b| b > size && b <= max_block) {
                prop_assert!(!fits(&s, ipa & !(bigger - 1), bigger), "{bigger:#x} would fit too");
            }
            // The host address of the block start maps back.
            prop_assert_eq!(s.host_addr(start), Some(s.host + (start - s.ipa)));
        }

        #[test]
        fn find_agrees_with_a_linear_scan(
            slots in proptest::collection::vec((0u64..64, 1u64..8), 0..12),
            probes in proptest::collection::vec(0u64..(80 * M2), 32),
        ) {
            let mut map = SlotMap::new();
            let mut accepted: Vec<MemSlot> = Vec::new();
            for (i, (at, len)) in slots.into_iter().enumerate() {
                let s = slot(["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11"][i], at * M2, len * M2, 0);
                let overlaps = accepted.iter().any(|o| s.ipa < o.ipa + o.size && o.ipa < s.ipa + s.size);
                prop_assert_eq!(map.insert(s.clone()).is_ok(), !overlaps);
                if !overlaps {
                    accepted.push(s);
                }
            }
            prop_assert!(map.iter().zip(map.iter().skip(1)).all(|(a, b)| a.ipa + a.size <= b.ipa));
            prop_assert_eq!(map.len(), accepted.len());
            prop_assert_eq!(map.is_empty(), accepted.is_empty());
            for ipa in probes {
                let expect = accepted.iter().find(|s| s.contains(ipa)).map(|s| s.name);
                prop_assert_eq!(map.find(ipa).map(|s| s.name), expect);
            }
        }
    }
}
