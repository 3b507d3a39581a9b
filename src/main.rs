//! `hyp`: an aarch64 EL2 hypervisor for QEMU's `virt` board. This file only declares the layers and wires the entry points; the boot flow starts in [`init`].
//!
//! Dependencies point down only:
//!
//! ```text
//! init ──> jobs ──> vmm ──> arch ──> hvcore, pgtable
//!   │        └───────────────^         ^
//!   └──> logger ─────────────┘         │
//!   vmm, jobs, init also use hvcore and pgtable directly
//! ```
//!
//! `arch` is the only module with `unsafe` (the crate denies it elsewhere);
//! `scripts/test.sh` checks the graph has no cycle and no upward edge.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

#[allow(unsafe_code)]
mod arch;
mod init;
mod jobs;
mod logger;
mod vmm;

hyp_entry!(boot: crate::init::boot_cpu_main, secondary: crate::init::secondary_main);
