//! Shared helpers of the integration tests: a reference model of a stage-2
//! tree, a traversal of the real tree through its public API, and `TestMm`,
//! an `MmOps` that counts retries, can quarantine freed pages to catch
//! use-after-free, and can run a hook inside a walk (to script a race).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pgtable::host::{HostMm, MmEvent};
use pgtable::{Leaf, Level, MmOps, Prot, Pte, Stage2};

pub const K4: u64 = 0x1000;
pub const M2: u64 = 0x20_0000;
pub const G1: u64 = 0x4000_0000;

pub fn lv(n: u8) -> Level {
    Level::new(n).unwrap()
}

// ---------------------------------------------------------------------------
// The model: IPA ranges -> (PA, permissions, access flag), 4 KiB granular.
// ---------------------------------------------------------------------------

/// What one page maps to in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub pa: u64,
    pub prot: Prot,
    pub young: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    end: u64,
    /// PA of the segment's first page; the rest follow contiguously.
    pa: u64,
    prot: Prot,
    young: bool,
}

/// What a range holds in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uniform {
    /// Nothing mapped anywhere in the range.
    Unmapped,
    /// Every page mapped, PAs contiguous from `pa`, same attributes.
    Mapped(Page),
    /// Anything else.
    Mixed,
}

/// Page-granular reference model as an interval map (start -> segment).
#[derive(Clone, Debug, Default)]
pub struct Model {
    segs: BTreeMap<u64, Seg>,
}

impl Model {
    fn split_at(&mut self, a: u64) {
        let Some((&start, &seg)) = self.segs.range(..a).next_back() else {
            return;
        };
        if seg.end > a {
            self.segs.insert(start, Seg { end: a, ..seg });
            self.segs.insert(
                a,
                Seg {
                    pa: seg.pa + (a - start),
                    ..seg
                },
            );
        }
    }

    /// Removes `[lo, hi)`; returns the bytes that were mapped.
    pub fn clear(&mut self, lo: u64, hi: u64) -> u64 {
        self.split_at(lo);
        self.split_at(hi);
        let keys: Vec<u64> = self.segs.range(lo..hi).map(|(k, _)| *k).collect();
        let mut bytes = 0;
        for k in keys {
            let s = self.segs.remove(&k).unwrap();
            bytes += s.end - k;
        }
        bytes
    }

    pub fn set(&mut self, lo: u64, hi: u64, pa: u64, prot: Prot, young: bool) {
        self.clear(lo, hi);
        self.segs.insert(
            lo,
            Seg {
                end: hi,
                pa,
                prot,
                young,
            },
        );
    }

    /// Applies `f` to the attributes of every mapped page in `[lo, hi)`.
    pub fn update(&mut self, lo: u64, hi: u64, f: impl Fn(&mut Prot, &mut bool)) {
        self.split_at(lo);
        self.split_at(hi);
        for (_, s) in self.segs.range_mut(lo..hi) {
            f(&mut s.prot, &mut s.young);
        }
    }

    pub fn get(&self, a: u64) -> Option<Page> {
        let (&start, s) = self.segs.range(..=a).next_back()?;
        (s.end > a).then(|| Page {
            pa: s.pa + (a - start),
            prot: s.prot,
            young: s.young,
        })
    }

    pub fn mapped_bytes(&self, lo: u64, hi: u64) -> u64 {
        let mut bytes = 0;
        if let Some((&start, s)) = self.segs.range(..lo).next_back() {
            if s.end > lo {
                bytes += s.end.min(hi) - lo;
            }
            let _ = start;
        }
        for (&start, s) in self.segs.range(lo..hi) {
            bytes += s.end.min(hi) - start;
        }
        bytes
    }

