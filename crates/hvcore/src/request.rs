//! Asking a vCPU to leave its guest: requests, the vCPU's mode, the kick that makes a running vCPU exit (or wakes a blocked one), and the VM-wide pause built on them.
//!
//! Protocol (the shape of Linux KVM's `vcpu->mode` and `vcpu->requests`):
//!
//! - Right before every entry the vCPU's CPU sets its mode to *in guest*
//!   and **then** reads its requests ([`Requests::try_enter`]); if any is
//!   pending it goes back *outside* and serves them instead of entering. A
//!   VM-wide pause is a request too ([`PAUSE`]), made of every vCPU, so the
//!   entry reads one word.
//! - Every exit sets the mode to *outside* first ([`Requests::exited`]).
//! - Before it waits for an interrupt, the vCPU sets its mode to
//!   *blocked* and **then** checks again whether anything woke it
//!   ([`Requests::try_block`]).
//! - A requester sets the request (or the pause flag) and **then** reads
//!   the mode ([`Requests::make`], [`PauseGate::pause`]): a vCPU *in
//!   guest* is kicked once (its mode goes to *exiting*, so further
//!   requests send no second kick until it has entered again), a *blocked*
//!   one is kicked awake.
//!
//! Why no request is missed: each side's store and load are sequentially
//! consistent. If the requester read *outside*, that read precedes the
//! vCPU's next *in guest* (or *blocked*) store in the single total order,
//! so the vCPU's following load sees the request. A vCPU that is outside
//! runs no guest code and checks before it enters or blocks.
//!
//! The kick itself is the caller's ([`Kick`]): an SGI to the vCPU's
//! physical CPU on the machine, nothing (or a flag) in host tests. Both
//! the hypervisor and `migrate`'s host test use this module.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};

/// The vCPU runs hypervisor code (or nothing).
const OUTSIDE: u8 = 0;
/// The vCPU runs guest code, or is about to.
const IN_GUEST: u8 = 1;
/// It was kicked out of the guest and has not noticed yet.
const EXITING: u8 = 2;
/// It waits for an interrupt.
const BLOCKED: u8 = 3;

/// The request bit of a VM-wide pause ([`PauseGate::pause`]): a held vCPU
/// waits while [`PauseGate::is_paused`]. The other bits are the caller's.
pub const PAUSE: u32 = 1 << 31;

/// Makes a vCPU leave its guest, or wakes it if it waits.
pub trait Kick {
    /// Sends the kick to vCPU `vcpu`'s physical CPU.
    fn kick(&self, vcpu: usize);
}

/// A vCPU's mode and pending requests (bit flags of the caller's choice).
#[derive(Debug, Default)]
pub struct Requests {
    mode: AtomicU8,
    pending: AtomicU32,
}

