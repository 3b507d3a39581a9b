//! A GICv3 driver for a guest: the distributor set up as Linux does it, each vCPU's redistributor and system-register CPU interface, SGIs, and the interrupt state a scenario checks.
//!
//! Found from the device tree (`dt::Gic`), never at a fixed address. The
//! boot vCPU calls [`init`] before starting the others; every other vCPU
//! calls [`init_cpu`] first thing.
//!
//! Distributor ([`init`], as Linux's `gic_dist_init`): disabled (`CTLR` =
//! 0, then `RWP` awaited), every SPI made group 1, level-sensitive, priority
//! [`DEFAULT_PRIORITY`], inactive and disabled; enabled again with affinity
//! routing and group 1 (`ARE | EnableGrp1`: with `DS` = 1 the guest sees one
//! security state); every SPI routed to the boot vCPU (`IROUTER`).
//!
//! Redistributor ([`init_cpu`]): the one whose `GICR_TYPER.Affinity` is this
//! vCPU's MPIDR, found by walking each region's frames (`Last` ends a
//! region); woken (`GICR_WAKER.ProcessorSleep` cleared, `ChildrenAsleep`
//! awaited); in its SGI frame SGIs and PPIs are group 1 at the default
//! priority, PPIs level-sensitive, all inactive, SGIs enabled and PPIs
//! disabled (a scenario enables the PPIs it uses). CPU interface:
//! `ICC_SRE_EL1.SRE`, `ICC_PMR_EL1` = [`DEFAULT_PMR`], `ICC_BPR1_EL1` = 0
//! (every implemented priority bit is group priority, so any higher
//! priority preempts), `ICC_CTLR_EL1.EOImode` = 0 (an `ICC_EOIR1_EL1` write
//! both drops the priority and deactivates), `ICC_IGRPEN1_EL1` = 1.
//!
//! Every register access is one plain `ldr`/`str` (no writeback, no pair),
//! so a trapping hypervisor always gets a valid syndrome: 32-bit, or 64-bit
//! for `GICR_TYPER` and `GICD_IROUTER<n>` as Linux makes them.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::{self, MAX_CPUS};
use crate::dt::{Platform, Region};
use crate::fail;
use crate::sgi;

/// The priority every interrupt starts with (Linux's `GICD_INT_DEF_PRI`).
pub const DEFAULT_PRIORITY: u8 = 0xa0;
/// The priority mask the CPU interface starts with (Linux's
/// `DEFAULT_PMR_VALUE`): priorities 0xf0 and below (numerically above) are masked.
pub const DEFAULT_PMR: u8 = 0xf0;
/// `ICC_IAR1_EL1` values at and above this are special (1023: nothing pending).
pub const SPECIAL: u32 = 1020;
/// What `ICC_IAR1_EL1` reads when no interrupt is pending.
pub const SPURIOUS: u32 = 1023;

/// Distributor registers (offsets in its 64 KiB frame).
mod gicd {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const ICFGR: u64 = 0x0c00;
    pub const IROUTER: u64 = 0x6000;
    pub const PIDR2: u64 = 0xffe8;

    pub const CTLR_RWP: u32 = 1 << 31;
    pub const CTLR_DS: u32 = 1 << 6;
    pub const CTLR_ARE: u32 = 1 << 4;
    pub const CTLR_ENABLE_GRP1: u32 = 1 << 1;
}

/// Redistributor registers: the control frame (RD_base), then the SGI and
/// PPI frame 64 KiB on (SGI_base), whose layout mirrors the distributor's
/// first 32 INTIDs.
mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const SGI_BASE: u64 = 0x1_0000;
    pub const ICFGR1: u64 = 0x0c04;

    pub const CTLR_RWP: u32 = 1 << 3;
    pub const TYPER_VLPIS: u64 = 1 << 1;
    pub const TYPER_LAST: u64 = 1 << 4;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
    /// A redistributor: RD_base and SGI_base.
    pub const FRAMES: u64 = 0x2_0000;
    /// With virtual LPIs: two more frames.
    pub const FRAMES_VLPI: u64 = 0x4_0000;
}

/// How long a GIC write may take to settle, in milliseconds.
const SETTLE_MS: u64 = 1000;

/// A 64 KiB register frame of the GIC the device tree names.
#[derive(Clone, Copy)]
struct Frame(u64);

impl Frame {
    fn addr(self, offset: u64) -> u64 {
        assert!(offset < 0x1_0000, "GIC register offset {offset:#x}");
        self.0 + offset
    }

