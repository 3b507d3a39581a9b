//! Order of maintenance around entry updates, from the event recorder and
//! from hooks that look at the tree while the walker is in the middle of a
//! maintenance call:
//! - a table page unlinked by break-before-make is freed only after the TLB
//!   invalidation of the entry that linked it (exclusive, shared, unmap);
//! - during that invalidation the entry holds the locked marker (neither
//!   the old nor the new translation is visible);
//! - cache maintenance of a new mapping happens before the mapping becomes
//!   visible (as KVM does: "Perform CMOs before installation of the guest
//!   stage-2 PTE").

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use pgtable::host::{HostMm, MmEvent};
use pgtable::{pages_needed, MemCache, Prot, Stage2};

/// Pages allocated by a fresh cache of exactly `n` pages.
fn fresh_cache(mm: &HostMm, n: usize) -> (MemCache, Vec<u64>) {
    mm.take_events();
    let mut cache = MemCache::new();
    cache.topup(mm, n).unwrap();
    let pages = mm
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            MmEvent::Alloc { pa, count: 1 } => Some(pa),
            _ => None,
        })
        .collect();
    (cache, pages)
}

fn frees(ev: &[MmEvent]) -> Vec<(usize, u64)> {
    ev.iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            MmEvent::Free { pa, .. } => Some((i, *pa)),
            _ => None,
        })
        .collect()
}

/// Builds, at `G1..G1+4M`, a level-2 table with four level-3 tables, all
/// from one fresh cache; returns the five table pages.
fn four_page_tables(s2: &mut Stage2<HostMm>, mm: &HostMm) -> Vec<u64> {
    let n = pages_needed(s2.geometry().start_level, G1, 4 * M2);
    assert_eq!(n, 5);
    let (mut cache, pages) = fresh_cache(mm, n);
    s2.exclusive()
        .map_pages(G1, 4 * M2, 0x80_0000_0000 + G1, Prot::RW, &mut cache)
        .unwrap();
    assert!(cache.is_empty(), "all five pages became tables");
    assert_eq!(s2.stats().table_pages, 5);
    pages
}

#[test]
fn exclusive_collapse_invalidates_before_freeing_the_subtree() {
    let mm = HostMm::new();
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    let tables = four_page_tables(&mut s2, &mm);
    mm.take_events();
    // A 1 GiB block where the level-2 table was: collapse, exclusive.
    let mut none = MemCache::new();
    let m = s2
        .exclusive()
        .map(G1, G1, 0x80_0000_0000 + G1, Prot::RW, &mut none)
        .unwrap();
    assert_eq!(m.at(lv(1)), 1);
    let ev = mm.take_events();
    let tlbi = ev
        .iter()
        .position(|e| *e == MmEvent::TlbiRange { addr: G1, size: G1 })
        .unwrap_or_else(|| panic!("no TLBI of the 1 GiB range: {ev:?}"));
    let freed = frees(&ev);
    let mut freed_pages: Vec<u64> = freed.iter().map(|f| f.1).collect();
    freed_pages.sort_unstable();
    let mut want = tables.clone();
    want.sort_unstable();
    assert_eq!(freed_pages, want, "the five table pages are freed: {ev:?}");
    assert!(
        freed.iter().all(|(i, _)| *i > tlbi),
        "a table page was freed before the TLBI: {ev:?}"
    );
    assert_eq!(s2.stats().table_pages, 0);
    assert_eq!(s2.stats().deferred_subtrees, 0, "exclusive frees at once");
    s2.destroy();
    assert_eq!(mm.live_pages(), 0);
}

#[test]
fn shared_collapse_invalidates_then_frees_when_the_walk_leaves() {
    let mm = HostMm::new();
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    let tables = four_page_tables(&mut s2, &mm);
    mm.take_events();
    // A 2 MiB block over the second level-3 table, from a fault walk.
    let mut none = MemCache::new();
    s2.fault()
        .map(G1 + M2, M2, 0x80_0000_0000 + G1 + M2, Prot::RW, &mut none)
        .unwrap();
    let ev = mm.take_events();
    let tlbi = ev
        .iter()
        .position(|e| {
            *e == MmEvent::TlbiRange {
                addr: G1 + M2,
                size: M2,
            }
        })
        .unwrap_or_else(|| panic!("no TLBI of the 2 MiB range: {ev:?}"));
    let freed = frees(&ev);
    assert_eq!(freed.len(), 1, "{ev:?}");
    assert!(tables.contains(&freed[0].1));
    assert!(freed[0].0 > tlbi, "freed before the TLBI: {ev:?}");
    let stats = s2.stats();
    assert_eq!(stats.deferred_subtrees, 1);
    assert_eq!(stats.table_pages, 4);
    assert_eq!(mm.live_pages(), 2 + 4, "root (2 pages) + 4 tables");
    s2.destroy();
    assert_eq!(mm.live_pages(), 0);
}

