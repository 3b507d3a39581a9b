//! Unit tests of each stage-2 operation, on heap memory with recorded maintenance.

use super::*;
use crate::host::{HostMm, MmEvent};
use crate::policy::{Access, Action, Outcome};
use std::vec::Vec;

const K4: u64 = 0x1000;
const M2: u64 = 0x20_0000;
const G1: u64 = 0x4000_0000;

fn l(n: u8) -> Level {
    Level::new(n).unwrap()
}

/// A 40-bit tree (level-1 root, two concatenated pages) and a cache of 64
/// pages, more than any test but one needs (that one tops it up): under
/// Miri every page topped up is zeroed byte by byte, so tests take only
/// what they use.
fn tree() -> (Stage2<HostMm>, MemCache, HostMm) {
    let mm = HostMm::new();
    let s2 = Stage2::new(mm.clone(), 40).unwrap();
    let mut cache = MemCache::new();
    cache.topup(&mm, 64).unwrap();
    (s2, cache, mm)
}

fn finish(s2: Stage2<HostMm>, mut cache: MemCache, mm: HostMm) {
    s2.destroy();
    cache.drain(&mm);
    assert_eq!(mm.live_pages(), 0, "every page freed");
}

fn leaf(s2: &Stage2<HostMm>, ipa: u64) -> Leaf {
    s2.shared().get_leaf(ipa).unwrap()
}

/// Replaces the leaf entry for `ipa` with `pte` (as a racing walker would).
fn poke(s2: &mut Stage2<HostMm>, ipa: u64, pte: Pte) {
    struct Poke(Pte);
    impl<M: MmOps> crate::walker::Visitor<M> for Poke {
        const POLICY: &'static crate::Policy = &crate::policy::GET_LEAF;
        fn visit(
            &mut self,
            ctx: &crate::walker::VisitCtx<'_, M>,
            _: crate::VisitKind,
        ) -> Result<(), Outcome> {
            ctx.try_set(self.0)
        }
    }
    let page = ipa & !(K4 - 1);
    s2.tree
        .walk(page, K4, &mut Poke(pte), Access::Exclusive, WalkFlags::LEAF)
        .unwrap();
}

#[test]
fn map_picks_the_largest_leaf_alignment_allows() {
    let (mut s2, mut cache, mm) = tree();
    let ex = s2.exclusive();
    // 1 GiB aligned on both sides: one level-1 block.
    let m = ex
        .map(G1, G1, 0x80_0000_0000, Prot::RW, &mut cache)
        .unwrap();
    assert_eq!((m.at(l(1)), m.total()), (1, 1));
    // 2 MiB aligned, 4 MiB: two level-2 blocks.
    let m = ex
        .map(3 * G1, 2 * M2, 0x90_0020_0000, Prot::RW, &mut cache)
        .unwrap();
    assert_eq!((m.at(l(2)), m.total()), (2, 2));
    // IPA 2 MiB aligned but PA only 4 KiB aligned: pages.
    let m = ex
        .map(4 * G1, M2, 0x90_0000_1000, Prot::R, &mut cache)
        .unwrap();
    assert_eq!((m.at(l(3)), m.total()), (512, 512));
    // map_pages never uses blocks.
    let m = ex
        .map_pages(5 * G1, M2, 0x90_0000_0000, Prot::R, &mut cache)
        .unwrap();
    assert_eq!(m.at(l(3)), 512);

    let b = leaf(&s2, G1 + 0x1234_5678);
    assert_eq!(
        (b.level, b.translate(G1 + 0x1234_5678)),
        (l(1), Some(0x80_1234_5678))
    );
    assert_eq!(b.prot(), Some(Prot::RW));
    let b = leaf(&s2, 3 * G1 + M2 + 8);
    assert_eq!(
        (b.level, b.translate(3 * G1 + M2 + 8)),
        (l(2), Some(0x90_0040_0008))
    );
    let p = leaf(&s2, 4 * G1 + 0x5000);
    assert_eq!(
        (p.level, p.translate(4 * G1 + 0x5000)),
        (l(3), Some(0x90_0000_6000))
    );
    assert!(p.pte.young(), "new mappings are young");
    let hole = leaf(&s2, 2 * G1);
    assert_eq!(hole.translate(2 * G1), None);
    // Tables: level-2 for 3G, 4G and 5G, level-3 for the 4G and 5G pages.
    assert_eq!(s2.stats().table_pages, 5);
    finish(s2, cache, mm);
}

