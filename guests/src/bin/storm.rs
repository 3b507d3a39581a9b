//! `storm`: one vCPU floods SGIs, to itself and to every other vCPU, as fast as it can, while the others keep a progress counter advancing; the boot vCPU checks they all did and ends the run with `SYSTEM_OFF` while the storm goes on.
//!
//! The boot vCPU turns on the identity map, sets up the GIC and starts the
//! others. The flooder is the last vCPU in the device tree (the boot vCPU
//! itself when alone); the others are the workers. A worker loops: a block
//! of arithmetic, one more step on its progress counter, then a window with
//! IRQs unmasked where it takes what is pending (at most one of each SGI:
//! pending SGIs do not queue up), so the guest itself never livelocks; what
//! is measured is whether the hypervisor lets it run. First a quiet
//! baseline (`BASELINE_MS`, no storm), then the storm for `ms=MS` (bootargs,
//! default 2000): the flooder cycles through the 16 SGIs, each sent to
//! itself, to the list of all others (one write per cluster) and to all
//! others with `IRM` = 1, with its own IRQs unmasked throughout.
//!
//! At the end the boot vCPU prints, for the flooder, the SGIs it wrote and
//! the interrupts it took, and for each worker its steps during the storm
//! next to its quiet rate and the interrupts it took. A worker that took no
//! SGI, or whose storm steps fall below `min_pct=P` percent (default 1) of
//! its quiet rate, fails the run. Then `SYSTEM_OFF` with the flooder still
//! flooding and the workers still working.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use guests::cpu::{self, MAX_CPUS};
use guests::dt::parse_u64;
use guests::{check, fail, gic, irq, mmu, println, psci, sgi, timer, Platform};

guests::entry!(main, secondary_main);

/// The `CPU_ON` context id of vCPU `n` is `CONTEXT | n`.
const CONTEXT: u64 = 0x5354_0000;
const WAIT_MS: u64 = 15_000;
const BASELINE_MS: u64 = 300;
const DEFAULT_MS: u64 = 2000;
const DEFAULT_MIN_PCT: u64 = 1;
/// Arithmetic iterations per progress step.
const BLOCK: u64 = 256;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static FLOODER: AtomicUsize = AtomicUsize::new(0);
/// Set once the boot vCPU has its baseline: the flooder starts.
static STORM: AtomicBool = AtomicBool::new(false);
/// Set by the flooder once it floods.
static FLOODING: AtomicBool = AtomicBool::new(false);
/// SGI writes the flooder made.
static SENT: AtomicU64 = AtomicU64::new(0);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
/// Each worker's progress steps (written by that worker only).
static PROGRESS: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];

fn handler(intid: u32) {
    if intid >= sgi::COUNT {
        fail!("storm: vcpu{}: unexpected interrupt {intid}", cpu::id());
    }
}

