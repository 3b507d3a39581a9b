//! The guest's PSCI 1.1 calls over the SMC Calling Convention: decoding, return codes, `PSCI_FEATURES`.
//!
//! Which functions exist and what they return is `docs/guest-abi.md`; this
//! module turns a guest's `x0`-`x3` into a [`Call`]. SMC32 function ids
//! (`0x84..`) take 32-bit arguments: the upper halves of `x1`-`x3` are
//! ignored, as the convention requires. SMC64 ids (`0xc4..`) take all
//! 64 bits.

use core::fmt;

/// Function ids (`w0`) of the PSCI functions this hypervisor implements.
pub mod fid {
    /// `PSCI_VERSION`.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// `CPU_SUSPEND`, SMC32.
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    /// `CPU_SUSPEND`, SMC64.
    pub const CPU_SUSPEND_64: u32 = 0xc400_0001;
    /// `CPU_OFF`.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// `CPU_ON`, SMC32.
    pub const CPU_ON_32: u32 = 0x8400_0003;
    /// `CPU_ON`, SMC64.
    pub const CPU_ON_64: u32 = 0xc400_0003;
    /// `AFFINITY_INFO`, SMC32.
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    /// `AFFINITY_INFO`, SMC64.
    pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
    /// `MIGRATE_INFO_TYPE`.
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    /// `SYSTEM_OFF`.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// `SYSTEM_RESET`.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// `PSCI_FEATURES`.
    pub const PSCI_FEATURES: u32 = 0x8400_000a;

    /// Every id above: the functions `PSCI_FEATURES` reports as present.
    pub const ALL: [u32; 12] = [
        PSCI_VERSION,
        CPU_SUSPEND_32,
        CPU_SUSPEND_64,
        CPU_OFF,
        CPU_ON_32,
        CPU_ON_64,
        AFFINITY_INFO_32,
        AFFINITY_INFO_64,
        MIGRATE_INFO_TYPE,
        SYSTEM_OFF,
        SYSTEM_RESET,
        PSCI_FEATURES,
    ];
}

/// PSCI return codes, as the signed value the guest reads in `x0`.
pub mod ret {
    /// Success.
    pub const SUCCESS: i64 = 0;
    /// The function is not implemented.
    pub const NOT_SUPPORTED: i64 = -1;
    /// A parameter is wrong (e.g. an unknown MPIDR).
    pub const INVALID_PARAMETERS: i64 = -2;
    /// The call is not allowed.
    pub const DENIED: i64 = -3;
    /// `CPU_ON` for a CPU that is already on.
    pub const ALREADY_ON: i64 = -4;
    /// `CPU_ON` for a CPU that is already being turned on.
    pub const ON_PENDING: i64 = -5;
    /// The implementation failed.
    pub const INTERNAL_FAILURE: i64 = -6;
    /// The target is not present.
    pub const NOT_PRESENT: i64 = -7;
    /// The target is disabled.
    pub const DISABLED: i64 = -8;
    /// An entry point address is not valid.
    pub const INVALID_ADDRESS: i64 = -9;
}

/// The value `PSCI_VERSION` returns: major 1, minor 1.
pub const VERSION_1_1: u64 = 0x1_0001;

/// `MIGRATE_INFO_TYPE`'s answer: no Trusted OS needs migrating (2).
pub const MIGRATE_INFO_NONE: i64 = 2;

/// `SMCCC_VERSION`'s function id: `PSCI_FEATURES` reports it, as PSCI 1.0
/// asks, so that a caller learns it may use the SMCCC 1.1 calls.
const SMCCC_VERSION: u32 = 0x8000_0000;

/// A vCPU's state as `AFFINITY_INFO` reports it (the value in `x0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityState {
    /// Running.
    On = 0,
    /// Off.
    Off = 1,
    /// `CPU_ON` was accepted and the vCPU has not started yet.
    OnPending = 2,
}

