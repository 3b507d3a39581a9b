//! vCPUs: their power state (PSCI), their entry into the guest, and the idle loop of a CPU waiting for its vCPU.
//!
//! vCPU N is pinned to physical CPU N. Its general registers live in the
//! trap frame on that CPU's EL2 stack while it runs; its EL1 system
//! registers live in the CPU (see `context.rs`).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use hvcore::psci::{ret, AffinityState};
use log::{debug, info};
use pgtable::MemCache;
use spin::Mutex;

use super::context::{El1Context, SPSR_EL1H_MASKED};
use super::machine::{self, Vm, RAM_IPA};
use super::{migrate, pause};
use crate::exception::TrapFrame;
use crate::percpu::{self, CpuId};

const OFF: u8 = AffinityState::Off as u8;
const ON_PENDING: u8 = AffinityState::OnPending as u8;
const ON: u8 = AffinityState::On as u8;
/// `CPU_ON` is filling in the entry point: seen as "on pending" by the
/// guest, but not yet by the target CPU.
const CLAIMED: u8 = 3;

/// Table pages the fault path may need for one mapping (one table per
/// level below the root), topped up before the stage-2 lock is taken.
pub const FAULT_CACHE_PAGES: usize = 3;

/// One vCPU.
#[derive(Debug)]
pub struct Vcpu {
    id: usize,
    state: AtomicU8,
    entry: AtomicU64,
    context: AtomicU64,
    /// Its CPU runs guest code (see `pause.rs` for who reads it and why).
    in_guest: AtomicBool,
    /// Pre-allocated table pages for this vCPU's fault walks. Only its own
    /// CPU takes the lock, so it is never contended.
    pub cache: Mutex<MemCache>,
}

impl Vcpu {
    /// vCPU `id`, powered off.
    pub fn new(id: usize) -> Self {
        Self {
            id,
            state: AtomicU8::new(OFF),
            entry: AtomicU64::new(0),
            context: AtomicU64::new(0),
            in_guest: AtomicBool::new(false),
            cache: Mutex::new(MemCache::new()),
        }
    }

    /// Whether it is on (started, not off).
    pub fn is_on(&self) -> bool {
        self.state.load(Ordering::Acquire) == ON
    }

    /// Its index in the VM (and the CPU it is pinned to).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Whether its CPU runs guest code now.
    pub fn in_guest(&self) -> bool {
        self.in_guest.load(Ordering::SeqCst)
    }

    /// Records entering (before the check for a pause) or leaving the guest.
    pub fn set_in_guest(&self, in_guest: bool) {
        self.in_guest.store(in_guest, Ordering::SeqCst);
    }

    /// Its MPIDR as the guest sees it (`VMPIDR_EL2`): Aff0 = id, RES1 bit 31.
    pub fn mpidr(&self) -> u64 {
        (1 << 31) | self.id as u64
    }

    /// Its PSCI affinity state.
    pub fn state(&self) -> AffinityState {
        match self.state.load(Ordering::Acquire) {
            ON => AffinityState::On,
            ON_PENDING | CLAIMED => AffinityState::OnPending,
            _ => AffinityState::Off,
        }
    }
}

/// The vCPU a guest names by `mpidr` (Aff0 = vCPU id, higher levels 0).
pub fn by_mpidr(vm: &Vm, mpidr: u64) -> Option<&Vcpu> {
    let id = usize::try_from(mpidr & 0xff_00ff_ffff).ok()?;
    vm.vcpus[..vm.nr_vcpus].get(id)
}

/// Starts vCPU 0 on this (the boot) CPU at the image's first byte, with
/// `x0` = the device tree. Never returns: the CPU now runs the guest.
pub fn run_boot_vcpu(vm: &'static Vm) -> ! {
    vm.vcpus[0].state.store(ON, Ordering::Release);
    run(vm, 0, RAM_IPA, vm.dtb_ipa)
}

