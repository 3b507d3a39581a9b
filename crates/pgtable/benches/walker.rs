//! pgtable's walker against `aarch64-paging` 0.12 (the baseline), on 1 GiB.
//!
//! Every group is one operation on 1 GiB, at one granularity:
//!
//! | group | what |
//! |-------|------|
//! | `map_4k` | map 1 GiB with 4 KiB pages into an empty tree |
//! | `map_2m` | map 1 GiB with 2 MiB blocks (2 MiB- but not 1 GiB-aligned) |
//! | `map_1g` | map 1 GiB with one 1 GiB block |
//! | `walk_4k`, `walk_2m` | read every leaf of 1 GiB mapped with pages / blocks |
//! | `wrprotect_4k`, `wrprotect_2m` | remove write permission from every leaf |
//! | `unmap_4k`, `unmap_2m` | unmap 1 GiB mapped with pages / blocks |
//!
//! Inside a group the functions are:
//!
//! - `pgtable`: [`pgtable::Stage2`] (40-bit IPA, level-1 root), exclusive
//!   operations, data-cache maintenance skipped (as with FEAT_S2FWB).
//! - `aarch64_paging`: `aarch64_paging::Mapping` in its `Stage2` regime
//!   (level-1 root), not active (so it does no TLB maintenance).
//!
//!   These two are the headline: the same descriptor format, tree shape,
//!   exclusive access, and table pages pre-allocated outside the timed part
//!   on both sides (our `MemCache`, a pool in its `Translation`).
//! - `pgtable_shared` (walk, wrprotect): the same on a shared handle
//!   (compare-and-swap per changed entry), the dirty-logging path.
//! - `pgtable_hyp` / `aarch64_paging_el2` (map, unmap): our EL2 stage-1
//!   [`pgtable::Hyp`] against `aarch64_paging`'s `El2` regime, both
//!   39-bit, both allocating table pages from the heap inside the
//!   operation. `Hyp` always uses the largest leaves, so its 4 KiB case
//!   maps a physical range that is page- but not block-aligned (same for
//!   the baseline).
//!
//! Only the operation is timed (`iter_custom`): building, filling and
//! freeing trees and topping up caches happen outside the clock.
//!
//! Table pages come from the heap and go back to it the same way on both
//! sides: our [`HostMm::untracked`] allocates and frees exactly as the
//! baseline's `Pages` below, without the live-page map (a hash map under a
//! mutex, for the tests' leak and double-free checks) that `HostMm::quiet`
//! keeps. That map cost ours about 200 instructions per freed table
//! inside the clock, which the baseline did not pay. TLB and cache
//! operations are still counted (an atomic add each): ours are live
//! tables, the baseline's are not, so it does none.
//! `scripts/bench-ratios.sh` prints the ratios from criterion's output.

use std::alloc::{dealloc, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use aarch64_paging::descriptor::{
    El23Attributes, PagingAttributes, PhysicalAddress, Stage2Attributes,
};
use aarch64_paging::paging::{
    Constraints, El2 as ApEl2, MemoryRegion, PageTable, Stage2 as ApStage2, Translation,
};
use aarch64_paging::Mapping;
use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, Criterion};
use pgtable::host::HostMm;
use pgtable::{pages_needed_for_map, Hyp, Mapped, MemCache, Prot, Stage2};

const PAGE: u64 = 1 << 12;
const MIB2: u64 = 1 << 21;
const GIB: u64 = 1 << 30;
/// Size of every benchmarked range.
const SIZE: u64 = GIB;
/// 2 MiB- but not 1 GiB-aligned: 2 MiB blocks (or pages), across two
/// level-1 entries.
const BASE: u64 = GIB + MIB2;
/// 1 GiB-aligned: one 1 GiB block.
const BASE_1G: u64 = GIB;
/// Output addresses are the input addresses (identity).
const IA_BITS_S2: u32 = 40;
const VA_BITS_HYP: u32 = 39;
/// aarch64-paging's root level for a 39-bit space (same shape as ours).
const AP_ROOT_LEVEL: usize = 1;

