//! `ipi`: SGIs between vCPUs: ping-pong over every ordered pair with target lists, broadcasts (`IRM` = 1) reaching every other vCPU exactly once, one write to a list of them all, and what `ICC_SGI0R_EL1` and `ICC_ASGI1R_EL1` do to group-1 SGIs.
//!
//! The boot vCPU turns on the identity map, sets up the GIC and starts the
//! others; every vCPU then serves IRQs (unmasked) while it waits its turn.
//! Turns go in device-tree order, first for ping-pong, then for broadcasts:
//!
//! - ping-pong: vCPU `i` pings every vCPU `j` (itself too) `rounds=R` times
//!   (bootargs, default 8): it writes its id where `j` reads it, sends SGI
//!   [`PING`] to `j` alone, and waits for `j`'s handler to answer with SGI
//!   [`PONG`] to `i` (after writing its own id where `i` reads it). Every
//!   vCPU then checks it received exactly `R` pings from each, and `R` pongs;
//!   the round trips are printed (average, worst).
//! - broadcast: vCPU `k` sends [`BCAST`] with `IRM` = 1 `rounds` times; after
//!   each, every other vCPU's count must go up by one, and after a settling
//!   time no further (nor `k`'s own: `IRM` excludes the sender).
//!
//! Then the boot vCPU alone: one `ICC_SGI1R_EL1` write per cluster to the
//! list of every vCPU, itself included (each receives [`LIST`] once); SGIs
//! to affinities no vCPU has (ignored, nothing received); and writes of
//! group-1 SGI [`PROBE`] to itself and another vCPU through
//! `ICC_SGI0R_EL1` and `ICC_ASGI1R_EL1`. Those generate group-0 SGIs and,
//! from a non-secure vCPU, group-1 SGIs of the other (secure) security
//! state, so the GICv3 forwards neither to an SGI configured as group 1
//! (IHI 0069, "Forwarding an SGI to a target PE"; with `GICD_CTLR.DS` = 1
//! `ICC_ASGI1R_EL1` can only reach group 0, as Linux KVM models it): the
//! write must be accepted (no exception) and nothing received, not even
//! pending. An `ICC_SGI1R_EL1` write of the same value then delivers it, as
//! a control. Bare QEMU 7.2 (`gic-version=3`, no security extensions)
//! behaves this way.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use guests::cpu::{self, MAX_CPUS};
use guests::dt::parse_u64;
use guests::gic::{self, SgiRegister};
use guests::{check, fail, irq, mmu, println, psci, sgi, timer, Platform};

guests::entry!(main, secondary_main);

/// Ping, pong, broadcast, list and probe SGIs.
const PING: u32 = 1;
const PONG: u32 = 2;
const BCAST: u32 = 3;
const LIST: u32 = 4;
const PROBE: u32 = 5;
const KINDS: usize = 6;

/// The `CPU_ON` context id of vCPU `n` is `CONTEXT | n`.
const CONTEXT: u64 = 0x4950_0000;
const WAIT_MS: u64 = 15_000;
/// How long an SGI that must not arrive is given to arrive anyway.
const SETTLE_MS: u64 = 20;
const DEFAULT_ROUNDS: u64 = 8;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(DEFAULT_ROUNDS);
/// Progress through the turns: `0..n` ping-pong (the vCPU listed at that
/// index has the turn), `n..2n` broadcasts, `2n` the boot vCPU's checks,
/// `2n + 1` done.
static STEP: AtomicUsize = AtomicUsize::new(0);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ROW: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];
#[allow(clippy::declare_interior_mutable_const)]
const KIND_ROW: [AtomicU64; KINDS] = [ZERO; KINDS];
/// `PING_FROM[j]`: 1 + the id of the vCPU whose ping `j` is to answer.
static PING_FROM: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];
/// `PONG_FROM[i]`: 1 + the id of the vCPU answering `i`.
static PONG_FROM: [AtomicU64; MAX_CPUS] = [ZERO; MAX_CPUS];
/// `PINGS[j][i]`: pings `j` received from `i` (written by `j` only).
static PINGS: [[AtomicU64; MAX_CPUS]; MAX_CPUS] = [ROW; MAX_CPUS];
/// `PONGS[i][j]`: pongs `i` received from `j` (written by `i` only).
static PONGS: [[AtomicU64; MAX_CPUS]; MAX_CPUS] = [ROW; MAX_CPUS];
/// `RECEIVED[k][sgi]`: SGIs of each kind vCPU `k` took (written by `k` only).
static RECEIVED: [[AtomicU64; KINDS]; MAX_CPUS] = [KIND_ROW; MAX_CPUS];

fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
}

