//! A token bucket for the log lines a guest can make the hypervisor print: a burst, then a steady rate, and a count of what was dropped.
//!
//! A guest that does something refused (an access in no slot, an unknown
//! system register, a `CPU_OFF` storm) gets one log line per act; without
//! a limit a guest in a loop floods the hypervisor's console. Each VM has
//! one [`LogLimit`]: it admits [`LogLimit::burst`] lines at once, then one
//! line per [`LogLimit::interval`] counter ticks, and counts the lines it
//! drops. The next line it admits after a drop carries that count
//! ([`Admit::Log`]`{ suppressed }`), so the caller prints one summary line
//! ("N lines suppressed") before it; [`LogLimit::take_suppressed`] empties
//! the count at the VM's end.
//!
//! The clock is the caller's: every call passes the current counter value
//! (the hypervisor its generic timer's `CNTPCT_EL0`), and the ticks per
//! second are given once. Nothing here reads a clock, so the host tests
//! drive time by hand. A counter that goes backwards (another CPU's
//! reading, slightly older) refills nothing and is otherwise harmless.
//!
//! Arithmetic: the bucket holds *ticks* of credit, at most
//! `burst * interval`; a line costs `interval` ticks. All in `u64` with
//! saturating operations: a counter of any value never overflows it.

/// Lines a VM may log at once before the rate applies.
pub const DEFAULT_BURST: u32 = 20;
/// Lines a VM may log per second once its burst is spent.
pub const DEFAULT_PER_SECOND: u32 = 5;

/// What [`LogLimit::admit`] decided for one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Print it; `suppressed` lines were dropped since the last one printed
    /// (print a summary first when non-zero).
    Log {
        /// Lines dropped before this one.
        suppressed: u64,
    },
    /// Drop it (counted).
    Drop,
}

/// One VM's log-line budget.
#[derive(Clone, Debug)]
pub struct LogLimit {
    /// Ticks a line costs (counter ticks per second / lines per second).
    interval: u64,
    /// Most credit the bucket holds: `burst * interval`.
    capacity: u64,
    /// Credit, in ticks.
    credit: u64,
    /// The counter at the last refill.
    last: u64,
    /// Lines dropped since the last one admitted.
    suppressed: u64,
    /// Lines dropped in all.
    dropped_total: u64,
}

impl LogLimit {
    /// A full bucket of `burst` lines, refilled at `per_second` lines per
    /// second of a counter running at `hz`, starting at counter value
    /// `now`. A zero `burst` or `per_second` counts as 1 (a limit always
    /// lets some line through).
    #[must_use]
    pub const fn new(burst: u32, per_second: u32, hz: u64, now: u64) -> Self {
        let burst = if burst == 0 { 1 } else { burst as u64 };
        let per_second = if per_second == 0 {
            1
        } else {
            per_second as u64
        };
        let interval = if hz / per_second == 0 {
            1
        } else {
            hz / per_second
        };
        let capacity = burst.saturating_mul(interval);
        Self {
            interval,
            capacity,
            credit: capacity,
            last: now,
            suppressed: 0,
            dropped_total: 0,
        }
    }

    /// The default limit ([`DEFAULT_BURST`], [`DEFAULT_PER_SECOND`]).
    #[must_use]
    pub const fn with_defaults(hz: u64, now: u64) -> Self {
        Self::new(DEFAULT_BURST, DEFAULT_PER_SECOND, hz, now)
    }

    /// Lines admitted at once from a full bucket.
    #[must_use]
    pub const fn burst(&self) -> u64 {
        self.capacity / self.interval
    }

    /// Counter ticks between two lines once the burst is spent.
    #[must_use]
    pub const fn interval(&self) -> u64 {
        self.interval
    }

    /// Decides one line at counter value `now`.
    pub fn admit(&mut self, now: u64) -> Admit {
        let elapsed = now.saturating_sub(self.last);
        if now > self.last {
            self.last = now;
        }
        self.credit = self.credit.saturating_add(elapsed).min(self.capacity);
        if self.credit < self.interval {
            self.suppressed = self.suppressed.saturating_add(1);
            self.dropped_total = self.dropped_total.saturating_add(1);
            return Admit::Drop;
        }
        self.credit -= self.interval;
        Admit::Log {
            suppressed: core::mem::take(&mut self.suppressed),
        }
    }

