//! `migrate`: every vCPU keeps rewriting its stripe of memory with a changing pattern, and all of them bump counters in a few shared hot pages, while the hypervisor live-migrates the guest's RAM (`migrate=N`).
//!
//! The boot vCPU turns on the EL1 identity map, claims the region (`mib=N`
//! MiB above the image, default 32), starts
//! the others with `CPU_ON` and lets everyone go. Each vCPU then runs passes
//! until `seconds=S` (bootargs, default 8) of the virtual counter have
//! passed: a pass writes `pattern(address, pass, vcpu)` into the first word
//! of every 64-byte line of its stripe, and after every page adds one to its
//! own word in one of the hot pages (all vCPUs share those pages, so their
//! write faults meet the hypervisor's write-protects there). At the end each
//! vCPU checks its stripe holds its last pass, the boot vCPU checks every hot
//! word holds the count its vCPU made, and the others end with `CPU_OFF`.
//! Waits are bounded.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use guests::cpu::{self, MAX_CPUS};
use guests::mem::{self, Ram, MIB, PAGE};
use guests::{check, fail, mmu, println, psci, Platform};

guests::entry!(main, secondary_main);

/// The region every vCPU writes (hot pages first, then the stripes), by
/// default; bootargs `mib=N` changes it.
const DEFAULT_MIB: u64 = 32;
/// Shared pages holding one counter word per vCPU each.
const HOT_PAGES: u64 = 4;
/// Bytes between two words a pass writes.
const LINE: u64 = 64;
/// The `CPU_ON` context id of vCPU `n` is `CONTEXT | n`.
const CONTEXT: u64 = 0x4d49_0000;
const WAIT_MS: u64 = 15_000;
const DEFAULT_SECONDS: u64 = 8;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static GO: AtomicBool = AtomicBool::new(false);
static VCPUS: AtomicUsize = AtomicUsize::new(1);
static SECONDS: AtomicU64 = AtomicU64::new(DEFAULT_SECONDS);
static SIZE: AtomicU64 = AtomicU64::new(DEFAULT_MIB * MIB);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
/// Passes each vCPU finished (0: not done yet).
static PASSES: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];
/// Hot-page increments each vCPU made.
static BUMPS: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];

/// What vCPU `id` writes at `addr` in pass `pass`.
fn pattern(addr: u64, pass: u64, id: usize) -> u64 {
    addr ^ (pass << 40) ^ ((id as u64 + 1) << 56)
}

/// vCPU `id`'s stripe: `(offset, size)` in the region, whole pages.
fn stripe(id: usize, n: usize) -> (u64, u64) {
    let pages = SIZE.load(Ordering::Acquire) / PAGE - HOT_PAGES;
    let per = pages / n as u64;
    ((HOT_PAGES + per * id as u64) * PAGE, per * PAGE)
}

/// The hot word of vCPU `id` in hot page `page`.
fn hot(page: u64, id: usize) -> u64 {
    page * PAGE + 8 * id as u64
}

/// Rewrites the stripe until time is up; checks the last pass; reports.
fn work(ram: Ram, id: usize) {
    let n = VCPUS.load(Ordering::Acquire);
    let (start, size) = stripe(id, n);
    let ms = SECONDS.load(Ordering::Acquire) * 1000;
    let mut pass = 0;
    let mut bumps = 0u64;
    cpu::wait_until(ms, || {
        pass += 1;
        for page in (start..start + size).step_by(PAGE as usize) {
            for line in (page..page + PAGE).step_by(LINE as usize) {
                ram.write(line, pattern(ram.addr(line), pass, id));
            }
            ram.word(hot(bumps % HOT_PAGES, id))
                .fetch_add(1, Ordering::Relaxed);
            bumps += 1;
        }
        false
    });
    for line in (start..start + size).step_by(LINE as usize) {
        let (addr, got) = (ram.addr(line), ram.read(line));
        check!(
            got == pattern(addr, pass, id),
            "migrate: vcpu{id}: {addr:#x} holds {got:#x}, expected {:#x} (pass {pass})",
            pattern(addr, pass, id)
        );
    }
    BUMPS[id].store(bumps, Ordering::Release);
    PASSES[id].store(pass, Ordering::Release);
}