fn received(id: usize, sgi: u32) -> u64 {
    RECEIVED[id][sgi as usize].load(Ordering::Acquire)
}

fn mpidr_of(id: usize) -> u64 {
    guests::platform()
        .cpus()
        .iter()
        .copied()
        .find(|&m| (m & 0xff) as usize == id)
        .unwrap_or_else(|| fail!("ipi: no vCPU {id} in the device tree"))
}

fn handler(intid: u32) {
    let me = cpu::id();
    match intid {
        PING => {
            let from = PING_FROM[me].load(Ordering::Acquire);
            check!(
                (1..=MAX_CPUS as u64).contains(&from),
                "ipi: vcpu{me}: ping with no sender recorded"
            );
            let from = from as usize - 1;
            bump(&PINGS[me][from]);
            PONG_FROM[from].store(me as u64 + 1, Ordering::Release);
            gic::send_sgi(PONG, mpidr_of(from));
        }
        PONG => {
            let from = PONG_FROM[me].load(Ordering::Acquire);
            check!(
                (1..=MAX_CPUS as u64).contains(&from),
                "ipi: vcpu{me}: pong with no sender recorded"
            );
            bump(&PONGS[me][from as usize - 1]);
        }
        BCAST | LIST | PROBE => {}
        _ => fail!("ipi: vcpu{me}: unexpected interrupt {intid}"),
    }
    if (intid as usize) < KINDS {
        bump(&RECEIVED[me][intid as usize]);
    }
}

/// Waits (bounded) until `STEP` is `step`, serving IRQs meanwhile.
fn wait_step(step: usize) {
    let me = cpu::id();
    let n = guests::platform().cpus().len() as u64;
    let rounds = ROUNDS.load(Ordering::Relaxed);
    if !cpu::wait_until(WAIT_MS + n * n * rounds * 50, || {
        STEP.load(Ordering::Acquire) >= step
    }) {
        fail!(
            "ipi: vcpu{me} waited for step {step}, still at {}",
            STEP.load(Ordering::Acquire)
        );
    }
}

/// This vCPU's ping-pong turn: every vCPU, `rounds` times.
fn ping_all(ids: &[usize]) {
    let me = cpu::id();
    let rounds = ROUNDS.load(Ordering::Relaxed);
    let (mut total, mut worst) = (0, 0);
    for _ in 0..rounds {
        for &j in ids {
            let want = PONGS[me][j].load(Ordering::Relaxed) + 1;
            PING_FROM[j].store(me as u64 + 1, Ordering::Release);
            let start = timer::counter();
            gic::send_sgi(PING, mpidr_of(j));
            let answered = || PONGS[me][j].load(Ordering::Acquire) >= want;
            if !cpu::wait_until(WAIT_MS, answered) {
                fail!(
                    "ipi: vcpu{me} pinged vcpu{j}, no pong (vcpu{j} has {} pings from vcpu{me})",
                    PINGS[j][me].load(Ordering::Acquire)
                );
            }
            let trip = timer::counter() - start;
            total += trip;
            worst = worst.max(trip);
        }
    }
    let trips = rounds * ids.len() as u64;
    println!(
        "guest: ipi: vcpu{me}: ping-pong with {} vCPUs (itself included) x {rounds}: round trip avg {} us, worst {} us ok",
        ids.len(),
        timer::us_from_ticks(total / trips),
        timer::us_from_ticks(worst)
    );
}

/// This vCPU's broadcast turn.
fn broadcast_all(ids: &[usize]) {
    let me = cpu::id();
    let rounds = ROUNDS.load(Ordering::Relaxed);
    for round in 0..rounds {
        let before: [u64; MAX_CPUS] = core::array::from_fn(|k| received(k, BCAST));
        gic::send_sgi_others(BCAST);
        let others = || ids.iter().filter(move |&&k| k != me);
        let all_got = || others().all(|&k| received(k, BCAST) > before[k]);
        if !cpu::wait_until(WAIT_MS, all_got) {
            for &k in others().filter(|&&k| received(k, BCAST) == before[k]) {
                println!("guest: FAIL: ipi: vcpu{k} never got vcpu{me}'s broadcast {round}");
            }
            fail!("ipi: vcpu{me}: broadcast {round} did not reach every other vCPU");
        }
        cpu::delay_us(SETTLE_MS * 1000 / 4);
        for &k in ids {
            let got = received(k, BCAST) - before[k];
            let want = u64::from(k != me);
            check!(
                got == want,
                "ipi: vcpu{me}'s broadcast {round} reached vcpu{k} {got} times, expected {want}"
            );
        }
    }
    println!(
        "guest: ipi: vcpu{me}: {rounds} broadcasts (IRM=1), each reached the {} other vCPUs exactly once, not the sender ok",
        ids.len() - 1
    );
}