    fn read32(self, offset: u64) -> u32 {
        let addr = self.addr(offset);
        let value: u32;
        // SAFETY: `addr` is a register in a GIC frame the device tree lists
        // (see `Frame`'s constructors), mapped as a device by the identity
        // map or reached with the MMU off: a read has no effect on memory.
        unsafe {
            asm!("ldr {0:w}, [{1}]", out(reg) value, in(reg) addr, options(nostack, preserves_flags))
        };
        value
    }

    fn write32(self, offset: u64, value: u32) {
        let addr = self.addr(offset);
        // SAFETY: as for `read32`: a GIC register, which changes interrupt
        // state only, never memory Rust uses.
        unsafe {
            asm!("str {0:w}, [{1}]", in(reg) value, in(reg) addr, options(nostack, preserves_flags))
        };
    }

    fn read64(self, offset: u64) -> u64 {
        let addr = self.addr(offset);
        let value: u64;
        // SAFETY: as for `read32`, a 64-bit register (8-byte aligned).
        unsafe {
            asm!("ldr {0}, [{1}]", out(reg) value, in(reg) addr, options(nostack, preserves_flags))
        };
        value
    }

    fn write64(self, offset: u64, value: u64) {
        let addr = self.addr(offset);
        // SAFETY: as for `write32`, a 64-bit register (8-byte aligned).
        unsafe {
            asm!("str {0}, [{1}]", in(reg) value, in(reg) addr, options(nostack, preserves_flags))
        };
    }

    /// The bit of `intid` in a one-bit-per-interrupt register array at `reg`.
    fn bit_reg(intid: u32, reg: u64) -> (u64, u32) {
        (reg + u64::from(intid / 32) * 4, 1 << (intid % 32))
    }
}

/// The distributor frame: 0 until [`init`].
static DISTRIBUTOR: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const NONE: AtomicU64 = AtomicU64::new(0);
/// Each vCPU's redistributor (RD_base), by `MPIDR.Aff0`: 0 until its
/// [`init_cpu`].
static REDISTRIBUTORS: [AtomicU64; MAX_CPUS] = [NONE; MAX_CPUS];

fn distributor() -> Frame {
    match DISTRIBUTOR.load(Ordering::Acquire) {
        0 => fail!("GIC used before gic::init"),
        base => Frame(base),
    }
}

/// This vCPU's redistributor control frame.
fn rd() -> Frame {
    match REDISTRIBUTORS[cpu::id()].load(Ordering::Relaxed) {
        0 => fail!("GIC used on vcpu{} before its gic::init_cpu", cpu::id()),
        base => Frame(base),
    }
}

/// This vCPU's SGI and PPI frame.
fn sgi_frame() -> Frame {
    Frame(rd().0 + gicr::SGI_BASE)
}

/// Where the registers of `intid` are: this vCPU's SGI frame for SGIs and
/// PPIs, the distributor for SPIs.
fn frame_of(intid: u32) -> Frame {
    if intid < 32 {
        sgi_frame()
    } else {
        distributor()
    }
}

fn wait_settled(what: &str, settled: impl Fn() -> bool) {
    if !cpu::wait_until(SETTLE_MS, settled) {
        fail!("GIC: {what} still pending after {SETTLE_MS} ms");
    }
}

fn wait_distributor() {
    let d = distributor();
    wait_settled("GICD_CTLR.RWP", || {
        d.read32(gicd::CTLR) & gicd::CTLR_RWP == 0
    });
}

fn wait_redistributor() {
    let r = rd();
    wait_settled("GICR_CTLR.RWP", || {
        r.read32(gicr::CTLR) & gicr::CTLR_RWP == 0
    });
}

/// What [`init`] found.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// `GICD_TYPER`.
    pub typer: u32,
    /// INTIDs the distributor handles (32 × (`ITLinesNumber` + 1), at most 1020).
    pub lines: u32,
    /// `GICD_CTLR` once enabled.
    pub ctlr: u32,
    /// Priority bits the CPU interface implements (`ICC_CTLR_EL1.PRIbits` + 1).
    pub priority_bits: u32,
}

