//! `hostile_scan`: the guest looks for anything outside its own memory: a scan of the IPA space (every GiB, and the edges of each slot and device window), stores as well as loads, MMIO accesses with no valid syndrome, and a stage-1 table in no slot. Every access must come back as the abort the ABI promises.
//!
//! With the MMU off an address is an IPA: anything but the guest's RAM, its
//! ROM and its device windows is in no slot (the hypervisor's own memory
//! and the host's devices have no IPA here). A stage-1 walk that reads a
//! table from no slot gets a synchronous external abort on the walk, with
//! the walk's level (`FSC` 0x14 + level).

#![no_std]
#![no_main]

use guests::fault::{self, Fault, Resume};
use guests::{check, fail, mmu, println, Platform};

guests::entry!(main);

const GIB: u64 = 1 << 30;
/// The IPA space the hypervisor gives a VM (40 bits).
const IPA_TOP: u64 = 1 << 40;

fn expect(what: &str, addr: u64, fault: Option<Fault>, ec: u64, fsc: u64, write: bool) {
    let Some(f) = fault else {
        fail!("hostile_scan: {what} at {addr:#x} did not fault");
    };
    let wnr = f.esr & (1 << 6) != 0;
    check!(
        f.ec() == ec && f.fsc() == fsc && f.far == addr && wnr == write,
        "hostile_scan: {what} at {addr:#x}: ESR {:#x} FAR {:#x}, expected EC {ec:#x} FSC {fsc:#x} WnR {write}",
        f.esr,
        f.far
    );
}

fn probe(addr: u64) {
    let (_, f) = fault::expect_fault(Resume::Next, || {
        // SAFETY: an address in no slot: nothing is read.
        unsafe { fault::probe_load(addr) }
    });
    expect("load", addr, f, 0x25, 0x10, false);
    let (_, f) = fault::expect_fault(Resume::Next, || {
        // SAFETY: an address in no slot: nothing is written.
        unsafe { fault::probe_store(addr, 0x6869_6a61_636b) }
    });
    expect("store", addr, f, 0x25, 0x10, true);
}

fn main(p: &Platform) {
    let rom = p.rom.unwrap_or_else(|| fail!("hostile_scan: no ROM slot"));
    let redist_end = 0x080a_0000 + 0x2_0000 * p.cpus().len() as u64;
    let windows = [
        (p.ram.base, p.ram.end()),
        (rom.base, rom.end()),
        (0x0800_0000, 0x0801_0000),
        (0x080a_0000, redist_end),
        (p.uart, p.uart + 0x1000),
    ];
    let inside = |a: u64| windows.iter().any(|&(s, e)| a >= s && a < e);
    let mut probed = 0u32;
    let mut edges = [0u64; 16];
    let mut n = 0;
    for &(start, end) in &windows {
        for a in [start.wrapping_sub(8), end] {
            edges[n] = a;
            n += 1;
        }
    }
    edges[n] = IPA_TOP - 8;
    n += 1;
    for a in (0..IPA_TOP)
        .step_by(GIB as usize)
        .chain(edges[..n].iter().copied())
    {
        if inside(a) || a >= IPA_TOP {
            continue;
        }
        probe(a);
        probed += 1;
    }
    println!("guest: hostile_scan: {probed} addresses in no slot, each load and store an abort");

    // Loads and stores pairs to devices: no syndrome, refused.
    for addr in [p.uart, 0x0800_0000, 0x080a_0000] {
        let (_, f) = fault::expect_fault(Resume::Next, || {
            // SAFETY: the hypervisor refuses a load pair to a device.
            unsafe { fault::probe_load_pair(addr) }
        });
        expect("MMIO load pair", addr, f, 0x25, 0x10, false);
    }
    println!("guest: hostile_scan: MMIO without a valid syndrome (ISV=0) refused");

    // Its own stage 1: GiB 8 (VA 0x2_0000_0000) through a level-2 table at
    // an IPA in no slot.
    mmu::enable(p);
    let va = 8 * GIB;
    mmu::set_l1_entry(8, 0x2000_0000 | 0b11);
    let (_, f) = fault::expect_fault(Resume::Next, || {
        // SAFETY: the walk for this VA reads from no slot: an abort.
        unsafe { fault::probe_load(va) }
    });
    expect("load through a table in no slot", va, f, 0x25, 0x16, false);
    let (_, f) = fault::expect_fault(Resume::Return, || {
        // SAFETY: the fetch's walk reads from no slot: an abort, resumed at
        // the return address.
        unsafe { fault::probe_call(va) }
    });
    expect("fetch through a table in no slot", va, f, 0x21, 0x16, false);
    println!("guest: hostile_scan: stage-1 walk from no slot: external abort on the walk, level 2");
}
