//! The physical GICv3 as the hypervisor uses it: an SGI that kicks another CPU out of its guest (or out of `wfi`), the maintenance interrupt of the virtual CPU interface, and the two timers of the guest that runs on each CPU.
//!
//! While a guest runs, `HCR_EL2.IMO` sends physical interrupts to EL2, so
//! a kick makes the target CPU leave the guest (an IRQ exit) whatever the
//! guest's own interrupt mask; a CPU that waits in `wfi` wakes. At EL2
//! interrupts stay masked (`PSTATE.I`); the hypervisor takes them by
//! reading `ICC_IAR1_EL1` ([`ack`]). The CPU interface runs with
//! `EOImode` 1: ending an interrupt ([`end`]) only drops the running
//! priority, deactivating it ([`deactivate`]) is separate, so that a
//! timer interrupt can be forwarded to the guest still active and be
//! deactivated by the guest's own end of its virtual copy (a hardware-linked
//! list register): the timer cannot fire again until the guest has handled
//! it.
//!
//! Set-up: the boot CPU enables affinity routing and group 1 in the
//! distributor ([`init`]); every CPU then wakes its redistributor, enables
//! the kick SGI, the maintenance interrupt and the two timer PPIs there,
//! and turns on its system-register CPU interface ([`init_cpu`]). Only
//! GICv3 is supported; with a GICv2 (or none), [`kick`] reports
//! [`GicError::Unsupported`].

use core::fmt;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::ICC_SRE_EL2;
use core::arch::asm;
use log::{debug, warn};
use spin::Once;
use tock_registers::fields::FieldValue;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

use hvcore::platform::Gic;

use super::machine::Machine;
use super::percpu::{self, CpuId};

/// The SGI that kicks a CPU out of its guest.
pub const KICK_SGI: u32 = 0;
/// The PPIs each CPU enables: the virtual CPU interface's maintenance
/// interrupt, the virtual timer, the EL1 physical timer.
const PPIS: [u32; 3] = [
    hvcore::vgic::MAINTENANCE_INTID,
    hvcore::vgic::VTIMER_INTID,
    hvcore::vgic::PTIMER_INTID,
];
/// `ICC_IAR1_EL1` INTIDs at and above this are special (1023: spurious).
const SPECIAL_INTID: u32 = 1020;
/// Bytes of one redistributor frame pair (RD_base + SGI_base).
const GICR_STRIDE: u64 = 0x2_0000;
/// Two more frames (VLPI, reserved) when `GICR_TYPER.VLPIS` is set.
const GICR_VLPI_EXTRA: u64 = 0x2_0000;
/// How long to wait for the GIC to settle, in polls.
const POLLS: u32 = 1_000_000;

register_bitfields! {u32,
    /// Distributor control (both security views share these positions).
    GICD_CTLR [
        /// A write is still propagating.
        RWP OFFSET(31) NUMBITS(1) [],
        /// Single security state (`DS`): the GIC has no security extensions.
        DS OFFSET(6) NUMBITS(1) [],
        /// Affinity routing (`ARE`, or `ARE_NS` in the non-secure view).
        ARE OFFSET(4) NUMBITS(1) [],
        /// Group 1 enable (`DS`), or non-secure group 1 (`EnableGrp1A`).
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) [],
        /// Group 0 enable (`DS`), or non-secure group 1 (non-secure view).
        ENABLE_GRP0_OR_NS OFFSET(0) NUMBITS(1) []
    ],
    /// Redistributor power management.
    GICR_WAKER [
        /// The redistributor's interfaces are quiescent.
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
        /// The connected CPU is asleep.
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// Redistributor type.
    GICR_TYPER [
        /// The CPU's affinity: Aff3.Aff2.Aff1.Aff0.
        AFFINITY OFFSET(32) NUMBITS(32) [],
        /// The last redistributor of the region.
        LAST OFFSET(4) NUMBITS(1) [],
        /// Virtual LPIs: two more 64 KiB frames per redistributor.
        VLPIS OFFSET(1) NUMBITS(1) []
    ],
    /// Generate a group-1 SGI.
    ICC_SGI1R_EL1 [
        /// Target affinity level 3.
        AFF3 OFFSET(48) NUMBITS(8) [],
        /// Target affinity level 2.
        AFF2 OFFSET(32) NUMBITS(8) [],
        /// The SGI.
        INTID OFFSET(24) NUMBITS(4) [],
        /// Target affinity level 1.
        AFF1 OFFSET(16) NUMBITS(8) [],
        /// Bit n: the CPU with Aff0 = n.
        TARGET_LIST OFFSET(0) NUMBITS(16) []
    ],
    /// Acknowledge / end of a group-1 interrupt.
    ICC_IAR1_EL1 [
        /// The interrupt.
        INTID OFFSET(0) NUMBITS(24) []
    ]
}

