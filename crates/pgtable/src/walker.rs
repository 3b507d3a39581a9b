//! The one page-table walker: visits entries in address order and applies the operation's policy to each outcome.
//!
//! Concurrency rules the walker relies on (each is argued where the code
//! depends on it):
//! - Entries are read and written only as whole 64-bit atomics. Exclusive
//!   walks store; shared walks compare-and-swap from the value they read, so
//!   a concurrent change is seen as the `lost-race` outcome, never
//!   overwritten.
//! - A walker re-reads an entry after visiting it (acquire), so it descends
//!   into a table that it, or a racing walker, just installed; table
//!   contents are published with a release store, so a walker that sees the
//!   table entry sees the table's initialised entries.
//! - An entry is replaced by a different valid one only through
//!   break-before-make: swap in the locked invalid marker, invalidate the
//!   TLB, then store the new entry. No CPU or walker sees both translations.
//! - Table pages a shared walk unlinks are freed only once no shared walker
//!   can be inside them (`crate::defer`).
//! - A *run* (`Visitor::visit_run`) visits several entries of one table in
//!   one call, through the same `VisitCtx` per entry, and hands every
//!   outcome to the policy as a single visit would. The walker offers runs
//!   only where the per-entry path would not descend after the visit: at
//!   the last level (nothing is below), or in an exclusive walk (nobody but
//!   this walk writes, so the re-read after installing a leaf would find
//!   that leaf). A shared walk above the last level visits entry by entry,
//!   so it still descends into a table a racing walker put in.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::defer::Deferred;
use crate::geometry::Level;
use crate::mm::MmOps;
use crate::policy::{Access, Action, Outcome, Policy};
use crate::pte::Pte;
use crate::stats::Stats;
use crate::table::Table;

/// Which visits a walk makes, and which maintenance it skips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WalkFlags(u8);

impl WalkFlags {
    /// Visit leaves (blocks, pages and invalid entries).
    pub const LEAF: WalkFlags = WalkFlags(1);
    /// Visit a table entry before its children.
    pub const TABLE_PRE: WalkFlags = WalkFlags(2);
    /// Visit a table entry after its children.
    pub const TABLE_POST: WalkFlags = WalkFlags(4);
    /// Skip the TLB invalidation of break-before-make (the tree is not live).
    pub const SKIP_BBM_TLBI: WalkFlags = WalkFlags(8);
    /// Skip cache maintenance (the tree is not linked in yet).
    pub const SKIP_CMO: WalkFlags = WalkFlags(16);
    /// Visit every entry on its own, never in runs (tests compare the two).
    pub const NO_RUNS: WalkFlags = WalkFlags(32);

    /// Both sets of flags.
    #[must_use]
    pub const fn union(self, other: WalkFlags) -> WalkFlags {
        WalkFlags(self.0 | other.0)
    }

    /// These flags without `other`'s.
    #[must_use]
    pub const fn without(self, other: WalkFlags) -> WalkFlags {
        WalkFlags(self.0 & !other.0)
    }

    /// Whether every flag of `other` is set.
    #[must_use]
    pub const fn contains(self, other: WalkFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Which visit of an entry this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisitKind {
    /// A leaf or invalid entry.
    Leaf,
    /// A table entry, before its children.
    TablePre,
    /// A table entry, after its children.
    TablePost,
}

/// What a visitor sees of one entry, and the only ways it may change it.
pub(crate) struct VisitCtx<'w, M: MmOps> {
    pub(crate) mm: &'w M,
    entry: &'w AtomicU64,
    /// The entry as read before this visit.
    pub(crate) old: Pte,
    /// The walk's current address, inside this entry's span.
    pub(crate) addr: u64,
    /// The walk's end (exclusive).
    pub(crate) end: u64,
    pub(crate) level: Level,
    pub(crate) access: Access,
    pub(crate) flags: WalkFlags,
    pub(crate) stats: &'w Stats,
    deferred: &'w Deferred,
}

impl<M: MmOps> VisitCtx<'_, M> {
    /// Bytes this entry spans.
    #[inline]
    pub(crate) fn size(&self) -> u64 {
        self.level.entry_size()
    }

    /// Whether the walk's range covers this whole entry.
    #[inline]
    pub(crate) fn covers_entry(&self) -> bool {
        let size = self.size();
        self.addr & (size - 1) == 0 && self.end - self.addr >= size
    }