/// Sets up the distributor, then this vCPU's redistributor and CPU
/// interface ([`init_cpu`]). On the boot vCPU, before starting the others.
pub fn init(p: &Platform<'_>) -> Info {
    let Some(gic) = p.gic else {
        fail!("the device tree has no GICv3 (arm,gic-v3)")
    };
    let d = Frame(gic.distributor.base);
    let arch = (d.read32(gicd::PIDR2) >> 4) & 0xf;
    if !(3..=4).contains(&arch) {
        fail!(
            "GIC at {:#x}: GICD_PIDR2.ArchRev {arch}, not a GICv3 or GICv4",
            gic.distributor.base
        );
    }
    DISTRIBUTOR.store(gic.distributor.base, Ordering::Release);

    d.write32(gicd::CTLR, 0);
    wait_distributor();
    let typer = d.read32(gicd::TYPER);
    let lines = (32 * ((typer & 0x1f) + 1)).min(1020);
    for first in (32..lines).step_by(32) {
        let word = u64::from(first / 32) * 4;
        d.write32(gicd::IGROUPR + word, !0);
        d.write32(gicd::ICACTIVER + word, !0);
        d.write32(gicd::ICENABLER + word, !0);
    }
    for first in (32..lines).step_by(16) {
        d.write32(gicd::ICFGR + u64::from(first / 16) * 4, 0);
    }
    let priorities = u32::from_le_bytes([DEFAULT_PRIORITY; 4]);
    for first in (32..lines).step_by(4) {
        d.write32(gicd::IPRIORITYR + u64::from(first), priorities);
    }
    wait_distributor();
    d.write32(gicd::CTLR, gicd::CTLR_ARE | gicd::CTLR_ENABLE_GRP1);
    wait_distributor();
    let ctlr = d.read32(gicd::CTLR);
    if ctlr & gicd::CTLR_ARE == 0 {
        fail!("GICD_CTLR {ctlr:#x} after enabling: affinity routing (ARE) is off");
    }
    let route = sgi::irouter(cpu::mpidr());
    for intid in 32..lines {
        d.write64(gicd::IROUTER + 8 * u64::from(intid), route);
    }
    init_cpu();
    Info {
        typer,
        lines,
        ctlr,
        priority_bits: priority_bits(),
    }
}

/// Finds this vCPU's redistributor: the frame whose `GICR_TYPER.Affinity`
/// is its MPIDR's, walking each region until a frame says `Last`.
fn find_redistributor(regions: &[Region], stride: Option<u64>) -> Option<u64> {
    let me = sgi::affinity(cpu::mpidr());
    for region in regions {
        let mut base = region.base;
        while base + gicr::FRAMES <= region.end() {
            let typer = Frame(base).read64(gicr::TYPER);
            if (typer >> 32) as u32 == me {
                return Some(base);
            }
            if typer & gicr::TYPER_LAST != 0 {
                break;
            }
            base += stride.unwrap_or(if typer & gicr::TYPER_VLPIS != 0 {
                gicr::FRAMES_VLPI
            } else {
                gicr::FRAMES
            });
        }
    }
    None
}

