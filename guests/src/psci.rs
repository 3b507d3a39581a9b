//! PSCI and other SMC Calling Convention calls: `hvc #0` (the ABI's conduit) and `smc #0`.

use core::arch::asm;

/// `PSCI_VERSION`.
pub const VERSION: u32 = 0x8400_0000;
/// `CPU_OFF`.
pub const CPU_OFF: u32 = 0x8400_0002;
/// `CPU_ON`, SMC64.
pub const CPU_ON: u32 = 0xc400_0003;
/// `AFFINITY_INFO`, SMC64.
pub const AFFINITY_INFO: u32 = 0xc400_0004;
/// `SYSTEM_OFF`.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// `SYSTEM_RESET`.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// `PSCI_FEATURES`.
pub const FEATURES: u32 = 0x8400_000a;

/// `NOT_SUPPORTED`.
pub const NOT_SUPPORTED: i64 = -1;
/// `INVALID_PARAMETERS`.
pub const INVALID_PARAMETERS: i64 = -2;
/// PSCI/SMCCC `DENIED`.
pub const DENIED: i64 = -3;
/// `ALREADY_ON`.
pub const ALREADY_ON: i64 = -4;
/// `ON_PENDING`.
pub const ON_PENDING: i64 = -5;
/// `INVALID_ADDRESS`.
pub const INVALID_ADDRESS: i64 = -9;

/// `AFFINITY_INFO`: the vCPU is on.
pub const AFFINITY_ON: i64 = 0;
/// `AFFINITY_INFO`: the vCPU is off.
pub const AFFINITY_OFF: i64 = 1;

/// Makes an SMCCC call with `hvc #0`: function `fid`, arguments in `x1`–`x3`;
/// returns `x0`.
///
/// # Safety
///
/// The call must not start code or change this guest's memory behind
/// Rust's back: `CPU_ON` only with an entry point that is
/// [`secondary_entry`](crate::start::secondary_entry) (see
/// [`start_secondary`]) or that the hypervisor must refuse.
pub unsafe fn hvc(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret: u64;
    // SAFETY: HVC traps to the hypervisor, which (SMCCC) may change x0–x17,
    // all declared clobbered; the caller vouches for the call's effects.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") u64::from(fid) => ret,
            inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret
}

/// Makes an SMCCC call with `smc #0` (the ABI answers `NOT_SUPPORTED` to any).
///
/// # Safety
///
/// As for [`hvc`]: the call must not change the guest behind Rust's back.
pub unsafe fn smc(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret: u64;
    // SAFETY: as for hvc: x0–x17 clobbered, effects vouched for by the caller.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") u64::from(fid) => ret,
            inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret
}

/// `PSCI_VERSION`: major in bits 31:16, minor in 15:0.
pub fn version() -> u32 {
    // SAFETY: a query, no side effect.
    unsafe { hvc(VERSION, 0, 0, 0) as u32 }
}

/// `PSCI_FEATURES(fid)`: 0 (or feature flags) if implemented, else `NOT_SUPPORTED`.
pub fn features(fid: u32) -> i64 {
    // SAFETY: a query, no side effect.
    unsafe { hvc(FEATURES, u64::from(fid), 0, 0) as i64 }
}

/// `CPU_ON(target, entry, context)`, with any entry point.
///
/// # Safety
///
/// `entry` must be [`secondary_entry`](crate::start::secondary_entry) or an
/// address the hypervisor must refuse (outside RAM): anything else would run
/// arbitrary code beside this vCPU.
pub unsafe fn cpu_on(target: u64, entry: u64, context: u64) -> i64 {
    // SAFETY: the caller vouches for `entry`.
    unsafe { hvc(CPU_ON, target, entry, context) as i64 }
}

/// Starts vCPU `target` (an MPIDR) at [`secondary_entry`](crate::start::secondary_entry),
/// which runs the scenario's `secondary_main(context)`. Returns the PSCI result.
pub fn start_secondary(target: u64, context: u64) -> i64 {
    let entry = crate::start::secondary_entry as *const () as u64;
    // SAFETY: the entry point is the runtime's own secondary entry.
    unsafe { cpu_on(target, entry, context) }
}

/// `AFFINITY_INFO(target, lowest level 0)`: [`AFFINITY_ON`], [`AFFINITY_OFF`],
/// 2 (on pending) or an error.
pub fn affinity_info(target: u64) -> i64 {
    // SAFETY: a query, no side effect.
    unsafe { hvc(AFFINITY_INFO, target, 0, 0) as i64 }
}

/// `CPU_OFF`: returns only if refused, with the error.
pub fn cpu_off() -> i64 {
    // SAFETY: powers this vCPU off; nothing of Rust's survives it but memory.
    unsafe { hvc(CPU_OFF, 0, 0, 0) as i64 }
}

/// `SYSTEM_OFF`, with the run's exit status in `x1` (the ABI's convention).
pub fn system_off(status: u64) -> ! {
    // SAFETY: ends the run.
    let ret = unsafe { hvc(SYSTEM_OFF, status, 0, 0) } as i64;
    park(ret)
}

/// `SYSTEM_RESET`: reboots the VM (or ends it, as the hypervisor's `reset=` says).
pub fn system_reset() -> ! {
    // SAFETY: ends the run.
    let ret = unsafe { hvc(SYSTEM_RESET, 0, 0, 0) } as i64;
    park(ret)
}

/// After a `SYSTEM_OFF`/`SYSTEM_RESET` that returned: say so, then wait forever.
fn park(ret: i64) -> ! {
    crate::console::print_line_forced(format_args!(
        "guest: FAIL: SYSTEM_OFF/SYSTEM_RESET returned {ret}; parking vcpu{}",
        crate::cpu::id()
    ));
    loop {
        // SAFETY: waits for an event; no memory effect.
        unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
}

/// Starts every vCPU of `others` (MPIDRs) with `CPU_ON`, context id
/// `context | id`, then waits up to `ms` milliseconds until `online` counts
/// them all (each secondary adds one). Fails the run, naming `scenario`, if
/// a vCPU has no stack, `CPU_ON` refuses, or one never comes online.
pub fn start_others(
    scenario: &str,
    others: impl Iterator<Item = u64>,
    context: u64,
    online: &core::sync::atomic::AtomicUsize,
    ms: u64,
) {
    let mut started = 0;
    for mpidr in others {
        let id = mpidr & 0xff;
        crate::check!(
            (id as usize) < crate::cpu::MAX_CPUS,
            "{scenario}: vCPU with MPIDR {mpidr:#x}: no stack for it"
        );
        let ret = start_secondary(mpidr, context | id);
        crate::check!(ret == 0, "{scenario}: CPU_ON({mpidr:#x}) returned {ret}");
        started += 1;
    }
    let count = || online.load(core::sync::atomic::Ordering::Acquire);
    if !crate::cpu::wait_until(ms, || count() == started) {
        crate::fail!(
            "{scenario}: only {} of {started} other vCPUs came online",
            count()
        );
    }
}
