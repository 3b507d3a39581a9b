//! The entry points (`entry.S`) and the first Rust code every CPU runs: EL2 in a known state, `TPIDR_EL2` at the CPU's own state; then the boot layer's functions, which the crate root names with [`hyp_entry!`](crate::hyp_entry!).

use aarch64_cpu::registers::{ReadWriteable, SCTLR_EL2};
use hvcore::PhysAddr;

use super::percpu::{self, CpuId};
use super::psci::{self, PsciError};

/// Wires `entry.S` to the boot layer: `$boot(dtb)` runs on the boot CPU,
/// `$secondary(cpu)` on every other, each after [`early_cpu_setup`].
/// Invoke once, from the crate root (the assembly's path is relative to
/// it).
#[macro_export]
macro_rules! hyp_entry {
    (boot: $boot:path, secondary: $secondary:path $(,)?) => {
        /// The assembly entry points and the first Rust function, generated
        /// by `arch::hyp_entry!`.
        #[allow(unsafe_code)]
        mod hyp_entry {
            core::arch::global_asm!(
                include_str!("arch/entry.S"),
                MAX_CPUS = const $crate::arch::percpu::MAX_CPUS,
                STACK_SIZE = const $crate::arch::percpu::STACK_SIZE,
                RUST_ENTRY = sym rust_entry,
                WRONG_EL = sym $crate::arch::boot::wrong_el,
            );

            /// First Rust code on every CPU, called by `entry.S` on the
            /// CPU's own stack with `cpu` = logical CPU id (0 on the boot
            /// CPU) and `dtb` = the device tree address (boot CPU only).
            extern "C" fn rust_entry(cpu: usize, dtb: usize) -> ! {
                let cpu = $crate::arch::boot::early_cpu_setup(cpu);
                if cpu.is_boot() {
                    $boot(dtb)
                } else {
                    $secondary(cpu)
                }
            }
        }
    };
}

/// Puts EL2 in a known state on this CPU: MMU and data cache off
/// (identity, all data accesses Device-nGnRnE), alignment checking off,
/// little-endian (`modify` keeps the RES1 bits); `TPIDR_EL2` at this CPU's
/// state. The code is built for strict alignment, so Rust itself never
/// issues unaligned accesses (which Device memory would fault anyway).
pub fn early_cpu_setup(cpu: usize) -> CpuId {
    SCTLR_EL2.modify(
        SCTLR_EL2::M::Disable
            + SCTLR_EL2::A::Disable
            + SCTLR_EL2::C::NonCacheable
            + SCTLR_EL2::SA::Enable
            + SCTLR_EL2::I::Cacheable
            + SCTLR_EL2::EE::Little,
    );
    let cpu = CpuId::new(cpu);
    percpu::install(cpu);
    cpu
}

unsafe extern "C" {
    /// Where PSCI `CPU_ON` starts a secondary CPU (`entry.S`); expects its
    /// logical CPU id in `x0` (the CPU_ON context id).
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

/// Called by `entry.S` instead of the Rust entry when the CPU was not
/// entered at EL2. Nothing EL2-specific may run here (no EL2 registers, so
/// not even the per-CPU id): print through the early console, with the
/// verdict line (no token: the command line is unread) and power off.
pub extern "C" fn wrong_el(el: u64) -> ! {
    super::console::println!(
        "error: entered at EL{el}, but the hypervisor must run at EL2 \
         (QEMU: -machine virt,virtualization=on)"
    );
    super::console::println!(
        "{}",
        hvcore::verdict::Verdict {
            token: None,
            status: hvcore::verdict::HYP_FAILURE
        }
    );
    psci::system_off_from_el1()
}
