//! The boot layer: the boot CPU's sequence (device tree, console, logging, memory, other CPUs, the VM and its jobs), what every CPU then does, and the end of the run. The only layer that sees all others.
//!
//! Any boot error ends the run with a clear message and
//! [`HypFailure::Boot`]. Once VMs run, each CPU serves its vCPU (or
//! runs its job, or waits); the run ends when every VM has ended, with a
//! status from how each ended and whether every job succeeded
//! (`hvcore::verdict`).

mod smp;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use alloc::boxed::Box;
use alloc::vec::Vec;
use hvcore::bootargs::{self, BootArgError, BootArgs, LogLevel};
use hvcore::bundle::{Bundle, BundleError, Kind};
use hvcore::entropy::Entropy;
use hvcore::platform::{DtbError, Gic, Platform, PsciConduit, MAX_CPUS};
use hvcore::smccc::{CpuFacts, Workarounds};
use hvcore::verdict::{self, Failure, VmEnd};
use hvcore::vmconfig::{self, PlanError};
use hvcore::vmspec::{self, FitError, SpecError, VmSpec, MAX_VMS};
use hvcore::PhysAddr;
use log::{debug, error, info, warn};
use spin::Once;

use crate::arch::console::{self as hyp_console, println};
use crate::arch::exit::{self, exit_code, fail, HypFailure};
use crate::arch::machine;
use crate::arch::mm::{self, Carve, MmError};
use crate::arch::percpu::CpuId;
use crate::arch::psci as arch_psci;
use crate::arch::{cpu, exception, gic, guest_mem, pmu};
use crate::jobs::bench;
use crate::jobs::migrate::{Migration, MigrationConfig, DEFAULT_CONVERGE_PAGES};
use crate::logger;
use crate::vmm::console;
use crate::vmm::run::{self, RunEnd};
use crate::vmm::stats::VmStats;
use crate::vmm::table;
use crate::vmm::vcpu::Vcpu;
use crate::vmm::vm::VendorService;
use crate::vmm::vm::{self, Vm, VmConfig, VmError};
use smp::SmpError;

/// Why boot stopped.
#[derive(Debug)]
enum BootError {
    Dtb(DtbError),
    BootArgs(BootArgError<'static>),
    Mm(MmError),
    Mmu(mm::mmu::MmuError),
    Smp(SmpError),
    Plan(PlanError),
    Vm(VmError),
    Bundle(BundleError),
    NoKernel,
    VmNumbers,
    Spec(usize, Option<SpecError<'static>>),
    Fit(FitError),
    NoSpareCpu,
    MigrateVm(usize),
    FrameSelfTest,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dtb(e) => write!(f, "{e}"),
            Self::BootArgs(e) => write!(f, "{e}"),
            Self::Mm(e) => write!(f, "{e}"),
            Self::Mmu(e) => write!(f, "{e}"),
            Self::Smp(e) => write!(f, "{e}"),
            Self::Plan(e) => write!(f, "{e}"),
            Self::Vm(e) => write!(f, "{e}"),
            Self::Bundle(e) => write!(f, "{e}"),
            Self::NoKernel => f.write_str("guest bundle: no kernel for VM 0"),
            Self::VmNumbers => write!(
                f,
                "guest bundle: its VMs must be numbered 0, 1, 2... (at most {MAX_VMS})"
            ),
            Self::Spec(vm, Some(e)) => write!(f, "vm{vm}: {e}"),
            Self::Spec(vm, None) => write!(
                f,
                "vm{vm}: no settings (with several VMs each needs its own, UTF-8)"
            ),
            Self::Fit(e) => write!(f, "{e}"),
            Self::NoSpareCpu => f.write_str(
                "migrate= needs a CPU that runs no vCPU, but the VMs take every CPU online",
            ),
            Self::MigrateVm(vm) => write!(f, "migrate.vm={vm}, but there is no vm{vm}"),
            Self::FrameSelfTest => f.write_str("frame allocator self-test failed"),
        }
    }
}

