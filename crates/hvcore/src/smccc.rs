//! SMC Calling Convention: which service a guest's `HVC` is for (Arm architecture calls, PSCI, the vendor-specific hypervisor calls), and the architecture calls themselves (SMCCC 1.1).
//!
//! A function id (`w0`) says: fast or yielding call (bit 31), SMC32 or
//! SMC64 (bit 30), the owning entity (bits 29:24) and the function
//! (bits 15:0). The exit layer routes by [`service`]; each service decodes
//! its own calls ([`crate::psci::decode`], [`crate::bench::decode`],
//! [`decode_arch`]).

use crate::psci::ret;

/// The service a function id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Arm architecture calls (owning entity 0): `SMCCC_VERSION`,
    /// `SMCCC_ARCH_FEATURES`, the `ARCH_WORKAROUND_*` calls.
    Arch,
    /// Standard secure service calls 0x00-0x1f (owning entity 4): PSCI.
    Psci,
    /// Vendor-specific hypervisor service calls (owning entity 6).
    VendorHyp,
    /// Anything else, yielding calls included: `NOT_SUPPORTED`.
    Other,
}

/// Function id bit 31: a fast call.
const FAST: u32 = 1 << 31;

/// The service `fid` belongs to.
#[must_use]
pub const fn service(fid: u32) -> Service {
    if fid & FAST == 0 {
        return Service::Other;
    }
    match (fid >> 24) & 0x3f {
        0 => Service::Arch,
        4 if fid & 0xffff < 0x20 => Service::Psci,
        6 => Service::VendorHyp,
        _ => Service::Other,
    }
}

/// Function ids of the Arm architecture calls.
pub mod fid {
    /// `SMCCC_VERSION`.
    pub const VERSION: u32 = 0x8000_0000;
    /// `SMCCC_ARCH_FEATURES`.
    pub const ARCH_FEATURES: u32 = 0x8000_0001;
    /// `SMCCC_ARCH_WORKAROUND_1` (branch predictor hardening).
    pub const WORKAROUND_1: u32 = 0x8000_8000;
    /// `SMCCC_ARCH_WORKAROUND_2` (speculative store bypass).
    pub const WORKAROUND_2: u32 = 0x8000_7fff;
    /// `SMCCC_ARCH_WORKAROUND_3` (branch history).
    pub const WORKAROUND_3: u32 = 0x8000_3fff;
}

/// `SMCCC_VERSION`'s answer: 1.1.
pub const VERSION_1_1: i64 = 0x1_0001;

/// `SMCCC_ARCH_FEATURES` for a workaround the CPU does not need
/// (`WORKAROUND_2`'s answer for an unaffected CPU).
pub const NOT_REQUIRED: i64 = -2;

/// `SMCCC_ARCH_FEATURES` for `WORKAROUND_1` or `_3` on a CPU that is not
/// affected.
pub const UNAFFECTED: i64 = 1;

/// A decoded Arm architecture call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchCall {
    /// `SMCCC_VERSION`.
    Version,
    /// `SMCCC_ARCH_FEATURES(fid)`.
    Features {
        /// The function asked about (`w1`).
        fid: u32,
    },
    /// `SMCCC_ARCH_WORKAROUND_n`, with `n` 1 to 3.
    Workaround(u8),
    /// Any other architecture call.
    Unknown,
}

/// Decodes an architecture call from `x0`-`x1`.
#[must_use]
pub const fn decode_arch(regs: &[u64; 4]) -> ArchCall {
    match regs[0] as u32 {
        fid::VERSION => ArchCall::Version,
        fid::ARCH_FEATURES => ArchCall::Features {
            fid: regs[1] as u32,
        },
        fid::WORKAROUND_1 => ArchCall::Workaround(1),
        fid::WORKAROUND_2 => ArchCall::Workaround(2),
        fid::WORKAROUND_3 => ArchCall::Workaround(3),
        _ => ArchCall::Unknown,
    }
}

/// What the CPU (and the firmware below the hypervisor) offer for each
/// `ARCH_WORKAROUND_n`: the value `SMCCC_ARCH_FEATURES` reports, index
/// `n - 1`: `0` (call it: it works), [`NOT_REQUIRED`], or
/// `NOT_SUPPORTED` (none available).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workarounds(pub [i64; 3]);

