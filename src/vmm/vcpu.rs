//! vCPUs: what other CPUs may see of one (power state, requests, counters), what only its own CPU touches (its context and memory cache), and its run loop.
//!
//! The run loop ([`run`]): the vCPU's context is loaded on its CPU, then
//! *pending requests → enter → exit handler → an [`ExitAction`]*, again
//! and again. An exit handler never ends the run or the VM itself: it
//! returns what should happen, and the loop (or, for the VM, the caller's
//! CPU loop) decides. On the fast path (the handler says *resume* and
//! nothing is pending) the guest is resumed straight from the exit, with no
//! return through [`crate::arch::context::enter`].

use hvcore::power::{Power, Start};
use hvcore::regs::GuestRegs;
use hvcore::request::{self, Requests};
use hvcore::verdict::VmEnd;
use log::debug;
use pgtable::MemCache;
use spin::Mutex;

use super::exit;
use super::stats::VcpuStats;
use super::vm::Vm;
use crate::arch::context::{self, Guest, VcpuContext};
use crate::arch::cpu;
use crate::arch::percpu::{self, CpuId};

/// Requests another CPU can make of a vCPU ([`Requests`] bits).
pub mod req {
    /// Its VM is stopping: leave the run loop.
    pub const STOP: u32 = 1 << 0;
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
    /// Pre-allocated table pages for this vCPU's fault walks.
    pub cache: MemCache,
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
                cache: MemCache::new(),
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
}

/// What an exit handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Run the guest again.
    Resume,
    /// The vCPU powered itself off (`CPU_OFF`).
    PowerOff,
    /// The VM ends.
    StopVm(VmEnd),
}

/// How a vCPU's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// It powered off; a `CPU_ON` may start it again.
    PoweredOff,
    /// Its VM ended.
    VmEnded,
}

/// A vCPU running on this CPU: what its exit handlers get.
pub struct Running<'a> {
    /// Its VM.
    pub vm: &'static Vm,
    /// The vCPU.
    pub vcpu: &'static Vcpu,
    /// Its state.
    pub state: &'a mut VcpuState,
    /// The action that made [`context::enter`] return.
    action: ExitAction,
}

impl Running<'_> {
    /// The guest's general registers, PC and PSTATE.
    pub fn regs(&mut self) -> &mut GuestRegs {
        &mut self.state.ctx.regs
    }
}

impl Guest for Running<'_> {
    fn context(&mut self) -> &mut VcpuContext {
        &mut self.state.ctx
    }

    fn exit(&mut self, index: u64) -> bool {
        self.vcpu.requests.exited();
        match exit::handle(self, index) {
            // Straight back in, unless a request holds it.
            ExitAction::Resume => self.vcpu.requests.try_enter(),
            action => {
                self.action = action;
                false
            }
        }
    }
}

/// Runs `vcpu` of `vm` on this CPU from reset at `start`, until it powers
/// off or its VM ends.
pub fn run(vm: &'static Vm, vcpu: &'static Vcpu, start: Start) -> RunEnd {
    let mut state = vcpu.state.lock();
    // Architectural reset: nothing of a previous run survives.
    state.ctx = VcpuContext::at_reset(start.entry, start.context);
    vm.controls.load(vcpu.mpidr());
    state.ctx.load();
    percpu::current().set_running(Some((vm.id, vcpu.id as u16)));
    debug!(
        "vm{}/vcpu{}: entering the guest at {:#x} (x0 {:#x})",
        vm.id, vcpu.id, start.entry, start.context
    );
    let end = loop {
        if !vcpu.requests.try_enter() {
            let requests = vcpu.requests.take();
            if requests & req::STOP != 0 {
                break RunEnd::VmEnded;
            }
            if requests & request::PAUSE != 0 {
                while vm.pause.is_paused() {
                    cpu::wait_for_event();
                }
            }
            continue;
        }
        let mut running = Running {
            vm,
            vcpu,
            state: &mut state,
            action: ExitAction::Resume,
        };
        context::enter(&mut running);
        match running.action {
            ExitAction::Resume => {}
            ExitAction::PowerOff => break RunEnd::PoweredOff,
            ExitAction::StopVm(end) => {
                vm.stop(end);
                break RunEnd::VmEnded;
            }
        }
    };
    state.ctx.save();
    percpu::current().set_running(None);
    if end == RunEnd::PoweredOff {
        // Last: a CPU_ON may now start it again (with a fresh context).
        vcpu.power.off();
    }
    end
}