#[test]
fn remapping_part_of_a_block_splits_it_and_keeps_the_rest() {
    let (mut s2, mut cache, mm) = tree();
    s2.exclusive()
        .map(0, M2, 0x4000_0000, Prot::RW, &mut cache)
        .unwrap();
    mm.take_events();
    let m = s2
        .exclusive()
        .map(0x3000, K4, 0x7000_0000, Prot::R, &mut cache)
        .unwrap();
    assert_eq!(m.at(l(3)), 1);
    assert_eq!(leaf(&s2, 0x3000).translate(0x3000), Some(0x7000_0000));
    assert_eq!(leaf(&s2, 0x3000).prot(), Some(Prot::R));
    for ipa in [0, 0x2000, 0x4000, M2 - K4] {
        let lf = leaf(&s2, ipa);
        assert_eq!(
            (lf.level, lf.translate(ipa), lf.prot()),
            (l(3), Some(0x4000_0000 + ipa), Some(Prot::RW))
        );
    }
    // Break-before-make of the block: its TLB entry is invalidated, and so
    // is the replaced page's.
    let ev = mm.take_events();
    assert!(
        ev.contains(&MmEvent::TlbiAddr {
            addr: 0,
            level: l(2)
        }),
        "{ev:?}"
    );
    assert!(
        ev.contains(&MmEvent::TlbiAddr {
            addr: 0x3000,
            level: l(3)
        }),
        "{ev:?}"
    );
    finish(s2, cache, mm);
}

#[test]
fn a_block_over_pages_collapses_the_table_and_frees_it() {
    let (mut s2, mut cache, mm) = tree();
    s2.exclusive()
        .map_pages(M2, M2, 0x4000_0000, Prot::RW, &mut cache)
        .unwrap();
    let tables = s2.stats().table_pages;
    let l3 = leaf(&s2, M2);
    assert_eq!(l3.level, l(3));
    mm.take_events();
    let m = s2
        .exclusive()
        .map(M2, M2, 0x4020_0000, Prot::RW, &mut cache)
        .unwrap();
    assert_eq!(m.at(l(2)), 1);
    assert_eq!(leaf(&s2, M2 + 5).translate(M2 + 5), Some(0x4020_0005));
    assert_eq!(s2.stats().table_pages, tables - 1, "the page table went");
    // The table's TLB entries go before the table page does.
    let ev = mm.take_events();
    let tlbi = ev
        .iter()
        .position(|e| matches!(e, MmEvent::TlbiRange { addr, size } if *addr == M2 && *size == M2));
    let free = ev.iter().position(|e| matches!(e, MmEvent::Free { .. }));
    assert!(tlbi.unwrap() < free.unwrap(), "{ev:?}");
    finish(s2, cache, mm);
}

/// `Map::may_collapse` (which decides whether a map walk makes pre-order
/// table visits) against the definition, by brute force: is there an entry
/// of level 1 or 2 in the range that a block would fill (`leaf_fits`)?
/// Ranges around 2 MiB and 1 GiB boundaries, congruent and not, up to the
/// top of the address space.
#[test]
fn may_collapse_says_yes_exactly_where_a_block_fits() {
    const G1: u64 = 1 << 30;
    let top = 1u64 << 48;
    let starts = [
        0,
        PAGE_SIZE,
        M2 - PAGE_SIZE,
        M2,
        M2 + PAGE_SIZE,
        G1 - M2,
        G1,
        top - M2 - PAGE_SIZE,
        top - PAGE_SIZE,
    ];
    let sizes = [
        PAGE_SIZE,
        M2 - PAGE_SIZE,
        M2,
        M2 + PAGE_SIZE,
        2 * M2,
        2 * M2 - PAGE_SIZE,
        G1,
        G1 + M2,
    ];
    let shifts = [0, PAGE_SIZE, M2, G1 - M2, G1];
    let mut cache = MemCache::new();
    let (mut yes, mut no) = (0, 0);
    for &ipa in &starts {
        for &size in &sizes {
            let Some(end) = ipa.checked_add(size).filter(|&e| e <= top) else {
                continue;
            };
            for &shift in &shifts {
                for max_size in [PAGE_SIZE, M2, G1] {
                    for replace in [false, true] {
                        let pa = ipa.wrapping_add(shift) & (top - 1);
                        let map = ops::Map::<pte::Stage2> {
                            ipa,
                            pa,
                            attrs: 0,
                            max_size,
                            replace,
                            cache: &mut cache,
                            mapped: Mapped::default(),
                            format: PhantomData,
                        };
                        let fits = replace
                            && [M2, G1].iter().any(|&block| {
                                block <= max_size
                                    && (ipa.div_ceil(block) * block..end)
                                        .step_by(block as usize)
                                        .any(|a| {
                                            end - a >= block
                                                && (pa + (a - ipa)).is_multiple_of(block)
                                        })
                            });
                        assert_eq!(
                            map.may_collapse(size),
                            fits,
                            "ipa {ipa:#x} size {size:#x} pa {pa:#x} max {max_size:#x} replace {replace}"
                        );
                        if fits {
                            yes += 1
                        } else {
                            no += 1
                        }
                    }
                }
            }
        }
    }
    assert!(
        yes > 50 && no > 50,
        "both answers tried: {yes} yes, {no} no"
    );
}

