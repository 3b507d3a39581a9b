//! Races scripted exactly: a hook in the memory operations runs a second
//! walk (or waits for one on another thread) while the first walker is in
//! the middle of a break-before-make, i.e. holds an entry locked or is
//! inside a table that the second walk unlinks. Freed pages are quarantined
//! and poisoned, so a free that comes too early, or a write into a freed
//! page, is seen.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pgtable::host::{HostMm, MmEvent};
use pgtable::{Action, MemCache, Outcome, Prot, Stage2};

const PA: u64 = 0x80_0000_0000;

fn tree() -> (Stage2<TestMm>, TestMm) {
    let mm = TestMm::new(HostMm::new(), true);
    let s2 = Stage2::new(mm.clone(), 40).unwrap();
    (s2, mm)
}

/// Maps `[ipa, ipa + size)` with pages from a cache of exactly `n` fresh
/// pages; returns those pages (the tables the map created).
fn map_pages_counting(
    s2: &mut Stage2<TestMm>,
    mm: &TestMm,
    ipa: u64,
    size: u64,
    n: usize,
) -> Vec<u64> {
    mm.host().take_events();
    let mut cache = MemCache::new();
    cache.topup(mm, n).unwrap();
    let pages: Vec<u64> = mm
        .host()
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            MmEvent::Alloc { pa, .. } => Some(pa),
            _ => None,
        })
        .collect();
    s2.exclusive()
        .map_pages(ipa, size, PA + ipa, Prot::RW, &mut cache)
        .unwrap();
    assert!(cache.is_empty(), "every page became a table");
    pages
}

fn check_end(s2: Stage2<TestMm>, mm: TestMm) {
    let stats = s2.stats();
    let shape = shape(&s2, (0, 1 << 40), |start, lf| {
        assert_ne!(lf.pte.bits(), POISON, "{start:#x}");
        assert!(!lf.pte.is_locked(), "{start:#x} left locked");
    });
    assert_eq!(
        shape.tables.len() as i64,
        stats.table_pages,
        "tables in the tree vs counted"
    );
    assert_eq!(
        mm.live_pages() as i64,
        2 + stats.table_pages,
        "live pages = root (2) + tables: nothing leaked, nothing waits"
    );
    s2.destroy();
    assert_eq!(
        mm.release_quarantine(),
        Vec::<u64>::new(),
        "a freed page was written to"
    );
    assert_eq!(mm.host().live_pages(), 0);
}

/// W1 (shared map of a page) is replacing a page inside level-3 table T
/// when W2 (fault map of the 2 MiB block) collapses T into a block. T must
/// stay allocated until W1 leaves; W1's write lands in the unlinked T (its
/// mapping is overwritten by W2's block, as if W1 ran first).
#[test]
fn a_walker_inside_a_collapsed_table_keeps_it_alive() {
    let (mut s2, mm) = tree();
    // Level-2 table (and a level-3 table) for the first 2 MiB of G1...
    s2.exclusive()
        .map_pages(G1, K4, PA + G1, Prot::RW, &mut {
            let mut c = MemCache::new();
            c.topup(&mm, 2).unwrap();
            c
        })
        .unwrap();
    // ...then T, alone from a one-page cache.
    let t = map_pages_counting(&mut s2, &mm, G1 + M2, M2, 1)[0];
    let ipa = G1 + M2 + 5 * K4;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (r, log, m2) = (TreeRef::new(&s2), seen.clone(), mm.clone());
    let fired = AtomicBool::new(false);
    mm.set_hook(move |ev| {
        if ev != Ev::TlbiAddr(ipa, lv(3)) || fired.swap(true, Ordering::Relaxed) {
            return;
        }
        // SAFETY: `s2` outlives the hook and is borrowed shared meanwhile.
        let s2 = unsafe { r.get::<TestMm>() };
        let res = s2
            .fault()
            .map(G1 + M2, M2, PA + G1 + M2, Prot::RW, &mut MemCache::new());
        let mut log = log.lock().unwrap();
        log.push(format!("collapse: {res:?}"));
        log.push(format!("T freed while W1 inside: {}", m2.is_quarantined(t)));
        log.push(format!("deferred: {}", s2.stats().deferred_subtrees));
    });
    let res = s2
        .shared()
        .map(ipa, K4, 0x90_0000_0000, Prot::R, &mut MemCache::new());
    mm.clear_hook();
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "collapse: Ok(Mapped { by_level: [0, 0, 1, 0] })",
            "T freed while W1 inside: false",
            "deferred: 1"
        ]
    );
    assert!(mm.is_quarantined(t), "T freed once W1 left");
    let lf = s2.shared().get_leaf(ipa).unwrap();
    assert_eq!((lf.level.get(), lf.translate(ipa)), (2, Some(PA + ipa)));
    check_end(s2, mm);
}

