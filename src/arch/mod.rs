//! The hardware layer: everything that touches the machine (assembly, system registers, TLB and cache maintenance, physical MMIO, firmware calls, host-physical memory), behind safe functions. All of the hypervisor's `unsafe` is here; it imports nothing from the layers above.
//!
//! | module | what |
//! |--------|------|
//! | `boot`, `entry.S` | the entry points, early per-CPU set-up, starting CPUs |
//! | `machine` | the boot device tree, read into a `Machine` the drivers trust |
//! | `exception`, `vectors.S` | the EL2 vector table; exceptions taken at EL2 (fatal) |
//! | `context` | a vCPU's context and the switch into the guest; EL1, FP/SIMD and EL2 control registers |
//! | `percpu` | per-CPU state behind `TPIDR_EL2` |
//! | `cpu` | `wfe`/`wfi`/`sev`, the system counter |
//! | `gic` | the physical GICv3: kicks between CPUs, acknowledging, ending and deactivating interrupts |
//! | `vgic` | the virtual CPU interface's registers: list registers, `ICH_HCR_EL2`, the guest's interface state |
//! | `mm` | heap, frames, memory layout, the EL2 MMU on walker-built tables, cache maintenance |
//! | `s2mm` | stage-2 memory operations for the walker: TLB maintenance by VMID |
//! | `guest_mem` | host memory carved for guests: loading, filling, copying, comparing |
//! | `console`, `panic`, `exit`, `psci` | the UART, the panic handler, ending the run, firmware calls |
//! | `pmu` | the EL2 instruction counter |

pub mod boot;
pub mod console;
pub mod context;
pub mod cpu;
pub mod exception;
pub mod exit;
pub mod gic;
pub mod guest_mem;
pub mod machine;
pub mod mm;
mod panic;
pub mod percpu;
pub mod pmu;
pub mod psci;
pub mod s2mm;
pub mod vgic;
