//! The page-frame allocator: 4 KiB frames for page tables (and later guest
//! memory), behind a small API so its policy can change freely.

use hvcore::frame::{FrameAllocator, FreeError};
use hvcore::PhysAddr;
use spin::Mutex;

static FRAMES: Mutex<Option<FrameAllocator>> = Mutex::new(None);

/// Frame counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames managed.
    pub total: usize,
    /// Frames allocated.
    pub used: usize,
    /// Frames free.
    pub free: usize,
}

/// Installs the allocator (boot CPU, once, after the heap is up).
pub(super) fn init(allocator: FrameAllocator) {
    *FRAMES.lock() = Some(allocator);
}

/// Allocates one 4 KiB frame; `None` when memory is exhausted (or before
/// [`super::init`]). Its contents are not cleared.
pub fn alloc_frame() -> Option<PhysAddr> {
    FRAMES.lock().as_mut()?.alloc()
}

/// Returns a frame obtained from [`alloc_frame`].
///
/// # Errors
///
/// A [`FreeError`] if `frame` is misaligned, was never handed out, or is
/// already free: always a bug in the caller.
pub fn free_frame(frame: PhysAddr) -> Result<(), FreeError> {
    match FRAMES.lock().as_mut() {
        Some(frames) => frames.free(frame),
        None => Err(FreeError::NotOwned(frame)),
    }
}

/// Current frame counts (all zero before [`super::init`]).
pub fn frame_stats() -> FrameStats {
    FRAMES.lock().as_ref().map_or(
        FrameStats {
            total: 0,
            used: 0,
            free: 0,
        },
        |f| FrameStats {
            total: f.total_frames(),
            used: f.used_frames(),
            free: f.free_frames(),
        },
    )
}