/// Sets up this vCPU's redistributor and CPU interface (see the module
/// doc); returns the redistributor's address. Every vCPU but the boot one
/// (which [`init`] covers), before using interrupts.
pub fn init_cpu() -> u64 {
    let p = crate::start::platform();
    let Some(gic) = p.gic else {
        fail!("the device tree has no GICv3 (arm,gic-v3)")
    };
    let Some(base) = find_redistributor(gic.redistributors(), gic.redistributor_stride) else {
        fail!(
            "vcpu{}: no redistributor with affinity {:#x} (MPIDR {:#x})",
            cpu::id(),
            sgi::affinity(cpu::mpidr()),
            cpu::mpidr()
        );
    };
    REDISTRIBUTORS[cpu::id()].store(base, Ordering::Relaxed);
    let r = Frame(base);
    let waker = r.read32(gicr::WAKER);
    r.write32(gicr::WAKER, waker & !gicr::WAKER_PROCESSOR_SLEEP);
    wait_settled("GICR_WAKER.ChildrenAsleep", || {
        r.read32(gicr::WAKER) & gicr::WAKER_CHILDREN_ASLEEP == 0
    });

    let s = sgi_frame();
    s.write32(gicd::IGROUPR, !0);
    s.write32(gicd::ICACTIVER, !0);
    s.write32(gicd::ICENABLER, 0xffff_0000);
    s.write32(gicd::ISENABLER, 0x0000_ffff);
    s.write32(gicr::ICFGR1, 0);
    let priorities = u32::from_le_bytes([DEFAULT_PRIORITY; 4]);
    for first in (0..32).step_by(4) {
        s.write32(gicd::IPRIORITYR + first, priorities);
    }
    wait_redistributor();

    // SAFETY: the system-register interface of this vCPU's own CPU
    // interface (GICv3, which the distributor's ID confirmed): enabling it
    // and setting its mask, binary point, EOI mode and group enable only
    // change which interrupts this vCPU takes.
    unsafe {
        asm!(
            "mrs {t}, icc_sre_el1",
            "orr {t}, {t}, #1",
            "msr icc_sre_el1, {t}",
            "isb",
            t = out(reg) _,
            options(nomem, nostack, preserves_flags),
        );
    }
    let sre: u64;
    // SAFETY: reading a CPU interface register has no side effect.
    unsafe { asm!("mrs {}, icc_sre_el1", out(reg) sre, options(nomem, nostack, preserves_flags)) };
    if sre & 1 == 0 {
        fail!(
            "vcpu{}: ICC_SRE_EL1.SRE stays 0: no system-register GIC interface",
            cpu::id()
        );
    }
    set_pmr(DEFAULT_PMR);
    // SAFETY: as above: the binary point, the EOI mode (0: EOIR drops the
    // priority and deactivates) and the group 1 enable of this vCPU's CPU
    // interface.
    unsafe {
        asm!(
            "msr icc_bpr1_el1, xzr",
            "mrs {t}, icc_ctlr_el1",
            "bic {t}, {t}, #2",
            "msr icc_ctlr_el1, {t}",
            "mov {t}, #1",
            "msr icc_igrpen1_el1, {t}",
            "isb",
            t = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
    base
}

/// `GICD_TYPER`: one 32-bit read of the distributor (the `gicd-read`
/// benchmark's operation).
#[inline(never)]
pub fn distributor_typer() -> u32 {
    distributor().read32(gicd::TYPER)
}

/// `GICD_CTLR`.
pub fn distributor_ctlr() -> u32 {
    distributor().read32(gicd::CTLR)
}

/// Whether the distributor reports one security state (`GICD_CTLR.DS`).
pub fn single_security_state() -> bool {
    distributor_ctlr() & gicd::CTLR_DS != 0
}

/// Enables `intid` (an SGI or PPI of this vCPU, or an SPI).
pub fn enable(intid: u32) {
    let (reg, bit) = Frame::bit_reg(intid, gicd::ISENABLER);
    frame_of(intid).write32(reg, bit);
}

/// Disables `intid`, and waits until the GIC no longer signals it.
pub fn disable(intid: u32) {
    let (reg, bit) = Frame::bit_reg(intid, gicd::ICENABLER);
    frame_of(intid).write32(reg, bit);
    if intid < 32 {
        wait_redistributor();
    } else {
        wait_distributor();
    }
}

/// Whether `intid` is enabled.
pub fn is_enabled(intid: u32) -> bool {
    let (reg, bit) = Frame::bit_reg(intid, gicd::ISENABLER);
    frame_of(intid).read32(reg) & bit != 0
}

/// Whether `intid` is pending (`ISPENDR`).
pub fn is_pending(intid: u32) -> bool {
    let (reg, bit) = Frame::bit_reg(intid, gicd::ISPENDR);
    frame_of(intid).read32(reg) & bit != 0
}

/// Makes `intid` pending (`ISPENDR`).
pub fn set_pending(intid: u32) {
    let (reg, bit) = Frame::bit_reg(intid, gicd::ISPENDR);
    frame_of(intid).write32(reg, bit);
}

/// Clears `intid`'s pending state (`ICPENDR`).
pub fn clear_pending(intid: u32) {
    let (reg, bit) = Frame::bit_reg(intid, gicd::ICPENDR);
    frame_of(intid).write32(reg, bit);
}

/// Whether `intid` is active (`ISACTIVER`).
pub fn is_active(intid: u32) -> bool {
    let (reg, bit) = Frame::bit_reg(intid, gicd::ISACTIVER);
    frame_of(intid).read32(reg) & bit != 0
}

/// Sets `intid`'s priority (lower is more urgent; the GIC keeps its
/// implemented top bits). One byte of a 32-bit `IPRIORITYR`, written as
/// the whole word.
pub fn set_priority(intid: u32, priority: u8) {
    let f = frame_of(intid);
    let reg = gicd::IPRIORITYR + u64::from(intid & !3);
    let shift = 8 * (intid % 4);
    let word = f.read32(reg) & !(0xff << shift) | u32::from(priority) << shift;
    f.write32(reg, word);
}

/// `intid`'s priority as the GIC holds it.
pub fn priority(intid: u32) -> u8 {
    let reg = gicd::IPRIORITYR + u64::from(intid & !3);
    (frame_of(intid).read32(reg) >> (8 * (intid % 4))) as u8
}

macro_rules! icc_read {
    ($reg:literal) => {{
        let value: u64;
        // SAFETY: reading a CPU interface register that has no side effect
        // (not IAR, which acknowledges).
        unsafe {
            asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags))
        };
        value
    }};
}

