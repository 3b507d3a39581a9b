//! A vCPU: what other CPUs may see of it (power state, requests, counters) and what only its own CPU touches (its context and memory cache). Its run loop is `run.rs`.

use hvcore::power::Power;
use hvcore::request::Requests;
use pgtable::MemCache;
use spin::{Mutex, MutexGuard};

use super::stats::VcpuStats;
use crate::arch::context::VcpuContext;
use crate::arch::percpu::CpuId;
use crate::arch::vgic::VcpuIf;

/// Requests another CPU can make of a vCPU ([`Requests`] bits; the pause
/// is `hvcore::request::PAUSE`).
pub mod req {
    /// Its VM is stopping: leave the run loop.
    pub const STOP: u32 = 1 << 0;
    /// It may have an interrupt to take: refill its list registers.
    pub const IRQ: u32 = 1 << 1;
    /// Its VM reboots: leave the run loop, powered off.
    pub const RESET: u32 = 1 << 2;
}

/// Table pages the fault path may need for one mapping (one table per
/// level below the root), topped up before the stage-2 lock is taken.
pub const FAULT_CACHE_PAGES: usize = 3;

/// One vCPU.
pub struct Vcpu {
    id: usize,
    /// The physical CPU it runs on.
    pub cpu: CpuId,
    /// Its PSCI power state.
    pub power: Power,
    /// Its mode (in guest or not) and what other CPUs ask of it.
    pub requests: Requests,
    /// What it did (written by its own CPU only).
    pub stats: VcpuStats,

    /// What only its own CPU touches, locked by its run loop.
    state: Mutex<VcpuState>,
}

/// A vCPU's state that lives in its CPU while it runs.
pub struct VcpuState {
    /// Registers: general (saved on every exit), EL1 and FP/SIMD.
    pub ctx: VcpuContext,
    /// Its virtual CPU interface's state (saved when it stops running).
    pub vif: VcpuIf,
    /// List registers holding an interrupt since the last flush (0: none
    /// in flight, and an exit need not read them).
    pub lrs_used: usize,
    /// List registers with a value written (to clear at the next flush).
    pub lrs_written: usize,
    /// Pre-allocated table pages for this vCPU's fault walks.
    pub cache: MemCache,
    /// The exit (`VcpuStats::exits_total`) of the last set/way operation
    /// of the current run of them (`hvcore::sysreg::set_way_needs_flush`).
    pub set_way_at: Option<u64>,
}

impl Vcpu {
    /// vCPU `id`, powered off, to run on `cpu`.
    pub fn new(id: usize, cpu: CpuId) -> Self {
        Self {
            id,
            cpu,
            power: Power::new(),
            requests: Requests::new(),
            stats: VcpuStats::default(),
            state: Mutex::new(VcpuState {
                ctx: VcpuContext::default(),
                vif: VcpuIf::default(),
                lrs_used: 0,
                lrs_written: 0,
                cache: MemCache::new(),
                set_way_at: None,
            }),
        }
    }

    /// Its index in the VM.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Its MPIDR as the guest sees it (`VMPIDR_EL2`): Aff0 = index, RES1
    /// bit 31.
    pub fn mpidr(&self) -> u64 {
        (1 << 31) | self.id as u64
    }

    /// Its CPU-local state, for its run loop (only its own CPU locks it).
    pub fn lock_state(&self) -> MutexGuard<'_, VcpuState> {
        self.state.lock()
    }
}
