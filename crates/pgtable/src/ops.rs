//! Every operation's visitor: a small struct, the outcomes it reports, and nothing about what the walker does next.

use core::marker::PhantomData;
use core::sync::atomic::Ordering;

use crate::geometry::{Level, ENTRIES_PER_TABLE};
use crate::mm::{MemCache, MmOps};
use crate::policy::{self, Access, Outcome, Policy};
use crate::pte::{Format, Pte, AF};
use crate::table::Table;
use crate::walker::{RunCtx, RunEnd, VisitCtx, VisitKind, Visitor, WalkFlags};

/// Leaves installed, by level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    by_level: [u64; 4],
}

impl Mapped {
    /// Leaves installed at `level` (1: 1 GiB blocks, 2: 2 MiB blocks, 3: pages).
    #[must_use]
    pub fn at(&self, level: Level) -> u64 {
        self.by_level[level.get() as usize]
    }

    /// Leaves installed in all.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_level.iter().sum()
    }

    fn add(&mut self, level: Level) {
        self.add_n(level, 1);
    }

    fn add_n(&mut self, level: Level, n: usize) {
        self.by_level[level.get() as usize] += n as u64;
    }
}

/// Cleans a new or departing leaf's memory to the point of coherency,
/// unless the walk skips cache maintenance or the memory needs none.
fn clean_leaf<M: MmOps, F: Format>(ctx: &VisitCtx<'_, M>, leaf: Pte) {
    if !ctx.flags.contains(WalkFlags::SKIP_CMO) && F::needs_cmo(leaf) {
        let size = ctx.size();
        ctx.mm.dcache_clean_inval_poc(leaf.output_address(), size);
        if F::prot(leaf).contains(crate::pte::Prot::X) {
            ctx.mm.icache_inval_pou(leaf.output_address(), size);
        }
    }
}

/// Whether the valid leaf `old` maps the walk's address to `pa` with the
/// leaf attributes `attrs`.
fn maps_as<M: MmOps>(ctx: &VisitCtx<'_, M>, old: Pte, pa: u64, attrs: u64) -> bool {
    let offset = ctx.addr - ctx.level.align_down(ctx.addr);
    old.output_address() + offset == pa
        && Pte::leaf_at(attrs, old.output_address(), ctx.level) == old
}

/// Replaces the valid block in `ctx` by a table that maps the same memory
/// with the same attributes one level down (break-before-make). The walker
/// then descends into it.
fn split_block<M: MmOps>(ctx: &VisitCtx<'_, M>, cache: &mut MemCache) -> Result<(), Outcome> {
    let old = ctx.old;
    let child = ctx
        .level
        .next()
        .expect("a block is never at the last level");
    let page = cache.take().ok_or(Outcome::NoMemory)?;
    if let Err(outcome) = ctx.try_break() {
        cache.put_back(page); // untouched, still zero
        return Err(outcome);
    }
    // SAFETY: `page` came from the cache, so `ctx.mm` allocated it and no
    // one else can reach it until `make` below links it.
    let table = unsafe { Table::new(ctx.mm, page, ENTRIES_PER_TABLE) };
    for i in 0..ENTRIES_PER_TABLE {
        let pa = old.output_address() + i as u64 * child.entry_size();
        let leaf = Pte::leaf_at(old.bits(), pa, child);
        table.entry(i).store(leaf.bits(), Ordering::Relaxed);
    }
    ctx.make(Pte::table(page));
    ctx.stats.table_added();
    Ok(())
}

/// Installs leaves for `[ipa, ipa + size)` -> `[pa, pa + size)`, each as
/// large as alignment, size and `max_size` allow. Installs missing tables
/// from the cache, splits blocks that only part of the range covers, and
/// (if `replace`) collapses tables where a block now fits.
pub(crate) struct Map<'c, F> {
    pub(crate) ipa: u64,
    pub(crate) pa: u64,
    pub(crate) attrs: u64,
    pub(crate) max_size: u64,
    /// May a valid mapping be replaced by break-before-make? (Never for
    /// the hypervisor's own tables: they translate the code doing it.)
    pub(crate) replace: bool,
    pub(crate) cache: &'c mut MemCache,
    pub(crate) mapped: Mapped,
    pub(crate) format: PhantomData<F>,
}

