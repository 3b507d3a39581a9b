//! `hello`: the smallest guest: says where it runs, asks PSCI its version, exits 0.

#![no_std]
#![no_main]

use guests::{check, cpu, println, psci, Platform};

guests::entry!(main);

fn main(p: &Platform) {
    let el = cpu::current_el();
    println!("guest: hello from vcpu{} at EL{}", cpu::id(), el);
    check!(el == 1, "hello: running at EL{el}, expected EL1");
    check!(
        cpu::id() == 0,
        "hello: booted on vcpu{}, expected vcpu0",
        cpu::id()
    );
    let version = psci::version();
    println!(
        "guest: hello: psci version {}.{}",
        version >> 16,
        version & 0xffff
    );
    println!(
        "guest: hello: {} vCPUs, {} MiB RAM at {:#x}, uart {:#x}, device tree at {:#x}",
        p.cpus().len(),
        p.ram.size >> 20,
        p.ram.base,
        p.uart,
        p.dtb.base
    );
}
