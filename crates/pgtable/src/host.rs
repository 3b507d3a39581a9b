//! Host memory for tests and benchmarks: heap pages, a leak and double-free check, and a recorder of maintenance.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use crate::geometry::{Level, PAGE_SIZE};
use crate::mm::MmOps;

/// A maintenance or allocation event, in the order it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmEvent {
    /// Pages allocated.
    Alloc {
        /// First page.
        pa: u64,
        /// How many.
        count: usize,
    },
    /// Pages freed.
    Free {
        /// First page.
        pa: u64,
        /// How many.
        count: usize,
    },
    /// TLB invalidation of one address.
    TlbiAddr {
        /// The address.
        addr: u64,
        /// The level hint.
        level: Level,
    },
    /// TLB invalidation of a range.
    TlbiRange {
        /// Start.
        addr: u64,
        /// Size.
        size: u64,
    },
    /// TLB invalidation of the whole regime.
    TlbiAll,
    /// Data-cache clean and invalidate.
    DcacheClean {
        /// Start.
        pa: u64,
        /// Size.
        size: u64,
    },
    /// Instruction-cache invalidate.
    IcacheInval {
        /// Start.
        pa: u64,
        /// Size.
        size: u64,
    },
}

#[derive(Default)]
struct Inner {
    live: Mutex<HashMap<u64, usize>>,
    events: Mutex<Vec<MmEvent>>,
    recording: AtomicBool,
    /// Keep the live-page map and the page limit (off only for benchmarks).
    tracking: AtomicBool,
    limit: AtomicUsize,
    allocated: AtomicUsize,
    tlbis: AtomicU64,
    cmos: AtomicU64,
    yield_on_relax: AtomicBool,
}

/// Heap-backed [`MmOps`]: physical address = host virtual address. Clones
/// share one state, so a test keeps a clone to check for leaks after the
/// tree is gone.
#[derive(Clone, Default)]
pub struct HostMm {
    inner: Arc<Inner>,
}

impl HostMm {
    /// Live pages a tracking recorder hands out before it refuses (64 MiB
    /// of tables; no test builds more): a broken page count then fails
    /// with [`crate::Error::NoMemory`] in a moment instead of allocating
    /// until the test is stopped. [`HostMm::set_page_limit`] changes it.
    pub const DEFAULT_PAGE_LIMIT: usize = 1 << 14;

    /// A recorder, recording events, that refuses allocations past
    /// [`HostMm::DEFAULT_PAGE_LIMIT`] live pages.
    #[must_use]
    pub fn new() -> HostMm {
        let mm = HostMm::default();
        mm.inner.recording.store(true, Relaxed);
        mm.inner.tracking.store(true, Relaxed);
        mm.inner.limit.store(Self::DEFAULT_PAGE_LIMIT, Relaxed);
        mm.inner.yield_on_relax.store(true, Relaxed);
        mm
    }

    /// Without the event log (for benchmarks): counters only.
    #[must_use]
    pub fn quiet() -> HostMm {
        let mm = HostMm::new();
        mm.inner.recording.store(false, Relaxed);
        mm
    }

    /// Without the event log and without the live-page map (so without
    /// the leak and double-free checks and the page limit): pages come from
    /// and go straight back to the heap, as a benchmark's baseline
    /// allocates them. TLB and cache operations are still counted.
    #[must_use]
    pub fn untracked() -> HostMm {
        let mm = HostMm::quiet();
        mm.inner.tracking.store(false, Relaxed);
        mm
    }

    /// Fail allocations once `pages` pages are live.
    pub fn set_page_limit(&self, pages: usize) {
        self.inner.limit.store(pages, Relaxed);
    }

    /// Pages allocated and not freed.
    #[must_use]
    pub fn live_pages(&self) -> usize {
        self.inner.live.lock().unwrap().values().sum()
    }

    /// Whether `pa` is the start of a live allocation.
    #[must_use]
    pub fn is_live(&self, pa: u64) -> bool {
        self.inner.live.lock().unwrap().contains_key(&pa)
    }

