//! `prio`: interrupt priorities on every vCPU: two pending interrupts are taken highest priority first, a higher priority preempts a running handler (nesting, seen through `ICC_RPR_EL1`) while the same or a lower one waits, and `ICC_PMR_EL1` holds back what is at or below the mask until the mask is lowered.
//!
//! The boot vCPU turns on the identity map, sets up the GIC and starts the
//! others; all vCPUs then run the same checks at once, each on its own
//! interrupts: SGIs it sends itself at priorities [`HIGH`] 0x40, [`MID`]
//! 0x80, [`LOW`] 0xa0 (twice: [`LOW`] and [`LOW2`]) and [`LOWER`] 0xc0 (all
//! multiples of 0x20, distinct with any 3 or more implemented priority
//! bits), its virtual timer at [`HIGH`], and one SGI sent to it by the next
//! vCPU in the device tree (itself if alone). The handler logs each entry
//! (with the running priority read there) and exit; each check compares the
//! log with the only order the GIC allows:
//!
//! 1. pending order: IRQs masked (`PSTATE.I`), [`LOW`] then [`HIGH`] sent;
//!    once `ICC_HPPIR1_EL1` names [`HIGH`], IRQs unmasked: [`HIGH`] is
//!    taken first, running at 0x40, then [`LOW`] at 0xa0.
//! 2. nesting (handlers run with IRQs unmasked): [`LOW`]'s handler sends
//!    [`LOW2`] and [`LOWER`], which must wait, then [`MID`], which must
//!    preempt it; [`MID`]'s handler sends [`HIGH`], which preempts that
//!    (depth 3, running priority 0xa0, 0x80, 0x40); after [`LOW`] ends,
//!    [`LOW2`] then [`LOWER`].
//! 3. nesting by others: [`LOW`]'s handler arms its virtual timer and asks
//!    the next vCPU for [`MID`]: both preempt it.
//! 4. priority mask: `ICC_PMR_EL1` = 0xa0 holds back [`LOW`] (at the mask)
//!    and [`LOWER`] (below) but passes [`MID`]; 0xc0 lets [`LOW`] through;
//!    0xff (all implemented bits) lets [`LOWER`] through.
//!
//! Waits are bounded; a vCPU keeps answering the next one's requests until
//! every vCPU is done.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use guests::cpu::{self, MAX_CPUS};
use guests::timer::{self, Timer};
use guests::{check, fail, gic, irq, mmu, println, psci, Platform};

guests::entry!(main, secondary_main);

/// SGIs and their priorities.
const S_HIGH: u32 = 9;
const S_MID: u32 = 10;
const S_LOW: u32 = 8;
const S_LOW2: u32 = 12;
const S_LOWER: u32 = 11;
/// Priorities (lower is more urgent).
const HIGH: u8 = 0x40;
const MID: u8 = 0x80;
const LOW: u8 = 0xa0;
const LOW2: u8 = 0xa0;
const LOWER: u8 = 0xc0;

/// The `CPU_ON` context id of vCPU `n` is `CONTEXT | n`.
const CONTEXT: u64 = 0x5052_0000;
const WAIT_MS: u64 = 15_000;
/// How long an interrupt that must wait is given to arrive anyway.
const HOLD_US: u64 = 5_000;
/// How far ahead the virtual timer is armed in check 3.
const TIMER_AHEAD_US: u64 = 200;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static VTIMER: AtomicU64 = AtomicU64::new(0);

/// What the handler does on each vCPU: the check running.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Quiet = 0,
    Nest = 1,
    Others = 2,
}

const LOG_LEN: usize = 32;
/// One vCPU's handler log: written by that vCPU only.
struct Log {
    events: [AtomicU64; LOG_LEN],
    len: AtomicUsize,
    phase: AtomicU64,
    /// 1 + the id of a vCPU asking this one for an [`S_MID`].
    request: AtomicU64,
    done: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Log = Log {
    events: [ZERO; LOG_LEN],
    len: AtomicUsize::new(0),
    phase: AtomicU64::new(0),
    request: AtomicU64::new(0),
    done: AtomicBool::new(false),
};
static LOGS: [Log; MAX_CPUS] = [EMPTY; MAX_CPUS];

/// A log entry: an interrupt's entry (with the running priority read
/// there) or its exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Event {
    In(u32, u8),
    Out(u32),
}