    /// Replaces `old` by `new`: a store in an exclusive walk, a
    /// compare-and-swap from `old` in a shared one.
    ///
    /// # Errors
    ///
    /// [`Outcome::LostRace`] if a shared walk finds the entry changed.
    #[inline]
    pub(crate) fn try_set(&self, new: Pte) -> Result<(), Outcome> {
        if self.access.is_shared() {
            self.mm.before_compare_and_swap(self.entry, self.old.bits());
            // AcqRel: the swap publishes whatever `new` points to (a table
            // initialised before) and orders our later reads after it.
            self.entry
                .compare_exchange(
                    self.old.bits(),
                    new.bits(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .map(drop)
                .map_err(|_| Outcome::LostRace)
        } else {
            // Exclusive: nobody else writes; release still publishes a
            // table's contents before the entry that links it.
            self.entry.store(new.bits(), Ordering::Release);
            Ok(())
        }
    }

    /// First half of break-before-make: takes the entry by swapping in the
    /// locked marker, then invalidates what the TLB may hold for `old`.
    /// The caller must finish with [`VisitCtx::make`].
    ///
    /// # Errors
    ///
    /// [`Outcome::LostRace`] if another walker holds or changed the entry.
    pub(crate) fn try_break(&self) -> Result<(), Outcome> {
        if self.old.is_locked() {
            debug_assert!(self.access.is_shared(), "a lock seen by an exclusive walk");
            return Err(Outcome::LostRace);
        }
        self.try_set(Pte::LOCKED)?;
        if !self.flags.contains(WalkFlags::SKIP_BBM_TLBI) {
            let start = self.level.align_down(self.addr);
            if self.old.is_table(self.level) {
                // Leaves anywhere below may be cached.
                self.mm.tlb_flush_range(start, self.size());
            } else if self.old.is_valid() {
                self.mm.tlb_flush_addr(start, self.level);
            }
        }
        Ok(())
    }

    /// Second half of break-before-make: publishes `new` over the marker.
    pub(crate) fn make(&self, new: Pte) {
        debug_assert!(Pte::from_bits(self.entry.load(Ordering::Relaxed)).is_locked());
        self.entry.store(new.bits(), Ordering::Release);
    }

    /// Frees subtrees this visit unlinked, each as [`VisitCtx::retire_subtree`]
    /// does (all below entries of this level), moving the counters once.
    pub(crate) fn retire_subtrees(&self, tables: &[u64], level: Level) {
        if self.access.is_shared() {
            for &pa in tables {
                self.retire_subtree(pa, level);
            }
            return;
        }
        let mut freed = 0;
        for &pa in tables {
            // SAFETY: as in `retire_subtree`: each entry that linked one of
            // these subtrees was replaced (and the TLB invalidated) by this
            // exclusive walk, so no other walker can be inside them.
            freed += unsafe { free_subtree_uncounted(self.mm, self.stats, pa, level) };
        }
        self.stats.tables_freed(freed);
    }

    /// Frees a table page this visit unlinked after finding every entry of
    /// it invalid, as [`VisitCtx::retire_subtree`] does. Nothing can be
    /// below an empty table, so it is freed as a last-level table is: its
    /// page alone, without a walk over its entries.
    pub(crate) fn retire_empty_table(&self, table_pa: u64) {
        self.retire_subtree(table_pa, Level::LAST);
    }

    /// Frees a subtree this visit unlinked: now if the walk is exclusive,
    /// once no shared walker can be inside it otherwise.
    pub(crate) fn retire_subtree(&self, table_pa: u64, level: Level) {
        if self.access.is_shared() {
            self.stats.subtree_deferred();
            self.deferred.defer((table_pa, level));
        } else {
            // SAFETY: the entry that linked the subtree was replaced (and
            // the TLB invalidated) by this exclusive walk; with `&mut` of the
            // tree no other walker can be inside it.
            unsafe { free_subtree(self.mm, self.stats, table_pa, level) };
        }
    }
}

/// A run: consecutive entries of one table, all at `level`, each wholly
/// inside the walk's range, offered to [`Visitor::visit_run`] at once.
pub(crate) struct RunCtx<'w, M: MmOps> {
    pub(crate) mm: &'w M,
    /// The run's entries (at least one).
    entries: &'w [AtomicU64],
    /// Input address of the run's first entry (aligned to its size).
    pub(crate) addr: u64,
    end: u64,
    pub(crate) level: Level,
    pub(crate) access: Access,
    pub(crate) flags: WalkFlags,
    stats: &'w Stats,
    deferred: &'w Deferred,
}

#[cfg(test)]
impl<'w, M: MmOps> RunCtx<'w, M> {
    /// A run of `entries` at `level` from `addr`, in an exclusive walk of
    /// leaves whose range ends with the run: for tests of a visitor's
    /// `visit_run` outside this module.
    pub(crate) fn for_test(
        mm: &'w M,
        entries: &'w [AtomicU64],
        addr: u64,
        level: Level,
        stats: &'w Stats,
        deferred: &'w Deferred,
    ) -> Self {
        RunCtx {
            mm,
            entries,
            addr,
            end: addr + entries.len() as u64 * level.entry_size(),
            level,
            access: Access::Exclusive,
            flags: WalkFlags::LEAF,
            stats,
            deferred,
        }
    }
}

impl<'w, M: MmOps> RunCtx<'w, M> {
    /// Entries in the run.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Reads entry `i` of the run (acquire, as the per-entry path does).
    #[inline]
    pub(crate) fn read(&self, i: usize) -> Pte {
        Pte::from_bits(self.entries[i].load(Ordering::Acquire))
    }