/// Stage-2 leaf attributes equal to `pgtable`'s for `Prot::RW` (normal
/// write-back, inner shareable, read-write, access flag, execute-never).
const AP_S2_RW: Stage2Attributes = Stage2Attributes::VALID
    .union(Stage2Attributes::MEMATTR_NORMAL_INNER_WB)
    .union(Stage2Attributes::MEMATTR_NORMAL_OUTER_WB)
    .union(Stage2Attributes::S2AP_ACCESS_RW)
    .union(Stage2Attributes::SH_INNER)
    .union(Stage2Attributes::ACCESS_FLAG)
    .union(Stage2Attributes::XN);

/// EL2 stage-1 leaf attributes equal to `pgtable`'s `El2` for `Prot::RW`.
const AP_EL2_RW: El23Attributes = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_1)
    .union(El23Attributes::INNER_SHAREABLE)
    .union(El23Attributes::USER_RES1)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::XN);

// ---------------------------------------------------------------------------
// Timing

/// Times `op` only: `setup` and `teardown` run outside the clock. The
/// states are set up `batch` at a time and their operations timed as one
/// stretch: reading the clock costs about as much as the smallest
/// operations (one 1 GiB block), so a clock read around each of them
/// measured mostly the clock, on both sides alike.
fn timed<S, R>(
    iters: u64,
    batch: u64,
    mut setup: impl FnMut() -> S,
    mut op: impl FnMut(&mut S) -> R,
    mut teardown: impl FnMut(S),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch.max(1));
        let mut states: Vec<S> = (0..n).map(|_| setup()).collect();
        let start = Instant::now();
        for state in &mut states {
            black_box(op(black_box(state)));
        }
        total += start.elapsed();
        states.into_iter().for_each(&mut teardown);
        left -= n;
    }
    total
}

/// States per clock reading: one for the large operations (pages; a state
/// holds 2 MiB of tables), more for the small ones.
fn batch(pages: bool) -> u64 {
    if pages {
        1
    } else {
        32
    }
}

// ---------------------------------------------------------------------------
// pgtable

/// The table pages mapping `[base, base + SIZE)` (identity) needs in an
/// empty tree, with pages only or with the largest blocks: what both
/// sides get pre-allocated.
fn tables_for(base: u64, pages: bool) -> usize {
    let level = pgtable::Level::new(AP_ROOT_LEVEL as u8).expect("level");
    let max_block = if pages { PAGE } else { GIB };
    pages_needed_for_map(level, base, SIZE, base, max_block)
}

/// An empty stage-2 tree and a cache holding the pages mapping
/// `[base, base + SIZE)` needs.
fn s2_empty(base: u64, pages: bool) -> (Stage2<HostMm>, MemCache) {
    let mut s2 = Stage2::new(HostMm::untracked(), IA_BITS_S2).expect("stage-2 tree");
    s2.set_skip_cmo(true);
    assert_eq!(s2.geometry().start_level.get() as usize, AP_ROOT_LEVEL);
    let mut cache = MemCache::new();
    cache
        .topup(s2.mm(), tables_for(base, pages))
        .expect("cache topup");
    (s2, cache)
}

/// A stage-2 tree with `[base, base + SIZE)` mapped read-write, with pages
/// only or with the largest blocks.
///
/// Then one spare page goes into the cache, so a live page sits above the
/// tables in the heap, as the baseline's root does above its tables (it
/// takes its root last from its pool). Without it, freeing our emptied
/// level-2 table merged every freed table into the top of the heap, and
/// glibc gave 2 MiB back to the kernel inside the clock (about 400 µs of
/// `brk` and page zapping): the host allocator's doing, which the
/// baseline escaped only by its page order.
fn s2_mapped(base: u64, pages: bool) -> (Stage2<HostMm>, MemCache) {
    let (mut s2, mut cache) = s2_empty(base, pages);
    s2_map(&mut s2, &mut cache, base, pages);
    cache.topup(s2.mm(), 1).expect("spare page");
    (s2, cache)
}

fn s2_map(s2: &mut Stage2<HostMm>, cache: &mut MemCache, base: u64, pages: bool) -> Mapped {
    let ops = s2.exclusive();
    if pages {
        ops.map_pages(base, SIZE, base, Prot::RW, cache)
    } else {
        ops.map(base, SIZE, base, Prot::RW, cache)
    }
    .expect("map")
}