/// Unmaps after checking that `mapped_bytes` counts `want` bytes there;
/// nothing is mapped there afterwards.
fn unmap_counted(s2: &mut Stage2<HostMm>, ipa: u64, size: u64, cache: &mut MemCache, want: u64) {
    assert_eq!(s2.exclusive().mapped_bytes(ipa, size), Ok(want));
    assert_eq!(s2.exclusive().unmap(ipa, size, cache), Ok(()));
    assert_eq!(s2.shared().mapped_bytes(ipa, size), Ok(0));
}

#[test]
fn unmap_frees_emptied_tables_and_splits_partial_blocks() {
    let (mut s2, mut cache, mm) = tree();
    s2.exclusive()
        .map_pages(0, 4 * K4, 0x4000_0000, Prot::RW, &mut cache)
        .unwrap();
    s2.exclusive()
        .map(G1, G1, 0x8000_0000, Prot::RW, &mut cache)
        .unwrap();
    assert_eq!(s2.stats().table_pages, 2);
    // Part of the pages: tables stay.
    unmap_counted(&mut s2, 0, 2 * K4, &mut cache, 2 * K4);
    assert_eq!(leaf(&s2, 0).translate(0), None);
    assert_eq!(leaf(&s2, 2 * K4).translate(2 * K4), Some(0x4000_2000));
    assert_eq!(s2.stats().table_pages, 2);
    // The rest: both tables become empty and go.
    unmap_counted(&mut s2, 0, M2, &mut cache, 2 * K4);
    assert_eq!(s2.stats().table_pages, 0);
    // A 4 KiB hole in the 1 GiB block: split down to pages.
    unmap_counted(&mut s2, G1 + M2, K4, &mut cache, K4);
    assert_eq!(leaf(&s2, G1 + M2).translate(G1 + M2), None);
    assert_eq!(
        leaf(&s2, G1 + M2 + K4).translate(G1 + M2 + K4),
        Some(0x8020_1000)
    );
    assert_eq!(leaf(&s2, G1).level, l(2), "the untouched 2 MiB stay blocks");
    assert_eq!(s2.stats().table_pages, 2);
    unmap_counted(&mut s2, G1, G1, &mut cache, G1 - K4);
    assert_eq!(s2.stats().table_pages, 0);
    // Nothing there: unmapped entries are skipped, not errors.
    unmap_counted(&mut s2, 0, G1, &mut cache, 0);
    assert!(s2.stats().count(Outcome::Unmapped, Action::Next) > 0);
    finish(s2, cache, mm);
}

#[test]
fn wrprotect_owes_a_flush_until_completed() {
    let (mut s2, mut cache, mm) = tree();
    s2.exclusive()
        .map(0, 2 * M2, 0x4000_0000, Prot::RW, &mut cache)
        .unwrap();
    mm.take_events();
    let flush = s2.shared().wrprotect(0, 2 * M2).unwrap();
    assert!(flush.is_needed());
    assert_eq!(leaf(&s2, M2).prot(), Some(Prot::R));
    assert!(mm.take_events().is_empty(), "no TLBI until completed");
    s2.complete(flush);
    assert_eq!(
        mm.take_events(),
        [MmEvent::TlbiRange {
            addr: 0,
            size: 2 * M2
        }]
    );
    // Already read-only: unchanged, skipped, nothing owed.
    let again = s2.shared().wrprotect(0, 2 * M2).unwrap();
    assert!(!again.is_needed());
    s2.complete(again);
    assert!(s2.stats().count(Outcome::Unchanged, Action::Next) >= 2);
    finish(s2, cache, mm);
}

