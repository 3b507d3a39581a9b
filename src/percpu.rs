//! Per-CPU state indexed by logical CPU id: the boot CPU is 0, the others
//! are numbered in device-tree order. Later, each physical CPU runs at most
//! one pinned vCPU, whose state will hang off its [`PerCpu`].

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aarch64_cpu::registers::{Readable, MPIDR_EL1, TPIDR_EL2};

/// How many CPUs the hypervisor supports (stacks are reserved for each).
pub const MAX_CPUS: usize = 8;

/// Size of each CPU's EL2 stack.
pub const STACK_SIZE: usize = 64 * 1024;

/// A logical CPU id: an index into the per-CPU table, below [`MAX_CPUS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuId(usize);

impl CpuId {
    /// The boot CPU.
    pub const BOOT: Self = Self(0);

    /// Wraps an index. The entry code guarantees `id < MAX_CPUS` before any
    /// Rust runs; other callers get it from [`all`].
    pub const fn new(id: usize) -> Self {
        Self(id)
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

/// State of one physical CPU.
#[derive(Debug)]
pub struct PerCpu {
    /// Affinity fields of the CPU's MPIDR (as the device tree lists them).
    mpidr: AtomicU64,
    /// Set by the CPU itself once it runs Rust code at EL2.
    online: AtomicBool,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            mpidr: AtomicU64::new(0),
            online: AtomicBool::new(false),
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
}

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// The state of CPU `id`.
pub fn get(id: CpuId) -> &'static PerCpu {
    &CPUS[id.index()]
}

/// The logical id of the calling CPU (kept in `TPIDR_EL2` from entry on).
pub fn current_id() -> CpuId {
    // Clamp: a fault before boot.rs sets TPIDR_EL2 must not index out of
    // bounds while being reported.
    CpuId((TPIDR_EL2.get() as usize).min(MAX_CPUS - 1))
}

/// The state of the calling CPU.
pub fn current() -> &'static PerCpu {
    get(current_id())
}

/// All logical CPU ids, whether started or not.
pub fn all() -> impl Iterator<Item = CpuId> {
    (0..MAX_CPUS).map(CpuId)
}

/// How many CPUs are online.
pub fn online_count() -> usize {
    all().filter(|id| get(*id).is_online()).count()
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

unsafe extern "C" {
    /// The per-CPU stacks (`boot/entry.S`): `MAX_CPUS` x `STACK_SIZE` bytes.
    static boot_stacks: u8;
}

/// The top (initial stack pointer) of CPU `id`'s stack.
pub fn stack_top(id: CpuId) -> u64 {
    // Only the address of the symbol is taken, never its contents.
    let base = (&raw const boot_stacks) as u64;
    base + ((id.index() + 1) * STACK_SIZE) as u64
}