/// What decides the workarounds: the CPU's own ID registers, and what the
/// firmware below the hypervisor answered to `SMCCC_ARCH_FEATURES`
/// (`NOT_SUPPORTED` for each if it has no SMCCC 1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFacts {
    /// `ID_AA64PFR0_EL1.CSV2` (bits 59:56): 1 or more, branch targets
    /// cannot be trained across contexts (Spectre v2 does not apply); 3,
    /// nor branch history (Spectre-BHB).
    pub csv2: u8,
    /// `ID_AA64PFR1_EL1.SSBS` (bits 7:4) non-zero: the guest controls
    /// speculative store bypass itself.
    pub ssbs: bool,
    /// `ID_AA64MMFR1_EL1.ECBHB` (bits 63:60) non-zero: branch history is
    /// cleared on exception entry (Spectre-BHB does not apply).
    pub ecbhb: bool,
    /// The firmware's answers for `WORKAROUND_1` to `_3`.
    pub firmware: [i64; 3],
}

impl Workarounds {
    /// No workaround is available.
    pub const NONE: Self = Self([ret::NOT_SUPPORTED; 3]);

    /// What a guest is told, as Linux KVM decides it: a CPU the ID
    /// registers show unaffected says so ([`UNAFFECTED`], or
    /// [`NOT_REQUIRED`] for `WORKAROUND_2`); else the firmware's
    /// mitigation is offered where it has one (the guest's call is passed
    /// to it); else `NOT_SUPPORTED` (vulnerable, as on bare hardware with
    /// that firmware). With SSBS the guest mitigates store bypass itself:
    /// `WORKAROUND_2` is `NOT_SUPPORTED`.
    #[must_use]
    pub const fn decide(facts: &CpuFacts) -> Self {
        const fn offered(answer: i64) -> i64 {
            if answer == ret::SUCCESS {
                ret::SUCCESS
            } else {
                ret::NOT_SUPPORTED
            }
        }
        let wa1 = if facts.csv2 >= 1 {
            UNAFFECTED
        } else {
            offered(facts.firmware[0])
        };
        let wa2 = if facts.ssbs {
            ret::NOT_SUPPORTED
        } else if facts.firmware[1] == NOT_REQUIRED {
            NOT_REQUIRED
        } else {
            offered(facts.firmware[1])
        };
        let wa3 = if facts.ecbhb || facts.csv2 >= 3 {
            UNAFFECTED
        } else {
            offered(facts.firmware[2])
        };
        Self([wa1, wa2, wa3])
    }

    /// Whether a guest's `WORKAROUND_n` call goes to the firmware (it
    /// was offered because the firmware has it).
    #[must_use]
    pub const fn forwarded(&self, n: u8) -> bool {
        n >= 1 && n <= 3 && self.0[(n - 1) as usize] == ret::SUCCESS
    }
}