/// One progress step: arithmetic the compiler cannot drop, then the step,
/// then an IRQ window, then a `YIELD` (vCPUs sharing QEMU's one `-icount`
/// thread take turns step by step).
fn step(id: usize, seed: &mut u64) {
    for _ in 0..BLOCK {
        *seed = core::hint::black_box(seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
    let p = &PROGRESS[id];
    p.store(p.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    cpu::irq_unmask();
    cpu::irq_mask();
    cpu::relax();
}

/// Works until `until` says stop (never, for a worker other than the boot vCPU).
fn work(id: usize, mut until: impl FnMut() -> bool) {
    let mut seed = id as u64 + 1;
    while !until() {
        step(id, &mut seed);
    }
}

/// Floods SGIs forever, or until `until` says stop (a lone boot vCPU, which
/// then also makes a progress step after each round of SGIs).
fn flood(mut until: impl FnMut() -> bool, also_work: bool) {
    let p = guests::platform();
    let me = cpu::mpidr();
    let mut others = [0u64; MAX_CPUS];
    let mut n = 0;
    for &mpidr in p.cpus() {
        if mpidr & sgi::MPIDR_AFFINITY != me & sgi::MPIDR_AFFINITY {
            others[n] = mpidr;
            n += 1;
        }
    }
    let others = &others[..n];
    cpu::irq_unmask();
    FLOODING.store(true, Ordering::Release);
    let mut sent = 0;
    let mut intid = 0;
    let mut seed = 1;
    loop {
        gic::send_sgi(intid, me);
        sent += 1;
        for value in sgi::to_cpus(intid, others) {
            gic::write_sgi(gic::SgiRegister::Group1, value);
            sent += 1;
        }
        gic::send_sgi_others(intid);
        sent += 1;
        SENT.store(sent, Ordering::Relaxed);
        intid = (intid + 1) % sgi::COUNT;
        // A hint only (no pause on a CPU of its own); under QEMU's one
        // `-icount` thread, turns as short as the workers'.
        cpu::relax();
        if also_work {
            cpu::irq_mask();
            step(cpu::id(), &mut seed);
            cpu::irq_unmask();
        }
        if until() {
            cpu::irq_mask();
            return;
        }
    }
}

fn arg(p: &Platform, key: &str, default: u64) -> u64 {
    match p.arg(key) {
        None => default,
        Some(v) => parse_u64(v)
            .filter(|&v| v > 0)
            .unwrap_or_else(|| fail!("storm: bad bootarg {key}={v}")),
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
    let flooder = ids.clone().next_back().unwrap_or(me);
    FLOODER.store(flooder, Ordering::Release);
    let workers = ids.clone().filter(|&k| k != flooder || n == 1);
    let others = p
        .cpus()
        .iter()
        .copied()
        .filter(|&mpidr| (mpidr & 0xff) as usize != me);
    println!(
        "guest: storm: {n} vCPUs: vcpu{flooder} floods SGIs (to itself, to the others by list and by IRM broadcast) for {ms} ms while {}",
        if n == 1 { "it also counts progress" } else { "the others count progress" }
    );
    psci::start_others("storm", others, CONTEXT, &ONLINE, WAIT_MS);

    // Quiet baseline: every worker works, nobody floods.
    let snapshot =
        || -> [u64; MAX_CPUS] { core::array::from_fn(|k| PROGRESS[k].load(Ordering::Relaxed)) };
    let start = snapshot();
    let t0 = timer::counter();
    let baseline_end = t0 + timer::ticks_from_us(BASELINE_MS * 1000);
    work(me, || timer::counter() >= baseline_end);
    let quiet = snapshot();
    let quiet_ticks = timer::counter() - t0;
    for k in workers.clone() {
        println!(
            "guest: storm: vcpu{k}: {} steps in {BASELINE_MS} ms without the storm",
            quiet[k] - start[k]
        );
    }

    STORM.store(true, Ordering::Release);
    if flooder != me && !cpu::wait_until(WAIT_MS, || FLOODING.load(Ordering::Acquire)) {
        fail!("storm: vcpu{flooder} never started flooding");
    }
    let before = snapshot();
    let taken_before: [u64; MAX_CPUS] = core::array::from_fn(irq::taken_on);
    let t1 = timer::counter();
    let storm_end = t1 + timer::ticks_from_us(ms * 1000);
    if flooder == me {
        flood(|| timer::counter() >= storm_end, true);
    } else {
        work(me, || timer::counter() >= storm_end);
    }
    let after = snapshot();
    let storm_ticks = timer::counter() - t1;
    let taken: [u64; MAX_CPUS] = core::array::from_fn(|k| irq::taken_on(k) - taken_before[k]);
    let sent = SENT.load(Ordering::Relaxed);
    println!(
        "guest: storm: vcpu{flooder} wrote {sent} SGIs in {} ms ({} per ms) and took {} interrupts",
        timer::us_from_ticks(storm_ticks) / 1000,
        sent * timer::ticks_from_us(1000) / storm_ticks.max(1),
        taken[flooder]
    );
    for k in workers {
        let steps = after[k] - before[k];
        let quiet_steps = quiet[k] - start[k];
        // Steps at the quiet rate over the storm's length.
        let expected = quiet_steps * storm_ticks / quiet_ticks.max(1);
        let pct = steps * 100 / expected.max(1);
        println!(
            "guest: storm: vcpu{k}: {steps} steps during the storm ({pct}% of its quiet rate), took {} interrupts",
            taken[k]
        );
        check!(taken[k] > 0, "storm: vcpu{k} took no SGI during the storm");
        check!(
            steps > 0 && pct >= min_pct,
            "storm: vcpu{k} made {steps} steps during the storm, {pct}% of its quiet rate (min_pct={min_pct})"
        );
    }
    println!(
        "guest: storm: every worker progressed under the storm ok; SYSTEM_OFF with vcpu{flooder} still flooding"
    );
}

fn secondary_main(context: u64) -> ! {
    let id = cpu::id();
    check!(
        context == CONTEXT | id as u64,
        "storm: vcpu{id} started with context {context:#x}"
    );
    gic::init_cpu();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    if id == FLOODER.load(Ordering::Acquire) {
        if !cpu::wait_until(WAIT_MS, || STORM.load(Ordering::Acquire)) {
            fail!("storm: vcpu{id} never got the go");
        }
        flood(|| false, false);
    }
    work(id, || false);
    fail!("storm: vcpu{id} stopped working")
}
