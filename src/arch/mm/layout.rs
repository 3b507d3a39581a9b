//! Boot-time memory layout: RAM minus the image, the DTB, the initrd and the
//! reserved ranges; the heap is carved from it and the rest become frames.

use core::fmt;

use hvcore::addr::FRAME_SIZE;
use hvcore::frame::FrameAllocator;
use hvcore::range::{PhysRange, RangeError, RangeSet};
use log::{debug, info};

use super::{frame, heap};
use alloc::vec::Vec;
use hvcore::platform::MAX_RANGES;

use crate::arch::guest_mem::HostRange;
use crate::arch::machine::Machine;

/// Size of the EL2 heap.
const HEAP_SIZE: u64 = 4 * 1024 * 1024;
const BLOCK_2M: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

unsafe extern "C" {
    /// First byte of the image (`linker.ld`).
    static _image_start: u8;
    /// First byte past the image, including `.bss` and the stacks.
    static _image_end: u8;
}

/// Why memory could not be set up.
#[derive(Debug)]
pub enum MmError {
    /// Too many holes in memory to track.
    Ranges(RangeError),
    /// No free block large enough for the heap.
    NoRoomForHeap {
        /// Usable bytes, in total.
        usable: u64,
    },
    /// No free, 2 MiB-aligned block large enough for the guest's memory.
    NoRoomForGuest {
        /// Bytes asked for.
        want: u64,
        /// Usable bytes, in total.
        usable: u64,
    },
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ranges(e) => write!(f, "memory layout: {e}"),
            Self::NoRoomForHeap { usable } => write!(
                f,
                "no contiguous {} KiB for the heap ({usable} bytes usable in total)",
                HEAP_SIZE / 1024
            ),
            Self::NoRoomForGuest { want, usable } => write!(
                f,
                "no contiguous {} MiB for guest memory ({} MiB usable in total): give QEMU more -m or the guests less memory (guest.mem=, a VM's mem=)",
                want >> 20,
                usable >> 20
            ),
        }
    }
}

/// The hypervisor image in memory, `.bss` and stacks included.
pub fn image_range() -> PhysRange {
    let start = (&raw const _image_start) as u64;
    let end = (&raw const _image_end) as u64;
    // The linker script places _image_end after _image_start.
    PhysRange::new(start, end).unwrap_or_default()
}

/// A block of host memory to carve out for a guest before the frame
/// allocator takes the rest.
#[derive(Clone, Copy, Debug)]
pub struct Carve {
    /// What it is for (log lines).
    pub what: &'static str,
    /// Its size (a multiple of 2 MiB).
    pub size: u64,
    /// Try a 1 GiB aligned block first (guest RAM: 1 GiB blocks can then
    /// map it), else 2 MiB aligned.
    pub gib_aligned: bool,
}

/// Sets up the heap and the frame allocator from the machine's memory,
/// after carving each of `carves` out, in order. Boot CPU only, once.
///
/// # Errors
///
/// An [`MmError`] if the layout cannot be represented or there is no room
/// for the heap or a carve.
pub fn init(machine: &Machine, carves: &[Carve]) -> Result<Vec<HostRange>, MmError> {
    let platform = machine.platform();
    let image = image_range();
    let mut usable: RangeSet<MAX_RANGES> = platform.memory.clone();
    let in_use = [
        ("image", Some(image)),
        ("dtb", Some(platform.dtb)),
        ("initrd", platform.initrd),
    ]
    .into_iter()
    .filter_map(|(what, range)| Some((what, range?)))
    .chain(
        platform
            .reserved
            .as_slice()
            .iter()
            .map(|r| ("reserved", *r)),
    );
    for (what, range) in in_use {
        debug!("mm: excluding {what} {range}");
        usable.remove(range).map_err(MmError::Ranges)?;
    }
    usable.shrink_to_alignment(FRAME_SIZE);
    info!("image: {image} ({} KiB)", image.size() / 1024);

    let heap = usable
        .take(HEAP_SIZE, FRAME_SIZE)
        .ok_or(MmError::NoRoomForHeap {
            usable: usable.total_size(),
        })?;
    // SAFETY: `heap` was just removed from `usable`, which excludes the
    // image (with stacks), the DTB, the initrd and reserved memory, and is
    // the only source of frames below: the heap owns it exclusively. RAM
    // is accessible at its physical address with the MMU off.
    unsafe { heap::init(heap) };
    debug!("heap: {heap}");

    let mut carved = Vec::with_capacity(carves.len());
    for carve in carves {
        let range = carve
            .gib_aligned
            .then(|| usable.take(carve.size, GIB))
            .flatten()
            .or_else(|| usable.take(carve.size, BLOCK_2M))
            .ok_or(MmError::NoRoomForGuest {
                want: carve.size,
                usable: usable.total_size(),
            })?;
        info!("mm: {} {range}", carve.what);
        carved.push(HostRange::carved(range));
    }

    for range in usable.as_slice() {
        debug!("frames: {range} ({} frames)", range.size() / FRAME_SIZE);
    }
    frame::init(FrameAllocator::new(usable.as_slice()));
    let stats = frame::frame_stats();
    info!(
        "mm: heap {} KiB, {} free frames ({} MiB)",
        HEAP_SIZE / 1024,
        stats.free,
        stats.free as u64 * FRAME_SIZE / (1024 * 1024)
    );
    Ok(carved)
}
