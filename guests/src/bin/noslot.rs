//! `noslot`: a load from, then a branch to, an address in no slot (default 0x2000_0000, bootargs `noslot=ADDR`), and an MMIO access with no valid syndrome, must each get an injected synchronous external abort.

#![no_std]
#![no_main]

use guests::dt::parse_u64;
use guests::fault::{self, Fault, Resume};
use guests::{check, fail, println, Platform};

guests::entry!(main);

fn check_abort(what: &str, fault: Option<Fault>, ec: u64, addr: u64, pc: u64) {
    let Some(fault) = fault else {
        fail!("noslot: {what} at {addr:#x} did not fault");
    };
    check!(
        fault.ec() == ec && fault.fsc() == 0x10,
        "noslot: {what} fault has ESR {:#x} (EC {:#x}, FSC {:#x}), expected EC {ec:#x} FSC 0x10",
        fault.esr,
        fault.ec(),
        fault.fsc()
    );
    check!(
        fault.far == addr,
        "noslot: {what}: FAR {:#x}, expected {addr:#x}",
        fault.far
    );
    check!(
        fault.elr == pc,
        "noslot: {what}: ELR {:#x}, expected {pc:#x}",
        fault.elr
    );
}

fn main(p: &Platform) {
    let addr = match p.arg("noslot") {
        None => 0x2000_0000,
        Some(text) => parse_u64(text).unwrap_or_else(|| fail!("noslot: bad bootarg noslot={text}")),
    };

    let ((_, pc), fault) = fault::expect_fault(Resume::Next, || {
        // SAFETY: an address in no slot: there is nothing to read, the load
        // gets an abort.
        unsafe { fault::probe_load(addr) }
    });
    check_abort("load", fault, 0x25, addr, pc);
    println!("guest: noslot: abort seen at {addr:#x}");

    let (_, fault) = fault::expect_fault(Resume::Return, || {
        // SAFETY: nothing can be fetched there: the branch gets an
        // instruction abort, resumed at the return address.
        unsafe { fault::probe_call(addr) }
    });
    check_abort("instruction fetch", fault, 0x21, addr, addr);
    println!("guest: noslot: instruction abort seen at {addr:#x}");

    // A load pair from the UART: the syndrome names no register (ISV = 0),
    // so the hypervisor cannot emulate it and must refuse it.
    let (pc, fault) = fault::expect_fault(Resume::Next, || {
        // SAFETY: the hypervisor refuses the access, so the UART is not read.
        unsafe { fault::probe_load_pair(p.uart) }
    });
    check_abort("MMIO load pair", fault, 0x25, p.uart, pc);
    println!(
        "guest: noslot: MMIO without a valid syndrome refused at {:#x}",
        p.uart
    );
}