impl<F: Format> Map<'_, F> {
    fn pa_at(&self, addr: u64) -> u64 {
        self.pa + (addr - self.ipa)
    }

    fn leaf_fits<M: MmOps>(&self, ctx: &VisitCtx<'_, M>) -> bool {
        let size = ctx.size();
        ctx.level.can_be_leaf()
            && size <= self.max_size
            && ctx.covers_entry()
            && self.pa_at(ctx.addr) & (size - 1) == 0
    }

    /// Whether a pre-order visit of a table, anywhere in a walk over
    /// `[self.ipa, self.ipa + size)`, could do anything: whether a block
    /// may replace a table ([`Map::collapse`]). That takes a map that may
    /// replace (`replace`), blocks allowed (`max_size`), an output address
    /// congruent to the input modulo the block size, and the range covering
    /// one whole aligned block. The smallest block (one entry of the level
    /// above the last) is the one to check: if no 2 MiB block fits, no
    /// larger one does. Otherwise every pre-order visit would return
    /// `Ok(())`, so a map walk asks for [`WalkFlags::TABLE_PRE`] only when
    /// this says yes, and the walker descends through tables without them
    /// (a lazy 4 KiB fault walks two tables that way).
    pub(crate) fn may_collapse(&self, size: u64) -> bool {
        let block = Level::LAST.entry_size() * ENTRIES_PER_TABLE as u64;
        // From `ipa` up to the first block boundary (0 if on one).
        let lead = self.ipa.wrapping_neg() & (block - 1);
        size >= block
            && lead <= size - block
            && block <= self.max_size
            && (self.ipa ^ self.pa) & (block - 1) == 0
            && self.replace
    }

    fn install_leaf<M: MmOps>(&mut self, ctx: &VisitCtx<'_, M>) -> Result<(), Outcome> {
        let new = Pte::leaf_at(self.attrs, self.pa_at(ctx.addr), ctx.level);
        let old = ctx.old;
        if old.is_locked() {
            return Err(Outcome::LostRace);
        }
        if old.is_valid() {
            // Same memory: nothing to do, or (in a fault) a permission or
            // access-flag difference the fault's own path resolves.
            if old.output_address() == new.output_address()
                && (old == new || ctx.access == Access::Fault)
            {
                return Err(Outcome::Unchanged);
            }
            if !self.replace {
                return Err(Outcome::Conflict);
            }
            ctx.try_break()?;
            clean_leaf::<M, F>(ctx, new);
            ctx.make(new);
        } else {
            // Clean before the leaf is visible: no CPU may read stale memory
            // through it.
            clean_leaf::<M, F>(ctx, new);
            ctx.try_set(new)?;
        }
        self.mapped.add(ctx.level);
        Ok(())
    }

    /// Whether the valid leaf `old` already maps the walk's address the way
    /// this map would ([`maps_as`]), or, in a fault walk, maps it to the
    /// same place with only permissions or the access flag different (which
    /// the fault's own path resolves).
    fn same_mapping<M: MmOps>(&self, ctx: &VisitCtx<'_, M>, old: Pte) -> bool {
        let pa = self.pa_at(ctx.addr);
        maps_as(ctx, old, pa, self.attrs)
            || (ctx.access == Access::Fault && maps_as(ctx, old, pa, old.bits()))
    }

    fn install_table<M: MmOps>(&mut self, ctx: &VisitCtx<'_, M>) -> Result<(), Outcome> {
        let old = ctx.old;
        if old.is_locked() {
            return Err(Outcome::LostRace);
        }
        if old.is_valid() {
            // A block that already maps this part as asked needs no split.
            if ctx.size() <= self.max_size && self.same_mapping(ctx, old) {
                return Err(Outcome::Unchanged);
            }
            if !self.replace {
                return Err(Outcome::Conflict);
            }
            return split_block(ctx, self.cache);
        }
        let page = self.cache.take().ok_or(Outcome::NoMemory)?;
        match ctx.try_set(Pte::table(page)) {
            Ok(()) => {
                ctx.stats.table_added();
                Ok(())
            }
            Err(outcome) => {
                self.cache.put_back(page); // never linked, still zero
                Err(outcome)
            }
        }
    }

    /// A table sits where one block now fits: replace the whole subtree.
    fn collapse<M: MmOps>(&mut self, ctx: &VisitCtx<'_, M>) -> Result<(), Outcome> {
        let new = Pte::leaf_at(self.attrs, self.pa_at(ctx.addr), ctx.level);
        ctx.try_break()?;
        clean_leaf::<M, F>(ctx, new);
        ctx.make(new);
        let child = ctx
            .level
            .next()
            .expect("a table is never at the last level");
        ctx.retire_subtree(ctx.old.output_address(), child);
        self.mapped.add(ctx.level);
        Ok(())
    }
}