#[test]
fn pending_flushes_merge_into_one_covering_range() {
    let (mut s2, mut cache, mm) = tree();
    s2.exclusive()
        .map_pages(0, 8 * K4, 0x4000_0000, Prot::RW, &mut cache)
        .unwrap();
    mm.take_events();
    let a = s2.shared().wrprotect(K4, K4).unwrap();
    let none = s2.shared().wrprotect(K4, K4).unwrap(); // already read-only
    let b = s2.shared().wrprotect(5 * K4, 2 * K4).unwrap();
    assert!(!none.is_needed());
    let all = PendingFlush::NONE.merge(a).merge(none).merge(b);
    assert!(all.is_needed());
    s2.complete(all);
    assert_eq!(
        mm.take_events(),
        [MmEvent::TlbiRange {
            addr: K4,
            size: 6 * K4
        }],
        "one invalidation from the first page protected to the last"
    );
    assert!(!PendingFlush::NONE.merge(PendingFlush::NONE).is_needed());
    finish(s2, cache, mm);
}

#[test]
fn relax_and_mkyoung_in_fault_mode() {
    let (mut s2, mut cache, mm) = tree();
    s2.exclusive()
        .map_pages(0, K4, 0x4000_0000, Prot::R, &mut cache)
        .unwrap();
    // Clear the access flag, then set it from a fault.
    assert!(s2.shared().test_clear_young(0, K4, true).unwrap());
    assert!(!leaf(&s2, 0).pte.young());
    assert!(!s2.shared().test_clear_young(0, K4, false).unwrap());
    s2.fault().mkyoung(0).unwrap();
    assert!(leaf(&s2, 0).pte.young());
    // A second vCPU's access-flag fault finds it done: re-fault.
    assert_eq!(
        s2.fault().mkyoung(0),
        Err(Error::Refault {
            addr: 0,
            outcome: Outcome::Unchanged
        })
    );

    mm.take_events();
    s2.fault().relax_perms(0, Prot::W.union(Prot::X)).unwrap();
    assert_eq!(leaf(&s2, 0).prot(), Some(Prot::RWX));
    assert_eq!(
        mm.take_events(),
        [MmEvent::TlbiAddr {
            addr: 0,
            level: l(3)
        }]
    );
    assert_eq!(
        s2.fault().relax_perms(0, Prot::W),
        Err(Error::Refault {
            addr: 0,
            outcome: Outcome::Unchanged
        })
    );
    // The leaf is gone: a fault walk returns to the guest.
    assert_eq!(
        s2.fault().relax_perms(M2, Prot::W),
        Err(Error::Refault {
            addr: M2,
            outcome: Outcome::Unmapped
        })
    );
    finish(s2, cache, mm);
}

#[test]
fn fault_map_of_an_existing_mapping_refaults() {
    let (s2, mut cache, mm) = tree();
    s2.fault()
        .map(0, M2, 0x4000_0000, Prot::RW, &mut cache)
        .unwrap();
    assert_eq!(
        s2.fault().map(0, M2, 0x4000_0000, Prot::RW, &mut cache),
        Err(Error::Refault {
            addr: 0,
            outcome: Outcome::Unchanged
        })
    );
    // Only the permissions differ: left to the permission-fault path.
    assert_eq!(
        s2.fault().map(0, M2, 0x4000_0000, Prot::RWX, &mut cache),
        Err(Error::Refault {
            addr: 0,
            outcome: Outcome::Unchanged
        })
    );
    assert_eq!(leaf(&s2, 0).prot(), Some(Prot::RW));
    // Outside a fault the same request is a no-op success.
    assert!(s2
        .shared()
        .map(0, M2, 0x4000_0000, Prot::RW, &mut cache)
        .is_ok());
    finish(s2, cache, mm);
}

