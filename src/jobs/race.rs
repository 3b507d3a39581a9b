//! The race window (`migrate.window=`): a test knob that holds one CPU's stage-2 compare-and-swaps open until another CPU changes the entry, so that the races between the migration's write-protects and the vCPUs' faults (or the ager's sweeps) happen on demand. They happen without it, rarely.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use pgtable::Pte;

use crate::arch::percpu::{self, CpuId};
use crate::arch::s2mm;

/// Polls a window on a young entry waits at most.
static SPINS: AtomicU32 = AtomicU32::new(0);
/// The CPU whose walks hold the window open.
static CPU: AtomicUsize = AtomicUsize::new(usize::MAX);
/// An old entry's window is `spins / OLD_ENTRY_SHARE` polls. A young entry
/// (touched since the last aging sweep) is the one whose access flag the
/// ager is about to clear, and it waits the whole window; an old one
/// changes only if a vCPU touches the page now (an access-flag fault), and
/// waiting long on each of those slowed the rounds until a loaded machine's
/// guest finished before its migration did. Both kinds make races: with
/// young entries only, a loaded machine whose ager had just swept saw none.
const OLD_ENTRY_SHARE: u32 = 250;
/// Windows held open, and those in which the entry changed.
static WINDOWS: AtomicU64 = AtomicU64::new(0);
static WINDOWS_CHANGED: AtomicU64 = AtomicU64::new(0);

/// Windows held open so far, and how many saw their entry change.
pub fn windows() -> (u64, u64) {
    (WINDOWS.load(Relaxed), WINDOWS_CHANGED.load(Relaxed))
}

/// Holds every compare-and-swap of `cpu`'s stage-2 walks open until
/// another CPU changes the entry, or `spins` polls on a young entry and
/// [`OLD_ENTRY_SHARE`] of that on an old one; 0 closes the window.
pub fn set(cpu: CpuId, spins: u32) {
    CPU.store(cpu.index(), Relaxed);
    SPINS.store(spins, Relaxed);
    s2mm::set_cas_hook((spins > 0).then_some(hold as fn(&AtomicU64, u64)));
}

/// The window itself: on the chosen CPU's walks only.
fn hold(entry: &AtomicU64, old: u64) {
    if percpu::current_id().index() != CPU.load(Relaxed) {
        return;
    }
    let spins = SPINS.load(Relaxed);
    let spins = if Pte::from_bits(old).young() {
        spins
    } else {
        spins / OLD_ENTRY_SHARE
    };
    WINDOWS.fetch_add(1, Relaxed);
    // Until another CPU changes the entry (the swap then loses), or `spins`
    // polls.
    if (0..spins).any(|_| entry.load(Relaxed) != old) {
        WINDOWS_CHANGED.fetch_add(1, Relaxed);
    }
}
