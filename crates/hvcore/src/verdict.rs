//! How a VM ended, and the run's verdict: one exit status from how every VM and job ended, and the console line that carries it.
//!
//! The exit status is the one number a script sees, so its encoding is
//! kept in this one place ([`STATUSES`], checked against the table in
//! `docs/guest-abi.md`). A guest's own result and anything else can never
//! be confused: a guest's `SYSTEM_OFF` status is 0 to [`GUEST_MAX`] (a
//! larger one saturates, so no non-zero status ever reads as 0), and
//! every other outcome has a number of its own above that.
//!
//! No QEMU exit device reaches the shell without handing the guest a way
//! to the host (semihosting), so the hypervisor prints its verdict as one
//! console line, [`Verdict`], and powers off; `scripts/run.sh` reads the
//! line (the last one with its token) and exits with its status. The line carries a token from the
//! hypervisor's own command line, which no guest can read: a guest that
//! prints a line like it cannot forge one that counts.

use core::fmt;

/// Largest status a guest's `SYSTEM_OFF` gives the run; a larger one is
/// reported as this.
pub const GUEST_MAX: u8 = 63;
/// `scripts/run.sh` refused its options (nothing ran).
pub const USAGE: u8 = 64;
/// The hypervisor stopped a VM (a guest that cannot go on: a stage-2
/// fault that cannot be served, an exception vector that cannot be
/// fetched).
pub const VM_STOPPED: u8 = 65;
/// A VM asked for `SYSTEM_RESET` when `reset=` allowed no more reboots.
pub const VM_RESET: u8 = 66;
/// Every vCPU of a VM turned itself off (`CPU_OFF`), none left to end it.
pub const NO_VCPU: u8 = 67;
/// A job on the VM failed (a migration's copy did not match).
pub const JOB_FAILED: u8 = 68;
/// The run was ended from the console (the escape sequence).
pub const CONSOLE: u8 = 69;
/// The hypervisor failed: a boot error, a panic, an exception at EL2.
pub const HYP_FAILURE: u8 = 70;
/// QEMU ended without a verdict line (`scripts/run.sh`).
pub const NO_VERDICT: u8 = 71;
/// The run took longer than its time-out (`scripts/run.sh`, as `timeout`).
pub const TIMEOUT: u8 = 124;

/// Every exit status and its meaning, in the order of the table in
/// `docs/guest-abi.md` (a test compares the two).
pub const STATUSES: [(&str, &str); 11] = [
    (
        "0",
        "every VM powered off with status 0, and every job succeeded",
    ),
    (
        "1-63",
        "the largest `SYSTEM_OFF` status of the VMs (63 also for any larger one)",
    ),
    ("64", "`scripts/run.sh` refused its options; nothing ran"),
    (
        "65",
        "the hypervisor stopped a VM (a guest that cannot go on)",
    ),
    (
        "66",
        "a VM asked for `SYSTEM_RESET` past its `reset=` limit (`exit`: at once)",
    ),
    ("67", "every vCPU of a VM called `CPU_OFF`"),
    ("68", "a job on a VM failed (the migration's copy)"),
    ("69", "ended from the console (`Ctrl-A x`)"),
    (
        "70",
        "the hypervisor failed: boot error, panic, exception at EL2",
    ),
    ("71", "QEMU ended with no verdict line"),
    ("124", "the time-out (`RUN_TIMEOUT`) expired"),
];

/// Why the hypervisor stopped a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A stage-2 fault could not be served (memory or retries exhausted).
    Stage2Fault,
    /// A vCPU's exception vector could not be fetched: each exception
    /// taken there takes another (a real CPU locks up).
    VectorLockup,
    /// Its reboot could not reload it.
    Reboot,
    /// Its stage-2 tables needed more pages than its budget (`budget=`).
    Stage2Budget,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stage2Fault => "a stage-2 fault could not be served",
            Self::VectorLockup => "an exception vector could not be fetched (the vCPU locked up)",
            Self::Reboot => "its reboot could not reload it",
            Self::Stage2Budget => "its stage-2 table budget is spent",
        })
    }
}

