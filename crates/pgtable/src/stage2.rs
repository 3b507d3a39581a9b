//! Stage-2 (IPA -> PA) trees for guests and their operations, each one visitor walked under the caller's access mode.

use core::marker::PhantomData;

use crate::error::Error;
use crate::geometry::{Geometry, Level, PAGE_SIZE};
use crate::mm::{MemCache, MmOps};
use crate::mode::{Exclusive, Fault, Mode, NotFault, Shared};
use crate::ops::{self, Mapped};
use crate::pte::{self, stage2_perm_bits, Format, Prot, Pte, AF};
use crate::stats::StatsSnapshot;
use crate::tree::Tree;
use crate::walker::WalkFlags;

/// A guest's stage-2 translation tree.
///
/// Operations run through a handle that names the access mode:
/// [`Stage2::exclusive`] (needs `&mut`), [`Stage2::shared`] and
/// [`Stage2::fault`]. A VM keeps its tree behind a reader-writer lock: vCPU
/// faults take it shared and walk in fault mode; teardown takes it
/// exclusive.
pub struct Stage2<M: MmOps> {
    tree: Tree<M>,
    flags: WalkFlags,
}

/// The leaf that translates an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The entry (invalid if nothing is mapped there).
    pub pte: Pte,
    /// Its level.
    pub level: Level,
}

impl Leaf {
    /// The physical address `ipa` translates to, if mapped.
    #[must_use]
    pub fn translate(&self, ipa: u64) -> Option<u64> {
        self.pte
            .is_leaf(self.level)
            .then(|| self.pte.output_address() + (ipa & (self.level.entry_size() - 1)))
    }

    /// The permissions of the leaf, if mapped.
    #[must_use]
    pub fn prot(&self) -> Option<Prot> {
        self.pte
            .is_leaf(self.level)
            .then(|| pte::Stage2::prot(self.pte))
    }
}

/// A TLB invalidation still owed after permissions were reduced.
///
/// Until it is passed to [`Stage2::complete`], CPUs may keep using the old,
/// wider permissions: a write-protect is not in effect. Dropping it unused
/// is a bug, which `#[must_use]` makes a warning.
#[must_use = "the TLB may still hold the old permissions: pass this to Stage2::complete"]
#[derive(Debug, PartialEq, Eq)]
pub struct PendingFlush {
    range: Option<(u64, u64)>,
}

impl PendingFlush {
    /// Nothing owed yet: the start of a [`PendingFlush::merge`] chain.
    pub const NONE: PendingFlush = PendingFlush { range: None };

    /// Whether any permission was actually reduced.
    #[must_use]
    pub fn is_needed(&self) -> bool {
        self.range.is_some()
    }

    /// One invalidation that covers both: several write-protects, then a
    /// single flush before any of them is relied on.
    pub fn merge(self, other: PendingFlush) -> PendingFlush {
        let range = match (self.range, other.range) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, None) | (None, one) => one,
        };
        PendingFlush { range }
    }
}

/// A subtree built off-line by [`Stage2::create_unlinked`].
#[derive(Debug)]
#[must_use = "an unlinked subtree holds table pages: link it or free it"]
pub struct UnlinkedTable {
    pa: u64,
    level: Level,
}

impl UnlinkedTable {
    /// Physical address of its table page.
    #[must_use]
    pub fn pa(&self) -> u64 {
        self.pa
    }
}

impl<M: MmOps> Stage2<M> {
    /// An empty tree translating `ia_bits` of IPA (25 to 48), with its start
    /// level and concatenated root chosen as [`Geometry::stage2`] does.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedSize`], or [`Error::NoMemory`] for the root.
    pub fn new(mm: M, ia_bits: u32) -> Result<Stage2<M>, Error> {
        let geometry = Geometry::stage2(ia_bits).ok_or(Error::UnsupportedSize { ia_bits })?;
        Ok(Stage2 {
            tree: Tree::new(mm, geometry)?,
            flags: WalkFlags::default(),
        })
    }

    /// Skip data-cache maintenance when mapping guest memory (the CPU has
    /// FEAT_S2FWB, or the platform is coherent).
    pub fn set_skip_cmo(&mut self, skip: bool) {
        self.set_flag(WalkFlags::SKIP_CMO, skip);
    }

    /// Whether map, unmap, write-protect and aging may handle runs of entries in one visitor
    /// call (the default), or must visit every entry on its own. Host
    /// builds only: tests check that both give the same trees.
    #[cfg(any(test, feature = "host"))]
    pub fn set_runs(&mut self, runs: bool) {
        self.set_flag(WalkFlags::NO_RUNS, !runs);
    }