    /// The visit context of entry `i`, read as `old`: what a visit of that
    /// entry alone would get. A run changes entries only through it.
    #[inline]
    pub(crate) fn at(&self, i: usize, old: Pte) -> VisitCtx<'w, M> {
        VisitCtx {
            mm: self.mm,
            entry: &self.entries[i],
            old,
            addr: self.addr + i as u64 * self.level.entry_size(),
            end: self.end,
            level: self.level,
            access: self.access,
            flags: self.flags,
            stats: self.stats,
            deferred: self.deferred,
        }
    }
}

/// How far a run got: entries `0..done` were visited and succeeded. If
/// `outcome` is set, entry `done` was visited and reported it (the walker
/// applies the policy to it); otherwise, if `done` is short of the run,
/// entry `done` was not touched and the walker visits it on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunEnd {
    pub(crate) done: usize,
    pub(crate) outcome: Option<Outcome>,
}

impl RunEnd {
    /// The visitor handled nothing: every entry goes the per-entry way.
    pub(crate) const DECLINED: RunEnd = RunEnd {
        done: 0,
        outcome: None,
    };
}

/// An operation's per-entry logic. It reports outcomes; the walker decides.
pub(crate) trait Visitor<M: MmOps> {
    /// The operation's policy.
    const POLICY: &'static Policy;

    /// Whether [`Visitor::visit_run`] may handle anything (otherwise the
    /// walker does not offer runs at all).
    const RUNS: bool = false;

    /// Visits one entry.
    ///
    /// # Errors
    ///
    /// The outcome, when the visit did not simply succeed.
    fn visit(&mut self, ctx: &VisitCtx<'_, M>, kind: VisitKind) -> Result<(), Outcome>;

    /// Visits a run of entries in one call (a fast path, same results).
    ///
    /// Contract: entry by entry from the first, the run does to an entry
    /// exactly what [`Visitor::visit`] would (the same writes through
    /// [`RunCtx::at`], the same outcome; maintenance may be batched, e.g.
    /// one range TLB invalidation after several entries, as long as it is
    /// done before the run returns and before anything it covers is freed).
    /// It stops at the first entry it does not handle that way, or that
    /// reports an outcome, and says so in the [`RunEnd`].
    fn visit_run(&mut self, run: &RunCtx<'_, M>) -> RunEnd {
        let _ = run;
        RunEnd::DECLINED
    }
}

/// Why a walk stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exit {
    pub(crate) outcome: Outcome,
    pub(crate) addr: u64,
    pub(crate) level: Level,
    /// The entry used up its retries (otherwise the policy said exit).
    pub(crate) exhausted: bool,
}

/// One walk over `[addr, end)`.
pub(crate) struct Walk<'w, M: MmOps, V> {
    pub(crate) mm: &'w M,
    pub(crate) visitor: &'w mut V,
    pub(crate) flags: WalkFlags,
    pub(crate) access: Access,
    pub(crate) addr: u64,
    pub(crate) end: u64,
    pub(crate) max_retries: u32,
    pub(crate) stats: &'w Stats,
    pub(crate) deferred: &'w Deferred,
}

/// What to do with an entry after the policy spoke.
enum Step {
    Done,
    Skip,
    Again,
}