impl<M: MmOps, F: Format> Visitor<M> for Map<'_, F> {
    const POLICY: &'static Policy = &policy::MAP;
    const RUNS: bool = true;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, kind: VisitKind) -> Result<(), Outcome> {
        match kind {
            VisitKind::Leaf if self.leaf_fits(ctx) => {
                // A block fits here, so it would fit over a table too: the
                // walk must have asked for pre-order visits.
                debug_assert!(
                    ctx.level == Level::LAST
                        || !self.replace
                        || self.may_collapse(ctx.end - self.ipa),
                    "a block fits at {:#x} but may_collapse says no",
                    ctx.addr
                );
                self.install_leaf(ctx)
            }
            VisitKind::Leaf => self.install_table(ctx),
            VisitKind::TablePre if self.replace && self.leaf_fits(ctx) => self.collapse(ctx),
            VisitKind::TablePre | VisitKind::TablePost => Ok(()),
        }
    }

    /// The common case of a map, in one loop: empty entries that each
    /// become a leaf. `leaf_fits` is the same for every entry of the run
    /// (each is wholly covered, and the output address advances by the
    /// entry size), so it is checked once; an empty entry then takes
    /// `install_leaf`'s empty-entry branch: clean, then set. Anything else
    /// (a leaf, a table, a lock) is left to `visit`.
    fn visit_run(&mut self, run: &RunCtx<'_, M>) -> RunEnd {
        let size = run.level.entry_size();
        let pa = self.pa_at(run.addr);
        if !run.level.can_be_leaf() || size > self.max_size || pa & (size - 1) != 0 {
            return RunEnd::DECLINED;
        }
        // Every leaf of the run is this one with the output address moved
        // on by whole entries (`check_output` keeps it inside the field).
        let first = Pte::leaf_at(self.attrs, pa, run.level);
        let mut end = RunEnd {
            done: run.len(),
            outcome: None,
        };
        for i in 0..run.len() {
            let old = run.read(i);
            if old != Pte::INVALID {
                end.done = i;
                break;
            }
            let new = Pte::from_bits(first.bits() + i as u64 * size);
            let ctx = run.at(i, old);
            clean_leaf::<M, F>(&ctx, new);
            if let Err(outcome) = ctx.try_set(new) {
                end = RunEnd {
                    done: i,
                    outcome: Some(outcome),
                };
                break;
            }
        }
        self.mapped.add_n(run.level, end.done);
        end
    }
}

/// Checks, without changing anything, that every valid leaf in the range
/// already maps it as a map with `attrs` to `pa` would (`conflict` if not).
/// Lets an exclusive map that may not replace mappings refuse up front.
pub(crate) struct Probe {
    pub(crate) ipa: u64,
    pub(crate) pa: u64,
    pub(crate) attrs: u64,
}

