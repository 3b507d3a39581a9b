//! Pre-copy live migration of a memory slot: copy it all, re-copy what each get-and-clear of the dirty log returns, then pause the vCPUs, copy the rest and compare.
//!
//! The engine is generic over the stage-2 memory operations, the vCPUs and
//! the copier, so the same code runs in the hypervisor (a CPU that runs no
//! vCPU copies guest RAM while the guest writes it) and in host tests (real
//! threads writing through a software MMU). Its steps:
//!
//! 1. enable the slot's dirty log (split, write-protect; write lock);
//! 2. copy the whole slot;
//! 3. rounds (at most [`Precopy::max_rounds`], fewer if a round takes at
//!    most [`Precopy::stop_at`] pages): optionally age the slot (clear the
//!    access flags, as a host's page reclaim does beside a migration), then
//!    get-and-clear the log (shared walks, read lock, vCPUs running) and
//!    copy the pages it returned;
//! 4. pause the vCPUs, wait out the faults they were serving (a write lock
//!    taken once: each fault marks before it leaves the read lock),
//!    get-and-clear once more and copy those pages: the copy must now equal
//!    the slot byte for byte ([`Report::mismatch`]); disable logging and
//!    resume the vCPUs.

use core::fmt;

use pgtable::{Error, MemCache, MmOps, Stage2, PAGE_SIZE};
use spin::RwLock;

use crate::dirty::{Cleared, DirtyLog, DirtyPages, Enabled, Protect};

/// The VM's stage-2 tree behind its reader-writer lock: vCPU faults and
/// get-and-clear take it shared, enabling the log takes it alone.
pub trait Stage2Lock<M: MmOps> {
    /// Runs `f` with the tree shared.
    fn with_shared<R>(&self, f: impl FnOnce(&Stage2<M>) -> R) -> R;
    /// Runs `f` with the tree alone.
    fn with_exclusive<R>(&self, f: impl FnOnce(&mut Stage2<M>) -> R) -> R;
}

impl<M: MmOps> Stage2Lock<M> for RwLock<Stage2<M>> {
    fn with_shared<R>(&self, f: impl FnOnce(&Stage2<M>) -> R) -> R {
        f(&self.read())
    }

    fn with_exclusive<R>(&self, f: impl FnOnce(&mut Stage2<M>) -> R) -> R {
        f(&mut self.write())
    }
}

/// The vCPUs of the VM whose memory migrates.
pub trait Vcpus {
    /// Stops every vCPU from running guest code; returns once none does
    /// and none will until [`Vcpus::resume`]. A vCPU may still be serving
    /// a fault in the hypervisor: the engine drains those itself (see
    /// [`migrate`]).
    fn pause(&self);
    /// Lets them run again.
    fn resume(&self);
}

/// Copies the slot to the destination and compares the two.
pub trait Copier {
    /// Copies `len` bytes at byte `offset` of the slot.
    fn copy(&mut self, offset: u64, len: u64);
    /// The first byte offset where the destination differs from the slot.
    fn first_difference(&self) -> Option<u64>;
}

/// Hears about the migration as it goes.
pub trait Observer {
    /// A counter read around each get-and-clear (e.g. instructions
    /// retired); the default counts nothing.
    fn meter(&mut self) -> u64 {
        0
    }
    /// Called as each step ends.
    fn round(&mut self, report: &RoundReport);
    /// Called with `true` right before each get-and-clear and with `false`
    /// right after (e.g. to arm a test knob for its walks only).
    fn clearing(&mut self, active: bool) {
        let _ = active;
    }
    /// Called right before the vCPUs are paused for the final round.
    fn pausing(&mut self) {}
    /// Called with the comparison's result, before the vCPUs resume.
    fn compared(&mut self, mismatch: Option<u64>) {
        let _ = mismatch;
    }
}

/// How the pre-copy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precopy {
    /// Dirty rounds at most before the vCPUs are paused.
    pub max_rounds: u32,
    /// Pause after a round that took at most this many pages.
    pub stop_at: u64,
    /// Clear the slot's access flags before each round.
    pub age: bool,
}

/// Which step a [`RoundReport`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The first copy of the whole slot.
    Full,
    /// Dirty round `n` (from 1), vCPUs running.
    Round(u32),
    /// The last round, vCPUs paused.
    Final,
}

/// One step of the migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundReport {
    /// Which step.
    pub phase: Phase,
    /// Pages copied.
    pub pages: u64,
    /// What the get-and-clear did (zero for [`Phase::Full`]).
    pub cleared: Cleared,
    /// What the meter counted across the get-and-clear alone.
    pub cost: u64,
}

/// How a migration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// What enabling the log did.
    pub enabled: Enabled,
    /// Dirty rounds run with the vCPUs running.
    pub rounds: u32,
    /// Pages copied, the full copy included.
    pub pages_copied: u64,
    /// Lost races retried by the get-and-clear walks, over all rounds.
    pub retried: u64,
    /// The first byte offset where the copy differs from the slot after
    /// the final round: `None` is a successful migration.
    pub mismatch: Option<u64>,
}

/// Why a migration stopped early. The dirty log is disabled and the vCPUs
/// run again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateError {
    /// No table pages to split the slot's blocks into pages.
    NoMemory,
    /// A walk failed (e.g. retries exhausted).
    Walk(Error),
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMemory => f.write_str("no memory for the table pages that split the slot"),
            Self::Walk(e) => write!(f, "stage-2 walk failed: {e}"),
        }
    }
}

