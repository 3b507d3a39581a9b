//! The assembly entry points (`boot/entry.S`) and the first Rust code every
//! CPU runs: put EL2 in a known state, then split boot CPU / secondaries.

use core::arch::global_asm;

use aarch64_cpu::registers::{ReadWriteable, Writeable, SCTLR_EL2, TPIDR_EL2};

use hvcore::PhysAddr;

use crate::exit::ExitStatus;
use crate::percpu::{CpuId, MAX_CPUS, STACK_SIZE};
use crate::psci::{self, PsciError};
use crate::semihost;

global_asm!(
    include_str!("../boot/entry.S"),
    MAX_CPUS = const MAX_CPUS,
    STACK_SIZE = const STACK_SIZE,
    RUST_ENTRY = sym rust_entry,
    WRONG_EL = sym wrong_el,
);

unsafe extern "C" {
    /// Where PSCI `CPU_ON` starts a secondary CPU (`boot/entry.S`); expects
    /// its logical CPU id in `x0` (the CPU_ON context id).
    fn secondary_entry();
}

/// Starts the CPU with affinity `mpidr` through PSCI `CPU_ON`, to enter
/// `secondary_entry` as logical CPU `id` (passed as the context id).
///
/// # Errors
///
/// The PSCI error if the firmware refuses to start the CPU.
pub fn start_secondary(id: CpuId, mpidr: u64) -> Result<(), PsciError> {
    // The MMU is off: the link address is the physical address.
    let entry = PhysAddr::new(secondary_entry as *const () as u64);
    // SAFETY: `secondary_entry` is made to be entered by a fresh CPU with
    // the MMU off and `x0` = logical id: it installs the vectors, checks
    // the id against MAX_CPUS (parking the CPU otherwise) and switches to
    // that id's own stack. A `CpuId` is below MAX_CPUS and the boot CPU
    // starts each id once, so no two CPUs share a stack.
    unsafe { psci::cpu_on(mpidr, entry, id.index() as u64) }
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

/// Called by `boot/entry.S` instead of [`rust_entry`] when the CPU was not
/// entered at EL2. Nothing EL2-specific may run here (no EL2 registers, so
/// not even the per-CPU id): print through the early console
/// (semihosting) and end the run.
extern "C" fn wrong_el(el: u64) -> ! {
    crate::console::println!(
        "error: entered at EL{el}, but the hypervisor must run at EL2 \
         (QEMU: -machine virt,virtualization=on)"
    );
    semihost::exit(ExitStatus::Failure as u32);
    crate::exit::park()
}
