//! What the hypervisor is handed to run (QEMU's `-initrd`): one raw guest image, or a bundle of named parts (a kernel, its initramfs, for one VM or several) that `cargo xtask bundle` writes.
//!
//! A bundle, all numbers little-endian:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0 | 8 | magic `"HYPBNDL\0"` |
//! | 8 | 4 | version, 1 |
//! | 12 | 4 | number of parts `n` (at most [`MAX_PARTS`]) |
//! | 16 | 24 × `n` | parts: kind (4: 1 kernel, 2 initramfs, 3 settings), VM index (4), offset (8), size (8) |
//!
//! Each part's bytes lie at its offset from the start of the bundle, inside
//! it. A blob that does not start with the magic is one raw image: the
//! kernel of VM 0 (the test guests, or an arm64 Linux `Image`, are passed
//! that way). Every field is checked: the bundle comes from a file on the
//! command line, and a guest never sees it.

use core::fmt;

/// The magic that opens a bundle.
pub const MAGIC: [u8; 8] = *b"HYPBNDL\0";
/// The version this module reads and writes.
pub const VERSION: u32 = 1;
/// Most parts a bundle may have.
pub const MAX_PARTS: usize = 32;
/// Size of the header before the parts table.
pub const HEADER: usize = 16;
/// Size of one entry of the parts table.
pub const ENTRY: usize = 24;

/// What a part is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The kernel (or raw image) a VM boots.
    Kernel,
    /// An initramfs for the VM's kernel.
    Initrd,
    /// The VM's settings: one line of text (`crate::vmspec`).
    Config,
}

impl Kind {
    /// Its number in the parts table.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::Kernel => 1,
            Self::Initrd => 2,
            Self::Config => 3,
        }
    }

    const fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Kernel),
            2 => Some(Self::Initrd),
            3 => Some(Self::Config),
            _ => None,
        }
    }
}

/// One part of a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// What it is.
    pub kind: Kind,
    /// The VM it is for.
    pub vm: u32,
    /// Its bytes.
    pub bytes: &'a [u8],
}

/// Why a bundle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Shorter than its header or parts table.
    Truncated,
    /// A version this hypervisor does not read.
    Version(u32),
    /// More parts than [`MAX_PARTS`].
    TooManyParts(u32),
    /// Part `index` has an unknown kind.
    Kind {
        /// Which part.
        index: usize,
        /// Its kind field.
        code: u32,
    },
    /// Part `index` lies (partly) outside the bundle.
    OutOfBounds {
        /// Which part.
        index: usize,
    },
    /// Two parts of the same kind for one VM.
    Duplicate {
        /// The VM.
        vm: u32,
        /// The kind.
        kind: Kind,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("guest bundle: truncated"),
            Self::Version(v) => write!(f, "guest bundle: version {v}, expected {VERSION}"),
            Self::TooManyParts(n) => write!(f, "guest bundle: {n} parts, at most {MAX_PARTS}"),
            Self::Kind { index, code } => {
                write!(f, "guest bundle: part {index} has unknown kind {code}")
            }
            Self::OutOfBounds { index } => {
                write!(f, "guest bundle: part {index} lies outside the bundle")
            }
            Self::Duplicate { vm, kind } => {
                write!(f, "guest bundle: two {kind:?} parts for VM {vm}")
            }
        }
    }
}

/// A parsed bundle (or a raw image, as a one-part bundle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bundle<'a> {
    parts: [Option<Part<'a>>; MAX_PARTS],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> Bundle<'a> {
    /// Reads `blob`: a bundle if it starts with [`MAGIC`], else one raw
    /// image (VM 0's kernel).
    ///
    /// # Errors
    ///
    /// A [`BundleError`] for a bundle whose header or parts do not hold.
    pub fn parse(blob: &'a [u8]) -> Result<Self, BundleError> {
        let mut parts = [None; MAX_PARTS];
        if !blob.starts_with(&MAGIC) {
            parts[0] = Some(Part {
                kind: Kind::Kernel,
                vm: 0,
                bytes: blob,
            });
            return Ok(Self { parts });
        }
        let version = u32_at(blob, 8).ok_or(BundleError::Truncated)?;
        if version != VERSION {
            return Err(BundleError::Version(version));
        }
        let count = u32_at(blob, 12).ok_or(BundleError::Truncated)?;
        if count as usize > MAX_PARTS {
            return Err(BundleError::TooManyParts(count));
        }
        for (index, slot) in parts.iter_mut().enumerate().take(count as usize) {
            let at = HEADER + ENTRY * index;
            let field = |o| u64_at(blob, at + o).ok_or(BundleError::Truncated);
            let code = u32_at(blob, at).ok_or(BundleError::Truncated)?;
            let vm = u32_at(blob, at + 4).ok_or(BundleError::Truncated)?;
            let (offset, size) = (field(8)?, field(16)?);
            let kind = Kind::from_code(code).ok_or(BundleError::Kind { index, code })?;
            let bytes = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(o, s)| blob.get(o..o.checked_add(s)?))
                .ok_or(BundleError::OutOfBounds { index })?;
            *slot = Some(Part { kind, vm, bytes });
        }
        let bundle = Self { parts };
        for (i, a) in bundle.iter().enumerate() {
            if bundle
                .iter()
                .skip(i + 1)
                .any(|b| b.vm == a.vm && b.kind == a.kind)
            {
                return Err(BundleError::Duplicate {
                    vm: a.vm,
                    kind: a.kind,
                });
            }
        }
        Ok(bundle)
    }

    /// Every part.
    pub fn iter(&self) -> impl Iterator<Item = &Part<'a>> {
        self.parts.iter().flatten()
    }

    /// The VM indices that have a kernel, in increasing order.
    pub fn vms(&self) -> impl Iterator<Item = u32> {
        let mut ids = [u32::MAX; MAX_PARTS];
        for (slot, part) in ids
            .iter_mut()
            .zip(self.iter().filter(|p| p.kind == Kind::Kernel))
        {
            *slot = part.vm;
        }
        // At most one kernel per VM (parse refuses two): no duplicates.
        ids.sort_unstable();
        ids.into_iter().take_while(|&id| id != u32::MAX)
    }

    /// The part of `kind` for VM `vm`.
    #[must_use]
    pub fn part(&self, vm: u32, kind: Kind) -> Option<&'a [u8]> {
        self.iter()
            .find(|p| p.vm == vm && p.kind == kind)
            .map(|p| p.bytes)
    }
}

