//! Guest RAM the scenarios may use: above the image, below the device tree, starting on a 2 MiB block.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::dt::{Platform, Region};

/// One MiB.
pub const MIB: u64 = 1 << 20;
/// A stage-2 block (the largest mapping below 1 GiB): 2 MiB.
pub const BLOCK: u64 = 2 * MIB;
/// A page.
pub const PAGE: u64 = 4096;

extern "C" {
    static _image_start: u8;
    static _image_end: u8;
}

/// Where the image lies, `.bss` (and so the stacks) included.
pub fn image() -> Region {
    let start = &raw const _image_start as u64;
    let end = &raw const _image_end as u64;
    Region {
        base: start,
        size: end - start,
    }
}

/// The RAM nothing else uses: from the first 2 MiB boundary above the image
/// to the end of RAM, or to the device tree's 2 MiB block if it lies above.
pub fn free(p: &Platform<'_>) -> Region {
    let base = image().end().next_multiple_of(BLOCK);
    let mut end = p.ram.end();
    if p.dtb.base >= base && p.dtb.base < end {
        end = p.dtb.base & !(BLOCK - 1);
    }
    Region {
        base,
        size: end.saturating_sub(base),
    }
}

static CLAIMED: AtomicBool = AtomicBool::new(false);
static CLAIMED_BASE: AtomicU64 = AtomicU64::new(0);
static CLAIMED_SIZE: AtomicU64 = AtomicU64::new(0);

/// A run of free RAM handed to a scenario, accessed as words that several
/// vCPUs may read and write at once.
#[derive(Clone, Copy, Debug)]
pub struct Ram {
    region: Region,
}

/// Claims the first `size` bytes of [`free`] RAM; `None` if there are fewer,
/// or if RAM was claimed before (a scenario claims once, on the boot vCPU).
pub fn claim(p: &Platform<'_>, size: u64) -> Option<Ram> {
    let free = free(p);
    // A plain load and store, no exclusive: the MMU may be off.
    if size > free.size || CLAIMED.load(Ordering::Relaxed) {
        return None;
    }
    CLAIMED_BASE.store(free.base, Ordering::Relaxed);
    CLAIMED_SIZE.store(size, Ordering::Relaxed);
    CLAIMED.store(true, Ordering::Release);
    claimed()
}

/// The RAM claimed earlier (by the boot vCPU), for the other vCPUs.
pub fn claimed() -> Option<Ram> {
    CLAIMED.load(Ordering::Acquire).then(|| Ram {
        region: Region {
            base: CLAIMED_BASE.load(Ordering::Relaxed),
            size: CLAIMED_SIZE.load(Ordering::Relaxed),
        },
    })
}

impl Ram {
    /// The addresses claimed.
    pub fn region(&self) -> Region {
        self.region
    }

    /// The address at `offset`.
    pub fn addr(&self, offset: u64) -> u64 {
        assert!(
            offset < self.region.size,
            "offset {offset:#x} outside claimed RAM"
        );
        self.region.base + offset
    }

    /// The u64 at `offset` (8-byte aligned), as an atomic: relaxed loads and
    /// stores are plain `ldr`/`str`, and concurrent use from vCPUs is sound.
    pub fn word(&self, offset: u64) -> &'static AtomicU64 {
        assert!(
            offset.is_multiple_of(8),
            "unaligned word offset {offset:#x}"
        );
        let addr = self.addr(offset);
        // SAFETY: `addr` is 8-byte aligned (the region starts on a block)
        // and inside the claimed region: guest RAM above the image and below
        // the device tree, which nothing else in the guest uses and which
        // was handed out once. Memory is only ever accessed atomically here.
        unsafe { AtomicU64::from_ptr(addr as *mut u64) }
    }

    /// Stores `value` at `offset`.
    pub fn write(&self, offset: u64, value: u64) {
        self.word(offset).store(value, Ordering::Relaxed);
    }

    /// Loads the u64 at `offset`.
    pub fn read(&self, offset: u64) -> u64 {
        self.word(offset).load(Ordering::Relaxed)
    }
}