fn s2_teardown((s2, mut cache): (Stage2<HostMm>, MemCache)) {
    cache.drain(s2.mm());
    s2.destroy();
}

/// An empty EL2 tree.
fn hyp_empty() -> Hyp<HostMm> {
    Hyp::new(HostMm::untracked(), VA_BITS_HYP).expect("EL2 tree")
}

// ---------------------------------------------------------------------------
// aarch64-paging

/// aarch64-paging's table pages: first from a pool filled before the timed
/// part (as our `MemCache`), then from the heap; freed to the heap.
struct Pages<A: PagingAttributes> {
    pool: Vec<NonNull<PageTable<A>>>,
}

impl<A: PagingAttributes> Pages<A> {
    fn new(prefill: usize) -> Self {
        Pages {
            pool: (0..prefill).map(|_| PageTable::new()).collect(),
        }
    }

    /// Gives a table back to the heap.
    ///
    /// # Safety
    ///
    /// `table` came from `PageTable::new`, is not freed yet, and nothing
    /// uses it any more.
    unsafe fn free(table: NonNull<PageTable<A>>) {
        // SAFETY: `PageTable::new` allocates with the global allocator and
        // `Layout::new::<PageTable<A>>()`; the caller guarantees the rest.
        unsafe { dealloc(table.as_ptr().cast(), Layout::new::<PageTable<A>>()) };
    }
}

impl<A: PagingAttributes> Drop for Pages<A> {
    fn drop(&mut self) {
        for table in self.pool.drain(..) {
            // SAFETY: pool pages came from `PageTable::new` and were never
            // handed out.
            unsafe { Self::free(table) };
        }
    }
}

impl<A: PagingAttributes> Translation<A> for Pages<A> {
    fn allocate_table(&mut self) -> (NonNull<PageTable<A>>, PhysicalAddress) {
        let table = self.pool.pop().unwrap_or_else(PageTable::new);
        (table, PhysicalAddress(table.as_ptr() as usize))
    }

