//! A translation tree: its root, its memory, its counters, and the entry point of every walk.

use crate::defer::Deferred;
use crate::error::Error;
use crate::geometry::{Geometry, Level, PAGE_SIZE};
use crate::mm::MmOps;
use crate::policy::{Access, Outcome};
use crate::stats::{Stats, StatsSnapshot};
use crate::table::Table;
use crate::walker::{free_below, free_subtree, run_detached, Visitor, Walk, WalkFlags};

/// Retries of one entry before a walk gives up with
/// [`Error::RetriesExhausted`]. A retry follows a lost race, so each one
/// means another walker made progress on that entry; 4096 is far beyond what
/// contention between a few CPUs produces.
pub const DEFAULT_MAX_RETRIES: u32 = 4096;

/// A tree of translation tables and what it needs to walk it.
pub(crate) struct Tree<M: MmOps> {
    pub(crate) mm: M,
    pub(crate) geometry: Geometry,
    root: u64,
    pub(crate) stats: Stats,
    deferred: Deferred,
    max_retries: u32,
}

impl<M: MmOps> Tree<M> {
    pub(crate) fn new(mm: M, geometry: Geometry) -> Result<Tree<M>, Error> {
        let root = mm
            .zalloc_pages(geometry.root_pages())
            .ok_or(Error::NoMemory)?;
        Ok(Tree {
            mm,
            geometry,
            root,
            stats: Stats::default(),
            deferred: Deferred::default(),
            max_retries: DEFAULT_MAX_RETRIES,
        })
    }

    pub(crate) fn root_pa(&self) -> u64 {
        self.root
    }

    pub(crate) fn set_max_retries(&mut self, n: u32) {
        self.max_retries = n;
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Checks that `[addr, addr + size)` is page aligned, non-empty, inside.
    pub(crate) fn check_range(&self, addr: u64, size: u64) -> Result<u64, Error> {
        if size == 0 || (addr | size) & (PAGE_SIZE - 1) != 0 {
            return Err(Error::Misaligned { addr, size });
        }
        let limit = self.geometry.limit();
        match addr.checked_add(size) {
            Some(end) if end <= limit => Ok(end),
            _ => Err(Error::OutOfRange { addr, size, limit }),
        }
    }

    /// Walks `[addr, addr + size)` with `visitor`.
    ///
    /// `Access::Exclusive` may only be passed by a caller holding `&mut`
    /// of the tree (the typed handles in `stage2` and `hyp` make sure):
    /// exclusive walks free pages on the spot.
    #[inline]
    pub(crate) fn walk<V: Visitor<M>>(
        &self,
        addr: u64,
        size: u64,
        visitor: &mut V,
        access: Access,
        flags: WalkFlags,
    ) -> Result<(), Error> {
        let end = self.check_range(addr, size)?;
        if access.is_shared() {
            self.deferred.enter();
        }
        // SAFETY: the root pages were allocated by `self.mm` in `new` and
        // are freed only by `Drop`, which needs the tree by value.
        let root = unsafe { Table::new(&self.mm, self.root, self.geometry.root_entries) };
        let mut walk = Walk {
            mm: &self.mm,
            visitor,
            flags,
            access,
            addr,
            end,
            max_retries: self.max_retries,
            stats: &self.stats,
            deferred: &self.deferred,
        };
        let result = walk.run(root, self.geometry.start_level);
        if access.is_shared() {
            for (pa, level) in self.deferred.exit() {
                // SAFETY: `Deferred::exit` hands out a subtree only when no
                // shared walker is inside the tree, and it was unlinked
                // (with TLB invalidation) before it was queued; no exclusive
                // walker runs while we hold `&self`.
                unsafe { free_subtree(&self.mm, &self.stats, pa, level) };
            }
        }
        result.map_err(|e| match e.outcome {
            _ if e.exhausted => Error::RetriesExhausted {
                addr: e.addr,
                level: e.level,
                outcome: e.outcome,
            },
            Outcome::NoMemory => Error::NoMemory,
            Outcome::Conflict => Error::Conflict { addr: e.addr },
            outcome => Error::Refault {
                addr: e.addr,
                outcome,
            },
        })
    }

    /// Walks a table that is not linked into this tree (a subtree being
    /// built), exclusively: nobody else can see it.
    ///
    /// # Safety
    ///
    /// `table_pa` is a table page from `self.mm` that no walker or CPU can
    /// reach yet.
    pub(crate) unsafe fn walk_unlinked<V: Visitor<M>>(
        &self,
        table_pa: u64,
        level: Level,
        addr: u64,
        size: u64,
        visitor: &mut V,
    ) -> Result<(), Error> {
        // SAFETY: the caller hands us an allocated page nobody else uses.
        let table = unsafe { Table::new(&self.mm, table_pa, crate::geometry::ENTRIES_PER_TABLE) };
        let flags = WalkFlags::LEAF
            .union(WalkFlags::SKIP_BBM_TLBI)
            .union(WalkFlags::SKIP_CMO);
        run_detached(
            &self.mm,
            &self.stats,
            table,
            level,
            (addr, addr + size),
            visitor,
            flags,
        )
        .map_err(|e| match e.outcome {
            Outcome::NoMemory => Error::NoMemory,
            _ => Error::Conflict { addr: e.addr },
        })
    }

    /// Frees an unlinked subtree now.
    ///
    /// # Safety
    ///
    /// As [`free_subtree`]: unreachable, not cached by any TLB, from `self.mm`.
    pub(crate) unsafe fn free_unlinked(&self, table_pa: u64, level: Level) {
        // SAFETY: forwarded from the caller.
        unsafe { free_subtree(&self.mm, &self.stats, table_pa, level) };
    }

    /// Frees everything below the root, and any deferred subtree.
    fn free_all(&mut self) {
        for (pa, level) in self.deferred.take_all() {
            // SAFETY: queued subtrees are unlinked; with `&mut self` no
            // walker is inside.
            unsafe { free_subtree(&self.mm, &self.stats, pa, level) };
        }
        // SAFETY: the root is ours (allocated in `new`, freed only in `Drop`).
        let root = unsafe { Table::new(&self.mm, self.root, self.geometry.root_entries) };
        // SAFETY: only `Drop` calls this, after flushing the regime's TLB;
        // `&mut self` excludes walkers; the root is freed right after, so
        // its entries pointing to freed tables are never read.
        let freed = unsafe { free_below(&self.mm, &self.stats, root, self.geometry.start_level) };
        self.stats.tables_freed(freed);
    }
}

impl<M: MmOps> Drop for Tree<M> {
    fn drop(&mut self) {
        // No CPU may keep walking the tree from its TLB once pages are reused.
        self.mm.tlb_flush_all();
        self.free_all();
        // SAFETY: the root pages came from `zalloc_pages(root_pages)` in
        // `new`; everything below was freed above and the TLB flushed.
        unsafe { self.mm.free_pages(self.root, self.geometry.root_pages()) };
    }
}
