//! Dirty-page logging of one memory slot: the bitmap write faults mark, enabling, and get-and-clear by shared write-protect walks.
//!
//! The protocol is KVM's, and `crates/pgtable/POLICY.md` explains why the
//! walker's policy makes it safe to run beside faulting vCPUs:
//!
//! - **Enable** ([`DirtyLog::enable`], stage-2 tree held exclusively, i.e.
//!   under the VM's write lock): set the flag, split every block of the
//!   slot into pages (table pages from a memory cache topped up before the
//!   lock), write-protect the slot, invalidate the TLB. A fault that reads
//!   the flag under the read lock either finished before (and its mapping
//!   is split and protected here) or sees the flag.
//! - **Write fault** on a logged slot (`crate::s2fault`): relax the page to
//!   writable, *then* mark it dirty ([`DirtyLog::mark`]). The other order
//!   loses writes: a get-and-clear between the mark and the relax consumes
//!   the mark and leaves the page writable and unlogged.
//! - **Get-and-clear** ([`DirtyLog::get_and_clear`], under the read lock,
//!   beside faulting vCPUs): take each word of the bitmap (swap with 0),
//!   write-protect the pages it named with a **shared** walk, and
//!   invalidate the TLB before the pages are returned. A write-protect that
//!   loses its compare-and-swap (a vCPU set the access flag of the same
//!   entry) is *retried* by the walker, never skipped: a skipped entry
//!   would stay writable with its dirty bit gone, and its next writes would
//!   reach no log.
//!
//! Why a write is never lost: every write goes through a writable entry,
//! made writable by a relax that is followed by a mark. If the write comes
//! before the mark, a later get-and-clear takes the mark and copies the
//! page after the write. If it comes after the mark, either no
//! get-and-clear took the mark yet (same case), or one did: it then
//! write-protected the page and invalidated the TLB before copying, so the
//! write either completed before the copy or faults and marks again.
//!
//! "No get-and-clear took the mark yet" needs a later get-and-clear: the
//! last one of a migration must come after every mark of a fault that made
//! a page writable. Pausing the vCPUs is not enough (a vCPU can be between
//! its relax and its mark while another writes through the new entry):
//! `crate::migrate` also takes the write lock once after the pause, which
//! waits for every fault in flight, since each fault reads the log state
//! and marks under one read lock.
//!
//! Memory ordering: a mark is a release `fetch_or` after the relax's
//! compare-and-swap; the take is an acquire swap. A take that sees a mark
//! therefore sees the relaxed entry when it reads it to write-protect it.
//! A take that misses a mark leaves the bit set for the next round, which
//! is the "mark after the take" case above.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pgtable::{Action, Error, MemCache, MmOps, Outcome, PendingFlush, Stage2, PAGE_SIZE};

use crate::slots::MemSlot;

/// Pages per bitmap word.
const WORD_PAGES: u64 = 64;

/// The dirty log of one memory slot.
#[derive(Debug)]
pub struct DirtyLog {
    /// First IPA of the slot.
    base: u64,
    /// Pages in the slot.
    pages: u64,
    /// Whether write faults on the slot are logged.
    enabled: AtomicBool,
    /// One bit per page, set by write faults, taken by get-and-clear.
    words: Box<[AtomicU64]>,
}

/// What [`DirtyLog::enable`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enabled {
    /// Blocks split into pages ahead of time.
    pub blocks_split: u64,
    /// Whether any page was writable (and so needed the TLB invalidation).
    pub protected: bool,
}

/// What one [`DirtyLog::get_and_clear`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Dirty pages taken (and write-protected).
    pub pages: u64,
    /// Shared write-protect walks run (one per run of consecutive dirty
    /// pages).
    pub walks: u64,
    /// Lost compare-and-swaps the walker retried during the call. The
    /// count is the tree's, so it includes retries of any other shared
    /// walk that ran at the same time (vCPU faults never retry).
    pub retried: u64,
}

/// The pages one get-and-clear took: a copy of the bitmap words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyPages {
    base: u64,
    words: Vec<u64>,
}

impl DirtyPages {
    /// An empty set, reusable across rounds (see [`DirtyLog::get_and_clear`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for all of `log`'s pages, so that a
    /// get-and-clear into it allocates nothing.
    #[must_use]
    pub fn for_log(log: &DirtyLog) -> Self {
        Self {
            base: log.base,
            words: Vec::with_capacity(log.words.len()),
        }
    }