/// W1 (shared split) holds a 2 MiB entry of level-2 table T locked when W2
/// (fault map of the 1 GiB block) collapses T. W1 then links a new level-3
/// table into the unlinked T. When W1 leaves, T and that new table are both
/// freed (once), and the counters come back exact.
#[test]
fn a_table_linked_into_an_unlinked_subtree_is_freed_with_it() {
    let (s2, mm) = tree();
    let mut cache = MemCache::new();
    cache.topup(&mm, 4).unwrap();
    s2.shared()
        .map(G1, G1, PA + G1, Prot::RW, &mut cache)
        .unwrap();
    s2.shared().split(G1, K4, &mut cache).unwrap(); // 1 GiB -> T of 2 MiB blocks, and one level-3 table
    assert_eq!(s2.stats().table_pages, 2);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (r, log) = (TreeRef::new(&s2), seen.clone());
    let fired = AtomicBool::new(false);
    mm.set_hook(move |ev| {
        if ev != Ev::TlbiAddr(G1 + M2, lv(2)) || fired.swap(true, Ordering::Relaxed) {
            return;
        }
        // SAFETY: as above.
        let s2 = unsafe { r.get::<TestMm>() };
        let res = s2
            .fault()
            .map(G1, G1, PA + G1, Prot::R, &mut MemCache::new());
        log.lock().unwrap().push(format!("collapse: {res:?}"));
    });
    let res = s2.shared().split(G1 + M2, K4, &mut cache);
    mm.clear_hook();
    assert_eq!(res, Ok(1));
    assert_eq!(
        *seen.lock().unwrap(),
        ["collapse: Ok(Mapped { by_level: [0, 1, 0, 0] })"]
    );
    let stats = s2.stats();
    assert_eq!(stats.deferred_subtrees, 1);
    assert_eq!(
        stats.table_pages, 0,
        "T, the old and the new level-3 table all freed"
    );
    let lf = s2.shared().get_leaf(G1 + M2).unwrap();
    assert_eq!((lf.level.get(), lf.prot()), (1, Some(Prot::R)));
    cache.drain(&mm);
    check_end(s2, mm);
}

/// The policy's case, staged: a shared write-protect meets a 2 MiB block
/// another walker holds locked while splitting it. It must wait (retry),
/// then write-protect the pages the split made.
#[test]
fn a_wrprotect_waits_for_a_split_and_protects_its_pages() {
    let (mut s2, mm) = tree();
    s2.set_max_retries(u32::MAX);
    let mut cache = MemCache::new();
    cache.topup(&mm, 4).unwrap();
    s2.shared()
        .map(G1, M2, PA + G1, Prot::RW, &mut cache)
        .unwrap();
    let r = TreeRef::new(&s2);
    let waiter: Arc<Mutex<Option<std::thread::JoinHandle<String>>>> = Arc::default();
    let w = waiter.clone();
    let m2 = mm.clone();
    let fired = AtomicBool::new(false);
    mm.set_hook(move |ev| {
        if ev != Ev::TlbiAddr(G1, lv(2)) || fired.swap(true, Ordering::Relaxed) {
            return;
        }
        // W2 on another thread; this thread (W1) holds the entry locked
        // until W2 has retried a few times.
        let before = m2.relaxes();
        *w.lock().unwrap() = Some(std::thread::spawn(move || {
            // SAFETY: the test joins this thread before the tree goes.
            let s2 = unsafe { r.get::<TestMm>() };
            match s2.shared().wrprotect(G1, M2) {
                Ok(f) => {
                    let needed = f.is_needed();
                    s2.complete(f);
                    format!("ok, flush needed {needed}")
                }
                Err(e) => format!("{e:?}"),
            }
        }));
        let t0 = Instant::now();
        while m2.relaxes() < before + 3 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::yield_now();
        }
    });
    let res = s2.shared().split(G1, M2, &mut cache);
    mm.clear_hook();
    assert_eq!(res, Ok(1));
    let handle = waiter.lock().unwrap().take().expect("the hook ran");
    assert_eq!(handle.join().unwrap(), "ok, flush needed true");
    for p in 0..512 {
        let lf = s2.shared().get_leaf(G1 + p * K4).unwrap();
        assert_eq!((lf.level.get(), lf.prot()), (3, Some(Prot::R)), "page {p}");
    }
    let stats = s2.stats();
    assert!(
        stats.count(Outcome::LostRace, Action::Retry) >= 3,
        "{stats:?}"
    );
    assert_eq!(mm.relaxes(), stats.retries());
    cache.drain(&mm);
    check_end(s2, mm);
}

