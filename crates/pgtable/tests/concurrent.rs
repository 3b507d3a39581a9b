//! Shared and fault-mode walkers on real threads, hammering the same pages.
//!
//! Every thread maps IPA -> IPA + `OFF`, so whatever the interleaving the
//! final translation is known. Checks:
//! - the final tree is consistent (every valid page translates as expected,
//!   every page some map reported done is mapped), its table pages are the
//!   counted ones and the page count adds up;
//! - the accounting is exact: the `Refault` errors the threads got, per
//!   outcome, are the tree's `exit` counts; the retries the walker made
//!   (calls of `MmOps::relax`) are `retries() - retries_exhausted`;
//! - races happened (the rounds repeat, within a bound, until they have);
//! - freed table pages are quarantined and poisoned: no walker reads (a
//!   `get_leaf` answer equal to the poison) or writes (poison overwritten)
//!   a page after it was freed; a second variant really frees pages, so
//!   addresses get reused under the walkers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pgtable::host::HostMm;
use pgtable::{pages_needed, Action, Error, MemCache, Outcome, Prot, Stage2, StatsSnapshot};

const OFF: u64 = 0x40_0000_0000;

fn pa(ipa: u64) -> u64 {
    ipa + OFF
}

fn threads() -> usize {
    if cfg!(miri) {
        3
    } else {
        6
    }
}

fn iters() -> usize {
    if cfg!(miri) {
        12
    } else {
        300
    }
}

/// Yields a thread's swaps held open by `hold_swap_window` may wait in a
/// round for another thread to change their entry: enough for lost races on
/// a loaded machine, where the threads seldom run at the same time, few
/// enough to keep rounds short.
const WINDOW_POLLS: u32 = 32;

/// Results one thread got.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    ok: u64,
    refault: [u64; 5],
    exhausted: u64,
    no_memory: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.ok += o.ok;
        for i in 0..5 {
            self.refault[i] += o.refault[i];
        }
        self.exhausted += o.exhausted;
        self.no_memory += o.no_memory;
    }

    /// Counts a result; true if it succeeded.
    fn record<T: std::fmt::Debug>(&mut self, what: &str, r: Result<T, Error>) -> bool {
        match r {
            Ok(_) => {
                self.ok += 1;
                true
            }
            Err(Error::Refault { outcome, .. }) => {
                self.refault[idx(outcome)] += 1;
                false
            }
            Err(Error::RetriesExhausted { .. }) => {
                self.exhausted += 1;
                false
            }
            Err(Error::NoMemory) => {
                self.no_memory += 1;
                false
            }
            Err(e) => panic!("{what}: unexpected {e:?}"),
        }
    }
}

fn idx(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|x| *x == o).unwrap()
}

/// A `get_leaf` answer seen while others run: if it maps, it maps right,
/// and it never comes from a freed page.
fn check_live_leaf(s2: &Stage2<TestMm>, ipa: u64) {
    let lf = s2.shared().get_leaf(ipa).unwrap();
    assert_ne!(lf.pte.bits(), POISON, "{ipa:#x}: read a freed table page");
    if let Some(got) = lf.translate(ipa) {
        assert_eq!(got, pa(ipa), "{ipa:#x} translates wrong: {:?}", lf.pte);
    }
}

/// The exact relations between what the threads saw and the counters.
fn check_accounting(stats: &StatsSnapshot, mm: &TestMm, total: &Tally) {
    for o in [Outcome::LostRace, Outcome::Unmapped, Outcome::Unchanged] {
        assert_eq!(
            total.refault[idx(o)],
            stats.count(o, Action::Exit),
            "Refault({}) returned vs counted exits",
            o.name()
        );
    }
    assert_eq!(
        total.no_memory,
        stats.count(Outcome::NoMemory, Action::Exit)
    );
    assert_eq!(
        total.no_memory, 0,
        "caches were topped up with pages_needed"
    );
    assert_eq!(stats.count(Outcome::Conflict, Action::Exit), 0);
    let refaults: u64 = total.refault.iter().sum();
    assert_eq!(
        stats.exits(),
        refaults + total.no_memory,
        "every exit reached a caller as an error"
    );
    assert_eq!(total.exhausted, stats.retries_exhausted);
    // `retries()` counts every outcome whose action was retry, the last one
    // of an exhausted entry included (walker::tests::retries_are_bounded);
    // the walker calls `relax` once per retry it actually makes.
    assert_eq!(
        mm.relaxes(),
        stats.retries() - stats.retries_exhausted,
        "retries made vs counted"
    );
    // A lost race is retried (shared), exits (fault) or is skipped (age).
    assert_eq!(
        stats.lost_races(),
        stats.count(Outcome::LostRace, Action::Retry)
            + stats.count(Outcome::LostRace, Action::Exit)
            + stats.count(Outcome::LostRace, Action::Next)
    );
}