impl<M: MmOps> Visitor<M> for Probe {
    const POLICY: &'static Policy = &policy::GET_LEAF;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
        let old = ctx.old;
        let pa = self.pa + (ctx.addr - self.ipa);
        if !old.is_valid() || maps_as(ctx, old, pa, self.attrs) {
            Ok(())
        } else {
            Err(Outcome::Conflict)
        }
    }
}

/// Removes leaves in the range (splitting blocks it only partly covers)
/// and frees tables that become empty. Exclusive only.
pub(crate) struct Unmap<'c, F> {
    pub(crate) cache: &'c mut MemCache,
    pub(crate) format: PhantomData<F>,
}

impl<F: Format> Unmap<'_, F> {
    /// Whether no leaf needs cache maintenance as it leaves (so a covered
    /// table may go whole, and a run may invalidate the TLB once for many
    /// entries: the clean must follow each leaf's invalidation).
    fn no_cmo(flags: WalkFlags) -> bool {
        !F::HAS_CMO || flags.contains(WalkFlags::SKIP_CMO)
    }
}

/// Entries an unmap run clears before one TLB invalidation and the freeing
/// of the tables it unlinked (their addresses wait in a buffer this long).
const UNMAP_CHUNK: usize = 64;

impl<M: MmOps, F: Format> Visitor<M> for Unmap<'_, F> {
    const POLICY: &'static Policy = &policy::UNMAP;
    const RUNS: bool = true;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, kind: VisitKind) -> Result<(), Outcome> {
        let old = ctx.old;
        match kind {
            VisitKind::Leaf if !old.is_valid() => Err(Outcome::Unmapped),
            VisitKind::Leaf if !ctx.covers_entry() => split_block(ctx, self.cache),
            VisitKind::Leaf => {
                ctx.try_set(Pte::INVALID)?;
                if !ctx.flags.contains(WalkFlags::SKIP_BBM_TLBI) {
                    ctx.mm.tlb_flush_addr(ctx.addr, ctx.level);
                }
                clean_leaf::<M, F>(ctx, old);
                Ok(())
            }
            // A table the range covers whole, when no leaf below needs cache
            // maintenance: unlink it at once, one range invalidation for
            // all its leaves, then free it.
            VisitKind::TablePre if ctx.covers_entry() && Self::no_cmo(ctx.flags) => {
                let below = ctx
                    .level
                    .next()
                    .expect("a table is never at the last level");
                ctx.try_set(Pte::INVALID)?;
                if !ctx.flags.contains(WalkFlags::SKIP_BBM_TLBI) {
                    ctx.mm
                        .tlb_flush_range(ctx.level.align_down(ctx.addr), ctx.size());
                }
                ctx.retire_subtree(old.output_address(), below);
                Ok(())
            }
            VisitKind::TablePost => {
                // SAFETY: `old` is the table entry the walker just descended
                // through; with exclusive access it still links that page.
                let child = unsafe { Table::new(ctx.mm, old.output_address(), ENTRIES_PER_TABLE) };
                if child.is_empty() {
                    ctx.try_set(Pte::INVALID)?;
                    // Walk caches may hold the table entry.
                    ctx.mm
                        .tlb_flush_addr(ctx.level.align_down(ctx.addr), ctx.level);
                    ctx.retire_empty_table(old.output_address());
                }
                Ok(())
            }
            VisitKind::TablePre => Ok(()),
        }
    }

    /// Valid leaves, and (when the walk visits tables pre-order) tables,
    /// cleared as `visit` clears them when the range covers them, which it
    /// does for every entry of a run. The TLB is invalidated once per chunk
    /// of entries, over the chunk's range, after the chunk is cleared and
    /// before the tables it unlinked are freed; never when a leaf needs
    /// cache maintenance (`visit` cleans each leaf after its invalidation).
    /// An empty entry reports `unmapped`, as `visit` does.
    fn visit_run(&mut self, run: &RunCtx<'_, M>) -> RunEnd {
        if !Self::no_cmo(run.flags) {
            return RunEnd::DECLINED;
        }
        let (level, size) = (run.level, run.level.entry_size());
        let tables_too = run.flags.contains(WalkFlags::TABLE_PRE);
        // `for` loops over the run and its chunks: bounded by the run's
        // length whatever happens inside.
        for done in (0..run.len()).step_by(UNMAP_CHUNK) {
            let chunk = (run.len() - done).min(UNMAP_CHUNK);
            let mut tables = [0u64; UNMAP_CHUNK];
            let mut unlinked = 0;
            let mut stop = None;
            let mut n = 0;
            for _ in 0..chunk {
                let old = run.read(done + n);
                if !old.is_valid() {
                    // Empty: `unmapped`. Locked: never in an exclusive walk;
                    // `visit` says what it is.
                    stop = Some((!old.is_locked()).then_some(Outcome::Unmapped));
                    break;
                }
                let table = old.is_table(level);
                if table && !tables_too {
                    stop = Some(None);
                    break;
                }
                if let Err(outcome) = run.at(done + n, old).try_set(Pte::INVALID) {
                    stop = Some(Some(outcome));
                    break;
                }
                if table {
                    tables[unlinked] = old.output_address();
                    unlinked += 1;
                }
                n += 1;
            }
            if n > 0 && !run.flags.contains(WalkFlags::SKIP_BBM_TLBI) {
                run.mm
                    .tlb_flush_range(run.addr + done as u64 * size, n as u64 * size);
            }
            if unlinked > 0 {
                let below = level.next().expect("a table is never at the last level");
                run.at(done, Pte::INVALID)
                    .retire_subtrees(&tables[..unlinked], below);
            }
            if let Some(outcome) = stop {
                return RunEnd {
                    done: done + n,
                    outcome,
                };
            }
        }
        RunEnd {
            done: run.len(),
            outcome: None,
        }
    }
}

