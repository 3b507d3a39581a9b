//! `isolate`: one VM's side of the isolation and containment tests with several VMs, by `role=`:
//!
//! - `fill`: fills its free RAM with [`SECRET`] words (each tagged with its
//!   offset), holds them for `hold_ms` (default 3000), checks they are
//!   still there, powers off;
//! - `scan`: after `wait_ms` (default 1000, so that `fill` has filled),
//!   reads every word of its own RAM (its image and device tree included)
//!   looking for the secret, then loads from every 2 MiB of IPA space from
//!   0 to `scan_gib` GiB (default 8) outside its RAM, ROM and devices:
//!   each must get an injected abort (nothing is mapped there) and none
//!   may read a secret; it prints what it found, and fails on any secret;
//! - `progress`: counts steps for `ms` (default 3000), printing the count
//!   every `every_ms` (default 500): another VM's storm, faults or reset
//!   must not stop it; fails if an interval made no step;
//! - `reset`: asks for `SYSTEM_RESET` at once (the hypervisor's `reset=`
//!   decides how often the VM boots again).
//!
//! Bootargs as above, plus `status=N`: the `SYSTEM_OFF` status at the end
//! (default 0).

#![no_std]
#![no_main]

use guests::dt::parse_u64;
use guests::fault::{self, Resume};
use guests::mem::{self, MIB};
use guests::timer::{counter, us_from_ticks};
use guests::{check, fail, println, psci, Platform};

guests::entry!(main);

/// The top bytes of every secret word (`"SECRET"`), the offset below.
const SECRET: u64 = 0x5345_4352_4554_0000;
/// The mask of the secret's fixed part.
const SECRET_MASK: u64 = 0xffff_ffff_ffff_0000;

fn arg(p: &Platform, key: &str, default: u64) -> u64 {
    match p.arg(key) {
        None => default,
        Some(text) => parse_u64(text).unwrap_or_else(|| fail!("isolate: bad bootarg {key}={text}")),
    }
}

fn now_ms() -> u64 {
    us_from_ticks(counter()) / 1000
}

fn main(p: &Platform) {
    let status = arg(p, "status", 0);
    match p.arg("role") {
        Some("fill") => fill(p),
        Some("scan") => scan(p),
        Some("progress") => progress(p),
        Some("reset") => {
            println!("guest: isolate: reset: asking for SYSTEM_RESET");
            psci::system_reset()
        }
        other => fail!("isolate: role={other:?}: expected fill, scan, progress or reset"),
    }
    psci::system_off(status)
}

fn fill(p: &Platform) {
    let free = mem::free(p);
    let Some(ram) = mem::claim(p, free.size & !(MIB - 1)) else {
        fail!("isolate: fill: no free RAM");
    };
    let region = ram.region();
    for offset in (0..region.size).step_by(8) {
        ram.write(offset, SECRET | (offset >> 3) & 0xffff);
    }
    println!(
        "guest: isolate: fill: {} MiB of secrets at {:#x}..{:#x}",
        region.size / MIB,
        region.base,
        region.end()
    );
    let hold = arg(p, "hold_ms", 3000);
    let start = now_ms();
    while now_ms() - start < hold {
        guests::cpu::relax();
    }
    for offset in (0..region.size).step_by(8) {
        let got = ram.read(offset);
        check!(
            got == SECRET | (offset >> 3) & 0xffff,
            "isolate: fill: word at {:#x} changed to {got:#x}",
            ram.addr(offset)
        );
    }
    println!("guest: isolate: fill: secrets held {hold} ms, intact");
}

fn scan(p: &Platform) {
    let wait = arg(p, "wait_ms", 1000);
    let start = now_ms();
    while now_ms() - start < wait {
        guests::cpu::relax();
    }
    // Its own RAM, every word.
    let mut found = 0u64;
    for addr in (p.ram.base..p.ram.end()).step_by(8) {
        // SAFETY: RAM the device tree gives this guest: mapped on first
        // touch, readable; nothing else writes it meanwhile but this vCPU.
        let word = unsafe { core::ptr::read_volatile(addr as *const u64) };
        if word & SECRET_MASK == SECRET {
            found += 1;
        }
    }
    check!(
        found == 0,
        "isolate: scan: {found} secret words in its own RAM"
    );
    println!(
        "guest: isolate: scan: {} MiB of its RAM read, no secret",
        p.ram.size / MIB
    );
    // The IPA space outside its RAM, ROM and devices: every access aborts.
    let gib = arg(p, "scan_gib", 8);
    let (mut probes, mut aborted) = (0u64, 0u64);
    let rom = p.rom.unwrap_or(guests::dt::Region { base: 0, size: 0 });
    let mut addr = 0;
    while addr < gib << 30 {
        let skip = p.ram.contains(addr)
            || rom.contains(addr)
            || (0x0800_0000..0x0a00_0000).contains(&addr);
        if !skip {
            probes += 1;
            let (word, fault) = fault::expect_fault(Resume::Next, || {
                // SAFETY: an IPA in no slot: the hypervisor injects an
                // abort instead of mapping anything.
                unsafe { fault::probe_load(addr) }
            });
            match fault {
                Some(_) => aborted += 1,
                None => check!(
                    word.0 & SECRET_MASK != SECRET,
                    "isolate: scan: a secret at IPA {addr:#x}"
                ),
            }
        }
        addr += 2 * MIB;
    }
    check!(
        aborted == probes,
        "isolate: scan: {} of {probes} probes outside its memory did not abort",
        probes - aborted
    );
    println!("guest: isolate: scan: {probes} probes of IPA space outside its memory up to {gib} GiB, all aborted, no secret");
}

fn progress(p: &Platform) {
    let ms = arg(p, "ms", 3000);
    let every = arg(p, "every_ms", 500).max(1);
    let start = now_ms();
    let (mut steps, mut last, mut next) = (0u64, 0u64, start + every);
    loop {
        steps += 1;
        let now = now_ms();
        if now >= next {
            check!(
                steps > last,
                "isolate: progress: no step in {every} ms (at {} ms)",
                now - start
            );
            println!(
                "guest: isolate: progress: {steps} steps at {} ms",
                now - start
            );
            last = steps;
            next += every;
        }
        if now - start >= ms {
            break;
        }
    }
    println!("guest: isolate: progress: {steps} steps in {ms} ms, never stalled");
}
