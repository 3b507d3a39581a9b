//! A vCPU's PSCI power state, shared by its own CPU and every vCPU that calls `CPU_ON` or `AFFINITY_INFO` on it.
//!
//! States: *off*, *claimed* (a `CPU_ON` won the race and is writing the
//! entry point), *on pending* (published: the target's CPU may start it),
//! *on*. Transitions, each one atomic:
//!
//! | who | from | to | how |
//! |-----|------|----|-----|
//! | `CPU_ON` caller | off | claimed | compare-and-swap: one caller wins |
//! | the same caller | claimed | on pending | store (release) after the entry point |
//! | the target's CPU | on pending | on | compare-and-swap (acquire): it reads the entry point the winner wrote |
//! | the vCPU itself (`CPU_OFF`), or a reset | on | off | store |
//!
//! Every `CPU_ON` that loses the race, or finds the vCPU anywhere but off,
//! gets `ALREADY_ON`, as Linux KVM answers: of concurrent `CPU_ON`s to one
//! vCPU exactly one gets `SUCCESS`, and the target starts at that one's
//! entry point. `AFFINITY_INFO` reports claimed and on pending alike as
//! `ON_PENDING`.
//!
//! ## The last vCPU off
//!
//! When every vCPU of a VM has called `CPU_OFF`, nothing can ever run it
//! again (only a running vCPU can call `CPU_ON`): the VM ends
//! (`VmEnd::NoVcpu`) instead of waiting for good. Each VM counts its vCPUs
//! that are *not off* ([`Live`]): [`Power::cpu_on`] adds one when it claims
//! a vCPU (before the vCPU is published, so before it can run), and a vCPU
//! that leaves its run loop powered off takes one away ([`Live::went_off`])
//! while its state still says *on*, then stores *off*. The decrement that
//! takes the count to 0 is the last vCPU going off, and it is final:
//!
//! - a `CPU_ON` in flight was made by a running vCPU, which is counted, and
//!   it added its target (one `fetch_add`, before its own `CPU_OFF` can
//!   take its own one away): the count cannot reach 0 while the target is
//!   claimed, pending or on;
//! - once it is 0 no vCPU runs guest code, so no `CPU_ON` can follow (the
//!   hypervisor's own start of vCPU 0, at creation and after a reboot, is
//!   the only other claim).
//!
//! A reboot (`SYSTEM_RESET`) also turns every vCPU off, through its reset
//! request, and must not end the VM: the vCPU whose `CPU_OFF` takes the
//! count to 0 ends it only if no reboot is under way. The leader of a
//! reboot sets the VM's *resetting* flag before it takes its own one away,
//! so the `CPU_OFF` whose decrement follows it (the same atomic, acquire
//! and release) sees the flag; the reboot clears the flag only after every
//! vCPU's state reads *off*, which the `CPU_OFF` stores after its check.

use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::psci::{ret, AffinityState};
use crate::slots::MemSlot;

const OFF: u8 = 0;
const CLAIMED: u8 = 1;
const ON_PENDING: u8 = 2;
const ON: u8 = 3;

/// Where a vCPU that was turned on starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// Its first instruction (IPA, MMU off).
    pub entry: u64,
    /// Its `x0`.
    pub context: u64,
}

/// One vCPU's power state.
#[derive(Debug, Default)]
pub struct Power {
    state: AtomicU8,
    entry: AtomicU64,
    context: AtomicU64,
}

impl Power {
    /// A vCPU that is off.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(OFF),
            entry: AtomicU64::new(0),
            context: AtomicU64::new(0),
        }
    }

    /// `CPU_ON`: claims the vCPU if it is off, counts it in its VM's
    /// `live`, and publishes where it starts. Returns `SUCCESS` for the one
    /// caller that won, `ALREADY_ON` for every other (the caller then wakes
    /// the target's CPU).
    pub fn cpu_on(&self, start: Start, live: &Live) -> i64 {
        if self
            .state
            .compare_exchange(OFF, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return ret::ALREADY_ON;
        }
        // Before the vCPU can run: it is counted before it can go off.
        live.0.fetch_add(1, Ordering::AcqRel);
        self.entry.store(start.entry, Ordering::Relaxed);
        self.context.store(start.context, Ordering::Relaxed);
        // Release: whoever takes the start (acquire) sees entry and context.
        self.state.store(ON_PENDING, Ordering::Release);
        ret::SUCCESS
    }

    /// The target's side: if a `CPU_ON` is pending, marks the vCPU on and
    /// returns where it starts.
    pub fn take_start(&self) -> Option<Start> {
        self.state
            .compare_exchange(ON_PENDING, ON, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(Start {
            entry: self.entry.load(Ordering::Relaxed),
            context: self.context.load(Ordering::Relaxed),
        })
    }

    /// `CPU_OFF` by the vCPU itself, or a reset: the vCPU is off, and a
    /// later `CPU_ON` may start it again.
    pub fn off(&self) {
        self.state.store(OFF, Ordering::Release);
    }

    /// What `AFFINITY_INFO` reports.
    #[must_use]
    pub fn state(&self) -> AffinityState {
        match self.state.load(Ordering::Acquire) {
            ON => AffinityState::On,
            CLAIMED | ON_PENDING => AffinityState::OnPending,
            _ => AffinityState::Off,
        }
    }

    /// Whether the vCPU is on (started and not off).
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.state.load(Ordering::Acquire) == ON
    }

    /// Whether a `CPU_ON` is waiting for the target to start.
    #[must_use]
    pub fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == ON_PENDING
    }
}