register_structs! {
    /// The part of the distributor the hypervisor uses: control, and the
    /// SPI registers of the one SPI it takes (the console's).
    GicdRegisters {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => _reserved0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => _reserved1),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 1020]),
        (0x07fc => _reserved2),
        (0x6100 => irouter: [ReadWrite<u64>; 988]),
        (0x7fe0 => @END),
    }
}

register_structs! {
    /// A redistributor's control frame (RD_base).
    GicrRdRegisters {
        (0x0000 => _ctlr),
        (0x0008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => _statusr),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => @END),
    }
}

register_structs! {
    /// A redistributor's SGI and PPI frame (SGI_base), the part used here.
    GicrSgiRegisters {
        (0x0000 => _reserved0),
        (0x0080 => igroupr0: ReadWrite<u32>),
        (0x0084 => _reserved1),
        (0x0100 => isenabler0: ReadWrite<u32>),
        (0x0104 => _reserved2),
        (0x0400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x0420 => @END),
    }
}

/// Why a kick cannot be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// The machine has no GICv3 (kicks need its system-register interface).
    Unsupported,
    /// The CPU never set up its interface (no redistributor matched it).
    NotReady(CpuId),
}

impl fmt::Display for GicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported => f.write_str(
                "kicking a CPU out of its guest needs a GICv3 (QEMU: -machine gic-version=3)",
            ),
            Self::NotReady(cpu) => write!(f, "cpu {cpu} has no redistributor set up"),
        }
    }
}

/// Where the GICv3 lives (physical = virtual at EL2).
#[derive(Clone, Copy, Debug)]
struct GicV3 {
    distributor: u64,
    redistributors: u64,
    redistributors_end: u64,
}

static GIC: Once<Option<GicV3>> = Once::new();
/// CPUs whose redistributor and CPU interface are set up.
static READY: [Once<()>; percpu::MAX_CPUS] = [const { Once::new() }; percpu::MAX_CPUS];

/// The distributor's registers.
fn gicd(gic: &GicV3) -> &'static GicdRegisters {
    // SAFETY: `gic.distributor` is the GICD frame the device tree names,
    // mapped Device-nGnRE at EL2 for the hypervisor's lifetime
    // (`mm::mmu`); the register block is MMIO accessed only by volatile
    // single loads and stores.
    unsafe { &*(gic.distributor as *const GicdRegisters) }
}

/// The redistributor control frame at `base`.
///
/// # Safety
///
/// `base` is a redistributor frame inside the mapped GICR region.
unsafe fn gicr_rd(base: u64) -> &'static GicrRdRegisters {
    // SAFETY: the caller guarantees a mapped redistributor frame (MMIO,
    // volatile accesses only).
    unsafe { &*(base as *const GicrRdRegisters) }
}

/// The SGI frame of the redistributor at `base`.
///
/// # Safety
///
/// As [`gicr_rd`].
unsafe fn gicr_sgi(base: u64) -> &'static GicrSgiRegisters {
    // SAFETY: the SGI frame follows the control frame (64 KiB on), inside
    // the same redistributor (caller's guarantee).
    unsafe { &*((base + 0x1_0000) as *const GicrSgiRegisters) }
}

/// Polls `done` a bounded number of times.
fn wait(done: impl Fn() -> bool) -> bool {
    (0..POLLS).any(|_| {
        let d = done();
        super::cpu::relax();
        d
    })
}