    fn set_flag(&mut self, flag: WalkFlags, on: bool) {
        self.flags = if on {
            self.flags.union(flag)
        } else {
            self.flags.without(flag)
        };
    }

    /// The most retries one entry gets (default [`crate::DEFAULT_MAX_RETRIES`]).
    pub fn set_max_retries(&mut self, n: u32) {
        self.tree.set_max_retries(n);
    }

    /// The tree's shape (for `VTCR_EL2`).
    #[must_use]
    pub fn geometry(&self) -> Geometry {
        self.tree.geometry
    }

    /// Physical address of the root (for `VTTBR_EL2.BADDR`).
    #[must_use]
    pub fn root_pa(&self) -> u64 {
        self.tree.root_pa()
    }

    /// The memory operations the tree uses.
    #[must_use]
    pub fn mm(&self) -> &M {
        &self.tree.mm
    }

    /// The tree's counters.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        self.tree.stats()
    }

    /// Operations with the tree held alone.
    pub fn exclusive(&mut self) -> Ops<'_, M, Exclusive> {
        Ops::new(self)
    }

    /// Operations that may run beside other shared walkers.
    #[must_use]
    pub fn shared(&self) -> Ops<'_, M, Shared> {
        Ops::new(self)
    }

    /// Operations serving a guest abort.
    #[must_use]
    pub fn fault(&self) -> Ops<'_, M, Fault> {
        Ops::new(self)
    }

    /// Performs a TLB invalidation owed by a permission reduction.
    pub fn complete(&self, flush: PendingFlush) {
        if let Some((start, end)) = flush.range {
            self.tree.mm.tlb_flush_range(start, end - start);
        }
    }

    /// Builds, off-line, the table that would replace a block of `level`
    /// at `ipa`: it maps `[pa, pa + level size)` with `prot`, using the
    /// largest leaves below `level` (pages only if `pages_only`). Pages come
    /// from `cache`. No TLB or cache maintenance: nothing can see it yet.
    ///
    /// # Errors
    ///
    /// [`Error::Misaligned`] if `ipa` or `pa` is not aligned to the block,
    /// [`Error::NoMemory`] if the cache runs dry (what was built is freed).
    pub fn create_unlinked(
        &self,
        ipa: u64,
        pa: u64,
        level: Level,
        prot: Prot,
        pages_only: bool,
        cache: &mut MemCache,
    ) -> Result<UnlinkedTable, Error> {
        let size = level.entry_size();
        let child = level.next().ok_or(Error::Misaligned { addr: ipa, size })?;
        if (ipa | pa) & (size - 1) != 0 {
            return Err(Error::Misaligned { addr: ipa, size });
        }
        crate::mm::check_output(pa, size)?;
        let page = cache.take().ok_or(Error::NoMemory)?;
        self.tree.stats.table_added();
        let mut map = ops::Map::<pte::Stage2> {
            ipa,
            pa,
            attrs: pte::Stage2::leaf_attrs(prot),
            max_size: if pages_only {
                PAGE_SIZE
            } else {
                child.entry_size()
            },
            replace: false,
            cache,
            mapped: Mapped::default(),
            format: PhantomData,
        };
        // SAFETY: `page` is a fresh page from the cache, linked nowhere.
        let built = unsafe { self.tree.walk_unlinked(page, child, ipa, size, &mut map) };
        let table = UnlinkedTable {
            pa: page,
            level: child,
        };
        match built {
            Ok(()) => Ok(table),
            Err(e) => {
                self.free_unlinked(table);
                Err(e)
            }
        }
    }

    /// Frees a subtree from [`Stage2::create_unlinked`] that was never linked.
    pub fn free_unlinked(&self, table: UnlinkedTable) {
        // SAFETY: an `UnlinkedTable` is only made by `create_unlinked`, from
        // pages of this tree's `mm`, and handing it here by value means it
        // was never linked: no walker or TLB can hold it.
        unsafe { self.tree.free_unlinked(table.pa, table.level) };
    }

    /// Frees the whole tree (also done on drop). The caller must have
    /// stopped every vCPU using it; the regime's TLB is invalidated first.
    pub fn destroy(self) {
        drop(self);
    }
}

/// Stage-2 operations in mode `A`: [`Exclusive`], [`Shared`] or [`Fault`].
pub struct Ops<'t, M: MmOps, A: Mode> {
    s2: &'t Stage2<M>,
    mode: PhantomData<A>,
}

impl<'t, M: MmOps, A: Mode> Ops<'t, M, A> {
    fn new(s2: &'t Stage2<M>) -> Self {
        Ops {
            s2,
            mode: PhantomData,
        }
    }