    /// How many pages.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Byte offsets (from the slot's start) of the pages, in address order.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            // At most a word's bits: the walk of the log ends whatever
            // the iterator does.
            BitIter(word)
                .take(WORD_PAGES as usize)
                .map(move |bit| (i as u64 * WORD_PAGES + bit) * PAGE_SIZE)
        })
    }

    /// IPAs of the pages, in address order.
    pub fn ipas(&self) -> impl Iterator<Item = u64> + '_ {
        self.offsets().map(|offset| self.base + offset)
    }
}

/// The set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.0 == 0 {
            return None;
        }
        let bit = u64::from(self.0.trailing_zeros());
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// The runs of consecutive set bits of a word, lowest first, as
/// `(first bit, length)`.
struct Runs(u64);

impl Iterator for Runs {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.0 == 0 {
            return None;
        }
        let first = self.0.trailing_zeros();
        let len = (self.0 >> first).trailing_ones();
        // Clear the run (a run may reach bit 63).
        self.0 &= !(u64::MAX >> (64 - len) << first);
        Some((u64::from(first), u64::from(len)))
    }
}

/// Which write-protect a get-and-clear runs: the walker's, or (tests only)
/// the wrong one that skips lost races.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protect {
    /// `wrprotect` with the `attr` policy: a lost race is retried.
    Retrying,
    /// The negative control: a lost race is skipped.
    #[cfg(test)]
    SkippingLostRaces,
}