impl Event {
    fn encode(self) -> u64 {
        match self {
            Self::In(intid, rpr) => 1 << 40 | u64::from(rpr) << 32 | u64::from(intid),
            Self::Out(intid) => 2 << 40 | u64::from(intid),
        }
    }

    fn decode(word: u64) -> Self {
        let intid = word as u32;
        if word >> 40 == 1 {
            Self::In(intid, (word >> 32) as u8)
        } else {
            Self::Out(intid)
        }
    }
}

fn log() -> &'static Log {
    &LOGS[cpu::id()]
}

fn record(event: Event) {
    let log = log();
    let len = log.len.load(Ordering::Relaxed);
    check!(
        len < LOG_LEN,
        "prio: vcpu{}: more than {LOG_LEN} interrupts in one check",
        cpu::id()
    );
    log.events[len].store(event.encode(), Ordering::Relaxed);
    log.len.store(len + 1, Ordering::Release);
}

/// The log so far (and clears it when `take`).
fn events(take: bool) -> ([Event; LOG_LEN], usize) {
    let log = log();
    let len = log.len.load(Ordering::Acquire);
    let out = core::array::from_fn(|i| {
        Event::decode(if i < len {
            log.events[i].load(Ordering::Relaxed)
        } else {
            0
        })
    });
    if take {
        log.len.store(0, Ordering::Release);
    }
    (out, len)
}

fn logged(event: Event) -> bool {
    let (events, len) = events(false);
    events[..len].contains(&event)
}

/// Sends the [`S_MID`] another vCPU asked for, if any.
fn serve() {
    let log = log();
    let asker = log.request.load(Ordering::Acquire);
    if asker != 0 {
        log.request.store(0, Ordering::Relaxed);
        gic::send_sgi(S_MID, mpidr_of(asker as usize - 1));
    }
}

/// Waits (bounded) until `done`, answering requests meanwhile.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    if !cpu::wait_until(WAIT_MS, || {
        serve();
        done()
    }) {
        let (events, len) = events(false);
        fail!(
            "prio: vcpu{}: {what}: never happened (log {:?})",
            cpu::id(),
            &events[..len]
        );
    }
}

/// Spins `us` microseconds, answering requests meanwhile.
fn hold(us: u64) {
    let end = timer::counter() + timer::ticks_from_us(us);
    while timer::counter() < end {
        serve();
        cpu::relax();
    }
}

fn mpidr_of(id: usize) -> u64 {
    guests::platform()
        .cpus()
        .iter()
        .copied()
        .find(|&m| (m & 0xff) as usize == id)
        .unwrap_or_else(|| fail!("prio: no vCPU {id} in the device tree"))
}

/// The vCPU after this one in the device tree (itself if alone).
fn next_vcpu() -> usize {
    let ids = guests::platform().cpus();
    let me = ids
        .iter()
        .position(|&m| (m & 0xff) as usize == cpu::id())
        .unwrap_or(0);
    (ids[(me + 1) % ids.len()] & 0xff) as usize
}

fn send_self(intid: u32) {
    gic::send_sgi(intid, cpu::mpidr());
}

fn handler(intid: u32) {
    let me = cpu::id();
    let rpr = gic::running_priority();
    record(Event::In(intid, rpr));
    let phase = log().phase.load(Ordering::Relaxed);
    let vtimer = VTIMER.load(Ordering::Relaxed) as u32;
    if intid == vtimer {
        Timer::Virtual.stop();
    } else if phase == Phase::Nest as u64 && intid == S_LOW {
        send_self(S_LOW2);
        send_self(S_LOWER);
        hold(HOLD_US);
        check!(
            !logged(Event::In(S_LOW2, LOW2)) && !logged(Event::In(S_LOWER, LOWER)),
            "prio: vcpu{me}: an interrupt of the same or lower priority preempted the 0xa0 handler"
        );
        send_self(S_MID);
        wait_for("0x80 preempting the 0xa0 handler", || {
            logged(Event::Out(S_MID))
        });
    } else if phase == Phase::Nest as u64 && intid == S_MID {
        send_self(S_HIGH);
        wait_for("0x40 preempting the 0x80 handler", || {
            logged(Event::Out(S_HIGH))
        });
    } else if phase == Phase::Others as u64 && intid == S_LOW {
        Timer::Virtual.arm_at(timer::counter() + timer::ticks_from_us(TIMER_AHEAD_US));
        wait_for("the virtual timer preempting the 0xa0 handler", || {
            logged(Event::Out(vtimer))
        });
        let next = next_vcpu();
        if next == me {
            send_self(S_MID);
        } else {
            LOGS[next].request.store(me as u64 + 1, Ordering::Release);
        }
        wait_for("the next vCPU's 0x80 preempting the 0xa0 handler", || {
            logged(Event::Out(S_MID))
        });
    }
    let after = gic::running_priority();
    check!(
        after == rpr,
        "prio: vcpu{me}: running priority {after:#x} at the end of interrupt {intid}'s handler, {rpr:#x} at its start"
    );
    record(Event::Out(intid));
}

