//! Portable hypervisor logic, tested on the host: syndrome and guest-abort decoding, boot
//! arguments, physical-range arithmetic, the page-frame bitmap, and the guest's side of
//! things: memory slots and the memory map, what a stage-2 fault needs, dirty logging and
//! pre-copy migration, MMIO emulation and the bus, exception injection, the SMCCC services
//! (PSCI and its power states, benchmark hypercalls), the request/kick protocol, the
//! emulated PL011 and the guest device tree, the per-VM limit on guest-triggered log lines.
//!
//! No `unsafe` outside tests: the hardware layer of the hypervisor holds it all.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), forbid(unsafe_code))]

extern crate alloc;

pub mod addr;
pub mod bench;
pub mod bootargs;
pub mod bundle;
pub mod dirty;
pub mod entropy;
pub mod escape;
pub mod esr;
pub mod frame;
pub mod guest_abort;
pub mod guest_dt;
pub mod idregs;
pub mod inject;
pub mod lines;
pub mod loader;
pub mod memmap;
pub mod migrate;
pub mod mmio;
pub mod pl011;
pub mod platform;
pub mod pmu;
pub mod power;
pub mod psci;
pub mod range;
pub mod ratelimit;
pub mod regs;
pub mod request;
pub mod s1walk;
pub mod s2fault;
pub mod slots;
pub mod smccc;
pub mod sysreg;
pub mod verdict;
pub mod vgic;
pub mod vmconfig;
pub mod vmspec;

pub use addr::PhysAddr;
