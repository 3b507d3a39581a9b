//! Page-frame bookkeeping: one bit per 4 KiB frame over the usable memory
//! ranges, so every allocation and free is checked (no double free, no
//! freeing of a frame the allocator never owned).
//!
//! This is pure bookkeeping: it never touches the frames themselves, so it is
//! tested on the host and the hypervisor wraps it in a lock.

use alloc::vec::Vec;
use core::fmt;

use crate::addr::{PhysAddr, FRAME_SIZE};
use crate::range::PhysRange;

/// Why a frame could not be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The address is not the start of a frame.
    Misaligned(PhysAddr),
    /// The frame is not in any range the allocator manages.
    NotOwned(PhysAddr),
    /// The frame is already free.
    DoubleFree(PhysAddr),
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned(a) => write!(f, "freeing {a}: not frame-aligned"),
            Self::NotOwned(a) => write!(f, "freeing {a}: not a managed frame"),
            Self::DoubleFree(a) => write!(f, "freeing {a}: frame already free"),
        }
    }
}

/// One contiguous run of managed frames.
#[derive(Debug)]
struct Region {
    base: u64,
    frames: usize,
    /// Bit set = frame in use.
    used: Vec<u64>,
    /// Word index at which to start the next search.
    hint: usize,
}

impl Region {
    fn index_of(&self, addr: u64) -> Option<usize> {
        let offset = addr.checked_sub(self.base)?;
        let index = usize::try_from(offset / FRAME_SIZE).ok()?;
        (index < self.frames).then_some(index)
    }
}

/// A bitmap allocator of 4 KiB page frames.
#[derive(Debug, Default)]
pub struct FrameAllocator {
    regions: Vec<Region>,
    total: usize,
    used: usize,
}

impl FrameAllocator {
    /// Manages the whole frames within `ranges` (which must not overlap);
    /// all start free.
    #[must_use]
    pub fn new(ranges: &[PhysRange]) -> Self {
        let mut regions = Vec::with_capacity(ranges.len());
        let mut total = 0;
        for range in ranges {
            let range = range.shrink_to_alignment(FRAME_SIZE);
            let Ok(frames) = usize::try_from(range.size() / FRAME_SIZE) else {
                continue;
            };
            if frames == 0 {
                continue;
            }
            let words = frames.div_ceil(64);
            let mut used = alloc::vec![0u64; words];
            // Bits past the last frame are permanently "used".
            let tail = frames % 64;
            if tail != 0 {
                used[words - 1] = !0 << tail;
            }
            regions.push(Region {
                base: range.start().as_u64(),
                frames,
                used,
                hint: 0,
            });
            total += frames;
        }
        Self {
            regions,
            total,
            used: 0,
        }
    }

    /// Allocates one frame, lowest address first within a region.
    pub fn alloc(&mut self) -> Option<PhysAddr> {
        for region in &mut self.regions {
            let words = region.used.len();
            for step in 0..words {
                let w = (region.hint + step) % words;
                let word = region.used[w];
                if word != !0 {
                    let bit = (!word).trailing_zeros() as usize;
                    region.used[w] |= 1 << bit;
                    region.hint = w;
                    self.used += 1;
                    let index = (w * 64 + bit) as u64;
                    return Some(PhysAddr::new(region.base + index * FRAME_SIZE));
                }
            }
        }
        None
    }

    /// Returns a frame to the allocator.
    ///
    /// # Errors
    ///
    /// A [`FreeError`] if `frame` is misaligned, not managed here, or
    /// already free; the allocator is then unchanged.
    pub fn free(&mut self, frame: PhysAddr) -> Result<(), FreeError> {
        if !frame.is_frame_aligned() {
            return Err(FreeError::Misaligned(frame));
        }
        let (region, index) = self
            .regions
            .iter_mut()
            .find_map(|r| r.index_of(frame.as_u64()).map(|i| (r, i)))
            .ok_or(FreeError::NotOwned(frame))?;
        let (w, bit) = (index / 64, index % 64);
        if region.used[w] & (1 << bit) == 0 {
            return Err(FreeError::DoubleFree(frame));
        }
        region.used[w] &= !(1 << bit);
        region.hint = region.hint.min(w);
        self.used -= 1;
        Ok(())
    }

