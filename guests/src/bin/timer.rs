//! `timer`: on every vCPU, the virtual and the EL1 physical timer interrupt at the deadlines programmed: never early, and late by at most a generous bound.
//!
//! The boot vCPU turns on the identity map, sets up the GIC and starts the
//! others; each vCPU enables its two timer PPIs (INTIDs from the device
//! tree) and unmasks IRQs. Then, `n=N` times (bootargs, default 16), it arms
//! both timers at once, each at a deadline 50 µs to 2 ms ahead (varied; the
//! compare value `CVAL` on even rounds, `TVAL` on odd ones), and waits for
//! both interrupts. The handler reads the timer's own counter and checks it
//! has reached the compare value (not early), that the compare value is the
//! deadline programmed (or later, for `TVAL`, which counts from its write)
//! and that `ISTATUS` is set; it records the lateness and stops the timer
//! before the end of the interrupt (the line is level-sensitive). A vCPU
//! fails if an interrupt is late by more than `late_ms=MS` (default 1000:
//! vCPUs may share a loaded host), never comes, or comes unasked; each
//! prints its worst lateness in counter ticks. Waits are bounded.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use guests::cpu::{self, MAX_CPUS};
use guests::dt::parse_u64;
use guests::timer::{self, Timer, BOTH};
use guests::{check, fail, gic, irq, mmu, println, psci, Platform};

guests::entry!(main, secondary_main);

/// The `CPU_ON` context id of vCPU `n` is `CONTEXT | n`.
const CONTEXT: u64 = 0x5449_0000;
const WAIT_MS: u64 = 15_000;
const DEFAULT_ROUNDS: u64 = 16;
const DEFAULT_LATE_MS: u64 = 1000;
/// Deadlines are this far ahead at least, and at most this plus `SPREAD_US`.
const MIN_AHEAD_US: u64 = 50;
const SPREAD_US: u64 = 1950;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static GO: AtomicBool = AtomicBool::new(false);
static ROUNDS: AtomicU64 = AtomicU64::new(DEFAULT_ROUNDS);
static LATE_MS: AtomicU64 = AtomicU64::new(DEFAULT_LATE_MS);
/// The two INTIDs, virtual then physical.
static INTIDS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// One timer of one vCPU: written by that vCPU only (its main loop and its
/// handler).
struct Slot {
    /// The deadline programmed, 0 when not armed.
    deadline: AtomicU64,
    /// Whether the deadline is a lower bound (`TVAL`).
    by_tval: AtomicBool,
    fired: AtomicU64,
    worst_late: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    deadline: AtomicU64::new(0),
    by_tval: AtomicBool::new(false),
    fired: AtomicU64::new(0),
    worst_late: AtomicU64::new(0),
};
#[allow(clippy::declare_interior_mutable_const)]
const SLOTS: [Slot; 2] = [SLOT; 2];
static STATE: [[Slot; 2]; MAX_CPUS] = [SLOTS; MAX_CPUS];
#[allow(clippy::declare_interior_mutable_const)]
const NOT_DONE: AtomicBool = AtomicBool::new(false);
static DONE: [AtomicBool; MAX_CPUS] = [NOT_DONE; MAX_CPUS];

fn handler(intid: u32) {
    let id = cpu::id();
    let Some(t) = (0..2).find(|&t| INTIDS[t].load(Ordering::Relaxed) == u64::from(intid)) else {
        fail!("timer: vcpu{id}: unexpected interrupt {intid}");
    };
    let timer = BOTH[t];
    let now = timer.count();
    let (ctl, cval) = (timer.ctl(), timer.cval());
    timer.stop();
    let slot = &STATE[id][t];
    let deadline = slot.deadline.load(Ordering::Relaxed);
    let name = timer.name();
    check!(
        deadline != 0,
        "timer: vcpu{id}: {name} timer interrupt with no deadline armed (CTL {ctl:#x}, CVAL {cval})"
    );
    check!(
        ctl & timer::CTL_ISTATUS != 0,
        "timer: vcpu{id}: {name} timer interrupt with ISTATUS clear (CTL {ctl:#x})"
    );
    check!(
        now >= cval,
        "timer: vcpu{id}: {name} timer interrupt early: counter {now} < CVAL {cval} ({} ticks early)",
        cval - now
    );
    let tval = slot.by_tval.load(Ordering::Relaxed);
    check!(
        cval == deadline || tval && cval > deadline,
        "timer: vcpu{id}: {name} timer CVAL {cval}, but the deadline programmed was {deadline}{}",
        if tval { " (by TVAL: at least)" } else { "" }
    );
    let late = now - cval;
    if late > slot.worst_late.load(Ordering::Relaxed) {
        slot.worst_late.store(late, Ordering::Relaxed);
    }
    slot.deadline.store(0, Ordering::Relaxed);
    slot.fired
        .store(slot.fired.load(Ordering::Relaxed) + 1, Ordering::Release);
}

