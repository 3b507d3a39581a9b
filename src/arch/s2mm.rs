//! The walker's memory operations for a guest's stage-2 tables: pages from the frame allocator, TLB maintenance by VMID, and a hook in the compare-and-swap window for test knobs.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, Writeable, VTTBR_EL2};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use pgtable::{Level, MmOps};

use super::mm::El2Mm;

/// A hook every stage-2 compare-and-swap calls between reading its entry
/// and swapping it (a test knob: the race window of `jobs::race`). The
/// address of an `fn(&AtomicU64, u64)`, or 0 for none.
static CAS_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs `hook` in every stage-2 compare-and-swap window from now on
/// (`None`: removes it). One load per swap when none is installed.
pub fn set_cas_hook(hook: Option<fn(&AtomicU64, u64)>) {
    CAS_HOOK.store(hook.map_or(0, |f| f as usize), Relaxed);
}

/// Calls the installed hook, out of the walks' line.
#[cold]
#[inline(never)]
fn call_cas_hook(hook: usize, entry: &AtomicU64, old: u64) {
    // SAFETY: `hook` is nonzero, so `set_cas_hook` stored it from an
    // `fn(&AtomicU64, u64)`: transmuting it back gives that function.
    let f: fn(&AtomicU64, u64) =
        unsafe { core::mem::transmute::<usize, fn(&AtomicU64, u64)>(hook) };
    f(entry, old);
}

/// [`MmOps`] for one VM's stage 2. Table pages are allocated like the
/// hypervisor's own ([`El2Mm`]) but counted against the VM's budget: once
/// it is spent an allocation fails as if memory had run out, the VM's
/// fault fails and the VM is stopped, while the hypervisor and other VMs
/// keep their frames. TLB maintenance targets the VM's VMID.
#[derive(Debug, Clone, Copy)]
pub struct S2Mm {
    vmid: u16,
    /// Pages the VM's tables may still take.
    budget: &'static AtomicUsize,
}

impl S2Mm {
    /// Operations for the VM with `vmid`, whose tables may take `budget`
    /// pages in all.
    pub const fn new(vmid: u16, budget: &'static AtomicUsize) -> Self {
        Self { vmid, budget }
    }

    /// Pages the VM's tables may still take.
    pub fn budget_left(&self) -> usize {
        self.budget.load(Relaxed)
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
        // Take from the budget first; give back if no frame is left.
        self.budget
            .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(count))
            .ok()?;
        let pages = El2Mm.zalloc_pages(count);
        if pages.is_none() {
            self.budget.fetch_add(count, Relaxed);
        }
        pages
    }

    unsafe fn free_pages(&self, pa: u64, count: usize) {
        // SAFETY: forwarded: the caller's guarantees are `El2Mm`'s.
        unsafe { El2Mm.free_pages(pa, count) };
        self.budget.fetch_add(count, Relaxed);
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
        // passes here: one load when no hook is installed.
        let hook = CAS_HOOK.load(Relaxed);
        if hook != 0 {
            call_cas_hook(hook, entry, old);
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
