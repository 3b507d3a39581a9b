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

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use hvcore::migrate::{self as engine, Copier, Observer, Phase, Precopy, RoundReport, Vcpus};
use log::{error, info};
use pgtable::MemCache;

use super::race;
use crate::arch::cpu::{self, now_ms};
use crate::arch::gic;
use crate::arch::guest_mem::{self, HostRange};
use crate::arch::percpu::{self, CpuId};
use crate::arch::pmu;
use crate::vmm::vm::Vm;

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
    pub dest: HostRange,
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

/// A VM's migration job: run by one CPU that has no vCPU ([`Migration::run`]),
/// with page aging beside it on another ([`Migration::age`]) if there is one.
pub struct Migration {
    vm: &'static Vm,
    cfg: MigrationConfig,
    state: AtomicU8,
    /// Set once the job failed (the run then fails).
    failed: AtomicBool,
}

impl Migration {
    /// The job for `vm`; it claims the VM's dirty logs.
    pub fn new(vm: &'static Vm, cfg: MigrationConfig) -> Self {
        let reserved = vm.reserve_logs();
        debug_assert!(reserved, "one migration per VM");
        Self {
            vm,
            cfg,
            state: AtomicU8::new(PENDING),
            failed: AtomicBool::new(!reserved),
        }
    }

    /// Whether it finished and the copy matched; if not, says why in the
    /// log (a guest powering off before the end means the copy was never
    /// verified).
    pub fn verdict(&self) -> bool {
        if self.failed.load(Ordering::Acquire) {
            error!(
                "migrate: FAIL: the migration of vm{} failed (see above)",
                self.vm.id
            );
            false
        } else if self.state.load(Ordering::Acquire) != DONE {
            error!(
                "migrate: FAIL: vm{} powered off before its migration finished (run it longer, or with fewer migrate= rounds)",
                self.vm.id
            );
            false
        } else {
            true
        }
    }

    /// Runs the migration on this CPU; returns when it is done: false if it
    /// failed (the run should end: its copy is wrong or was never made).
    pub fn run(&self) -> bool {
        if self
            .state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            match run(self.vm, self) {
                Ran::Done => self.state.store(DONE, Ordering::Release),
                Ran::Failed => self.failed.store(true, Ordering::Release),
                // Unfinished: the run's verdict says so once the VM ends.
                Ran::VmEnded => {}
            }
        }
        !self.failed.load(Ordering::Acquire)
    }

    /// Ages guest RAM on this CPU while the pre-copy rounds run.
    pub fn age(&self) {
        age(self.vm, self);
    }
}

/// While the pre-copy rounds run, clears the access flags of guest RAM
/// over and over (and invalidates the TLB after each sweep), as a host's
/// page reclaim does beside a migration: the vCPUs then take access-flag
/// faults on the pages the rounds write-protect, and some write-protects
/// lose their compare-and-swap to a vCPU, or to a sweep, and retry.
fn age(vm: &Vm, m: &Migration) {
    let ram = vm.ram();
    while m.state.load(Ordering::Acquire) < LOGGING {
        cpu::relax();
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
            cpu::relax();
        }
    }
    info!(
        "migrate: cpu {} cleared the access flags of guest RAM {sweeps} times beside the rounds",
        percpu::current_id()
    );
}

/// How [`run`] ended.
enum Ran {
    /// The copy was made and matched.
    Done,
    /// It failed (said why in the log).
    Failed,
    /// The VM ended before it could start.
    VmEnded,
}

/// Migrates `vm`'s RAM as the module doc says.
fn run(vm: &'static Vm, m: &Migration) -> Ran {
    let me = percpu::current_id();
    let Some((index, ram)) = vm.slots.find_indexed(vm.map.ram_base) else {
        error!("migrate: vm{} has no RAM slot", vm.id);
        return Ran::Failed;
    };
    let log = &vm.logs[index];
    for vcpu in &vm.vcpus {
        if let Err(e) = gic::can_kick(vcpu.cpu) {
            error!("migrate: cannot pause vCPUs: {e}");
            return Ran::Failed;
        }
    }
    let deadline = now_ms() + START_TIMEOUT_MS;
    while !vm.vcpus.iter().all(|v| v.power.is_on()) {
        if vm.end().is_some() {
            return Ran::VmEnded;
        }
        if now_ms() > deadline {
            error!(
                "migrate: not every vCPU of vm{} came on within {START_TIMEOUT_MS} ms",
                vm.id
            );
            return Ran::Failed;
        }
        cpu::relax();
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
        src: vm.ram_host,
        dst: m.cfg.dest,
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
    race::set(me, 0);
    if m.cfg.race_window > 0 {
        let (held, changed) = race::windows();
        info!("migrate: race window held open {held} times; another CPU changed the entry in {changed}");
    }
    cache.drain(&vm.s2mm);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            error!("migrate: {e}");
            return Ran::Failed;
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
        return Ran::Failed;
    }
    info!(
        "migrate: the copy matches guest RAM byte for byte ({} MiB); logging off, vCPUs resumed",
        ram.size >> 20
    );
    Ran::Done
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
        race::set(self.cpu, if active { self.race_window } else { 0 });
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

/// Pauses the VM's vCPUs by kicks (`hvcore::request`).
struct Pauser {
    vm: &'static Vm,
    kicked: AtomicU32,
}

impl Vcpus for Pauser {
    fn pause(&self) {
        self.kicked.store(self.vm.pause_vcpus(), Ordering::Relaxed);
    }

    fn resume(&self) {
        self.vm.resume_vcpus();
    }
}

/// Copies guest RAM (host memory carved for the VM) to the destination,
/// and compares the two.
struct HostCopy {
    src: HostRange,
    dst: HostRange,
}

impl Copier for HostCopy {
    fn copy(&mut self, offset: u64, len: u64) {
        let copied = guest_mem::copy(self.src, self.dst, offset, len);
        assert!(copied, "the engine copies whole lines inside the slot");
    }

    fn first_difference(&self) -> Option<u64> {
        guest_mem::first_difference(self.src, self.dst)
    }
}