/// Sets and clears leaf attribute bits: relax permissions, write-protect,
/// set the access flag. Never needs break-before-make (same output address).
pub(crate) struct Attr {
    pub(crate) set: u64,
    pub(crate) clear: u64,
    /// Invalidate each changed leaf at once (relaxing: some CPUs cache the
    /// faulting entry); otherwise a reduction is left to a pending flush.
    pub(crate) flush_each: bool,
    /// Range of leaves whose permissions were reduced, for the pending flush.
    pub(crate) reduced: Option<(u64, u64)>,
}

impl<M: MmOps> Visitor<M> for Attr {
    const POLICY: &'static Policy = &policy::ATTR;
    const RUNS: bool = true;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
        let old = ctx.old;
        if old.is_locked() {
            return Err(Outcome::LostRace);
        }
        if !old.is_valid() {
            return Err(Outcome::Unmapped);
        }
        let new = old.with(self.set, self.clear);
        if new == old {
            return Err(Outcome::Unchanged);
        }
        ctx.try_set(new)?;
        let start = ctx.level.align_down(ctx.addr);
        if self.flush_each {
            ctx.mm.tlb_flush_addr(start, ctx.level);
        } else {
            let end = start + ctx.size();
            self.reduce(start, end);
        }
        Ok(())
    }

    /// `visit` on each entry in turn, reporting the same outcomes, with
    /// the pending flush's range grown once for the entries it changed
    /// (they are contiguous). Not when each change is invalidated at once
    /// (`flush_each`: relaxing one page). A table entry (a walk of leaves
    /// descends into it) goes the per-entry way.
    fn visit_run(&mut self, run: &RunCtx<'_, M>) -> RunEnd {
        if self.flush_each {
            return RunEnd::DECLINED;
        }
        let mut end = RunEnd {
            done: run.len(),
            outcome: None,
        };
        for i in 0..run.len() {
            let old = run.read(i);
            if old.is_table(run.level) {
                end.done = i;
                break;
            }
            let outcome = if old.is_locked() {
                Some(Outcome::LostRace)
            } else if !old.is_valid() {
                Some(Outcome::Unmapped)
            } else {
                let new = old.with(self.set, self.clear);
                if new == old {
                    Some(Outcome::Unchanged)
                } else {
                    run.at(i, old).try_set(new).err()
                }
            };
            if outcome.is_some() {
                end = RunEnd { done: i, outcome };
                break;
            }
        }
        if end.done > 0 {
            let size = run.level.entry_size();
            self.reduce(run.addr, run.addr + end.done as u64 * size);
        }
        end
    }
}

