//! Memory management: the EL2 heap, the page-frame allocator, and the EL2 MMU on tables built by the walker.

mod frame;
mod heap;
mod layout;
mod maint;
pub mod mmu;
mod tables;

pub use frame::{alloc_frame, frame_stats, free_frame, FrameStats};
pub use heap::{heap_stats, HeapStats};
pub use layout::{init, Carve, MmError};
pub use maint::{dcache_clean_inval_poc, icache_inval_all};
pub use tables::El2Mm;