impl Requests {
    /// A vCPU outside its guest, with nothing requested.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            mode: AtomicU8::new(OUTSIDE),
            pending: AtomicU32::new(0),
        }
    }

    /// The requester's side: adds `bits` to the vCPU's requests, then
    /// kicks it with `kick` if it runs guest code (once per entry) or is
    /// blocked. Returns whether it kicked.
    pub fn make(&self, bits: u32, vcpu: usize, kick: &impl Kick) -> bool {
        self.pending.fetch_or(bits, SeqCst);
        self.kick_if_needed(vcpu, kick)
    }

    /// Kicks the vCPU if it runs guest code (the first kick since it
    /// entered) or is blocked; returns whether it did.
    fn kick_if_needed(&self, vcpu: usize, kick: &impl Kick) -> bool {
        let needed = match self.mode.load(SeqCst) {
            IN_GUEST => self
                .mode
                .compare_exchange(IN_GUEST, EXITING, SeqCst, SeqCst)
                .is_ok(),
            BLOCKED => true,
            _ => false,
        };
        if needed {
            kick.kick(vcpu);
        }
        needed
    }

    /// The vCPU's side, right before entering: `true` if it may enter (its
    /// mode is now *in guest*); `false` if requests are pending (it stays
    /// outside: [`Requests::take`] them and serve them, [`PAUSE`] by
    /// waiting while the gate is paused).
    #[inline]
    pub fn try_enter(&self) -> bool {
        self.mode.store(IN_GUEST, SeqCst);
        if self.pending.load(SeqCst) == 0 {
            return true;
        }
        self.mode.store(OUTSIDE, SeqCst);
        false
    }

    /// The vCPU's side, on every exit: it runs no guest code now.
    pub fn exited(&self) {
        self.mode.store(OUTSIDE, SeqCst);
    }

    /// The vCPU's side, before it waits for an interrupt: `true` if it may
    /// wait (its mode is now *blocked*, so any request kicks it awake);
    /// `false`, with the mode back outside, if a request is already
    /// pending or `wake` (checked after the mode is set) says it has
    /// something to do.
    pub fn try_block(&self, wake: impl FnOnce() -> bool) -> bool {
        self.mode.store(BLOCKED, SeqCst);
        if self.pending.load(SeqCst) != 0 || wake() {
            self.mode.store(OUTSIDE, SeqCst);
            return false;
        }
        true
    }

    /// The vCPU's side, after waiting: outside again.
    pub fn unblock(&self) {
        self.mode.store(OUTSIDE, SeqCst);
    }

    /// Withdraws requests `bits` (those nobody must act on any more).
    pub fn clear(&self, bits: u32) {
        self.pending.fetch_and(!bits, SeqCst);
    }

    /// Takes (and clears) requests `bits`, if any of them is pending: a
    /// vCPU that serves one kind on its own path (one load when none is).
    pub fn take_bits(&self, bits: u32) -> bool {
        self.pending.load(SeqCst) & bits != 0 && self.pending.fetch_and(!bits, SeqCst) & bits != 0
    }

    /// Takes (and clears) the pending requests.
    pub fn take(&self) -> u32 {
        self.pending.swap(0, SeqCst)
    }

    /// Whether the vCPU may be running guest code now (in guest, or kicked
    /// and not yet out).
    #[must_use]
    pub fn in_guest(&self) -> bool {
        matches!(self.mode.load(SeqCst), IN_GUEST | EXITING)
    }
}

/// A VM-wide pause: while it holds, no vCPU of the VM enters its guest.
#[derive(Debug, Default)]
pub struct PauseGate {
    paused: AtomicBool,
    kicks: AtomicU64,
}

