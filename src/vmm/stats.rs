//! What a vCPU did (exits by reason, faults by kind and level, mappings by size, re-faults), counted by its own CPU, and the VM's sum of them.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hvcore::guest_abort::AbortKind;
use hvcore::s2fault::Served;
use log::info;
use pgtable::{Action, Outcome, StatsSnapshot};

/// Why the guest exited to EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// `HVC`: a hypercall.
    Hvc,
    /// `SMC`: trapped, answered "not supported".
    Smc,
    /// A data abort (stage-2 fault or MMIO).
    DataAbort,
    /// An instruction abort (stage-2 fault).
    InstructionAbort,
    /// A physical interrupt (a kick, a timer, the maintenance interrupt).
    Irq,
    /// `WFI` (or `WFE`).
    Wfx,
    /// A trapped system register (an SGI).
    SysReg,
    /// Anything else (refused with an injected exception).
    Other,
}

impl ExitReason {
    const ALL: [ExitReason; 8] = [
        ExitReason::Hvc,
        ExitReason::Smc,
        ExitReason::DataAbort,
        ExitReason::InstructionAbort,
        ExitReason::Irq,
        ExitReason::Wfx,
        ExitReason::SysReg,
        ExitReason::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            ExitReason::Hvc => "hvc",
            ExitReason::Smc => "smc",
            ExitReason::DataAbort => "data abort",
            ExitReason::InstructionAbort => "instruction abort",
            ExitReason::Irq => "irq",
            ExitReason::Wfx => "wfi",
            ExitReason::SysReg => "sysreg",
            ExitReason::Other => "other",
        }
    }
}

/// Fault kinds counted separately.
const FAULT_KINDS: [&str; 4] = ["translation", "permission", "access flag", "other"];

fn kind_index(kind: AbortKind) -> usize {
    match kind {
        AbortKind::Translation => 0,
        AbortKind::Permission => 1,
        AbortKind::AccessFlag => 2,
        _ => 3,
    }
}

/// One vCPU's counters. Only its own CPU writes them (a load and a store,
/// no read-modify-write); anyone may read them, and a VM's figures are the
/// sum over its vCPUs.
#[derive(Debug, Default)]
pub struct VcpuStats {
    exits: [AtomicU64; 8],
    /// Faults by kind, then by level (0-3; level-less faults count at 0).
    faults: [[AtomicU64; 4]; 4],
    /// Leaves installed by fault walks, by level.
    mapped: [AtomicU64; 4],
    /// Fault walks that found the work done or the entry changed by
    /// another vCPU, and returned to the guest.
    refaults: AtomicU64,
    mmio: AtomicU64,
    injected: AtomicU64,
    /// Write faults that marked a page dirty.
    marked_dirty: AtomicU64,
}

/// Adds `n` to a counter only this CPU writes.
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

impl VcpuStats {
    /// Counts an exit.
    pub fn exit(&self, reason: ExitReason) {
        bump(&self.exits[reason as usize]);
    }

    /// Exits of every reason so far.
    pub fn exits_total(&self) -> u64 {
        self.exits.iter().map(|n| n.load(Relaxed)).sum()
    }

    /// Counts a stage-2 fault.
    pub fn fault(&self, kind: AbortKind, level: Option<u8>) {
        let level = usize::from(level.unwrap_or(0)).min(3);
        bump(&self.faults[kind_index(kind)][level]);
    }

    /// Counts what a fault walk did: leaves installed, pages marked dirty.
    pub fn served(&self, served: &Served) {
        for (counter, &n) in self.mapped.iter().zip(&served.mapped) {
            if n != 0 {
                add(counter, n);
            }
        }
        if served.marked {
            bump(&self.marked_dirty);
        }
    }

    /// Counts a fault walk that returned to the guest on a lost race.
    pub fn refault(&self) {
        bump(&self.refaults);
    }

    /// Counts an emulated MMIO access.
    pub fn mmio(&self) {
        bump(&self.mmio);
    }

    /// Counts an exception injected into the guest.
    pub fn injected(&self) {
        bump(&self.injected);
    }
}

/// The sum of a VM's vCPU counters.
#[derive(Debug, Default)]
pub struct VmStats {
    exits: [u64; 8],
    faults: [[u64; 4]; 4],
    mapped: [u64; 4],
    refaults: u64,
    mmio: u64,
    injected: u64,
    marked_dirty: u64,
}

impl VmStats {
    /// Sums `vcpus`' counters.
    pub fn sum<'a>(vcpus: impl IntoIterator<Item = &'a VcpuStats>) -> Self {
        let mut s = Self::default();
        let get = |c: &AtomicU64| c.load(Relaxed);
        for v in vcpus {
            for (t, c) in s.exits.iter_mut().zip(&v.exits) {
                *t += get(c);
            }
            for (tk, ck) in s.faults.iter_mut().zip(&v.faults) {
                for (t, c) in tk.iter_mut().zip(ck) {
                    *t += get(c);
                }
            }
            for (t, c) in s.mapped.iter_mut().zip(&v.mapped) {
                *t += get(c);
            }
            s.refaults += get(&v.refaults);
            s.mmio += get(&v.mmio);
            s.injected += get(&v.injected);
            s.marked_dirty += get(&v.marked_dirty);
        }
        s
    }

    /// Logs everything, with the stage-2 walker's own counters and the
    /// kicks the VM's pauses sent.
    pub fn log(&self, vm: u16, walker: &StatsSnapshot, kicks: u64) {
        let mut line = heapless_line();
        for reason in ExitReason::ALL {
            let n = self.exits[reason as usize];
            line.push(format_args!("{} {n}, ", reason.name()));
        }
        info!(
            "vm{vm}: stats: exits: {}; kicks sent {kicks}",
            line.trimmed()
        );
        for (k, name) in FAULT_KINDS.iter().enumerate() {
            let l = &self.faults[k];
            info!(
                "vm{vm}: stats: {name} faults: L0 {}, L1 {}, L2 {}, L3 {}",
                l[0], l[1], l[2], l[3]
            );
        }
        info!(
            "vm{vm}: stats: mappings: 1G {}, 2M {}, 4K {}",
            self.mapped[1], self.mapped[2], self.mapped[3]
        );
        info!(
            "vm{vm}: stats: walker: lost races {} (fault-mode exits {}, retries {}), re-faults {}, table pages {}",
            walker.lost_races(),
            walker.count(Outcome::LostRace, Action::Exit),
            walker.retries(),
            self.refaults,
            walker.table_pages + 1
        );
        info!(
            "vm{vm}: stats: mmio accesses {}, aborts injected {}, pages marked dirty {}",
            self.mmio, self.injected, self.marked_dirty
        );
    }
}

/// A fixed buffer for building one log line without allocating.
struct Line {
    buf: [u8; 160],
    len: usize,
}

fn heapless_line() -> Line {
    Line {
        buf: [0; 160],
        len: 0,
    }
}

impl Line {
    fn push(&mut self, args: core::fmt::Arguments<'_>) {
        let _ = core::fmt::write(self, args);
    }

    fn trimmed(&self) -> &str {
        let s = core::str::from_utf8(&self.buf[..self.len]).unwrap_or("");
        s.trim_end_matches([',', ' '])
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