/// Sends `value` through `register` and checks who receives SGI `sgi`:
/// exactly the vCPUs in `want` (once each), nobody else.
fn expect_delivery(what: &str, register: SgiRegister, value: u64, sgi: u32, want: &[usize]) {
    let ids: [usize; MAX_CPUS] = core::array::from_fn(|k| k);
    let n = guests::platform().cpus().len();
    let ids = &ids[..n];
    let before: [u64; MAX_CPUS] = core::array::from_fn(|k| received(k, sgi));
    gic::write_sgi(register, value);
    let all_got = || want.iter().all(|&k| received(k, sgi) > before[k]);
    let arrived = cpu::wait_until(SETTLE_MS, all_got);
    cpu::delay_us(SETTLE_MS * 1000);
    for &k in ids {
        let got = received(k, sgi) - before[k];
        let expected = u64::from(want.contains(&k));
        check!(
            got == expected,
            "ipi: {what} (value {value:#x}): vcpu{k} received SGI {sgi} {got} times, expected {expected}{}",
            if arrived { "" } else { " (never arrived)" }
        );
    }
}

/// The boot vCPU's checks: a list of all, absent targets, SGI0R and ASGI1R.
fn conductor_checks(ids: &[usize]) {
    let p = guests::platform();
    let me = cpu::id();
    let mpidrs = p.cpus();
    let writes = sgi::to_cpus(LIST, mpidrs).count();
    for value in sgi::to_cpus(LIST, mpidrs) {
        gic::write_sgi(SgiRegister::Group1, value);
    }
    let all_got = || ids.iter().all(|&k| received(k, LIST) == 1);
    let arrived = cpu::wait_until(WAIT_MS, all_got);
    cpu::delay_us(SETTLE_MS * 1000);
    for &k in ids {
        let got = received(k, LIST);
        check!(
            got == 1,
            "ipi: SGI to the list of all vCPUs: vcpu{k} received it {got} times{}",
            if arrived {
                ""
            } else {
                " (not all arrived within the wait)"
            }
        );
    }
    println!(
        "guest: ipi: one SGI to the list of all {} vCPUs ({writes} ICC_SGI1R_EL1 write{}, one per cluster): each received it once ok",
        ids.len(),
        if writes == 1 { "" } else { "s" }
    );

    // Affinities no vCPU has: Aff0 15 in this cluster, and cluster Aff1 = 0x80.
    let absent = [
        sgi::to_cpu(LIST, cpu::mpidr() & !0xff | 15),
        sgi::to_cpu(LIST, 0x80 << 8),
    ];
    let listed = |v: u64| sgi::targets(v, cpu::mpidr(), mpidrs).count();
    check!(
        absent.iter().all(|&v| listed(v) == 0),
        "ipi: the absent affinities name a vCPU the device tree lists"
    );
    for value in absent {
        expect_delivery(
            "SGI to an absent vCPU",
            SgiRegister::Group1,
            value,
            LIST,
            &[],
        );
    }
    println!("guest: ipi: SGIs to affinities no vCPU has (Aff0 15, Aff1 0x80): ignored ok");

    let other = ids.iter().copied().find(|&k| k != me);
    let mut targets = [me, 0];
    let mut count = 1;
    if let Some(other) = other {
        targets[1] = other;
        count = 2;
    }
    let targets = &targets[..count];
    let target_mpidrs: [u64; 2] = core::array::from_fn(|i| mpidr_of(targets[i.min(count - 1)]));
    let target_mpidrs = &target_mpidrs[..count];
    let names = Names(me, other);
    println!(
        "guest: ipi: GICD_CTLR {:#x} (DS {}); SGI {PROBE} is group 1 (GICR_IGROUPR0 bit set)",
        gic::distributor_ctlr(),
        gic::single_security_state() as u8
    );
    for (register, name) in [
        (SgiRegister::Group0, "ICC_SGI0R_EL1"),
        (SgiRegister::AltGroup1, "ICC_ASGI1R_EL1"),
    ] {
        for value in sgi::to_cpus(PROBE, target_mpidrs) {
            expect_delivery(name, register, value, PROBE, &[]);
        }
        check!(
            !gic::is_pending(PROBE),
            "ipi: {name}: group-1 SGI {PROBE} left pending on vcpu{me}"
        );
        println!(
            "guest: ipi: {name} write of group-1 SGI {PROBE} to {names}: accepted, not delivered ok"
        );
    }
    for value in sgi::to_cpus(PROBE, target_mpidrs) {
        let reached: Ids = targets
            .iter()
            .copied()
            .filter(|&k| sgi::targets(value, cpu::mpidr(), &[mpidr_of(k)]).count() == 1)
            .collect();
        expect_delivery(
            "ICC_SGI1R_EL1 (control)",
            SgiRegister::Group1,
            value,
            PROBE,
            reached.as_slice(),
        );
    }
    println!("guest: ipi: ICC_SGI1R_EL1 write of the same SGI: delivered to {names} ok");
}

