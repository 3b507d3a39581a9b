//! The VM layer: the table of VMs, each VM's memory, bus and devices, its vCPUs and their run loop, and the exit handlers. It touches the machine only through `arch`, and has no `unsafe` (the crate root denies it everywhere but `arch`).
//!
//! | module | what |
//! |--------|------|
//! | `table` | VM ids, VMIDs, which CPU runs which vCPU, whether all VMs ended |
//! | `vm` | one VM: slots and memory map, stage 2, MMIO bus, devices, pause, end |
//! | `vcpu` | one vCPU: power state, requests, counters, context; the run loop |
//! | `exit` | dispatch of an exit by class → `abort`, `hypercall` (→ `psci`), `inject` |
//! | `devices` | the emulated devices behind the bus |
//! | `stats` | per-vCPU counters and the VM's sum |

pub mod abort;
pub mod devices;
pub mod exit;
pub mod hypercall;
pub mod inject;
pub mod psci;
pub mod stats;
pub mod table;
pub mod vcpu;
pub mod vm;