/// Guest RAM when `guest.mem=` is not given.
const DEFAULT_GUEST_MEM: u64 = 128 << 20;

/// What a CPU without a vCPU does.
#[derive(Clone, Copy)]
enum Job {
    /// Migrates a VM's RAM.
    Migrate(&'static Migration),
    /// Ages a migrating VM's RAM beside the rounds.
    Age(&'static Migration),
}

/// Each CPU's job, if it has one.
static JOBS: [Once<Job>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
/// The migration, for the verdict.
static MIGRATION: Once<&'static Migration> = Once::new();
/// Set once the boot CPU has handed out every vCPU and job.
static BOOTED: AtomicBool = AtomicBool::new(false);

/// The boot CPU, from the entry point: boots, then serves its vCPU.
pub fn boot_cpu_main(dtb: usize) -> ! {
    match boot(dtb) {
        Ok(true) => cpu_loop(CpuId::BOOT),
        Ok(false) => {
            info!("done: no guest ran");
            exit_code(0)
        }
        Err(e) => {
            // Printed directly, not logged: the logger may not be up yet,
            // and the level may be `off`.
            println!("error: {e}");
            fail(HypFailure::Boot)
        }
    }
}

/// Every other CPU, from the entry point: sets itself up, then waits for
/// work.
pub fn secondary_main(cpu: CpuId) -> ! {
    smp::secondary_setup(cpu);
    cpu_loop(cpu)
}

/// Boots: returns whether a guest runs (and this CPU should serve it).
fn boot(dtb: usize) -> Result<bool, BootError> {
    let machine = machine::read_machine(dtb).map_err(BootError::Dtb)?;
    hyp_console::init(&machine);
    let platform = machine.platform();
    let (host_args, guest_args) = bootargs::split_guest(platform.bootargs);
    if let Some(token) = bootargs::verdict_token(host_args) {
        exit::set_token(token);
    }
    let args = BootArgs::parse(host_args).map_err(BootError::BootArgs)?;
    logger::init(args.log_level.unwrap_or(LogLevel::Info));

    info!(
        "hyp {} booting on cpu 0 at EL2, device tree at {:#x}",
        env!("CARGO_PKG_VERSION"),
        dtb
    );
    log_platform(platform);
    for token in args.unknown() {
        debug!("bootargs: ignoring unknown argument `{token}`");
    }
    if let Some((major, minor)) = smp::psci_version(platform) {
        info!("psci: version {major}.{minor}");
    }

    let image = guest_mem::boot_image(&machine).filter(|_| !args.guest_none);
    // What to run, read before any memory is carved for it: one raw image
    // or a bundle (kernels, initramfs, and with several VMs their settings).
    let (guests, count) = match image {
        Some(blob) => describe_guests(blob, &args)?,
        None => ([None; MAX_VMS], 0),
    };
    let migrate = args.migrate.filter(|_| count > 0);
    let migrate_vm = args.migrate_vm.unwrap_or(0);
    if migrate.is_some() && migrate_vm >= count {
        return Err(BootError::MigrateVm(migrate_vm));
    }
    // No heap yet: the carves are a fixed array, of which the first `n`:
    // each VM's RAM and ROM slot, then a migration's copy.
    let mut carves = [Carve {
        what: "guest ROM",
        size: hvcore::memmap::ROM_SIZE,
        gib_aligned: false,
    }; 2 * MAX_VMS + 1];
    let mut n = 0;
    for g in guests.iter().flatten() {
        carves[n] = Carve {
            what: "guest RAM",
            size: g.mem,
            gib_aligned: true,
        };
        n += 2;
    }
    if let (Some(_), Some(g)) = (migrate, guests[migrate_vm]) {
        carves[n] = Carve {
            what: "migration copy",
            size: g.mem,
            gib_aligned: false,
        };
        n += 1;
    }
    let carved = mm::init(&machine, &carves[..n]).map_err(BootError::Mm)?;
    frame_self_test()?;
    mm::mmu::init(&machine).map_err(BootError::Mmu)?;
    gic::init(&machine);
    gic::init_cpu();
    match pmu::init_cpu() {
        Ok(pmu) => info!("pmu: {pmu}"),
        Err(e) => warn!("pmu: {e}"),
    }

    let online = smp::start_secondaries(platform).map_err(BootError::Smp)?;
    info!("all {online} CPUs online");

    if args.bench {
        info!("bench: benchmark hypercalls on (bench=on)");
    }
    if let Some(fault) = args.fault {
        exception::inject(fault);
    }
    summary(online);
    if count == 0 {
        info!("no guest to run (pass one with -initrd; guest=none skips it)");
        return Ok(false);
    }
    let plan = plan_cpus(&guests[..count], &args, online, migrate.is_some())?;
    let entropy = entropy(platform);
    let workarounds = workarounds();
    let mut vms: Vec<&'static Vm> = Vec::new();
    for (i, g) in guests[..count].iter().flatten().enumerate() {
        let cpus: Vec<CpuId> = plan.cpus[i].iter().copied().map(CpuId::new).collect();
        let spec = g.spec;
        let started = pmu::el2_instructions();
        let vm = table::create(&VmConfig {
            kernel: g.kernel,
            initrd: g.initrd,
            ram: carved[2 * i],
            rom: carved[2 * i + 1],
            cpus: &cpus,
            bootargs: spec.map_or(guest_args, |s| s.guest_args),
            entropy: entropy.clone(),
            reset_limit: args.reset_limit,
            workarounds,
            console_raw: args.console_raw,
            max_block: spec
                .and_then(|s| s.block)
                .or(args.guest_block)
                .unwrap_or(1 << 30),
            budget: spec.map_or_else(|| vmspec::default_budget(g.mem, cpus.len()), |s| s.budget()),
            vendor: args.bench.then_some(bench::service as VendorService),
        })
        .map_err(BootError::Vm)?;
        if args.bench && i == 0 && pmu::available() {
            // What creating a VM costs: slots, bus, stage-2 root, the
            // images and device tree loaded (the benchmark's row).
            let n = pmu::between(started, pmu::el2_instructions());
            bench::report("vm-create", 1, 0, n, 0);
        }
        vms.push(vm);
    }
    if let (Some(rounds), Some(migrate_cpu)) = (migrate, plan.migrate_cpu) {
        let m: &'static Migration = Box::leak(Box::new(Migration::new(
            vms[migrate_vm],
            MigrationConfig {
                rounds,
                dest: carved[2 * count],
                race_window: args.migrate_window.unwrap_or(0),
                converge: u64::from(args.migrate_converge.unwrap_or(DEFAULT_CONVERGE_PAGES)),
            },
        )));
        MIGRATION.call_once(|| m);
        give_job(CpuId::new(migrate_cpu), Job::Migrate(m));
        if let Some(ager) = plan.ager_cpu {
            give_job(CpuId::new(ager), Job::Age(m));
        }
    }
    for vm in vms {
        table::publish(vm);
    }
    match platform.uart_intid {
        Some(intid) if console::start_input(intid) => {
            debug!("console: input on (interrupt {intid} to cpu 0)");
        }
        _ => info!("console: no input (the UART has no interrupt the GIC can route)"),
    }
    BOOTED.store(true, Ordering::Release);
    Ok(true)
}