/// Boot CPU: records the GIC and enables affinity routing and group 1 in
/// the distributor. Call once, with the MMU on (the frames are mapped).
pub fn init(machine: &Machine) {
    let platform = machine.platform();
    let gic = GIC.call_once(|| match platform.gic {
        Some(Gic::V3 {
            distributor,
            redistributors,
        }) => Some(GicV3 {
            distributor: distributor.start().as_u64(),
            redistributors: redistributors.start().as_u64(),
            redistributors_end: redistributors.end().as_u64(),
        }),
        _ => None,
    });
    let Some(gic) = gic else {
        debug!("gic: no GICv3: CPUs cannot be kicked out of guests");
        return;
    };
    let gicd = gicd(gic);
    let ctlr = if gicd.ctlr.is_set(GICD_CTLR::DS) {
        GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_GRP1::SET
    } else {
        // Non-secure view: ARE_NS, EnableGrp1A and EnableGrp1.
        GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_GRP1::SET + GICD_CTLR::ENABLE_GRP0_OR_NS::SET
    };
    gicd.ctlr.modify(ctlr);
    if !wait(|| !gicd.ctlr.is_set(GICD_CTLR::RWP)) {
        warn!("gic: distributor write still pending");
    }
}

/// Routes SPI `intid` to this CPU, in group 1, and enables it: the
/// console's receive interrupt. Call on the CPU that is to take it, after
/// [`init`]. Returns false (and does nothing) without a GICv3 or for an
/// INTID that is not an SPI.
pub fn enable_spi(intid: u32) -> bool {
    let Some(Some(gic)) = GIC.get() else {
        return false;
    };
    if !(32..SPECIAL_INTID).contains(&intid) {
        return false;
    }
    let gicd = gicd(gic);
    let (word, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
    let mpidr = percpu::current_mpidr();
    // IROUTER: Aff3 at bits 32-39, Aff2.Aff1.Aff0 below; routing mode 0.
    gicd.irouter[intid as usize - 32].set((mpidr & 0xff_0000_0000) | (mpidr & 0xff_ffff));
    gicd.ipriorityr[intid as usize].set(0x80);
    gicd.igroupr[word].set(gicd.igroupr[word].get() | bit);
    gicd.isenabler[word].set(bit);
    if !wait(|| !gicd.ctlr.is_set(GICD_CTLR::RWP)) {
        warn!("gic: distributor write still pending");
    }
    true
}

/// The affinity value `GICR_TYPER` reports for an MPIDR.
fn affinity_value(mpidr: u64) -> u64 {
    ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff)
}

/// Every CPU, after [`init`] on the boot CPU: finds its redistributor,
/// wakes it, enables the kick SGI (group 1) and its CPU interface.
pub fn init_cpu() {
    let Some(Some(gic)) = GIC.get() else {
        return;
    };
    let cpu = percpu::current_id();
    let want = affinity_value(percpu::current_mpidr());
    let mut base = gic.redistributors;
    let found = loop {
        if base + GICR_STRIDE > gic.redistributors_end {
            break None;
        }
        // SAFETY: `base` is a frame boundary inside the GICR region.
        let rd = unsafe { gicr_rd(base) };
        let typer = rd.typer.extract();
        if typer.read(GICR_TYPER::AFFINITY) == want {
            break Some(base);
        }
        if typer.is_set(GICR_TYPER::LAST) {
            break None;
        }
        base += GICR_STRIDE
            + if typer.is_set(GICR_TYPER::VLPIS) {
                GICR_VLPI_EXTRA
            } else {
                0
            };
    };
    let Some(base) = found else {
        warn!("gic: no redistributor for cpu {cpu} (affinity {want:#x})");
        return;
    };
    // SAFETY: `base` is this CPU's redistributor, found above.
    let (rd, sgi) = unsafe { (gicr_rd(base), gicr_sgi(base)) };
    rd.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
    if !wait(|| !rd.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP)) {
        warn!("gic: cpu {cpu}: redistributor did not wake");
        return;
    }
    let bits = PPIS.iter().fold(1 << KICK_SGI, |acc, &p| acc | 1 << p);
    sgi.igroupr0.set(sgi.igroupr0.get() | bits);
    for intid in core::iter::once(KICK_SGI).chain(PPIS) {
        sgi.ipriorityr[intid as usize].set(0x80);
    }
    sgi.isenabler0.set(bits);

    ICC_SRE_EL2.modify(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
    barrier::isb(barrier::SY);
    // SAFETY: the CPU interface's control (EOImode 1: ending an interrupt
    // drops the priority, deactivation is separate), priority mask and
    // group-1 enable only decide which interrupts this CPU may take and how
    // they end; at EL2 they stay masked by PSTATE, and while a guest runs
    // they exit to EL2 (HCR_EL2.IMO).
    unsafe {
        asm!(
            "msr icc_ctlr_el1, {eoimode}",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_bpr1_el1, xzr",
            "msr icc_igrpen1_el1, {on}",
            "isb",
            eoimode = in(reg) 1u64 << 1,
            pmr = in(reg) 0xffu64,
            on = in(reg) 1u64,
            options(nostack, preserves_flags)
        );
    }
    READY[cpu.index()].call_once(|| ());
    debug!(
        "gic: cpu {cpu}: redistributor at {base:#x}, kick SGI {KICK_SGI} and PPIs {PPIS:?} enabled"
    );
}

