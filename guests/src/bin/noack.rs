//! `noack`: every vCPU enables its timer interrupts and SGIs but never acknowledges them (IRQs masked), then acknowledges one and never ends it; it must keep running at its own pace, and the run ends with `SYSTEM_OFF` 0 with interrupts still pending and active.
//!
//! What could hurt a hypervisor: interrupts that stay pending forever (a
//! level-sensitive timer line that stays up, SGIs that keep coming, list
//! registers never freed) and an interrupt left active forever. A vCPU in
//! such a state must not be starved, nor storm the hypervisor.
//!
//! The boot vCPU turns on the identity map, sets up the GIC and starts the
//! others; every vCPU then runs the same loop, a block of arithmetic, one
//! SGI write (to itself and the next vCPU, cycling through the 16 SGIs) and
//! a `YIELD` ([`cpu::relax`]: vCPUs sharing QEMU's one `-icount` thread then
//! take turns step by step) per progress step, through three phases of `ms=MS` each (bootargs,
//! default 600), on a common clock:
//!
//! 1. baseline: its SGIs and timer PPIs disabled, timers stopped, IRQs
//!    masked (`PSTATE.I`).
//! 2. never acknowledged: SGIs and both timer PPIs enabled, both timers
//!    armed at deadline 0 (so their lines stay up), IRQs still masked: every
//!    interrupt stays pending.
//! 3. never ended: IRQs unmasked, interrupts left active
//!    ([`irq::set_leave_active`]): the first one is acknowledged and never
//!    ended, so with every interrupt at the same priority the vCPU must take
//!    exactly that one, its running priority staying there.
//!
//! Each vCPU's steps in phases 2 and 3 must reach `min_pct=P` percent
//! (default 10) of its baseline. The boot vCPU reports everyone's counts
//! and ends the run while the others keep looping.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use guests::cpu::{self, MAX_CPUS};
use guests::dt::parse_u64;
use guests::timer::{self, Timer, BOTH};
use guests::{check, fail, gic, irq, mmu, println, psci, sgi, Platform};

guests::entry!(main, secondary_main);

/// The `CPU_ON` context id of vCPU `n` is `CONTEXT | n`.
const CONTEXT: u64 = 0x4e41_0000;
const WAIT_MS: u64 = 15_000;
const DEFAULT_MS: u64 = 600;
const DEFAULT_MIN_PCT: u64 = 10;
/// Arithmetic iterations per progress step.
const BLOCK: u64 = 256;
const PHASES: usize = 3;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
/// When phase 1 starts (virtual counter), 0 until the boot vCPU says.
static T0: AtomicU64 = AtomicU64::new(0);
static PHASE_TICKS: AtomicU64 = AtomicU64::new(0);

