//! One benchmarked operation, run once, for counting instructions:
//!
//! ```text
//! cargo build --profile bench --target x86_64-unknown-linux-gnu -p pgtable --example walker_insns
//! valgrind --tool=callgrind --toggle-collect='walker_insns::op' \
//!     target/x86_64-unknown-linux-gnu/release/examples/walker_insns map_4k pgtable
//! ```
//!
//! The same setup as `benches/walker.rs` (1 GiB, 40-bit stage 2, cache
//! maintenance skipped, the pages the map needs pre-allocated); only `op` runs under the
//! collector, so callgrind's total is the instructions of the operation.

use std::hint::black_box;

use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes};
use aarch64_paging::paging::Translation;
use aarch64_paging::paging::{Constraints, MemoryRegion, PageTable, Stage2 as ApStage2};
use aarch64_paging::Mapping;
use pgtable::host::HostMm;
use pgtable::{pages_needed_for_map, MemCache, Prot, Stage2};
use std::ptr::NonNull;

const MIB2: u64 = 1 << 21;
const GIB: u64 = 1 << 30;
const SIZE: u64 = GIB;
const BASE: u64 = GIB + MIB2;

const AP_S2_RW: Stage2Attributes = Stage2Attributes::VALID
    .union(Stage2Attributes::MEMATTR_NORMAL_INNER_WB)
    .union(Stage2Attributes::MEMATTR_NORMAL_OUTER_WB)
    .union(Stage2Attributes::S2AP_ACCESS_RW)
    .union(Stage2Attributes::SH_INNER)
    .union(Stage2Attributes::ACCESS_FLAG)
    .union(Stage2Attributes::XN);

/// Heap table pages from a pool filled before the operation (as the bench).
struct Pages(Vec<NonNull<PageTable<Stage2Attributes>>>);

impl Translation<Stage2Attributes> for Pages {
    fn allocate_table(&mut self) -> (NonNull<PageTable<Stage2Attributes>>, PhysicalAddress) {
        let t = self.0.pop().unwrap_or_else(PageTable::new);
        (t, PhysicalAddress(t.as_ptr() as usize))
    }

    unsafe fn deallocate_table(&mut self, page_table: NonNull<PageTable<Stage2Attributes>>) {
        // SAFETY: from `PageTable::new` (global allocator, this layout).
        unsafe {
            std::alloc::dealloc(
                page_table.as_ptr().cast(),
                std::alloc::Layout::new::<PageTable<Stage2Attributes>>(),
            );
        };
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<Stage2Attributes>> {
        NonNull::new(pa.0 as *mut _).expect("null table")
    }
}

enum State {
    Ours(Stage2<HostMm>, MemCache),
    Theirs(Mapping<Pages, ApStage2>),
}

/// The measured operation: everything callgrind counts.
#[inline(never)]
fn op(state: &mut State, what: &str, base: u64, pages: bool) {
    match state {
        State::Ours(s2, cache) => {
            let ops = s2.exclusive();
            match what {
                "map" if pages => drop(black_box(ops.map_pages(base, SIZE, base, Prot::RW, cache))),
                "map" => drop(black_box(ops.map(base, SIZE, base, Prot::RW, cache))),
                "unmap" => drop(black_box(ops.unmap(base, SIZE, cache))),
                "walk" => drop(black_box(ops.test_clear_young(base, SIZE, false))),
                "wrprotect" => {
                    let f = ops.wrprotect(base, SIZE).expect("wrprotect");
                    s2.complete(f);
                }
                _ => panic!("unknown operation {what}"),
            }
        }
        State::Theirs(m) => {
            let region = MemoryRegion::new(base as usize, (base + SIZE) as usize);
            let flags = if pages {
                Constraints::NO_BLOCK_MAPPINGS
            } else {
                Constraints::empty()
            };
            match what {
                "map" => m
                    .map_range(&region, PhysicalAddress(base as usize), AP_S2_RW, flags)
                    .expect("map"),
                "unmap" => m
                    .map_range(
                        &region,
                        PhysicalAddress(0),
                        Stage2Attributes::empty(),
                        Constraints::empty(),
                    )
                    .expect("unmap"),
                "walk" => {
                    let mut young = false;
                    m.walk_range(&region, &mut |_, d, _| {
                        young |= d.flags().contains(Stage2Attributes::ACCESS_FLAG);
                        Ok(())
                    })
                    .expect("walk_range");
                    black_box(young);
                }
                "wrprotect" => m
                    .modify_range(&region, &|_, d| {
                        if d.flags().contains(Stage2Attributes::VALID) {
                            d.modify_flags(
                                Stage2Attributes::empty(),
                                Stage2Attributes::S2AP_ACCESS_WO,
                            )
                        } else {
                            Ok(())
                        }
                    })
                    .expect("modify_range"),
                _ => panic!("unknown operation {what}"),
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (group, side) = (args[1].as_str(), args[2].as_str());
    let (what, gran) = group.split_once('_').expect("op_4k / op_2m / op_1g");
    let (base, pages) = match gran {
        "4k" => (BASE, true),
        "2m" => (BASE, false),
        "1g" => (GIB, false),
        _ => panic!("granularity"),
    };
    let mut state = if side == "pgtable" {
        let mut s2 = Stage2::new(HostMm::untracked(), 40).expect("tree");
        s2.set_skip_cmo(true);
        let mut cache = MemCache::new();
        let max_block = if pages { 1 << 12 } else { GIB };
        let need = pages_needed_for_map(s2.geometry().start_level, base, SIZE, base, max_block);
        cache.topup(s2.mm(), need).expect("topup");
        if what != "map" {
            let ops = s2.exclusive();
            if pages {
                ops.map_pages(base, SIZE, base, Prot::RW, &mut cache)
            } else {
                ops.map(base, SIZE, base, Prot::RW, &mut cache)
            }
            .expect("map");
        }
        State::Ours(s2, cache)
    } else {
        let level = pgtable::Level::new(1).expect("level");
        let max_block = if pages { 1 << 12 } else { GIB };
        let pool = (0..=pages_needed_for_map(level, base, SIZE, base, max_block))
            .map(|_| PageTable::new())
            .collect();
        let mut m = Mapping::new(Pages(pool), 1, ApStage2);
        if what != "map" {
            let region = MemoryRegion::new(base as usize, (base + SIZE) as usize);
            let flags = if pages {
                Constraints::NO_BLOCK_MAPPINGS
            } else {
                Constraints::empty()
            };
            m.map_range(&region, PhysicalAddress(base as usize), AP_S2_RW, flags)
                .expect("map");
        }
        State::Theirs(m)
    };
    op(&mut state, what, base, pages);
    std::mem::forget(state);
}