/// Compares the log with `want`, then clears it.
fn expect(check: &str, want: &[Event]) {
    let (got, len) = events(true);
    if &got[..len] != want {
        fail!(
            "prio: vcpu{}: {check}: log {:?}, expected {:?}",
            cpu::id(),
            &got[..len],
            want
        );
    }
}

fn set_phase(phase: Phase) {
    log().phase.store(phase as u64, Ordering::Release);
}

fn run(id: usize) {
    let p = guests::platform();
    for (intid, priority) in [
        (S_HIGH, HIGH),
        (S_MID, MID),
        (S_LOW, LOW),
        (S_LOW2, LOW2),
        (S_LOWER, LOWER),
    ] {
        gic::set_priority(intid, priority);
        let got = gic::priority(intid);
        check!(
            got == priority,
            "prio: vcpu{id}: SGI {intid} priority {priority:#x} reads back {got:#x}"
        );
    }
    let vtimer = Timer::Virtual.intid(p);
    gic::set_priority(vtimer, HIGH);
    gic::enable(vtimer);

    let idle = gic::running_priority();
    check!(
        idle == 0xff,
        "prio: vcpu{id}: running priority {idle:#x} with no interrupt active, expected 0xff"
    );
    gic::set_pmr(0xff);
    let mask = gic::pmr();
    let bits = gic::priority_bits();
    check!(
        mask == (0xff00u32 >> bits) as u8 && (3..=8).contains(&bits),
        "prio: vcpu{id}: PMR 0xff reads back {mask:#x}, but ICC_CTLR_EL1.PRIbits says {bits} bits"
    );
    println!(
        "guest: prio: vcpu{id}: {bits} priority bits (PMR 0xff reads {mask:#x}, BPR1 {}), running priority 0xff when idle ok",
        gic::binary_point()
    );

    // 1. Pending order.
    irq::set_nesting(false);
    send_self(S_LOW);
    send_self(S_HIGH);
    wait_for("SGI 0x40 pending (ICC_HPPIR1_EL1)", || {
        gic::highest_pending() == S_HIGH
    });
    hold(1000);
    cpu::irq_unmask();
    wait_for("both pending SGIs taken", || logged(Event::Out(S_LOW)));
    cpu::irq_mask();
    expect(
        "two pending (0xa0 sent first, then 0x40)",
        &[
            Event::In(S_HIGH, HIGH),
            Event::Out(S_HIGH),
            Event::In(S_LOW, LOW),
            Event::Out(S_LOW),
        ],
    );
    println!(
        "guest: prio: vcpu{id}: two pending (0xa0 sent first, then 0x40): 0x40 taken first, each running at its priority ok"
    );

    // 2. Nesting.
    irq::set_nesting(true);
    set_phase(Phase::Nest);
    let depth_before = irq::max_depth();
    cpu::irq_unmask();
    send_self(S_LOW);
    wait_for("the held-back SGIs taken", || logged(Event::Out(S_LOWER)));
    cpu::irq_mask();
    expect(
        "nesting",
        &[
            Event::In(S_LOW, LOW),
            Event::In(S_MID, MID),
            Event::In(S_HIGH, HIGH),
            Event::Out(S_HIGH),
            Event::Out(S_MID),
            Event::Out(S_LOW),
            Event::In(S_LOW2, LOW2),
            Event::Out(S_LOW2),
            Event::In(S_LOWER, LOWER),
            Event::Out(S_LOWER),
        ],
    );
    let depth = irq::max_depth();
    check!(
        depth == 3 && depth_before <= 1,
        "prio: vcpu{id}: nesting depth {depth}, expected 3"
    );
    println!(
        "guest: prio: vcpu{id}: 0xa0 handler preempted by 0x80, preempted by 0x40 (depth 3, running priority 0xa0, 0x80, 0x40); same 0xa0 and lower 0xc0 held until its end ok"
    );

    // 3. Nesting by the timer and another vCPU.
    set_phase(Phase::Others);
    cpu::irq_unmask();
    send_self(S_LOW);
    wait_for("the 0xa0 handler done", || logged(Event::Out(S_LOW)));
    cpu::irq_mask();
    expect(
        "nesting by the virtual timer and another vCPU",
        &[
            Event::In(S_LOW, LOW),
            Event::In(vtimer, HIGH),
            Event::Out(vtimer),
            Event::In(S_MID, MID),
            Event::Out(S_MID),
            Event::Out(S_LOW),
        ],
    );
    println!(
        "guest: prio: vcpu{id}: 0xa0 handler preempted by its virtual timer (0x40) and by an SGI 0x80 from vcpu{} ok",
        next_vcpu()
    );
    set_phase(Phase::Quiet);
    irq::set_nesting(false);

    // 4. The priority mask.
    gic::set_pmr(LOW);
    cpu::irq_unmask();
    send_self(S_LOW);
    send_self(S_LOWER);
    hold(HOLD_US);
    expect("PMR 0xa0 with 0xa0 and 0xc0 pending", &[]);
    send_self(S_MID);
    wait_for("0x80 through PMR 0xa0", || logged(Event::Out(S_MID)));
    hold(HOLD_US);
    expect(
        "PMR 0xa0, 0x80 sent",
        &[Event::In(S_MID, MID), Event::Out(S_MID)],
    );
    gic::set_pmr(LOWER);
    wait_for("0xa0 through PMR 0xc0", || logged(Event::Out(S_LOW)));
    hold(HOLD_US);
    expect("PMR 0xc0", &[Event::In(S_LOW, LOW), Event::Out(S_LOW)]);
    gic::set_pmr(0xff);
    wait_for("0xc0 through PMR 0xff", || logged(Event::Out(S_LOWER)));
    cpu::irq_mask();
    expect(
        "PMR 0xff",
        &[Event::In(S_LOWER, LOWER), Event::Out(S_LOWER)],
    );
    gic::set_pmr(gic::DEFAULT_PMR);
    println!(
        "guest: prio: vcpu{id}: PMR 0xa0 holds back 0xa0 and 0xc0 and passes 0x80; PMR 0xc0 lets 0xa0 through, PMR 0xff 0xc0 ok"
    );
    gic::disable(vtimer);
    log().done.store(true, Ordering::Release);
    // Keep answering the next vCPU's requests until everyone is done.
    let ids = p.cpus().iter().map(|&m| (m & 0xff) as usize);
    wait_for("every vCPU done", || {
        ids.clone().all(|k| LOGS[k].done.load(Ordering::Acquire))
    });
}

