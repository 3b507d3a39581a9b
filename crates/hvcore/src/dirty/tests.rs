//! Unit and property tests of the dirty log on a real stage-2 tree in heap memory.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::vec::Vec;

use pgtable::host::{HostMm, MmEvent};
use pgtable::{Level, MemCache, Prot, Stage2, PAGE_SIZE};
use proptest::prelude::*;

use super::*;
use crate::guest_abort::{AbortKind, GuestAbort};
use crate::s2fault::{self, Plan};

const M2: u64 = 2 << 20;
const BASE: u64 = 0x4000_0000;
const HOST: u64 = 0x8000_0000;

fn slot(size: u64) -> MemSlot {
    MemSlot {
        name: "ram",
        ipa: BASE,
        size,
        host: HOST,
        readonly: false,
    }
}

/// A tree with the slot mapped by 2 MiB blocks, as faults map it.
fn mapped(size: u64) -> (Stage2<HostMm>, MemCache, HostMm) {
    let mm = HostMm::new();
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    let mut cache = MemCache::new();
    cache.topup(&mm, 64).unwrap();
    s2.exclusive()
        .map(BASE, size, HOST, Prot::RW, &mut cache)
        .unwrap();
    (s2, cache, mm)
}

fn prot(s2: &Stage2<HostMm>, ipa: u64) -> Prot {
    s2.shared().get_leaf(ipa).unwrap().prot().unwrap()
}

fn abort(kind: AbortKind, level: u8, write: bool, ipa: u64) -> GuestAbort {
    GuestAbort::at(kind, level, write, false, ipa)
}

/// Faults one write may take before the test gives up on it: a missing
/// mapping, a clear access flag and a missing write permission, each
/// served once, with room to spare. A fault path that never makes the
/// page writable fails the test here instead of hanging it.
const MAX_FAULTS: u32 = 8;

