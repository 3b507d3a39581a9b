//! `hostile_vector`: bad `CPU_ON` entry points are refused, then `VBAR_EL1` points where nothing can be fetched and an abort is provoked: the hypervisor must stop the VM (a locked-up vCPU), not loop.
//!
//! Bootargs `vbar=ADDR` (default 0x2000_0000, in no slot; the UART's
//! 0x900_0000 is a device, which cannot be executed either). The run must
//! end with status 65, the VM stopped with `VectorLockup`; this guest
//! exits 1 if it ever gets past the abort.

#![no_std]
#![no_main]

use core::arch::asm;

use guests::dt::parse_u64;
use guests::psci::{self, INVALID_ADDRESS, INVALID_PARAMETERS};
use guests::{check, cpu, fail, fault, println, Platform};

guests::entry!(main);

fn main(p: &Platform) {
    let vbar = match p.arg("vbar") {
        None => 0x2000_0000,
        Some(t) => parse_u64(t).unwrap_or_else(|| fail!("hostile_vector: bad vbar={t}")),
    };
    let me = cpu::mpidr() & 0xff_00ff_ffff;
    if let Some(other) = p.cpus().iter().copied().find(|&m| m != me) {
        let ram = p.ram.base;
        let rom = p.rom.map_or(0x400_0000, |r| r.base);
        for (entry, what) in [
            (ram + 2, "unaligned in RAM"),
            (ram + 1, "odd in RAM"),
            (0x2000_0000, "in no slot"),
            (rom, "in the ROM (not RAM)"),
            (p.uart, "a device"),
            (p.ram.end(), "just past RAM"),
            (u64::MAX - 3, "the top of the address space"),
        ] {
            // SAFETY: every entry point here must be refused (INVALID_ADDRESS).
            let got = unsafe { psci::cpu_on(other, entry, 0) };
            check!(
                got == INVALID_ADDRESS,
                "hostile_vector: CPU_ON at {entry:#x} ({what}) returned {got}, expected INVALID_ADDRESS"
            );
        }
        // An MPIDR with affinity above level 0.
        // SAFETY: refused (INVALID_PARAMETERS) before the entry is looked at.
        let got = unsafe { psci::cpu_on(other | 0x100, ram, 0) };
        check!(
            got == INVALID_PARAMETERS,
            "hostile_vector: CPU_ON(mpidr {:#x}) returned {got}",
            other | 0x100
        );
        println!("guest: hostile_vector: bad CPU_ON entry points refused with INVALID_ADDRESS");
    }
    println!("guest: hostile_vector: VBAR_EL1 = {vbar:#x}, then a load from nowhere");
    // SAFETY: on purpose: every exception from here on enters a vector that
    // cannot be fetched. The hypervisor must stop the VM.
    unsafe {
        asm!("msr vbar_el1, {}", "isb", in(reg) vbar, options(nostack, preserves_flags));
        let _ = fault::probe_load(0x2000_0000);
    }
    fail!("hostile_vector: still running after an abort with VBAR_EL1 at {vbar:#x}");
}
