//! `hostile_regs`: what the guest may touch. The ID registers hide what it cannot use (EL2, EL3, SVE, SME, MTE, pointer authentication; a physical address range of at most 40 bits; reserved encodings read 0); set/way cache maintenance, even `DC ISW` (invalidate), never loses the guest's own writes; the PMU counter reserved for EL2 cannot be named, and no guest counter counts at EL2.

#![no_std]
#![no_main]

use core::arch::asm;

use guests::fault::{self, Resume};
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
    pmu();
}

/// The PMU: `PMCR_EL0.N` counters are the guest's; the next one (EL2's)
/// cannot be named, reset, stopped or filtered to count at EL2.
fn pmu() {
    if field(mrs!("id_aa64dfr0_el1"), 8) == 0 {
        println!("guest: hostile_regs: no PMU");
        return;
    }
    let n = (mrs!("pmcr_el0") >> 11) & 0x1f;
    // Reset and enable every counter, stop and clear everything: only the
    // guest's own are touched.
    // SAFETY: PMU control registers; no memory effect.
    unsafe {
        asm!(
            "msr pmcr_el0, {pe}",
            "msr pmcntenclr_el0, {all}",
            "msr pmovsclr_el0, {all}",
            "msr pmintenclr_el1, {all}",
            "msr pmcntenset_el0, {all}",
            "isb",
            pe = in(reg) 0b11u64,
            all = in(reg) u64::MAX,
            options(nostack, preserves_flags)
        )
    };
    let enabled = mrs!("pmcntenset_el0");
    check!(
        enabled >> n & 0x7fff_ffff >> n == 0,
        "hostile_regs: PMCNTENSET_EL0 {enabled:#x} shows counters from {n} up"
    );
    // Counter n through PMSELR: an undefined instruction.
    let (_, f) = fault::expect_fault(Resume::Next, || {
        let v: u64;
        // SAFETY: selects counter n (EL2's) and reads it: the hypervisor
        // makes that an undefined instruction, resumed after.
        unsafe {
            asm!(
                "msr pmselr_el0, {n}",
                "isb",
                "mrs {v}, pmxevcntr_el0",
                n = in(reg) n,
                v = out(reg) v,
                options(nostack, preserves_flags)
            )
        };
        v
    });
    let Some(f) = f else {
        fail!("hostile_regs: PMXEVCNTR_EL0 with PMSELR_EL0.SEL = {n} (EL2's counter) was read");
    };
    check!(
        f.ec() == 0,
        "hostile_regs: reading EL2's counter: ESR {:#x}, expected an undefined instruction",
        f.esr
    );
    // Counter 0 filtered to count at EL2 (NSH): the filter does not stick.
    // SAFETY: the guest's own counter 0.
    unsafe {
        asm!("msr pmevtyper0_el0, {}", "isb", in(reg) (1u64 << 27) | 0x08, options(nostack, preserves_flags))
    };
    let typer = mrs!("pmevtyper0_el0");
    check!(
        typer & (1 << 27) == 0,
        "hostile_regs: PMEVTYPER0_EL0 {typer:#x} counts at EL2 (NSH)"
    );
    println!("guest: hostile_regs: PMU: {n} counters, EL2's counter undefined, NSH ignored");
}
