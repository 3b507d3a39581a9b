//! Physical addresses as a distinct type, so they are never confused with
//! sizes, counts or (later, once the MMU is on) virtual addresses.

use core::fmt;

/// Size of one page frame: the hypervisor uses a 4 KiB granule.
pub const FRAME_SIZE: u64 = 4096;

/// A physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// Wraps a raw physical address.
    #[must_use]
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw address.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align` (a power of two).
    #[must_use]
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }

    /// Whether the address is the start of a page frame.
    #[must_use]
    pub const fn is_frame_aligned(self) -> bool {
        self.is_aligned(FRAME_SIZE)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        assert!(PhysAddr::new(0x4000_0000).is_frame_aligned());
        assert!(!PhysAddr::new(0x4000_0008).is_frame_aligned());
        assert!(PhysAddr::new(0x4000_0008).is_aligned(8));
        assert_eq!(PhysAddr::new(0x1234).to_string(), "0x1234");
    }
}
