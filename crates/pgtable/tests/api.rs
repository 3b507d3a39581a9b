//! Targeted checks of what the public operations promise, each the
//! smallest case of a property the model tests state in general.

mod common;

use common::*;
use pgtable::host::HostMm;
use pgtable::{Error, Hyp, MemCache, MmOps, Prot, Stage2};

/// A 40-bit stage-2 tree and a cache of `pages` pages.
fn stage2(pages: usize) -> (Stage2<HostMm>, MemCache, HostMm) {
    let mm = HostMm::new();
    let s2 = Stage2::new(mm.clone(), 40).unwrap();
    let mut cache = MemCache::new();
    cache.topup(&mm, pages).unwrap();
    (s2, cache, mm)
}

/// Drops the tree and the cache: every page comes back.
fn finish(s2: Stage2<HostMm>, mut cache: MemCache, mm: HostMm) {
    drop(s2);
    cache.drain(&mm);
    assert_eq!(mm.live_pages(), 0, "pages leaked");
}

/// Output addresses are 48 bits (no LPA). A PA that does not fit must be
/// refused, not silently truncated by the descriptor's address mask.
#[test]
fn stage2_map_refuses_output_addresses_beyond_48_bits() {
    let (s2, mut cache, mm) = stage2(8);
    let r = s2.shared().map(0, K4, 1 << 48, Prot::RW, &mut cache);
    let got = s2.shared().get_leaf(0).unwrap().translate(0);
    assert!(
        r.is_err(),
        "map to PA 1<<48 returned {r:?}; IPA 0 now translates to {got:x?}"
    );
    // The last page of the range crosses the limit.
    let r = s2
        .shared()
        .map(M2, 2 * K4, (1 << 48) - K4, Prot::RW, &mut cache);
    let got = s2.shared().get_leaf(M2 + K4).unwrap().translate(M2 + K4);
    assert!(
        r.is_err(),
        "map crossing PA 1<<48 returned {r:?}; its second page translates to {got:x?}"
    );
    finish(s2, cache, mm);
}

/// Same for the EL2 tree.
#[test]
fn hyp_map_refuses_output_addresses_beyond_48_bits() {
    let mm = HostMm::new();
    let mut hyp = Hyp::new(mm.clone(), 39).unwrap();
    let r = hyp.map(0, K4, 1 << 48, Prot::RW);
    let got = hyp.translate(0);
    assert!(
        r.is_err(),
        "map to PA 1<<48 returned {r:?}; VA 0 now translates to {got:x?}"
    );
    drop(hyp);
    assert_eq!(mm.live_pages(), 0);
}

/// A map over a different mapping is refused, *and changes nothing*: the
/// part of the range before the conflicting entry stays unmapped.
#[test]
fn hyp_conflict_changes_nothing() {
    let mm = HostMm::new();
    let mut hyp = Hyp::new(mm.clone(), 39).unwrap();
    hyp.map(2 * K4, K4, 0x8000_2000, Prot::RW).unwrap();
    let tables = hyp.stats().table_pages;
    let r = hyp.map(K4, 2 * K4, 0x9000_1000, Prot::RW);
    assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
    assert_eq!(hyp.translate(2 * K4), Ok(Some((0x8000_2000, Prot::RW))));
    assert_eq!(
        hyp.translate(K4),
        Ok(None),
        "the failed map left its first page mapped"
    );
    assert_eq!(hyp.stats().table_pages, tables);
    hyp.destroy();
    assert_eq!(mm.live_pages(), 0);
}

/// "Mapping what is already mapped the same way is a no-op" (`Hyp::map`),
/// also for part of a block.
#[test]
fn hyp_same_mapping_inside_a_block_is_a_noop() {
    let mm = HostMm::new();
    let mut hyp = Hyp::new(mm.clone(), 39).unwrap();
    hyp.map(M2, M2, 0x8020_0000, Prot::RW).unwrap();
    assert_eq!(
        hyp.map(M2, M2, 0x8020_0000, Prot::RW).map(|m| m.total()),
        Ok(0)
    );
    let r = hyp.map(M2 + K4, K4, 0x8020_1000, Prot::RW);
    assert!(r.is_ok(), "same mapping, part of the block: {r:?}");
    hyp.destroy();
    assert_eq!(mm.live_pages(), 0);
}

/// A subtree whose construction runs out of cache pages is freed, and the
/// page accounting comes back to zero.
#[test]
fn create_unlinked_out_of_pages_frees_what_it_built() {
    let (s2, mut cache, mm) = stage2(100);
    let r = s2.create_unlinked(G1, 0x80_0000_0000, lv(1), Prot::RW, true, &mut cache);
    assert_eq!(r.map(|t| t.pa()), Err(Error::NoMemory));
    assert_eq!(s2.stats().table_pages, 0);
    assert_eq!(
        mm.live_pages(),
        2 + cache.len(),
        "root (2 pages) + what is left in the cache"
    );
    finish(s2, cache, mm);
}

/// `root_pa` is the page `VTTBR_EL2.BADDR` will hold, so it must be the
/// root the walks write: a live allocation of the tree's `MmOps`, aligned
/// to the concatenated root's size, whose entry 1 describes the 1 GiB
/// block mapped at IPA 1 GiB.
#[test]
fn root_pa_is_the_root_the_walks_write() {
    let (s2, mut cache, mm) = stage2(8);
    let root = s2.root_pa();
    assert!(mm.is_live(root), "root_pa {root:#x} is no allocation");
    assert_eq!(root % (2 * K4), 0, "concatenated root aligned to its size");
    s2.shared()
        .map(G1, G1, 0x80_4000_0000, Prot::RW, &mut cache)
        .unwrap();
    // SAFETY: `root` is a live root of 2 pages of the host `MmOps`
    // (checked above), so its entry 1 is in bounds; the tree is held by
    // this thread alone.
    let entry = unsafe { mm.phys_to_virt(root).add(1).read_volatile() };
    assert_eq!(entry & 0b11, 0b01, "entry 1 is a block: {entry:#x}");
    assert_eq!(entry & 0xffff_ffff_f000 & !(G1 - 1), 0x80_4000_0000);
    finish(s2, cache, mm);
}

/// The block and its output must each be aligned: an IPA and a PA
/// misaligned by the same offset are refused too, before any page is
/// taken from the cache.
#[test]
fn create_unlinked_refuses_ipa_and_pa_misaligned_alike() {
    let (s2, mut cache, mm) = stage2(4);
    for (ipa, pa) in [
        (G1 + K4, 0x80_4000_0000 + K4),
        (G1 + M2, 0x80_4000_0000 + M2),
        (G1 + K4, 0x80_4000_0000),
        (G1, 0x80_4000_0000 + K4),
    ] {
        let r = s2.create_unlinked(ipa, pa, lv(1), Prot::RW, false, &mut cache);
        assert!(
            matches!(r, Err(Error::Misaligned { .. })),
            "ipa {ipa:#x} pa {pa:#x}: {:?}",
            r.map(|t| t.pa())
        );
        assert_eq!(cache.len(), 4, "a refused build took a page");
    }
    finish(s2, cache, mm);
}
