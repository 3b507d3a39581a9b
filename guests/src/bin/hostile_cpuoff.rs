//! `hostile_cpuoff`: `CPU_ON`/`CPU_OFF` storms, then every vCPU turns itself off: the VM must end (status 67, `NoVcpu`) only once the last one is off.
//!
//! Phase 1 (storm): the boot vCPU turns the others on again and again
//! (`rounds=N`, default 50), with bad calls in between; each one, when
//! started, turns itself off at once. Phase 2 (the relay): the boot vCPU
//! hands a baton to vCPU 1 with `CPU_ON` and turns itself off at once;
//! each vCPU started hands it on to the next the same way (retrying while
//! the next is still on) until `relay=N` (default 40) hand-overs are done.
//! A hypervisor that ended the VM when no vCPU *ran* (a `CPU_ON` still
//! pending) would end it early: the last vCPU prints `relay done` before
//! its own `CPU_OFF`, so an early end misses that line.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use guests::psci::{self, ALREADY_ON, INVALID_PARAMETERS};
use guests::{check, cpu, fail, mmu, println, Platform};

guests::entry!(main, secondary_main);

/// Context ids: storm starts, and relay hand-overs (low bits: the count left).
const STORM: u64 = 0x5000_0000;
const RELAY: u64 = 0x6000_0000;

static STARTS: AtomicU64 = AtomicU64::new(0);
static NEXT_OF: AtomicU64 = AtomicU64::new(0);
static CPUS: AtomicU64 = AtomicU64::new(0);

fn off() -> ! {
    let got = psci::cpu_off();
    fail!("hostile_cpuoff: vcpu{}: CPU_OFF returned {got}", cpu::id())
}

fn secondary_main(context: u64) -> ! {
    STARTS.fetch_add(1, Ordering::AcqRel);
    if context & 0xf000_0000 == RELAY {
        relay(context & 0xffff);
    }
    off()
}

/// Hands the baton on (`left` hand-overs to go), then turns this vCPU off.
fn relay(left: u64) -> ! {
    if left == 0 {
        println!(
            "guest: hostile_cpuoff: relay done on vcpu{}, {} starts in all",
            cpu::id(),
            STARTS.load(Ordering::Acquire)
        );
        off();
    }
    let n = CPUS.load(Ordering::Acquire);
    let next = (cpu::id() as u64 + 1) % n;
    loop {
        match psci::start_secondary(next, RELAY | (left - 1)) {
            0 => break,
            ALREADY_ON => cpu::relax(),
            got => fail!("hostile_cpuoff: relay CPU_ON({next}) returned {got}"),
        }
    }
    // At once: the next vCPU may not have started yet.
    off()
}

fn main(p: &Platform) {
    let n = p.cpus().len() as u64;
    check!(n >= 2, "hostile_cpuoff: needs 2 vCPUs or more, has {n}");
    CPUS.store(n, Ordering::Release);
    NEXT_OF.store(0, Ordering::Release);
    mmu::enable(p);
    let rounds = p
        .arg("rounds")
        .and_then(guests::dt::parse_u64)
        .unwrap_or(50);
    let relay_n = p.arg("relay").and_then(guests::dt::parse_u64).unwrap_or(40);
    let others: &[u64] = &p.cpus()[1..];
    for round in 0..rounds {
        for &m in others {
            // Wait until it is off again (it turns itself off at once).
            if !cpu::wait_until(5_000, || psci::affinity_info(m) == psci::AFFINITY_OFF) {
                fail!("hostile_cpuoff: vCPU {m:#x} never went off (round {round})");
            }
            let got = psci::start_secondary(m, STORM | round);
            check!(
                got == 0,
                "hostile_cpuoff: storm CPU_ON({m:#x}) returned {got}"
            );
            // Bad calls in between: all refused, none changes anything.
            let got = psci::start_secondary(0xff, 0);
            check!(
                got == INVALID_PARAMETERS,
                "hostile_cpuoff: CPU_ON(0xff) returned {got}"
            );
            // SAFETY: an AFFINITY_INFO with a lowest level of 3: refused.
            let got = unsafe { psci::hvc(psci::AFFINITY_INFO, m, 3, 0) } as i64;
            check!(
                got == INVALID_PARAMETERS,
                "hostile_cpuoff: AFFINITY_INFO level 3 returned {got}"
            );
        }
    }
    for &m in others {
        if !cpu::wait_until(5_000, || psci::affinity_info(m) == psci::AFFINITY_OFF) {
            fail!("hostile_cpuoff: vCPU {m:#x} never went off");
        }
    }
    let starts = STARTS.load(Ordering::Acquire);
    check!(
        starts == rounds * (n - 1),
        "hostile_cpuoff: {starts} storm starts, expected {}",
        rounds * (n - 1)
    );
    println!(
        "guest: hostile_cpuoff: storm of {starts} CPU_ON/CPU_OFF done, every vCPU off but vcpu0; relay of {relay_n}"
    );
    relay(relay_n)
}