/// A map visits a run of empty page entries in one call; another walker
/// fills page 2 of the run while the run cleans that page's memory, just
/// before the run's compare-and-swap of it. The lost race goes to the
/// policy as a single visit's would: a shared map retries (visits the
/// entry again on its own, replaces the racer's page and goes on with the
/// run); a fault map exits and leaves the racer's page.
#[test]
fn a_lost_race_inside_a_run_goes_to_the_policy() {
    for fault in [false, true] {
        let (mut s2, mm) = tree();
        let base = G1 + M2;
        // The level-3 table exists (page 100 of it is mapped): the map
        // below is one run of four empty entries.
        s2.exclusive()
            .map_pages(base + 100 * K4, K4, PA, Prot::RW, &mut {
                let mut c = MemCache::new();
                c.topup(&mm, 2).unwrap();
                c
            })
            .unwrap();
        let ours = 0x90_0000_0000;
        let racer = 0xa0_0000_0000;
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, log) = (TreeRef::new(&s2), seen.clone());
        let fired = AtomicBool::new(false);
        mm.set_hook(move |ev| {
            if ev != Ev::Dcache(ours + 2 * K4, K4) || fired.swap(true, Ordering::Relaxed) {
                return;
            }
            // SAFETY: `s2` outlives the hook and is borrowed shared meanwhile.
            let s2 = unsafe { r.get::<TestMm>() };
            let res = s2
                .fault()
                .map(base + 2 * K4, K4, racer, Prot::R, &mut MemCache::new());
            log.lock().unwrap().push(format!("racer: {res:?}"));
        });
        let mut none = MemCache::new();
        let res = if fault {
            s2.fault().map(base, 4 * K4, ours, Prot::RW, &mut none)
        } else {
            s2.shared().map(base, 4 * K4, ours, Prot::RW, &mut none)
        };
        mm.clear_hook();
        assert_eq!(
            *seen.lock().unwrap(),
            ["racer: Ok(Mapped { by_level: [0, 0, 0, 1] })"],
            "fault {fault}"
        );
        let stats = s2.stats();
        let at = |p: u64| {
            s2.shared()
                .get_leaf(base + p * K4)
                .unwrap()
                .translate(base + p * K4)
        };
        if fault {
            assert_eq!(
                res,
                Err(pgtable::Error::Refault {
                    addr: base + 2 * K4,
                    outcome: Outcome::LostRace
                })
            );
            assert_eq!(stats.count(Outcome::LostRace, Action::Exit), 1);
            let pages: Vec<_> = (0..4).map(at).collect();
            assert_eq!(pages, [Some(ours), Some(ours + K4), Some(racer), None]);
        } else {
            assert_eq!(format!("{res:?}"), "Ok(Mapped { by_level: [0, 0, 0, 4] })");
            assert_eq!(stats.count(Outcome::LostRace, Action::Retry), 1);
            assert_eq!(mm.relaxes(), 1, "one retry");
            for p in 0..4 {
                assert_eq!(at(p), Some(ours + p * K4), "page {p}");
            }
        }
        check_end(s2, mm);
    }
}
