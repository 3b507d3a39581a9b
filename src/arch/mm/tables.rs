//! The walker's memory operations on the real machine: table pages from the frame allocator, EL2 maintenance.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};

use hvcore::PhysAddr;
use pgtable::{Level, MmOps, PAGE_SIZE};

use super::{frame, maint};

/// [`MmOps`] for the hypervisor's own EL2 tables: single pages from the
/// frame allocator, multi-page (concatenated-root) blocks from the heap;
/// TLB maintenance of the EL2 regime.
#[derive(Debug, Default)]
pub struct El2Mm;

fn multi_page_layout(count: usize) -> Option<Layout> {
    let size = count.checked_mul(PAGE_SIZE as usize)?;
    Layout::from_size_align(size, size).ok()
}

// SAFETY: single pages come from the frame allocator, which hands a frame to
// one owner until it is freed; multi-page blocks come from the heap with a
// layout aligned to their size. Both are zeroed here before being returned.
// RAM is identity-mapped at EL2 (before and after the MMU is on: see
// `mmu.rs`), so the physical address is a valid pointer to the memory.
unsafe impl MmOps for El2Mm {
    fn zalloc_pages(&self, count: usize) -> Option<u64> {
        if count == 1 {
            let pa = frame::alloc_frame()?.as_u64();
            // SAFETY: the frame is ours alone (just allocated) and
            // identity-mapped; 4 KiB of it are writable.
            unsafe { core::ptr::write_bytes(pa as *mut u8, 0, PAGE_SIZE as usize) };
            Some(pa)
        } else {
            let layout = multi_page_layout(count)?;
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { alloc_zeroed(layout) };
            (!ptr.is_null()).then_some(ptr as u64)
        }
    }

    unsafe fn free_pages(&self, pa: u64, count: usize) {
        if count == 1 {
            if let Err(e) = frame::free_frame(PhysAddr::new(pa)) {
                log::error!("page tables: {e}");
            }
        } else if let Some(layout) = multi_page_layout(count) {
            // SAFETY: the caller passes back a block from `zalloc_pages` with
            // the same count, hence allocated from the heap with this layout.
            unsafe { dealloc(pa as *mut u8, layout) };
        }
    }

    fn phys_to_virt(&self, pa: u64) -> *mut u64 {
        pa as *mut u64
    }

    fn dcache_clean_inval_poc(&self, pa: u64, size: u64) {
        maint::dcache_clean_inval_poc(pa, size);
    }

    fn icache_inval_pou(&self, _pa: u64, _size: u64) {
        maint::icache_inval_all();
    }

    fn tlb_flush_addr(&self, addr: u64, _level: Level) {
        maint::tlbi_el2_va(addr);
    }

    fn tlb_flush_all(&self) {
        maint::tlbi_el2_all();
    }
}