impl<'w, M: MmOps, V: Visitor<M>> Walk<'w, M, V> {
    /// Walks `table`, whose entries are at `level`, from the current address.
    pub(crate) fn run(&mut self, table: Table<'w>, level: Level) -> Result<(), Exit> {
        debug_assert!(
            V::POLICY.allows(self.access),
            "{} in {:?}",
            V::POLICY.name(),
            self.access
        );
        let mut idx = ((self.addr >> level.shift()) as usize) & (table.len() - 1);
        // Runs only where the per-entry path would not descend after a
        // visit (the rule at the top of this file), and only in walks that
        // visit leaves (a run's entries are visited as leaves, or as tables
        // pre-order where the walk asks for that too).
        let runs = V::RUNS
            && self.flags.contains(WalkFlags::LEAF)
            && !self.flags.contains(WalkFlags::NO_RUNS)
            && (level == Level::LAST || !self.access.is_shared());
        while idx < table.len() && self.addr < self.end {
            let mut tries = 0;
            if runs && level.align_down(self.addr) == self.addr {
                // Entries wholly inside the range, up to the table's end.
                let whole = ((self.end - self.addr) >> level.shift()) as usize;
                let len = whole.min(table.len() - idx);
                if len > 0 {
                    let end = self
                        .visitor
                        .visit_run(&self.run_ctx(table, idx, len, level));
                    debug_assert!(end.done < len || (end.done == len && end.outcome.is_none()));
                    idx += end.done;
                    self.addr += end.done as u64 * level.entry_size();
                    match end.outcome {
                        None if end.done == len => {
                            // The loop's progress rests on this: a run that
                            // moved nothing would be offered again for ever.
                            // Checked in test builds, so that a broken run
                            // fails a test instead of hanging it.
                            debug_assert!(end.done > 0, "an empty run was offered");
                            continue;
                        }
                        // Entry `idx` was left alone: visit it on its own.
                        None => {}
                        Some(outcome) => match self.decide(Err(outcome), &mut tries, level)? {
                            Step::Skip => {
                                self.skip_entry(level);
                                idx += 1;
                                continue;
                            }
                            // Visit it again on its own, this try counted.
                            Step::Again => {}
                            Step::Done => unreachable!("an outcome is never done"),
                        },
                    }
                }
            }
            self.entry(table.entry(idx), level, tries)?;
            idx += 1;
        }
        Ok(())
    }

