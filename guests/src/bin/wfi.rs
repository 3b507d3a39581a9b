//! `wfi`: `WFI` woken by the vCPU's own virtual timer, and by an SGI from another vCPU whose timestamp shows the wakeup came after the send; with IRQs unmasked and masked.
//!
//! The boot vCPU turns on the identity map, sets up the GIC and starts the
//! others. Every WFI here is guarded by a watchdog, the EL1 physical timer
//! armed [`WATCHDOG_MS`] after the expected wakeup: being woken by it is a
//! FAIL, never a hang. Two ways to sleep, `rounds=R` times each (bootargs,
//! default 4):
//!
//! - unmasked: IRQs unmasked just before the WFI ([`cpu::wfi_unmasked`]),
//!   so the interrupt that wakes it is taken at once; its handler records
//!   when. (Were it taken before the WFI, the WFI would sleep until the
//!   watchdog: told apart by the handler's timestamp, that round is retried.)
//! - masked: `PSTATE.I` set; the WFI still wakes on the pending interrupt,
//!   seen in `ISR_EL1.I` and `ICC_HPPIR1_EL1` before unmasking takes it.
//!
//! 1. Timer, every vCPU at once: the virtual timer armed 1–3 ms ahead; the
//!    vCPU must wake no earlier than the deadline, with the virtual timer
//!    as the pending interrupt.
//! 2. IPI, in turns (device-tree order; skipped with one vCPU): the vCPU
//!    whose turn it is says it is going to sleep; the next one waits 2 ms,
//!    reads the counter and sends it SGI [`WAKE`]. The sleeper's wake time
//!    must be after that send time and its own sleep time before it.
//!
//! Each vCPU reports how many WFIs a wakeup took at worst (a WFI may return
//! early, but a hypervisor that never blocks makes it many): more than
//! `max_wfis=N` (default 8) is a FAIL.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use guests::cpu::{self, MAX_CPUS};
use guests::dt::parse_u64;
use guests::timer::{self, Timer};
use guests::{check, fail, gic, irq, mmu, println, psci, Platform};

guests::entry!(main, secondary_main);

/// The SGI that wakes a sleeping vCPU.
const WAKE: u32 = 7;
/// The `CPU_ON` context id of vCPU `n` is `CONTEXT | n`.
const CONTEXT: u64 = 0x5746_0000;
const WAIT_MS: u64 = 15_000;
/// How long after the expected wakeup the watchdog fires.
const WATCHDOG_MS: u64 = 2_000;
/// How long a waker waits after the sleeper said it goes to sleep.
const SEND_DELAY_US: u64 = 2_000;
const DEFAULT_ROUNDS: u64 = 4;
const DEFAULT_MAX_WFIS: u64 = 8;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(DEFAULT_ROUNDS);
static MAX_WFIS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_WFIS);
static VTIMER: AtomicU64 = AtomicU64::new(0);
static PTIMER: AtomicU64 = AtomicU64::new(0);
/// `0..n`: the IPI turns (the vCPU listed there sleeps); `n`: done.
static TURN: AtomicUsize = AtomicUsize::new(0);
/// vCPUs done with the timer part.
static TIMER_DONE: AtomicUsize = AtomicUsize::new(0);

/// One vCPU's state: its handler and main code write it; `ready` and
/// `sent_at` are the sleeper's and the waker's handshake.
struct Cpu {
    /// Virtual timer interrupts taken, and the counter at the last.
    timer_irqs: AtomicU64,
    timer_at: AtomicU64,
    /// [`WAKE`] SGIs taken, and the counter at the last.
    wakes: AtomicU64,
    wake_at: AtomicU64,
    /// Whether the watchdog fired.
    watchdog: AtomicBool,
    /// The sleeper's round number + 1, once it is about to sleep.
    ready: AtomicU64,
    /// The counter just before the waker's SGI.
    sent_at: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const CPU: Cpu = Cpu {
    timer_irqs: AtomicU64::new(0),
    timer_at: AtomicU64::new(0),
    wakes: AtomicU64::new(0),
    wake_at: AtomicU64::new(0),
    watchdog: AtomicBool::new(false),
    ready: AtomicU64::new(0),
    sent_at: AtomicU64::new(0),
};
static CPUS: [Cpu; MAX_CPUS] = [CPU; MAX_CPUS];

fn me() -> &'static Cpu {
    &CPUS[cpu::id()]
}

fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
}

