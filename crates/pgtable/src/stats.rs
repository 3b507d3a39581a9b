//! Counters of what walks did: outcomes by action, retries, table pages in use.

use core::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::policy::{Action, Outcome};

/// Live counters of one tree, updated with relaxed atomics (only on
/// outcomes and table allocation, never per successful visit).
#[derive(Debug, Default)]
pub struct Stats {
    outcomes: [[AtomicU64; 3]; 5],
    exhausted: AtomicU64,
    tables: AtomicI64,
    deferred: AtomicU64,
}

impl Stats {
    pub(crate) fn outcome(&self, outcome: Outcome, action: Action) {
        self.outcomes[outcome as usize][action as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn exhausted(&self) {
        self.exhausted.fetch_add(1, Relaxed);
    }

    pub(crate) fn table_added(&self) {
        self.tables.fetch_add(1, Relaxed);
    }

    pub(crate) fn tables_freed(&self, n: i64) {
        self.tables.fetch_sub(n, Relaxed);
    }

    pub(crate) fn subtree_deferred(&self) {
        self.deferred.fetch_add(1, Relaxed);
    }

    /// A copy of the counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut outcomes = [[0; 3]; 5];
        for (o, row) in outcomes.iter_mut().enumerate() {
            for (a, cell) in row.iter_mut().enumerate() {
                *cell = self.outcomes[o][a].load(Relaxed);
            }
        }
        StatsSnapshot {
            outcomes,
            retries_exhausted: self.exhausted.load(Relaxed),
            table_pages: self.tables.load(Relaxed),
            deferred_subtrees: self.deferred.load(Relaxed),
        }
    }
}

/// The counters of a tree at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    outcomes: [[u64; 3]; 5],
    /// Walks that ended because one entry used up its retries.
    pub retries_exhausted: u64,
    /// Table pages below the root in the tree now (the root is not counted).
    pub table_pages: i64,
    /// Subtrees unlinked by shared walks whose freeing was deferred.
    pub deferred_subtrees: u64,
}

impl StatsSnapshot {
    /// How often `outcome` led to `action`.
    #[must_use]
    pub fn count(&self, outcome: Outcome, action: Action) -> u64 {
        self.outcomes[outcome as usize][action as usize]
    }

    /// Retries of any outcome.
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.outcomes
            .iter()
            .map(|r| r[Action::Retry as usize])
            .sum()
    }

    /// Lost races, whatever the policy did with them.
    #[must_use]
    pub fn lost_races(&self) -> u64 {
        self.outcomes[Outcome::LostRace as usize].iter().sum()
    }

    /// Walks that exited on an outcome (fault walks returning to the guest,
    /// or errors).
    #[must_use]
    pub fn exits(&self) -> u64 {
        self.outcomes.iter().map(|r| r[Action::Exit as usize]).sum()
    }
}
