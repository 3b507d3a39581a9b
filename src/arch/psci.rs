//! PSCI calls over the SMC conduit: starting secondary CPUs, and powering
//! off as a fallback exit. (The HVC conduit would trap to EL2 itself.)

use core::arch::asm;
use core::fmt;

use hvcore::PhysAddr;

/// `PSCI_VERSION`.
const PSCI_VERSION: u32 = 0x8400_0000;
/// `CPU_ON`, SMC64 calling convention.
const CPU_ON_64: u32 = 0xc400_0003;
/// `SYSTEM_OFF`.
const SYSTEM_OFF: u32 = 0x8400_0008;

/// A PSCI error return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciError {
    /// `NOT_SUPPORTED` (-1).
    NotSupported,
    /// `INVALID_PARAMETERS` (-2).
    InvalidParameters,
    /// `DENIED` (-3).
    Denied,
    /// `ALREADY_ON` (-4).
    AlreadyOn,
    /// `ON_PENDING` (-5).
    OnPending,
    /// `INTERNAL_FAILURE` (-6).
    InternalFailure,
    /// `NOT_PRESENT` (-7).
    NotPresent,
    /// `DISABLED` (-8).
    Disabled,
    /// `INVALID_ADDRESS` (-9).
    InvalidAddress,
    /// Any other value.
    Other(i64),
}

impl PsciError {
    fn check(ret: u64) -> Result<u64, Self> {
        Err(match ret as i64 {
            0.. => return Ok(ret),
            -1 => Self::NotSupported,
            -2 => Self::InvalidParameters,
            -3 => Self::Denied,
            -4 => Self::AlreadyOn,
            -5 => Self::OnPending,
            -6 => Self::InternalFailure,
            -7 => Self::NotPresent,
            -8 => Self::Disabled,
            -9 => Self::InvalidAddress,
            other => Self::Other(other),
        })
    }
}

impl fmt::Display for PsciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::NotSupported => "NOT_SUPPORTED",
            Self::InvalidParameters => "INVALID_PARAMETERS",
            Self::Denied => "DENIED",
            Self::AlreadyOn => "ALREADY_ON",
            Self::OnPending => "ON_PENDING",
            Self::InternalFailure => "INTERNAL_FAILURE",
            Self::NotPresent => "NOT_PRESENT",
            Self::Disabled => "DISABLED",
            Self::InvalidAddress => "INVALID_ADDRESS",
            Self::Other(code) => return write!(f, "unknown PSCI error {code}"),
        };
        f.write_str(name)
    }
}

/// Makes an SMCCC call through `smc #0`.
///
/// # Safety
///
/// The call must not hand the secure firmware anything that lets it break
/// Rust's guarantees (e.g. an entry point for `CPU_ON` must be valid code).
unsafe fn smc(function: u32, arg1: u64, arg2: u64, arg3: u64) -> u64 {
    let ret;
    // SAFETY: an SMCCC call returns to the next instruction and, per SMCCC
    // v1.0, may clobber x0-x17 but preserves every other register and our
    // memory; the caller vouches for what the call itself does.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") u64::from(function) => ret,
            inout("x1") arg1 => _,
            inout("x2") arg2 => _,
            inout("x3") arg3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret
}

/// The PSCI version as (major, minor).
pub fn version() -> (u16, u16) {
    // SAFETY: PSCI_VERSION has no arguments and no side effects.
    let v = unsafe { smc(PSCI_VERSION, 0, 0, 0) };
    ((v >> 16) as u16, v as u16)
}

/// Starts the CPU with affinity `mpidr` at EL2 at `entry`, with `x0` =
/// `context`.
///
/// # Errors
///
/// The PSCI error code when the firmware refuses (e.g. `ALREADY_ON`,
/// `INVALID_PARAMETERS` for an unknown MPIDR).
///
/// # Safety
///
/// `entry` must be the physical address of code that is correct to run on a
/// fresh CPU with MMU off and no stack, given `context` in `x0`.
pub unsafe fn cpu_on(mpidr: u64, entry: PhysAddr, context: u64) -> Result<(), PsciError> {
    // SAFETY: forwarded from this function's contract.
    let ret = unsafe { smc(CPU_ON_64, mpidr, entry.as_u64(), context) };
    PsciError::check(ret).map(|_| ())
}

/// Powers the system off. Under QEMU this ends the emulation with status 0;
/// the run's status travels on the console (`arch::exit`).
pub fn system_off() -> ! {
    // SAFETY: SYSTEM_OFF takes no arguments and does not return on success.
    unsafe { smc(SYSTEM_OFF, 0, 0, 0) };
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Powers the system off from EL1, where a machine with no EL2 or EL3
/// takes PSCI calls through `hvc` (QEMU `virt` without
/// `virtualization=on`): only for a hypervisor entered at the wrong level.
pub fn system_off_from_el1() -> ! {
    // SAFETY: SYSTEM_OFF takes no arguments and does not return on
    // success; it touches no memory of ours. Where no firmware answers
    // `hvc` the CPU takes an exception and never returns either.
    unsafe {
        asm!(
            "hvc #0",
            in("x0") u64::from(SYSTEM_OFF),
            options(nostack),
        );
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// `PSCI_FEATURES`.
const PSCI_FEATURES: u32 = 0x8400_000a;
/// `SMCCC_VERSION`.
const SMCCC_VERSION: u32 = 0x8000_0000;
/// `SMCCC_ARCH_FEATURES`.
const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// `SMCCC_ARCH_WORKAROUND_1` to `_3`.
const WORKAROUNDS: [u32; 3] = [0x8000_8000, 0x8000_7fff, 0x8000_3fff];

/// What the firmware answers to `SMCCC_ARCH_FEATURES` for each
/// `ARCH_WORKAROUND_n`; `NOT_SUPPORTED` (-1) for all when it has no SMCCC
/// 1.1. Asked only once `PSCI_FEATURES(SMCCC_VERSION)` says the call
/// exists: on a machine without EL3 firmware (QEMU's own PSCI), an SMC
/// outside PSCI's range is an undefined instruction.
pub fn firmware_workarounds() -> [i64; 3] {
    const NONE: [i64; 3] = [-1; 3];
    // SAFETY: PSCI_FEATURES only answers a question.
    if unsafe { smc(PSCI_FEATURES, u64::from(SMCCC_VERSION), 0, 0) } as i64 != 0 {
        return NONE;
    }
    // SAFETY: SMCCC_VERSION exists (PSCI_FEATURES said so) and only
    // answers.
    let version = unsafe { smc(SMCCC_VERSION, 0, 0, 0) } as i64;
    if version < 0x1_0001 {
        return NONE;
    }
    // SAFETY: SMCCC 1.1 has SMCCC_ARCH_FEATURES, which only answers.
    WORKAROUNDS.map(|fid| unsafe { smc(SMCCC_ARCH_FEATURES, u64::from(fid), 0, 0) } as i64)
}

/// Calls the firmware's `ARCH_WORKAROUND_n` (`n` 1 to 3) for a guest
/// whose call it was offered for (the firmware said it has it).
pub fn workaround(n: u8) {
    if let Some(&fid) = WORKAROUNDS.get(usize::from(n).wrapping_sub(1)) {
        // SAFETY: the workaround calls change only microarchitectural
        // state (predictors, store bypass) and return.
        unsafe { smc(fid, 1, 0, 0) };
    }
}
