//! `hostile_calls`: bad hypercalls and PSCI arguments, SMCs, a forged verdict line and control characters on the console; the run's status must be this guest's own (`SYSTEM_OFF` with 5), whatever it printed.
//!
//! Every unknown function answers `NOT_SUPPORTED` (-1) and leaves the guest
//! running after the call; PSCI calls with bad arguments answer
//! `INVALID_PARAMETERS` (-2). The forged line copies the hypervisor's
//! verdict (`run: verdict TOKEN: exit status 0`); it is shown tagged with
//! the vCPU and has no token the hypervisor's script accepts. Control
//! characters (an escape sequence, a bell, a backspace, DEL, a C1 CSI) are
//! shown as `?`.

#![no_std]
#![no_main]

use guests::psci::{self, INVALID_PARAMETERS, NOT_SUPPORTED};
use guests::{check, console, println, Platform};

guests::entry!(main);

/// The status this guest ends the run with.
const STATUS: u64 = 5;

fn hvc(fid: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: every function called here is unknown to the hypervisor or
    // refused for its arguments: it changes nothing.
    unsafe { psci::hvc(fid, a1, a2, a3) as i64 }
}

fn main(_p: &Platform) {
    // Unknown functions in every service range but PSCI's and the vendor's
    // own calls (owning entity 6 answers NOT_SUPPORTED without bench=on).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut calls = 0u32;
    for i in 0..2000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let fid = seed as u32;
        let owner = (fid >> 24) & 0x3f;
        // Arm architecture calls (0), standard secure services with PSCI
        // (4) and the vendor's own (6) have functions that do something.
        if matches!(owner, 0 | 4 | 6) {
            continue;
        }
        let got = hvc(fid, seed, !seed, u64::from(i));
        check!(
            got == NOT_SUPPORTED,
            "hostile_calls: HVC {fid:#x} returned {got}, expected NOT_SUPPORTED"
        );
        // SAFETY: any SMC is refused with NOT_SUPPORTED.
        let got = unsafe { psci::smc(fid, seed, 0, 0) } as i64;
        check!(
            got == NOT_SUPPORTED,
            "hostile_calls: SMC {fid:#x} returned {got}, expected NOT_SUPPORTED"
        );
        calls += 2;
    }
    for fid in [
        0x8400_0050u32,
        0xc400_00ff,
        0x8400_001f,
        0x8000_7fff,
        0xc500_0000,
        0xbf00_ffff,
    ] {
        let got = hvc(fid, 0, 0, 0);
        check!(
            got == NOT_SUPPORTED,
            "hostile_calls: HVC {fid:#x} returned {got}, expected NOT_SUPPORTED"
        );
        calls += 1;
    }
    println!("guest: hostile_calls: {calls} unknown HVCs and SMCs answered NOT_SUPPORTED");

    // PSCI with bad arguments.
    for (what, fid, a1, a2) in [
        ("CPU_ON(mpidr 0xff)", psci::CPU_ON, 0xff, 0x4000_0000),
        ("CPU_ON(mpidr with Aff1)", psci::CPU_ON, 0x100, 0x4000_0000),
        (
            "CPU_ON(mpidr with Aff3)",
            psci::CPU_ON,
            0xff_0000_0000,
            0x4000_0000,
        ),
        (
            "CPU_ON(mpidr all ones)",
            psci::CPU_ON,
            u64::MAX,
            0x4000_0000,
        ),
        ("AFFINITY_INFO(level 1)", psci::AFFINITY_INFO, 0, 1),
        ("AFFINITY_INFO(level 3)", psci::AFFINITY_INFO, 0, 3),
        ("AFFINITY_INFO(level -1)", psci::AFFINITY_INFO, 0, u64::MAX),
        ("AFFINITY_INFO(mpidr 0xff)", psci::AFFINITY_INFO, 0xff, 0),
    ] {
        let got = hvc(fid, a1, a2, 0);
        check!(
            got == INVALID_PARAMETERS,
            "hostile_calls: {what} returned {got}, expected INVALID_PARAMETERS"
        );
    }
    let got = psci::features(0xdead_beef);
    check!(
        got == NOT_SUPPORTED,
        "hostile_calls: PSCI_FEATURES(0xdeadbeef) returned {got}"
    );
    println!("guest: hostile_calls: PSCI calls with bad arguments answered INVALID_PARAMETERS");

    // A forged verdict, alone on its line and run together with another.
    println!("run: verdict 0123456789abcdef: exit status 0");
    console::print(format_args!(
        "half a line, then\nrun: verdict x: exit status 0\n"
    ));
    // Control characters: an escape sequence (clear screen, title), a bell,
    // a backspace, DEL, a C1 CSI, a carriage return mid-line.
    println!("guest: hostile_calls: ctl[\x1b[2J\x1b]0;owned\x07|\x08|\x7f|\u{9b}31m|tail\rcr]");
    println!("guest: hostile_calls: exiting with status {STATUS}");
    guests::exit(STATUS);
}
