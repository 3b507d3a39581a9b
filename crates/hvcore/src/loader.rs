//! Where a VM's kernel, initramfs and device tree go in its RAM: the arm64 `Image` header read, and the boot protocol's rules applied (Linux `Documentation/arch/arm64/booting.rst`).
//!
//! Decide, then act: [`plan`] only computes a [`LoadPlan`] from the
//! memory map and the sizes, refusing with a [`LoadError`] what does not
//! fit; VM creation then copies the bytes where the plan says.
//!
//! The layout, low to high in RAM:
//!
//! - the kernel at the start of RAM (2 MiB aligned) plus the header's
//!   `text_offset`, entered at its first byte; it owns `image_size` bytes
//!   from there (its `.bss` and early page tables included), which must fit
//!   below the initramfs, however short the file is;
//! - the initramfs, page aligned, as high as it goes below the device tree
//!   (where the kernel's early allocations will not land on it);
//! - the device tree, [`DTB_FROM_END`] below the end of RAM (2 MiB
//!   aligned, at most 2 MiB long, as the protocol asks).
//!
//! A blob without the header's magic is a raw image loaded at the start of
//! RAM (the hypervisor's own test guests carry a header with
//! `text_offset` 0 too, so they load there either way).

use core::fmt;

use crate::memmap::{MemoryMap, DTB_FROM_END};

/// The header's `magic`: `"ARM\x64"`, at offset 56.
pub const MAGIC: u32 = 0x644d_5241;
/// Offset of `magic` in the header.
const MAGIC_AT: usize = 56;
/// The header's length.
pub const HEADER_LEN: usize = 64;
/// Where the kernel's 2 MiB-aligned base must be.
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// `text_offset` a kernel with `image_size` 0 (before Linux 3.17) assumes.
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// Granule the initramfs is aligned to.
const PAGE: u64 = 4096;

/// The fields of an arm64 `Image` header a loader needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image from a 2 MiB-aligned base.
    pub text_offset: u64,
    /// Bytes the kernel owns from its start (0: unknown, an old kernel).
    pub image_size: u64,
    /// `flags`: bit 0 big-endian, bits 1-2 page size, bit 3 placement.
    pub flags: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl ImageHeader {
    /// The header at the start of `image`, if it has the magic.
    #[must_use]
    pub fn parse(image: &[u8]) -> Option<Self> {
        let magic = image.get(MAGIC_AT..MAGIC_AT + 4)?;
        if u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]) != MAGIC {
            return None;
        }
        Some(Self {
            text_offset: u64_at(image, 8),
            image_size: u64_at(image, 16),
            flags: u64_at(image, 24),
        })
    }

    /// Whether the kernel is big-endian (`flags` bit 0).
    #[must_use]
    pub const fn big_endian(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Why a VM's images cannot be laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// An empty kernel.
    EmptyKernel,
    /// A big-endian kernel (the vCPUs run little-endian at EL1).
    BigEndian,
    /// `text_offset` is not 8-byte aligned, or lies past the room for
    /// images.
    TextOffset(u64),
    /// The file is longer than the header's `image_size`.
    FileBeyondImageSize {
        /// The file's length.
        file: u64,
        /// The header's `image_size`.
        image_size: u64,
    },
    /// The kernel (its `image_size`) does not fit below the device tree.
    KernelTooLarge {
        /// Bytes the kernel needs from the start of RAM.
        need: u64,
        /// Bytes there are.
        room: u64,
    },
    /// The initramfs does not fit between the kernel and the device tree.
    InitrdTooLarge {
        /// Its size.
        size: u64,
        /// Room between the kernel's end and the device tree.
        room: u64,
    },
    /// The device tree is longer than the 2 MiB the protocol allows.
    DtbTooLarge(u64),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyKernel => f.write_str("the kernel image is empty"),
            Self::BigEndian => f.write_str("the kernel is big-endian (its Image header's flags bit 0); vCPUs run little-endian"),
            Self::TextOffset(o) => write!(f, "the kernel's text_offset {o:#x} is not usable (8-byte aligned, inside RAM)"),
            Self::FileBeyondImageSize { file, image_size } => write!(
                f,
                "the kernel file ({file} bytes) is longer than its header's image_size ({image_size} bytes)"
            ),
            Self::KernelTooLarge { need, room } => write!(
                f,
                "the kernel needs {need} bytes of RAM from its base, but {room} are free below the device tree: give the VM more memory"
            ),
            Self::InitrdTooLarge { size, room } => write!(
                f,
                "the initramfs ({size} bytes) does not fit in the {room} bytes between the kernel and the device tree: give the VM more memory"
            ),
            Self::DtbTooLarge(n) => write!(f, "the device tree is {n} bytes, more than the 2 MiB the boot protocol allows"),
        }
    }
}

