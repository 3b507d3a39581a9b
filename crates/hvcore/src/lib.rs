//! Portable hypervisor logic, tested on the host.
#![cfg_attr(not(test), no_std)]
