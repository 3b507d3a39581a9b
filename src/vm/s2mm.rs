//! The walker's memory operations for a guest's stage-2 tables: pages from the frame allocator, TLB maintenance by VMID.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, Writeable, VTTBR_EL2};
use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use pgtable::{Level, MmOps, Pte};

use crate::mm::El2Mm;
use crate::percpu::{self, CpuId};

/// Spins a shared walk on [`RACE_WINDOW_CPU`] holds between reading an
/// entry and swapping it (`migrate.window=`; 0: none).
static RACE_WINDOW: AtomicU32 = AtomicU32::new(0);
/// The CPU whose shared walks hold the window open.
static RACE_WINDOW_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);
/// An old entry's window is `spins / OLD_ENTRY_SHARE` polls. A young entry
/// (touched since the last aging sweep) is the one whose access flag the
/// ager is about to clear, and it waits the whole window; an old one
/// changes only if a vCPU touches the page now (an access-flag fault), and
/// waiting long on each of those slowed the rounds until a loaded machine's
/// guest finished before its migration did. Both kinds make races: with
/// young entries only, a loaded machine whose ager had just swept saw none.
const OLD_ENTRY_SHARE: u32 = 250;
/// Windows held open, and those in which the entry changed.
static WINDOWS: AtomicU64 = AtomicU64::new(0);
static WINDOWS_CHANGED: AtomicU64 = AtomicU64::new(0);

/// Windows held open so far, and how many saw their entry change.
pub fn race_windows() -> (u64, u64) {
    (WINDOWS.load(Relaxed), WINDOWS_CHANGED.load(Relaxed))
}

/// Holds every compare-and-swap of `cpu`'s stage-2 walks open until
/// another CPU changes the entry, or `spins` polls on a young entry and
/// [`OLD_ENTRY_SHARE`] of that on an old one: a test knob
/// (`migrate.window=`) that makes the races between the migration's
/// write-protects and the vCPUs' faults (or the ager's sweeps) happen on
/// demand. They happen without it, rarely.
pub fn set_race_window(cpu: CpuId, spins: u32) {
    RACE_WINDOW_CPU.store(cpu.index(), Relaxed);
    RACE_WINDOW.store(spins, Relaxed);
}

/// The race window itself, out of the walks' line: on `cpu`'s walks only,
/// until another CPU changes `entry` or the entry's share of `spins` polls.
#[cold]
#[inline(never)]
fn hold_window(entry: &AtomicU64, old: u64, spins: u32) {
    if percpu::current_id().index() != RACE_WINDOW_CPU.load(Relaxed) {
        return;
    }
    let spins = if Pte::from_bits(old).young() {
        spins
    } else {
        spins / OLD_ENTRY_SHARE
    };
    WINDOWS.fetch_add(1, Relaxed);
    // Until another CPU changes the entry (the swap then loses), or `spins`
    // polls.
    if (0..spins).any(|_| entry.load(Relaxed) != old) {
        WINDOWS_CHANGED.fetch_add(1, Relaxed);
    }
}

/// [`MmOps`] for one VM's stage 2. Table pages are allocated like the
/// hypervisor's own ([`El2Mm`]); TLB maintenance targets the VM's VMID.
#[derive(Debug, Clone, Copy)]
pub struct S2Mm {
    vmid: u16,
}

impl S2Mm {
    /// Operations for the VM with `vmid`.
    pub const fn new(vmid: u16) -> Self {
        Self { vmid }
    }

    /// Runs `f` with this VM's VMID in `VTTBR_EL2`: TLBI by IPA and VMID
    /// act on the VMID currently loaded (on a CPU running this VM it is
    /// already there; TLB maintenance never walks, so the root may be 0).
    fn with_vmid(&self, f: impl FnOnce()) {
        let saved = VTTBR_EL2.get();
        let switch = VTTBR_EL2.read(VTTBR_EL2::VMID) != u64::from(self.vmid);
        if switch {
            VTTBR_EL2.write(VTTBR_EL2::VMID.val(u64::from(self.vmid)));
            barrier::isb(barrier::SY);
        }
        barrier::dsb(barrier::ISHST);
        f();
        barrier::dsb(barrier::ISH);
        barrier::isb(barrier::SY);
        if switch {
            VTTBR_EL2.set(saved);
            barrier::isb(barrier::SY);
        }
    }
}

// SAFETY: page allocation and address translation are those of `El2Mm`,
// whose contract (zeroed, exclusively owned, identity-mapped pages) this
// forwards unchanged; only TLB maintenance differs.
unsafe impl MmOps for S2Mm {
    fn zalloc_pages(&self, count: usize) -> Option<u64> {
        El2Mm.zalloc_pages(count)
    }

    unsafe fn free_pages(&self, pa: u64, count: usize) {
        // SAFETY: forwarded: the caller's guarantees are `El2Mm`'s.
        unsafe { El2Mm.free_pages(pa, count) }
    }

    fn phys_to_virt(&self, pa: u64) -> *mut u64 {
        El2Mm.phys_to_virt(pa)
    }

    fn dcache_clean_inval_poc(&self, pa: u64, size: u64) {
        El2Mm.dcache_clean_inval_poc(pa, size);
    }

    fn icache_inval_pou(&self, pa: u64, size: u64) {
        El2Mm.icache_inval_pou(pa, size);
    }

    fn tlb_flush_addr(&self, addr: u64, _level: Level) {
        self.with_vmid(|| {
            // SAFETY: TLB invalidation only drops cached translations of
            // this VMID; stage-1 entries that combine with the IPA are
            // dropped too (vmalle1is), as the architecture requires.
            unsafe {
                asm!(
                    "tlbi ipas2e1is, {ipa}",
                    "dsb ish",
                    "tlbi vmalle1is",
                    ipa = in(reg) addr >> 12,
                    options(nostack, preserves_flags)
                );
            }
        });
    }

    fn before_compare_and_swap(&self, entry: &AtomicU64, old: u64) {
        // Every compare-and-swap of every stage-2 walk (vCPU faults too)
        // passes here: one load when the knob is off.
        let spins = RACE_WINDOW.load(Relaxed);
        if spins != 0 {
            hold_window(entry, old, spins);
        }
    }

    fn tlb_flush_all(&self) {
        self.with_vmid(|| {
            // SAFETY: drops every cached stage-1 and stage-2 translation
            // of this VMID; nothing else changes.
            unsafe { asm!("tlbi vmalls12e1is", options(nostack, preserves_flags)) };
        });
    }
}
