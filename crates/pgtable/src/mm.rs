//! What the walker needs from its environment: table pages, address translation, cache and TLB maintenance.

use alloc::vec::Vec;
use core::sync::atomic::AtomicU64;

use crate::error::Error;
use crate::geometry::{Level, PAGE_SIZE};

/// Memory and maintenance operations for one tree.
///
/// One value serves one tree: its TLB operations act on that tree's
/// translation regime (a VMID for stage 2, EL2 for the hypervisor's own
/// tables). On the host, `host::HostMm` backs it with heap memory
/// and records every maintenance operation.
///
/// # Safety
///
/// The walker dereferences table pages through this trait, so an
/// implementation must guarantee:
/// - `zalloc_pages(n)` returns the physical address of `n` contiguous,
///   zeroed, 4 KiB pages, aligned to `n * 4096`, that nothing else uses
///   until they are passed to `free_pages` with the same `n`;
/// - `phys_to_virt(pa)` for such a page gives a pointer through which the
///   page may be read and written (8-byte aligned) for that whole time.
pub unsafe trait MmOps: Sync {
    /// `count` contiguous zeroed pages, aligned to their total size.
    fn zalloc_pages(&self, count: usize) -> Option<u64>;

    /// Gives back pages from [`MmOps::zalloc_pages`].
    ///
    /// # Safety
    ///
    /// `pa` and `count` come from one `zalloc_pages` call, are not freed
    /// yet, and nothing (no walker, no TLB) uses the pages any more.
    unsafe fn free_pages(&self, pa: u64, count: usize);

    /// Where the page at `pa` is mapped in the caller's address space.
    fn phys_to_virt(&self, pa: u64) -> *mut u64;

    /// Clean and invalidate the data cache to the point of coherency.
    fn dcache_clean_inval_poc(&self, pa: u64, size: u64);

    /// Invalidate the instruction cache to the point of unification.
    fn icache_inval_pou(&self, pa: u64, size: u64);

    /// Invalidate TLB entries (all levels, walk caches included) for the
    /// input address `addr`, whose leaf or table sits at `level`.
    fn tlb_flush_addr(&self, addr: u64, level: Level);

    /// Invalidate TLB entries for an input-address range. The default
    /// flushes everything of this regime.
    fn tlb_flush_range(&self, addr: u64, size: u64) {
        let _ = (addr, size);
        self.tlb_flush_all();
    }

    /// Invalidate every TLB entry of this regime.
    fn tlb_flush_all(&self);

    /// Called between retries of one entry. The default is a spin-loop hint;
    /// a host implementation may yield the thread.
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// Called by a shared walk right before it swaps `entry` from `old`,
    /// the value it read: the window in which another walker can change
    /// the entry and make the swap lose. Does nothing by default. Tests
    /// (and the hypervisor's `migrate.window=` knob) hold the window open
    /// here, e.g. until the entry changes, so that the races the policies
    /// exist for happen on demand instead of once in a million walks.
    #[inline(always)]
    fn before_compare_and_swap(&self, entry: &AtomicU64, old: u64) {
        let _ = (entry, old);
    }
}

/// Pre-allocated, zeroed table pages.
///
/// The fault path takes pages only from here: the cache is topped up
/// before the tree's lock is taken, so no allocator runs under it (the
/// `no-memory` outcome reports an empty cache). Its capacity never grows
/// while pages are taken and returned, so using it does not allocate.
#[derive(Debug, Default)]
pub struct MemCache {
    pages: Vec<u64>,
}

impl MemCache {
    /// An empty cache.
    #[must_use]
    pub const fn new() -> MemCache {
        MemCache { pages: Vec::new() }
    }

    /// Pages held now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether the cache holds no page.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Allocates until the cache holds at least `min` pages.
    ///
    /// # Errors
    ///
    /// [`Error::NoMemory`] if `mm` runs out first (the pages allocated so
    /// far stay in the cache).
    pub fn topup<M: MmOps>(&mut self, mm: &M, min: usize) -> Result<(), Error> {
        if self.pages.capacity() < min {
            self.pages.reserve(min - self.pages.len());
        }
        while self.pages.len() < min {
            self.pages.push(mm.zalloc_pages(1).ok_or(Error::NoMemory)?);
        }
        Ok(())
    }

    /// Gives every page back to `mm`.
    pub fn drain<M: MmOps>(&mut self, mm: &M) {
        for pa in self.pages.drain(..) {
            // SAFETY: every page in the cache came from `zalloc_pages(1)` of
            // this `mm` (the caller's contract for `topup`), is still zero
            // and is referenced by nothing: the cache owns it.
            unsafe { mm.free_pages(pa, 1) };
        }
    }

    /// A zeroed page, if any.
    pub(crate) fn take(&mut self) -> Option<u64> {
        self.pages.pop()
    }