/// Where everything goes, in IPAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// Where the kernel's first byte goes (and the boot vCPU's entry).
    pub kernel: u64,
    /// Bytes the kernel owns from there (`image_size`, or the file's
    /// length for a raw image).
    pub kernel_span: u64,
    /// The initramfs: `(start, size)`.
    pub initrd: Option<(u64, u64)>,
    /// The device tree's address.
    pub dtb: u64,
}

impl LoadPlan {
    /// The entry point of the boot vCPU.
    #[must_use]
    pub const fn entry(&self) -> u64 {
        self.kernel
    }
}

/// Lays out a kernel of `kernel` (its bytes, for the header), an
/// initramfs of `initrd_len` bytes if any, and the device tree (checked
/// with [`check_dtb`] once built: it names the initramfs) in the RAM of
/// `map`.
///
/// # Errors
///
/// A [`LoadError`] saying what does not fit or what the header refuses.
pub fn plan(
    map: &MemoryMap,
    kernel: &[u8],
    initrd_len: Option<u64>,
) -> Result<LoadPlan, LoadError> {
    if kernel.is_empty() {
        return Err(LoadError::EmptyKernel);
    }
    let file = kernel.len() as u64;
    let (offset, span) = match ImageHeader::parse(kernel) {
        None => (0, file),
        Some(h) if h.big_endian() => return Err(LoadError::BigEndian),
        Some(h) if h.image_size == 0 => (LEGACY_TEXT_OFFSET, file),
        Some(h) => {
            if h.image_size < file {
                return Err(LoadError::FileBeyondImageSize {
                    file,
                    image_size: h.image_size,
                });
            }
            (h.text_offset, h.image_size)
        }
    };
    // RAM starts 2 MiB aligned (memmap), so the base is the start of RAM.
    let dtb = map.dtb();
    if !offset.is_multiple_of(8) || offset >= map.image_room() {
        return Err(LoadError::TextOffset(offset));
    }
    let kernel_ipa = map.ram_base + offset;
    let kernel_end = kernel_ipa
        .checked_add(span)
        .filter(|&end| end <= dtb)
        .ok_or(LoadError::KernelTooLarge {
            need: offset.saturating_add(span),
            room: dtb - map.ram_base,
        })?;
    let initrd = match initrd_len {
        None | Some(0) => None,
        Some(size) => {
            let start = dtb
                .checked_sub(size)
                .map(|s| s & !(PAGE - 1))
                .filter(|&s| s >= kernel_end)
                .ok_or(LoadError::InitrdTooLarge {
                    size,
                    room: dtb - kernel_end,
                })?;
            Some((start, size))
        }
    };
    Ok(LoadPlan {
        kernel: kernel_ipa,
        kernel_span: span,
        initrd,
        dtb,
    })
}