fn main(p: &Platform) {
    mmu::enable(p);
    let info = gic::init(p);
    VTIMER.store(u64::from(Timer::Virtual.intid(p)), Ordering::Relaxed);
    irq::set_handler(handler);
    let me = cpu::id();
    let n = p.cpus().len();
    let others = p
        .cpus()
        .iter()
        .copied()
        .filter(|&mpidr| (mpidr & 0xff) as usize != me);
    println!(
        "guest: prio: {n} vCPUs, GICv3 {} lines, virtual timer INTID {}",
        info.lines,
        Timer::Virtual.intid(p)
    );
    psci::start_others("prio", others.clone(), CONTEXT, &ONLINE, WAIT_MS);
    run(me);
    for mpidr in others {
        let off = || psci::affinity_info(mpidr) == psci::AFFINITY_OFF;
        check!(
            cpu::wait_until(WAIT_MS, off),
            "prio: vCPU {mpidr:#x} not off after its CPU_OFF"
        );
    }
    println!("guest: prio: {n} vCPUs passed every priority check ok");
}

fn secondary_main(context: u64) -> ! {
    let id = cpu::id();
    check!(
        context == CONTEXT | id as u64,
        "prio: vcpu{id} started with context {context:#x}"
    );
    gic::init_cpu();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    run(id);
    let ret = psci::cpu_off();
    fail!("prio: vcpu{id}: CPU_OFF returned {ret}")
}
