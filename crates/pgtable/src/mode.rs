//! Access modes as types: an exclusive handle needs `&mut` of the tree, so the borrow checker enforces the lock protocol.

use crate::policy::Access;

mod sealed {
    pub trait Sealed {}
}

/// A walk mode known at compile time.
pub trait Mode: sealed::Sealed {
    /// The mode's runtime value.
    const ACCESS: Access;
}

/// Modes an operation that never serves a guest abort may run in.
pub trait NotFault: Mode {}

/// The caller holds the tree alone (`&mut`, e.g. under a write lock).
#[derive(Debug)]
pub enum Exclusive {}
/// Other walkers may run concurrently (`&`, e.g. under a read lock).
#[derive(Debug)]
pub enum Shared {}
/// A shared walk serving a guest abort.
#[derive(Debug)]
pub enum Fault {}

impl sealed::Sealed for Exclusive {}
impl sealed::Sealed for Shared {}
impl sealed::Sealed for Fault {}

impl Mode for Exclusive {
    const ACCESS: Access = Access::Exclusive;
}
impl Mode for Shared {
    const ACCESS: Access = Access::Shared;
}
impl Mode for Fault {
    const ACCESS: Access = Access::Fault;
}
impl NotFault for Exclusive {}
impl NotFault for Shared {}
