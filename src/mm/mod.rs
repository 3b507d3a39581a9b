//! Memory management: the EL2 heap and the page-frame allocator, fed from
//! the RAM the device tree reports minus what is already in use. (The MMU is
//! off: every address is physical. Turning on the EL2 MMU will live here.)

mod frame;
mod heap;
mod layout;

pub use frame::{alloc_frame, frame_stats, free_frame, FrameStats};
pub use heap::{heap_stats, HeapStats};
pub use layout::{init, MmError};
