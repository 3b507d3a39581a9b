//! The seed's case end to end on the host: vCPU threads write guest memory through a software MMU while the engine migrates it; with the walker's policy the copy always matches, with the wrong one it does not.
//!
//! The pieces are the real ones: [`Stage2`] on heap memory, the fault path's
//! [`s2fault::plan`] and [`s2fault::serve`], the [`DirtyLog`] and the
//! [`migrate`] engine. What is simulated is the hardware:
//!
//! - a vCPU's access is "translate, then write": it reads the leaf for the
//!   address (as a TLB fill would) and, if the leaf allows the write, stores
//!   to guest memory; otherwise it takes the fault the MMU would report and
//!   tries again;
//! - TLB invalidation completes only once every access that may have used
//!   the old translation has completed (what `TLBI; DSB ISH` guarantees):
//!   [`GateMm`] waits for each vCPU that is inside an access when the
//!   invalidation starts.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, RwLock as StdRwLock};
use std::time::{Duration, Instant};
use std::vec::Vec;

use pgtable::host::HostMm;
use pgtable::{Level, MmOps, Prot, Stage2, PAGE_SIZE};

use super::*;
use crate::guest_abort::{AbortKind, GuestAbort};
use crate::s2fault;
use crate::slots::MemSlot;

const BASE: u64 = 0x4000_0000;
/// One 2 MiB block of guest RAM: faults map it as a block, enabling the
/// log splits it.
const SIZE: u64 = 2 << 20;
const PAGES: u64 = SIZE / PAGE_SIZE;
const WORDS_PER_PAGE: u64 = PAGE_SIZE / 8;
/// Pages most writes go to, so that vCPUs, page aging and get-and-clear
/// meet on them.
const HOT_PAGES: u64 = 8;
const VCPUS: usize = 3;

/// One counter per vCPU: odd while it is inside an access.
type InFlight = Arc<[AtomicU64]>;

/// [`HostMm`] whose TLB invalidation waits for accesses in flight.
#[derive(Clone)]
struct GateMm {
    host: HostMm,
    in_flight: InFlight,
}

impl GateMm {
    /// Waits until no access that began before this call is still running.
    fn complete_accesses(&self) {
        // Pairs with the fence in `Vcpu::access`: either the vCPU's access
        // sees the changed entry, or this sees the access in flight.
        fence(SeqCst);
        for seq in self.in_flight.iter() {
            let at = seq.load(SeqCst);
            if at % 2 == 1 {
                while seq.load(SeqCst) == at {
                    std::thread::yield_now();
                }
            }
        }
    }
}

// SAFETY: every call is forwarded to `HostMm`, whose contract this keeps;
// TLB invalidation only waits longer before returning.
unsafe impl MmOps for GateMm {
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
        self.complete_accesses();
    }

    fn tlb_flush_range(&self, addr: u64, size: u64) {
        self.host.tlb_flush_range(addr, size);
        self.complete_accesses();
    }

    fn tlb_flush_all(&self) {
        self.host.tlb_flush_all();
        self.complete_accesses();
    }

    fn relax(&self) {
        std::thread::yield_now();
    }

    fn before_compare_and_swap(&self, _entry: &AtomicU64, _old: u64) {
        // Hold the migration's window open (see `MmOps`): between reading
        // an entry and swapping it, let the vCPUs and the page aging run.
        // Without this the races happen, but once in thousands of
        // migrations on a loaded machine.
        if MIGRATOR.get() {
            let n = SWAPS.get() + 1;
            SWAPS.set(n);
            if n.is_multiple_of(4) {
                std::thread::yield_now();
            }
        }
    }
}

