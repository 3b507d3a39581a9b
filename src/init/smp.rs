//! Bringing the secondary CPUs online with PSCI `CPU_ON`.

use core::fmt;

use hvcore::platform::{Platform, PsciConduit};
use log::{error, info, warn};

use crate::arch::boot;
use crate::arch::cpu::{self, now_ms};
use crate::arch::percpu::{self, CpuId, MAX_CPUS};

/// How long the boot CPU waits for all secondaries to announce themselves.
const ONLINE_TIMEOUT_MS: u64 = 1000;

/// Why not all CPUs came online.
#[derive(Debug)]
pub enum SmpError {
    /// The boot CPU's MPIDR is not among the device tree's CPUs.
    BootCpuNotListed(u64),
    /// Secondaries exist but PSCI is unusable from EL2.
    NoPsci(Option<PsciConduit>),
    /// `count` CPUs failed to start or did not announce themselves in time.
    Missing {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BootCpuNotListed(mpidr) => {
                write!(f, "boot CPU (mpidr {mpidr:#x}) is not listed under /cpus")
            }
            Self::NoPsci(None) => {
                f.write_str("secondary CPUs listed but no PSCI node to start them")
            }
            Self::NoPsci(Some(conduit)) => write!(
                f,
                "PSCI method is {conduit:?}: unusable from EL2 (an HVC would trap to the \
                 hypervisor itself); need method = \"smc\""
            ),
            Self::Missing { count } => write!(f, "{count} CPU(s) did not come online"),
        }
    }
}

/// Records the boot CPU, starts every other CPU the device tree lists, and
/// waits (bounded) until all have announced themselves. Logical ids: the
/// boot CPU is 0, the others follow in device-tree order.
///
/// # Errors
///
/// An [`SmpError`] if the boot CPU is not listed, PSCI is unusable, or any
/// CPU failed to come online (each failure is logged with its MPIDR).
pub fn start_secondaries(platform: &Platform) -> Result<usize, SmpError> {
    let boot_mpidr = percpu::current_mpidr();
    let mpidrs = platform.cpus.mpidrs();
    if !mpidrs.contains(&boot_mpidr) {
        return Err(SmpError::BootCpuNotListed(boot_mpidr));
    }
    announce(CpuId::BOOT, boot_mpidr);

    let secondaries = mpidrs.iter().copied().filter(|&m| m != boot_mpidr);
    let mut started = [false; MAX_CPUS];
    let mut failures = 0;
    for (id, mpidr) in percpu::all().skip(1).zip(secondaries) {
        if platform.psci != Some(PsciConduit::Smc) {
            return Err(SmpError::NoPsci(platform.psci));
        }
        percpu::get(id).set_mpidr(mpidr);
        match boot::start_secondary(id, mpidr) {
            Ok(()) => started[id.index()] = true,
            Err(e) => {
                error!("cpu {id} (mpidr {mpidr:#x}): PSCI CPU_ON failed: {e}");
                failures += 1;
            }
        }
    }

    let deadline = now_ms() + ONLINE_TIMEOUT_MS;
    while pending(&started).next().is_some() && now_ms() < deadline {
        cpu::relax();
    }
    for id in pending(&started) {
        error!(
            "cpu {id} (mpidr {:#x}) did not come online within {ONLINE_TIMEOUT_MS} ms",
            percpu::get(id).mpidr()
        );
        failures += 1;
    }
    if failures > 0 {
        return Err(SmpError::Missing { count: failures });
    }
    Ok(percpu::all()
        .filter(|id| percpu::get(*id).is_online())
        .count())
}

/// CPUs that were started but have not announced themselves yet.
fn pending(started: &[bool; MAX_CPUS]) -> impl Iterator<Item = CpuId> + '_ {
    percpu::all().filter(|id| started[id.index()] && !percpu::get(*id).is_online())
}

/// Says the calling CPU is online, then marks it so: in this order, so the
/// boot CPU cannot see every CPU online and exit before the last line is out.
fn announce(id: CpuId, mpidr: u64) {
    let cpu = percpu::get(id);
    cpu.set_mpidr(mpidr);
    info!("cpu {id} online at EL2 (mpidr {mpidr:#x})");
    cpu.mark_online();
}

/// A secondary CPU's set-up, before it waits for work: the boot CPU's
/// translation, its GIC interface and PMU, then it says it is online.
pub fn secondary_setup(id: CpuId) {
    // Same translation as the boot CPU before touching shared data.
    crate::arch::mm::mmu::enable_secondary();
    crate::arch::gic::init_cpu();
    // The same PMU as the boot CPU's, which said what it found.
    let _ = crate::arch::pmu::init_cpu();
    let expected = percpu::current().mpidr();
    let actual = percpu::current_mpidr();
    if actual != expected {
        warn!("cpu {id}: started as mpidr {expected:#x} but MPIDR says {actual:#x}");
    }
    announce(id, actual);
}

/// The PSCI version, for the boot summary (only when PSCI is usable).
pub fn psci_version(platform: &Platform) -> Option<(u16, u16)> {
    (platform.psci == Some(PsciConduit::Smc)).then(crate::arch::psci::version)
}