    unsafe fn deallocate_table(&mut self, page_table: NonNull<PageTable<A>>) {
        // SAFETY: the caller guarantees it came from `allocate_table` (so
        // from `PageTable::new`), is not freed yet and is unused.
        unsafe { Self::free(page_table) };
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<A>> {
        NonNull::new(pa.0 as *mut PageTable<A>).expect("table at physical address 0")
    }
}

type ApS2 = Mapping<Pages<Stage2Attributes>, ApStage2>;
type ApEl2Map = Mapping<Pages<El23Attributes>, ApEl2>;

fn region(base: u64) -> MemoryRegion {
    MemoryRegion::new(base as usize, (base + SIZE) as usize)
}

fn pages_only(pages: bool) -> Constraints {
    if pages {
        Constraints::NO_BLOCK_MAPPINGS
    } else {
        Constraints::empty()
    }
}

/// An empty stage-2 `Mapping` whose pool holds as many pages as our cache
/// (plus the root).
fn ap_s2_empty(base: u64, pages: bool) -> ApS2 {
    let pool = Pages::new(tables_for(base, pages) + 1);
    Mapping::new(pool, AP_ROOT_LEVEL, ApStage2)
}

fn ap_s2_map(m: &mut ApS2, base: u64, pages: bool) {
    m.map_range(
        &region(base),
        PhysicalAddress(base as usize),
        AP_S2_RW,
        pages_only(pages),
    )
    .expect("map_range");
}

fn ap_s2_mapped(base: u64, pages: bool) -> ApS2 {
    let mut m = ap_s2_empty(base, pages);
    ap_s2_map(&mut m, base, pages);
    m
}

/// Unmaps as aarch64-paging documents it: `map_range` without `VALID`.
fn ap_unmap<R, A>(m: &mut Mapping<Pages<A>, R>, base: u64)
where
    A: PagingAttributes,
    R: aarch64_paging::paging::TranslationRegime<Attributes = A>,
{
    m.map_range(
        &region(base),
        PhysicalAddress(0),
        A::empty(),
        Constraints::empty(),
    )
    .expect("unmap");
}

fn ap_el2_empty() -> ApEl2Map {
    Mapping::new(Pages::new(0), AP_ROOT_LEVEL, ApEl2)
}

// ---------------------------------------------------------------------------
// Benchmarks

/// Both sides build the same trees: the same leaves at the same levels.
fn check_shapes() {
    let leaves = |pages: bool| if pages { SIZE / PAGE } else { SIZE / MIB2 };
    for (base, pages, level) in [(BASE, true, 3), (BASE, false, 2), (BASE_1G, false, 1)] {
        let (mut s2, mut cache) = s2_empty(base, pages);
        let mapped = s2_map(&mut s2, &mut cache, base, pages);
        let lv = pgtable::Level::new(level).expect("level");
        let want = if level == 1 { 1 } else { leaves(pages) };
        assert_eq!(mapped.at(lv), want, "pgtable {base:#x} pages={pages}");
        s2_teardown((s2, cache));
        let m = ap_s2_mapped(base, pages);
        let mut seen = 0;
        m.walk_range(&region(base), &mut |_, d, l| {
            assert!(d.is_valid() && l == usize::from(level));
            seen += 1;
            Ok(())
        })
        .expect("walk_range");
        assert_eq!(seen, want, "aarch64-paging {base:#x} pages={pages}");
    }
}

/// Short and small: the machine has two shared cores.
fn settings(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// Times `op` on one long-lived `state`, after an untimed `prepare`.
fn timed_on<S, R>(
    iters: u64,
    state: &mut S,
    mut prepare: impl FnMut(&mut S),
    mut op: impl FnMut(&mut S) -> R,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        prepare(state);
        let start = Instant::now();
        black_box(op(black_box(&mut *state)));
        total += start.elapsed();
    }
    total
}

fn bench_map(c: &mut Criterion) {
    for (name, base, pages) in [
        ("map_4k", BASE, true),
        ("map_2m", BASE, false),
        ("map_1g", BASE_1G, false),
    ] {
        let mut g = c.benchmark_group(name);
        settings(&mut g);
        g.bench_function("pgtable", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    batch(pages),
                    || s2_empty(base, pages),
                    |(s2, cache)| s2_map(s2, cache, base, pages),
                    s2_teardown,
                )
            });
        });
        g.bench_function("aarch64_paging", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    batch(pages),
                    || ap_s2_empty(base, pages),
                    |m| ap_s2_map(m, base, pages),
                    drop,
                )
            });
        });
        if base == BASE {
            // `Hyp` always uses the largest leaves: for 4 KiB, a page- but
            // not block-aligned physical address (the baseline gets the same).
            let pa = if pages { base + PAGE } else { base };
            g.bench_function("pgtable_hyp", |b| {
                b.iter_custom(|n| {
                    timed(
                        n,
                        batch(pages),
                        hyp_empty,
                        |h| h.map(base, SIZE, pa, Prot::RW).expect("hyp map"),
                        drop,
                    )
                });
            });
            g.bench_function("aarch64_paging_el2", |b| {
                b.iter_custom(|n| {
                    timed(
                        n,
                        batch(pages),
                        ap_el2_empty,
                        |m| {
                            m.map_range(
                                &region(base),
                                PhysicalAddress(pa as usize),
                                AP_EL2_RW,
                                Constraints::empty(),
                            )
                            .expect("el2 map_range");
                        },
                        drop,
                    )
                });
            });
        }
        g.finish();
    }
}

/// A read-only walk of every leaf: is any of them young? (Ours: the
/// access-flag test without clearing; theirs: `walk_range` reading the
/// same bit.) Both trees are built once: nothing changes them.
fn bench_walk(c: &mut Criterion) {
    for (name, pages) in [("walk_4k", true), ("walk_2m", false)] {
        let mut g = c.benchmark_group(name);
        settings(&mut g);
        let (mut s2, cache) = s2_mapped(BASE, pages);
        g.bench_function("pgtable", |b| {
            b.iter(|| {
                s2.exclusive()
                    .test_clear_young(BASE, SIZE, false)
                    .expect("walk")
            });
        });
        g.bench_function("pgtable_shared", |b| {
            b.iter(|| {
                s2.shared()
                    .test_clear_young(BASE, SIZE, false)
                    .expect("walk")
            });
        });
        s2_teardown((s2, cache));
        let m = ap_s2_mapped(BASE, pages);
        g.bench_function("aarch64_paging", |b| {
            b.iter(|| {
                let mut young = false;
                m.walk_range(&region(BASE), &mut |_, d, _| {
                    young |= d.flags().contains(Stage2Attributes::ACCESS_FLAG);
                    Ok(())
                })
                .expect("walk_range");
                young
            });
        });
        drop(m);
        g.finish();
    }
}