/// One VM to create: what it boots and how.
#[derive(Clone, Copy)]
struct GuestDesc {
    kernel: &'static [u8],
    initrd: Option<&'static [u8]>,
    /// Its settings, from the bundle; `None`: the one VM the boot
    /// arguments describe (`guest.smp=`, `guest.mem=`).
    spec: Option<VmSpec<'static>>,
    /// Its RAM.
    mem: u64,
}

/// The VMs the handed-over blob describes (VM n at index n), and how many.
fn describe_guests(
    blob: &'static [u8],
    args: &BootArgs<'_>,
) -> Result<([Option<GuestDesc>; MAX_VMS], usize), BootError> {
    let bundle = Bundle::parse(blob).map_err(BootError::Bundle)?;
    let mut guests = [None; MAX_VMS];
    let mut count = 0;
    for (i, id) in bundle.vms().enumerate() {
        if id as usize != i || i >= MAX_VMS {
            return Err(BootError::VmNumbers);
        }
        let kernel = bundle.part(id, Kind::Kernel).ok_or(BootError::NoKernel)?;
        let spec = match bundle.part(id, Kind::Config) {
            Some(text) => {
                let text = core::str::from_utf8(text).map_err(|_| BootError::Spec(i, None))?;
                Some(VmSpec::parse(text).map_err(|e| BootError::Spec(i, Some(e)))?)
            }
            None => None,
        };
        // Settings for every VM, or for none (then only VM 0 runs).
        if spec.is_none() && (i > 0 || bundle.part(1, Kind::Config).is_some()) {
            return Err(BootError::Spec(i, None));
        }
        let mem = spec.map_or(args.guest_mem.unwrap_or(DEFAULT_GUEST_MEM), |s| s.mem);
        guests[i] = Some(GuestDesc {
            kernel,
            initrd: bundle.part(id, Kind::Initrd),
            spec,
            mem,
        });
        count = i + 1;
    }
    if count == 0 {
        return Err(BootError::NoKernel);
    }
    if count > 1 || guests[0].is_some_and(|g| g.spec.is_some()) {
        if args.guest_smp.is_some() || args.guest_mem.is_some() {
            warn!("bootargs: guest.smp= and guest.mem= are ignored: the VMs' own settings say");
        }
        info!("{count} VM(s) described by the guest bundle");
    }
    Ok((guests, count))
}