fn handler(intid: u32) {
    let now = timer::counter();
    let c = me();
    if u64::from(intid) == VTIMER.load(Ordering::Relaxed) {
        Timer::Virtual.stop();
        c.timer_at.store(now, Ordering::Relaxed);
        bump(&c.timer_irqs);
    } else if u64::from(intid) == PTIMER.load(Ordering::Relaxed) {
        Timer::Physical.stop();
        c.watchdog.store(true, Ordering::Release);
    } else if intid == WAKE {
        c.wake_at.store(now, Ordering::Relaxed);
        bump(&c.wakes);
    } else {
        fail!("wfi: vcpu{}: unexpected interrupt {intid}", cpu::id());
    }
}

/// How a sleep ended.
enum Woken {
    /// By the awaited interrupt: WFIs executed, the counter at the wakeup
    /// (when the handler ran, or when the masked WFI returned).
    Ok(u64, u64),
    /// The awaited interrupt was taken before the WFI (unmasked only): retry.
    Raced,
}

/// Sleeps (IRQs masked on entry and on return) until `count` moves past
/// `before`, the awaited interrupt `intid` whose handler stamps `stamp`;
/// `expected` is when it should come. Fails if the watchdog wakes it.
fn sleep(
    what: &str,
    masked: bool,
    intid: u32,
    count: &AtomicU64,
    stamp: &AtomicU64,
    before: u64,
    expected: u64,
) -> Woken {
    let id = cpu::id();
    let c = me();
    c.watchdog.store(false, Ordering::Relaxed);
    let watchdog_at = expected + timer::ticks_from_us(WATCHDOG_MS * 1000);
    Timer::Physical.arm_at(watchdog_at);
    let came = || count.load(Ordering::Acquire) != before;
    let mut wfis = 0;
    let woken = loop {
        if masked {
            cpu::wfi();
            wfis += 1;
            if !cpu::irq_pending() {
                continue;
            }
            let at = timer::counter();
            let pending = gic::highest_pending();
            if pending != intid {
                Timer::Physical.stop();
                fail!("wfi: vcpu{id}: {what} (IRQs masked): woken by interrupt {pending}, not {intid}");
            }
            cpu::irq_unmask();
            if !cpu::wait_until(WAIT_MS, came) {
                fail!("wfi: vcpu{id}: {what}: interrupt {intid} pending but never taken once unmasked");
            }
            cpu::irq_mask();
            break Woken::Ok(wfis, at);
        }
        if came() {
            break Woken::Raced;
        }
        cpu::wfi_unmasked();
        wfis += 1;
        if came() {
            let at = stamp.load(Ordering::Relaxed);
            if c.watchdog.load(Ordering::Acquire) && at < watchdog_at {
                // Taken at the unmask, before the WFI: the WFI then slept
                // until the watchdog.
                break Woken::Raced;
            }
            break Woken::Ok(wfis, at);
        }
        if c.watchdog.load(Ordering::Acquire) {
            break Woken::Ok(wfis, 0);
        }
    };
    Timer::Physical.stop();
    if c.watchdog.load(Ordering::Acquire) && matches!(woken, Woken::Ok(..)) {
        fail!(
            "wfi: vcpu{id}: {what} (IRQs {}): not woken by interrupt {intid}, but by the watchdog {WATCHDOG_MS} ms later",
            if masked { "masked" } else { "unmasked" }
        );
    }
    if let Woken::Ok(wfis, _) = woken {
        let max = MAX_WFIS.load(Ordering::Relaxed);
        check!(
            wfis <= max,
            "wfi: vcpu{id}: {what}: {wfis} WFIs before the wakeup (max_wfis={max}): does WFI block?"
        );
    }
    woken
}

