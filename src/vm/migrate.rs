//! Live migration of guest RAM on a CPU that runs no vCPU: host-memory copying, pausing vCPUs by kicks, and the log of each round around `hvcore::migrate`.
//!
//! With `migrate=N` on the command line, the first CPU after the vCPUs
//! waits (in its idle loop) until every vCPU is on, then pre-copies guest
//! RAM into host memory carved at boot for the purpose, as
//! `hvcore::migrate` describes: dirty logging on, a full copy, up to N
//! rounds of get-and-clear and re-copy while the guest keeps writing, then
//! the vCPUs are paused (kicked out of the guest), the last dirty pages
//! copied and the copy compared with guest RAM byte for byte. A mismatch
//! ends the run with a failure; otherwise logging is turned off and the
//! vCPUs resume (their write faults map blocks again).

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use hvcore::migrate::{self as engine, Copier, Observer, Phase, Precopy, RoundReport, Vcpus};
use hvcore::range::PhysRange;
use log::{error, info};
use pgtable::MemCache;

use super::machine::{Vm, RAM_IPA};
use super::{pause, s2mm};
use crate::exit::{exit, ExitStatus};
use crate::gic;
use crate::mm;
use crate::percpu::{self, CpuId};
use crate::pmu;

/// Pre-copy stops once a round takes at most this many pages, unless
/// `migrate.converge=` says otherwise.
pub const DEFAULT_CONVERGE_PAGES: u32 = 16;
/// How long to wait for every vCPU to be on before starting.
const START_TIMEOUT_MS: u64 = 10_000;
/// The ager's pause between two sweeps of guest RAM.
const AGE_PAUSE_MS: u64 = 1;

/// What `migrate=` asked for, and where the copy goes.
#[derive(Clone, Copy, Debug)]
pub struct MigrationConfig {
    /// Pre-copy rounds at most.
    pub rounds: u32,
    /// Host memory for the copy, as large as guest RAM.
    pub dest: PhysRange,
    /// Spins each compare-and-swap of the migration's walks holds its
    /// window open (`migrate.window=`, a test knob; 0: none).
    pub race_window: u32,
    /// Pre-copy stops once a round takes at most this many pages
    /// (`migrate.converge=`; 0: only a round that finds none).
    pub converge: u64,
}

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
/// Logging is on and the full copy made: the pre-copy rounds run (and the
/// ager with them).
const LOGGING: u8 = 2;
/// The vCPUs are being paused for the final round.
const FINAL: u8 = 3;
/// The copy was compared (the guest may power off from now on).
const DONE: u8 = 4;

/// A VM's migration job.
#[derive(Debug)]
pub struct Migration {
    cfg: MigrationConfig,
    /// The CPU that runs it: the first with no vCPU.
    cpu: usize,
    /// A CPU that ages guest RAM while the rounds run (the next one, if
    /// online), as a host's page reclaim would.
    ager: Option<usize>,
    ager_started: AtomicBool,
    state: AtomicU8,
}

impl Migration {
    /// The job for a VM with `vcpus` vCPUs (on CPUs `0..vcpus`), with
    /// `online` CPUs in all.
    pub fn new(cfg: MigrationConfig, vcpus: usize, online: usize) -> Self {
        Self {
            cfg,
            cpu: vcpus,
            ager: (vcpus + 1 < online).then_some(vcpus + 1),
            ager_started: AtomicBool::new(false),
            state: AtomicU8::new(PENDING),
        }
    }

    /// Whether it has not finished (a guest powering off now would end
    /// the run before the copy is verified).
    pub fn is_unfinished(&self) -> bool {
        self.state.load(Ordering::Acquire) != DONE
    }
}

