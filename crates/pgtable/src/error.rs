//! Errors a caller of the page-table operations can act on.

use core::fmt;

use crate::geometry::Level;
use crate::policy::Outcome;

/// Why an operation did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The range does not lie inside the tree's input-address space.
    OutOfRange {
        /// Start of the range.
        addr: u64,
        /// Its size.
        size: u64,
        /// One past the highest address the tree translates.
        limit: u64,
    },
    /// An address or size is not a multiple of 4 KiB, or a size is zero.
    Misaligned {
        /// The start address.
        addr: u64,
        /// The size.
        size: u64,
    },
    /// The output range does not fit in 48-bit physical addresses.
    OutputOutOfRange {
        /// First output address.
        pa: u64,
        /// Size of the range.
        size: u64,
    },
    /// The input-address size is outside what the tree supports (25 to 48 bits).
    UnsupportedSize {
        /// The size asked for.
        ia_bits: u32,
    },
    /// No table page: the memory cache is empty or the allocator ran out.
    /// Top the cache up (outside the lock) and try again.
    NoMemory,
    /// One entry was retried the most times allowed without settling;
    /// the walk stopped there. The tree is consistent; try again later.
    RetriesExhausted {
        /// Input address of the entry.
        addr: u64,
        /// Its level.
        level: Level,
        /// The outcome that kept recurring.
        outcome: Outcome,
    },
    /// A fault walk found the tree no longer as the fault saw it: another
    /// walker changed or holds the entry, or already did the work. Return
    /// to the guest; it faults again if it still needs to.
    Refault {
        /// Input address of the entry.
        addr: u64,
        /// What the walk found.
        outcome: Outcome,
    },
    /// A different mapping is already there and this operation may not
    /// replace it (the hypervisor's own tables are never changed under it).
    Conflict {
        /// Input address of the entry.
        addr: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::OutOfRange { addr, size, limit } => write!(
                f,
                "range {addr:#x}+{size:#x} is outside the tree (limit {limit:#x})"
            ),
            Error::Misaligned { addr, size } => {
                write!(
                    f,
                    "range {addr:#x}+{size:#x} is not 4 KiB aligned and non-empty"
                )
            }
            Error::OutputOutOfRange { pa, size } => write!(
                f,
                "output range {pa:#x}+{size:#x} is beyond 48-bit physical addresses"
            ),
            Error::UnsupportedSize { ia_bits } => {
                write!(
                    f,
                    "{ia_bits}-bit input addresses are not supported (25 to 48)"
                )
            }
            Error::NoMemory => f.write_str("no table page left in the memory cache"),
            Error::RetriesExhausted {
                addr,
                level,
                outcome,
            } => write!(
                f,
                "entry for {addr:#x} at level {} kept reporting {}: retries exhausted",
                level.get(),
                outcome.name()
            ),
            Error::Refault { addr, outcome } => {
                write!(
                    f,
                    "fault walk at {addr:#x} found {}: re-fault",
                    outcome.name()
                )
            }
            Error::Conflict { addr } => write!(f, "a different mapping exists at {addr:#x}"),
        }
    }
}