    /// Frames managed in total.
    #[must_use]
    pub fn total_frames(&self) -> usize {
        self.total
    }

    /// Frames currently allocated.
    #[must_use]
    pub fn used_frames(&self) -> usize {
        self.used
    }

    /// Frames currently free.
    #[must_use]
    pub fn free_frames(&self) -> usize {
        self.total - self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    #[test]
    fn allocates_every_frame_once_then_runs_out() {
        // 70 frames (crosses a bitmap word) plus 3 in a second region.
        let mut fa = FrameAllocator::new(&[
            range(0x4000_0000, 0x4000_0000 + 70 * FRAME_SIZE),
            range(0x5000_0800, 0x5000_4000), // unaligned start: 3 whole frames
        ]);
        assert_eq!(fa.total_frames(), 73);
        let mut seen = BTreeSet::new();
        while let Some(f) = fa.alloc() {
            assert!(f.is_frame_aligned());
            assert!(seen.insert(f), "{f} handed out twice");
        }
        assert_eq!(seen.len(), 73);
        assert_eq!(fa.free_frames(), 0);
        assert_eq!(*seen.iter().next().unwrap(), PhysAddr::new(0x4000_0000));
        assert_eq!(*seen.iter().last().unwrap(), PhysAddr::new(0x5000_3000));
    }

    #[test]
    fn free_checks_its_argument() {
        let mut fa = FrameAllocator::new(&[range(0x1000, 0x3000)]);
        let a = fa.alloc().unwrap();
        assert_eq!(fa.used_frames(), 1);
        assert_eq!(
            fa.free(PhysAddr::new(0x1008)),
            Err(FreeError::Misaligned(PhysAddr::new(0x1008)))
        );
        assert_eq!(
            fa.free(PhysAddr::new(0x9000)),
            Err(FreeError::NotOwned(PhysAddr::new(0x9000)))
        );
        assert_eq!(
            fa.free(PhysAddr::new(0x2000)),
            Err(FreeError::DoubleFree(PhysAddr::new(0x2000)))
        );
        fa.free(a).unwrap();
        assert_eq!(fa.free(a), Err(FreeError::DoubleFree(a)));
        assert_eq!(fa.used_frames(), 0);
        assert_eq!(fa.alloc(), Some(a));
    }

    #[test]
    fn empty_allocator() {
        let mut fa = FrameAllocator::new(&[range(0x1000, 0x1800)]);
        assert_eq!(fa.total_frames(), 0);
        assert_eq!(fa.alloc(), None);
    }

    proptest! {
        #[test]
        fn matches_set_model(ops in proptest::collection::vec(any::<Option<u8>>(), 0..300)) {
            let mut fa = FrameAllocator::new(&[range(0, 100 * FRAME_SIZE), range(0x100_0000, 0x100_0000 + 30 * FRAME_SIZE)]);
            let mut live: Vec<PhysAddr> = Vec::new();
            for op in ops {
                match op {
                    None => match fa.alloc() {
                        Some(f) => {
                            prop_assert!(!live.contains(&f));
                            live.push(f);
                        }
                        None => prop_assert_eq!(live.len(), 130),
                    },
                    Some(i) if !live.is_empty() => {
                        let f = live.swap_remove(usize::from(i) % live.len());
                        prop_assert_eq!(fa.free(f), Ok(()));
                    }
                    Some(_) => {}
                }
                prop_assert_eq!(fa.used_frames(), live.len());
                prop_assert_eq!(fa.free_frames() + fa.used_frames(), 130);
            }
        }
    }
}
