//! The assembly entry points (`boot/entry.S`) and the first Rust code every
//! CPU runs: put EL2 in a known state, then split boot CPU / secondaries.

use core::arch::global_asm;

use aarch64_cpu::registers::{ReadWriteable, Writeable, SCTLR_EL2, TPIDR_EL2};

use crate::percpu::{CpuId, MAX_CPUS, STACK_SIZE};

global_asm!(
    include_str!("../boot/entry.S"),
    MAX_CPUS = const MAX_CPUS,
    STACK_SIZE = const STACK_SIZE,
    RUST_ENTRY = sym rust_entry,
);

unsafe extern "C" {
    /// Where PSCI `CPU_ON` starts a secondary CPU (`boot/entry.S`); expects
    /// its logical CPU id in `x0` (the CPU_ON context id).
    fn secondary_entry();
}

/// Physical address of the secondary CPUs' entry point (the MMU is off, so
/// the link address is the physical address).
pub fn secondary_entry_point() -> hvcore::PhysAddr {
    hvcore::PhysAddr::new(secondary_entry as *const () as u64)
}

/// First Rust code on every CPU, called by `boot/entry.S` on the CPU's own
/// stack with `cpu` = logical CPU id (0 on the boot CPU) and `dtb` = the
/// device tree address (boot CPU only; 0 on secondaries).
extern "C" fn rust_entry(cpu: usize, dtb: usize) -> ! {
    // MMU and data cache off (identity, all data accesses Device-nGnRnE),
    // alignment checking off, little-endian; `modify` keeps the RES1 bits.
    // The code is built for strict alignment, so Rust itself never issues
    // unaligned accesses (which Device memory would fault anyway).
    SCTLR_EL2.modify(
        SCTLR_EL2::M::Disable
            + SCTLR_EL2::A::Disable
            + SCTLR_EL2::C::NonCacheable
            + SCTLR_EL2::SA::Enable
            + SCTLR_EL2::I::Cacheable
            + SCTLR_EL2::EE::Little,
    );
    // TPIDR_EL2 holds the logical id for `percpu::current()`.
    TPIDR_EL2.set(cpu as u64);
    let cpu = CpuId::new(cpu);
    if cpu.is_boot() {
        crate::init::boot_cpu_main(dtb)
    } else {
        crate::smp::secondary_main(cpu)
    }
}
