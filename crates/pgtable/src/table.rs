//! A table page seen as atomic entries: the one place the walker turns a physical address into memory.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use crate::mm::MmOps;

/// A borrowed table: `entries` atomic descriptors, valid for `'t`.
///
/// Every access to a descriptor is atomic, so shared walkers on several
/// CPUs (and the hardware walker, which reads single-copy-atomic 64-bit
/// descriptors) never see a torn entry.
#[derive(Clone, Copy)]
pub(crate) struct Table<'t> {
    base: NonNull<AtomicU64>,
    entries: usize,
    _life: PhantomData<&'t AtomicU64>,
}

// SAFETY: a `Table` is a view of atomics; sharing or sending it across
// threads is as safe as sharing `&[AtomicU64]`.
unsafe impl Send for Table<'_> {}
// SAFETY: as above: every access goes through `&AtomicU64`.
unsafe impl Sync for Table<'_> {}

impl<'t> Table<'t> {
    /// The table page(s) at `pa`, through `mm`.
    ///
    /// # Safety
    ///
    /// `pa` is the start of `entries / 512` table pages that `mm` allocated
    /// (so [`MmOps`]' contract makes them readable and writable, aligned),
    /// and they are not freed during `'t`: they belong to a tree the caller
    /// borrows for `'t`, and are freed only by exclusive walks or after
    /// every shared walker that could hold them has left (see
    /// `crate::defer`). All other accesses to them are atomic.
    pub(crate) unsafe fn new<M: MmOps>(mm: &M, pa: u64, entries: usize) -> Table<'t> {
        let va = mm.phys_to_virt(pa);
        Table {
            base: NonNull::new(va.cast::<AtomicU64>()).expect("phys_to_virt returned null"),
            entries,
            _life: PhantomData,
        }
    }

    /// How many entries the table has.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Entry `idx`.
    #[inline]
    pub(crate) fn entry(&self, idx: usize) -> &'t AtomicU64 {
        assert!(
            idx < self.entries,
            "table index {idx} out of {}",
            self.entries
        );
        // SAFETY: `idx` is in bounds (checked above) of the `entries`
        // descriptors that `new`'s contract keeps allocated, aligned and
        // atomically accessed for `'t`.
        unsafe { self.base.add(idx).as_ref() }
    }

    /// Entries `first..first + len`, as a slice.
    #[inline]
    pub(crate) fn entries(&self, first: usize, len: usize) -> &'t [AtomicU64] {
        assert!(
            first <= self.entries && len <= self.entries - first,
            "table entries {first}+{len} out of {}",
            self.entries
        );
        // SAFETY: the range is in bounds (checked above) of the `entries`
        // descriptors that `new`'s contract keeps allocated, aligned and
        // atomically accessed for `'t`.
        unsafe { core::slice::from_raw_parts(self.base.add(first).as_ptr(), len) }
    }

    /// Whether every entry is zero (no mapping, no table, no lock).
    pub(crate) fn is_empty(&self) -> bool {
        // Eight entries at a time, or-ed together: a table is scanned whole
        // each time an unmap leaves it, and is usually empty then.
        self.entries(0, self.entries).chunks(8).all(|chunk| {
            chunk.iter().fold(0, |acc, e| {
                acc | e.load(core::sync::atomic::Ordering::Relaxed)
            }) == 0
        })
    }
}