    pub fn uniform(&self, lo: u64, hi: u64) -> Uniform {
        // The segment holding `lo`, if any.
        let first = self
            .segs
            .range(..=lo)
            .next_back()
            .filter(|(_, s)| s.end > lo);
        let Some((&start, &seg)) = first else {
            // Unmapped at lo: all unmapped only if no segment starts inside.
            return if self.segs.range(lo..hi).next().is_none() {
                Uniform::Unmapped
            } else {
                Uniform::Mixed
            };
        };
        let base = Page {
            pa: seg.pa + (lo - start),
            prot: seg.prot,
            young: seg.young,
        };
        let mut covered = seg.end;
        while covered < hi {
            match self.segs.get(&covered) {
                Some(s)
                    if s.pa == base.pa + (covered - lo)
                        && s.prot == base.prot
                        && s.young == base.young =>
                {
                    covered = s.end;
                }
                _ => return Uniform::Mixed,
            }
        }
        Uniform::Mapped(base)
    }

    /// The mapped pieces of `[lo, hi)`: (start, end, what `start` maps to).
    pub fn segments(&self, lo: u64, hi: u64) -> Vec<(u64, u64, Page)> {
        let mut out = Vec::new();
        let first = self
            .segs
            .range(..lo)
            .next_back()
            .filter(|(_, s)| s.end > lo);
        for (&start, s) in first.into_iter().chain(self.segs.range(lo..hi)) {
            let a = start.max(lo);
            out.push((
                a,
                s.end.min(hi),
                Page {
                    pa: s.pa + (a - start),
                    prot: s.prot,
                    young: s.young,
                },
            ));
        }
        out
    }

    /// Every mapped range, for a final comparison.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.segs.iter().map(|(k, s)| (*k, s.end)).collect()
    }
}

// ---------------------------------------------------------------------------
// Reading the real tree through the public API.
// ---------------------------------------------------------------------------

/// Start and size of the entry a `get_leaf` answer describes.
pub fn span(ipa: u64, leaf: &Leaf) -> (u64, u64) {
    let size = leaf.level.entry_size();
    (leaf.level.align_down(ipa), size)
}

/// Stage-2 permissions a leaf grants (R, W, X, DEVICE).
pub fn leaf_prot(leaf: &Leaf) -> Option<Prot> {
    leaf.prot()
}

/// Every entry (leaf or invalid) the walk to each address of `[lo, hi)`
/// ends at, in address order: `(start of its span, leaf)`.
pub fn leaves_in<M: MmOps>(s2: &Stage2<M>, lo: u64, hi: u64) -> Vec<(u64, Leaf)> {
    leaves_in_capped(s2, lo, hi, usize::MAX)
}

/// The first `cap` entries of [`leaves_in`].
pub fn leaves_in_capped<M: MmOps>(
    s2: &Stage2<M>,
    lo: u64,
    hi: u64,
    cap: usize,
) -> Vec<(u64, Leaf)> {
    let mut out = Vec::new();
    let mut a = lo;
    while a < hi && out.len() < cap {
        let leaf = s2.shared().get_leaf(a).unwrap();
        let (start, size) = span(a, &leaf);
        out.push((start, leaf));
        a = start + size;
    }
    out
}

/// Checks one entry against the model over its whole span.
pub fn check_leaf(model: &Model, start: u64, leaf: &Leaf) -> Result<(), String> {
    let size = leaf.level.entry_size();
    let expect = model.uniform(start, start + size);
    if leaf.pte.bits() == POISON {
        return Err(format!(
            "entry at {start:#x} reads the poison of a freed page"
        ));
    }
    match (leaf.translate(start), expect) {
        (None, Uniform::Unmapped) if !leaf.pte.is_locked() => Ok(()),
        (Some(pa), Uniform::Mapped(p))
            if pa == p.pa && leaf.prot() == Some(p.prot) && leaf.pte.young() == p.young =>
        {
            Ok(())
        }
        (got, want) => Err(format!(
            "leaf at {start:#x} (level {}, {:?}) translates to {:?} prot {:?} young {}, \
             model over its span: {want:?}",
            leaf.level.get(),
            leaf.pte,
            got.map(|p| format!("{p:#x}")),
            leaf.prot(),
            leaf.pte.young()
        )),
    }
}