/// Runs the VM's migration, or its page aging, if `cpu` is the one meant
/// to (called from the idle loop of a CPU without a vCPU); returns when it
/// is done.
pub fn run_if_mine(vm: &'static Vm, cpu: CpuId) {
    let Some(m) = &vm.migration else {
        return;
    };
    if m.ager == Some(cpu.index()) {
        if !m.ager_started.swap(true, Ordering::AcqRel) {
            age(vm, m);
        }
        return;
    }
    if m.cpu != cpu.index()
        || m.state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    run(vm, m);
    m.state.store(DONE, Ordering::Release);
}

/// While the pre-copy rounds run, clears the access flags of guest RAM
/// over and over (and invalidates the TLB after each sweep), as a host's
/// page reclaim does beside a migration: the vCPUs then take access-flag
/// faults on the pages the rounds write-protect, and some write-protects
/// lose their compare-and-swap to a vCPU, or to a sweep, and retry.
fn age(vm: &Vm, m: &Migration) {
    let Some((_, ram)) = vm.slots.find_indexed(RAM_IPA) else {
        return;
    };
    while m.state.load(Ordering::Acquire) < LOGGING {
        core::hint::spin_loop();
    }
    let mut sweeps = 0u64;
    while m.state.load(Ordering::Acquire) == LOGGING {
        let stage2 = vm.stage2.read();
        if stage2
            .shared()
            .test_clear_young(ram.ipa, ram.size, true)
            .is_err()
        {
            break;
        }
        pgtable::MmOps::tlb_flush_all(stage2.mm());
        drop(stage2);
        sweeps += 1;
        // A pause between sweeps, as a reclaim scan has: each sweep's TLB
        // invalidation costs every vCPU its translations, and sweeping
        // back to back starved them (the rounds then found little dirty).
        let until = now_ms() + AGE_PAUSE_MS;
        while now_ms() < until && m.state.load(Ordering::Acquire) == LOGGING {
            core::hint::spin_loop();
        }
    }
    info!(
        "migrate: cpu {} cleared the access flags of guest RAM {sweeps} times beside the rounds",
        percpu::current_id()
    );
}

/// Milliseconds of the system counter.
fn now_ms() -> u64 {
    CNTPCT_EL0.get() / (CNTFRQ_EL0.get() / 1000).max(1)
}

