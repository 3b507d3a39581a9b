//! Unmapping invalidates the TLB for every leaf it removes: leaf by leaf and in runs, at every level, with and without cache maintenance.
//!
//! A stage-2 unmap that left a translation in the TLB would let a vCPU keep
//! reaching memory the hypervisor took back. Each case below unmaps a range
//! from the same tree and checks, from the recorded maintenance, that every
//! valid leaf the range reached (read before the unmap) is reached by an
//! invalidation: by address with its level hint, by a range holding it
//! whole, or of everything (`common::tlbi_reaches`). With cache maintenance
//! the unmap visits leaf by leaf; without it (FEAT_S2FWB) it clears runs of
//! entries with one range invalidation per chunk of 64, and drops tables
//! the range covers whole; with runs off it goes leaf by leaf again.

mod common;

use common::*;
use pgtable::host::{HostMm, MmEvent};
use pgtable::{MemCache, Prot, Stage2};

const PA: u64 = 0x80_0000_0000;
/// 100 2 MiB blocks from here, then 600 pages (a level-3 table of 512 and
/// one of 88), all in one level-1 entry's table.
const BLOCKS: u64 = 4 * G1;
const PAGES: u64 = BLOCKS + 100 * M2;

/// A 40-bit tree (level-1 root) with 1 GiB blocks at 1 GiB and 2 GiB, and
/// the 2 MiB blocks and pages above.
fn tree(skip_cmo: bool, runs: bool) -> (Stage2<HostMm>, MemCache, HostMm) {
    let mm = HostMm::new();
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    s2.set_skip_cmo(skip_cmo);
    s2.set_runs(runs);
    let mut cache = MemCache::new();
    cache.topup(&mm, 16).unwrap();
    let ex = s2.exclusive();
    let m = ex.map(G1, 2 * G1, PA + G1, Prot::RW, &mut cache).unwrap();
    assert_eq!(m.at(lv(1)), 2);
    let m = ex
        .map(BLOCKS, 100 * M2, PA + BLOCKS, Prot::RW, &mut cache)
        .unwrap();
    assert_eq!(m.at(lv(2)), 100);
    let m = ex
        .map_pages(PAGES, 600 * K4, PA + PAGES, Prot::RW, &mut cache)
        .unwrap();
    assert_eq!(m.at(lv(3)), 600);
    mm.take_events();
    (s2, cache, mm)
}

/// Unmaps `[ipa, ipa + size)` from a fresh tree; returns the levels of the
/// leaves it removed. Panics if one of them was not invalidated.
fn unmap_checked(what: &str, ipa: u64, size: u64, skip_cmo: bool, runs: bool) -> [u64; 4] {
    let (s2, mut cache, mm) = tree(skip_cmo, runs);
    let what = format!("{what} (skip_cmo {skip_cmo}, runs {runs})");
    let removed = leaves_in(&s2, ipa, ipa + size);
    cache.topup(&mm, 4).unwrap();
    mm.take_events();
    let mut s2 = s2;
    s2.exclusive().unmap(ipa, size, &mut cache).unwrap();
    let ev = mm.take_events();
    let stale = unreached_leaves(&removed, &ev);
    assert!(
        stale.is_empty(),
        "{what}: leaves (start, level) removed without a TLB invalidation: {stale:x?}\n\
         events: {ev:x?}"
    );
    assert_eq!(s2.shared().mapped_bytes(ipa, size), Ok(0), "{what}");
    let mut levels = [0; 4];
    for (_, lf) in removed.iter().filter(|(_, lf)| lf.pte.is_valid()) {
        levels[lf.level.get() as usize] += 1;
    }
    s2.destroy();
    cache.drain(&mm);
    assert_eq!(mm.live_pages(), 0, "{what}");
    levels
}

#[test]
fn every_removed_leaf_is_invalidated() {
    // (what, ipa, size, leaves removed by level 1, 2, 3)
    let cases: &[(&str, u64, u64, [u64; 3])] = &[
        ("one page", PAGES + K4, K4, [0, 0, 1]),
        // 300 pages in a table the range does not cover: a run of more
        // than one chunk of 64.
        ("a long run of pages", PAGES + K4, 300 * K4, [0, 0, 300]),
        (
            "pages across two tables",
            PAGES + M2 - 10 * K4,
            20 * K4,
            [0, 0, 20],
        ),
        // A table the range covers whole (dropped at once without cache
        // maintenance), and the pages after it.
        (
            "a whole page table and more",
            PAGES,
            M2 + 8 * K4,
            [0, 0, 520],
        ),
        ("one 2 MiB block", BLOCKS + 7 * M2, M2, [0, 1, 0]),
        // 90 blocks in a level-2 table the range does not cover: a run of
        // more than one chunk at level 2.
        (
            "a long run of 2 MiB blocks",
            BLOCKS + M2,
            90 * M2,
            [0, 90, 0],
        ),
        // Blocks, then two tables of pages, in one run at level 2.
        (
            "blocks and page tables",
            BLOCKS + 30 * M2,
            72 * M2,
            [0, 70, 600],
        ),
        // A block the range covers in part: split, then the pages go.
        (
            "part of a 2 MiB block",
            BLOCKS + 3 * M2 + K4,
            2 * K4,
            [0, 1, 0],
        ),
        ("one 1 GiB block", 2 * G1, G1, [1, 0, 0]),
        ("two 1 GiB blocks", G1, 2 * G1, [2, 0, 0]),
        ("part of a 1 GiB block", G1 + M2 + K4, 3 * K4, [1, 0, 0]),
        ("everything", 0, 8 * G1, [2, 100, 600]),
    ];
    for &(what, ipa, size, want) in cases {
        for skip_cmo in [false, true] {
            for runs in [true, false] {
                let levels = unmap_checked(what, ipa, size, skip_cmo, runs);
                assert_eq!(
                    levels[1..],
                    want,
                    "{what}: the case removes the leaves it is meant to"
                );
            }
        }
    }
}

