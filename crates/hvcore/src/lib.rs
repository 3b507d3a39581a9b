//! Portable hypervisor logic, tested on the host: syndrome decoding, boot
//! arguments, physical-range arithmetic and the page-frame bitmap.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod addr;
pub mod bootargs;
pub mod esr;
pub mod frame;
pub mod guest_abort;
pub mod guest_dt;
pub mod pl011;
pub mod psci;
pub mod range;
pub mod slots;

pub use addr::PhysAddr;