/// Acknowledges the highest-priority pending group-1 interrupt
/// (`ICC_IAR1_EL1`): it becomes active and the running priority becomes
/// its priority. [`SPURIOUS`] if none is pending (or none above the mask).
pub fn ack() -> u32 {
    let value: u64;
    // SAFETY: acknowledging changes only interrupt state; the IRQ dispatch
    // (and the scenarios testing it) pair it with `eoi`. Not `nomem`:
    // memory accesses are not moved across it.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) value, options(nostack, preserves_flags)) };
    (value & 0xff_ffff) as u32
}

/// Ends `intid` (`ICC_EOIR1_EL1`, EOImode 0): drops the running priority
/// and deactivates it. The last acknowledged interrupt first.
pub fn eoi(intid: u32) {
    // SAFETY: ending an interrupt changes only interrupt state. Not
    // `nomem`, as for `ack`. The isb makes the drop take effect before
    // what follows (a check of the running priority, an unmask).
    unsafe {
        asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nostack, preserves_flags))
    };
}

/// The running priority (`ICC_RPR_EL1`): that of the active interrupt
/// being handled, 0xff (idle) if none.
pub fn running_priority() -> u8 {
    icc_read!("icc_rpr_el1") as u8
}

/// The highest-priority pending group-1 interrupt (`ICC_HPPIR1_EL1`),
/// without acknowledging it; [`SPURIOUS`] if none.
pub fn highest_pending() -> u32 {
    (icc_read!("icc_hppir1_el1") & 0xff_ffff) as u32
}

/// The priority mask (`ICC_PMR_EL1`): only priorities numerically below
/// it are signalled.
pub fn pmr() -> u8 {
    icc_read!("icc_pmr_el1") as u8
}

/// Sets the priority mask.
pub fn set_pmr(mask: u8) {
    // SAFETY: changes which priorities this vCPU's CPU interface signals.
    // The isb makes it take effect before what follows; not `nomem`.
    unsafe {
        asm!("msr icc_pmr_el1, {}", "isb", in(reg) u64::from(mask), options(nostack, preserves_flags))
    };
}

/// `ICC_CTLR_EL1`.
pub fn cpu_ctlr() -> u64 {
    icc_read!("icc_ctlr_el1")
}

/// Priority bits the CPU interface implements (`ICC_CTLR_EL1.PRIbits` + 1).
pub fn priority_bits() -> u32 {
    ((cpu_ctlr() >> 8) & 0x7) as u32 + 1
}

/// `ICC_BPR1_EL1`.
pub fn binary_point() -> u64 {
    icc_read!("icc_bpr1_el1")
}

/// Which SGI generation register a value goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiRegister {
    /// `ICC_SGI1R_EL1`: group-1 SGIs for the current security state.
    Group1,
    /// `ICC_SGI0R_EL1`: group-0 SGIs.
    Group0,
    /// `ICC_ASGI1R_EL1`: group-1 SGIs for the other security state.
    AltGroup1,
}

/// Writes `value` (see [`sgi`]) to an SGI generation register.
#[inline(never)]
pub fn write_sgi(register: SgiRegister, value: u64) {
    // SAFETY: generating SGIs changes only interrupt state. The dsb makes
    // earlier memory writes (what the target will read) visible first, as
    // Linux's gic_ipi_send_mask does; the isb completes the write before
    // what follows.
    unsafe {
        match register {
            SgiRegister::Group1 => asm!(
                "dsb ishst", "msr icc_sgi1r_el1, {}", "isb",
                in(reg) value, options(nostack, preserves_flags)
            ),
            SgiRegister::Group0 => asm!(
                "dsb ishst", "msr icc_sgi0r_el1, {}", "isb",
                in(reg) value, options(nostack, preserves_flags)
            ),
            SgiRegister::AltGroup1 => asm!(
                "dsb ishst", "msr icc_asgi1r_el1, {}", "isb",
                in(reg) value, options(nostack, preserves_flags)
            ),
        }
    }
}

/// Sends group-1 SGI `intid` to the vCPU `mpidr` (one `ICC_SGI1R_EL1` write).
pub fn send_sgi(intid: u32, mpidr: u64) {
    write_sgi(SgiRegister::Group1, sgi::to_cpu(intid, mpidr));
}

/// Sends group-1 SGI `intid` to every vCPU in `mpidrs` (one write per cluster).
pub fn send_sgi_to(intid: u32, mpidrs: &[u64]) {
    for value in sgi::to_cpus(intid, mpidrs) {
        write_sgi(SgiRegister::Group1, value);
    }
}

/// Sends group-1 SGI `intid` to every vCPU but this one (`IRM` = 1).
pub fn send_sgi_others(intid: u32) {
    write_sgi(SgiRegister::Group1, sgi::to_others(intid));
}
