//! `touch`: writes one word per 4 KiB page over N MiB of RAM (bootargs `touch=N`, default 64), then reads it all back.
//!
//! Every page faults into stage 2 at most once (on its write); the read-back
//! checks that each page kept its own value, so a page mapped twice, or to
//! the wrong frame, fails.

#![no_std]
#![no_main]

use guests::dt::parse_u64;
use guests::mem::{self, MIB, PAGE};
use guests::{check, fail, println, Platform};

guests::entry!(main);

/// What page `addr` holds: its address, tagged.
fn pattern(addr: u64) -> u64 {
    addr ^ 0x7e57_0000_0000_0000
}

fn main(p: &Platform) {
    let mib = match p.arg("touch") {
        None => 64,
        Some(text) => parse_u64(text).unwrap_or_else(|| fail!("touch: bad bootarg touch={text}")),
    };
    let free = mem::free(p);
    let Some(ram) = mem::claim(p, mib * MIB) else {
        fail!(
            "touch: {mib} MiB do not fit: {} MiB free at {:#x}",
            free.size / MIB,
            free.base
        );
    };
    let region = ram.region();
    for offset in (0..region.size).step_by(PAGE as usize) {
        ram.write(offset, pattern(ram.addr(offset)));
    }
    for offset in (0..region.size).step_by(PAGE as usize) {
        let (addr, got) = (ram.addr(offset), ram.read(offset));
        check!(
            got == pattern(addr),
            "touch: page {addr:#x} holds {got:#x}, expected {:#x}",
            pattern(addr)
        );
    }
    println!(
        "guest: touch: touched {mib} MiB at {:#x}..{:#x}",
        region.base,
        region.end()
    );
}
