//! Per-CPU state indexed by logical CPU id (the boot CPU is 0, the others follow in device-tree order), reached through `TPIDR_EL2`.
//!
//! `TPIDR_EL2` holds the address of the calling CPU's [`PerCpu`]. Its first
//! word is the context of the vCPU the CPU runs (or last ran): the
//! exception vectors save a guest's registers straight into it, with one
//! load from `TPIDR_EL2` and one from there.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use aarch64_cpu::registers::{Readable, Writeable, MPIDR_EL1, TPIDR_EL2};

pub use hvcore::platform::MAX_CPUS;

/// Size of each CPU's EL2 stack.
pub const STACK_SIZE: usize = 64 * 1024;

/// A logical CPU id: an index into the per-CPU table, below [`MAX_CPUS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuId(usize);

impl CpuId {
    /// The boot CPU.
    pub const BOOT: Self = Self(0);

    /// Wraps an index below [`MAX_CPUS`] (checked: a larger one is clamped
    /// to the last CPU, which a caller's bug would then share).
    pub const fn new(id: usize) -> Self {
        Self(if id < MAX_CPUS { id } else { MAX_CPUS - 1 })
    }

    /// The index into the per-CPU table.
    pub const fn index(self) -> usize {
        self.0
    }

    /// Whether this is the boot CPU.
    pub const fn is_boot(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// No vCPU runs here ([`PerCpu::running`]).
const NO_VCPU: u32 = u32::MAX;

/// State of one physical CPU.
#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    /// The context of the vCPU this CPU runs or last ran (null before the
    /// first; a `context::VcpuContext`): `vectors.S` reads it at offset 0.
    current: AtomicPtr<u8>,
    /// Affinity fields of the CPU's MPIDR (as the device tree lists them).
    mpidr: AtomicU64,
    /// Set by the CPU itself once it runs Rust code at EL2.
    online: AtomicBool,
    /// Which vCPU runs here: VM id in the high half, vCPU index in the
    /// low, or [`NO_VCPU`].
    running: AtomicU32,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            current: AtomicPtr::new(core::ptr::null_mut()),
            mpidr: AtomicU64::new(0),
            online: AtomicBool::new(false),
            running: AtomicU32::new(NO_VCPU),
        }
    }

    /// The MPIDR affinity value the boot CPU recorded for this CPU.
    pub fn mpidr(&self) -> u64 {
        self.mpidr.load(Ordering::Acquire)
    }

    /// Records the MPIDR affinity value (before the CPU is started).
    pub fn set_mpidr(&self, mpidr: u64) {
        self.mpidr.store(mpidr, Ordering::Release);
    }

    /// Whether the CPU has announced itself.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Announces the calling CPU (called by the CPU itself).
    pub fn mark_online(&self) {
        self.online.store(true, Ordering::Release);
    }

    /// The vCPU running here, as `(vm, vcpu)`.
    pub fn running(&self) -> Option<(u16, u16)> {
        let v = self.running.load(Ordering::Relaxed);
        (v != NO_VCPU).then_some(((v >> 16) as u16, v as u16))
    }

    /// Records which vCPU runs here (`None`: none).
    pub fn set_running(&self, vcpu: Option<(u16, u16)>) {
        let v = vcpu.map_or(NO_VCPU, |(vm, id)| u32::from(vm) << 16 | u32::from(id));
        self.running.store(v, Ordering::Relaxed);
    }

    /// Makes `ctx` this CPU's current vCPU context (the vectors save into
    /// it; `context::enter` is the only caller).
    pub(super) fn set_current(&self, ctx: *mut u8) {
        self.current.store(ctx, Ordering::Relaxed);
    }
}

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// Points `TPIDR_EL2` at CPU `id`'s state: the first thing every CPU does.
pub(super) fn install(id: CpuId) {
    TPIDR_EL2.set(&CPUS[id.index()] as *const PerCpu as u64);
}

/// The state of CPU `id`.
pub fn get(id: CpuId) -> &'static PerCpu {
    &CPUS[id.index()]
}

/// The logical id of the calling CPU (from `TPIDR_EL2`; 0 if it does not
/// point into the table, as before [`install`]).
pub fn current_id() -> CpuId {
    let base = CPUS.as_ptr() as u64;
    let size = core::mem::size_of::<PerCpu>() as u64;
    let offset = TPIDR_EL2.get().wrapping_sub(base);
    CpuId::new(
        if offset.is_multiple_of(size) && offset / size < MAX_CPUS as u64 {
            (offset / size) as usize
        } else {
            0
        },
    )
}

/// The state of the calling CPU.
pub fn current() -> &'static PerCpu {
    get(current_id())
}

/// All logical CPU ids, whether started or not.
pub fn all() -> impl Iterator<Item = CpuId> {
    (0..MAX_CPUS).map(CpuId)
}

/// The affinity fields (Aff3..Aff0) of the calling CPU's MPIDR, in the
/// layout the device tree's `/cpus/cpu@N/reg` and PSCI `CPU_ON` use.
pub fn current_mpidr() -> u64 {
    let mpidr = MPIDR_EL1.get();
    [
        MPIDR_EL1::Aff3,
        MPIDR_EL1::Aff2,
        MPIDR_EL1::Aff1,
        MPIDR_EL1::Aff0,
    ]
    .iter()
    .fold(0, |acc, field| acc | (mpidr & (field.mask << field.shift)))
}