/// A decoded PSCI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciCall {
    /// `PSCI_VERSION`.
    Version,
    /// `PSCI_FEATURES`: is the function `fid` (`w1`) implemented?
    Features {
        /// The function id asked about.
        fid: u32,
    },
    /// `CPU_ON`: start vCPU `target` at `entry` with `x0 = context`.
    CpuOn {
        /// Target MPIDR (affinity fields).
        target: u64,
        /// Entry point (IPA).
        entry: u64,
        /// Context id, handed to the new vCPU in `x0`.
        context: u64,
    },
    /// `CPU_SUSPEND`: wait for an interrupt in a low-power state (every
    /// state is taken as standby: the call returns when the vCPU has an
    /// interrupt to take).
    CpuSuspend {
        /// The requested state (`w1`), not interpreted.
        power_state: u32,
    },
    /// `CPU_OFF`: stop the calling vCPU.
    CpuOff,
    /// `MIGRATE_INFO_TYPE`.
    MigrateInfoType,
    /// `AFFINITY_INFO`: the state of `target`.
    AffinityInfo {
        /// Target MPIDR (affinity fields).
        target: u64,
        /// Lowest affinity level asked about (only 0 is supported).
        lowest_level: u64,
    },
    /// `SYSTEM_OFF`: end the run.
    SystemOff {
        /// The run's exit status: `x1` (this hypervisor's convention; 32 bits).
        status: u64,
    },
    /// `SYSTEM_RESET`.
    SystemReset,
}

/// An `HVC` from the guest, by function id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// A PSCI function this hypervisor implements.
    Psci(PsciCall),
    /// Any other function id: answer [`ret::NOT_SUPPORTED`].
    Unknown {
        /// The function id (`w0`).
        fid: u32,
    },
}

/// Function id bit 30: the SMC64 calling convention.
const SMC64: u32 = 1 << 30;

/// Decodes a call from the guest's `x0`-`x3`. The function id is `w0`;
/// the upper half of `x0` is ignored, as SMCCC requires.
#[must_use]
pub const fn decode(regs: &[u64; 4]) -> Call {
    let fid = regs[0] as u32;
    // SMC32 functions see only the low 32 bits of their arguments.
    let mask = if fid & SMC64 == 0 {
        0xffff_ffff
    } else {
        u64::MAX
    };
    let (a1, a2, a3) = (regs[1] & mask, regs[2] & mask, regs[3] & mask);
    Call::Psci(match fid {
        fid::PSCI_VERSION => PsciCall::Version,
        fid::PSCI_FEATURES => PsciCall::Features { fid: a1 as u32 },
        fid::CPU_ON_32 | fid::CPU_ON_64 => PsciCall::CpuOn {
            target: a1,
            entry: a2,
            context: a3,
        },
        fid::CPU_OFF => PsciCall::CpuOff,
        fid::CPU_SUSPEND_32 | fid::CPU_SUSPEND_64 => PsciCall::CpuSuspend {
            power_state: a1 as u32,
        },
        fid::MIGRATE_INFO_TYPE => PsciCall::MigrateInfoType,
        fid::AFFINITY_INFO_32 | fid::AFFINITY_INFO_64 => PsciCall::AffinityInfo {
            target: a1,
            lowest_level: a2,
        },
        fid::SYSTEM_OFF => PsciCall::SystemOff { status: a1 },
        fid::SYSTEM_RESET => PsciCall::SystemReset,
        _ => return Call::Unknown { fid },
    })
}

/// What `PSCI_FEATURES` answers for `fid`: [`ret::SUCCESS`] for a function
/// in the ABI table (both SMC32 and SMC64 ids where both exist) and for
/// `SMCCC_VERSION`; for `CPU_SUSPEND` its flags, 0 (the original
/// power-state format, no OS-initiated mode); [`ret::NOT_SUPPORTED`]
/// otherwise.
#[must_use]
pub fn features(fid: u32) -> i64 {
    if fid == SMCCC_VERSION || fid::ALL.contains(&fid) {
        ret::SUCCESS
    } else {
        ret::NOT_SUPPORTED
    }
}