impl From<Error> for MigrateError {
    fn from(e: Error) -> Self {
        match e {
            Error::NoMemory => Self::NoMemory,
            e => Self::Walk(e),
        }
    }
}

/// Migrates the slot of `log` from the guest into `copier`, as the module
/// doc describes. `cache` supplies the table pages that split blocks;
/// `observer` hears about every step and meters each get-and-clear.
///
/// # Errors
///
/// A [`MigrateError`] if the log cannot be enabled or a get-and-clear
/// fails; logging is then off and the vCPUs run.
pub fn migrate<M: MmOps>(
    s2: &impl Stage2Lock<M>,
    log: &DirtyLog,
    cfg: &Precopy,
    cache: &mut MemCache,
    vcpus: &impl Vcpus,
    copier: &mut impl Copier,
    observer: &mut impl Observer,
) -> Result<Report, MigrateError> {
    migrate_with(
        s2,
        log,
        cfg,
        cache,
        (vcpus, copier, observer),
        Protect::Retrying,
    )
}

/// [`migrate`] with the write-protect chosen (tests use the wrong one).
pub(crate) fn migrate_with<M: MmOps>(
    s2: &impl Stage2Lock<M>,
    log: &DirtyLog,
    cfg: &Precopy,
    cache: &mut MemCache,
    (vcpus, copier, observer): (&impl Vcpus, &mut impl Copier, &mut impl Observer),
    protect: Protect,
) -> Result<Report, MigrateError> {
    // Pages first, with no lock held; then the split under the write lock.
    let need = log.pages_to_enable();
    s2.with_shared(|tree| cache.topup(tree.mm(), need))?;
    let enabled = s2.with_exclusive(|tree| log.enable(tree, cache));
    let enabled = match enabled {
        Ok(enabled) => enabled,
        Err(e) => {
            log.disable();
            return Err(e.into());
        }
    };
    let mut report = Report {
        enabled,
        rounds: 0,
        pages_copied: 0,
        retried: 0,
        mismatch: None,
    };

    copier.copy(0, log.size());
    report.pages_copied = log.size() / PAGE_SIZE;
    observer.round(&RoundReport {
        phase: Phase::Full,
        pages: report.pages_copied,
        cleared: Cleared::default(),
        cost: 0,
    });

    let mut pages = DirtyPages::for_log(log);
    let mut round = Round {
        log,
        pages: &mut pages,
        protect,
    };
    for n in 1..=cfg.max_rounds {
        let aged = if cfg.age { age(s2, log) } else { Ok(()) };
        let taken = aged.map_err(MigrateError::from).and_then(|()| {
            report.rounds = n;
            round.run(s2, Phase::Round(n), &mut report, copier, observer)
        });
        match taken {
            Ok(taken) if taken <= cfg.stop_at => break,
            Ok(_) => {}
            Err(e) => {
                log.disable();
                return Err(e);
            }
        }
    }

    observer.pausing();
    vcpus.pause();
    // No guest code runs now, but a vCPU may still be serving a write
    // fault: entry made writable, page not marked yet, and the guest
    // (another vCPU) may already have written through it. The final take
    // must see that mark, for there is no round after it. Every fault holds
    // the read lock from reading the log's state until after its mark, so
    // taking the write lock once waits them all out; no new fault can start
    // (no guest code runs).
    s2.with_exclusive(|_| ());
    let last = round.run(s2, Phase::Final, &mut report, copier, observer);
    if last.is_ok() {
        report.mismatch = copier.first_difference();
        observer.compared(report.mismatch);
    }
    log.disable();
    vcpus.resume();
    last.map(|_| report)
}

/// One get-and-clear and the copy of what it took.
struct Round<'a> {
    log: &'a DirtyLog,
    pages: &'a mut DirtyPages,
    protect: Protect,
}

impl Round<'_> {
    /// Runs the round; returns how many pages it took.
    fn run<M: MmOps>(
        &mut self,
        s2: &impl Stage2Lock<M>,
        phase: Phase,
        report: &mut Report,
        copier: &mut impl Copier,
        observer: &mut impl Observer,
    ) -> Result<u64, MigrateError> {
        observer.clearing(true);
        let cost_before = observer.meter();
        let cleared =
            s2.with_shared(|tree| self.log.get_and_clear_with(tree, self.pages, self.protect));
        let cost = observer.meter().wrapping_sub(cost_before);
        observer.clearing(false);
        let cleared = cleared?;
        for offset in self.pages.offsets() {
            copier.copy(offset, PAGE_SIZE);
        }
        report.pages_copied += cleared.pages;
        report.retried += cleared.retried;
        observer.round(&RoundReport {
            phase,
            pages: cleared.pages,
            cleared,
            cost,
        });
        Ok(cleared.pages)
    }
}

/// Clears the slot's access flags, as a host's page reclaim does.
fn age<M: MmOps>(s2: &impl Stage2Lock<M>, log: &DirtyLog) -> Result<(), Error> {
    s2.with_shared(|tree| {
        tree.shared()
            .test_clear_young(log.base(), log.size(), true)?;
        // The flags are hints, so nothing is owed; invalidating makes the
        // next access of each page fault and set its flag again.
        tree.mm().tlb_flush_all();
        Ok(())
    })
}

#[cfg(test)]
mod tests;