/// Write-protect every leaf (and, ours, the one TLB invalidation it owes).
/// Untimed before each run: the range is mapped read-write again.
fn bench_wrprotect(c: &mut Criterion) {
    for (name, pages) in [("wrprotect_4k", true), ("wrprotect_2m", false)] {
        let mut g = c.benchmark_group(name);
        settings(&mut g);
        let mut state = s2_mapped(BASE, pages);
        g.bench_function("pgtable", |b| {
            b.iter_custom(|n| {
                timed_on(
                    n,
                    &mut state,
                    |(s2, cache)| {
                        s2_map(s2, cache, BASE, pages);
                    },
                    |(s2, _)| {
                        let flush = s2.exclusive().wrprotect(BASE, SIZE).expect("wrprotect");
                        s2.complete(flush);
                    },
                )
            });
        });
        g.bench_function("pgtable_shared", |b| {
            b.iter_custom(|n| {
                timed_on(
                    n,
                    &mut state,
                    |(s2, cache)| {
                        s2_map(s2, cache, BASE, pages);
                    },
                    |(s2, _)| {
                        let flush = s2.shared().wrprotect(BASE, SIZE).expect("wrprotect");
                        s2.complete(flush);
                    },
                )
            });
        });
        s2_teardown(state);
        let mut m = ap_s2_mapped(BASE, pages);
        g.bench_function("aarch64_paging", |b| {
            b.iter_custom(|n| {
                timed_on(
                    n,
                    &mut m,
                    |m| ap_s2_map(m, BASE, pages),
                    |m| {
                        m.modify_range(&region(BASE), &|_, d| {
                            if d.flags().contains(Stage2Attributes::VALID) {
                                d.modify_flags(
                                    Stage2Attributes::empty(),
                                    Stage2Attributes::S2AP_ACCESS_WO,
                                )
                            } else {
                                Ok(())
                            }
                        })
                        .expect("modify_range");
                    },
                )
            });
        });
        drop(m);
        g.finish();
    }
}

/// Unmap the whole range (ours also frees the tables that empties, and
/// counts one TLB invalidation per leaf, as a live tree needs).
fn bench_unmap(c: &mut Criterion) {
    for (name, pages) in [("unmap_4k", true), ("unmap_2m", false)] {
        let mut g = c.benchmark_group(name);
        settings(&mut g);
        g.bench_function("pgtable", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    batch(pages),
                    || s2_mapped(BASE, pages),
                    |(s2, cache)| s2.exclusive().unmap(BASE, SIZE, cache).expect("unmap"),
                    s2_teardown,
                )
            });
        });
        g.bench_function("aarch64_paging", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    batch(pages),
                    || ap_s2_mapped(BASE, pages),
                    |m| ap_unmap(m, BASE),
                    drop,
                )
            });
        });
        let pa = if pages { BASE + PAGE } else { BASE };
        g.bench_function("pgtable_hyp", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    batch(pages),
                    || {
                        let mut h = hyp_empty();
                        h.map(BASE, SIZE, pa, Prot::RW).expect("hyp map");
                        h
                    },
                    |h| h.unmap(BASE, SIZE).expect("hyp unmap"),
                    drop,
                )
            });
        });
        g.bench_function("aarch64_paging_el2", |b| {
            b.iter_custom(|n| {
                timed(
                    n,
                    batch(pages),
                    || {
                        let mut m = ap_el2_empty();
                        m.map_range(
                            &region(BASE),
                            PhysicalAddress(pa as usize),
                            AP_EL2_RW,
                            Constraints::empty(),
                        )
                        .expect("el2 map_range");
                        m
                    },
                    |m| ap_unmap(m, BASE),
                    drop,
                )
            });
        });
        g.finish();
    }
}

/// Every group, in order (`criterion_group!` would leave its function undocumented).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    check_shapes();
    bench_map(&mut c);
    bench_walk(&mut c);
    bench_wrprotect(&mut c);
    bench_unmap(&mut c);
}
criterion_main!(benches);