impl fmt::Display for PsciCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Version => f.write_str("PSCI_VERSION"),
            Self::Features { fid } => write!(f, "PSCI_FEATURES({fid:#x})"),
            Self::CpuOn {
                target,
                entry,
                context,
            } => write!(
                f,
                "CPU_ON(target {target:#x}, entry {entry:#x}, context {context:#x})"
            ),
            Self::CpuOff => f.write_str("CPU_OFF"),
            Self::CpuSuspend { power_state } => write!(f, "CPU_SUSPEND({power_state:#x})"),
            Self::MigrateInfoType => f.write_str("MIGRATE_INFO_TYPE"),
            Self::AffinityInfo {
                target,
                lowest_level,
            } => write!(f, "AFFINITY_INFO(target {target:#x}, level {lowest_level})"),
            Self::SystemOff { status } => write!(f, "SYSTEM_OFF(status {status})"),
            Self::SystemReset => f.write_str("SYSTEM_RESET"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Garbage in the upper halves, which SMC32 calls must not see.
    const HIGH: u64 = 0xdead_beef_0000_0000;

    fn call(regs: [u64; 4]) -> Call {
        decode(&regs)
    }

    #[test]
    fn every_function_in_the_abi_table() {
        assert_eq!(call([0x8400_0000, 0, 0, 0]), Call::Psci(PsciCall::Version));
        assert_eq!(
            call([0x8400_000a, 0xc400_0003, 0, 0]),
            Call::Psci(PsciCall::Features { fid: 0xc400_0003 })
        );
        assert_eq!(call([0x8400_0002, 0, 0, 0]), Call::Psci(PsciCall::CpuOff));
        assert_eq!(
            call([0x8400_0003, 1, 0x4008_0000, 7]),
            Call::Psci(PsciCall::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context: 7
            })
        );
        assert_eq!(
            call([0xc400_0003, 0x100, 0x1_4008_0000, 0xffff_0000_0000_0001]),
            Call::Psci(PsciCall::CpuOn {
                target: 0x100,
                entry: 0x1_4008_0000,
                context: 0xffff_0000_0000_0001
            })
        );
        assert_eq!(
            call([0x8400_0004, 3, 0, 0]),
            Call::Psci(PsciCall::AffinityInfo {
                target: 3,
                lowest_level: 0
            })
        );
        assert_eq!(
            call([0xc400_0004, 0x1_0000_0002, 1, 0]),
            Call::Psci(PsciCall::AffinityInfo {
                target: 0x1_0000_0002,
                lowest_level: 1
            })
        );
        assert_eq!(
            call([0x8400_0008, 42, 0, 0]),
            Call::Psci(PsciCall::SystemOff { status: 42 })
        );
        assert_eq!(
            call([0x8400_0009, 0, 0, 0]),
            Call::Psci(PsciCall::SystemReset)
        );
    }

    #[test]
    fn psci_1_1_calls() {
        assert_eq!(
            call([0x8400_0001, HIGH | 0x1_0000, 0x4000_0000, 0]),
            Call::Psci(PsciCall::CpuSuspend {
                power_state: 0x1_0000
            })
        );
        assert_eq!(
            call([0xc400_0001, 0x2, 0, 0]),
            Call::Psci(PsciCall::CpuSuspend { power_state: 2 })
        );
        assert_eq!(
            call([0x8400_0006, 0, 0, 0]),
            Call::Psci(PsciCall::MigrateInfoType)
        );
        // SMCCC_VERSION is not a PSCI call, but PSCI_FEATURES reports it.
        assert_eq!(features(0x8000_0000), ret::SUCCESS);
        assert_eq!(
            call([0x8000_0000, 0, 0, 0]),
            Call::Unknown { fid: 0x8000_0000 }
        );
        assert_eq!(VERSION_1_1, 0x1_0001);
        assert_eq!(MIGRATE_INFO_NONE, 2);
    }

    #[test]
    fn smc32_arguments_are_truncated() {
        assert_eq!(
            call([0x8400_0003, HIGH | 2, HIGH | 0x4008_0000, HIGH | 9]),
            Call::Psci(PsciCall::CpuOn {
                target: 2,
                entry: 0x4008_0000,
                context: 9
            })
        );
        assert_eq!(
            call([0x8400_0004, HIGH | 1, HIGH, 0]),
            Call::Psci(PsciCall::AffinityInfo {
                target: 1,
                lowest_level: 0
            })
        );
        assert_eq!(
            call([0x8400_0008, HIGH | 3, 0, 0]),
            Call::Psci(PsciCall::SystemOff { status: 3 })
        );
        assert_eq!(
            call([0x8400_000a, HIGH | 0x8400_0000, 0, 0]),
            Call::Psci(PsciCall::Features { fid: 0x8400_0000 })
        );
        // The function id is w0: the upper half of x0 is ignored.
        assert_eq!(
            call([HIGH | 0x8400_0000, 0, 0, 0]),
            Call::Psci(PsciCall::Version)
        );
    }

    #[test]
    fn smc64_arguments_are_kept() {
        assert_eq!(
            call([0xc400_0003, HIGH | 2, HIGH | 0x4008_0000, HIGH | 9]),
            Call::Psci(PsciCall::CpuOn {
                target: HIGH | 2,
                entry: HIGH | 0x4008_0000,
                context: HIGH | 9
            })
        );
    }

    #[test]
    fn unknown_functions() {
        for fid in [
            0x8400_0005u32, // MIGRATE
            0xc400_0005,
            0x8400_0007, // MIGRATE_INFO_UP_CPU
            0x8400_000c, // CPU_DEFAULT_SUSPEND
            0x8400_000e, // SYSTEM_SUSPEND
            0x8400_0012, // SYSTEM_RESET2
            0xc400_0000, // VERSION has no SMC64 id
            0xc400_0002,
            0xc400_0008,
            0xc400_0009,
            0xc400_000a,
            0x8000_8000, // SMCCC_ARCH_WORKAROUND_1
            0,
            u32::MAX,
        ] {
            assert_eq!(call([u64::from(fid), 1, 2, 3]), Call::Unknown { fid });
            assert_eq!(features(fid), ret::NOT_SUPPORTED, "{fid:#x}");
        }
    }

    #[test]
    fn features_of_every_listed_function() {
        for fid in [
            0x8400_0000u32,
            0x8400_000a,
            0x8400_0002,
            0x8400_0003,
            0xc400_0003,
            0x8400_0004,
            0xc400_0004,
            0x8400_0008,
            0x8400_0009,
            0x8400_0001,
            0xc400_0001,
            0x8400_0006,
        ] {
            assert_eq!(features(fid), ret::SUCCESS, "{fid:#x}");
            // And each one decodes to a PSCI call.
            assert!(matches!(call([u64::from(fid), 0, 0, 0]), Call::Psci(_)));
        }
    }

    #[test]
    fn constants() {
        assert_eq!(
            [
                ret::SUCCESS,
                ret::NOT_SUPPORTED,
                ret::INVALID_PARAMETERS,
                ret::DENIED,
                ret::ALREADY_ON,
                ret::ON_PENDING,
                ret::INTERNAL_FAILURE,
                ret::NOT_PRESENT,
                ret::DISABLED,
                ret::INVALID_ADDRESS,
            ],
            [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
        );
        assert_eq!(ret::NOT_SUPPORTED as u64, u64::MAX);
        assert_eq!(
            [
                AffinityState::On as u64,
                AffinityState::Off as u64,
                AffinityState::OnPending as u64
            ],
            [0, 1, 2]
        );
    }

    #[test]
    fn display() {
        assert_eq!(
            PsciCall::CpuOn {
                target: 1,
                entry: 0x4000_0000,
                context: 0
            }
            .to_string(),
            "CPU_ON(target 0x1, entry 0x40000000, context 0x0)"
        );
        assert_eq!(
            PsciCall::SystemOff { status: 3 }.to_string(),
            "SYSTEM_OFF(status 3)"
        );
    }

    proptest! {
        #[test]
        fn decode_is_consistent_with_features(regs in any::<[u64; 4]>()) {
            let fid = regs[0] as u32;
            match decode(&regs) {
                Call::Psci(_) => prop_assert_eq!(features(fid), ret::SUCCESS),
                Call::Unknown { fid: f } => {
                    prop_assert_eq!(f, fid);
                    if fid != SMCCC_VERSION {
                        prop_assert_eq!(features(fid), ret::NOT_SUPPORTED);
                    }
                }
            }
        }

        #[test]
        fn smc32_cpu_on_ignores_upper_halves(regs in any::<[u64; 4]>()) {
            let mut regs = regs;
            regs[0] = u64::from(fid::CPU_ON_32) | (regs[0] & !0xffff_ffff);
            let Call::Psci(PsciCall::CpuOn { target, entry, context }) = decode(&regs) else {
                return Err(TestCaseError::fail("not CPU_ON"));
            };
            prop_assert_eq!(target, regs[1] & 0xffff_ffff);
            prop_assert_eq!(entry, regs[2] & 0xffff_ffff);
            prop_assert_eq!(context, regs[3] & 0xffff_ffff);
        }
    }
}
