//! `hostile_log`: an exception storm that would flood the hypervisor's log: thousands of refused accesses (loads and stores in no slot, writes to the ROM), each of which must still come back as the abort the ABI promises.
//!
//! The hypervisor logs one line per refused access through its VM's rate
//! limit; the smoke test counts those lines (a burst, then a few a second,
//! and a "suppressed" summary) against the stats line that counts every
//! injected abort. Bootargs `n=N` sets the accesses of each kind (default
//! 1000).

#![no_std]
#![no_main]

use guests::dt::parse_u64;
use guests::fault::{self, Fault, Resume};
use guests::{check, fail, println, Platform};

guests::entry!(main);

const NOWHERE: u64 = 0x2000_0000;

fn check_abort(what: &str, i: u64, fault: Option<Fault>, ec: u64, addr: u64, write: bool) {
    let Some(f) = fault else {
        fail!("hostile_log: {what} {i} at {addr:#x} did not fault");
    };
    let wnr = f.esr & (1 << 6) != 0;
    check!(
        f.ec() == ec && f.fsc() == 0x10 && f.far == addr && wnr == write,
        "hostile_log: {what} {i}: ESR {:#x} FAR {:#x}, expected EC {ec:#x} FSC 0x10 WnR {write} FAR {addr:#x}",
        f.esr,
        f.far
    );
}

fn main(p: &Platform) {
    let n = match p.arg("n") {
        None => 1000,
        Some(t) => parse_u64(t).unwrap_or_else(|| fail!("hostile_log: bad n={t}")),
    };
    let Some(rom) = p.rom else {
        fail!("hostile_log: no ROM slot");
    };
    for i in 0..n {
        let addr = NOWHERE + (i % 512) * 0x1000;
        let (_, f) = fault::expect_fault(Resume::Next, || {
            // SAFETY: an address in no slot: the load gets an abort.
            unsafe { fault::probe_load(addr) }
        });
        check_abort("load", i, f, 0x25, addr, false);
        let (_, f) = fault::expect_fault(Resume::Next, || {
            // SAFETY: as above, a store that goes nowhere.
            unsafe { fault::probe_store(addr, i) }
        });
        check_abort("store", i, f, 0x25, addr, true);
        let target = rom.base + (i % 256) * 8;
        let (_, f) = fault::expect_fault(Resume::Next, || {
            // SAFETY: the ROM refuses writes: nothing is written.
            unsafe { fault::probe_store(target, i) }
        });
        let Some(f) = f else {
            fail!("hostile_log: ROM write {i} at {target:#x} did not fault");
        };
        check!(
            f.esr == 0x9600_0050 && f.far == target,
            "hostile_log: ROM write {i}: ESR {:#x} FAR {:#x}",
            f.esr,
            f.far
        );
    }
    println!(
        "guest: hostile_log: {} refused accesses, every one an abort",
        3 * n
    );
}
