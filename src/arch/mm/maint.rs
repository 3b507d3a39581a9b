//! Cache and TLB maintenance instructions for the EL2 regime: the only inline assembly of the memory code.

use aarch64_cpu::asm::barrier;
use core::arch::asm;

/// `CTR_EL0.DminLine`: log2 of the smallest data-cache line, in words.
const CTR_DMINLINE_SHIFT: u64 = 16;
const CTR_DMINLINE_MASK: u64 = 0xf;

/// Smallest data-cache line in bytes (`aarch64-cpu` has no `CTR_EL0`).
fn dcache_line() -> u64 {
    let ctr: u64;
    // SAFETY: reading the cache type register has no side effect.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    4 << ((ctr >> CTR_DMINLINE_SHIFT) & CTR_DMINLINE_MASK)
}

/// Cleans and invalidates `[pa, pa + size)` to the point of coherency.
/// Memory is identity-mapped at EL2, so the physical address is the
/// virtual one.
pub fn dcache_clean_inval_poc(pa: u64, size: u64) {
    let line = dcache_line();
    let mut addr = pa & !(line - 1);
    while addr < pa + size {
        // SAFETY: `dc civac` only writes back and drops a cache line; it
        // changes no memory contents and needs no mapping to be writable.
        unsafe { asm!("dc civac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    barrier::dsb(barrier::SY);
}

/// Invalidates the whole instruction cache to the point of unification,
/// on every CPU of the inner-shareable domain.
pub fn icache_inval_all() {
    // SAFETY: invalidating instruction caches has no effect on data or on
    // the program's state: code is refetched from memory.
    unsafe { asm!("ic ialluis", options(nostack, preserves_flags)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// Invalidates EL2 TLB entries (all levels) for the page holding `va`, on
/// every CPU of the inner-shareable domain.
pub fn tlbi_el2_va(va: u64) {
    barrier::dsb(barrier::ISHST);
    // SAFETY: a TLB invalidation only drops cached translations; the next
    // access walks the (already updated) tables again.
    unsafe { asm!("tlbi vae2is, {}", in(reg) va >> 12, options(nostack, preserves_flags)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// Invalidates every EL2 TLB entry, on every CPU of the inner-shareable domain.
pub fn tlbi_el2_all() {
    barrier::dsb(barrier::ISHST);
    // SAFETY: as in `tlbi_el2_va`: only cached translations are dropped.
    unsafe { asm!("tlbi alle2is", options(nostack, preserves_flags)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}
