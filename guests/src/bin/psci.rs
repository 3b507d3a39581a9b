//! `psci`: checks the hypervisor's PSCI answers (docs/guest-abi.md), including errors, an unknown HVC and an SMC.

#![no_std]
#![no_main]

use guests::psci::{self, *};
use guests::{cpu, fail, println, Platform};

guests::entry!(main);

/// Prints `guest: psci: <what> = <name> ok`, or fails with what came back.
fn expect(what: &str, got: i64, want: i64, name: &str) {
    if got != want {
        fail!("psci: {what} returned {got}, expected {want} ({name})");
    }
    println!("guest: psci: {what} = {name} ok");
}

fn main(p: &Platform) {
    let me = cpu::mpidr() & 0xff_00ff_ffff;
    expect("VERSION", i64::from(psci::version()), 0x1_0001, "1.1");
    expect("FEATURES(CPU_ON)", psci::features(CPU_ON), 0, "0");
    expect("FEATURES(CPU_SUSPEND)", psci::features(0x8400_0001), 0, "0");
    expect(
        "FEATURES(SMCCC_VERSION)",
        psci::features(0x8000_0000),
        0,
        "0",
    );
    // SAFETY: MIGRATE_INFO_TYPE and SMCCC_VERSION only answer.
    let got = unsafe { psci::hvc(0x8400_0006, 0, 0, 0) } as i64;
    expect("MIGRATE_INFO_TYPE", got, 2, "2 (no Trusted OS)");
    // SAFETY: as above.
    let got = unsafe { psci::hvc(0x8000_0000, 0, 0, 0) } as i64;
    expect("SMCCC_VERSION", got, 0x1_0001, "1.1");
    expect(
        "FEATURES(0x840000ff)",
        psci::features(0x8400_00ff),
        NOT_SUPPORTED,
        "NOT_SUPPORTED",
    );
    expect(
        "CPU_ON(mpidr 0xff)",
        psci::start_secondary(0xff, 0),
        INVALID_PARAMETERS,
        "INVALID_PARAMETERS",
    );
    expect(
        "CPU_ON(self)",
        psci::start_secondary(me, 0),
        ALREADY_ON,
        "ALREADY_ON",
    );
    // A bad entry point needs a vCPU that is off: the second one, if any.
    match p.cpus().iter().copied().find(|&mpidr| mpidr != me) {
        Some(other) => {
            // SAFETY: 0x1000 is outside RAM, which the hypervisor must refuse.
            let got = unsafe { psci::cpu_on(other, 0x1000, 0) };
            expect(
                "CPU_ON(entry 0x1000)",
                got,
                INVALID_ADDRESS,
                "INVALID_ADDRESS",
            );
            expect(
                "AFFINITY_INFO(other)",
                psci::affinity_info(other),
                AFFINITY_OFF,
                "OFF",
            );
        }
        None => println!("guest: psci: CPU_ON(entry 0x1000) skipped: only one vCPU"),
    }
    expect(
        "AFFINITY_INFO(self)",
        psci::affinity_info(me),
        AFFINITY_ON,
        "ON",
    );
    expect(
        "AFFINITY_INFO(0xff)",
        psci::affinity_info(0xff),
        INVALID_PARAMETERS,
        "INVALID_PARAMETERS",
    );
    // SAFETY: an unknown function: answered NOT_SUPPORTED, no effect.
    let got = unsafe { psci::hvc(0xc600_0001, 0, 0, 0) } as i64;
    expect("HVC 0xc6000001", got, NOT_SUPPORTED, "NOT_SUPPORTED");
    // SAFETY: any SMC is answered NOT_SUPPORTED by the hypervisor.
    let got = unsafe { psci::smc(VERSION, 0, 0, 0) } as i64;
    expect("SMC PSCI_VERSION", got, NOT_SUPPORTED, "NOT_SUPPORTED");
    println!("guest: psci: all checks passed");
}
