//! `hostile_regs`: what the guest may touch. The ID registers hide what it cannot use (EL2, EL3, SVE, SME, MTE, pointer authentication; a physical address range of at most 40 bits; reserved encodings read 0), and set/way cache maintenance, even `DC ISW` (invalidate), never loses the guest's own writes.

#![no_std]
#![no_main]

use core::arch::asm;

use guests::mem::{self, PAGE};
use guests::{check, fail, mmu, println, Platform};

guests::entry!(main);

macro_rules! mrs {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading an ID register has no side effect.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

fn main(p: &Platform) {
    let pfr0 = mrs!("id_aa64pfr0_el1");
    let pfr1 = mrs!("id_aa64pfr1_el1");
    let isar1 = mrs!("id_aa64isar1_el1");
    let mmfr0 = mrs!("id_aa64mmfr0_el1");
    let mmfr1 = mrs!("id_aa64mmfr1_el1");
    let dfr0 = mrs!("id_aa64dfr0_el1");
    let reserved = mrs!("S3_0_C0_C3_7");
    println!(
        "guest: hostile_regs: ID_AA64PFR0 {pfr0:#x} PFR1 {pfr1:#x} ISAR1 {isar1:#x} MMFR0 {mmfr0:#x} MMFR1 {mmfr1:#x} DFR0 {dfr0:#x}"
    );
    for (what, got) in [
        ("EL2 (PFR0)", field(pfr0, 8)),
        ("EL3 (PFR0)", field(pfr0, 12)),
        ("SVE (PFR0)", field(pfr0, 32)),
        ("MTE (PFR1)", field(pfr1, 8)),
        ("SME (PFR1)", field(pfr1, 24)),
        ("APA (ISAR1)", field(isar1, 4)),
        ("API (ISAR1)", field(isar1, 8)),
        ("VH (MMFR1)", field(mmfr1, 8)),
        ("PMSVer (DFR0)", field(dfr0, 32)),
        ("a reserved ID register", reserved),
    ] {
        check!(
            got == 0,
            "hostile_regs: {what} reads {got:#x}, expected 0 (hidden)"
        );
    }
    check!(
        field(pfr0, 4) >= 1,
        "hostile_regs: EL1 not shown in ID_AA64PFR0 ({pfr0:#x})"
    );
    check!(
        field(mmfr0, 0) <= 2,
        "hostile_regs: PARange {} above 40 bits",
        field(mmfr0, 0)
    );
    println!(
        "guest: hostile_regs: EL2, EL3, SVE, SME, MTE, PAuth, VHE, SPE hidden; PARange <= 40 bits"
    );

    // Set/way maintenance on cached data: a pattern written through the
    // caches must survive thousands of DC ISW, CSW and CISW.
    mmu::enable(p);
    let Some(ram) = mem::claim(p, 64 * PAGE) else {
        fail!("hostile_regs: no RAM to claim");
    };
    let words = ram.region().size / 8;
    for i in 0..words {
        ram.write(i * 8, i ^ 0x5357_5357);
    }
    let mut ops = 0u64;
    for set_way in 0..1000u64 {
        let operand = (set_way << 6) | ((set_way & 3) << 30);
        // SAFETY: set/way maintenance: the hypervisor traps it and must not
        // lose memory contents (an invalidate is upgraded to a flush).
        unsafe {
            asm!(
                "dc isw, {x}",
                "dc csw, {x}",
                "dc cisw, {x}",
                x = in(reg) operand,
                options(nostack, preserves_flags)
            )
        };
        ops += 3;
    }
    for i in 0..words {
        let got = ram.read(i * 8);
        check!(
            got == i ^ 0x5357_5357,
            "hostile_regs: word {i} is {got:#x} after {ops} set/way operations"
        );
    }
    println!("guest: hostile_regs: {ops} set/way operations, every cached write kept");
}