/// A walk of the whole tree through `get_leaf`.
#[derive(Debug, Default)]
pub struct Shape {
    /// Table pages below the root, identified by (level of their entries,
    /// first input address).
    pub tables: BTreeSet<(u8, u64)>,
    /// Tables in which no entry is valid.
    pub empty_tables: Vec<(u8, u64)>,
    /// Valid leaves by level.
    pub leaves_by_level: [u64; 4],
    /// Leaves (start, size) outside the given window.
    pub outside: Vec<u64>,
}

/// Walks `[0, limit)` with `get_leaf`, calling `f` on every entry reached,
/// and works out which table pages must exist for those answers.
pub fn shape<M: MmOps>(s2: &Stage2<M>, window: (u64, u64), mut f: impl FnMut(u64, &Leaf)) -> Shape {
    let g = s2.geometry();
    let start_level = g.start_level.get();
    let mut shape = Shape::default();
    let mut nonempty: BTreeSet<(u8, u64)> = BTreeSet::new();
    let mut a = 0;
    while a < g.limit() {
        let leaf = s2.shared().get_leaf(a).unwrap();
        let (start, size) = span(a, &leaf);
        let l = leaf.level.get();
        // The tables on the path: entries at level `t` live in a table that
        // spans one entry of level `t - 1`.
        for t in (start_level + 1)..=l {
            let base = lv(t - 1).align_down(a);
            shape.tables.insert((t, base));
            if t < l || leaf.pte.is_valid() {
                nonempty.insert((t, base));
            }
        }
        if leaf.pte.is_valid() {
            shape.leaves_by_level[l as usize] += 1;
            if start < window.0 || start + size > window.1 {
                shape.outside.push(start);
            }
        }
        f(start, &leaf);
        a = start + size;
    }
    shape.empty_tables = shape.tables.difference(&nonempty).copied().collect();
    shape
}

// ---------------------------------------------------------------------------
// TLB invalidations: which removed translations they reach.
// ---------------------------------------------------------------------------

/// Whether the recorded invalidation `ev` removes the TLB entry of the leaf
/// at `start` of `level` (one TLB entry spans the whole leaf):
/// - an invalidation by address reaches the entry translating that
///   address, and only with the right level hint (a wrong hint may leave
///   the entry, as the architecture allows);
/// - a range invalidation reaches the leaf if the range holds it whole
///   (every operation invalidates whole entries);
/// - invalidating everything reaches everything.
pub fn tlbi_reaches(ev: &MmEvent, start: u64, level: Level) -> bool {
    let size = level.entry_size();
    match *ev {
        MmEvent::TlbiAddr { addr, level: hint } => {
            hint == level && start <= addr && addr - start < size
        }
        MmEvent::TlbiRange { addr, size: n } => {
            addr <= start && start.checked_add(size).is_some_and(|end| end <= addr + n)
        }
        MmEvent::TlbiAll => true,
        _ => false,
    }
}

