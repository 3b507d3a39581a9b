//! `relax`: runs code written into a RAM block the guest has only used as data, so the hypervisor must make the block executable on the instruction abort.
//!
//! Twice, with different code in the same page: the second write checks the
//! page is still writable once it was made executable.

#![no_std]
#![no_main]

use guests::mem::{self, BLOCK, PAGE};
use guests::{check, cpu, fail, fault, println, Platform};

guests::entry!(main);

/// `mov x0, #imm; ret` as one little-endian u64 (first instruction low).
fn mov_ret(imm: u16) -> u64 {
    let mov = 0xd280_0000 | (u64::from(imm) << 5);
    let ret = 0xd65f_03c0;
    (ret << 32) | mov
}

fn main(p: &Platform) {
    let Some(ram) = mem::claim(p, BLOCK) else {
        fail!("relax: no free 2 MiB block above the image");
    };
    // Data accesses first, all over the block: stage 2 maps it for data.
    for offset in (0..BLOCK).step_by(PAGE as usize) {
        ram.write(offset, offset);
    }
    for offset in (0..BLOCK).step_by(PAGE as usize) {
        check!(
            ram.read(offset) == offset,
            "relax: data page at {:#x} lost its value",
            ram.addr(offset)
        );
    }

    let code = 5 * PAGE;
    let addr = ram.addr(code);
    for value in [42, 7] {
        ram.write(code, mov_ret(value));
        cpu::sync_icache(addr, 8);
        // SAFETY: `addr` holds `mov x0, #value; ret` (just written and made
        // visible to instruction fetch), a function returning a u64.
        let got = unsafe { fault::probe_call(addr) };
        check!(
            got == u64::from(value),
            "relax: code at {addr:#x} returned {got}, expected {value}"
        );
    }
    println!("guest: relax: executed code written to a data page");
}