/// A small pseudo-random sequence (xorshift), different on each vCPU.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn run(id: usize) {
    let p = guests::platform();
    for timer in BOTH {
        let intid = timer.intid(p);
        gic::enable(intid);
        check!(
            gic::is_enabled(intid),
            "timer: vcpu{id}: {} timer INTID {intid} does not read back enabled",
            timer.name()
        );
    }
    cpu::irq_unmask();
    let rounds = ROUNDS.load(Ordering::Relaxed);
    let late_ms = LATE_MS.load(Ordering::Relaxed);
    let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1) << 32;
    for round in 0..rounds {
        for (t, timer) in BOTH.into_iter().enumerate() {
            let ahead = timer::ticks_from_us(MIN_AHEAD_US + next(&mut seed) % SPREAD_US);
            let slot = &STATE[id][t];
            let by_tval = round % 2 == 1;
            slot.by_tval.store(by_tval, Ordering::Relaxed);
            if by_tval {
                slot.deadline
                    .store(timer.count() + ahead, Ordering::Relaxed);
                timer.arm_in(ahead as u32);
            } else {
                let deadline = timer.count() + ahead;
                slot.deadline.store(deadline, Ordering::Relaxed);
                timer.arm_at(deadline);
            }
        }
        for (t, timer) in BOTH.into_iter().enumerate() {
            let fired = || STATE[id][t].fired.load(Ordering::Acquire) == round + 1;
            if !cpu::wait_until(late_ms + 2, fired) {
                let intid = timer.intid(p);
                fail!(
                    "timer: vcpu{id}: round {round}: no {} timer interrupt {late_ms} ms after its deadline (counter {}, CTL {:#x}, CVAL {}, INTID {intid} pending {}, enabled {}, PSTATE.I {})",
                    timer.name(),
                    timer.count(),
                    timer.ctl(),
                    timer.cval(),
                    gic::is_pending(intid),
                    gic::is_enabled(intid),
                    cpu::irqs_masked() as u8,
                );
            }
        }
    }
    cpu::irq_mask();
    let freq = timer::frequency();
    for (t, timer) in BOTH.into_iter().enumerate() {
        let worst = STATE[id][t].worst_late.load(Ordering::Relaxed);
        check!(
            worst <= freq / 1000 * late_ms,
            "timer: vcpu{id}: {} timer interrupt {worst} ticks ({} us) late, above late_ms={late_ms}",
            timer.name(),
            timer::us_from_ticks(worst)
        );
        println!(
            "guest: timer: vcpu{id}: {}: {rounds} interrupts, none early, worst lateness {worst} ticks ({} us) ok",
            timer.name(),
            timer::us_from_ticks(worst)
        );
    }
    let taken = irq::taken();
    check!(
        taken == 2 * rounds,
        "timer: vcpu{id}: took {taken} interrupts, expected {} (2 timers x {rounds})",
        2 * rounds
    );
    DONE[id].store(true, Ordering::Release);
}

fn main(p: &Platform) {
    if let Some(n) = p.arg("n") {
        let n = parse_u64(n)
            .filter(|&n| n > 0)
            .unwrap_or_else(|| fail!("timer: bad bootarg n={n}"));
        ROUNDS.store(n, Ordering::Relaxed);
    }
    if let Some(ms) = p.arg("late_ms") {
        let ms = parse_u64(ms).unwrap_or_else(|| fail!("timer: bad bootarg late_ms={ms}"));
        LATE_MS.store(ms, Ordering::Relaxed);
    }
    mmu::enable(p);
    let info = gic::init(p);
    for (t, timer) in BOTH.into_iter().enumerate() {
        INTIDS[t].store(u64::from(timer.intid(p)), Ordering::Relaxed);
    }
    irq::set_handler(handler);
    let me = cpu::id();
    let ids = p.cpus().iter().map(|&mpidr| (mpidr & 0xff) as usize);
    let others = p
        .cpus()
        .iter()
        .copied()
        .filter(|&mpidr| (mpidr & 0xff) as usize != me);
    let n = p.cpus().len();
    println!(
        "guest: timer: {n} vCPUs, GICv3 {} lines, timer {} Hz, virtual INTID {}, physical INTID {}, {} rounds",
        info.lines,
        timer::frequency(),
        Timer::Virtual.intid(p),
        Timer::Physical.intid(p),
        ROUNDS.load(Ordering::Relaxed)
    );
    psci::start_others("timer", others.clone(), CONTEXT, &ONLINE, WAIT_MS);
    GO.store(true, Ordering::Release);
    run(me);
    let rounds = ROUNDS.load(Ordering::Relaxed);
    let late_ms = LATE_MS.load(Ordering::Relaxed);
    let all_done = || ids.clone().all(|id| DONE[id].load(Ordering::Acquire));
    if !cpu::wait_until(WAIT_MS + rounds * (late_ms + 2), all_done) {
        for id in ids.clone().filter(|&id| !DONE[id].load(Ordering::Acquire)) {
            println!("guest: FAIL: timer: vcpu{id} never finished");
        }
        fail!("timer: not every vCPU finished");
    }
    let worst = ids
        .clone()
        .flat_map(|id| {
            STATE[id]
                .iter()
                .map(|s| s.worst_late.load(Ordering::Relaxed))
        })
        .max()
        .unwrap_or(0);
    println!(
        "guest: timer: {n} vCPUs x 2 timers x {rounds} interrupts, worst lateness {worst} ticks ({} us) ok",
        timer::us_from_ticks(worst)
    );
    for mpidr in others {
        let off = || psci::affinity_info(mpidr) == psci::AFFINITY_OFF;
        check!(
            cpu::wait_until(WAIT_MS, off),
            "timer: vCPU {mpidr:#x} not off after its CPU_OFF"
        );
    }
}

fn secondary_main(context: u64) -> ! {
    let id = cpu::id();
    check!(
        context == CONTEXT | id as u64,
        "timer: vcpu{id} started with context {context:#x}"
    );
    gic::init_cpu();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    if !cpu::wait_until(WAIT_MS, || GO.load(Ordering::Acquire)) {
        fail!("timer: vcpu{id} never got the go");
    }
    run(id);
    let ret = psci::cpu_off();
    fail!("timer: vcpu{id}: CPU_OFF returned {ret}")
}