/// Whether [`kick`] can reach `cpu`.
///
/// # Errors
///
/// As [`kick`].
pub fn can_kick(cpu: CpuId) -> Result<(), GicError> {
    if !matches!(GIC.get(), Some(Some(_))) {
        return Err(GicError::Unsupported);
    }
    if READY[cpu.index()].get().is_none() {
        return Err(GicError::NotReady(cpu));
    }
    Ok(())
}

/// Sends the kick SGI to `cpu`.
///
/// # Errors
///
/// [`GicError::Unsupported`] without a GICv3, [`GicError::NotReady`] if
/// `cpu` did not set up its interface.
pub fn kick(cpu: CpuId) -> Result<(), GicError> {
    can_kick(cpu)?;
    let mpidr = percpu::get(cpu).mpidr();
    let sgi1r: FieldValue<u64, ICC_SGI1R_EL1::Register> = ICC_SGI1R_EL1::AFF3
        .val((mpidr >> 32) & 0xff)
        + ICC_SGI1R_EL1::AFF2.val((mpidr >> 16) & 0xff)
        + ICC_SGI1R_EL1::AFF1.val((mpidr >> 8) & 0xff)
        + ICC_SGI1R_EL1::INTID.val(u64::from(KICK_SGI))
        + ICC_SGI1R_EL1::TARGET_LIST.val(1 << (mpidr & 0xf));
    // Whatever the kicker wrote is visible before the target takes the SGI.
    barrier::dsb(barrier::ISHST);
    // SAFETY: generating an SGI only makes an interrupt pending on the
    // target CPU; the value names one CPU and the kick SGI.
    unsafe {
        asm!(
            "msr icc_sgi1r_el1, {}",
            "isb",
            in(reg) sgi1r.value,
            options(nostack, preserves_flags)
        );
    }
    Ok(())
}

/// Acknowledges the highest-priority pending interrupt on this CPU: its
/// INTID, or `None` if none is pending (spurious). It is active until
/// [`deactivate`]d; [`end`] it first.
pub fn ack() -> Option<u32> {
    let iar: u64;
    // SAFETY: acknowledging marks the highest-priority pending interrupt
    // active; every caller ends and deactivates it (or hands it to a guest
    // whose end deactivates it).
    unsafe {
        asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nostack, preserves_flags));
    }
    let intid = ICC_IAR1_EL1::INTID.read(iar) as u32;
    (intid < SPECIAL_INTID).then_some(intid)
}

/// Ends (drops the running priority of) an acknowledged interrupt.
pub fn end(intid: u32) {
    // SAFETY: drops the priority of an interrupt this CPU acknowledged.
    unsafe {
        asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nostack, preserves_flags));
    }
}

/// Deactivates an interrupt (`ICC_DIR_EL1`): it may fire again.
pub fn deactivate(intid: u32) {
    // SAFETY: deactivation only lets the interrupt be signalled again.
    unsafe {
        asm!("msr icc_dir_el1, {}", "isb", in(reg) u64::from(intid), options(nostack, preserves_flags));
    }
}

/// How many interrupts one exit or one wakeup acknowledges at most: a
/// guest cannot keep the hypervisor acknowledging forever.
pub const ACK_BUDGET: usize = 8;

/// Acknowledges, ends and deactivates the pending interrupts on this CPU
/// that need no more than that (at most [`ACK_BUDGET`]): kicks and the
/// maintenance interrupt. Anything else is handed to `other`, acknowledged
/// and ended but still active (it deactivates it, or forwards it). Returns
/// how many kicks it saw.
pub fn handle_irqs(mut other: impl FnMut(u32)) -> u32 {
    let mut kicks = 0;
    for _ in 0..ACK_BUDGET {
        let Some(intid) = ack() else {
            break;
        };
        end(intid);
        if intid == KICK_SGI || intid == hvcore::vgic::MAINTENANCE_INTID {
            kicks += u32::from(intid == KICK_SGI);
            deactivate(intid);
        } else {
            other(intid);
        }
    }
    kicks
}