/// Walks the whole tree once nobody else runs: consistency, table count,
/// page count. Returns the valid pages of `[lo, hi)`.
fn check_quiescent(s2: &Stage2<TestMm>, mm: &TestMm, lo: u64, hi: u64, must: &[(u64, u64)]) {
    let mut valid_bytes = 0;
    let shape = shape(s2, (lo, hi), |start, lf| {
        assert_ne!(lf.pte.bits(), POISON, "{start:#x}: a freed page is linked");
        assert!(!lf.pte.is_locked(), "{start:#x}: left locked");
        if let Some(got) = lf.translate(start) {
            assert_eq!(got, pa(start), "{start:#x}: {:?}", lf.pte);
            valid_bytes += lf.level.entry_size();
        }
    });
    assert!(shape.outside.is_empty(), "{:x?}", shape.outside);
    for &(a, size) in must {
        for p in (a..a + size).step_by(K4 as usize) {
            let lf = s2.shared().get_leaf(p).unwrap();
            assert_eq!(
                lf.translate(p),
                Some(pa(p)),
                "{p:#x}: mapped by a map that returned Ok"
            );
        }
    }
    let stats = s2.stats();
    assert_eq!(
        shape.tables.len() as i64,
        stats.table_pages,
        "table pages in the tree vs counted"
    );
    assert_eq!(
        mm.live_pages() as i64,
        s2.geometry().root_pages() as i64 + stats.table_pages,
        "live pages = root + tables (caches drained, deferred frees done)"
    );
    let _ = valid_bytes;
}

fn topup(cache: &mut MemCache, mm: &TestMm, s2: &Stage2<TestMm>, ipa: u64, size: u64) {
    cache
        .topup(mm, pages_needed(s2.geometry().start_level, ipa, size))
        .unwrap();
}