/// A small pseudo-random sequence (xorshift).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Part 1: woken by the virtual timer, unmasked then masked.
fn timer_wakes(id: usize) {
    let rounds = ROUNDS.load(Ordering::Relaxed);
    let c = me();
    let mut seed = 0x2545_f491_4f6c_dd1d ^ (id as u64 + 1) << 40;
    let (mut worst_wfis, mut worst_late, mut retries) = (0, 0, 0);
    for masked in [false, true] {
        let mut done = 0;
        while done < rounds {
            let deadline = timer::counter() + timer::ticks_from_us(1000 + next(&mut seed) % 2000);
            let before = c.timer_irqs.load(Ordering::Relaxed);
            Timer::Virtual.arm_at(deadline);
            match sleep(
                "virtual timer",
                masked,
                VTIMER.load(Ordering::Relaxed) as u32,
                &c.timer_irqs,
                &c.timer_at,
                before,
                deadline,
            ) {
                Woken::Raced => {
                    retries += 1;
                    check!(
                        retries <= rounds,
                        "wfi: vcpu{id}: {retries} timer rounds raced the WFI"
                    );
                }
                Woken::Ok(wfis, at) => {
                    check!(
                        at >= deadline,
                        "wfi: vcpu{id}: woken at {at}, before the virtual timer's deadline {deadline}"
                    );
                    worst_wfis = worst_wfis.max(wfis);
                    worst_late = worst_late.max(at - deadline);
                    done += 1;
                }
            }
        }
    }
    println!(
        "guest: wfi: vcpu{id}: woken by its virtual timer {rounds}x unmasked, {rounds}x masked: never before the deadline, at worst {} us after, at worst {worst_wfis} WFIs per wakeup ({retries} rounds retried) ok",
        timer::us_from_ticks(worst_late)
    );
}

fn mpidr_of(id: usize) -> u64 {
    guests::platform()
        .cpus()
        .iter()
        .copied()
        .find(|&m| (m & 0xff) as usize == id)
        .unwrap_or_else(|| fail!("wfi: no vCPU {id} in the device tree"))
}

/// Part 2, the sleeper's side: woken by `waker`'s SGI, `rounds` times
/// unmasked then masked.
fn sleep_for_ipi(waker: usize) {
    let id = cpu::id();
    let rounds = ROUNDS.load(Ordering::Relaxed);
    let c = me();
    let (mut worst_wfis, mut total, mut worst, mut retries) = (0, 0, 0, 0);
    let mut round = 0;
    for masked in [false, true] {
        let mut done = 0;
        while done < rounds {
            let before = c.wakes.load(Ordering::Relaxed);
            round += 1;
            let asleep = timer::counter();
            c.ready.store(round, Ordering::Release);
            let expected = asleep + timer::ticks_from_us(SEND_DELAY_US);
            let woken = sleep("SGI", masked, WAKE, &c.wakes, &c.wake_at, before, expected);
            // The waker may still be sending (it waited for `ready`).
            if !cpu::wait_until(WAIT_MS, || c.sent_at.load(Ordering::Acquire) != 0) {
                fail!("wfi: vcpu{id}: vcpu{waker} never sent its SGI");
            }
            let sent = c.sent_at.swap(0, Ordering::AcqRel);
            match woken {
                Woken::Raced => {
                    retries += 1;
                    check!(
                        retries <= rounds,
                        "wfi: vcpu{id}: {retries} SGI rounds raced the WFI"
                    );
                }
                Woken::Ok(wfis, at) => {
                    check!(
                        asleep < sent && sent <= at,
                        "wfi: vcpu{id}: asleep at {asleep}, vcpu{waker} sent at {sent}, woken at {at}: not in that order"
                    );
                    worst_wfis = worst_wfis.max(wfis);
                    total += at - sent;
                    worst = worst.max(at - sent);
                    done += 1;
                }
            }
        }
    }
    c.ready.store(u64::MAX, Ordering::Release);
    println!(
        "guest: wfi: vcpu{id}: woken by an SGI from vcpu{waker} {rounds}x unmasked, {rounds}x masked: asleep before the send, woken after it, {} us later on average, {} us at worst; at worst {worst_wfis} WFIs per wakeup ({retries} rounds retried) ok",
        timer::us_from_ticks(total / (2 * rounds)),
        timer::us_from_ticks(worst)
    );
}

/// Part 2, the waker's side: sends `sleeper` its SGIs until it is done.
fn wake(sleeper: usize) {
    let id = cpu::id();
    let s = &CPUS[sleeper];
    let mpidr = mpidr_of(sleeper);
    let mut round = 0;
    loop {
        let next = || s.ready.load(Ordering::Acquire) != round;
        if !cpu::wait_until(WAIT_MS + WATCHDOG_MS, next) {
            fail!("wfi: vcpu{id}: vcpu{sleeper} never went to sleep (round {round})");
        }
        round = s.ready.load(Ordering::Acquire);
        if round == u64::MAX {
            return;
        }
        cpu::delay_us(SEND_DELAY_US);
        s.sent_at.store(timer::counter(), Ordering::Release);
        gic::send_sgi(WAKE, mpidr);
    }
}