fn run(vm: &'static Vm, m: &Migration) {
    let me = percpu::current_id();
    let Some((index, ram)) = vm.slots.find_indexed(RAM_IPA) else {
        error!("migrate: vm{} has no RAM slot", vm.id);
        exit(ExitStatus::Failure);
    };
    let log = &vm.logs[index];
    for cpu in 0..vm.nr_vcpus {
        if let Err(e) = gic::can_kick(CpuId::new(cpu)) {
            error!("migrate: cannot pause vCPUs: {e}");
            exit(ExitStatus::Failure);
        }
    }
    let deadline = now_ms() + START_TIMEOUT_MS;
    while !vm.vcpus[..vm.nr_vcpus].iter().all(|v| v.is_on()) {
        if now_ms() > deadline {
            error!(
                "migrate: not every vCPU of vm{} came on within {START_TIMEOUT_MS} ms",
                vm.id
            );
            exit(ExitStatus::Failure);
        }
        core::hint::spin_loop();
    }
    info!(
        "migrate: vm{}: pre-copy of RAM ({} MiB at IPA {:#x}) to host {} on cpu {me}, at most {} rounds (fewer once a round takes at most {} pages), page aging on, race window {} spins",
        vm.id,
        ram.size >> 20,
        ram.ipa,
        m.cfg.dest,
        m.cfg.rounds,
        m.cfg.converge,
        m.cfg.race_window
    );

    let mut copier = HostCopy {
        src: ram.host,
        dst: m.cfg.dest.start().as_u64(),
        size: ram.size,
    };
    let pauser = Pauser {
        vm,
        kicked: AtomicU32::new(0),
    };
    let cfg = Precopy {
        max_rounds: m.cfg.rounds,
        stop_at: m.cfg.converge,
        age: true,
    };
    let mut cache = MemCache::new();
    let mut reporter = Reporter {
        pauser: &pauser,
        state: &m.state,
        cpu: me,
        race_window: m.cfg.race_window,
        counter: if pmu::available() {
            pmu::el2_instructions()
        } else {
            0
        },
        instructions: 0,
        cleared_pages: 0,
        clearing_instructions: 0,
    };
    let result = engine::migrate(
        &vm.stage2,
        log,
        &cfg,
        &mut cache,
        &pauser,
        &mut copier,
        &mut reporter,
    );
    s2mm::set_race_window(me, 0);
    if m.cfg.race_window > 0 {
        let (held, changed) = s2mm::race_windows();
        info!("migrate: race window held open {held} times; another CPU changed the entry in {changed}");
    }
    cache.drain(&vm.s2mm);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            error!("migrate: {e}");
            exit(ExitStatus::Failure);
        }
    };
    info!(
        "migrate: {} rounds beside the guest, {} pages copied in all, {} lost races retried by write-protect walks ({} blocks split when logging began)",
        report.rounds, report.pages_copied, report.retried, report.enabled.blocks_split
    );
    // (Without -icount, QEMU counts no instructions: say nothing then.)
    if reporter.clearing_instructions > 0 && reporter.cleared_pages > 0 {
        info!(
            "migrate: get-and-clear of those rounds: {} EL2 instructions for {} pages ({} per 1,000 pages)",
            reporter.clearing_instructions,
            reporter.cleared_pages,
            reporter.clearing_instructions * 1000 / reporter.cleared_pages
        );
    }
    if let Some(offset) = report.mismatch {
        error!(
            "migrate: FAIL: the copy differs from guest RAM at IPA {:#x}",
            ram.ipa + offset
        );
        exit(ExitStatus::Failure);
    }
    info!(
        "migrate: the copy matches guest RAM byte for byte ({} MiB); logging off, vCPUs resumed",
        ram.size >> 20
    );
}

/// Logs one line per step; holds the race window (`migrate.window=`) open
/// during get-and-clear only.
struct Reporter<'p> {
    pauser: &'p Pauser,
    state: &'p AtomicU8,
    cpu: CpuId,
    race_window: u32,
    /// The EL2 instruction counter as last read, and the 64-bit total.
    counter: u32,
    instructions: u64,
    /// Pages and EL2 instructions of the get-and-clears of the rounds run
    /// beside the guest.
    cleared_pages: u64,
    clearing_instructions: u64,
}

impl Observer for Reporter<'_> {
    fn meter(&mut self) -> u64 {
        if !pmu::available() {
            return 0;
        }
        let now = pmu::el2_instructions();
        self.instructions += pmu::between(self.counter, now);
        self.counter = now;
        self.instructions
    }

    fn round(&mut self, r: &RoundReport) {
        if let Phase::Round(_) = r.phase {
            self.cleared_pages += r.cleared.pages;
            self.clearing_instructions += r.cost;
        }
        if r.phase == Phase::Full {
            self.state.store(LOGGING, Ordering::Release);
        }
        report_round(r, self.pauser);
    }

    fn pausing(&mut self) {
        // The ager stops: the engine is about to take the write lock once,
        // which back-to-back read locks would starve.
        self.state.store(FINAL, Ordering::Release);
    }

    fn compared(&mut self, _mismatch: Option<u64>) {
        // The copy was checked: a guest may power off from here on.
        self.state.store(DONE, Ordering::Release);
    }

    fn clearing(&mut self, active: bool) {
        s2mm::set_race_window(self.cpu, if active { self.race_window } else { 0 });
    }
}

/// One log line per step.
fn report_round(r: &RoundReport, pauser: &Pauser) {
    let c = &r.cleared;
    match r.phase {
        Phase::Full => info!("migrate: round 0: copied all {} pages", r.pages),
        Phase::Round(n) => info!(
            "migrate: round {n}: {} dirty pages copied ({} write-protect walks, {} lost races retried)",
            r.pages, c.walks, c.retried
        ),
        Phase::Final => info!(
            "migrate: final round, vCPUs paused ({} kicked out of the guest): {} dirty pages copied ({} lost races retried)",
            pauser.kicked.load(Ordering::Relaxed),
            r.pages,
            c.retried
        ),
    }
}

