//! `rom`: reads the read-only slot (`hyp,rom`) and checks its pattern, then writes to it and expects the injected external abort.

#![no_std]
#![no_main]

use guests::fault::{self, Resume};
use guests::mem::PAGE;
use guests::{check, fail, println, Platform};

guests::entry!(main);

/// What the ABI says the u64 at offset `o` holds.
fn pattern(offset: u64) -> u64 {
    0x524f_4d00_0000_0000 | offset
}

fn read(addr: u64) -> u64 {
    // SAFETY: an aligned address in the ROM slot the device tree lists:
    // memory with no read side effect.
    let (value, _) = unsafe { fault::probe_load(addr) };
    value
}

fn main(p: &Platform) {
    let Some(rom) = p.rom else {
        fail!("rom: no hyp,rom node in the device tree");
    };
    check!(
        rom.size >= PAGE,
        "rom: slot at {:#x} is only {} bytes",
        rom.base,
        rom.size
    );

    // Every word of the first page, the first and last word of every page.
    let first_page = (0..PAGE).step_by(8);
    let page_ends = (0..rom.size)
        .step_by(PAGE as usize)
        .flat_map(|o| [o, o + PAGE - 8]);
    for offset in first_page.chain(page_ends) {
        let got = read(rom.base + offset);
        check!(
            got == pattern(offset),
            "rom: word at offset {offset:#x} is {got:#x}, expected {:#x}",
            pattern(offset)
        );
    }

    let target = rom.base + 0x100;
    let (pc, fault) = fault::expect_fault(Resume::Next, || {
        // SAFETY: the ROM slot holds nothing this guest uses; the write is
        // refused (and if it were not, only the pattern check below fails).
        unsafe { fault::probe_store(target, 0xdead_beef) }
    });
    let Some(fault) = fault else {
        fail!("rom: a write to {target:#x} did not fault");
    };
    check!(
        fault.ec() == 0x25 && fault.fsc() == 0x10,
        "rom: write fault has ESR {:#x} (EC {:#x}, DFSC {:#x}), expected EC 0x25 DFSC 0x10",
        fault.esr,
        fault.ec(),
        fault.fsc()
    );
    check!(
        fault.far == target,
        "rom: FAR {:#x}, expected {target:#x}",
        fault.far
    );
    check!(
        fault.elr == pc,
        "rom: ELR {:#x}, expected the store at {pc:#x}",
        fault.elr
    );
    let after = read(target);
    check!(
        after == pattern(0x100),
        "rom: after the refused write the word is {after:#x}"
    );
    println!("guest: rom: read ok, write faulted (ESR {:#x})", fault.esr);
}