impl DirtyLog {
    /// An empty, disabled log for `slot`.
    #[must_use]
    pub fn new(slot: &MemSlot) -> Self {
        let pages = slot.size / PAGE_SIZE;
        let words = pages.div_ceil(WORD_PAGES) as usize;
        Self {
            base: slot.ipa,
            pages,
            enabled: AtomicBool::new(false),
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether write faults on the slot are logged. The fault path reads
    /// it under the stage-2 read lock (see the module doc).
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// First IPA of the slot.
    #[must_use]
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Bytes the log covers.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.pages * PAGE_SIZE
    }

    /// The page index of `ipa`, if inside the slot.
    fn page(&self, ipa: u64) -> Option<u64> {
        let page = ipa.checked_sub(self.base)? / PAGE_SIZE;
        (page < self.pages).then_some(page)
    }

    /// Marks the page holding `ipa` dirty. Call it *after* the stage-2
    /// entry was made writable (see the module doc). An IPA outside the
    /// slot is ignored.
    pub fn mark(&self, ipa: u64) {
        if let Some(page) = self.page(ipa) {
            let (word, bit) = (page / WORD_PAGES, page % WORD_PAGES);
            // Release: a get-and-clear that takes this bit sees the relax
            // that came before it.
            self.words[word as usize].fetch_or(1 << bit, Ordering::Release);
        }
    }

    /// Whether the page holding `ipa` is marked.
    #[must_use]
    pub fn is_dirty(&self, ipa: u64) -> bool {
        self.page(ipa).is_some_and(|page| {
            let (word, bit) = (page / WORD_PAGES, page % WORD_PAGES);
            self.words[word as usize].load(Ordering::Acquire) & (1 << bit) != 0
        })
    }

    /// Pages marked now.
    #[must_use]
    pub fn dirty_pages(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Table pages [`DirtyLog::enable`] may need from its cache: one per
    /// block it may split (every 2 MiB, and every 1 GiB, of the slot).
    #[must_use]
    pub fn pages_to_enable(&self) -> usize {
        let size = self.size();
        let blocks = |block: u64| {
            let first = self.base / block;
            let last = (self.base + size - 1) / block;
            (last - first + 1) as usize
        };
        blocks(2 << 20) + blocks(1 << 30)
    }

    /// Starts logging: clears the log, splits the slot's blocks into pages
    /// (tables from `cache`, see [`DirtyLog::pages_to_enable`]),
    /// write-protects the slot and invalidates the TLB. Needs the tree
    /// alone (the VM's write lock), so that no fault maps a writable block
    /// behind the walks.
    ///
    /// # Errors
    ///
    /// [`Error::NoMemory`] if the cache runs dry (the log stays enabled,
    /// and blocks split so far stay split: enabling again finishes the
    /// job), or a range error if the slot is not in the tree.
    pub fn enable<M: MmOps>(
        &self,
        s2: &mut Stage2<M>,
        cache: &mut MemCache,
    ) -> Result<Enabled, Error> {
        for word in self.words.iter() {
            word.store(0, Ordering::Relaxed);
        }
        self.enabled.store(true, Ordering::Release);
        let ops = s2.exclusive();
        let blocks_split = ops.split(self.base, self.size(), cache)?;
        let flush = ops.wrprotect(self.base, self.size())?;
        let protected = flush.is_needed();
        s2.complete(flush);
        Ok(Enabled {
            blocks_split,
            protected,
        })
    }

    /// Stops logging. Pages stay mapped as they are (4 KiB, most
    /// write-protected); write faults on them map the largest block again
    /// (`crate::s2fault`). Marks already made stay until taken.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Release);
    }

    /// Takes the dirty pages into `out`, write-protects them with shared
    /// walks (beside faulting vCPUs, under the VM's read lock) and
    /// invalidates the TLB, all before returning: once this returns, any
    /// write to a page in `out` that the caller does not see in a copy made
    /// afterwards faults and marks the page again.
    ///
    /// Logging must stay enabled from before the take until after the copy:
    /// with it off, a fault may map a block over the pages being protected
    /// (`crate::s2fault`), and the protection would miss it.
    ///
    /// # Errors
    ///
    /// [`Error::RetriesExhausted`] (or a range error): the pages taken are
    /// marked again, so nothing is lost; `out` is then empty.
    pub fn get_and_clear<M: MmOps>(
        &self,
        s2: &Stage2<M>,
        out: &mut DirtyPages,
    ) -> Result<Cleared, Error> {
        self.get_and_clear_with(s2, out, Protect::Retrying)
    }

    /// [`DirtyLog::get_and_clear`] with the write-protect chosen.
    pub(crate) fn get_and_clear_with<M: MmOps>(
        &self,
        s2: &Stage2<M>,
        out: &mut DirtyPages,
        protect: Protect,
    ) -> Result<Cleared, Error> {
        let retried_before = s2.stats().count(Outcome::LostRace, Action::Retry);
        out.base = self.base;
        out.words.clear();
        let mut flush = PendingFlush::NONE;
        let mut walks = 0;
        let mut failed = None;
        'words: for (i, word) in self.words.iter().enumerate() {
            // Acquire: pairs with the release in `mark`.
            let bits = word.swap(0, Ordering::AcqRel);
            out.words.push(bits);
            // One walk per run of consecutive pages taken: exactly the
            // pages taken are protected (a page in a gap may have just been
            // relaxed by a fault that has yet to mark it; protecting it
            // would cost that vCPU a fault for nothing).
            // At most a run per bit: the loop is bounded whatever the
            // iterator does (a get-and-clear runs at EL2).
            for (first, count) in Runs(bits).take(WORD_PAGES as usize) {
                let ipa = self.base + (i as u64 * WORD_PAGES + first) * PAGE_SIZE;
                let size = count * PAGE_SIZE;
                let ops = s2.shared();
                let result = match protect {
                    Protect::Retrying => ops.wrprotect(ipa, size),
                    #[cfg(test)]
                    Protect::SkippingLostRaces => ops.wrprotect_skipping_lost_races(ipa, size),
                };
                walks += 1;
                match result {
                    Ok(owed) => flush = flush.merge(owed),
                    Err(e) => {
                        failed = Some(e);
                        break 'words;
                    }
                }
            }
        }
        // Whatever was protected takes effect before anyone relies on it.
        s2.complete(flush);
        if let Some(e) = failed {
            // Give every page back: it is copied in a later round.
            for (word, &bits) in self.words.iter().zip(out.words.iter()) {
                word.fetch_or(bits, Ordering::Release);
            }
            out.words.clear();
            return Err(e);
        }
        Ok(Cleared {
            pages: out.count(),
            walks,
            retried: s2.stats().count(Outcome::LostRace, Action::Retry) - retried_before,
        })
    }
}

#[cfg(test)]
mod tests;