std::thread_local! {
    /// Set on the thread that runs the migration engine.
    static MIGRATOR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Its compare-and-swaps so far (every fourth holds the window open).
    static SWAPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The tree behind std's reader-writer lock, which lets a waiting writer
/// in before new readers: the vCPUs here take the read lock for every
/// access, and would starve a lock that always admits readers.
struct Tree(StdRwLock<Stage2<GateMm>>);

impl Tree {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Stage2<GateMm>> {
        self.0.read().unwrap()
    }
}

impl Stage2Lock<GateMm> for Tree {
    fn with_shared<R>(&self, f: impl FnOnce(&Stage2<GateMm>) -> R) -> R {
        f(&self.read())
    }

    fn with_exclusive<R>(&self, f: impl FnOnce(&mut Stage2<GateMm>) -> R) -> R {
        f(&mut self.0.write().unwrap())
    }
}

/// The VM: its stage 2, its RAM slot and log, the guest memory.
struct Vm {
    s2: Tree,
    slot: MemSlot,
    log: DirtyLog,
    memory: Vec<AtomicU64>,
    in_flight: InFlight,
    pause_requested: AtomicBool,
    parked: AtomicUsize,
    stop: AtomicBool,
    /// Stores done by all vCPUs.
    writes: AtomicU64,
}

impl Vm {
    fn new() -> Vm {
        let in_flight: InFlight = (0..VCPUS).map(|_| AtomicU64::new(0)).collect();
        let mm = GateMm {
            host: HostMm::quiet(),
            in_flight: in_flight.clone(),
        };
        let slot = MemSlot {
            name: "ram",
            ipa: BASE,
            size: SIZE,
            host: 0x8000_0000,
            readonly: false,
        };
        Vm {
            s2: Tree(StdRwLock::new(Stage2::new(mm, 40).unwrap())),
            log: DirtyLog::new(&slot),
            slot,
            memory: (0..SIZE / 8).map(|_| AtomicU64::new(0)).collect(),
            in_flight,
            pause_requested: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            writes: AtomicU64::new(0),
        }
    }

    /// A vCPU between two accesses: park while paused.
    fn pause_point(&self) {
        if self.pause_requested.load(SeqCst) {
            self.parked.fetch_add(1, SeqCst);
            while self.pause_requested.load(SeqCst) {
                std::thread::yield_now();
            }
            self.parked.fetch_sub(1, SeqCst);
        }
    }
}

impl Vcpus for Vm {
    fn pause(&self) {
        self.pause_requested.store(true, SeqCst);
        while self.parked.load(SeqCst) < VCPUS && !self.stop.load(SeqCst) {
            std::thread::yield_now();
        }
    }

    fn resume(&self) {
        self.pause_requested.store(false, SeqCst);
    }
}

/// The destination of the migration.
struct Copy<'v> {
    vm: &'v Vm,
    dest: Vec<u64>,
}

impl Copier for Copy<'_> {
    fn copy(&mut self, offset: u64, len: u64) {
        let (from, to) = ((offset / 8) as usize, ((offset + len) / 8) as usize);
        for (d, s) in self.dest[from..to]
            .iter_mut()
            .zip(&self.vm.memory[from..to])
        {
            *d = s.load(SeqCst);
        }
    }

    fn first_difference(&self) -> Option<u64> {
        self.dest
            .iter()
            .zip(&self.vm.memory)
            .position(|(d, s)| *d != s.load(SeqCst))
            .map(|word| word as u64 * 8)
    }
}

/// A tiny xorshift, one per vCPU.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// vCPU `id`: writes a counter of its own to random words, mostly in the
/// hot pages, until told to stop.
fn run_vcpu(vm: &Vm, id: usize) {
    let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1);
    let mut cache = MemCache::new();
    let mut value = (id as u64) << 48;
    while !vm.stop.load(SeqCst) {
        vm.pause_point();
        let r = next(&mut rng);
        let page = if r.is_multiple_of(8) {
            r % PAGES
        } else {
            r % HOT_PAGES
        };
        let word = page * WORDS_PER_PAGE + (r >> 32) % WORDS_PER_PAGE;
        value += 1;
        access(vm, id, word, value, &mut cache);
    }
    cache.drain(vm.s2.read().mm());
}

/// One store to guest memory: translate, fault until allowed, write.
fn access(vm: &Vm, id: usize, word: u64, value: u64, cache: &mut MemCache) {
    let ipa = BASE + word * 8;
    let seq = &vm.in_flight[id];
    loop {
        // The lock first, then "inside an access": an exclusive walker
        // (holding the write lock) never waits for an access that waits
        // for the lock. (Hardware walks take no lock; exclusive walks here
        // simply never overlap an access.)
        let tree = vm.s2.read();
        seq.fetch_add(1, SeqCst); // odd: inside an access
        fence(SeqCst);
        let fault = {
            let leaf = tree.shared().get_leaf(ipa).unwrap();
            let kind = match leaf.prot() {
                None => Some(AbortKind::Translation),
                Some(_) if !leaf.pte.young() => Some(AbortKind::AccessFlag),
                Some(p) if !p.contains(Prot::W) => Some(AbortKind::Permission),
                Some(_) => None,
            };
            if kind.is_none() {
                vm.memory[word as usize].store(value, SeqCst);
                vm.writes.fetch_add(1, SeqCst);
            }
            kind.map(|kind| (kind, leaf.level.get()))
        };
        seq.fetch_add(1, SeqCst); // even: done
        drop(tree);
        let Some((kind, level)) = fault else {
            return;
        };
        // The fault path, as src/vm/fault.rs runs it: pages first, then the
        // read lock, the plan and a fault-mode walk.
        cache.topup(vm.s2.read().mm(), 4).unwrap();
        let tree = vm.s2.read();
        let abort = GuestAbort {
            kind,
            level: Some(level),
            write: true,
            instruction: false,
            s1ptw: false,
            ipa,
            far: ipa,
            access: None,
            il32: true,
        };
        let plan = s2fault::plan(&abort, &vm.slot, 1 << 30, vm.log.is_enabled());
        match s2fault::serve(&tree, plan, ipa, Some(&vm.log), cache) {
            Ok(_) | Err(Error::Refault { .. }) => {}
            Err(e) => panic!("vcpu{id}: {abort}: {e}"),
        }
    }
}