    #[inline]
    fn run_ctx(&self, table: Table<'w>, first: usize, len: usize, level: Level) -> RunCtx<'w, M> {
        RunCtx {
            mm: self.mm,
            entries: table.entries(first, len),
            addr: self.addr,
            end: self.end,
            level,
            access: self.access,
            flags: self.flags,
            stats: self.stats,
            deferred: self.deferred,
        }
    }

    #[inline]
    fn ctx(&self, entry: &'w AtomicU64, old: Pte, addr: u64, level: Level) -> VisitCtx<'w, M> {
        VisitCtx {
            mm: self.mm,
            entry,
            old,
            addr,
            end: self.end,
            level,
            access: self.access,
            flags: self.flags,
            stats: self.stats,
            deferred: self.deferred,
        }
    }

    /// Turns a visit's result into a step, counting outcomes and bounding retries.
    #[inline]
    fn decide(
        &self,
        result: Result<(), Outcome>,
        tries: &mut u32,
        level: Level,
    ) -> Result<Step, Exit> {
        let Err(outcome) = result else {
            return Ok(Step::Done);
        };
        let action = V::POLICY.action(outcome, self.access);
        self.stats.outcome(outcome, action);
        let exit = |exhausted| Exit {
            outcome,
            addr: self.addr,
            level,
            exhausted,
        };
        match action {
            Action::Next => Ok(Step::Skip),
            Action::Exit => Err(exit(false)),
            Action::Retry if *tries >= self.max_retries => {
                self.stats.exhausted();
                Err(exit(true))
            }
            Action::Retry => {
                *tries += 1;
                self.mm.relax();
                Ok(Step::Again)
            }
        }
    }

    /// Moves the walk past the entry of `level` that holds the current address.
    #[inline]
    fn skip_entry(&mut self, level: Level) {
        self.addr = level
            .align_down(self.addr)
            .saturating_add(level.entry_size());
    }

    /// Visits one entry: pre or leaf visit, descent, post visit. `tries`:
    /// retries already spent on it (by a run that reported an outcome).
    fn entry(&mut self, entry: &'w AtomicU64, level: Level, tries: u32) -> Result<(), Exit> {
        let addr = self.addr;
        let mut tries = tries;
        // Test builds count the visits too: `decide` allows at most
        // `max_retries` retries, so a broken bound fails a test instead of
        // spinning it for ever on an entry that never settles.
        let mut visits: u32 = 0;
        // Pre-order or leaf visit, retried as the policy says. A retry
        // re-reads the entry: whatever changed it is what we must see.
        let visited = loop {
            visits = visits.saturating_add(1);
            debug_assert!(
                visits <= self.max_retries.saturating_add(1),
                "entry {addr:#x} visited {visits} times: retries past their bound"
            );
            let old = Pte::from_bits(entry.load(Ordering::Acquire));
            let kind = if old.is_table(level) {
                VisitKind::TablePre
            } else {
                VisitKind::Leaf
            };
            let wanted = match kind {
                VisitKind::TablePre => self.flags.contains(WalkFlags::TABLE_PRE),
                _ => self.flags.contains(WalkFlags::LEAF),
            };
            if !wanted {
                break old;
            }
            let ctx = self.ctx(entry, old, addr, level);
            let result = self.visitor.visit(&ctx, kind);
            match self.decide(result, &mut tries, level)? {
                // Re-read: the visit may have installed or replaced a table
                // (ours, or a racing walker's) that we must descend into.
                // (At the last level nothing can be below: no re-read.)
                Step::Done if level == Level::LAST => {
                    self.skip_entry(level);
                    return Ok(());
                }
                Step::Done => break Pte::from_bits(entry.load(Ordering::Acquire)),
                Step::Skip => {
                    self.skip_entry(level);
                    return Ok(());
                }
                Step::Again => continue,
            }
        };

        let Some(child_level) = level.next().filter(|_| visited.is_table(level)) else {
            self.skip_entry(level);
            return Ok(());
        };
        // SAFETY: `visited` is a table entry of this tree read with acquire,
        // so it points to a table page initialised before it was published.
        // The page stays allocated for the walk: exclusive walks are the
        // only ones that free on the spot and no other walk runs beside
        // them; shared walks defer frees until every walker inside has left,
        // and this walker is inside (`Tree::walk` entered for it).
        let child = unsafe {
            Table::new(
                self.mm,
                visited.output_address(),
                crate::geometry::ENTRIES_PER_TABLE,
            )
        };
        self.run(child, child_level)?;

        if self.flags.contains(WalkFlags::TABLE_POST) {
            let mut tries = 0;
            loop {
                let old = Pte::from_bits(entry.load(Ordering::Acquire));
                let ctx = self.ctx(entry, old, addr, level);
                let result = self.visitor.visit(&ctx, VisitKind::TablePost);
                match self.decide(result, &mut tries, level)? {
                    Step::Done | Step::Skip => break,
                    Step::Again => continue,
                }
            }
        }
        Ok(())
    }
}

/// Runs `visitor` over a whole table that no other walker can reach (a
/// subtree unlinked or not yet linked, or a tree being destroyed), as an
/// exclusive walk from `addr` to `end`.
pub(crate) fn run_detached<M: MmOps, V: Visitor<M>>(
    mm: &M,
    stats: &Stats,
    table: Table<'_>,
    level: Level,
    (addr, end): (u64, u64),
    visitor: &mut V,
    flags: WalkFlags,
) -> Result<(), Exit> {
    let deferred = Deferred::default();
    let mut walk = Walk {
        mm,
        visitor,
        flags,
        access: Access::Exclusive,
        addr,
        end,
        max_retries: 0,
        stats,
        deferred: &deferred,
    };
    walk.run(table, level)
}

/// The input-address span of a whole table of `level` entries.
fn whole(table: &Table<'_>, level: Level) -> (u64, u64) {
    (0, level.entry_size() * table.len() as u64)
}

/// Frees the table below each table entry, after its children (post-order),
/// and counts the pages. Only walks over unreachable tables use it
/// ([`free_below`]); it lives here, with the walker, rather than with the
/// operations' visitors in `ops`, which use the walker.
#[derive(Default)]
pub(crate) struct Free {
    pub(crate) freed: i64,
}

impl<M: MmOps> Visitor<M> for Free {
    const POLICY: &'static Policy = &crate::policy::FREE;

    fn visit(&mut self, ctx: &VisitCtx<'_, M>, kind: VisitKind) -> Result<(), Outcome> {
        if kind == VisitKind::TablePost {
            self.freed += 1;
            // SAFETY: a free walk runs only over tables nobody can reach
            // (`free_below`'s contract); the walker has finished with this
            // child table, and it was allocated by `ctx.mm` as one page.
            unsafe { ctx.mm.free_pages(ctx.old.output_address(), 1) };
        }
        Ok(())
    }
}

/// Frees every table below `table` (whose entries are at `level`), with a
/// post-order walk of the [`Free`] visitor; returns how many
/// pages it freed (the caller updates the counters). `table` itself stays.
///
/// # Safety
///
/// The tables below `table` are unlinked from any live tree or belong to a
/// tree being destroyed: no walker can be inside them, no TLB holds walks
/// through them, and they came from `mm`.
#[must_use]
pub(crate) unsafe fn free_below<M: MmOps>(
    mm: &M,
    stats: &Stats,
    table: Table<'_>,
    level: Level,
) -> i64 {
    if level == Level::LAST {
        // Nothing but leaves at the last level: no table below to free.
        return 0;
    }
    let span = whole(&table, level);
    let mut free = Free::default();
    let done = run_detached(
        mm,
        stats,
        table,
        level,
        span,
        &mut free,
        WalkFlags::TABLE_POST,
    );
    // The free visitor has no failing outcome, so the walk cannot exit.
    debug_assert!(done.is_ok());
    free.freed
}

/// Frees the table page at `table_pa` (entries at `level`) and every table
/// below it.
///
/// # Safety
///
/// As [`free_below`], and the page itself came from `mm` as one page.
pub(crate) unsafe fn free_subtree<M: MmOps>(mm: &M, stats: &Stats, table_pa: u64, level: Level) {
    // SAFETY: forwarded from the caller.
    let freed = unsafe { free_subtree_uncounted(mm, stats, table_pa, level) };
    stats.tables_freed(freed);
}

/// [`free_subtree`] without updating the counters: returns the pages freed.
///
/// # Safety
///
/// As [`free_subtree`].
#[must_use]
unsafe fn free_subtree_uncounted<M: MmOps>(
    mm: &M,
    stats: &Stats,
    table_pa: u64,
    level: Level,
) -> i64 {
    // SAFETY: the caller guarantees the page is allocated and ours alone.
    let table = unsafe { Table::new(mm, table_pa, crate::geometry::ENTRIES_PER_TABLE) };
    // SAFETY: forwarded from the caller.
    let below = unsafe { free_below(mm, stats, table, level) };
    // SAFETY: allocated by `mm` as one page, reachable by nobody (caller's
    // contract), everything below freed above.
    unsafe { mm.free_pages(table_pa, 1) };
    below + 1
}

#[cfg(test)]
mod tests {
    //! The walker obeys each operation's policy: for every row of the
    //! table, a scripted visitor reports the outcome and the walk's visits
    //! show whether it went to the next entry, retried or exited.

    use super::*;
    use crate::host::HostMm;
    use crate::policy;
    use std::vec::Vec;

    /// Reports `outcome` on the first `fails` visits of entry 0, succeeds
    /// otherwise; records the address of every visit.
    struct Scripted<const P: usize> {
        outcome: Outcome,
        fails: u32,
        visits: Vec<u64>,
    }

    impl<M: MmOps, const P: usize> Visitor<M> for Scripted<P> {
        const POLICY: &'static Policy = policy::ALL[P];

        fn visit(&mut self, ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
            self.visits.push(ctx.addr);
            if ctx.addr == 0 && self.fails > 0 {
                self.fails -= 1;
                return Err(self.outcome);
            }
            Ok(())
        }
    }

    /// Walks two level-3 entries of a fresh table with the scripted visitor.
    fn run<const P: usize>(
        outcome: Outcome,
        access: Access,
        fails: u32,
        max_retries: u32,
    ) -> (Result<(), Exit>, Vec<u64>, crate::stats::StatsSnapshot) {
        let mm = HostMm::new();
        let pa = mm.zalloc_pages(1).unwrap();
        let stats = Stats::default();
        let deferred = Deferred::default();
        let mut visitor = Scripted::<P> {
            outcome,
            fails,
            visits: Vec::new(),
        };
        // SAFETY: a fresh page of `mm`, used only here and freed below.
        let table = unsafe { Table::new(&mm, pa, crate::geometry::ENTRIES_PER_TABLE) };
        let mut walk = Walk {
            mm: &mm,
            visitor: &mut visitor,
            flags: WalkFlags::LEAF,
            access,
            addr: 0,
            end: 0x2000,
            max_retries,
            stats: &stats,
            deferred: &deferred,
        };
        let result = walk.run(table, Level::LAST);
        // SAFETY: allocated above, no longer referenced.
        unsafe { mm.free_pages(pa, 1) };
        (result, visitor.visits, stats.snapshot())
    }

    fn check<const P: usize>() {
        let p = policy::ALL[P];
        for outcome in Outcome::ALL {
            for access in Access::ALL.into_iter().filter(|a| p.allows(*a)) {
                let (result, visits, stats) = run::<P>(outcome, access, 1, 8);
                let what = format!("{} / {} / {}", p.name(), outcome.name(), access.name());
                let action = p.action(outcome, access);
                match action {
                    Action::Next => {
                        assert_eq!(result, Ok(()), "{what}");
                        assert_eq!(visits, [0, 0x1000], "{what}: skips entry 0 once");
                    }
                    Action::Retry => {
                        assert_eq!(result, Ok(()), "{what}");
                        assert_eq!(visits, [0, 0, 0x1000], "{what}: revisits entry 0");
                    }
                    Action::Exit => {
                        let exit = result.expect_err(&what);
                        assert_eq!(
                            (exit.outcome, exit.addr, exit.exhausted),
                            (outcome, 0, false),
                            "{what}"
                        );
                        assert_eq!(visits, [0], "{what}: stops at entry 0");
                    }
                }
                assert_eq!(stats.count(outcome, action), 1, "{what}: counted");
            }
        }
    }

    #[test]
    fn every_policy_row_is_obeyed() {
        assert_eq!(policy::ALL.len(), 8);
        check::<0>();
        check::<1>();
        check::<2>();
        check::<3>();
        check::<4>();
        check::<5>();
        check::<6>();
        check::<7>();
    }

    #[test]
    fn retries_are_bounded() {
        // attr / lost-race / shared retries; an entry that never settles
        // exhausts its retries instead of spinning forever.
        let (result, visits, stats) = run::<2>(Outcome::LostRace, Access::Shared, u32::MAX, 5);
        let exit = result.unwrap_err();
        assert!(exit.exhausted);
        assert_eq!(exit.outcome, Outcome::LostRace);
        assert_eq!(visits.len(), 6, "the first visit and five retries");
        assert_eq!(stats.retries_exhausted, 1);
        assert_eq!(
            stats.retries(),
            6,
            "every outcome is counted, the last one included"
        );
    }

    /// Records every run it is offered, as `(level, length)`, and declines
    /// it (so the walker visits each entry on its own); `R`: whether it
    /// handles runs at all.
    #[derive(Default)]
    struct RunProbe<const R: bool> {
        runs: Vec<(u8, usize)>,
    }

    impl<M: MmOps, const R: bool> Visitor<M> for RunProbe<R> {
        const POLICY: &'static Policy = &policy::MAP;
        const RUNS: bool = R;

        fn visit(&mut self, _ctx: &VisitCtx<'_, M>, _kind: VisitKind) -> Result<(), Outcome> {
            Ok(())
        }

        fn visit_run(&mut self, run: &RunCtx<'_, M>) -> RunEnd {
            self.runs.push((run.level.get(), run.len()));
            RunEnd::DECLINED
        }
    }

    /// Walks `[0, 2 MiB + 32 KiB)` of a level-2 table whose entry 1 links a
    /// level-3 table (entry 0 whole, then 8 entries of the level-3 table),
    /// with `RunProbe<R>`; returns the runs offered.
    fn runs_offered<const R: bool>(access: Access, flags: WalkFlags) -> Vec<(u8, usize)> {
        let mm = HostMm::new();
        let (l2, l3) = (mm.zalloc_pages(1).unwrap(), mm.zalloc_pages(1).unwrap());
        let stats = Stats::default();
        let deferred = Deferred::default();
        let mut probe = RunProbe::<R>::default();
        // SAFETY: fresh pages of `mm`, used only here and freed below.
        let table = unsafe { Table::new(&mm, l2, crate::geometry::ENTRIES_PER_TABLE) };
        table
            .entry(1)
            .store(Pte::table(l3).bits(), Ordering::Release);
        let level = Level::new(2).unwrap();
        let mut walk = Walk {
            mm: &mm,
            visitor: &mut probe,
            flags,
            access,
            addr: 0,
            end: level.entry_size() + 8 * Level::LAST.entry_size(),
            max_retries: 0,
            stats: &stats,
            deferred: &deferred,
        };
        assert_eq!(walk.run(table, level), Ok(()));
        // SAFETY: allocated above, no longer referenced.
        unsafe {
            mm.free_pages(l3, 1);
            mm.free_pages(l2, 1);
        }
        probe.runs
    }

    /// The rule at the top of this file: runs only where the per-entry path
    /// would not descend after a visit, i.e. at the last level, or at any
    /// level in an exclusive walk; a shared (or fault) walk above the last
    /// level goes entry by entry, so that it descends into a table a racing
    /// walker installed. And never when the walk says `NO_RUNS`, visits no
    /// leaves, or the visitor takes no runs.
    #[test]
    fn runs_are_offered_only_where_the_rule_allows() {
        let leaf = WalkFlags::LEAF;
        for access in Access::ALL {
            let runs = runs_offered::<true>(access, leaf);
            let what = format!("{access:?}: {runs:?}");
            assert!(
                runs.contains(&(3, 8)),
                "{what}: the level-3 entries in one run"
            );
            let above = runs.iter().any(|&(level, _)| level < 3);
            assert_eq!(
                above,
                !access.is_shared(),
                "{what}: runs above the last level"
            );
            for flags in [
                leaf.union(WalkFlags::NO_RUNS),
                WalkFlags::TABLE_PRE.union(WalkFlags::TABLE_POST),
            ] {
                let runs = runs_offered::<true>(access, flags);
                assert_eq!(runs, [], "{access:?}, {flags:?}");
            }
            assert_eq!(runs_offered::<false>(access, leaf), [], "{access:?}");
        }
    }

    #[test]
    fn retries_settle_within_the_bound() {
        let (result, visits, _) = run::<2>(Outcome::LostRace, Access::Shared, 5, 5);
        assert_eq!(result, Ok(()));
        assert_eq!(visits.len(), 7);
    }

    /// A set of flags is a set: a union with flags already present keeps
    /// them (an exclusive or would drop them), `without` removes only
    /// what it names, and `contains` asks for every flag, not any.
    #[test]
    fn walk_flags_are_sets() {
        let a = WalkFlags::LEAF.union(WalkFlags::TABLE_POST);
        let b = a.union(WalkFlags::LEAF);
        assert_eq!(b, a, "LEAF | TABLE_POST | LEAF");
        assert!(b.contains(WalkFlags::LEAF) && b.contains(WalkFlags::TABLE_POST));
        assert!(!b.contains(WalkFlags::TABLE_POST.union(WalkFlags::NO_RUNS)));
        let c = b.without(WalkFlags::TABLE_POST.union(WalkFlags::SKIP_CMO));
        assert_eq!(c, WalkFlags::LEAF);
        assert_eq!(c.without(WalkFlags::LEAF), WalkFlags::default());
    }

    /// `RunCtx::at(i)` is what a visit of entry `i` alone would get: its
    /// entry, its input address (the run's start plus `i` entries), the
    /// walk's end, level, mode and flags.
    #[test]
    fn a_run_entry_has_the_context_of_its_own_visit() {
        let mm = HostMm::new();
        let (stats, deferred) = (Stats::default(), Deferred::default());
        let entries: Vec<AtomicU64> = (0..5).map(|_| AtomicU64::new(0)).collect();
        let level = Level::new(2).unwrap();
        let addr = 0x40_0000_0000 + 3 * level.entry_size();
        let run = RunCtx {
            mm: &mm,
            entries: &entries,
            addr,
            end: addr + 5 * level.entry_size() + 0x1000,
            level,
            access: Access::Shared,
            flags: WalkFlags::LEAF.union(WalkFlags::SKIP_CMO),
            stats: &stats,
            deferred: &deferred,
        };
        for (i, entry) in entries.iter().enumerate() {
            let old = Pte::from_bits(i as u64);
            let ctx = run.at(i, old);
            assert!(core::ptr::eq(ctx.entry, entry), "entry {i}");
            assert_eq!(ctx.addr, addr + i as u64 * level.entry_size(), "entry {i}");
            assert_eq!(ctx.old, old);
            assert_eq!((ctx.end, ctx.level), (run.end, level));
            assert_eq!((ctx.access, ctx.flags), (run.access, run.flags));
        }
    }
}