#[test]
fn a_locked_entry_is_a_lost_race() {
    let (mut s2, mut cache, mm) = tree();
    s2.exclusive()
        .map_pages(0, 2 * K4, 0x4000_0000, Prot::RW, &mut cache)
        .unwrap();
    poke(&mut s2, 0, Pte::LOCKED);
    s2.set_max_retries(3);
    // A fault walk returns to the guest at once.
    assert_eq!(
        s2.fault().relax_perms(0, Prot::X),
        Err(Error::Refault {
            addr: 0,
            outcome: Outcome::LostRace
        })
    );
    assert_eq!(
        s2.fault().map(0, K4, 0x4000_0000, Prot::RW, &mut cache),
        Err(Error::Refault {
            addr: 0,
            outcome: Outcome::LostRace
        })
    );
    // A write-protect waits for the holder, within its bound.
    assert_eq!(
        s2.shared().wrprotect(0, 2 * K4),
        Err(Error::RetriesExhausted {
            addr: 0,
            level: l(3),
            outcome: Outcome::LostRace
        })
    );
    let stats = s2.stats();
    assert_eq!(stats.count(Outcome::LostRace, Action::Retry), 4);
    assert_eq!(stats.count(Outcome::LostRace, Action::Exit), 2);
    assert_eq!(stats.retries_exhausted, 1);
    // Age skips it: the access flag is only a hint.
    assert!(s2.shared().test_clear_young(0, 2 * K4, true).unwrap());
    poke(&mut s2, 0, Pte::INVALID);
    finish(s2, cache, mm);
}

#[test]
fn no_memory_is_reported_and_changes_nothing_visible() {
    let (s2, mut cache, mm) = tree();
    let mut empty = MemCache::new();
    assert_eq!(
        s2.shared().map(0, K4, 0x4000_0000, Prot::RW, &mut empty),
        Err(Error::NoMemory)
    );
    assert_eq!(leaf(&s2, 0).translate(0), None);
    assert_eq!(s2.stats().table_pages, 0);
    // A block needs no table below a level-1 root's entry.
    assert!(s2.shared().map(G1, G1, G1, Prot::RW, &mut empty).is_ok());
    // Splitting needs a page.
    assert_eq!(s2.shared().split(G1, M2, &mut empty), Err(Error::NoMemory));
    assert_eq!(leaf(&s2, G1).level, l(1));
    assert_eq!(
        s2.shared().split(G1, M2, &mut cache),
        Ok(2),
        "1 GiB -> 2 MiB -> 4 KiB"
    );
    assert_eq!(leaf(&s2, G1).level, l(3));
    assert_eq!(
        leaf(&s2, G1 + M2).level,
        l(2),
        "only the range is split down"
    );
    finish(s2, cache, mm);
}

#[test]
fn ranges_are_checked() {
    let (s2, mut cache, mm) = tree();
    let limit = 1 << 40;
    assert_eq!(
        s2.shared().map(limit - K4, 2 * K4, 0, Prot::RW, &mut cache),
        Err(Error::OutOfRange {
            addr: limit - K4,
            size: 2 * K4,
            limit
        })
    );
    assert_eq!(
        s2.shared()
            .map(u64::MAX - K4 + 1, K4, 0, Prot::RW, &mut cache),
        Err(Error::OutOfRange {
            addr: u64::MAX - K4 + 1,
            size: K4,
            limit
        })
    );
    assert_eq!(
        s2.shared().map(0x10, K4, 0, Prot::RW, &mut cache),
        Err(Error::Misaligned {
            addr: 0x10,
            size: K4
        })
    );
    assert_eq!(
        s2.shared().map(0, 0, 0, Prot::RW, &mut cache),
        Err(Error::Misaligned { addr: 0, size: 0 })
    );
    assert_eq!(
        s2.shared().map(0, K4, 0x10, Prot::RW, &mut cache),
        Err(Error::Misaligned {
            addr: 0x10,
            size: K4
        })
    );
    assert!(matches!(
        Stage2::new(HostMm::new(), 52),
        Err(Error::UnsupportedSize { ia_bits: 52 })
    ));
    assert_eq!(s2.stats().table_pages, 0);
    finish(s2, cache, mm);
}

