//! The boot CPU's sequence: device tree, console, logging, memory, other
//! CPUs, then the job. Any error ends the run with a clear message and
//! [`ExitStatus::Failure`].

use core::fmt;

use hvcore::bootargs::{BootArgError, BootArgs, LogLevel};
use hvcore::PhysAddr;
use log::{debug, info};

use crate::console::println;
use crate::dtb::{self, DtbError};
use crate::exit::{exit, ExitStatus};
use crate::mm::{self, MmError};
use crate::smp::{self, SmpError};
use crate::{console, exception, logger};

/// Why boot stopped.
#[derive(Debug)]
enum BootError {
    Dtb(DtbError),
    BootArgs(BootArgError<'static>),
    Mm(MmError),
    Mmu(mm::mmu::MmuError),
    Smp(SmpError),
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
    let args = BootArgs::parse(platform.bootargs).map_err(BootError::BootArgs)?;
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

    mm::init(&platform).map_err(BootError::Mm)?;
    frame_self_test()?;
    mm::mmu::init(&platform).map_err(BootError::Mmu)?;

    let online = smp::start_secondaries(&platform).map_err(BootError::Smp)?;
    info!("all {online} CPUs online");

    if let Some(fault) = args.fault {
        exception::inject(fault);
    }
    summary(online);
    Ok(())
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