    /// The lines dropped since the last one admitted, and forgets them (for
    /// the summary at the VM's end).
    pub fn take_suppressed(&mut self) -> u64 {
        core::mem::take(&mut self.suppressed)
    }

    /// Every line dropped so far.
    #[must_use]
    pub const fn dropped(&self) -> u64 {
        self.dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HZ: u64 = 62_500_000;

    fn count(limit: &mut LogLimit, now: u64, n: usize) -> (usize, u64) {
        let mut logged = 0;
        let mut reported = 0;
        for _ in 0..n {
            if let Admit::Log { suppressed } = limit.admit(now) {
                logged += 1;
                reported += suppressed;
            }
        }
        (logged, reported)
    }

    #[test]
    fn burst_then_rate() {
        let mut l = LogLimit::new(10, 2, HZ, 1000);
        assert_eq!(l.burst(), 10);
        assert_eq!(l.interval(), HZ / 2);
        // A flood at one instant: the burst, then nothing.
        assert_eq!(count(&mut l, 1000, 1000), (10, 0));
        assert_eq!(l.dropped(), 990);
        // Half a second later: one line, which reports the 990 dropped.
        assert_eq!(l.admit(1000 + HZ / 2), Admit::Log { suppressed: 990 });
        assert_eq!(l.admit(1000 + HZ / 2), Admit::Drop);
        // Ten seconds of one line a millisecond: 2 per second get through.
        let mut logged = 0;
        let mut now = 1000 + HZ / 2;
        for _ in 0..10_000 {
            now += HZ / 1000;
            if matches!(l.admit(now), Admit::Log { .. }) {
                logged += 1;
            }
        }
        assert_eq!(logged, 20);
        // A long quiet time refills the burst, no more.
        now += 3600 * HZ;
        assert_eq!(count(&mut l, now, 100).0, 10);
    }

    #[test]
    fn suppressed_lines_are_reported_once() {
        let mut l = LogLimit::new(1, 1, HZ, 0);
        assert_eq!(l.admit(0), Admit::Log { suppressed: 0 });
        assert_eq!(l.admit(1), Admit::Drop);
        assert_eq!(l.admit(2), Admit::Drop);
        assert_eq!(l.admit(HZ + 2), Admit::Log { suppressed: 2 });
        assert_eq!(l.admit(HZ + 3), Admit::Drop);
        assert_eq!(l.take_suppressed(), 1);
        assert_eq!(l.take_suppressed(), 0);
        assert_eq!(l.admit(3 * HZ), Admit::Log { suppressed: 0 });
        assert_eq!(l.dropped(), 3);
    }

    #[test]
    fn degenerate_settings_still_admit() {
        let mut l = LogLimit::new(0, 0, 0, 0);
        assert_eq!(l.admit(0), Admit::Log { suppressed: 0 });
        assert_eq!(l.admit(0), Admit::Drop);
        assert_eq!(l.admit(1), Admit::Log { suppressed: 1 });
        // A counter near its end and one going backwards.
        let mut l = LogLimit::new(2, 1, u64::MAX / 4, u64::MAX - 1);
        assert!(matches!(l.admit(u64::MAX), Admit::Log { .. }));
        assert!(matches!(l.admit(5), Admit::Log { .. }));
        assert_eq!(l.admit(6), Admit::Drop);
    }

    proptest! {
        /// Over any sequence of calls, the lines admitted never exceed the
        /// burst plus the rate times the time elapsed, and every line is
        /// either admitted or counted as dropped, each dropped line
        /// reported exactly once (in a later admitted line or at the end).
        #[test]
        fn never_more_than_burst_plus_rate(
            burst in 1u32..50,
            per_second in 1u32..20,
            steps in proptest::collection::vec(0u64..HZ / 4, 1..400),
        ) {
            let mut l = LogLimit::new(burst, per_second, HZ, 0);
            let mut now = 0u64;
            let (mut logged, mut reported) = (0u64, 0u64);
            for step in &steps {
                now += step;
                if let Admit::Log { suppressed } = l.admit(now) {
                    logged += 1;
                    reported += suppressed;
                }
            }
            let bound = u64::from(burst) + now / l.interval();
            prop_assert!(logged <= bound, "{logged} > {bound}");
            reported += l.take_suppressed();
            prop_assert_eq!(logged + l.dropped(), steps.len() as u64);
            prop_assert_eq!(reported, l.dropped());
        }
    }
}