    fn map_with(
        &self,
        ipa: u64,
        size: u64,
        pa: u64,
        prot: Prot,
        max_size: u64,
        cache: &mut MemCache,
    ) -> Result<Mapped, Error> {
        crate::mm::check_output(pa, size)?;
        let mut map = ops::Map::<pte::Stage2> {
            ipa,
            pa,
            attrs: pte::Stage2::leaf_attrs(prot),
            max_size,
            replace: true,
            cache,
            mapped: Mapped::default(),
            format: PhantomData,
        };
        // Pre-order table visits only where one could collapse a table.
        let pre = if map.may_collapse(size) {
            WalkFlags::TABLE_PRE
        } else {
            WalkFlags::default()
        };
        let flags = WalkFlags::LEAF.union(pre).union(self.s2.flags);
        self.s2.tree.walk(ipa, size, &mut map, A::ACCESS, flags)?;
        Ok(map.mapped)
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)` with `prot`, each leaf
    /// as large as alignment and size allow (1 GiB, 2 MiB, 4 KiB). A block
    /// only partly remapped is split (the rest keeps its mapping); a table
    /// where a block now fits is replaced by the block. Table pages come
    /// from `cache` ([`crate::pages_needed`] tells how many can be needed).
    ///
    /// # Errors
    ///
    /// Range errors, [`Error::NoMemory`] if the cache runs dry,
    /// [`Error::Refault`] in fault mode when another walker got there
    /// first, [`Error::RetriesExhausted`].
    pub fn map(
        &self,
        ipa: u64,
        size: u64,
        pa: u64,
        prot: Prot,
        cache: &mut MemCache,
    ) -> Result<Mapped, Error> {
        self.map_with(ipa, size, pa, prot, crate::geometry::MAX_BLOCK, cache)
    }

    /// As [`Ops::map`], with 4 KiB pages only (for dirty logging).
    ///
    /// # Errors
    ///
    /// As [`Ops::map`].
    pub fn map_pages(
        &self,
        ipa: u64,
        size: u64,
        pa: u64,
        prot: Prot,
        cache: &mut MemCache,
    ) -> Result<Mapped, Error> {
        self.map_with(ipa, size, pa, prot, PAGE_SIZE, cache)
    }

    /// The leaf translating `ipa` (an invalid entry and the level where
    /// the walk stopped if nothing maps it).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] outside the tree.
    pub fn get_leaf(&self, ipa: u64) -> Result<Leaf, Error> {
        let mut v = ops::GetLeaf::default();
        let page = ipa & !(PAGE_SIZE - 1);
        self.s2
            .tree
            .walk(page, PAGE_SIZE, &mut v, A::ACCESS, WalkFlags::LEAF)?;
        let (pte, level) = v.found.expect("a walk of one page visits one leaf");
        Ok(Leaf { pte, level })
    }

    /// Bytes of `[ipa, ipa + size)` that leaves map (a read-only walk of
    /// every leaf in the range).
    ///
    /// # Errors
    ///
    /// Range errors.
    pub fn mapped_bytes(&self, ipa: u64, size: u64) -> Result<u64, Error> {
        let mut v = ops::CountMapped::default();
        self.s2
            .tree
            .walk(ipa, size, &mut v, A::ACCESS, WalkFlags::LEAF)?;
        Ok(v.bytes)
    }

    fn attr(
        &self,
        ipa: u64,
        size: u64,
        set: u64,
        clear: u64,
        flush_each: bool,
    ) -> Result<Option<(u64, u64)>, Error> {
        let mut v = ops::Attr {
            set,
            clear,
            flush_each,
            reduced: None,
        };
        self.s2
            .tree
            .walk(ipa, size, &mut v, A::ACCESS, self.leaf_flags())?;
        Ok(v.reduced)
    }

    /// A walk of leaves: no cache maintenance to skip, but runs may be off.
    fn leaf_flags(&self) -> WalkFlags {
        if self.s2.flags.contains(WalkFlags::NO_RUNS) {
            WalkFlags::LEAF.union(WalkFlags::NO_RUNS)
        } else {
            WalkFlags::LEAF
        }
    }

    /// Adds the permissions in `prot` (R, W, X) to the leaf mapping `ipa`,
    /// and invalidates its TLB entry.
    ///
    /// # Errors
    ///
    /// In fault mode [`Error::Refault`] if the leaf is gone, already has
    /// the permissions, or another walker changed it.
    pub fn relax_perms(&self, ipa: u64, prot: Prot) -> Result<(), Error> {
        let bits = stage2_perm_bits(prot);
        let xn = stage2_perm_bits(Prot::X);
        let page = ipa & !(PAGE_SIZE - 1);
        self.attr(page, PAGE_SIZE, (bits & !xn) | AF, bits & xn, true)
            .map(drop)
    }

    /// Sets the access flag of the leaf mapping `ipa`.
    ///
    /// # Errors
    ///
    /// As [`Ops::relax_perms`].
    pub fn mkyoung(&self, ipa: u64) -> Result<(), Error> {
        let page = ipa & !(PAGE_SIZE - 1);
        self.attr(page, PAGE_SIZE, AF, 0, false).map(drop)
    }
}

impl<M: MmOps, A: NotFault> Ops<'_, M, A> {
    /// Removes write permission from every leaf in the range. Takes effect
    /// once the returned flush is passed to [`Stage2::complete`]. A lost
    /// race is retried, never skipped (see `POLICY.md`).
    ///
    /// # Errors
    ///
    /// Range errors, [`Error::RetriesExhausted`].
    pub fn wrprotect(&self, ipa: u64, size: u64) -> Result<PendingFlush, Error> {
        let w = stage2_perm_bits(Prot::W);
        let range = self.attr(ipa, size, 0, w, false)?;
        Ok(PendingFlush { range })
    }

    /// [`Ops::wrprotect`] with the wrong policy that *skips* an entry on a
    /// lost race ([`crate::policy::ATTR_SKIPPING_LOST_RACES`]). Host builds
    /// only: the negative control that shows the dirty-log tests can fail.
    ///
    /// # Errors
    ///
    /// As [`Ops::wrprotect`].
    #[cfg(any(test, feature = "host"))]
    pub fn wrprotect_skipping_lost_races(
        &self,
        ipa: u64,
        size: u64,
    ) -> Result<PendingFlush, Error> {
        let mut v = ops::AttrSkippingLostRaces(ops::Attr {
            set: 0,
            clear: stage2_perm_bits(Prot::W),
            flush_each: false,
            reduced: None,
        });
        self.s2
            .tree
            .walk(ipa, size, &mut v, A::ACCESS, WalkFlags::LEAF)?;
        Ok(PendingFlush { range: v.0.reduced })
    }

    /// Whether any leaf in the range was accessed since last cleared;
    /// clears the access flags too if `mkold`.
    ///
    /// # Errors
    ///
    /// Range errors.
    pub fn test_clear_young(&self, ipa: u64, size: u64, mkold: bool) -> Result<bool, Error> {
        let mut v = ops::Age {
            mkold,
            young: false,
        };
        self.s2
            .tree
            .walk(ipa, size, &mut v, A::ACCESS, self.leaf_flags())?;
        Ok(v.young)
    }

    /// Cleans and invalidates to the point of coherency the memory mapped
    /// in the range.
    ///
    /// # Errors
    ///
    /// Range errors.
    pub fn flush(&self, ipa: u64, size: u64) -> Result<(), Error> {
        let mut v = ops::Flush::<pte::Stage2>(PhantomData);
        self.s2
            .tree
            .walk(ipa, size, &mut v, A::ACCESS, WalkFlags::LEAF)
    }

    /// Splits every block in the range into pages ahead of time, with
    /// table pages from `cache`; returns how many blocks were split.
    ///
    /// # Errors
    ///
    /// Range errors, [`Error::NoMemory`] (blocks split so far stay split).
    pub fn split(&self, ipa: u64, size: u64, cache: &mut MemCache) -> Result<u64, Error> {
        let mut v = ops::Split { cache, split: 0 };
        self.s2
            .tree
            .walk(ipa, size, &mut v, A::ACCESS, WalkFlags::LEAF)?;
        Ok(v.split)
    }
}

impl<M: MmOps> Ops<'_, M, Exclusive> {
    /// Unmaps the range (splitting blocks it covers in part, with pages
    /// from `cache`) and frees tables that become empty. A table the range
    /// covers whole goes at once, without reading its leaves (when none
    /// needs cache maintenance); [`Ops::mapped_bytes`] tells, beforehand,
    /// how much of the range was mapped.
    ///
    /// # Errors
    ///
    /// Range errors, [`Error::NoMemory`] when a split needs a page.
    pub fn unmap(&self, ipa: u64, size: u64, cache: &mut MemCache) -> Result<(), Error> {
        let mut v = ops::Unmap::<pte::Stage2> {
            cache,
            format: PhantomData,
        };
        let flags = WalkFlags::LEAF
            .union(WalkFlags::TABLE_PRE)
            .union(WalkFlags::TABLE_POST)
            .union(self.s2.flags);
        self.s2
            .tree
            .walk(ipa, size, &mut v, crate::policy::Access::Exclusive, flags)
    }
}

#[cfg(test)]
mod tests;
