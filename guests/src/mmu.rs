//! An EL1 identity map (1 GiB blocks: RAM normal write-back, everything else device) so caches and atomics behave as on normal memory.
//!
//! With the MMU off every data access is Device-nGnRnE: aligned only, and
//! exclusives (atomics) are not architecturally guaranteed. The `smp`
//! scenario turns this map on before starting other vCPUs; they turn it on
//! in `secondary_entry` before touching memory, from [`CONFIG`].
//!
//! One level-1 table (`T0SZ` = 25: 39-bit addresses, 512 GiB): GiB blocks
//! overlapping RAM are Normal WB inner-shareable, read-write, executable;
//! every other GiB is Device-nGnRnE and never executable, so an access to an
//! address in no slot still reaches stage 2 (and gets the ABI's abort).

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::dt::Platform;

const ENTRIES: usize = 512;
const GIB: u64 = 1 << 30;

/// MAIR_EL1: attribute 0 Device-nGnRnE, attribute 1 Normal WB RA/WA.
const MAIR: u64 = 0xff << 8;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

/// TCR_EL1: T0SZ 25, walks inner/outer WB-WA inner-shareable, 4 KiB
/// granule, TTBR1 walks disabled (EPD1); IPS is added from the CPU.
const TCR: u64 = 25 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23);

const SCTLR_M: u64 = 1 << 0;
const SCTLR_C: u64 = 1 << 2;
const SCTLR_I: u64 = 1 << 12;

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; ENTRIES]>);

// SAFETY: written only by the boot vCPU in `enable`, before any other vCPU
// runs; afterwards only the MMU reads it.
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new([0; ENTRIES]));

/// What a secondary vCPU loads to turn its MMU on, read by `secondary_entry`
/// with the MMU still off: TTBR0_EL1, TCR_EL1, MAIR_EL1, SCTLR_EL1.
/// TTBR0 = 0: the MMU stays off. Alone in its cache line, cleaned to the
/// point of coherency after it is written.
#[repr(C, align(64))]
pub struct Config(pub [AtomicU64; 4]);

/// The boot vCPU's MMU settings, for the secondaries.
pub static CONFIG: Config = Config([
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
]);

fn sctlr() -> u64 {
    let value: u64;
    // SAFETY: reading a register has no side effect.
    unsafe { asm!("mrs {}, sctlr_el1", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Whether this vCPU's MMU is on.
pub fn is_on() -> bool {
    sctlr() & SCTLR_M != 0
}

/// Builds the identity map for `p`'s RAM and turns the MMU and caches on for
/// this vCPU; vCPUs started afterwards turn it on too. Call on the boot vCPU
/// before starting any other.
pub fn enable(p: &Platform<'_>) {
    if is_on() {
        return;
    }
    let table = TABLE.0.get();
    for i in 0..ENTRIES {
        let base = i as u64 * GIB;
        let is_ram = base < p.ram.end() && base + GIB > p.ram.base;
        let entry = if is_ram {
            base | ATTR_NORMAL | SH_INNER | AF | BLOCK
        } else {
            base | ATTR_DEVICE | AF | BLOCK | PXN | UXN
        };
        // SAFETY: in bounds; only this vCPU runs and the MMU does not use
        // the table yet (see `Table`).
        unsafe { (*table)[i] = entry };
    }

    // Whatever this vCPU wrote with the MMU off went straight to memory:
    // drop any stale cached copy of the image (data, .bss, stacks, table)
    // before reading it through the caches.
    let image = crate::mem::image();
    let mut line = image.base;
    while line < image.end() {
        // SAFETY: invalidating lines the image's own writes bypassed; memory
        // holds the current contents.
        unsafe { asm!("dc ivac, {}", in(reg) line, options(nostack, preserves_flags)) };
        line += crate::cpu::dcache_line();
    }

    let mmfr0: u64;
    // SAFETY: reading an ID register has no side effect.
    unsafe {
        asm!("mrs {}, id_aa64mmfr0_el1", out(reg) mmfr0, options(nomem, nostack, preserves_flags))
    };
    let ips = (mmfr0 & 0x7).min(5);
    let tcr = TCR | (ips << 32);
    let ttbr = table as u64;
    let sctlr = sctlr() | SCTLR_M | SCTLR_C | SCTLR_I;
    // SAFETY: an identity map of all RAM (and devices), so every address the
    // code, stack and data use means the same once translation is on.
    unsafe {
        asm!(
            "dsb sy",
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) MAIR, tcr = in(reg) tcr, ttbr = in(reg) ttbr, sctlr = in(reg) sctlr,
            options(nostack, preserves_flags),
        );
    }

    for (slot, value) in CONFIG.0.iter().zip([ttbr, tcr, MAIR, sctlr]) {
        slot.store(value, Ordering::Relaxed);
    }
    // SAFETY: cleaning the CONFIG line to memory, where secondaries (MMU off)
    // read it.
    unsafe {
        asm!("dc cvac, {}", "dsb sy", in(reg) &raw const CONFIG, options(nostack, preserves_flags))
    };
}

/// Replaces entry `index` of the level-1 table (GiB `index` of the identity
/// map) with `entry` and invalidates its translations, on this vCPU. For
/// scenarios that point a GiB at a table of their own (or at nothing).
pub fn set_l1_entry(index: usize, entry: u64) {
    assert!(index < ENTRIES, "level-1 index {index}");
    let table = TABLE.0.get();
    // SAFETY: in bounds; the caller changes a GiB its code, stack and data
    // are not in (they are in RAM's), so nothing running depends on it.
    unsafe { core::ptr::write_volatile(&raw mut (*table)[index], entry) };
    // SAFETY: publishing the entry to the walker and dropping the GiB's
    // cached translations.
    unsafe {
        asm!(
            "dsb ishst",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}
