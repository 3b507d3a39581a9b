//! `hyp`: an aarch64 EL2 hypervisor for QEMU's `virt` board. This file only
//! declares the modules; the boot flow starts in [`boot`].
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod console;
mod dtb;
mod exception;
mod exit;
mod gic;
mod init;
mod logger;
mod mm;
mod panic;
mod percpu;
mod pmu;
mod psci;
mod semihost;
mod smp;
mod vm;