#[test]
fn cache_maintenance_follows_the_memory_type() {
    let (mut s2, mut cache, mm) = tree();
    mm.take_events();
    s2.exclusive()
        .map(0, M2, 0x4000_0000, Prot::RWX, &mut cache)
        .unwrap();
    s2.exclusive()
        .map(
            M2,
            K4,
            0x0900_0000,
            Prot::RW.union(Prot::DEVICE),
            &mut cache,
        )
        .unwrap();
    let ev: Vec<_> = mm
        .take_events()
        .into_iter()
        .filter(|e| !matches!(e, MmEvent::Alloc { .. }))
        .collect();
    assert_eq!(
        ev,
        [
            MmEvent::DcacheClean {
                pa: 0x4000_0000,
                size: M2
            },
            MmEvent::IcacheInval {
                pa: 0x4000_0000,
                size: M2
            },
        ],
        "normal memory is cleaned, device memory is not"
    );
    s2.shared().flush(0, 2 * M2).unwrap();
    assert_eq!(
        mm.take_events(),
        [MmEvent::DcacheClean {
            pa: 0x4000_0000,
            size: M2
        }]
    );
    // With FWB, no maintenance at all.
    s2.set_skip_cmo(true);
    s2.exclusive()
        .map(2 * M2, M2, 0x4020_0000, Prot::RW, &mut cache)
        .unwrap();
    assert!(mm
        .take_events()
        .iter()
        .all(|e| !matches!(e, MmEvent::DcacheClean { .. })));
    finish(s2, cache, mm);
}

#[test]
fn unlinked_subtrees_are_built_offline_and_freed() {
    let (s2, mut cache, mm) = tree();
    cache.topup(&mm, 513).unwrap();
    let before = cache.len();
    mm.take_events();
    let t = s2
        .create_unlinked(G1, 0x8000_0000, l(1), Prot::RW, true, &mut cache)
        .unwrap();
    assert_eq!(
        before - cache.len(),
        513,
        "a level-2 table and 512 level-3 tables"
    );
    assert!(mm.take_events().is_empty(), "no TLB or cache maintenance");
    // `pa` names the table page that was built: a live page whose first
    // entry is a table descriptor (a level-2 table of level-3 tables).
    assert!(mm.is_live(t.pa()), "pa {:#x} is no page", t.pa());
    // SAFETY: a live page of the host `MmOps`, linked nowhere and not
    // written by anyone while this thread reads it.
    let first = unsafe { mm.phys_to_virt(t.pa()).read_volatile() };
    assert_eq!(first & 0b11, 0b11, "entry 0 is a table: {first:#x}");
    // SAFETY-free check of the contents: walk it by linking nothing; just
    // count the tables and free them.
    assert_eq!(s2.stats().table_pages, 513);
    s2.free_unlinked(t);
    assert_eq!(s2.stats().table_pages, 0);
    // Misaligned PA.
    assert!(matches!(
        s2.create_unlinked(G1, 0x1000, l(1), Prot::RW, false, &mut cache),
        Err(Error::Misaligned { .. })
    ));
    finish(s2, cache, mm);
}

#[test]
fn geometry_matches_vtcr() {
    let (s2, cache, mm) = tree();
    let g = s2.geometry();
    assert_eq!((g.t0sz(), g.vtcr_sl0(), g.root_pages()), (24, 1, 2));
    assert_eq!(
        s2.root_pa() % (2 * K4),
        0,
        "concatenated root aligned to its size"
    );
    finish(s2, cache, mm);
}

/// Every entry of the tree, in address order, as (level, address, entry);
/// a table entry is shown without its address (two trees get different
/// pages), so two dumps are equal when the trees have the same shape and
/// the same leaves.
fn dump(s2: &Stage2<HostMm>) -> Vec<(u8, u64, u64)> {
    struct Dump(Vec<(u8, u64, u64)>);
    impl<M: MmOps> crate::walker::Visitor<M> for Dump {
        const POLICY: &'static crate::Policy = &crate::policy::GET_LEAF;
        fn visit(
            &mut self,
            ctx: &crate::walker::VisitCtx<'_, M>,
            kind: crate::VisitKind,
        ) -> Result<(), Outcome> {
            let bits = match kind {
                crate::VisitKind::Leaf => ctx.old.bits(),
                _ => u64::MAX, // a table
            };
            // Empty entries are many and say nothing a neighbour does not.
            if bits != 0 {
                let start = ctx.level.align_down(ctx.addr);
                self.0.push((ctx.level.get(), start, bits));
            }
            Ok(())
        }
    }
    let mut d = Dump(Vec::new());
    let flags = WalkFlags::LEAF.union(WalkFlags::TABLE_PRE);
    let limit = s2.geometry().limit();
    s2.tree
        .walk(0, limit, &mut d, Access::Shared, flags)
        .unwrap();
    d.0
}

