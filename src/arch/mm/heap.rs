//! The EL2 heap: a buddy allocator over a block of RAM carved out at boot.

use buddy_system_allocator::LockedHeap;
use hvcore::range::PhysRange;

/// Buddy orders: blocks up to 2^31 bytes.
const ORDER: usize = 32;

#[global_allocator]
static HEAP: LockedHeap<ORDER> = LockedHeap::empty();

/// Heap usage in bytes.
#[derive(Clone, Copy, Debug)]
pub struct HeapStats {
    /// Bytes handed to the heap.
    pub total: usize,
    /// Bytes currently allocated (including buddy rounding).
    pub allocated: usize,
}

/// Hands `range` to the heap. Called once, by the boot CPU.
///
/// # Safety
///
/// `range` must be RAM that nothing else uses, now or later (not the
/// image, the stacks, the DTB, nor any frame of the frame allocator), and
/// must be accessible at its physical address (the MMU is off).
pub(super) unsafe fn init(range: PhysRange) {
    // SAFETY: forwarded from this function's contract: the range is
    // exclusively the heap's from now on.
    unsafe {
        HEAP.lock()
            .init(range.start().as_u64() as usize, range.size() as usize);
    }
}

/// Current heap usage.
pub fn heap_stats() -> HeapStats {
    let heap = HEAP.lock();
    HeapStats {
        total: heap.stats_total_bytes(),
        allocated: heap.stats_alloc_actual(),
    }
}