/// Which CPUs run what: each VM's vCPUs, and a migration's jobs.
struct CpuAssignment {
    /// Each VM's physical CPUs, vCPU n on the n-th.
    cpus: Vec<Vec<usize>>,
    migrate_cpu: Option<usize>,
    ager_cpu: Option<usize>,
}

/// Plans the CPUs of `guests` on `online` CPUs.
fn plan_cpus(
    guests: &[Option<GuestDesc>],
    args: &BootArgs<'_>,
    online: usize,
    migrate: bool,
) -> Result<CpuAssignment, BootError> {
    let specs: Vec<VmSpec<'static>> = guests.iter().flatten().filter_map(|g| g.spec).collect();
    if specs.is_empty() {
        // One VM from the boot arguments: vCPU n on CPU n.
        let plan = vmconfig::plan(online, args.guest_smp, migrate).map_err(BootError::Plan)?;
        return Ok(CpuAssignment {
            cpus: alloc::vec![(0..plan.vcpus).collect()],
            migrate_cpu: plan.migrate_cpu,
            ager_cpu: plan.ager_cpu,
        });
    }
    vmspec::check(&specs, online).map_err(BootError::Fit)?;
    let mut spare = vmspec::spare_cpus(&specs, online).iter();
    let migrate_cpu = if migrate {
        Some(spare.next().ok_or(BootError::NoSpareCpu)?)
    } else {
        None
    };
    let ager_cpu = if migrate { spare.next() } else { None };
    Ok(CpuAssignment {
        cpus: specs.iter().map(|s| s.cpus.iter().collect()).collect(),
        migrate_cpu,
        ager_cpu,
    })
}

/// Gives CPU `cpu` a job and wakes it.
fn give_job(cpu: CpuId, job: Job) {
    JOBS[cpu.index()].call_once(|| job);
    cpu::wake_all();
    let _ = gic::kick(cpu);
}

/// What every CPU does once booted: its job, or its vCPU, or nothing.
fn cpu_loop(cpu: CpuId) -> ! {
    loop {
        if let Some(&job) = JOBS[cpu.index()].get() {
            run_job(job);
            idle(cpu);
        }
        if let Some((vm, vcpu)) = table::vcpu_of(cpu) {
            serve(cpu, vm, vcpu);
        }
        if BOOTED.load(Ordering::Acquire) && table::vcpu_of(cpu).is_none() {
            idle(cpu);
        }
        wait(cpu);
    }
}