/// Stops and releases the vCPUs when dropped.
struct StopOnDrop<'v>(&'v Vm);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, SeqCst);
        self.0.resume();
    }
}

/// Remembers how many pages the final round copied.
struct LastRound(u64);

impl Observer for LastRound {
    fn round(&mut self, r: &RoundReport) {
        if r.phase == Phase::Final {
            self.0 = r.pages;
        }
    }
}

/// What a series of migrations saw.
#[derive(Debug, Default)]
struct Seen {
    migrations: u64,
    mismatches: u64,
    retried: u64,
    pages_copied: u64,
    final_pages: u64,
}

/// Migrates the running VM again and again until `enough` (or the time
/// bound), with the right write-protect or the wrong one.
fn run(protect: Protect, enough: impl Fn(&Seen) -> bool, limit: Duration) -> Seen {
    let vm = Vm::new();
    let cfg = Precopy {
        max_rounds: 8,
        stop_at: 0,
        age: true,
    };
    let mut seen = Seen::default();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for id in 0..VCPUS {
            let vm = &vm;
            scope.spawn(move || run_vcpu(vm, id));
        }
        // Page aging, as a host's reclaim runs beside a migration: the
        // vCPUs' access-flag faults then change entries that get-and-clear
        // is write-protecting, and some of its compare-and-swaps lose.
        {
            let vm = &vm;
            scope.spawn(move || {
                while !vm.stop.load(SeqCst) {
                    let tree = vm.s2.read();
                    let hot = HOT_PAGES * PAGE_SIZE;
                    tree.shared().test_clear_young(BASE, hot, true).unwrap();
                    tree.mm().tlb_flush_all();
                    drop(tree);
                    std::thread::yield_now();
                }
            });
        }
        // Stops the vCPUs however this thread leaves (a failed assertion
        // included), so the scope can join them.
        let _stop = StopOnDrop(&vm);
        MIGRATOR.set(true);
        while vm.writes.load(SeqCst) < 1000 {
            std::thread::yield_now();
        }
        let mut cache = MemCache::new();
        while !enough(&seen) && start.elapsed() < limit {
            let mut copy = Copy {
                vm: &vm,
                dest: vec![0; (SIZE / 8) as usize],
            };
            let mut last = LastRound(0);
            let report = migrate_with(
                &vm.s2,
                &vm.log,
                &cfg,
                &mut cache,
                (&vm, &mut copy, &mut last),
                protect,
            )
            .unwrap();
            let last = last.0;
            seen.migrations += 1;
            seen.mismatches += u64::from(report.mismatch.is_some());
            seen.retried += report.retried;
            seen.pages_copied += report.pages_copied;
            seen.final_pages += last;
        }
        cache.drain(vm.s2.read().mm());
    });
    let stats = vm.s2.read().stats();
    assert_eq!(stats.retries_exhausted, 0, "{seen:?}");
    seen
}

#[test]
fn every_write_reaches_the_copy() {
    // Until write-protects lost races and retried them, over several
    // migrations: a run where no race happened would prove nothing.
    let seen = run(
        Protect::Retrying,
        |s| s.migrations >= 8 && s.retried >= 10,
        Duration::from_secs(90),
    );
    eprintln!("right policy: {seen:?}");
    assert_eq!(seen.mismatches, 0, "a copy differed: {seen:?}");
    assert!(seen.retried > 0, "no lost race was retried: {seen:?}");
    assert!(
        seen.final_pages > 0,
        "the final round had nothing to copy: {seen:?}"
    );
}

#[test]
fn the_wrong_policy_copies_stale_memory() {
    // The negative control: skipping a lost race leaves a page writable and
    // unlogged, and the copy misses its later writes.
    let seen = run(
        Protect::SkippingLostRaces,
        |s| s.mismatches >= 1,
        Duration::from_secs(90),
    );
    eprintln!("wrong policy: {seen:?}");
    assert!(
        seen.mismatches > 0,
        "the negative control never bit: {seen:?}"
    );
    assert_eq!(seen.retried, 0, "the wrong policy never retries");
}