/// One vCPU's results, written by that vCPU only.
struct Report {
    /// Steps in each phase.
    steps: [AtomicU64; PHASES],
    /// Interrupts taken in phase 3, the one left active, the running
    /// priority then.
    taken: AtomicU64,
    active: AtomicU64,
    rpr: AtomicU64,
    /// Whether the GIC still shows that interrupt active (`ISACTIVER`).
    still_active: AtomicU64,
    /// Set once the three phases are over.
    done: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Report = Report {
    steps: [ZERO; PHASES],
    taken: ZERO,
    active: ZERO,
    rpr: ZERO,
    still_active: ZERO,
    done: ZERO,
};
static REPORTS: [Report; MAX_CPUS] = [EMPTY; MAX_CPUS];

fn handler(intid: u32) {
    let r = &REPORTS[cpu::id()];
    // Only phase 3 unmasks IRQs, and its first interrupt stays active at
    // the priority of all the others: a second one is the GIC's error (and
    // would come again and again: fail now rather than livelock).
    if r.taken.load(Ordering::Relaxed) != 0 {
        fail!(
            "noack: vcpu{}: took interrupt {intid} while {} is active at the same priority (running priority {:#x})",
            cpu::id(),
            r.active.load(Ordering::Relaxed),
            gic::running_priority()
        );
    }
    r.active.store(u64::from(intid), Ordering::Relaxed);
    r.taken
        .store(r.taken.load(Ordering::Relaxed) + 1, Ordering::Release);
}

/// The vCPU after this one in the device tree (itself if alone).
fn next_vcpu() -> u64 {
    let cpus = guests::platform().cpus();
    let me = cpus
        .iter()
        .position(|&m| (m & 0xff) as usize == cpu::id())
        .unwrap_or(0);
    cpus[(me + 1) % cpus.len()]
}

/// The three phases; returns the loop's state to carry on with.
fn run(id: usize) -> (u64, u32) {
    let p = guests::platform();
    if !cpu::wait_until(WAIT_MS, || T0.load(Ordering::Acquire) != 0) {
        fail!("noack: vcpu{id} never got the start time");
    }
    let t0 = T0.load(Ordering::Acquire);
    let phase_ticks = PHASE_TICKS.load(Ordering::Relaxed);
    let targets = [cpu::mpidr(), next_vcpu()];
    let timers = BOTH.map(|t| t.intid(p));
    cpu::irq_mask();
    for intid in 0..sgi::COUNT {
        gic::disable(intid);
    }
    for t in BOTH {
        t.stop();
    }
    let r = &REPORTS[id];
    let mut seed = id as u64 + 1;
    let mut intid = 0;
    let mut phase = 0;
    let mut steps = 0;
    while phase < PHASES {
        while timer::counter() < t0 + phase_ticks * (phase as u64 + 1) {
            for _ in 0..BLOCK {
                seed = core::hint::black_box(
                    seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                );
            }
            gic::send_sgi_to(intid, &targets);
            intid = (intid + 1) % sgi::COUNT;
            steps += 1;
            cpu::relax();
        }
        r.steps[phase].store(steps, Ordering::Relaxed);
        steps = 0;
        phase += 1;
        match phase {
            1 => {
                for intid in (0..sgi::COUNT).chain(timers) {
                    gic::enable(intid);
                }
                for t in BOTH {
                    t.arm_at(0);
                }
            }
            2 => {
                irq::set_leave_active(true);
                cpu::irq_unmask();
            }
            _ => {
                r.rpr
                    .store(u64::from(gic::running_priority()), Ordering::Relaxed);
                let intid = r.active.load(Ordering::Relaxed) as u32;
                let active = r.taken.load(Ordering::Acquire) == 1 && gic::is_active(intid);
                r.still_active.store(u64::from(active), Ordering::Relaxed);
            }
        }
    }
    r.done.store(1, Ordering::Release);
    (seed, intid)
}

/// The loop of phase 3, forever: until the run ends.
fn keep_going(mut seed: u64, mut intid: u32) -> ! {
    let targets = [cpu::mpidr(), next_vcpu()];
    loop {
        for _ in 0..BLOCK {
            seed = core::hint::black_box(seed.wrapping_add(1));
        }
        gic::send_sgi_to(intid, &targets);
        intid = (intid + 1) % sgi::COUNT;
        cpu::relax();
    }
}

fn arg(p: &Platform, key: &str, default: u64) -> u64 {
    match p.arg(key) {
        None => default,
        Some(v) => parse_u64(v)
            .filter(|&v| v > 0)
            .unwrap_or_else(|| fail!("noack: bad bootarg {key}={v}")),
    }
}

fn main(p: &Platform) {
    let ms = arg(p, "ms", DEFAULT_MS);
    let min_pct = arg(p, "min_pct", DEFAULT_MIN_PCT);
    mmu::enable(p);
    gic::init(p);
    irq::set_handler(handler);
    let me = cpu::id();
    let n = p.cpus().len();
    let ids = p.cpus().iter().map(|&m| (m & 0xff) as usize);
    let others = p
        .cpus()
        .iter()
        .copied()
        .filter(|&mpidr| (mpidr & 0xff) as usize != me);
    println!(
        "guest: noack: {n} vCPUs, 3 phases of {ms} ms: baseline, interrupts never acknowledged (IRQs masked), one acknowledged and never ended; virtual timer INTID {}, physical {}",
        Timer::Virtual.intid(p),
        Timer::Physical.intid(p)
    );
    psci::start_others("noack", others, CONTEXT, &ONLINE, WAIT_MS);
    PHASE_TICKS.store(timer::ticks_from_us(ms * 1000), Ordering::Relaxed);
    // Start on a common clock a little ahead, once everyone is up.
    T0.store(
        timer::counter() + timer::ticks_from_us(10_000),
        Ordering::Release,
    );
    run(me);
    let all_done = || {
        ids.clone()
            .all(|k| REPORTS[k].done.load(Ordering::Acquire) != 0)
    };
    if !cpu::wait_until(WAIT_MS + ms, all_done) {
        for k in ids
            .clone()
            .filter(|&k| REPORTS[k].done.load(Ordering::Acquire) == 0)
        {
            println!("guest: FAIL: noack: vcpu{k} never finished its phases");
        }
        fail!("noack: not every vCPU finished");
    }
    let timers = BOTH.map(|t| t.intid(p));
    for k in ids {
        let r = &REPORTS[k];
        let [base, masked, active] = r.steps.each_ref().map(|s| s.load(Ordering::Relaxed));
        let pct = |steps: u64| steps * 100 / base.max(1);
        println!("guest: noack: vcpu{k}: baseline {base} steps in {ms} ms (interrupts disabled)");
        check!(
            masked > 0 && pct(masked) >= min_pct,
            "noack: vcpu{k} made {masked} steps with its interrupts pending, {}% of its baseline (min_pct={min_pct})",
            pct(masked)
        );
        println!(
            "guest: noack: vcpu{k}: IRQs masked, both timers and SGIs pending, never acknowledged: {masked} steps ({}% of baseline) ok",
            pct(masked)
        );
        let (taken, intid, rpr) = (
            r.taken.load(Ordering::Acquire),
            r.active.load(Ordering::Relaxed) as u32,
            r.rpr.load(Ordering::Relaxed) as u8,
        );
        check!(
            taken == 1,
            "noack: vcpu{k} took {taken} interrupts with one left active at the same priority, expected 1"
        );
        check!(
            intid < sgi::COUNT || timers.contains(&intid),
            "noack: vcpu{k} took interrupt {intid}, neither an SGI nor its timers"
        );
        check!(
            r.still_active.load(Ordering::Relaxed) == 1,
            "noack: vcpu{k}: interrupt {intid}, never ended, does not read active in GICR_ISACTIVER0/GICD_ISACTIVER"
        );
        check!(
            rpr == gic::DEFAULT_PRIORITY,
            "noack: vcpu{k}: running priority {rpr:#x} with interrupt {intid} active, expected {:#x}",
            gic::DEFAULT_PRIORITY
        );
        check!(
            active > 0 && pct(active) >= min_pct,
            "noack: vcpu{k} made {active} steps with an interrupt left active, {}% of its baseline (min_pct={min_pct})",
            pct(active)
        );
        println!(
            "guest: noack: vcpu{k}: IRQs unmasked, interrupt {intid} acknowledged and never ended (still active, running priority {rpr:#x}), no other taken: {active} steps ({}% of baseline) ok",
            pct(active)
        );
    }
    println!(
        "guest: noack: {n} vCPUs not starved; SYSTEM_OFF with their interrupts pending and active"
    );
}

fn secondary_main(context: u64) -> ! {
    let id = cpu::id();
    check!(
        context == CONTEXT | id as u64,
        "noack: vcpu{id} started with context {context:#x}"
    );
    gic::init_cpu();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    let (seed, intid) = run(id);
    keep_going(seed, intid)
}
