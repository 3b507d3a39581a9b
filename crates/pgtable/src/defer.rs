//! Deferred freeing of table pages unlinked while shared walkers may still be inside them.
//!
//! Protocol. A shared walk announces itself with [`Deferred::enter`] before
//! it reads the root and leaves with [`Deferred::exit`] after its last
//! access. A shared walk that unlinks a subtree (a table replaced by a block)
//! does so with a compare-and-swap on the parent entry, invalidates the
//! TLB, and only then queues the subtree with [`Deferred::defer`]. Another
//! shared walker may have read the parent entry before the swap and still
//! be reading (or even writing into) the subtree; every such walker entered
//! before the swap.
//!
//! `exit` takes the queue when it brings the count of walkers inside to
//! zero, under the same lock that `enter` takes. At that moment no walker is
//! inside, and every later walker enters after the swap, so it can only
//! reach the tree through the new entry: nothing can reach a queued
//! subtree, and it is freed (by walking it, which also frees any table a
//! late walker wrote into it). Exclusive walks hold `&mut` of the tree, so no
//! shared walk is running and they free on the spot.
//!
//! Cost: one short spin-lock section at each shared walk's start and end.
//! Under a walker count that never drops to zero the queue waits; it is
//! freed at the next quiescent moment, or when the tree is destroyed.

use alloc::vec::Vec;
use spin::Mutex;

use crate::geometry::Level;

/// An unlinked subtree: its table page and the level of its entries.
pub(crate) type Subtree = (u64, Level);

#[derive(Debug, Default)]
struct State {
    inside: usize,
    queue: Vec<Subtree>,
}

/// Walkers inside the tree, and the subtrees waiting for them to leave.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    state: Mutex<State>,
}

impl Deferred {
    /// A shared walker enters the tree.
    pub(crate) fn enter(&self) {
        self.state.lock().inside += 1;
    }

    /// A shared walker leaves; returns the subtrees no walker can reach
    /// any more (the caller frees them).
    #[must_use]
    pub(crate) fn exit(&self) -> Vec<Subtree> {
        let mut s = self.state.lock();
        s.inside -= 1;
        if s.inside == 0 && !s.queue.is_empty() {
            core::mem::take(&mut s.queue)
        } else {
            Vec::new()
        }
    }

    /// Queues a subtree unlinked by a shared walker that is still inside.
    pub(crate) fn defer(&self, subtree: Subtree) {
        let mut s = self.state.lock();
        debug_assert!(s.inside > 0, "only a walker inside the tree unlinks");
        s.queue.push(subtree);
    }

    /// Everything queued, for a caller that holds the tree exclusively.
    pub(crate) fn take_all(&mut self) -> Vec<Subtree> {
        let s = self.state.get_mut();
        debug_assert_eq!(s.inside, 0);
        core::mem::take(&mut s.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_only_when_the_last_walker_leaves() {
        let d = Deferred::default();
        let l = Level::new(2).unwrap();
        d.enter();
        d.enter();
        d.defer((0x1000, l));
        assert!(d.exit().is_empty(), "one walker is still inside");
        d.enter(); // a late walker: entered after the unlink
        assert!(d.exit().is_empty());
        assert_eq!(d.exit(), vec![(0x1000, l)]);
        d.enter();
        assert!(d.exit().is_empty(), "queue was taken once");
    }
}