    /// Returns a page taken from this cache and still zero.
    pub(crate) fn put_back(&mut self, pa: u64) {
        debug_assert!(self.pages.len() < self.pages.capacity());
        self.pages.push(pa);
    }
}

/// The most table pages mapping `[addr, addr + size)` can need in a tree
/// whose root is at `start`: one per next-level table the range touches.
#[must_use]
pub fn pages_needed(start: Level, addr: u64, size: u64) -> usize {
    if size == 0 {
        return 0;
    }
    let last = addr + size - 1;
    let mut pages = 0;
    let mut level = start;
    while let Some(next) = level.next() {
        // Each entry of `level` the range touches may need a table below it.
        let shift = level.shift();
        pages += ((last >> shift) - (addr >> shift) + 1) as usize;
        level = next;
    }
    pages
}

/// The table pages mapping `[addr, addr + size)` to `pa` with leaves up to
/// `max_block` bytes needs in an empty tree whose root is at `start`: one
/// per entry the range touches that cannot itself be a leaf. Exact for an
/// empty range of the tree, an upper bound otherwise.
#[must_use]
pub fn pages_needed_for_map(start: Level, addr: u64, size: u64, pa: u64, max_block: u64) -> usize {
    if size == 0 {
        return 0;
    }
    let end = addr + size;
    let mut pages = 0;
    let mut level = start;
    while let Some(next) = level.next() {
        let shift = level.shift();
        let entry = level.entry_size();
        let touched = ((end - 1) >> shift) - (addr >> shift) + 1;
        // Entries wholly inside the range, with both sides aligned, become
        // leaves and need no table below them.
        let leaves = if level.can_be_leaf()
            && entry <= max_block
            && pa.wrapping_sub(addr).is_multiple_of(entry)
        {
            (end >> shift).saturating_sub(addr.div_ceil(entry))
        } else {
            0
        };
        pages += (touched - leaves) as usize;
        level = next;
    }
    pages
}

/// Checks that `[pa, pa + size)` is page aligned and fits in the 48-bit
/// output addresses a descriptor holds (no LPA).
///
/// # Errors
///
/// [`Error::Misaligned`] or [`Error::OutputOutOfRange`].
pub(crate) fn check_output(pa: u64, size: u64) -> Result<(), Error> {
    if pa & (PAGE_SIZE - 1) != 0 {
        return Err(Error::Misaligned { addr: pa, size });
    }
    match pa.checked_add(size) {
        Some(end) if end <= 1 << 48 => Ok(()),
        _ => Err(Error::OutputOutOfRange { pa, size }),
    }
}

/// Bytes of the page-aligned range that covers `[addr, addr + size)`.
#[must_use]
pub const fn page_span(addr: u64, size: u64) -> u64 {
    let start = addr & !(PAGE_SIZE - 1);
    let end = (addr + size).next_multiple_of(PAGE_SIZE);
    end - start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_needed_counts_tables_per_level() {
        let l0 = Level::new(0).unwrap();
        let l1 = Level::new(1).unwrap();
        // One 4 KiB page under a level-0 root: a level-1, -2 and -3 table.
        assert_eq!(pages_needed(l0, 0x4000_0000, 0x1000), 3);
        // 1 GiB, 1 GiB-aligned, level-1 root: 1 level-2 table + 512 level-3 tables.
        assert_eq!(pages_needed(l1, 0x4000_0000, 1 << 30), 513);
        // Straddling a 2 MiB boundary touches two level-3 tables.
        assert_eq!(pages_needed(l1, 0x1ff000, 0x2000), 3);
        assert_eq!(pages_needed(l1, 0, 0), 0);
    }

    #[test]
    fn pages_needed_for_map_counts_only_tables_below_non_leaves() {
        let l1 = Level::new(1).unwrap();
        let g = 1u64 << 30;
        let m2 = 2u64 << 20;
        // 1 GiB aligned on both sides: a level-1 block, no table.
        assert_eq!(pages_needed_for_map(l1, g, g, 2 * g, g), 0);
        // The same with 2 MiB blocks at most: one level-2 table.
        assert_eq!(pages_needed_for_map(l1, g, g, 2 * g, m2), 1);
        // Pages only: the level-2 table and 512 level-3 tables.
        assert_eq!(pages_needed_for_map(l1, g, g, 2 * g, 4096), 513);
        // PA only page aligned: no blocks possible.
        assert_eq!(pages_needed_for_map(l1, g, g, 2 * g + 4096, g), 513);
        // Never more than the plain upper bound.
        assert!(
            pages_needed_for_map(l1, 0x1ff000, 0x2000, 0, g) <= pages_needed(l1, 0x1ff000, 0x2000)
        );
        assert_eq!(pages_needed_for_map(l1, 0x1ff000, 0x2000, 0, g), 3);
    }

    #[test]
    fn page_span_rounds_out() {
        assert_eq!(page_span(0x1001, 1), 0x1000);
        assert_eq!(page_span(0x1fff, 2), 0x2000);
    }
}