/// How one VM ended. Small and `Copy`: an exit handler returns it in
/// registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmEnd {
    /// A vCPU called `SYSTEM_OFF` with this status (`x1`).
    PoweredOff(u64),
    /// A vCPU called `SYSTEM_RESET` and `reset=` allowed no (more)
    /// reboots.
    Reset,
    /// Every vCPU called `CPU_OFF`.
    NoVcpu,
    /// The hypervisor stopped it.
    Failed(Failure),
    /// The run was ended from the console.
    Console,
}

impl VmEnd {
    /// The run's status if this were its only VM.
    #[must_use]
    pub fn status(self) -> u8 {
        match self {
            Self::PoweredOff(s) => u8::try_from(s.min(u64::from(GUEST_MAX))).unwrap_or(GUEST_MAX),
            Self::Reset => VM_RESET,
            Self::NoVcpu => NO_VCPU,
            Self::Failed(_) => VM_STOPPED,
            Self::Console => CONSOLE,
        }
    }
}

impl fmt::Display for VmEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PoweredOff(status) => write!(f, "powered off with status {status}"),
            Self::Reset => f.write_str("asked for a reset, which ends it (reset=: no reboot left)"),
            Self::NoVcpu => {
                f.write_str("every vCPU turned itself off (CPU_OFF): none is left to run it")
            }
            Self::Failed(why) => write!(f, "stopped by the hypervisor: {why}"),
            Self::Console => f.write_str("ended from the console"),
        }
    }
}

/// How bad a status is, to choose the one a run with several VMs reports:
/// the hypervisor's own failure first, then a VM it stopped, a failed job,
/// a reset, a VM with no vCPU left, the console, and last a guest's own
/// status (the largest).
const fn severity(status: u8) -> u16 {
    match status {
        HYP_FAILURE => 1000,
        VM_STOPPED => 900,
        JOB_FAILED => 800,
        VM_RESET => 700,
        NO_VCPU => 600,
        CONSOLE => 500,
        s => s as u16,
    }
}

/// The run's exit status from how each VM ended and whether every job
/// succeeded: the most severe of them (the order is `severity`'s).
#[must_use]
pub fn run_status(vms: impl IntoIterator<Item = VmEnd>, jobs_ok: bool) -> u8 {
    let job = if jobs_ok { 0 } else { JOB_FAILED };
    vms.into_iter()
        .map(VmEnd::status)
        .fold(job, |a, b| if severity(b) > severity(a) { b } else { a })
}

/// Longest token [`Verdict`] lines carry.
pub const TOKEN_MAX: usize = 32;

/// Whether `token` may be a verdict token: 1 to [`TOKEN_MAX`] ASCII
/// letters and digits (it is matched as a fixed string by the scripts).
#[must_use]
pub fn valid_token(token: &str) -> bool {
    (1..=TOKEN_MAX).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The verdict line: `run: verdict TOKEN: exit status N`, printed once, last,
/// before the hypervisor powers off. Without a token (none was given, or
/// the run failed before its command line was read) the token reads `-`.
#[derive(Clone, Copy, Debug)]
pub struct Verdict<'a> {
    /// The token from `verdict.token=`, if any.
    pub token: Option<&'a str>,
    /// The run's exit status.
    pub status: u8,
}

/// What every verdict line starts with.
pub const PREFIX: &str = "run: verdict ";