#[test]
fn unmap_invalidates_before_freeing_emptied_tables() {
    let mm = HostMm::new();
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    let tables = four_page_tables(&mut s2, &mm);
    // The cache hands out its pages last first: the level-2 table (taken
    // first) is the last page, the level-3 table of `G1 + i * M2` the one
    // before it, counting down.
    let span_of = |pa: u64| {
        let k = tables.iter().position(|t| *t == pa).expect("one of ours");
        if k == 4 {
            (G1, G1, 1) // the level-2 table: a level-1 entry's span
        } else {
            (G1 + (3 - k as u64) * M2, M2, 2)
        }
    };
    mm.take_events();
    let mut none = MemCache::new();
    assert_eq!(s2.exclusive().unmap(G1, 4 * M2, &mut none), Ok(()));
    let ev = mm.take_events();
    let freed = frees(&ev);
    assert_eq!(freed.len(), 5, "{ev:?}");
    // Each table goes only after a TLB invalidation that covers the whole
    // span of the entry that linked it (an unmap may invalidate several
    // entries at once, then free their tables).
    for (i, pa) in &freed {
        let (start, size, level) = span_of(*pa);
        let covered = ev[..*i].iter().any(|e| match *e {
            MmEvent::TlbiRange { addr, size: n } => addr <= start && addr + n >= start + size,
            MmEvent::TlbiAddr { addr, level: l } => {
                l.get() <= level && l.align_down(addr) == l.align_down(start)
            }
            MmEvent::TlbiAll => true,
            _ => false,
        });
        assert!(
            covered,
            "table {pa:#x} ({start:#x}+{size:#x}) freed before a TLBI of its entry: {ev:?}"
        );
    }
    assert_eq!(s2.stats().table_pages, 0);
    s2.destroy();
    assert_eq!(mm.live_pages(), 0);
}

/// During every TLB invalidation of a break-before-make, the entry holds
/// the locked marker: checked from a hook, for a block replaced by a
/// block, a block split into a table and a table collapsed into a block.
#[test]
fn the_entry_is_locked_while_its_tlb_entries_are_invalidated() {
    let mm = TestMm::new(HostMm::new(), false);
    let s2 = Stage2::new(mm.clone(), 40).unwrap();
    let mut cache = MemCache::new();
    cache.topup(&mm, 64).unwrap();
    let seen: Arc<Mutex<Vec<(Ev, bool, String)>>> = Arc::default();
    let r = TreeRef::new(&s2);
    let log = seen.clone();
    mm.set_hook(move |ev| {
        let addr = match ev {
            Ev::TlbiAddr(a, _) | Ev::TlbiRange(a, _) => a,
            _ => return,
        };
        // SAFETY: `s2` outlives the hook (cleared below) and is only
        // borrowed shared while it is set.
        let s2 = unsafe { r.get::<TestMm>() };
        let lf = s2.shared().get_leaf(addr).unwrap();
        log.lock().unwrap().push((
            ev,
            lf.pte.is_locked(),
            format!("{:?} level {}", lf.pte, lf.level.get()),
        ));
    });
    let pa = 0x80_0000_0000u64;
    // Block, replaced by a block elsewhere (break-before-make of a leaf).
    s2.shared().map(0, M2, pa, Prot::RW, &mut cache).unwrap();
    s2.shared()
        .map(0, M2, pa + G1, Prot::RW, &mut cache)
        .unwrap();
    // Split of the block.
    s2.shared().split(0, K4, &mut cache).unwrap();
    // Collapse of the table.
    s2.shared().map(0, M2, pa, Prot::R, &mut cache).unwrap();
    mm.clear_hook();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 3, "{seen:?}");
    for (ev, locked, what) in seen.iter() {
        assert!(locked, "during {ev:?} the entry was {what}, not locked");
    }
    drop(seen);
    s2.destroy();
    cache.drain(&mm);
    assert_eq!(mm.live_pages(), 0);
}

/// Cache maintenance of the memory a new leaf maps must be complete before
/// the leaf is visible: another vCPU (MMU off, or fetching instructions)
/// could otherwise read stale memory through it. The hook looks at the
/// tree during each clean / invalidate.
#[test]
fn cache_maintenance_happens_before_the_leaf_is_visible() {
    let mm = TestMm::new(HostMm::new(), false);
    let s2 = Stage2::new(mm.clone(), 40).unwrap();
    let mut cache = MemCache::new();
    cache.topup(&mm, 64).unwrap();
    let seen: Arc<Mutex<Vec<(Ev, bool)>>> = Arc::default();
    let r = TreeRef::new(&s2);
    let log = seen.clone();
    let pa = 0x80_0000_0000u64;
    mm.set_hook(move |ev| {
        let (Ev::Dcache(p, _) | Ev::Icache(p, _)) = ev else {
            return;
        };
        // SAFETY: as above.
        let s2 = unsafe { r.get::<TestMm>() };
        // IPA = PA - pa below.
        let lf = s2.shared().get_leaf(p - pa).unwrap();
        log.lock().unwrap().push((ev, lf.pte.is_valid()));
    });
    // A page into an empty entry, a block over a table, a page replacing one.
    s2.shared().map(0, K4, pa, Prot::RWX, &mut cache).unwrap();
    s2.shared().map(0, M2, pa, Prot::RWX, &mut cache).unwrap();
    s2.fault()
        .map(2 * M2, K4, pa + 2 * M2, Prot::RW, &mut cache)
        .unwrap();
    mm.clear_hook();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 5, "{seen:?}");
    let visible: Vec<_> = seen.iter().filter(|(_, valid)| *valid).collect();
    assert!(
        visible.is_empty(),
        "maintenance ran while the new leaf was already visible: {visible:?}"
    );
    s2.destroy();
    cache.drain(&mm);
    assert_eq!(mm.live_pages(), 0);
}