impl Attr {
    /// Adds `[start, end)` to the range the pending flush must invalidate.
    fn reduce(&mut self, start: u64, end: u64) {
        self.reduced = Some(match self.reduced {
            Some((lo, hi)) => (lo.min(start), hi.max(end)),
            None => (start, end),
        });
    }
}

/// [`Attr`] under the wrong policy [`policy::ATTR_SKIPPING_LOST_RACES`]:
/// the negative control of the dirty-log tests (entry by entry: no runs).
#[cfg(any(test, feature = "host"))]
pub(crate) struct AttrSkippingLostRaces(pub(crate) Attr);

#[cfg(any(test, feature = "host"))]
impl<M: MmOps> Visitor<M> for AttrSkippingLostRaces {
    const POLICY: &'static Policy = &policy::ATTR_SKIPPING_LOST_RACES;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, kind: VisitKind) -> Result<(), Outcome> {
        <Attr as Visitor<M>>::visit(&mut self.0, ctx, kind)
    }
}

/// Tests (and optionally clears) the access flag of the leaves in a range.
pub(crate) struct Age {
    pub(crate) mkold: bool,
    pub(crate) young: bool,
}

impl<M: MmOps> Visitor<M> for Age {
    const POLICY: &'static Policy = &policy::AGE;
    const RUNS: bool = true;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
        let old = ctx.old;
        if !old.is_valid() {
            return Err(Outcome::Unmapped);
        }
        if old.young() {
            // Recorded before the swap: a lost race still means "used".
            self.young = true;
            if self.mkold {
                ctx.try_set(old.with(0, AF))?;
            }
        }
        Ok(())
    }

    /// `visit` on each entry in turn, with the same outcomes (invalid:
    /// unmapped; a lost compare-and-swap: lost-race). A table entry (a walk
    /// of leaves descends into it) goes the per-entry way.
    fn visit_run(&mut self, run: &RunCtx<'_, M>) -> RunEnd {
        for i in 0..run.len() {
            let old = run.read(i);
            if old.is_table(run.level) {
                return RunEnd {
                    done: i,
                    outcome: None,
                };
            }
            if let Err(outcome) =
                <Self as Visitor<M>>::visit(self, &run.at(i, old), VisitKind::Leaf)
            {
                return RunEnd {
                    done: i,
                    outcome: Some(outcome),
                };
            }
        }
        RunEnd {
            done: run.len(),
            outcome: None,
        }
    }
}

/// Reads the entry that translates one address, and its level.
#[derive(Default)]
pub(crate) struct GetLeaf {
    pub(crate) found: Option<(Pte, Level)>,
}

impl<M: MmOps> Visitor<M> for GetLeaf {
    const POLICY: &'static Policy = &policy::GET_LEAF;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
        self.found = Some((ctx.old, ctx.level));
        Ok(())
    }
}

/// Cleans and invalidates the data cache for the memory leaves map.
pub(crate) struct Flush<F>(pub(crate) PhantomData<F>);

impl<M: MmOps, F: Format> Visitor<M> for Flush<F> {
    const POLICY: &'static Policy = &policy::FLUSH;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
        if !ctx.old.is_valid() {
            return Err(Outcome::Unmapped);
        }
        if F::needs_cmo(ctx.old) {
            ctx.mm
                .dcache_clean_inval_poc(ctx.old.output_address(), ctx.size());
        }
        Ok(())
    }
}

/// Splits every block in the range down to pages, from the cache.
pub(crate) struct Split<'c> {
    pub(crate) cache: &'c mut MemCache,
    pub(crate) split: u64,
}