/// Map, unmap, write-protect and aging visit runs of entries in one call, or
/// every entry on its own when runs are off: both give the same trees, the
/// same results and the same counters, from the same sequence of
/// operations (over empty ranges, over existing pages and blocks, in part
/// and whole, in every mode, with and without cache maintenance).
///
/// So that the comparison cannot quietly become runs against runs (or
/// single visits against single visits), the unmaps show which way each
/// tree went: without cache maintenance an unmap run invalidates its pages
/// with one range invalidation, a single visit each page by address.
#[test]
fn runs_and_single_visits_build_the_same_trees() {
    // Miri: the skipped-maintenance trees only (where both map and unmap
    // runs are taken), compared every few operations (each dump visits
    // every entry of every table).
    let modes: &[bool] = if cfg!(miri) { &[true] } else { &[false, true] };
    for &skip_cmo in modes {
        // A small cache (the sequence needs a few dozen tables): under
        // Miri, zeroing pages is most of a test's time.
        let small_tree = || {
            let mm = HostMm::new();
            let s2 = Stage2::new(mm.clone(), 40).unwrap();
            let mut cache = MemCache::new();
            cache.topup(&mm, 64).unwrap();
            (s2, cache, mm)
        };
        let (mut fast, mut fast_cache, fast_mm) = small_tree();
        let (mut slow, mut slow_cache, slow_mm) = small_tree();
        fast.set_skip_cmo(skip_cmo);
        slow.set_skip_cmo(skip_cmo);
        slow.set_runs(false);
        type Op = fn(&mut Stage2<HostMm>, &mut MemCache) -> String;
        let ops: &[(&str, Op)] = &[
            ("pages", |s, c| {
                format!(
                    "{:?}",
                    s.exclusive()
                        .map_pages(G1 + M2, 3 * M2, 0x80_0020_0000, Prot::RW, c)
                )
            }),
            ("same pages, shared", |s, c| {
                format!(
                    "{:?}",
                    s.shared()
                        .map_pages(G1 + M2, 3 * M2, 0x80_0020_0000, Prot::RW, c)
                )
            }),
            ("same page, fault", |s, c| {
                format!(
                    "{:?}",
                    s.fault().map(G1 + M2, K4, 0x80_0020_0000, Prot::RW, c)
                )
            }),
            ("other pages over some", |s, c| {
                format!(
                    "{:?}",
                    s.exclusive()
                        .map_pages(G1 + 2 * M2 - 8 * K4, M2, 0x90_0000_0000, Prot::R, c)
                )
            }),
            ("blocks over pages and holes", |s, c| {
                format!(
                    "{:?}",
                    s.exclusive().map(G1, 8 * M2, 0xa0_0000_0000, Prot::RW, c)
                )
            }),
            ("shared pages in a hole", |s, c| {
                format!(
                    "{:?}",
                    s.shared()
                        .map_pages(3 * G1, 2 * M2 + 5 * K4, 0xb0_0000_0000, Prot::RWX, c)
                )
            }),
            ("shared blocks", |s, c| {
                format!(
                    "{:?}",
                    s.shared().map(4 * G1, 4 * M2, 0xc0_0000_0000, Prot::RW, c)
                )
            }),
            ("a 1 GiB block", |s, c| {
                format!(
                    "{:?}",
                    s.exclusive().map(5 * G1, G1, 0xc0_4000_0000, Prot::RW, c)
                )
            }),
            ("device pages", |s, c| {
                format!(
                    "{:?}",
                    s.exclusive().map_pages(
                        6 * G1,
                        16 * K4,
                        0x0900_0000,
                        Prot::RW.union(Prot::DEVICE),
                        c
                    )
                )
            }),
            ("wrprotect across pages and blocks", |s, c| {
                let _ = c;
                let r = s.exclusive().wrprotect(G1 + M2 - 5 * K4, 4 * M2);
                let txt = format!("{r:?}");
                if let Ok(f) = r {
                    s.complete(f);
                }
                txt
            }),
            ("wrprotect again, shared, partly protected", |s, c| {
                let _ = c;
                let r = s.shared().wrprotect(G1, 6 * M2);
                let txt = format!("{r:?}");
                if let Ok(f) = r {
                    s.complete(f);
                }
                txt
            }),
            ("wrprotect holes and pages, shared", |s, c| {
                let _ = c;
                let r = s.shared().wrprotect(3 * G1 - M2, 3 * M2);
                let txt = format!("{r:?}");
                if let Ok(f) = r {
                    s.complete(f);
                }
                txt
            }),
            ("age, clearing, exclusive", |s, c| {
                let _ = c;
                format!("{:?}", s.exclusive().test_clear_young(G1, 6 * M2, true))
            }),
            ("age again, shared, over pages and holes", |s, c| {
                let _ = c;
                format!(
                    "{:?}",
                    s.shared().test_clear_young(3 * G1 - M2, 3 * M2, true)
                )
            }),
            ("age, not clearing, over old pages", |s, c| {
                let _ = c;
                format!("{:?}", s.shared().test_clear_young(3 * G1, M2, false))
            }),
            ("unmap in part", |s, c| {
                format!("{:?}", s.exclusive().unmap(G1 + 3 * K4, M2, c))
            }),
            ("unmap across blocks and tables", |s, c| {
                format!("{:?}", s.exclusive().unmap(G1 + M2 + 7 * K4, 6 * M2, c))
            }),
            ("unmap whole tables", |s, c| {
                format!("{:?}", s.exclusive().unmap(3 * G1, G1, c))
            }),
            ("unmap blocks and holes", |s, c| {
                format!("{:?}", s.exclusive().unmap(4 * G1 + M2, 2 * G1, c))
            }),
            ("unmap device pages", |s, c| {
                format!("{:?}", s.exclusive().unmap(6 * G1, 8 * K4, c))
            }),
            ("unmap everything", |s, c| {
                format!("{:?}", s.exclusive().unmap(0, 8 * G1, c))
            }),
        ];
        // Invalidations of one page by address, in the unmaps of each tree.
        let (mut fast_pages, mut slow_pages) = (0, 0);
        for (i, (what, op)) in ops.iter().enumerate() {
            let unmap = what.starts_with("unmap");
            let what = format!("{what} (skip_cmo {skip_cmo})");
            let got = op(&mut fast, &mut fast_cache);
            assert_eq!(got, op(&mut slow, &mut slow_cache), "{what}");
            // Only the fault over its own mapping fails: a re-fault.
            assert_eq!(
                got.contains("Err"),
                what.starts_with("same page, fault"),
                "{what}: {got}"
            );
            if !cfg!(miri) || i % 4 == 3 || i == ops.len() - 1 {
                assert_eq!(dump(&fast), dump(&slow), "{what}");
            }
            assert_eq!(fast.stats(), slow.stats(), "{what}");
            let (fast_ev, slow_ev) = (fast_mm.take_events(), slow_mm.take_events());
            let cmos = |ev: &[MmEvent]| -> Vec<MmEvent> {
                ev.iter()
                    .filter(|e| {
                        matches!(e, MmEvent::DcacheClean { .. } | MmEvent::IcacheInval { .. })
                    })
                    .copied()
                    .collect()
            };
            assert_eq!(
                cmos(&fast_ev),
                cmos(&slow_ev),
                "{what}: the same cache maintenance"
            );
            let frees = |ev: &[MmEvent]| {
                ev.iter()
                    .filter(|e| matches!(e, MmEvent::Free { .. }))
                    .count()
            };
            assert_eq!(
                frees(&fast_ev),
                frees(&slow_ev),
                "{what}: the same tables freed"
            );
            let page_tlbis = |ev: &[MmEvent]| {
                ev.iter()
                    .filter(
                        |e| matches!(e, MmEvent::TlbiAddr { level, .. } if *level == Level::LAST),
                    )
                    .count()
            };
            if unmap {
                fast_pages += page_tlbis(&fast_ev);
                slow_pages += page_tlbis(&slow_ev);
            }
        }
        if skip_cmo {
            assert_eq!(fast_pages, 0, "runs on: every page went in a run");
            assert!(slow_pages > 0, "runs off: pages went one by one");
        } else {
            assert_eq!(fast_pages, slow_pages, "runs declined: leaf by leaf");
        }
        assert!(dump(&fast).is_empty(), "everything unmapped");
        finish(fast, fast_cache, fast_mm);
        finish(slow, slow_cache, slow_mm);
    }
}