impl PauseGate {
    /// No pause.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            paused: AtomicBool::new(false),
            kicks: AtomicU64::new(0),
        }
    }

    /// Whether the VM is paused.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.paused.load(SeqCst)
    }

    /// Stops every vCPU in `vcpus` (with its index, for `kick`) from
    /// running guest code: sets the pause, makes the [`PAUSE`] request of
    /// each, kicks those in the guest, and returns how many it kicked. The
    /// caller then waits until [`PauseGate::all_out`] (a kicked vCPU needs
    /// a moment to exit).
    pub fn pause<'a>(
        &self,
        vcpus: impl IntoIterator<Item = (usize, &'a Requests)>,
        kick: &impl Kick,
    ) -> u32 {
        self.paused.store(true, SeqCst);
        let mut kicked = 0;
        for (id, r) in vcpus {
            if r.make(PAUSE, id, kick) {
                kicked += 1;
            }
        }
        self.kicks.fetch_add(u64::from(kicked), SeqCst);
        kicked
    }

    /// Whether no vCPU of `vcpus` runs guest code: after [`PauseGate::pause`],
    /// none will until [`PauseGate::resume`].
    pub fn all_out<'a>(&self, vcpus: impl IntoIterator<Item = &'a Requests>) -> bool {
        vcpus.into_iter().all(|r| !r.in_guest())
    }

    /// Lets the vCPUs enter again (the caller wakes any that wait).
    pub fn resume(&self) {
        self.paused.store(false, SeqCst);
    }

    /// Kicks the pauses sent so far.
    #[must_use]
    pub fn kicks(&self) -> u64 {
        self.kicks.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::vec::Vec;

    /// Counts kicks per vCPU.
    #[derive(Default)]
    struct Counter(Vec<AtomicUsize>);

    impl Counter {
        fn new(n: usize) -> Self {
            Self((0..n).map(|_| AtomicUsize::new(0)).collect())
        }
        fn get(&self, i: usize) -> usize {
            self.0[i].load(SeqCst)
        }
    }

    impl Kick for Counter {
        fn kick(&self, vcpu: usize) {
            self.0[vcpu].fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn a_request_kicks_a_running_vcpu_once() {
        let (r, gate, k) = (Requests::new(), PauseGate::new(), Counter::new(1));
        assert!(!r.make(1, 0, &k), "outside: no kick");
        assert!(!r.try_enter());
        assert!(!r.in_guest(), "held vCPUs stay outside");
        assert_eq!(r.take(), 1);
        assert!(r.try_enter());
        assert!(r.in_guest());
        assert!(r.make(2, 0, &k), "in guest: kicked");
        assert!(!r.make(4, 0, &k), "already kicked: no second kick");
        assert_eq!(k.get(0), 1);
        assert!(r.in_guest(), "exiting still counts as in the guest");
        r.exited();
        assert!(!r.in_guest());
        assert!(!r.try_enter());
        assert_eq!(r.take(), 6);
        assert_eq!(r.take(), 0);
        assert!(!gate.is_paused());
    }

    #[test]
    fn blocking() {
        let (r, k) = (Requests::new(), Counter::new(1));
        assert!(!r.try_block(|| true), "woken before it waits");
        assert!(r.try_block(|| false));
        assert!(r.make(1, 0, &k), "blocked: kicked awake");
        assert!(r.make(1, 0, &k), "every request wakes a blocked vCPU");
        assert_eq!(k.get(0), 2);
        r.unblock();
        assert!(!r.try_block(|| false), "a request is pending");
        r.take();
        assert!(r.try_block(|| false));
    }

    #[test]
    fn pause_kicks_only_the_vcpus_in_the_guest() {
        let gate = PauseGate::new();
        let vcpus: Vec<Requests> = (0..3).map(|_| Requests::new()).collect();
        let k = Counter::new(3);
        assert!(vcpus[0].try_enter());
        assert!(vcpus[2].try_enter());
        let kicked = gate.pause(vcpus.iter().enumerate(), &k);
        assert_eq!(kicked, 2);
        assert_eq!((k.get(0), k.get(1), k.get(2)), (1, 0, 1));
        assert!(!gate.all_out(&vcpus));
        vcpus[0].exited();
        vcpus[2].exited();
        assert!(gate.all_out(&vcpus));
        assert!(!vcpus[1].try_enter(), "paused: held");
        assert_eq!(vcpus[1].take(), PAUSE);
        assert!(gate.is_paused());
        gate.resume();
        assert!(!gate.is_paused());
        assert!(vcpus[1].try_enter());
        assert_eq!(gate.kicks(), 2);
    }

    /// Real threads: vCPUs enter and exit as fast as they can while a
    /// pauser pauses and resumes. Whenever the pauser has seen every vCPU
    /// out, no vCPU may be in its guest (a vCPU counts itself in between
    /// a successful `try_enter` and its `exited`).
    #[test]
    fn no_vcpu_slips_into_a_paused_vm() {
        const VCPUS: usize = 3;
        let rounds = if cfg!(miri) { 3 } else { 300 };
        let gate = Arc::new(PauseGate::new());
        let vcpus: Arc<Vec<Requests>> = Arc::new((0..VCPUS).map(|_| Requests::new()).collect());
        let inside = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..VCPUS)
            .map(|id| {
                let (gate, vcpus, inside, stop) =
                    (gate.clone(), vcpus.clone(), inside.clone(), stop.clone());
                std::thread::spawn(move || {
                    let r = &vcpus[id];
                    while !stop.load(SeqCst) {
                        if r.try_enter() {
                            inside.fetch_add(1, SeqCst);
                            std::hint::spin_loop();
                            inside.fetch_sub(1, SeqCst);
                            r.exited();
                        } else if r.take() & PAUSE != 0 {
                            while gate.is_paused() && !stop.load(SeqCst) {
                                std::thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        let k = Counter::new(VCPUS);
        for _ in 0..rounds {
            gate.pause(vcpus.iter().enumerate(), &k);
            while !gate.all_out(vcpus.iter()) {
                std::hint::spin_loop();
            }
            for _ in 0..50 {
                assert_eq!(
                    inside.load(SeqCst),
                    0,
                    "a vCPU runs guest code in a paused VM"
                );
            }
            gate.resume();
            std::thread::yield_now();
        }
        stop.store(true, SeqCst);
        for t in threads {
            t.join().unwrap();
        }
    }
}