/// A guest write to `ipa`, as the fault path serves it: (re)fault until the
/// page is writable. Returns how many faults it took.
fn write(s2: &Stage2<HostMm>, log: &DirtyLog, s: &MemSlot, ipa: u64, cache: &mut MemCache) -> u32 {
    let mut faults = 0;
    loop {
        let leaf = s2.shared().get_leaf(ipa).unwrap();
        let fault = match leaf.prot() {
            None => abort(AbortKind::Translation, leaf.level.get(), true, ipa),
            Some(_) if !leaf.pte.young() => {
                abort(AbortKind::AccessFlag, leaf.level.get(), true, ipa)
            }
            Some(p) if !p.contains(Prot::W) => {
                abort(AbortKind::Permission, leaf.level.get(), true, ipa)
            }
            Some(_) => return faults,
        };
        faults += 1;
        assert!(
            faults <= MAX_FAULTS,
            "a write to {ipa:#x} still faults ({fault}) after {MAX_FAULTS} faults served: \
             the fault path does not make the page writable"
        );
        let plan = s2fault::plan(&fault, s, 1 << 30, log.is_enabled());
        cache.topup(s2.mm(), 4).unwrap();
        match s2fault::serve(s2, plan, ipa, Some(log), cache) {
            Ok(_) | Err(Error::Refault { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn runs_of_set_bits() {
    let runs = |w| Runs(w).collect::<Vec<_>>();
    assert_eq!(runs(0), []);
    assert_eq!(runs(1), [(0, 1)]);
    assert_eq!(runs(u64::MAX), [(0, 64)]);
    assert_eq!(runs(0b1110_0110), [(1, 2), (5, 3)]);
    assert_eq!(runs(1 << 63 | 1 << 62 | 1), [(0, 1), (62, 2)]);
}

#[test]
fn marks_are_per_page_and_inside_the_slot() {
    let log = DirtyLog::new(&slot(8 * PAGE_SIZE + 64 * PAGE_SIZE));
    assert_eq!(log.size(), 72 * PAGE_SIZE);
    log.mark(BASE + 3 * PAGE_SIZE + 17);
    log.mark(BASE + 70 * PAGE_SIZE);
    log.mark(BASE + 72 * PAGE_SIZE); // one past the end: ignored
    log.mark(BASE - 1); // below: ignored
    assert!(log.is_dirty(BASE + 3 * PAGE_SIZE));
    assert!(!log.is_dirty(BASE + 4 * PAGE_SIZE));
    assert!(log.is_dirty(BASE + 70 * PAGE_SIZE + 5));
    assert_eq!(log.dirty_pages(), 2);
}

#[test]
fn enable_splits_blocks_and_protects_the_slot() {
    let size = 4 * M2;
    let (mut s2, mut cache, mm) = mapped(size);
    let log = DirtyLog::new(&slot(size));
    assert_eq!(log.pages_to_enable(), 4 + 1);
    log.mark(BASE); // stale: enabling clears the log
    mm.take_events();
    let enabled = log.enable(&mut s2, &mut cache).unwrap();
    assert_eq!(
        enabled,
        Enabled {
            blocks_split: 4,
            protected: true
        }
    );
    assert!(log.is_enabled());
    assert_eq!(log.dirty_pages(), 0);
    for ipa in (BASE..BASE + size).step_by(PAGE_SIZE as usize * 97) {
        let leaf = s2.shared().get_leaf(ipa).unwrap();
        assert_eq!(leaf.level, Level::LAST, "split to pages at {ipa:#x}");
        assert_eq!(leaf.prot(), Some(Prot::R), "protected at {ipa:#x}");
        assert_eq!(leaf.translate(ipa), Some(HOST + (ipa - BASE)));
    }
    // The protection took effect: a TLB invalidation after the last change.
    let events = mm.take_events();
    assert!(
        matches!(
            events.last(),
            Some(MmEvent::TlbiRange { .. } | MmEvent::TlbiAll)
        ),
        "{events:?}"
    );
}

#[test]
fn a_write_fault_relaxes_then_marks_and_get_and_clear_protects_again() {
    let size = 2 * M2;
    let s = slot(size);
    let (mut s2, mut cache, mm) = mapped(size);
    let log = DirtyLog::new(&s);
    log.enable(&mut s2, &mut cache).unwrap();

    let pages = [
        BASE + 5 * PAGE_SIZE,
        BASE + 9 * PAGE_SIZE,
        BASE + M2 + PAGE_SIZE,
    ];
    for ipa in pages {
        assert_eq!(
            write(&s2, &log, &s, ipa + 8, &mut cache),
            1,
            "one permission fault"
        );
        assert!(prot(&s2, ipa).contains(Prot::W));
        assert!(log.is_dirty(ipa));
    }
    // Writing again costs nothing until the log is cleared.
    assert_eq!(write(&s2, &log, &s, pages[0], &mut cache), 0);

    mm.take_events();
    let mut out = DirtyPages::new();
    let cleared = log.get_and_clear(&s2, &mut out).unwrap();
    assert_eq!(cleared.pages, 3);
    assert_eq!(cleared.walks, 3, "one walk per run of dirty pages");
    assert_eq!(cleared.retried, 0);
    assert_eq!(out.ipas().collect::<Vec<_>>(), pages);
    assert_eq!(out.count(), 3);
    for ipa in pages {
        assert_eq!(prot(&s2, ipa), Prot::R, "protected again");
    }
    assert_eq!(log.dirty_pages(), 0);
    // The invalidation happened before get-and-clear returned.
    assert!(mm
        .take_events()
        .iter()
        .any(|e| matches!(e, MmEvent::TlbiRange { .. } | MmEvent::TlbiAll)));
    // An empty round owes nothing and takes nothing.
    let cleared = log.get_and_clear(&s2, &mut out).unwrap();
    assert_eq!((cleared.pages, cleared.walks), (0, 0));
    assert!(mm.take_events().is_empty());
    // The next write faults and is logged again.
    assert_eq!(write(&s2, &log, &s, pages[1], &mut cache), 1);
    assert!(log.is_dirty(pages[1]));
}

#[test]
fn translation_faults_on_a_logged_slot_map_pages() {
    let size = 2 * M2;
    let s = slot(size);
    let mm = HostMm::new();
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    let mut cache = MemCache::new();
    let log = DirtyLog::new(&s);
    cache.topup(&mm, log.pages_to_enable()).unwrap();
    log.enable(&mut s2, &mut cache).unwrap(); // nothing mapped yet
    let ipa = BASE + M2 + 7 * PAGE_SIZE;
    assert_eq!(write(&s2, &log, &s, ipa, &mut cache), 1);
    let leaf = s2.shared().get_leaf(ipa).unwrap();
    assert_eq!(leaf.level, Level::LAST, "a page, not a block");
    assert!(log.is_dirty(ipa));
    assert_eq!(log.dirty_pages(), 1);
}

#[test]
fn disabling_brings_blocks_back_on_write_faults() {
    let size = 2 * M2;
    let s = slot(size);
    let (mut s2, mut cache, _mm) = mapped(size);
    let log = DirtyLog::new(&s);
    log.enable(&mut s2, &mut cache).unwrap();
    let tables = s2.stats().table_pages;
    log.disable();
    let ipa = BASE + M2 + 3 * PAGE_SIZE;
    // The fault is at level 3 on a page; the plan maps the 2 MiB block.
    let fault = abort(AbortKind::Permission, 3, true, ipa);
    let plan = s2fault::plan(&fault, &s, 1 << 30, log.is_enabled());
    assert!(matches!(plan.plan, Plan::Map { size: M2, .. }), "{plan:?}");
    assert_eq!(write(&s2, &log, &s, ipa, &mut cache), 1);
    let leaf = s2.shared().get_leaf(ipa).unwrap();
    assert_eq!(leaf.level.get(), 2, "the block is back");
    assert_eq!(leaf.prot(), Some(Prot::RW));
    assert_eq!(leaf.translate(ipa), Some(HOST + (ipa - BASE)));
    assert_eq!(s2.stats().table_pages, tables - 1, "its page table is gone");
    assert!(!log.is_dirty(ipa), "not logged any more");
    // The other block stays in pages until written.
    assert_eq!(s2.shared().get_leaf(BASE).unwrap().level, Level::LAST);
}

#[test]
fn a_failed_get_and_clear_gives_every_page_back() {
    // A slot the tree cannot translate (beyond its 32-bit IPA space): the
    // write-protect walk fails with a range error.
    let mm = HostMm::new();
    let s2 = Stage2::new(mm, 32).unwrap();
    let log = DirtyLog::new(&MemSlot {
        name: "far",
        ipa: 1 << 33,
        size: 128 * PAGE_SIZE,
        host: HOST,
        readonly: false,
    });
    let marked = [
        1 << 33,
        (1 << 33) + 70 * PAGE_SIZE,
        (1 << 33) + 127 * PAGE_SIZE,
    ];
    for ipa in marked {
        log.mark(ipa);
    }
    let mut out = DirtyPages::new();
    let err = log.get_and_clear(&s2, &mut out).unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    assert_eq!(out.count(), 0);
    assert_eq!(log.dirty_pages(), 3, "nothing lost");
    for ipa in marked {
        assert!(log.is_dirty(ipa));
    }
}

#[test]
fn the_log_knows_its_slot() {
    let log = DirtyLog::new(&slot(130 * PAGE_SIZE));
    assert_eq!((log.base(), log.size()), (BASE, 130 * PAGE_SIZE));
    // Room for every word of the bitmap (three here), so that a
    // get-and-clear into it allocates nothing; no page in it yet.
    let pages = DirtyPages::for_log(&log);
    assert!(pages.words.capacity() >= 3, "{}", pages.words.capacity());
    assert_eq!(pages.base, BASE);
    assert_eq!(pages.count(), 0);
    assert_eq!(pages.ipas().count(), 0);
}

/// [`HostMm`] whose next `lose` shared compare-and-swaps lose: right before
/// each, the entry's access flag is toggled, as a vCPU's access-flag fault
/// or a page ager racing with the walk would.
#[derive(Clone)]
struct LosingMm {
    host: HostMm,
    lose: Arc<AtomicU32>,
}

/// The access flag of a stage-2 descriptor (bit 10).
const AF: u64 = 1 << 10;

// SAFETY: every call is forwarded to `HostMm`, whose contract this keeps;
// the hook only changes a descriptor's access flag, as hardware may.
unsafe impl MmOps for LosingMm {
    fn zalloc_pages(&self, count: usize) -> Option<u64> {
        self.host.zalloc_pages(count)
    }

    unsafe fn free_pages(&self, pa: u64, count: usize) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.host.free_pages(pa, count) }
    }

    fn phys_to_virt(&self, pa: u64) -> *mut u64 {
        self.host.phys_to_virt(pa)
    }

    fn dcache_clean_inval_poc(&self, pa: u64, size: u64) {
        self.host.dcache_clean_inval_poc(pa, size);
    }

    fn icache_inval_pou(&self, pa: u64, size: u64) {
        self.host.icache_inval_pou(pa, size);
    }

    fn tlb_flush_addr(&self, addr: u64, level: Level) {
        self.host.tlb_flush_addr(addr, level);
    }

    fn tlb_flush_range(&self, addr: u64, size: u64) {
        self.host.tlb_flush_range(addr, size);
    }

    fn tlb_flush_all(&self) {
        self.host.tlb_flush_all();
    }

    fn before_compare_and_swap(&self, entry: &AtomicU64, old: u64) {
        let left = self.lose.load(Ordering::SeqCst);
        if left > 0 {
            self.lose.store(left - 1, Ordering::SeqCst);
            entry.store(old ^ AF, Ordering::SeqCst);
        }
    }
}

/// A slot of 2 MiB in pages, logged, with `pages` written (dirty and
/// writable), on a tree whose shared swaps can be made to lose.
fn logged_with_writes(pages: &[u64]) -> (Stage2<LosingMm>, DirtyLog, Arc<AtomicU32>) {
    let lose = Arc::new(AtomicU32::new(0));
    let mm = LosingMm {
        host: HostMm::new(),
        lose: lose.clone(),
    };
    let mut s2 = Stage2::new(mm.clone(), 40).unwrap();
    let s = slot(M2);
    let mut cache = MemCache::new();
    cache.topup(&mm, 4).unwrap();
    s2.exclusive()
        .map_pages(BASE, M2, HOST, Prot::R, &mut cache)
        .unwrap();
    let log = DirtyLog::new(&s);
    log.enable(&mut s2, &mut cache).unwrap();
    for &ipa in pages {
        s2.shared().relax_perms(ipa, Prot::W).unwrap();
        log.mark(ipa);
    }
    cache.drain(&mm);
    (s2, log, lose)
}

#[test]
fn get_and_clear_retries_lost_races_and_counts_them() {
    let pages = [BASE + 3 * PAGE_SIZE, BASE + 40 * PAGE_SIZE];
    let (s2, log, lose) = logged_with_writes(&pages);
    // The first three write-protect swaps lose to an access-flag update.
    lose.store(3, Ordering::SeqCst);
    let mut out = DirtyPages::new();
    let cleared = log.get_and_clear(&s2, &mut out).unwrap();
    assert_eq!(
        cleared,
        Cleared {
            pages: 2,
            walks: 2,
            retried: 3
        }
    );
    assert_eq!(out.ipas().collect::<Vec<_>>(), pages);
    for ipa in pages {
        let leaf = s2.shared().get_leaf(ipa).unwrap();
        assert_eq!(leaf.prot(), Some(Prot::R), "{ipa:#x} protected after all");
    }
    // Retries the tree saw before this call are not this call's.
    let cleared = log.get_and_clear(&s2, &mut out).unwrap();
    assert_eq!(cleared, Cleared::default());
}

#[test]
fn get_and_clear_out_of_retries_gives_every_page_back() {
    let pages = [BASE + 3 * PAGE_SIZE, BASE + 70 * PAGE_SIZE];
    let (mut s2, log, lose) = logged_with_writes(&pages);
    s2.set_max_retries(2);
    // No write-protect swap ever wins: the first walk runs out of retries,
    // before the second page was even looked at.
    let mut out = DirtyPages::new();
    lose.store(u32::MAX, Ordering::SeqCst);
    let err = log.get_and_clear(&s2, &mut out).unwrap_err();
    assert!(matches!(err, Error::RetriesExhausted { .. }), "{err}");
    assert_eq!(out.count(), 0, "nothing returned");
    for ipa in pages {
        assert!(log.is_dirty(ipa), "{ipa:#x} marked again: copied later");
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64),
    Clear,
}

fn op(pages: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..pages).prop_map(Op::Write),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a model (the set of pages written since they were last
    /// taken): every get-and-clear returns exactly that set, and afterwards
    /// exactly the pages written since the last take are writable.
    #[test]
    fn get_and_clear_returns_what_was_written(ops in proptest::collection::vec(op(1024), 1..200)) {
        let size = 2 * M2;
        let s = slot(size);
        let (mut s2, mut cache, _mm) = mapped(size);
        let log = DirtyLog::new(&s);
        log.enable(&mut s2, &mut cache).unwrap();
        let mut model = BTreeSet::new();
        let mut out = DirtyPages::new();
        for op in ops {
            match op {
                Op::Write(page) => {
                    let ipa = BASE + page * PAGE_SIZE;
                    let faults = write(&s2, &log, &s, ipa, &mut cache);
                    // A fault exactly when the page was not dirty already.
                    prop_assert_eq!(faults == 1, model.insert(ipa));
                }
                Op::Clear => {
                    log.get_and_clear(&s2, &mut out).unwrap();
                    let got: BTreeSet<u64> = out.ipas().collect();
                    prop_assert_eq!(&got, &model);
                    model.clear();
                }
            }
        }
        for page in 0..size / PAGE_SIZE {
            let ipa = BASE + page * PAGE_SIZE;
            prop_assert_eq!(prot(&s2, ipa).contains(Prot::W), model.contains(&ipa));
            prop_assert_eq!(log.is_dirty(ipa), model.contains(&ipa));
        }
    }
}