/// PSCI `CPU_ON`: asks `target`'s CPU to start it at `entry` with `x0` =
/// `context`. Returns the PSCI status.
pub fn cpu_on(vm: &Vm, target: u64, entry: u64, context: u64) -> i64 {
    let Some(vcpu) = by_mpidr(vm, target) else {
        return ret::INVALID_PARAMETERS;
    };
    if !vm.ram().contains(entry) {
        return ret::INVALID_ADDRESS;
    }
    match vcpu
        .state
        .compare_exchange(OFF, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => {
            vcpu.entry.store(entry, Ordering::Relaxed);
            vcpu.context.store(context, Ordering::Relaxed);
            // Release: the target CPU sees entry and context once it sees
            // the vCPU pending (it takes it with acquire).
            vcpu.state.store(ON_PENDING, Ordering::Release);
            // Visible before the event wakes the target (see `pause::resume`).
            aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
            aarch64_cpu::asm::sev();
            ret::SUCCESS
        }
        Err(ON_PENDING | CLAIMED) => ret::ON_PENDING,
        Err(_) => ret::ALREADY_ON,
    }
}

/// PSCI `AFFINITY_INFO` at level 0.
pub fn affinity_info(vm: &Vm, target: u64, lowest_level: u64) -> i64 {
    match by_mpidr(vm, target) {
        Some(vcpu) if lowest_level == 0 => vcpu.state() as i64,
        _ => ret::INVALID_PARAMETERS,
    }
}

/// PSCI `CPU_OFF` for the calling vCPU: it stops, and this CPU waits for
/// the next `CPU_ON`. Never returns to the caller.
pub fn cpu_off(vm: &'static Vm) -> ! {
    let cpu = percpu::current_id();
    info!("vm{}/vcpu{cpu}: CPU_OFF", vm.id);
    vm.vcpus[cpu.index()].state.store(OFF, Ordering::Release);
    idle(cpu)
}

/// What a physical CPU does while its vCPU is off: wait for `CPU_ON`.
pub fn idle(cpu: CpuId) -> ! {
    loop {
        if let Some(vm) = machine::get() {
            // A CPU with no vCPU may have the VM's migration to run.
            migrate::run_if_mine(vm, cpu);
            if let Some(vcpu) = vm.vcpus[..vm.nr_vcpus].get(cpu.index()) {
                if vcpu
                    .state
                    .compare_exchange(ON_PENDING, ON, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let entry = vcpu.entry.load(Ordering::Relaxed);
                    let context = vcpu.context.load(Ordering::Relaxed);
                    run(vm, cpu.index(), entry, context);
                }
            }
        }
        aarch64_cpu::asm::wfe();
    }
}

/// Enters the guest as vCPU `id` at `pc` with `x0` = `arg`, from reset.
fn run(vm: &'static Vm, id: usize, pc: u64, arg: u64) -> ! {
    let vcpu = &vm.vcpus[id];
    vm.controls.load(vcpu.mpidr());
    El1Context::reset().load();
    debug!(
        "vm{}/vcpu{id}: entering the guest at {pc:#x} (x0 {arg:#x})",
        vm.id
    );
    let frame = TrapFrame::entry(pc, SPSR_EL1H_MASKED, arg);
    let top = percpu::stack_top(CpuId::new(id));
    pause::before_entry(vm, vcpu);
    // SAFETY: `frame` is a complete register state for EL1h at `pc` in the
    // VM whose controls were just loaded; `top` is this CPU's own stack
    // top, and nothing on that stack is needed any more (this function
    // never returns): `enter_guest` moves the frame there and `eret`s.
    unsafe { enter_guest(&frame, top) }
}

unsafe extern "C" {
    /// `boot/vectors.S`: copies `frame` to the top of the stack at `top`,
    /// sets SP below it and returns from the exception into it.
    fn enter_guest(frame: &TrapFrame, top: u64) -> !;
}
