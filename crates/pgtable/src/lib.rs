//! One aarch64 VMSA page-table walker with per-walker action policies.
#![cfg_attr(not(test), no_std)]