/// The TLB invalidations an unmap of `[ipa, ipa + size)` makes on a fresh
/// tree without cache maintenance, with runs (after `before` unmapped
/// first, if given).
fn tlbis_of_unmap(before: Option<(u64, u64)>, ipa: u64, size: u64) -> Vec<MmEvent> {
    let (mut s2, mut cache, mm) = tree(true, true);
    cache.topup(&mm, 8).unwrap();
    if let Some((at, len)) = before {
        s2.exclusive().unmap(at, len, &mut cache).unwrap();
    }
    mm.take_events();
    s2.exclusive().unmap(ipa, size, &mut cache).unwrap();
    let tlbis = mm
        .take_events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                MmEvent::TlbiAddr { .. } | MmEvent::TlbiRange { .. } | MmEvent::TlbiAll
            )
        })
        .collect();
    s2.destroy();
    cache.drain(&mm);
    tlbis
}

/// The range invalidations of the chunks of a run of `entries` entries of
/// `size` bytes from `at`, 64 entries a chunk.
fn chunks(at: u64, entries: u64, size: u64) -> Vec<MmEvent> {
    (0..entries)
        .step_by(64)
        .map(|first| MmEvent::TlbiRange {
            addr: at + first * size,
            size: (entries - first).min(64) * size,
        })
        .collect()
}

#[test]
fn runs_invalidate_once_per_chunk_and_never_an_empty_range() {
    // 300 pages of one table: five chunks, no invalidation by address.
    // Handing a run's entries to single visits would invalidate page by
    // page.
    assert_eq!(
        tlbis_of_unmap(None, PAGES + K4, 300 * K4),
        chunks(PAGES + K4, 300, K4)
    );
    // 70 blocks, then the two page tables the range covers whole, in one
    // run at level 2: two chunks (64 entries, then 6 and the tables).
    assert_eq!(
        tlbis_of_unmap(None, BLOCKS + 30 * M2, 72 * M2),
        chunks(BLOCKS + 30 * M2, 72, M2)
    );
    // A range that starts on an empty entry: nothing invalidated for it,
    // not even an empty range; then the pages after it, as before.
    assert_eq!(
        tlbis_of_unmap(Some((PAGES + K4, K4)), PAGES + K4, 10 * K4),
        chunks(PAGES + 2 * K4, 9, K4)
    );
}

/// `unreached_leaves` (which does not ask every event about every leaf)
/// answers as the definition, `tlbi_reaches` asked of every pair, does: on
/// random leaves of every level, valid or not, and random invalidations by
/// address (right and wrong level hints), ranges (some covering a leaf in
/// part or whole, some empty), everything, and other events.
#[test]
fn unreached_leaves_agrees_with_tlbi_reaches() {
    let mut rng = Rng::new(0x5eed);
    let window = 4 * G1;
    let mut reached_some = 0;
    for case in 0..2000 {
        let leaves: Vec<(u64, pgtable::Leaf)> = (0..rng.below(12))
            .map(|_| {
                let level = lv(1 + rng.below(3) as u8);
                let start = level.align_down(rng.below(window));
                let bits = if rng.below(5) == 0 { 0 } else { 0b11 };
                (
                    start,
                    pgtable::Leaf {
                        pte: pgtable::Pte::from_bits(bits),
                        level,
                    },
                )
            })
            .collect();
        let events: Vec<MmEvent> = (0..rng.below(10))
            .map(|_| {
                // Often at or near a leaf, so that the events reach some,
                // some of them exactly to its end.
                let near = match leaves.get(rng.below(leaves.len() as u64 + 1) as usize) {
                    Some((start, _)) if rng.below(2) == 0 => *start,
                    Some((start, _)) => start + rng.below(2 * M2) - M2.min(*start),
                    None => rng.below(window),
                };
                match rng.below(20) {
                    0 => MmEvent::TlbiAll,
                    1..=3 => MmEvent::DcacheClean { pa: near, size: K4 },
                    4..=10 => MmEvent::TlbiAddr {
                        addr: near,
                        level: lv(1 + rng.below(3) as u8),
                    },
                    _ => MmEvent::TlbiRange {
                        addr: near & !(K4 - 1),
                        size: [0, K4, M2, 2 * M2, G1][rng.below(5) as usize],
                    },
                }
            })
            .collect();
        let naive: Vec<(u64, u8)> = leaves
            .iter()
            .filter(|(_, lf)| lf.pte.is_valid())
            .filter(|(start, lf)| !events.iter().any(|e| tlbi_reaches(e, *start, lf.level)))
            .map(|(start, lf)| (*start, lf.level.get()))
            .collect();
        let valid = leaves.iter().filter(|(_, lf)| lf.pte.is_valid()).count();
        reached_some += usize::from(naive.len() < valid);
        assert_eq!(
            unreached_leaves(&leaves, &events),
            naive,
            "case {case}: leaves {leaves:x?}, events {events:x?}"
        );
    }
    // The cases exercise both answers.
    assert!(
        reached_some > 200,
        "only {reached_some} cases reached a leaf"
    );
}