/// Writes a bundle of `parts` (host side: `cargo xtask bundle`): the header,
/// the table, then each part's bytes, every part starting on a 4 KiB
/// boundary.
#[must_use]
pub fn write(parts: &[(Kind, u32, &[u8])]) -> alloc::vec::Vec<u8> {
    let mut out = alloc::vec::Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    let mut offset = (HEADER + ENTRY * parts.len()).next_multiple_of(4096);
    for (kind, vm, bytes) in parts {
        out.extend_from_slice(&kind.code().to_le_bytes());
        out.extend_from_slice(&vm.to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        offset = (offset + bytes.len()).next_multiple_of(4096);
    }
    for (_, _, bytes) in parts {
        out.resize(out.len().next_multiple_of(4096), 0);
        out.extend_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn a_raw_image_is_vm0s_kernel() {
        let b = Bundle::parse(b"raw image").unwrap();
        assert_eq!(b.part(0, Kind::Kernel), Some(&b"raw image"[..]));
        assert_eq!(b.part(0, Kind::Initrd), None);
        assert_eq!(b.iter().count(), 1);
    }

    #[test]
    fn round_trip() {
        let blob = write(&[
            (Kind::Kernel, 0, b"kernel0"),
            (Kind::Initrd, 0, b"cpio"),
            (Kind::Kernel, 1, b"kernel1"),
        ]);
        let b = Bundle::parse(&blob).unwrap();
        assert_eq!(b.part(0, Kind::Kernel), Some(&b"kernel0"[..]));
        assert_eq!(b.part(0, Kind::Initrd), Some(&b"cpio"[..]));
        assert_eq!(b.part(1, Kind::Kernel), Some(&b"kernel1"[..]));
        assert_eq!(b.part(1, Kind::Initrd), None);
        let starts: std::vec::Vec<usize> = b
            .iter()
            .map(|p| p.bytes.as_ptr() as usize - blob.as_ptr() as usize)
            .collect();
        assert!(starts.iter().all(|s| s % 4096 == 0), "{starts:?}");
    }

    #[test]
    fn several_vms_with_settings() {
        let blob = write(&[
            (Kind::Kernel, 1, b"k1"),
            (Kind::Config, 1, b"cpus=2 mem=64M"),
            (Kind::Kernel, 0, b"k0"),
            (Kind::Config, 0, b"cpus=0-1 mem=128M"),
        ]);
        let b = Bundle::parse(&blob).unwrap();
        assert_eq!(b.vms().collect::<std::vec::Vec<_>>(), [0, 1]);
        assert_eq!(b.part(1, Kind::Config), Some(&b"cpus=2 mem=64M"[..]));
        assert_eq!(
            Bundle::parse(b"raw")
                .unwrap()
                .vms()
                .collect::<std::vec::Vec<_>>(),
            [0]
        );
    }

    #[test]
    fn refusals() {
        let good = write(&[(Kind::Kernel, 0, b"k"), (Kind::Initrd, 0, b"i")]);
        assert_eq!(Bundle::parse(&good[..12]), Err(BundleError::Truncated));
        assert_eq!(Bundle::parse(&good[..30]), Err(BundleError::Truncated));
        let mut v = good.clone();
        v[8] = 2;
        assert_eq!(Bundle::parse(&v), Err(BundleError::Version(2)));
        let mut v = good.clone();
        v[12..16].copy_from_slice(&33u32.to_le_bytes());
        assert_eq!(Bundle::parse(&v), Err(BundleError::TooManyParts(33)));
        let mut v = good.clone();
        v[16] = 9;
        assert_eq!(
            Bundle::parse(&v),
            Err(BundleError::Kind { index: 0, code: 9 })
        );
        let mut v = good.clone();
        v[16 + 16..16 + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            Bundle::parse(&v),
            Err(BundleError::OutOfBounds { index: 0 })
        );
        let mut v = good.clone();
        v[16 + 8..16 + 16].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        assert_eq!(
            Bundle::parse(&v),
            Err(BundleError::OutOfBounds { index: 0 })
        );
        let dup = write(&[(Kind::Kernel, 3, b"a"), (Kind::Kernel, 3, b"b")]);
        assert_eq!(
            Bundle::parse(&dup),
            Err(BundleError::Duplicate {
                vm: 3,
                kind: Kind::Kernel
            })
        );
        assert!(BundleError::Truncated
            .to_string()
            .starts_with("guest bundle:"));
    }
}