impl fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.token.filter(|t| valid_token(t)).unwrap_or("-");
        write!(f, "{PREFIX}{token}: exit status {}", self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn one_vm() {
        assert_eq!(run_status([VmEnd::PoweredOff(0)], true), 0);
        assert_eq!(run_status([VmEnd::PoweredOff(7)], true), 7);
        assert_eq!(run_status([VmEnd::PoweredOff(63)], true), 63);
        // Never 0, never mistaken for another outcome.
        for big in [64, 70, 256, 1 << 40, u64::MAX] {
            assert_eq!(
                run_status([VmEnd::PoweredOff(big)], true),
                GUEST_MAX,
                "{big}"
            );
        }
        assert_eq!(run_status([VmEnd::Reset], true), VM_RESET);
        assert_eq!(run_status([VmEnd::NoVcpu], true), NO_VCPU);
        assert_eq!(run_status([VmEnd::Console], true), CONSOLE);
        assert_eq!(
            run_status([VmEnd::Failed(Failure::VectorLockup)], true),
            VM_STOPPED
        );
        assert_eq!(run_status([], true), 0);
        assert_eq!(run_status([], false), JOB_FAILED);
    }

    #[test]
    fn the_most_severe_wins() {
        let failed = VmEnd::Failed(Failure::Stage2Fault);
        assert_eq!(run_status([failed, VmEnd::PoweredOff(9)], true), VM_STOPPED);
        assert_eq!(run_status([VmEnd::PoweredOff(9), failed], true), VM_STOPPED);
        assert_eq!(run_status([VmEnd::PoweredOff(0)], false), JOB_FAILED);
        assert_eq!(run_status([failed], false), VM_STOPPED);
        assert_eq!(
            run_status([VmEnd::PoweredOff(3), VmEnd::PoweredOff(9)], true),
            9
        );
        assert_eq!(
            run_status([VmEnd::PoweredOff(9), VmEnd::PoweredOff(3)], true),
            9
        );
        assert_eq!(
            run_status([VmEnd::Console, VmEnd::PoweredOff(63)], true),
            CONSOLE
        );
        assert_eq!(run_status([VmEnd::NoVcpu, VmEnd::Console], true), NO_VCPU);
        assert_eq!(run_status([VmEnd::Reset, VmEnd::NoVcpu], true), VM_RESET);
        assert_eq!(run_status([VmEnd::Reset], false), JOB_FAILED);
    }

    #[test]
    fn every_status_is_distinct_and_in_one_byte() {
        let all = [
            GUEST_MAX,
            USAGE,
            VM_STOPPED,
            VM_RESET,
            NO_VCPU,
            JOB_FAILED,
            CONSOLE,
            HYP_FAILURE,
            NO_VERDICT,
            TIMEOUT,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| b != a), "{a} twice");
        }
        assert!(all[1..].iter().all(|&s| s > GUEST_MAX));
    }

    #[test]
    fn the_document_has_the_same_table() {
        let doc = include_str!("../../../docs/guest-abi.md");
        let rows: std::vec::Vec<(std::string::String, std::string::String)> = doc
            .split("<!-- statuses -->")
            .nth(1)
            .expect("docs/guest-abi.md marks its status table with <!-- statuses -->")
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| status") && !l.starts_with("|--"))
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: std::vec::Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].to_string(), cells[2].to_string())
            })
            .collect();
        let want: std::vec::Vec<(std::string::String, std::string::String)> = STATUSES
            .iter()
            .map(|(s, m)| (s.to_string(), m.to_string()))
            .collect();
        assert_eq!(rows, want);
        // And the table agrees with the constants.
        for (code, c) in [
            (USAGE, "64"),
            (VM_STOPPED, "65"),
            (VM_RESET, "66"),
            (NO_VCPU, "67"),
            (JOB_FAILED, "68"),
            (CONSOLE, "69"),
            (HYP_FAILURE, "70"),
            (NO_VERDICT, "71"),
            (TIMEOUT, "124"),
        ] {
            assert_eq!(code.to_string(), c);
            assert!(STATUSES.iter().any(|(s, _)| *s == c));
        }
    }

    #[test]
    fn verdict_lines() {
        let v = Verdict {
            token: Some("ab12"),
            status: 7,
        };
        assert_eq!(v.to_string(), "run: verdict ab12: exit status 7");
        let bad = Verdict {
            token: Some("a b"),
            status: 0,
        };
        assert_eq!(bad.to_string(), "run: verdict -: exit status 0");
        assert_eq!(
            Verdict {
                token: None,
                status: HYP_FAILURE
            }
            .to_string(),
            "run: verdict -: exit status 70"
        );
        assert!(valid_token("Z9"));
        assert!(!valid_token(""));
        assert!(!valid_token(&"a".repeat(33)));
        assert!(valid_token(&"a".repeat(32)));
        assert!(!valid_token("a-b"));
    }

    #[test]
    fn ends_read() {
        assert_eq!(
            VmEnd::PoweredOff(3).to_string(),
            "powered off with status 3"
        );
        assert_eq!(
            VmEnd::Failed(Failure::Stage2Fault).to_string(),
            "stopped by the hypervisor: a stage-2 fault could not be served"
        );
        assert!(core::mem::size_of::<VmEnd>() <= 16, "returned in registers");
    }
}