/// "vcpuA (itself)" and maybe " and vcpuB".
struct Names(usize, Option<usize>);

impl core::fmt::Display for Names {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "vcpu{} (itself)", self.0)?;
        match self.1 {
            Some(other) => write!(f, " and vcpu{other}"),
            None => Ok(()),
        }
    }
}

/// A few vCPU ids, collected without an allocator.
struct Ids {
    ids: [usize; MAX_CPUS],
    len: usize,
}

impl Ids {
    fn as_slice(&self) -> &[usize] {
        &self.ids[..self.len]
    }
}

impl FromIterator<usize> for Ids {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut ids = Ids {
            ids: [0; MAX_CPUS],
            len: 0,
        };
        for id in iter.into_iter().take(MAX_CPUS) {
            ids.ids[ids.len] = id;
            ids.len += 1;
        }
        ids
    }
}

/// Every vCPU's part: its two turns.
fn run(ids: &[usize]) {
    let me = cpu::id();
    let n = ids.len();
    let index = ids.iter().position(|&k| k == me).unwrap_or_else(|| {
        fail!("ipi: vcpu{me} is not in the device tree");
    });
    cpu::irq_unmask();
    wait_step(index);
    ping_all(ids);
    STEP.store(index + 1, Ordering::Release);
    wait_step(n + index);
    broadcast_all(ids);
    STEP.store(n + index + 1, Ordering::Release);
}

fn ids_of(p: &Platform) -> Ids {
    p.cpus().iter().map(|&m| (m & 0xff) as usize).collect()
}

fn main(p: &Platform) {
    if let Some(r) = p.arg("rounds") {
        let r = parse_u64(r)
            .filter(|&r| r > 0)
            .unwrap_or_else(|| fail!("ipi: bad bootarg rounds={r}"));
        ROUNDS.store(r, Ordering::Relaxed);
    }
    mmu::enable(p);
    let info = gic::init(p);
    irq::set_handler(handler);
    let me = cpu::id();
    let ids = ids_of(p);
    let ids = ids.as_slice();
    let n = ids.len();
    let others = p
        .cpus()
        .iter()
        .copied()
        .filter(|&mpidr| (mpidr & 0xff) as usize != me);
    println!(
        "guest: ipi: {n} vCPUs, GICv3 {} lines, {} rounds",
        info.lines,
        ROUNDS.load(Ordering::Relaxed)
    );
    psci::start_others("ipi", others.clone(), CONTEXT, &ONLINE, WAIT_MS);
    run(ids);
    wait_step(2 * n);
    let rounds = ROUNDS.load(Ordering::Relaxed);
    for &j in ids {
        for &i in ids {
            let pings = PINGS[j][i].load(Ordering::Acquire);
            let pongs = PONGS[i][j].load(Ordering::Acquire);
            check!(
                pings == rounds && pongs == rounds,
                "ipi: vcpu{j} got {pings} pings from vcpu{i}, which got {pongs} pongs back; expected {rounds} each"
            );
        }
    }
    println!(
        "guest: ipi: {} ordered pairs (and {n} self-pings) x {rounds} ping-pongs, each received exactly once ok",
        n * (n - 1)
    );
    conductor_checks(ids);
    cpu::irq_mask();
    STEP.store(2 * n + 1, Ordering::Release);
    for mpidr in others {
        let off = || psci::affinity_info(mpidr) == psci::AFFINITY_OFF;
        check!(
            cpu::wait_until(WAIT_MS, off),
            "ipi: vCPU {mpidr:#x} not off after its CPU_OFF"
        );
    }
    let spurious = irq::spurious();
    println!(
        "guest: ipi: vcpu{me} took {} interrupts ({spurious} spurious acknowledges)",
        irq::taken()
    );
}

fn secondary_main(context: u64) -> ! {
    let id = cpu::id();
    check!(
        context == CONTEXT | id as u64,
        "ipi: vcpu{id} started with context {context:#x}"
    );
    gic::init_cpu();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    let ids = ids_of(guests::platform());
    let n = ids.as_slice().len();
    run(ids.as_slice());
    wait_step(2 * n + 1);
    cpu::irq_mask();
    let ret = psci::cpu_off();
    fail!("ipi: vcpu{id}: CPU_OFF returned {ret}")
}