/// The valid leaves among `leaves` (`(start, leaf)`, as [`leaves_in`] gives
/// them) that no invalidation in `events` reaches, as `(start, level)`:
/// those for which no event satisfies [`tlbi_reaches`].
///
/// Not by asking every event about every leaf: unmapping a gigabyte of
/// pages entry by entry removes 262,144 leaves and records as many
/// invalidations and cleans, and that product of a proptest case ran for
/// minutes. Instead: invalidations by address as a set of the leaves they
/// reach, ranges sorted by start with the furthest end so far (a leaf is
/// inside some range if the ranges starting at or before it reach past
/// its end). `unreached_leaves_agrees_with_tlbi_reaches` checks it against
/// the definition.
pub fn unreached_leaves(leaves: &[(u64, Leaf)], events: &[MmEvent]) -> Vec<(u64, u8)> {
    if events.contains(&MmEvent::TlbiAll) {
        return Vec::new();
    }
    let by_addr: BTreeSet<(u64, u8)> = events
        .iter()
        .filter_map(|e| match *e {
            MmEvent::TlbiAddr { addr, level } => Some((level.align_down(addr), level.get())),
            _ => None,
        })
        .collect();
    let mut ranges: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match *e {
            MmEvent::TlbiRange { addr, size } => Some((addr, addr.saturating_add(size))),
            _ => None,
        })
        .collect();
    ranges.sort_unstable();
    // reach[i]: the furthest end of ranges[..=i].
    let reach: Vec<u64> = ranges
        .iter()
        .scan(0u64, |far, &(_, end)| {
            *far = (*far).max(end);
            Some(*far)
        })
        .collect();
    let in_a_range = |start: u64, end: u64| {
        let starting_before = ranges.partition_point(|&(a, _)| a <= start);
        starting_before > 0 && reach[starting_before - 1] >= end
    };
    leaves
        .iter()
        .filter(|(_, lf)| lf.pte.is_valid())
        .filter(|(start, lf)| {
            let level = lf.level;
            let end = start.checked_add(level.entry_size());
            !by_addr.contains(&(*start, level.get()))
                && !end.is_some_and(|end| in_a_range(*start, end))
        })
        .map(|(start, lf)| (*start, lf.level.get()))
        .collect()
}