/// Checks that a device tree of `len` bytes fits where [`LoadPlan::dtb`]
/// puts it (the protocol's 2 MiB).
///
/// # Errors
///
/// [`LoadError::DtbTooLarge`] if not.
pub const fn check_dtb(len: u64) -> Result<(), LoadError> {
    if len > DTB_FROM_END {
        Err(LoadError::DtbTooLarge(len))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec::Vec;

    /// An `Image` of `len` bytes with a header.
    fn image(len: usize, text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut v = std::vec![0u8; len.max(HEADER_LEN)];
        v[8..16].copy_from_slice(&text_offset.to_le_bytes());
        v[16..24].copy_from_slice(&image_size.to_le_bytes());
        v[24..32].copy_from_slice(&flags.to_le_bytes());
        v[56..60].copy_from_slice(b"ARM\x64");
        v.truncate(len.max(HEADER_LEN));
        v
    }

    const MIB: u64 = 1 << 20;

    fn map(mib: u64) -> MemoryMap {
        MemoryMap::new(mib * MIB, 1)
    }

    #[test]
    fn the_header() {
        let h = ImageHeader::parse(&image(4096, 0x8_0000, 0x1ab_0000, 0xa)).unwrap();
        assert_eq!(
            h,
            ImageHeader {
                text_offset: 0x8_0000,
                image_size: 0x1ab_0000,
                flags: 0xa
            }
        );
        assert!(!h.big_endian());
        assert_eq!(ImageHeader::parse(&[0; 4096]), None);
        assert_eq!(ImageHeader::parse(&image(64, 0, 0, 0)[..59]), None);
        let mut wrong = image(64, 0, 0, 0);
        wrong[59] = 0x65;
        assert_eq!(ImageHeader::parse(&wrong), None);
    }

    #[test]
    fn linux_with_an_initramfs() {
        // Debian 6.1's numbers: a 28 MiB image_size, a larger file is refused.
        let m = map(512);
        let k = image(4 << 20, 0, 0x1ab_0000, 0xa);
        let p = plan(&m, &k, Some(3_000_001)).unwrap();
        assert_eq!(p.kernel, m.ram_base);
        assert_eq!(p.entry(), m.ram_base);
        assert_eq!(p.kernel_span, 0x1ab_0000);
        assert_eq!(p.dtb, m.ram_base + 510 * MIB);
        let (start, size) = p.initrd.unwrap();
        assert_eq!(size, 3_000_001);
        assert_eq!(start % PAGE, 0);
        assert!(start + size <= p.dtb && p.dtb - (start + size) < PAGE);
    }

    #[test]
    fn text_offset_and_legacy_kernels() {
        let m = map(64);
        let p = plan(&m, &image(8192, 0x8_0000, 0x10_0000, 0), None).unwrap();
        assert_eq!(p.kernel, m.ram_base + 0x8_0000);
        assert_eq!(p.initrd, None);
        // image_size 0: text_offset 0x80000 whatever the field says.
        let p = plan(&m, &image(8192, 0, 0, 0), None).unwrap();
        assert_eq!((p.kernel, p.kernel_span), (m.ram_base + 0x8_0000, 8192));
        // A raw image (no magic) at the start of RAM, spanning its length.
        let p = plan(&m, &[1u8; 5000], Some(0)).unwrap();
        assert_eq!(
            (p.kernel, p.kernel_span, p.initrd),
            (m.ram_base, 5000, None)
        );
        assert_eq!(
            plan(&m, &image(8192, 4, 0x10_0000, 0), None),
            Err(LoadError::TextOffset(4))
        );
        assert_eq!(
            plan(&m, &image(8192, 62 * MIB, 0x10_0000, 0), None),
            Err(LoadError::TextOffset(62 * MIB))
        );
    }

    #[test]
    fn refusals() {
        let m = map(64);
        assert_eq!(plan(&m, &[], None), Err(LoadError::EmptyKernel));
        assert_eq!(
            plan(&m, &image(8192, 0, 0x10_0000, 1), None),
            Err(LoadError::BigEndian)
        );
        assert_eq!(
            plan(&m, &image(8192, 0, 4096, 0), None),
            Err(LoadError::FileBeyondImageSize {
                file: 8192,
                image_size: 4096
            })
        );
        // The size check uses image_size, not the file's length.
        assert_eq!(
            plan(&m, &image(8192, 0, 63 * MIB, 0), None),
            Err(LoadError::KernelTooLarge {
                need: 63 * MIB,
                room: 62 * MIB
            })
        );
        assert!(plan(&m, &image(8192, 0, 62 * MIB, 0), None).is_ok());
        assert_eq!(
            plan(&m, &image(8192, 0, 60 * MIB, 0), Some(3 * MIB)),
            Err(LoadError::InitrdTooLarge {
                size: 3 * MIB,
                room: 2 * MIB
            })
        );
        assert!(plan(&m, &image(8192, 0, 60 * MIB, 0), Some(2 * MIB)).is_ok());
        assert_eq!(
            plan(&m, &image(8192, 0, 60 * MIB, 0), Some(u64::MAX)),
            Err(LoadError::InitrdTooLarge {
                size: u64::MAX,
                room: 2 * MIB
            })
        );
        assert_eq!(
            check_dtb(DTB_FROM_END + 1),
            Err(LoadError::DtbTooLarge(DTB_FROM_END + 1))
        );
        assert_eq!(check_dtb(DTB_FROM_END), Ok(()));
        assert!(LoadError::EmptyKernel.to_string().contains("empty"));
    }

    proptest! {
        /// Whatever the sizes, a plan keeps everything in RAM, in order,
        /// without overlap, aligned as the protocol asks.
        #[test]
        fn plans_never_overlap(
            half_mib in 2u64..512,
            text_offset in 0u64..(4 * MIB),
            image_size in 0u64..(1 << 31),
            file in 64usize..70_000,
            initrd in proptest::option::of(0u64..(1 << 31)),
        ) {
            let m = map(half_mib * 2);
            let k = image(file, text_offset & !7, image_size, 0);
            if let Ok(p) = plan(&m, &k, initrd) {
                let ram_end = m.ram_base + m.ram_size;
                prop_assert!(p.kernel >= m.ram_base);
                prop_assert_eq!((p.kernel - m.ram_base) % 8, 0);
                prop_assert!(p.kernel_span >= file as u64);
                let mut end = p.kernel + p.kernel_span;
                if let Some((start, size)) = p.initrd {
                    prop_assert_eq!(start % PAGE, 0);
                    prop_assert!(start >= end);
                    end = start + size;
                }
                prop_assert!(end <= p.dtb);
                prop_assert!(p.dtb + DTB_FROM_END <= ram_end);
                prop_assert_eq!(p.dtb % KERNEL_ALIGN, 0);
            }
        }
    }
}
