//! The boot CPU's sequence: device tree, console, logging, memory, other
//! CPUs, then the job. Any error ends the run with a clear message and
//! [`ExitStatus::Failure`].

use core::fmt;

use hvcore::bootargs::{BootArgError, BootArgs, LogLevel};
use hvcore::PhysAddr;
use log::{debug, info, warn};

use crate::console::println;
use crate::dtb::{self, DtbError};
use crate::exit::{exit, ExitStatus};
use crate::mm::{self, MmError};
use crate::smp::{self, SmpError};
use crate::{console, exception, gic, logger, pmu, vm};

/// Why boot stopped.
#[derive(Debug)]
enum BootError {
    Dtb(DtbError),
    BootArgs(BootArgError<'static>),
    Mm(MmError),
    Mmu(mm::mmu::MmuError),
    Smp(SmpError),
    Vm(vm::VmError),
    GuestSmp { vcpus: usize, online: usize },
    MigrateCpu { vcpus: usize, online: usize },
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
            Self::Vm(e) => write!(f, "{e}"),
            Self::GuestSmp { vcpus, online } => write!(
                f,
                "guest.smp={vcpus}, but only {online} CPUs are online (one vCPU per CPU: give QEMU -smp {vcpus})"
            ),
            Self::MigrateCpu { vcpus, online } => write!(
                f,
                "migrate= needs a CPU that runs no vCPU, but {vcpus} vCPUs take all {online} CPUs online (give QEMU -smp {} or the guest fewer guest.smp=)",
                vcpus + 1
            ),
            Self::FrameSelfTest => f.write_str("frame allocator self-test failed"),
        }
    }
}

/// Runs the boot CPU to the end of its job, then exits.
pub fn boot_cpu_main(dtb: usize) -> ! {
    match run(dtb) {
        Ok(()) => {
            info!("done: exiting with status 0");
            exit(ExitStatus::Success)
        }
        Err(e) => {
            // Printed directly, not logged: the logger may not be up yet,
            // and the level may be `off`.
            println!("error: {e}");
            exit(ExitStatus::Failure)
        }
    }
}

fn run(dtb: usize) -> Result<(), BootError> {
    let platform = dtb::parse(dtb).map_err(BootError::Dtb)?;
    console::init(&platform);
    let (host_args, guest_args) = split_bootargs(platform.bootargs);
    let args = BootArgs::parse(host_args).map_err(BootError::BootArgs)?;
    logger::init(args.log_level.unwrap_or(LogLevel::Info));

    info!(
        "hyp {} booting on cpu 0 at EL2, device tree at {:#x}",
        env!("CARGO_PKG_VERSION"),
        dtb
    );
    platform.log_summary();
    for token in args.unknown() {
        debug!("bootargs: ignoring unknown argument `{token}`");
    }
    if let Some((major, minor)) = smp::psci_version(&platform) {
        info!("psci: version {major}.{minor}");
    }

    let image = platform.initrd.filter(|_| !args.guest_none);
    let guest_mem = match image {
        Some(_) => args.guest_mem.unwrap_or(DEFAULT_GUEST_MEM),
        None => 0,
    };
    let migrate = args.migrate.filter(|_| guest_mem > 0);
    let guest_memory = mm::init(&platform, guest_mem, migrate.is_some()).map_err(BootError::Mm)?;
    frame_self_test()?;
    mm::mmu::init(&platform).map_err(BootError::Mmu)?;
    gic::init(&platform);
    gic::init_cpu();
    match pmu::init_cpu() {
        Ok(pmu) => info!("pmu: {pmu}"),
        Err(e) => warn!("pmu: {e}"),
    }

    let online = smp::start_secondaries(&platform).map_err(BootError::Smp)?;
    info!("all {online} CPUs online");

    if args.bench {
        vm::enable_benchmarks();
        info!("bench: benchmark hypercalls on (bench=on)");
    }
    if let Some(fault) = args.fault {
        exception::inject(fault);
    }
    summary(online);
    match (image, guest_memory) {
        (Some(image), Some(memory)) => {
            // A migration runs on a CPU of its own: by default, the last.
            let host_cpus = usize::from(migrate.is_some());
            let vcpus = args
                .guest_smp
                .unwrap_or(online.saturating_sub(host_cpus).max(1));
            if vcpus > online {
                return Err(BootError::GuestSmp { vcpus, online });
            }
            if vcpus + host_cpus > online {
                return Err(BootError::MigrateCpu { vcpus, online });
            }
            let migration =
                migrate
                    .zip(memory.migration)
                    .map(|(rounds, dest)| vm::MigrationConfig {
                        rounds,
                        dest,
                        race_window: args.migrate_window.unwrap_or(0),
                        converge: u64::from(
                            args.migrate_converge.unwrap_or(vm::DEFAULT_CONVERGE_PAGES),
                        ),
                    });
            let vm = vm::create(&vm::VmConfig {
                image,
                ram: memory.ram,
                rom: memory.rom,
                vcpus,
                bootargs: guest_args,
                max_block: args.guest_block.unwrap_or(1 << 30),
                migration,
            })
            .map_err(BootError::Vm)?;
            vm::run_boot_vcpu(vm)
        }
        _ => {
            info!("no guest to run (pass one with -initrd; guest=none skips it)");
            Ok(())
        }
    }
}

/// Guest RAM when `guest.mem=` is not given.
const DEFAULT_GUEST_MEM: u64 = 128 << 20;

/// Splits the command line at a lone `--`: what comes before is the
/// hypervisor's, what follows is the guest's `/chosen/bootargs`.
fn split_bootargs(line: &str) -> (&str, &str) {
    let mut at = 0;
    for token in line.split(' ') {
        if token == "--" {
            return (&line[..at], line[at + 2..].trim_start());
        }
        at += token.len() + 1;
    }
    (line, "")
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

/// The job, for now: report the state of the machine.
fn summary(online: usize) {
    let frames: mm::FrameStats = mm::frame_stats();
    let heap: mm::HeapStats = mm::heap_stats();
    info!(
        "summary: {online} CPUs online at EL2; frames {} total, {} used, {} free; heap {}/{} bytes used",
        frames.total, frames.used, frames.free, heap.allocated, heap.total
    );
}