fn main(p: &Platform) {
    let me = cpu::id();
    let n = p.cpus().len();
    let ids = p.cpus().iter().map(|&mpidr| (mpidr & 0xff) as usize);
    let others = p
        .cpus()
        .iter()
        .copied()
        .filter(|&mpidr| (mpidr & 0xff) as usize != me);
    if let Some(s) = p.arg("seconds") {
        match guests::dt::parse_u64(s) {
            Some(s @ 1..=600) => SECONDS.store(s, Ordering::Release),
            _ => fail!("migrate: seconds={s}: expected 1 to 600"),
        }
    }
    if let Some(m) = p.arg("mib") {
        match guests::dt::parse_u64(m) {
            Some(m @ 1..=1024) => SIZE.store(m * MIB, Ordering::Release),
            _ => fail!("migrate: mib={m}: expected 1 to 1024"),
        }
    }
    let size = SIZE.load(Ordering::Acquire);
    check!(
        ids.clone().all(|id| id < n),
        "migrate: vCPU ids must be 0..{n}"
    );
    VCPUS.store(n, Ordering::Release);
    mmu::enable(p);
    let Some(ram) = mem::claim(p, size) else {
        fail!("migrate: no {} MiB free above the image", size / MIB);
    };
    println!(
        "guest: migrate: {n} vCPUs rewrite {:#x}..{:#x} for {} s",
        ram.region().base,
        ram.region().end(),
        SECONDS.load(Ordering::Acquire)
    );
    psci::start_others("migrate", others.clone(), CONTEXT, &ONLINE, WAIT_MS);
    GO.store(true, Ordering::Release);
    work(ram, me);

    let wait_ms = WAIT_MS + SECONDS.load(Ordering::Acquire) * 1000;
    let all_done = || {
        ids.clone()
            .all(|id| PASSES[id].load(Ordering::Acquire) != 0)
    };
    if !cpu::wait_until(wait_ms, all_done) {
        fail!("migrate: not every vCPU finished");
    }
    for id in ids.clone() {
        let want = BUMPS[id].load(Ordering::Acquire);
        let got: u64 = (0..HOT_PAGES).map(|page| ram.read(hot(page, id))).sum();
        check!(
            got == want,
            "migrate: vcpu{id}'s hot words add up to {got}, expected {want}"
        );
    }
    let passes: u64 = ids
        .clone()
        .map(|id| PASSES[id].load(Ordering::Acquire))
        .sum();
    println!(
        "guest: migrate: {n} vCPUs made {passes} passes over {} MiB; every stripe and hot word checked",
        size / MIB
    );
    for mpidr in others {
        let off = || psci::affinity_info(mpidr) == psci::AFFINITY_OFF;
        if !cpu::wait_until(WAIT_MS, off) {
            fail!("migrate: AFFINITY_INFO({mpidr:#x}) never reported OFF");
        }
    }
}

fn secondary_main(context: u64) -> ! {
    let id = cpu::id();
    check!(
        context == CONTEXT | id as u64,
        "migrate: vcpu{id} started with context {context:#x}"
    );
    let Some(ram) = mem::claimed() else {
        fail!("migrate: vcpu{id} started before the boot vCPU claimed RAM");
    };
    ONLINE.fetch_add(1, Ordering::AcqRel);
    if !cpu::wait_until(WAIT_MS, || GO.load(Ordering::Acquire)) {
        fail!("migrate: vcpu{id} never got the go");
    }
    work(ram, id);
    let ret = psci::cpu_off();
    fail!("migrate: vcpu{id}: CPU_OFF returned {ret}")
}