/// Pauses the VM's vCPUs by kicks (`pause.rs`).
struct Pauser {
    vm: &'static Vm,
    kicked: AtomicU32,
}

impl Vcpus for Pauser {
    fn pause(&self) {
        match pause::pause(self.vm) {
            Ok(paused) => self.kicked.store(paused.kicked, Ordering::Relaxed),
            Err(e) => {
                // Checked before the migration started: a bug if seen.
                error!("migrate: cannot pause vCPUs: {e}");
                exit(ExitStatus::Failure);
            }
        }
    }

    fn resume(&self) {
        pause::resume(self.vm);
    }
}

/// Copies guest RAM (host memory, identity-mapped at EL2) to the
/// destination, and compares the two.
struct HostCopy {
    src: u64,
    dst: u64,
    size: u64,
}

impl HostCopy {
    /// The source range, read from memory: a guest writing with its caches
    /// off leaves no line for us, so drop any stale one we hold.
    fn fresh_source(&self, offset: u64, len: u64) -> *const u64 {
        mm::dcache_clean_inval_poc(self.src + offset, len);
        (self.src + offset) as *const u64
    }
}

impl Copier for HostCopy {
    fn copy(&mut self, offset: u64, len: u64) {
        assert!(len > 0 && offset + len <= self.size && (offset | len).is_multiple_of(64));
        let src = self.fresh_source(offset, len);
        let dst = self.dst + offset;
        // SAFETY: `[offset, offset + len)` lies inside guest RAM and inside
        // the destination (same size), both identity-mapped RW at EL2, and
        // `len` is a multiple of 64 (asserted). The guest may write the
        // source meanwhile: the loads take whatever each word holds (the
        // dirty log brings the page back if it changes later); no Rust
        // reference covers either range, and the destination is the
        // hypervisor's alone.
        unsafe {
            asm!(
                "2:",
                "ldp {a}, {b}, [{src}], #16",
                "ldp {c}, {d}, [{src}], #16",
                "stp {a}, {b}, [{dst}], #16",
                "stp {c}, {d}, [{dst}], #16",
                "ldp {a}, {b}, [{src}], #16",
                "ldp {c}, {d}, [{src}], #16",
                "stp {a}, {b}, [{dst}], #16",
                "stp {c}, {d}, [{dst}], #16",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                src = inout(reg) src => _,
                dst = inout(reg) dst => _,
                n = inout(reg) len => _,
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                d = out(reg) _,
                options(nostack)
            );
        }
    }

    fn first_difference(&self) -> Option<u64> {
        let words = (self.size / 8) as usize;
        let src = self.fresh_source(0, self.size);
        // SAFETY: both ranges are identity-mapped at EL2, `size` bytes long
        // and 8-byte aligned; the vCPUs are paused (the engine compares only
        // then) and the destination is ours, so nothing writes either while
        // these slices live.
        let (src, dst) = unsafe {
            (
                core::slice::from_raw_parts(src, words),
                core::slice::from_raw_parts(self.dst as *const u64, words),
            )
        };
        // Line by line first, then the word inside the first line that
        // differs. (XOR and OR, not `!=` on slices: that becomes a call to
        // a byte-wise `bcmp` per line.)
        let line = src
            .chunks_exact(8)
            .zip(dst.chunks_exact(8))
            .position(|(s, d)| s.iter().zip(d).fold(0, |acc, (a, b)| acc | (a ^ b)) != 0)?;
        let word = (0..8).find(|&w| src[line * 8 + w] != dst[line * 8 + w])?;
        Some(((line * 8 + word) * 8) as u64)
    }
}
