//! Guests: VMs, vCPUs at EL1, and the exit path (hypercalls, stage-2 faults, MMIO).

mod bench;
mod context;
mod exit;
mod fault;
mod inject;
mod machine;
mod migrate;
mod mmio;
mod pause;
mod psci;
mod s2mm;
mod stats;
mod vcpu;

pub use bench::enable as enable_benchmarks;
pub use exit::handle_exit;
pub use machine::{create, VmConfig, VmError, ROM_SIZE};
pub use migrate::{MigrationConfig, DEFAULT_CONVERGE_PAGES};
pub use vcpu::{idle, run_boot_vcpu};