/// Fault walkers (map a page, map a block, relax, set the access flag) and
/// shared walkers (write-protect, age, split, map pages) on four 2 MiB
/// blocks, eight hot pages in each.
#[test]
fn fault_and_shared_walkers_on_the_same_pages() {
    let mm = TestMm::new(HostMm::quiet(), true);
    let s2 = Stage2::new(mm.clone(), 40).unwrap();
    let base = G1;
    let region = 4 * M2;
    let hot = |r: &mut Rng| base + r.below(4) * M2 + r.below(8) * K4;
    let must: Mutex<Vec<(u64, u64)>> = Mutex::default();
    let mut total = Tally::default();
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let n = threads();
        let barrier = Barrier::new(n);
        let tallies: Vec<Tally> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..n)
                .map(|t| {
                    let (s2, mm, barrier, must) = (&s2, &mm, &barrier, &must);
                    sc.spawn(move || {
                        let mut rng = Rng::new((rounds * 100 + t) as u64);
                        let mut cache = MemCache::new();
                        let mut tally = Tally::default();
                        let mut done = Vec::new();
                        // One swap a round may wait for another thread to
                        // change its entry (lost races on a loaded machine).
                        hold_swap_window(WINDOW_POLLS, 1);
                        barrier.wait();
                        for _ in 0..iters() {
                            let r = rng.below(100);
                            if t % 2 == 0 {
                                // A vCPU's faults.
                                if r < 40 {
                                    let ipa = hot(&mut rng);
                                    topup(&mut cache, mm, s2, ipa, K4);
                                    let prot = if rng.below(2) == 0 { Prot::R } else { Prot::RW };
                                    let res = s2.fault().map(ipa, K4, pa(ipa), prot, &mut cache);
                                    if tally.record("fault map", res) {
                                        done.push((ipa, K4));
                                    }
                                } else if r < 55 {
                                    let ipa = base + rng.below(4) * M2;
                                    topup(&mut cache, mm, s2, ipa, M2);
                                    let res =
                                        s2.fault().map(ipa, M2, pa(ipa), Prot::RW, &mut cache);
                                    if tally.record("fault map block", res) {
                                        done.push((ipa, M2));
                                    }
                                } else if r < 80 {
                                    let res = s2.fault().relax_perms(hot(&mut rng), Prot::W);
                                    tally.record("relax", res);
                                } else {
                                    let res = s2.fault().mkyoung(hot(&mut rng));
                                    tally.record("mkyoung", res);
                                }
                            } else if r < 25 {
                                let res = s2.shared().wrprotect(base, region);
                                if let Ok(f) = &res {
                                    let _ = f.is_needed();
                                }
                                match res {
                                    Ok(f) => {
                                        tally.ok += 1;
                                        s2.complete(f);
                                    }
                                    Err(e) => {
                                        tally.record::<()>("wrprotect", Err(e));
                                    }
                                }
                            } else if r < 45 {
                                let res = s2.shared().test_clear_young(base, region, true);
                                tally.record("age", res);
                            } else if r < 65 {
                                let ipa = base + rng.below(4) * M2;
                                topup(&mut cache, mm, s2, ipa, M2);
                                let res = s2.shared().split(ipa, M2, &mut cache);
                                tally.record("split", res);
                            } else if r < 85 {
                                let ipa = hot(&mut rng);
                                topup(&mut cache, mm, s2, ipa, 2 * K4);
                                let res = s2.shared().map_pages(
                                    ipa,
                                    2 * K4,
                                    pa(ipa),
                                    Prot::R,
                                    &mut cache,
                                );
                                if tally.record("map_pages", res) {
                                    done.push((ipa, 2 * K4));
                                }
                            }
                            check_live_leaf(s2, hot(&mut rng));
                        }
                        cache.drain(mm);
                        must.lock().unwrap().extend(done);
                        tally
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for t in &tallies {
            total.add(t);
        }
        check_quiescent(&s2, &mm, base, base + region, &must.lock().unwrap());
        let st = s2.stats();
        let raced = st.count(Outcome::LostRace, Action::Exit) > 0
            && st.count(Outcome::LostRace, Action::Retry) > 0
            && st.deferred_subtrees > 0;
        if cfg!(miri) || raced || rounds >= 400 || start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let stats = s2.stats();
    eprintln!(
        "fault+shared: {rounds} rounds, {} ok; refaults lost-race {} unmapped {} unchanged {}; \
         lost races {} (retried {}, exits {}, skipped {}); retries {} ({} relax calls), \
         exhausted {}; deferred subtrees {}; tables {}",
        total.ok,
        total.refault[idx(Outcome::LostRace)],
        total.refault[idx(Outcome::Unmapped)],
        total.refault[idx(Outcome::Unchanged)],
        stats.lost_races(),
        stats.count(Outcome::LostRace, Action::Retry),
        stats.count(Outcome::LostRace, Action::Exit),
        stats.count(Outcome::LostRace, Action::Next),
        stats.retries(),
        mm.relaxes(),
        stats.retries_exhausted,
        stats.deferred_subtrees,
        stats.table_pages,
    );
    check_accounting(&stats, &mm, &total);
    if !cfg!(miri) {
        assert!(
            stats.count(Outcome::LostRace, Action::Exit) > 0,
            "no fault walk lost a race in {rounds} rounds"
        );
        assert!(
            stats.count(Outcome::LostRace, Action::Retry) > 0,
            "no shared walk retried in {rounds} rounds"
        );
        assert!(
            stats.deferred_subtrees > 0,
            "no table collapsed under shared walkers"
        );
    }
    s2.destroy();
    assert_eq!(
        mm.release_quarantine(),
        Vec::<u64>::new(),
        "freed pages written to"
    );
    assert_eq!(mm.host().live_pages(), 0, "leak");
}

/// Fault walks collapse page tables into 2 MiB blocks while shared walks
/// split them again and others walk through them. Everything is mapped
/// before and stays mapped.
fn collapse_under_walkers(quarantine: bool) {
    let mm = TestMm::new(HostMm::quiet(), quarantine);
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    let base = 2 * G1;
    let region = 4 * M2;
    let mut cache = MemCache::new();
    topup(&mut cache, &mm, &s2, base, region);
    s2.exclusive()
        .map_pages(base, region, pa(base), Prot::RW, &mut cache)
        .unwrap();
    cache.drain(&mm);
    let mut total = Tally::default();
    let start = Instant::now();
    let mut rounds = 0;
    let stop = AtomicBool::new(false);
    let poison_reads = AtomicU64::new(0);
    loop {
        rounds += 1;
        let n = threads();
        let barrier = Barrier::new(n);
        stop.store(false, Ordering::Relaxed);
        let tallies: Vec<Tally> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..n)
                .map(|t| {
                    let (s2, mm, barrier, stop, poison_reads) =
                        (&s2, &mm, &barrier, &stop, &poison_reads);
                    sc.spawn(move || {
                        let mut rng = Rng::new((rounds * 1000 + t) as u64 + 7);
                        let mut cache = MemCache::new();
                        let mut tally = Tally::default();
                        // One swap a round may wait for another thread to
                        // change its entry (lost races on a loaded machine).
                        hold_swap_window(WINDOW_POLLS, 1);
                        barrier.wait();
                        for _ in 0..iters() {
                            let block = base + rng.below(4) * M2;
                            match t % 3 {
                                0 => {
                                    // Collapse: a block where pages are.
                                    topup(&mut cache, mm, s2, block, M2);
                                    let res =
                                        s2.fault().map(block, M2, pa(block), Prot::RW, &mut cache);
                                    tally.record("collapse", res);
                                }
                                1 => {
                                    // Split it again, by mapping pages or splitting.
                                    let ipa = block + rng.below(512) * K4;
                                    topup(&mut cache, mm, s2, ipa, K4);
                                    let res = if rng.below(2) == 0 {
                                        s2.shared()
                                            .map_pages(ipa, K4, pa(ipa), Prot::RW, &mut cache)
                                            .map(|_| ())
                                    } else {
                                        s2.shared().split(block, M2, &mut cache).map(|_| ())
                                    };
                                    tally.record("split", res);
                                }
                                _ => {
                                    // Walk through: read, relax, age, write-protect.
                                    let ipa = block + rng.below(512) * K4;
                                    let lf = s2.shared().get_leaf(ipa).unwrap();
                                    if lf.pte.bits() == POISON {
                                        poison_reads.fetch_add(1, Ordering::Relaxed);
                                    }
                                    assert_eq!(
                                        lf.translate(ipa).unwrap_or(pa(ipa)),
                                        pa(ipa),
                                        "{ipa:#x}: {:?}",
                                        lf.pte
                                    );
                                    match rng.below(4) {
                                        0 => {
                                            tally.record(
                                                "relax",
                                                s2.fault().relax_perms(ipa, Prot::X),
                                            );
                                        }
                                        1 => {
                                            tally.record(
                                                "age",
                                                s2.shared().test_clear_young(block, M2, true),
                                            );
                                        }
                                        2 => match s2.shared().wrprotect(block, M2) {
                                            Ok(f) => {
                                                tally.ok += 1;
                                                s2.complete(f);
                                            }
                                            Err(e) => {
                                                tally.record::<()>("wrprotect", Err(e));
                                            }
                                        },
                                        _ => {
                                            tally.record("mkyoung", s2.fault().mkyoung(ipa));
                                        }
                                    }
                                }
                            }
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                        cache.drain(mm);
                        tally
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for t in &tallies {
            total.add(t);
        }
        // Everything was mapped before and nothing unmaps.
        check_quiescent(&s2, &mm, base, base + region, &[(base, region)]);
        let st = s2.stats();
        if cfg!(miri)
            || (st.deferred_subtrees > 0 && st.lost_races() > 0)
            || rounds >= 60
            || start.elapsed() > Duration::from_secs(5)
        {
            break;
        }
    }
    let stats = s2.stats();
    eprintln!(
        "collapse (quarantine {quarantine}): {rounds} rounds, {} ok; refaults lost-race {} \
         unmapped {} unchanged {}; lost races {}; retries {}; exhausted {}; deferred subtrees {}",
        total.ok,
        total.refault[idx(Outcome::LostRace)],
        total.refault[idx(Outcome::Unmapped)],
        total.refault[idx(Outcome::Unchanged)],
        stats.lost_races(),
        stats.retries(),
        stats.retries_exhausted,
        stats.deferred_subtrees,
    );
    assert_eq!(
        poison_reads.load(Ordering::Relaxed),
        0,
        "a walker read a freed table page"
    );
    check_accounting(&stats, &mm, &total);
    if !cfg!(miri) {
        assert!(
            stats.deferred_subtrees > 0,
            "no collapse under shared walkers"
        );
        assert!(stats.lost_races() > 0, "no race in {rounds} rounds");
    }
    s2.destroy();
    assert_eq!(
        mm.release_quarantine(),
        Vec::<u64>::new(),
        "freed pages written to"
    );
    assert_eq!(mm.host().live_pages(), 0, "leak");
}

#[test]
fn collapses_under_walkers_defer_frees_quarantined() {
    collapse_under_walkers(true);
}

#[test]
fn collapses_under_walkers_defer_frees_reused() {
    collapse_under_walkers(false);
}

/// The case the policy exists for: a shared write-protect that loses its
/// compare-and-swap to a fault walk setting the access flag must retry, not
/// skip. Nobody but the test grants W, so once `wrprotect` returns, every
/// page of the range must be read-only although faults keep setting (and
/// agers keep clearing) access flags.
#[test]
fn wrprotect_is_never_lost_to_access_flag_updates() {
    let mm = TestMm::new(HostMm::quiet(), true);
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    let base = 3 * G1;
    let pages = 64u64;
    let mut cache = MemCache::new();
    topup(&mut cache, &mm, &s2, base, pages * K4);
    s2.exclusive()
        .map_pages(base, pages * K4, pa(base), Prot::RW, &mut cache)
        .unwrap();
    cache.drain(&mm);
    let rounds = if cfg!(miri) { 2 } else { 150 };
    let n = threads().max(3);
    let mut total = Tally::default();
    let mut protected_rounds = 0;
    let mut round = 0;
    let start = Instant::now();
    while round < rounds
        || (s2.stats().count(Outcome::LostRace, Action::Retry) == 0
            && round < 2000
            && start.elapsed() < Duration::from_secs(30))
    {
        round += 1;
        // Writable again, from the test alone.
        for p in 0..pages {
            s2.exclusive().relax_perms(base + p * K4, Prot::W).unwrap();
        }
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(n);
        let tallies: Vec<Tally> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..n)
                .map(|t| {
                    let (s2, stop, barrier) = (&s2, &stop, &barrier);
                    sc.spawn(move || {
                        let mut tally = Tally::default();
                        let mut rng = Rng::new((round * 100 + t) as u64);
                        barrier.wait();
                        if t == 0 {
                            // Stops the others even if a check below panics.
                            struct Stop<'a>(&'a AtomicBool);
                            impl Drop for Stop<'_> {
                                fn drop(&mut self) {
                                    self.0.store(true, Ordering::Relaxed);
                                }
                            }
                            let _stop = Stop(stop);
                            // Let the others change the entry between the
                            // write-protect's read and its swap.
                            hold_swap_window(WINDOW_POLLS, 2);
                            let res = s2.shared().wrprotect(base, pages * K4);
                            hold_swap_window(0, 0);
                            let ok = match res {
                                Ok(f) => {
                                    tally.ok += 1;
                                    s2.complete(f);
                                    true
                                }
                                Err(e) => {
                                    tally.record::<()>("wrprotect", Err(e));
                                    false
                                }
                            };
                            if ok {
                                // Checked while the others still run: nobody adds W.
                                for p in 0..pages {
                                    let ipa = base + p * K4;
                                    let lf = s2.shared().get_leaf(ipa).unwrap();
                                    assert_eq!(
                                        lf.prot(),
                                        Some(Prot::R),
                                        "{ipa:#x} still writable after wrprotect returned (round {round})"
                                    );
                                }
                            }
                        } else {
                            while !stop.load(Ordering::Relaxed) {
                                let ipa = base + rng.below(pages) * K4;
                                if t % 2 == 1 {
                                    tally.record("mkyoung", s2.fault().mkyoung(ipa));
                                } else {
                                    tally.record("age", s2.shared().test_clear_young(ipa, K4, true));
                                }
                            }
                        }
                        tally
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for t in &tallies {
            total.add(t);
        }
        if tallies[0].ok == 1 {
            protected_rounds += 1;
        }
    }
    let stats = s2.stats();
    eprintln!(
        "wrprotect vs access flag: {round} rounds ({protected_rounds} completed); wrprotect retries {}; \
         fault lost races {}; exhausted {}",
        stats.count(Outcome::LostRace, Action::Retry),
        stats.count(Outcome::LostRace, Action::Exit),
        stats.retries_exhausted,
    );
    check_accounting(&stats, &mm, &total);
    if !cfg!(miri) {
        assert!(protected_rounds > 0);
        assert!(
            stats.count(Outcome::LostRace, Action::Retry) > 0,
            "the write-protect never lost a race"
        );
    }
    s2.destroy();
    assert_eq!(mm.release_quarantine(), Vec::<u64>::new());
    assert_eq!(mm.host().live_pages(), 0);
}