/// Runs a job to its end; a failed migration ends the run (its copy is
/// wrong, or was never made).
fn run_job(job: Job) {
    match job {
        Job::Migrate(m) => {
            if !m.run() {
                m.verdict();
                exit_code(verdict::JOB_FAILED);
            }
        }
        Job::Age(m) => m.age(),
    }
}

/// Serves `vcpu` of `vm` on this CPU until the VM ends: runs it whenever
/// it is powered on, waits while it is off.
fn serve(cpu: CpuId, vm: &'static Vm, vcpu: &'static Vcpu) -> ! {
    loop {
        if vm.end().is_some() {
            finish(cpu, vm);
        }
        if let Some(start) = vcpu.power.take_start() {
            match run::run(vm, vcpu, start) {
                RunEnd::VmEnded => finish(cpu, vm),
                RunEnd::Reset => {
                    console::flush(vm);
                    if let Err(e) = vm::reboot(vm) {
                        error!("vm{}: reboot failed: {e}", vm.id);
                        vm.stop(VmEnd::Failed(Failure::Reboot));
                    }
                }
                RunEnd::PoweredOff => {}
            }
            continue;
        }
        wait(cpu);
    }
}

/// This CPU has left `vm`, which ended. The last of its vCPUs to leave
/// reports how it ended; once every VM has, the run ends.
fn finish(cpu: CpuId, vm: &'static Vm) -> ! {
    if vm.leave() {
        let stats = VmStats::sum(vm.vcpus.iter().map(|v| &v.stats));
        stats.log(vm.id, &vm.stage2.read().stats(), vm.pause.kicks());
        vm.report_suppressed();
        console::flush(vm);
        if let Some(end) = vm.end() {
            info!("vm{}: {end}", vm.id);
        }
        if table::all_finished() {
            end_run();
        }
    }
    idle(cpu)
}

/// Ends the run with the status every VM's end and every job give.
fn end_run() -> ! {
    let ends: Vec<VmEnd> = table::vms().filter_map(|vm| vm.end()).collect();
    let jobs_ok = MIGRATION.get().is_none_or(|m| m.verdict());
    if ends.len() > 1 {
        for (vm, end) in table::vms().filter_map(|vm| Some((vm.id, vm.end()?))) {
            info!("run: vm{vm} {end}");
        }
    }
    let status = verdict::run_status(ends, jobs_ok);
    info!("run: every VM ended");
    exit_code(status)
}

/// Waits for something to happen to this CPU: an interrupt (a kick), or
/// an event where no GICv3 can kick.
fn wait(cpu: CpuId) {
    if gic::can_kick(cpu).is_ok() {
        cpu::wait_for_interrupt();
        // A kick, or the console's input (the boot CPU takes it).
        gic::handle_irqs(|intid| {
            if !console::host_irq(intid) {
                gic::deactivate(intid);
            }
        });
    } else {
        cpu::wait_for_event();
    }
}

/// Nothing left for this CPU to do: it waits for good (the run ends
/// elsewhere).
fn idle(cpu: CpuId) -> ! {
    loop {
        wait(cpu);
    }
}

/// What the guests are told of the Spectre workarounds, from this CPU's ID
/// registers and the firmware's answers.
fn workarounds() -> Workarounds {
    let (csv2, ssbs, ecbhb) = cpu::spectre_facts();
    let facts = CpuFacts {
        csv2,
        ssbs,
        ecbhb,
        firmware: arch_psci::firmware_workarounds(),
    };
    let w = Workarounds::decide(&facts);
    info!(
        "smccc: guests' ARCH_WORKAROUND_1..3 features {:?} (CSV2 {csv2}, SSBS {ssbs}, ECBHB {ecbhb}, firmware {:?})",
        w.0, facts.firmware
    );
    w
}

