//! How a VM ended, and the run's exit status from how every VM and job ended.
//!
//! The exit status is the one number a script sees. Its encoding, kept in
//! this one place ([`run_status`]):
//!
//! | status | meaning |
//! |--------|---------|
//! | the guest's `SYSTEM_OFF` status | every VM powered off; the largest status of all |
//! | 0 | also: a VM asked for `SYSTEM_RESET` (not supported yet: the VM ends) |
//! | [`STATUS_FAILURE`] | a VM was stopped by the hypervisor, or a job failed |

use core::fmt;

/// The run's status when a VM or a job failed.
pub const STATUS_FAILURE: u32 = 1;

/// Why the hypervisor stopped a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A stage-2 fault could not be served (memory or retries exhausted).
    Stage2Fault,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stage2Fault => "a stage-2 fault could not be served",
        })
    }
}

/// How one VM ended. Small and `Copy`: an exit handler returns it in
/// registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmEnd {
    /// A vCPU called `SYSTEM_OFF` with this status (`x1`).
    PoweredOff(u64),
    /// A vCPU called `SYSTEM_RESET`.
    Reset,
    /// The hypervisor stopped it.
    Failed(Failure),
}

impl fmt::Display for VmEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PoweredOff(status) => write!(f, "powered off with status {status}"),
            Self::Reset => f.write_str("asked for a reset, which ends it"),
            Self::Failed(why) => write!(f, "stopped by the hypervisor: {why}"),
        }
    }
}

/// The run's exit status from how each VM ended and whether every job
/// succeeded: a failure beats any status, and of the guests' own statuses
/// the largest wins (saturated to 32 bits).
#[must_use]
pub fn run_status(vms: impl IntoIterator<Item = VmEnd>, jobs_ok: bool) -> u32 {
    let mut status = 0u32;
    let mut failed = !jobs_ok;
    for end in vms {
        match end {
            VmEnd::PoweredOff(s) => status = status.max(u32::try_from(s).unwrap_or(u32::MAX)),
            VmEnd::Reset => {}
            VmEnd::Failed(_) => failed = true,
        }
    }
    if failed {
        STATUS_FAILURE
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn statuses() {
        assert_eq!(run_status([VmEnd::PoweredOff(0)], true), 0);
        assert_eq!(run_status([VmEnd::PoweredOff(7)], true), 7);
        assert_eq!(run_status([VmEnd::PoweredOff(1 << 40)], true), u32::MAX);
        assert_eq!(run_status([VmEnd::Reset], true), 0);
        assert_eq!(run_status([VmEnd::PoweredOff(0)], false), STATUS_FAILURE);
        assert_eq!(
            run_status(
                [VmEnd::Failed(Failure::Stage2Fault), VmEnd::PoweredOff(9)],
                true
            ),
            STATUS_FAILURE
        );
        assert_eq!(
            run_status([VmEnd::PoweredOff(3), VmEnd::PoweredOff(9)], true),
            9
        );
        assert_eq!(run_status([], true), 0);
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