fn run(id: usize) {
    let p = guests::platform();
    let ids = p.cpus().iter().map(|&m| (m & 0xff) as usize);
    let n = p.cpus().len();
    for t in [Timer::Virtual, Timer::Physical] {
        gic::enable(t.intid(p));
    }
    cpu::irq_mask();
    timer_wakes(id);
    TIMER_DONE.fetch_add(1, Ordering::AcqRel);
    if !cpu::wait_until(WAIT_MS, || TIMER_DONE.load(Ordering::Acquire) == n) {
        fail!("wfi: vcpu{id}: not every vCPU finished the timer part");
    }
    if n > 1 {
        let index = ids.clone().position(|k| k == id).unwrap_or(0);
        let prev = (p.cpus()[(index + n - 1) % n] & 0xff) as usize;
        let next = (p.cpus()[(index + 1) % n] & 0xff) as usize;
        // My turn to be woken is `index`; I wake the previous vCPU in its
        // turn `index - 1`. The boot vCPU (turn 0) sleeps first.
        if index > 0 {
            let turn = || TURN.load(Ordering::Acquire) == index - 1;
            check!(
                cpu::wait_until(WAIT_MS * n as u64, turn),
                "wfi: vcpu{id} waited for its turn to wake vcpu{prev}"
            );
            wake(prev);
            TURN.store(index, Ordering::Release);
        }
        let turn = || TURN.load(Ordering::Acquire) == index;
        check!(
            cpu::wait_until(WAIT_MS * n as u64, turn),
            "wfi: vcpu{id} waited for its turn to sleep"
        );
        sleep_for_ipi(next);
        if index == 0 {
            // The last vCPU sleeps last, woken by the boot vCPU.
            let turn = || TURN.load(Ordering::Acquire) == n - 1;
            check!(
                cpu::wait_until(WAIT_MS * n as u64, turn),
                "wfi: vcpu{id} waited for its turn to wake vcpu{prev}"
            );
            wake(prev);
            TURN.store(n, Ordering::Release);
        }
    }
}

fn main(p: &Platform) {
    for (key, slot, min) in [("rounds", &ROUNDS, 1), ("max_wfis", &MAX_WFIS, 1)] {
        if let Some(v) = p.arg(key) {
            let v = parse_u64(v)
                .filter(|&v| v >= min)
                .unwrap_or_else(|| fail!("wfi: bad bootarg {key}={v}"));
            slot.store(v, Ordering::Relaxed);
        }
    }
    mmu::enable(p);
    let info = gic::init(p);
    VTIMER.store(u64::from(Timer::Virtual.intid(p)), Ordering::Relaxed);
    PTIMER.store(u64::from(Timer::Physical.intid(p)), Ordering::Relaxed);
    irq::set_handler(handler);
    let me = cpu::id();
    let n = p.cpus().len();
    let others = p
        .cpus()
        .iter()
        .copied()
        .filter(|&mpidr| (mpidr & 0xff) as usize != me);
    println!(
        "guest: wfi: {n} vCPUs, GICv3 {} lines, {} rounds, watchdog {WATCHDOG_MS} ms",
        info.lines,
        ROUNDS.load(Ordering::Relaxed)
    );
    psci::start_others("wfi", others.clone(), CONTEXT, &ONLINE, WAIT_MS);
    run(me);
    if n == 1 {
        println!("guest: wfi: woken by an SGI from another vCPU: skipped, one vCPU");
    } else {
        let done = || TURN.load(Ordering::Acquire) == n;
        check!(
            cpu::wait_until(WAIT_MS * n as u64, done),
            "wfi: the SGI turns never ended"
        );
    }
    for mpidr in others {
        let off = || psci::affinity_info(mpidr) == psci::AFFINITY_OFF;
        check!(
            cpu::wait_until(WAIT_MS, off),
            "wfi: vCPU {mpidr:#x} not off after its CPU_OFF"
        );
    }
    println!(
        "guest: wfi: {n} vCPUs woken by their timers{} ok",
        if n > 1 {
            " and by each other's SGIs"
        } else {
            ""
        }
    );
}

fn secondary_main(context: u64) -> ! {
    let id = cpu::id();
    check!(
        context == CONTEXT | id as u64,
        "wfi: vcpu{id} started with context {context:#x}"
    );
    gic::init_cpu();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    run(id);
    let ret = psci::cpu_off();
    fail!("wfi: vcpu{id}: CPU_OFF returned {ret}")
}