/// Answers an architecture call: the value for `x0`. A workaround call
/// itself returns 0 when offered (the caller has passed it to the
/// firmware, [`Workarounds::forwarded`]) and `NOT_SUPPORTED` otherwise.
#[must_use]
pub const fn answer_arch(call: ArchCall, w: &Workarounds) -> i64 {
    match call {
        ArchCall::Version => VERSION_1_1,
        ArchCall::Features { fid } => match fid {
            fid::VERSION | fid::ARCH_FEATURES => ret::SUCCESS,
            fid::WORKAROUND_1 => w.0[0],
            fid::WORKAROUND_2 => w.0[1],
            fid::WORKAROUND_3 => w.0[2],
            _ => ret::NOT_SUPPORTED,
        },
        ArchCall::Workaround(n) => {
            if w.0[(n - 1) as usize] == ret::SUCCESS {
                ret::SUCCESS
            } else {
                ret::NOT_SUPPORTED
            }
        }
        ArchCall::Unknown => ret::NOT_SUPPORTED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_by_owner() {
        assert_eq!(service(0x8400_0000), Service::Psci);
        assert_eq!(service(0xc400_0003), Service::Psci);
        assert_eq!(service(0x8400_001f), Service::Psci);
        assert_eq!(service(0x8400_0020), Service::Other, "beyond PSCI's range");
        assert_eq!(service(0x8000_0000), Service::Arch);
        assert_eq!(service(0x8000_8000), Service::Arch);
        assert_eq!(service(0xc600_0000), Service::VendorHyp);
        assert_eq!(service(0x8600_0001), Service::VendorHyp);
        assert_eq!(service(0x0400_0000), Service::Other, "a yielding call");
        assert_eq!(service(0x8500_0000), Service::Other, "standard hypervisor");
        assert_eq!(service(0xc200_0000), Service::Other, "SiP");
    }

    #[test]
    fn workarounds_as_the_cpu_warrants() {
        let none = [ret::NOT_SUPPORTED; 3];
        // QEMU's cortex-a72: nothing in the ID registers, no SMCCC 1.1
        // firmware: vulnerable, as Linux on bare QEMU finds it.
        let a72 = CpuFacts {
            csv2: 0,
            ssbs: false,
            ecbhb: false,
            firmware: none,
        };
        assert_eq!(Workarounds::decide(&a72), Workarounds::NONE);
        // The firmware mitigates: offered, and forwarded.
        let fw = CpuFacts {
            firmware: [0, 0, 0],
            ..a72
        };
        let w = Workarounds::decide(&fw);
        assert_eq!(w, Workarounds([0, 0, 0]));
        assert!(w.forwarded(1) && w.forwarded(2) && w.forwarded(3));
        assert!(!w.forwarded(0) && !w.forwarded(4));
        // -cpu max: CSV2 3, SSBS, ECBHB.
        let max = CpuFacts {
            csv2: 3,
            ssbs: true,
            ecbhb: true,
            firmware: none,
        };
        let w = Workarounds::decide(&max);
        assert_eq!(w, Workarounds([UNAFFECTED, ret::NOT_SUPPORTED, UNAFFECTED]));
        assert!(!w.forwarded(1) && !w.forwarded(3));
        // CSV2 1 only: v2 unaffected, BHB not; firmware says store bypass
        // needs nothing.
        let csv2 = CpuFacts {
            csv2: 1,
            firmware: [ret::NOT_SUPPORTED, NOT_REQUIRED, ret::NOT_SUPPORTED],
            ..a72
        };
        assert_eq!(
            Workarounds::decide(&csv2),
            Workarounds([UNAFFECTED, NOT_REQUIRED, ret::NOT_SUPPORTED])
        );
        // ECBHB alone covers BHB; an odd firmware answer is not an offer.
        let odd = CpuFacts {
            ecbhb: true,
            firmware: [5, 1, 0],
            ..a72
        };
        assert_eq!(
            Workarounds::decide(&odd),
            Workarounds([ret::NOT_SUPPORTED, ret::NOT_SUPPORTED, UNAFFECTED])
        );
    }

    #[test]
    fn arch_calls() {
        let w = Workarounds([ret::SUCCESS, NOT_REQUIRED, ret::NOT_SUPPORTED]);
        let call = |x0: u32, x1: u32| {
            answer_arch(
                decode_arch(&[u64::from(x0) | 0xffff_0000_0000_0000, u64::from(x1), 0, 0]),
                &w,
            )
        };
        assert_eq!(call(fid::VERSION, 0), 0x1_0001);
        assert_eq!(call(fid::ARCH_FEATURES, fid::VERSION), 0);
        assert_eq!(call(fid::ARCH_FEATURES, fid::ARCH_FEATURES), 0);
        assert_eq!(call(fid::ARCH_FEATURES, fid::WORKAROUND_1), 0);
        assert_eq!(call(fid::ARCH_FEATURES, fid::WORKAROUND_2), NOT_REQUIRED);
        assert_eq!(
            call(fid::ARCH_FEATURES, fid::WORKAROUND_3),
            ret::NOT_SUPPORTED
        );
        assert_eq!(call(fid::ARCH_FEATURES, 0x8400_0000), ret::NOT_SUPPORTED);
        assert_eq!(call(fid::WORKAROUND_1, 0), 0);
        assert_eq!(call(fid::WORKAROUND_2, 0), ret::NOT_SUPPORTED);
        assert_eq!(call(fid::WORKAROUND_3, 0), ret::NOT_SUPPORTED);
        assert_eq!(call(0x8000_0002, 0), ret::NOT_SUPPORTED);
        assert_eq!(
            answer_arch(ArchCall::Workaround(1), &Workarounds::NONE),
            ret::NOT_SUPPORTED
        );
    }
}
