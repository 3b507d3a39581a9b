//! Portable hypervisor logic, tested on the host: syndrome and guest-abort decoding, boot
//! arguments, physical-range arithmetic, the page-frame bitmap, and the guest's side of
//! things: memory slots, what a stage-2 fault needs, dirty logging and pre-copy migration,
//! PSCI and benchmark hypercalls, the emulated PL011 and the guest device tree.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod addr;
pub mod bench;
pub mod bootargs;
pub mod dirty;
pub mod esr;
pub mod frame;
pub mod guest_abort;
pub mod guest_dt;
pub mod migrate;
pub mod pl011;
pub mod psci;
pub mod range;
pub mod s2fault;
pub mod slots;

pub use addr::PhysAddr;
