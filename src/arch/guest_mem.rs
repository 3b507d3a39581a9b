//! Host-physical memory carved for guests, reached at its identity-mapped address: loading images into it, filling the ROM slot, copying and comparing it for a migration.
//!
//! Every function takes a [`HostRange`], which only [`HostRange::carved`]
//! makes, from memory the boot layout carved out for guests (`mm::init`):
//! never the hypervisor's image, heap or frames.

use core::arch::asm;

use hvcore::range::PhysRange;

use super::machine::Machine;
use super::mm;

/// A range of host memory carved for a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRange {
    start: u64,
    size: u64,
}

impl HostRange {
    /// Wraps a range `mm::init` carved out (its result): the only source.
    pub(super) fn carved(range: PhysRange) -> Self {
        Self {
            start: range.start().as_u64(),
            size: range.size(),
        }
    }

    /// First host physical address.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The part at `offset`, `len` bytes long, if inside.
    pub fn sub(&self, offset: u64, len: u64) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= self.size).then_some(Self {
            start: self.start + offset,
            size: len,
        })
    }
}

impl core::fmt::Display for HostRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "[{:#012x}..{:#012x})",
            self.start,
            self.start + self.size
        )
    }
}

/// Copies `bytes` to the start of `dest` and cleans it to the point of
/// coherency (a guest reads it with its MMU and caches off). Returns false,
/// copying nothing, if it does not fit.
pub fn load(dest: HostRange, bytes: &[u8]) -> bool {
    if bytes.len() as u64 > dest.size {
        return false;
    }
    // SAFETY: `dest` is host memory carved for a guest (HostRange), at
    // least `bytes.len()` long, identity-mapped writable at EL2; `bytes`
    // is hypervisor memory (its heap or the boot initrd), so they do not
    // overlap. The guest may run meanwhile only on memory it owns: the
    // bytes it sees are either old or new, never a Rust object's.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dest.start as *mut u8, bytes.len()) };
    mm::dcache_clean_inval_poc(dest.start, bytes.len() as u64);
    true
}

/// Zeroes `dest` and cleans it to the point of coherency (a rebooting
/// guest finds its RAM as at power-on). Call while no vCPU runs on it.
pub fn zero(dest: HostRange) {
    // SAFETY: `dest` is host memory carved for a guest (HostRange),
    // identity-mapped writable at EL2; no Rust reference covers it, and no
    // vCPU runs on it (the caller's guarantee).
    unsafe { core::ptr::write_bytes(dest.start as *mut u8, 0, dest.size as usize) };
    mm::dcache_clean_inval_poc(dest.start, dest.size);
}

/// Fills `dest` with 64-bit words, the one at byte offset `o` being
/// `f(o)`, and cleans it to the point of coherency.
pub fn fill_words(dest: HostRange, f: impl Fn(u64) -> u64) {
    for i in 0..dest.size / 8 {
        // SAFETY: `i * 8` is inside `dest`, carved guest memory that is
        // identity-mapped writable at EL2 and aligned (2 MiB).
        unsafe { core::ptr::write_volatile((dest.start as *mut u64).add(i as usize), f(i * 8)) };
    }
    mm::dcache_clean_inval_poc(dest.start, dest.size);
}

/// The aligned u64 at `offset` in `src`, if inside: what a guest wrote
/// there (a descriptor of its own translation tables, read to find which
/// level of its walk failed).
pub fn read_u64(src: HostRange, offset: u64) -> Option<u64> {
    let at = src.sub(offset & !7, 8)?;
    // SAFETY: `at` is 8 bytes of host memory carved for a guest
    // (HostRange), identity-mapped readable at EL2 and 8-byte aligned; no
    // Rust object lives there, and a guest writing it meanwhile gives an
    // old or new value, never undefined behaviour of the hypervisor's.
    Some(unsafe { core::ptr::read_volatile(at.start as *const u64) })
}

/// The initrd the boot protocol handed over, as bytes.
pub fn boot_image(machine: &Machine) -> Option<&'static [u8]> {
    let initrd = machine.platform().initrd?;
    // SAFETY: the initrd range was reported by the boot device tree (a
    // `Machine` only comes from it), kept out of every allocator (mm::init
    // excludes it), identity-mapped at EL2 and never written: it is valid,
    // unchanging memory for 'static.
    Some(unsafe {
        core::slice::from_raw_parts(initrd.start().as_u64() as *const u8, initrd.size() as usize)
    })
}

/// Copies `len` bytes at byte `offset` of `src` to the same offset of
/// `dst`, reading the source fresh from memory (a guest writing with its
/// caches off leaves no line here). `len` and `offset` are multiples of
/// 64 and inside both ranges (checked: a call outside copies nothing and
/// returns false).
pub fn copy(src: HostRange, dst: HostRange, offset: u64, len: u64) -> bool {
    let ok = len > 0
        && (offset | len).is_multiple_of(64)
        && offset
            .checked_add(len)
            .is_some_and(|end| end <= src.size && end <= dst.size);
    if !ok {
        return false;
    }
    mm::dcache_clean_inval_poc(src.start + offset, len);
    // SAFETY: `[offset, offset + len)` lies inside both ranges (checked),
    // both carved guest memory identity-mapped RW at EL2, and `len` is a
    // multiple of 64. The guest may write the source meanwhile: the loads
    // take whatever each word holds (a dirty log brings the page back if
    // it changes later); no Rust reference covers either range.
    unsafe {
        asm!(
            "2:",
            "ldp {a}, {b}, [{src}], #16",
            "ldp {c}, {d}, [{src}], #16",
            "stp {a}, {b}, [{dst}], #16",
            "stp {c}, {d}, [{dst}], #16",
            "ldp {a}, {b}, [{src}], #16",
            "ldp {c}, {d}, [{src}], #16",
            "stp {a}, {b}, [{dst}], #16",
            "stp {c}, {d}, [{dst}], #16",
            "subs {n}, {n}, #64",
            "b.ne 2b",
            src = inout(reg) src.start + offset => _,
            dst = inout(reg) dst.start + offset => _,
            n = inout(reg) len => _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            options(nostack)
        );
    }
    true
}

/// The first byte offset where `a` and `b` differ (over the shorter),
/// reading `a` fresh from memory. Call only while nothing writes either
/// (a migration compares with the vCPUs paused).
pub fn first_difference(a: HostRange, b: HostRange) -> Option<u64> {
    let size = a.size.min(b.size);
    mm::dcache_clean_inval_poc(a.start, size);
    let words = (size / 8) as usize;
    // SAFETY: both ranges are carved guest memory, identity-mapped at EL2,
    // `size` bytes long and 8-byte aligned; the caller guarantees nothing
    // writes them while these slices live.
    let (a, b) = unsafe {
        (
            core::slice::from_raw_parts(a.start as *const u64, words),
            core::slice::from_raw_parts(b.start as *const u64, words),
        )
    };
    // Line by line first, then the word inside the first line that
    // differs. (XOR and OR, not `!=` on slices: that becomes a call to a
    // byte-wise `bcmp` per line.)
    let line = a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .position(|(s, d)| s.iter().zip(d).fold(0, |acc, (x, y)| acc | (x ^ y)) != 0)?;
    let word = (0..8).find(|&w| a[line * 8 + w] != b[line * 8 + w])?;
    Some(((line * 8 + word) * 8) as u64)
}