impl<M: MmOps> Visitor<M> for Split<'_> {
    const POLICY: &'static Policy = &policy::SPLIT;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
        let old = ctx.old;
        if old.is_locked() {
            return Err(Outcome::LostRace);
        }
        if !old.is_valid() {
            return Err(Outcome::Unmapped);
        }
        if ctx.level == Level::LAST {
            return Ok(());
        }
        split_block(ctx, self.cache)?;
        self.split += 1;
        Ok(())
    }
}

/// Adds up the bytes of the walk's range that valid leaves map.
#[derive(Default)]
pub(crate) struct CountMapped {
    pub(crate) bytes: u64,
}

impl<M: MmOps> Visitor<M> for CountMapped {
    const POLICY: &'static Policy = &policy::GET_LEAF;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
        if ctx.old.is_valid() {
            // Only the part inside the range: a block may stick out.
            let leaf_end = ctx.level.align_down(ctx.addr) + ctx.size();
            self.bytes += leaf_end.min(ctx.end) - ctx.addr;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defer::Deferred;
    use crate::host::HostMm;
    use crate::pte::Stage2;
    use crate::stats::Stats;
    use crate::walker::RunCtx;
    use crate::Prot;
    use core::sync::atomic::{AtomicU64, Ordering};
    use std::vec::Vec;

    /// A map's run (`Map::visit_run`) takes empty entries whole exactly
    /// where a leaf fits, as its per-entry visit would: the level can hold
    /// a leaf, the entry is no larger than the map's largest leaf, and the
    /// output is aligned to it. Elsewhere it declines and leaves every
    /// entry alone; it stops at the first entry that is not empty. A
    /// run declined where it fits only costs speed, so no comparison of
    /// results sees it: this test does.
    #[test]
    fn map_runs_are_taken_exactly_where_a_leaf_fits() {
        const PA: u64 = 0x80_0000_0000;
        let mm = HostMm::new();
        let (stats, deferred) = (Stats::default(), Deferred::default());
        let attrs = Stage2::leaf_attrs(Prot::RW);
        let busy = Pte::leaf_at(attrs, 0x1000, Level::LAST);
        // (level, output, largest leaf, a busy entry) -> entries taken
        let cases: [(u8, u64, u64, Option<usize>, usize); 8] = [
            (3, PA, 1 << 12, None, 8),
            (3, PA, 1 << 30, None, 8),
            (3, PA, 1 << 12, Some(3), 3),
            (3, PA, 1 << 12, Some(0), 0),
            (2, PA, 1 << 21, None, 8),
            (2, PA + (1 << 12), 1 << 21, None, 0),
            (2, PA, 1 << 12, None, 0),
            (0, 0, u64::MAX, None, 0),
        ];
        for (n, pa, max_size, busy_at, taken) in cases {
            let level = Level::new(n).unwrap();
            let entries: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
            if let Some(i) = busy_at {
                entries[i].store(busy.bits(), Ordering::Relaxed);
            }
            let run = RunCtx::for_test(&mm, &entries, 0, level, &stats, &deferred);
            let mut cache = MemCache::new();
            let mut map = Map::<Stage2> {
                ipa: 0,
                pa,
                attrs,
                max_size,
                replace: false,
                cache: &mut cache,
                mapped: crate::Mapped::default(),
                format: PhantomData,
            };
            let case = format!("level {n}, pa {pa:#x}, max {max_size:#x}, busy {busy_at:?}");
            let end = map.visit_run(&run);
            assert_eq!((end.done, end.outcome), (taken, None), "{case}");
            assert_eq!(map.mapped.total(), taken as u64, "{case}");
            for (i, e) in entries.iter().enumerate() {
                let want = if i < taken {
                    Pte::leaf_at(attrs, pa + i as u64 * level.entry_size(), level).bits()
                } else if busy_at == Some(i) {
                    busy.bits()
                } else {
                    0
                };
                assert_eq!(e.load(Ordering::Relaxed), want, "{case}: entry {i}");
            }
        }
    }
}