/// How many of a VM's vCPUs are not off (claimed by a `CPU_ON`, pending,
/// or on): see *The last vCPU off* above.
#[derive(Debug, Default)]
pub struct Live(AtomicUsize);

impl Live {
    /// No vCPU on.
    #[must_use]
    pub const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// A vCPU that was on leaves its run loop powered off: call before its
    /// [`Power::off`]. True if it was the last one not off.
    pub fn went_off(&self) -> bool {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a vCPU went off that was never counted");
        before == 1
    }

    /// vCPUs not off now (a snapshot).
    #[must_use]
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Checks a `CPU_ON` entry point: it must be a 4-byte aligned address in
/// guest RAM (the vCPU starts there with its MMU off). Returns
/// `INVALID_ADDRESS` otherwise.
///
/// # Errors
///
/// `ret::INVALID_ADDRESS` for an unaligned entry point or one outside `ram`.
pub const fn check_entry(ram: &MemSlot, entry: u64) -> Result<(), i64> {
    if !entry.is_multiple_of(4) || !ram.contains(entry) {
        return Err(ret::INVALID_ADDRESS);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::vec::Vec;

    const START: Start = Start {
        entry: 0x4000_1000,
        context: 7,
    };

    #[test]
    fn one_vcpu_goes_round() {
        let p = Power::new();
        let live = Live::new();
        assert_eq!(p.state(), AffinityState::Off);
        assert_eq!(p.take_start(), None, "nothing pending");
        assert_eq!(p.cpu_on(START, &live), ret::SUCCESS);
        assert_eq!(p.state(), AffinityState::OnPending);
        assert!(p.is_pending() && !p.is_on());
        assert_eq!(
            p.cpu_on(
                Start {
                    entry: 0,
                    context: 0
                },
                &live
            ),
            ret::ALREADY_ON
        );
        assert_eq!(p.take_start(), Some(START));
        assert_eq!(p.take_start(), None, "taken once");
        assert!(p.is_on());
        assert_eq!(p.state(), AffinityState::On);
        assert_eq!(p.cpu_on(START, &live), ret::ALREADY_ON);
        assert_eq!(live.count(), 1);
        assert!(live.went_off(), "the only vCPU was the last");
        p.off();
        assert_eq!(p.state(), AffinityState::Off);
        let again = Start {
            entry: 0x4000_2000,
            context: 9,
        };
        assert_eq!(p.cpu_on(again, &live), ret::SUCCESS);
        assert_eq!(live.count(), 1);
        assert_eq!(
            p.take_start(),
            Some(again),
            "the new entry point, not the old"
        );
    }

    /// Concurrent `CPU_ON`s to one vCPU: exactly one `SUCCESS`, every
    /// other `ALREADY_ON`, and the target starts where the winner asked,
    /// with the winner's context (never a mix of two callers').
    #[test]
    fn concurrent_cpu_on_has_one_winner() {
        const CALLERS: usize = 4;
        let rounds = if cfg!(miri) { 5 } else { 500 };
        let p = Arc::new(Power::new());
        let live = Arc::new(Live::new());
        for round in 0..rounds {
            let barrier = Arc::new(Barrier::new(CALLERS + 1));
            let callers: Vec<_> = (0..CALLERS)
                .map(|i| {
                    let (p, barrier, live) =
                        (Arc::clone(&p), Arc::clone(&barrier), Arc::clone(&live));
                    std::thread::spawn(move || {
                        barrier.wait();
                        let start = Start {
                            entry: 0x4000_0000 + i as u64 * 0x1000,
                            context: i as u64,
                        };
                        (i, p.cpu_on(start, &live))
                    })
                })
                .collect();
            // The target polls for its start meanwhile.
            let target = {
                let (p, barrier) = (Arc::clone(&p), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    loop {
                        if let Some(s) = p.take_start() {
                            return s;
                        }
                        std::hint::spin_loop();
                    }
                })
            };
            let results: Vec<(usize, i64)> =
                callers.into_iter().map(|h| h.join().unwrap()).collect();
            let winners: Vec<usize> = results
                .iter()
                .filter(|&&(_, r)| r == ret::SUCCESS)
                .map(|&(i, _)| i)
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            assert!(results
                .iter()
                .all(|&(_, r)| r == ret::SUCCESS || r == ret::ALREADY_ON));
            let started = target.join().unwrap();
            let w = winners[0] as u64;
            assert_eq!(
                started,
                Start {
                    entry: 0x4000_0000 + w * 0x1000,
                    context: w
                },
                "round {round}"
            );
            assert_eq!(live.count(), 1, "round {round}: the winner counted once");
            assert!(live.went_off());
            p.off();
        }
    }

    /// `CPU_ON`/`CPU_OFF` storms on real threads, as the run loop does
    /// them: each vCPU thread, when started, turns on random others, then
    /// goes off (`went_off`, then `off`). The VM ends exactly once, and
    /// only when every other vCPU is off: no `CPU_ON` in flight is lost.
    #[test]
    fn the_last_vcpu_off_ends_the_vm_once() {
        use std::sync::atomic::AtomicBool;
        const VCPUS: usize = 4;
        let rounds = if cfg!(miri) { 2 } else { 50 };
        for round in 0..rounds {
            let vcpus: Arc<Vec<Power>> = Arc::new((0..VCPUS).map(|_| Power::new()).collect());
            let live = Arc::new(Live::new());
            let ended = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicBool::new(false));
            assert_eq!(vcpus[0].cpu_on(START, &live), ret::SUCCESS);
            let threads: Vec<_> = (0..VCPUS)
                .map(|me| {
                    let (vcpus, live, ended, done) = (
                        Arc::clone(&vcpus),
                        Arc::clone(&live),
                        Arc::clone(&ended),
                        Arc::clone(&done),
                    );
                    std::thread::spawn(move || {
                        let mut runs = 0u64;
                        let mut seed = (round * VCPUS + me) as u64 | 1;
                        while !done.load(Ordering::Acquire) {
                            if vcpus[me].take_start().is_none() {
                                std::thread::yield_now();
                                continue;
                            }
                            runs += 1;
                            // Fewer starts each run: the storm dies out.
                            for _ in 0..(8u64.saturating_sub(runs)) {
                                seed ^= seed << 13;
                                seed ^= seed >> 7;
                                seed ^= seed << 17;
                                let target = (seed % VCPUS as u64) as usize;
                                let _ = vcpus[target].cpu_on(START, &live);
                            }
                            if live.went_off() {
                                for (i, v) in vcpus.iter().enumerate() {
                                    if i != me {
                                        assert_eq!(
                                            v.state(),
                                            AffinityState::Off,
                                            "round {round}: vcpu{i} not off at the end"
                                        );
                                    }
                                }
                                ended.fetch_add(1, Ordering::AcqRel);
                                done.store(true, Ordering::Release);
                            }
                            vcpus[me].off();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(ended.load(Ordering::Acquire), 1, "round {round}");
            assert_eq!(live.count(), 0);
        }
    }

    #[test]
    fn entry_points() {
        let ram = MemSlot {
            name: "ram",
            ipa: 0x4000_0000,
            size: 0x100_0000,
            host: 0x8000_0000,
            readonly: false,
        };
        assert_eq!(check_entry(&ram, 0x4000_0000), Ok(()));
        assert_eq!(check_entry(&ram, 0x40ff_fffc), Ok(()));
        assert_eq!(check_entry(&ram, 0x4100_0000), Err(ret::INVALID_ADDRESS));
        assert_eq!(check_entry(&ram, 0x3fff_fffc), Err(ret::INVALID_ADDRESS));
        assert_eq!(
            check_entry(&ram, 0x4000_0002),
            Err(ret::INVALID_ADDRESS),
            "unaligned"
        );
        assert_eq!(check_entry(&ram, 0x4000_0001), Err(ret::INVALID_ADDRESS));
    }
}
