//! `smp` (the default guest): every vCPU in the device tree touches the same 32 MiB at the same time, so the hypervisor takes concurrent faults on the same blocks.
//!
//! The boot vCPU turns on the EL1 identity map (atomics need normal memory;
//! bootargs `mmu=off` keeps it off), starts the others with `CPU_ON` and,
//! once all are up, lets everyone go. Each vCPU writes its id into the first
//! word of every page and a value of its own into its slot word (1 + id),
//! then checks its slot in every page. The others end with `CPU_OFF`; the
//! boot vCPU checks that `AFFINITY_INFO` reports them off. Waits are bounded.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use guests::cpu::{self, MAX_CPUS};
use guests::mem::{self, Ram, MIB, PAGE};
use guests::{check, fail, mmu, println, psci, Platform};

guests::entry!(main, secondary_main);

const SIZE: u64 = 32 * MIB;
/// The `CPU_ON` context id of vCPU `n` is `CONTEXT | n`.
const CONTEXT: u64 = 0x5350_0000;
const WAIT_MS: u64 = 15_000;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static GO: AtomicBool = AtomicBool::new(false);
#[allow(clippy::declare_interior_mutable_const)]
const NOT_DONE: AtomicU8 = AtomicU8::new(0);
static DONE: [AtomicU8; MAX_CPUS] = [NOT_DONE; MAX_CPUS];

/// What vCPU `id` writes in its slot of the page at `addr`.
fn pattern(addr: u64, id: usize) -> u64 {
    addr ^ ((id as u64 + 1) << 56)
}

fn touch(ram: Ram, id: usize) {
    let slot = 8 * (1 + id as u64);
    for page in (0..ram.region().size).step_by(PAGE as usize) {
        ram.write(page, id as u64);
        ram.write(page + slot, pattern(ram.addr(page), id));
    }
    for page in (0..ram.region().size).step_by(PAGE as usize) {
        let (addr, got) = (ram.addr(page), ram.read(page + slot));
        check!(
            got == pattern(addr, id),
            "smp: vcpu{id}: page {addr:#x} slot holds {got:#x}, expected {:#x}",
            pattern(addr, id)
        );
    }
    DONE[id].store(1, Ordering::Release);
}

fn main(p: &Platform) {
    let me = cpu::id();
    let ids = p.cpus().iter().map(|&mpidr| (mpidr & 0xff) as usize);
    let others = p
        .cpus()
        .iter()
        .copied()
        .filter(|&mpidr| (mpidr & 0xff) as usize != me);
    let n = p.cpus().len();

    if p.arg("mmu") != Some("off") {
        mmu::enable(p);
    }
    let Some(ram) = mem::claim(p, SIZE) else {
        fail!("smp: no {} MiB free above the image", SIZE / MIB);
    };
    println!(
        "guest: smp: starting {} more vCPUs, MMU {}, touching {:#x}..{:#x}",
        n - 1,
        if mmu::is_on() { "on" } else { "off" },
        ram.region().base,
        ram.region().end()
    );
    psci::start_others("smp", others.clone(), CONTEXT, &ONLINE, WAIT_MS);
    GO.store(true, Ordering::Release);
    touch(ram, me);

    let all_done = || ids.clone().all(|id| DONE[id].load(Ordering::Acquire) != 0);
    if !cpu::wait_until(WAIT_MS, all_done) {
        for id in ids
            .clone()
            .filter(|&id| DONE[id].load(Ordering::Acquire) == 0)
        {
            println!("guest: FAIL: smp: vcpu{id} never reported");
        }
        fail!("smp: not every vCPU finished touching");
    }
    // Every page's first word was last written by one of the vCPUs.
    for page in (0..SIZE).step_by(PAGE as usize) {
        let last = ram.read(page) as usize;
        check!(
            ids.clone().any(|id| id == last),
            "smp: page {:#x} names vcpu{last}, which does not exist",
            ram.addr(page)
        );
    }
    println!("guest: smp: {n} vCPUs touched {} MiB", SIZE / MIB);

    for mpidr in others {
        let off = || psci::affinity_info(mpidr) == psci::AFFINITY_OFF;
        if !cpu::wait_until(WAIT_MS, off) {
            fail!(
                "smp: AFFINITY_INFO({mpidr:#x}) = {}, expected OFF after its CPU_OFF",
                psci::affinity_info(mpidr)
            );
        }
    }
    println!("guest: smp: {} other vCPUs off", n - 1);
}

fn secondary_main(context: u64) -> ! {
    let id = cpu::id();
    check!(
        context == CONTEXT | id as u64,
        "smp: vcpu{id} started with context {context:#x}, expected {:#x}",
        CONTEXT | id as u64
    );
    check!(
        cpu::current_el() == 1,
        "smp: vcpu{id} at EL{}",
        cpu::current_el()
    );
    let Some(ram) = mem::claimed() else {
        fail!("smp: vcpu{id} started before the boot vCPU claimed RAM");
    };
    println!("guest: smp: vcpu{id} online");
    ONLINE.fetch_add(1, Ordering::AcqRel);
    if !cpu::wait_until(WAIT_MS, || GO.load(Ordering::Acquire)) {
        fail!("smp: vcpu{id} never got the go");
    }
    touch(ram, id);
    let ret = psci::cpu_off();
    fail!("smp: vcpu{id}: CPU_OFF returned {ret}")
}