    /// Every event so far, and clears the log.
    pub fn take_events(&self) -> Vec<MmEvent> {
        std::mem::take(&mut *self.inner.events.lock().unwrap())
    }

    /// TLB invalidations so far (any kind).
    #[must_use]
    pub fn tlbis(&self) -> u64 {
        self.inner.tlbis.load(Relaxed)
    }

    /// Cache maintenance operations so far.
    #[must_use]
    pub fn cmos(&self) -> u64 {
        self.inner.cmos.load(Relaxed)
    }

    #[inline]
    fn record(&self, event: MmEvent) {
        if self.inner.recording.load(Relaxed) {
            self.inner.events.lock().unwrap().push(event);
        }
    }

    #[inline]
    fn layout(count: usize) -> Layout {
        // One page, the common case (every table page), computed once.
        const ONE: Layout = match Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize) {
            Ok(layout) => layout,
            Err(_) => panic!("page layout"),
        };
        if count == 1 {
            return ONE;
        }
        let size = count * PAGE_SIZE as usize;
        Layout::from_size_align(size, size).expect("page layout")
    }
}

// SAFETY: pages come from `alloc_zeroed` with a layout of `count` pages
// aligned to their size, are tracked as live until `free_pages`, and the
// "physical" address is the host pointer, so `phys_to_virt` gives a
// readable, writable, aligned pointer to them.
unsafe impl MmOps for HostMm {
    fn zalloc_pages(&self, count: usize) -> Option<u64> {
        let tracking = self.inner.tracking.load(Relaxed);
        if tracking && self.inner.allocated.load(Relaxed) + count > self.inner.limit.load(Relaxed) {
            return None;
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(Self::layout(count)) };
        if ptr.is_null() {
            return None;
        }
        let pa = ptr as u64;
        if tracking {
            self.inner.allocated.fetch_add(count, Relaxed);
            self.inner.live.lock().unwrap().insert(pa, count);
        }
        self.record(MmEvent::Alloc { pa, count });
        Some(pa)
    }

    unsafe fn free_pages(&self, pa: u64, count: usize) {
        if self.inner.tracking.load(Relaxed) {
            let was = self.inner.live.lock().unwrap().remove(&pa);
            assert_eq!(
                was,
                Some(count),
                "free of {pa:#x} x{count}: not a live allocation (double free?)"
            );
            self.inner.allocated.fetch_sub(count, Relaxed);
        }
        self.record(MmEvent::Free { pa, count });
        // SAFETY: `pa` is a live allocation of `count` pages made by
        // `zalloc_pages` with this layout (checked above when tracking;
        // otherwise the caller's contract alone says so); the caller
        // guarantees nothing uses it any more.
        unsafe { dealloc(pa as *mut u8, Self::layout(count)) };
    }

    fn phys_to_virt(&self, pa: u64) -> *mut u64 {
        pa as *mut u64
    }

    fn dcache_clean_inval_poc(&self, pa: u64, size: u64) {
        self.inner.cmos.fetch_add(1, Relaxed);
        self.record(MmEvent::DcacheClean { pa, size });
    }

    fn icache_inval_pou(&self, pa: u64, size: u64) {
        self.inner.cmos.fetch_add(1, Relaxed);
        self.record(MmEvent::IcacheInval { pa, size });
    }

    fn tlb_flush_addr(&self, addr: u64, level: Level) {
        self.inner.tlbis.fetch_add(1, Relaxed);
        self.record(MmEvent::TlbiAddr { addr, level });
    }

    fn tlb_flush_range(&self, addr: u64, size: u64) {
        self.inner.tlbis.fetch_add(1, Relaxed);
        self.record(MmEvent::TlbiRange { addr, size });
    }

    fn tlb_flush_all(&self) {
        self.inner.tlbis.fetch_add(1, Relaxed);
        self.record(MmEvent::TlbiAll);
    }

    fn relax(&self) {
        if self.inner.yield_on_relax.load(Relaxed) {
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
}