/// The source of every guest's seeds: the CPU's `RNDR` where it has one,
/// the seeds the firmware put in the device tree, and the counter.
fn entropy(platform: &Platform<'_>) -> Entropy {
    let mut rndr = [0u8; 32];
    let mut has_rndr = false;
    for chunk in rndr.chunks_mut(8) {
        if let Some(r) = cpu::random() {
            chunk.copy_from_slice(&r.to_le_bytes());
            has_rndr = true;
        }
    }
    let kaslr = platform.kaslr_seed.unwrap_or(0).to_le_bytes();
    let now = cpu::counter().to_le_bytes();
    if !has_rndr && platform.rng_seed.is_empty() {
        warn!("entropy: no RNDR and no rng-seed in the device tree: guest seeds come from the counter alone");
    }
    Entropy::gather([&rndr[..], platform.rng_seed, &kaslr[..], &now[..]])
}

/// Allocates and frees a few frames, checking the counts follow.
fn frame_self_test() -> Result<(), BootError> {
    let before = mm::frame_stats();
    let mut frames = [PhysAddr::new(0); 4];
    for slot in &mut frames {
        *slot = mm::alloc_frame().ok_or(BootError::FrameSelfTest)?;
    }
    let during = mm::frame_stats();
    for frame in frames {
        mm::free_frame(frame).map_err(|_| BootError::FrameSelfTest)?;
    }
    let ok = during.used == before.used + frames.len() && mm::frame_stats() == before;
    debug!(
        "mm: frame self-test allocated and freed {} .. {}",
        frames[0],
        frames[frames.len() - 1]
    );
    ok.then_some(()).ok_or(BootError::FrameSelfTest)
}

/// The state of the machine after boot.
fn summary(online: usize) {
    let frames: mm::FrameStats = mm::frame_stats();
    let heap: mm::HeapStats = mm::heap_stats();
    info!(
        "summary: {online} CPUs online at EL2; frames {} total, {} used, {} free; heap {}/{} bytes used",
        frames.total, frames.used, frames.free, heap.allocated, heap.total
    );
}

/// Logs what the device tree describes, one line per item.
fn log_platform(p: &Platform<'_>) {
    const MIB: u64 = 1024 * 1024;
    info!("platform: {}", p.model);
    info!("dtb: {} ({} bytes)", p.dtb, p.dtb.size());
    for range in p.memory.as_slice() {
        info!("memory: {range} ({} MiB)", range.size() / MIB);
    }
    for range in p.reserved.as_slice() {
        info!("reserved: {range}");
    }
    match p.initrd {
        Some(initrd) => info!("initrd: {initrd} ({} bytes)", initrd.size()),
        None => info!("initrd: none"),
    }
    info!(
        "cpus: {}, mpidr {}",
        p.cpus.mpidrs().len(),
        HexList(p.cpus.mpidrs())
    );
    if p.cpus.ignored > 0 {
        warn!(
            "cpus: {} more listed, ignored (MAX_CPUS = {MAX_CPUS})",
            p.cpus.ignored
        );
    }
    if p.cpus.no_reg > 0 {
        warn!("cpus: {} cpu node(s) without reg, ignored", p.cpus.no_reg);
    }
    info!("uart: pl011 at {}", p.uart);
    match p.gic {
        Some(Gic::V3 {
            distributor,
            redistributors,
        }) => info!("gic: v3, distributor {distributor}, redistributors {redistributors}"),
        Some(Gic::V2 {
            distributor,
            cpu_interface,
        }) => info!("gic: v2, distributor {distributor}, cpu interface {cpu_interface}"),
        None => warn!("gic: none found"),
    }
    match p.psci {
        Some(PsciConduit::Smc) => info!("psci: method smc"),
        Some(PsciConduit::Hvc) => warn!("psci: method hvc, unusable from EL2"),
        None => warn!("psci: no /psci node"),
    }
    info!("bootargs: {:?}", p.bootargs);
}

/// Formats values as `0x0 0x1 ...`.
struct HexList<'a>(&'a [u64]);

impl fmt::Display for HexList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{v:#x}")?;
        }
        Ok(())
    }
}