/// The parts of the ranges `[start, end)` that no invalidation in `events`
/// covers, when the leaves' levels are unknown (an EL2 tree only
/// translates): an invalidation by address is taken to cover the whole
/// entry of its level hint, a range its range. Looser than
/// [`unreached_leaves`], but it still sees a leaf left out entirely.
pub fn uncovered_ranges(ranges: &[(u64, u64)], events: &[MmEvent]) -> Vec<(u64, u64)> {
    let mut covered: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match *e {
            MmEvent::TlbiAddr { addr, level } => {
                let start = level.align_down(addr);
                Some((start, start.saturating_add(level.entry_size())))
            }
            MmEvent::TlbiRange { addr, size } => Some((addr, addr.saturating_add(size))),
            MmEvent::TlbiAll => Some((0, u64::MAX)),
            _ => None,
        })
        .collect();
    covered.sort_unstable();
    let mut out = Vec::new();
    for &(lo, hi) in ranges {
        // Walk the sorted covered intervals from `lo`, noting the gaps.
        let mut at = lo;
        for &(a, b) in &covered {
            if at >= hi {
                break;
            }
            if b <= at {
                continue;
            }
            if a > at {
                out.push((at, a.min(hi)));
            }
            at = at.max(b);
        }
        if at < hi {
            out.push((at, hi));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// TestMm: HostMm plus retry counting, quarantine and hooks.
// ---------------------------------------------------------------------------

/// What a freed (quarantined) table page is filled with. Invalid and not
/// locked, so a walker that reads it sees an ordinary invalid entry; any
/// write into it, or any read of it reported back, shows a use after free.
pub const POISON: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// A maintenance call seen by a hook, made by the walker while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    TlbiAddr(u64, Level),
    TlbiRange(u64, u64),
    TlbiAll,
    Dcache(u64, u64),
    Icache(u64, u64),
    Free(u64),
    Relax,
}

type Hook = Box<dyn FnMut(Ev) + Send>;

std::thread_local! {
    /// How many more times the shared compare-and-swaps of this thread may
    /// yield waiting for another thread to change their entry, and how many
    /// more such races they may bring about (see [`hold_swap_window`]).
    static SWAP_WINDOW: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Makes the shared compare-and-swaps of the calling thread (on a
/// [`TestMm`] tree) wait, between the walker's read of the entry and its
/// swap, until another thread changes the entry, yielding the thread: `polls`
/// yields in all, and no more waiting once `races` swaps were made to lose
/// that way (a swap that always waited would lose every retry too). A race
/// test that needs lost swaps then gets them on a loaded machine, where its
/// threads seldom run at the same time, as the hypervisor's
/// `migrate.window=` knob does under QEMU. `(0, 0)`: no wait.
pub fn hold_swap_window(polls: u32, races: u32) {
    SWAP_WINDOW.set((polls, races));
}

struct TestInner {
    host: HostMm,
    relaxes: AtomicU64,
    /// Freed pages kept allocated and poisoned: pa -> count.
    quarantine: Option<Mutex<HashMap<u64, usize>>>,
    hook: Mutex<Option<Hook>>,
    hooked: AtomicBool,
}

/// [`HostMm`] with a retry counter (`relax` is called once per retry), an
/// optional quarantine of freed pages and an optional hook.
#[derive(Clone)]
pub struct TestMm(Arc<TestInner>);

impl TestMm {
    pub fn new(host: HostMm, quarantine: bool) -> TestMm {
        TestMm(Arc::new(TestInner {
            host,
            relaxes: AtomicU64::new(0),
            quarantine: quarantine.then(|| Mutex::new(HashMap::new())),
            hook: Mutex::new(None),
            hooked: AtomicBool::new(false),
        }))
    }

    pub fn host(&self) -> &HostMm {
        &self.0.host
    }

    /// Retries the walker made (calls of `relax`).
    pub fn relaxes(&self) -> u64 {
        self.0.relaxes.load(Ordering::Relaxed)
    }

    /// Pages allocated and not freed (quarantined pages count as freed).
    pub fn live_pages(&self) -> usize {
        let q: usize = self
            .0
            .quarantine
            .as_ref()
            .map_or(0, |q| q.lock().unwrap().values().sum());
        self.0.host.live_pages() - q
    }

    /// Runs `hook` on every maintenance call until `clear_hook`. The hook
    /// does not run while it runs (a walk inside it is not hooked).
    pub fn set_hook(&self, hook: impl FnMut(Ev) + Send + 'static) {
        *self.0.hook.lock().unwrap() = Some(Box::new(hook));
        self.0.hooked.store(true, Ordering::SeqCst);
    }

    pub fn clear_hook(&self) {
        self.0.hooked.store(false, Ordering::SeqCst);
        *self.0.hook.lock().unwrap() = None;
    }

    fn event(&self, ev: Ev) {
        if !self.0.hooked.load(Ordering::SeqCst) {
            return;
        }
        let taken = self.0.hook.lock().unwrap().take();
        if let Some(mut hook) = taken {
            hook(ev);
            let mut slot = self.0.hook.lock().unwrap();
            if slot.is_none() && self.0.hooked.load(Ordering::SeqCst) {
                *slot = Some(hook);
            }
        }
    }

    /// Whether `pa` was freed (and is held in quarantine).
    pub fn is_quarantined(&self, pa: u64) -> bool {
        self.0
            .quarantine
            .as_ref()
            .is_some_and(|q| q.lock().unwrap().contains_key(&pa))
    }

    /// Frees the quarantined pages for real; returns the pages whose poison
    /// was overwritten (someone wrote into a freed page).
    pub fn release_quarantine(&self) -> Vec<u64> {
        let Some(q) = &self.0.quarantine else {
            return Vec::new();
        };
        let pages: Vec<(u64, usize)> = q.lock().unwrap().drain().collect();
        let mut dirty = Vec::new();
        for (pa, count) in pages {
            let words = count * 512;
            // SAFETY: the page is still allocated (quarantined, never given
            // back to the heap) and every access to it is atomic.
            let entries = unsafe {
                std::slice::from_raw_parts(pa as *const std::sync::atomic::AtomicU64, words)
            };
            if entries.iter().any(|e| e.load(Ordering::Acquire) != POISON) {
                dirty.push(pa);
            }
            // SAFETY: allocated by `host` with this count, freed once (the
            // quarantine checked for double frees) and unused by anyone.
            unsafe { self.0.host.free_pages(pa, count) };
        }
        dirty
    }
}

// SAFETY: every allocation comes from the wrapped `HostMm`, which meets the
// contract; quarantined pages stay allocated until `release_quarantine`.
unsafe impl MmOps for TestMm {
    fn zalloc_pages(&self, count: usize) -> Option<u64> {
        self.0.host.zalloc_pages(count)
    }

    unsafe fn free_pages(&self, pa: u64, count: usize) {
        self.event(Ev::Free(pa));
        match &self.0.quarantine {
            None => {
                // SAFETY: forwarded from our caller.
                unsafe { self.0.host.free_pages(pa, count) }
            }
            Some(q) => {
                assert!(self.0.host.is_live(pa), "free of {pa:#x}: never allocated");
                let was = q.lock().unwrap().insert(pa, count);
                assert!(was.is_none(), "double free of {pa:#x}");
                // SAFETY: the page is allocated (checked) and, by the
                // caller's contract, nobody uses it: poisoning it is ours to
                // do; walkers only ever access entries atomically.
                let entries = unsafe {
                    std::slice::from_raw_parts(
                        pa as *const std::sync::atomic::AtomicU64,
                        count * 512,
                    )
                };
                for e in entries {
                    e.store(POISON, Ordering::Release);
                }
            }
        }
    }

    fn phys_to_virt(&self, pa: u64) -> *mut u64 {
        self.0.host.phys_to_virt(pa)
    }

    fn dcache_clean_inval_poc(&self, pa: u64, size: u64) {
        self.event(Ev::Dcache(pa, size));
        self.0.host.dcache_clean_inval_poc(pa, size);
    }

    fn icache_inval_pou(&self, pa: u64, size: u64) {
        self.event(Ev::Icache(pa, size));
        self.0.host.icache_inval_pou(pa, size);
    }

    fn tlb_flush_addr(&self, addr: u64, level: Level) {
        self.event(Ev::TlbiAddr(addr, level));
        self.0.host.tlb_flush_addr(addr, level);
    }

    fn tlb_flush_range(&self, addr: u64, size: u64) {
        self.event(Ev::TlbiRange(addr, size));
        self.0.host.tlb_flush_range(addr, size);
    }

    fn tlb_flush_all(&self) {
        self.event(Ev::TlbiAll);
        self.0.host.tlb_flush_all();
    }

    fn relax(&self) {
        self.0.relaxes.fetch_add(1, Ordering::Relaxed);
        self.event(Ev::Relax);
        self.0.host.relax();
    }

    fn before_compare_and_swap(&self, entry: &AtomicU64, old: u64) {
        let (mut polls, races) = SWAP_WINDOW.get();
        while races > 0 && polls > 0 {
            if entry.load(Ordering::Relaxed) != old {
                SWAP_WINDOW.set((polls, races - 1));
                return;
            }
            std::thread::yield_now();
            polls -= 1;
            SWAP_WINDOW.set((polls, races));
        }
    }
}

/// A pointer to a tree that a hook may use while a *shared* walk of the same
/// tree runs (never while an exclusive handle is borrowed).
#[derive(Clone, Copy)]
pub struct TreeRef(usize);

impl TreeRef {
    pub fn new<M: MmOps>(s2: &Stage2<M>) -> TreeRef {
        TreeRef(s2 as *const Stage2<M> as usize)
    }

    /// # Safety
    ///
    /// The tree is alive, not moved, and only borrowed shared meanwhile.
    pub unsafe fn get<'a, M: MmOps>(self) -> &'a Stage2<M> {
        // SAFETY: the caller's contract.
        unsafe { &*(self.0 as *const Stage2<M>) }
    }
}

/// A tiny deterministic generator for the thread tests.
#[derive(Clone, Copy)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A leaf's pte, for messages.
pub fn show(p: Pte) -> String {
    format!("{p:?}")
}
