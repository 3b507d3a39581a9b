//! The EL2 MMU: identity-mapped stage-1 tables for the hypervisor, built by the walker (`pgtable::Hyp`), turned on for every CPU.
//!
//! Layout: the image's text is read-only and executable, its read-only
//! data read-only, its data, `.bss` and stacks read-write; the rest of RAM
//! read-write and never executable; the UART and GIC frames Device-nGnRE.
//! Everything is identity-mapped, so addresses taken before the MMU was on
//! stay valid after.

use core::fmt;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    ReadWriteable, Readable, Writeable, ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2,
};
use hvcore::range::{PhysRange, RangeSet};
use log::{debug, info};
use pgtable::{Hyp, Level, Prot, StatsSnapshot, MAIR_EL2_VALUE};
use spin::{Mutex, Once};

use super::layout::image_range;
use super::maint;
use super::tables::El2Mm;
use hvcore::platform::{Gic, Platform, MAX_RANGES};

use crate::arch::machine::Machine;

/// Virtual-address bits of the EL2 regime (1 TiB: every RAM and device
/// address of the virt board fits).
const VA_BITS: u32 = 40;

/// `TCR_EL2` bits 31 and 23 are RES1 without `HCR_EL2.E2H` (Arm ARM D19.2).
const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);

unsafe extern "C" {
    static _text_start: u8;
    static _text_end: u8;
    static _rodata_start: u8;
    static _rodata_end: u8;
    static _data_start: u8;
}

/// Why the EL2 tables could not be built.
#[derive(Debug)]
pub enum MmuError {
    /// The walker refused a mapping.
    Map {
        /// What was being mapped.
        what: &'static str,
        /// The range.
        range: PhysRange,
        /// The walker's error.
        error: pgtable::Error,
    },
    /// Memory for the root or the layout bookkeeping ran out.
    Setup(&'static str),
    /// A section does not translate as it was mapped.
    Check(&'static str),
}

impl fmt::Display for MmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map { what, range, error } => write!(f, "mmu: mapping {what} {range}: {error}"),
            Self::Setup(what) => write!(f, "mmu: {what}"),
            Self::Check(what) => write!(f, "mmu: {what} does not translate as mapped"),
        }
    }
}

/// Register values every CPU loads to turn its MMU on.
#[derive(Clone, Copy, Debug)]
struct Regs {
    mair: u64,
    tcr: u64,
    ttbr: u64,
}

/// The tables (kept for the life of the hypervisor: dropping them would free
/// the pages every CPU translates through) and the register values.
static TABLES: Once<Mutex<Hyp<El2Mm>>> = Once::new();
static REGS: Once<Regs> = Once::new();

fn linker_range(start: &u8, end: &u8) -> PhysRange {
    PhysRange::new(start as *const u8 as u64, end as *const u8 as u64).unwrap_or_default()
}

/// The image's sections and their permissions.
fn image_sections() -> [(&'static str, PhysRange, Prot); 3] {
    // SAFETY: only the addresses of these linker-script symbols are taken;
    // they are never read.
    let (text, rodata, data_start) = unsafe {
        (
            linker_range(&_text_start, &_text_end),
            linker_range(&_rodata_start, &_rodata_end),
            &raw const _data_start as u64,
        )
    };
    let data = PhysRange::new(data_start, image_range().end().as_u64()).unwrap_or_default();
    [
        ("text", text, Prot::R.union(Prot::X)),
        ("rodata", rodata, Prot::R),
        ("data+bss+stacks", data, Prot::RW),
    ]
}

fn device_ranges(platform: &Platform) -> [Option<(&'static str, PhysRange)>; 3] {
    let uart = PhysRange::from_base_size(platform.uart.as_u64(), pgtable::PAGE_SIZE).ok();
    let (a, b) = match platform.gic {
        Some(Gic::V3 {
            distributor,
            redistributors,
        }) => (("gicd", distributor), ("gicr", redistributors)),
        Some(Gic::V2 {
            distributor,
            cpu_interface,
        }) => (("gicd", distributor), ("gicc", cpu_interface)),
        None => return [uart.map(|r| ("uart", r)), None, None],
    };
    [uart.map(|r| ("uart", r)), Some(a), Some(b)]
}

fn map(
    hyp: &mut Hyp<El2Mm>,
    what: &'static str,
    range: PhysRange,
    prot: Prot,
) -> Result<(), MmuError> {
    let range = range.shrink_to_alignment(pgtable::PAGE_SIZE);
    if range.is_empty() {
        return Ok(());
    }
    let start = range.start().as_u64();
    let m = hyp
        .map(start, range.size(), start, prot)
        .map_err(|error| MmuError::Map { what, range, error })?;
    let at = |n| Level::new(n).map_or(0, |l| m.at(l));
    debug!(
        "mmu: {what:<16} {range} {}: {} x 1G, {} x 2M, {} x 4K",
        prot,
        at(1),
        at(2),
        at(3)
    );
    Ok(())
}

/// Builds the EL2 tables for `platform` and turns the MMU on for the boot
/// CPU. Secondary CPUs call [`enable_secondary`].
///
/// # Errors
///
/// An [`MmuError`] if a range cannot be mapped (the MMU stays off).
pub fn init(machine: &Machine) -> Result<(), MmuError> {
    let platform = machine.platform();
    let mut hyp =
        Hyp::new(El2Mm, VA_BITS).map_err(|_| MmuError::Setup("no page for the root table"))?;
    let image = image_range();
    for (what, range, prot) in image_sections() {
        map(&mut hyp, what, range, prot)?;
    }
    // The rest of RAM, the image cut out.
    let mut ram: RangeSet<MAX_RANGES> = platform.memory.clone();
    ram.remove(image)
        .map_err(|_| MmuError::Setup("too many memory ranges"))?;
    for range in ram.as_slice() {
        map(&mut hyp, "ram", *range, Prot::RW)?;
    }
    for (what, range) in device_ranges(platform).into_iter().flatten() {
        map(&mut hyp, what, range, Prot::RW.union(Prot::DEVICE))?;
    }

    // Read the tables back through the walker before trusting them.
    for (what, range, prot) in image_sections() {
        let start = range.start().as_u64();
        if hyp.translate(start) != Ok(Some((start, prot))) {
            return Err(MmuError::Check(what));
        }
    }

    let regs = registers(&hyp);
    let stats: StatsSnapshot = hyp.stats();
    info!(
        "mmu: EL2 stage-1 tables built by the walker: root {:#x}, {} table pages, {} VA bits",
        hyp.root_pa(),
        stats.table_pages + 1,
        VA_BITS
    );
    TABLES.call_once(|| Mutex::new(hyp));
    let regs = *REGS.call_once(|| regs);
    // Secondaries read `REGS` with their MMU (and data cache) off.
    maint::dcache_clean_inval_poc(&raw const REGS as u64, core::mem::size_of_val(&REGS) as u64);
    enable(regs);
    info!("mmu: on for cpu 0 (text RX, rodata R, data RW, RAM RW-XN, devices nGnRE)");
    Ok(())
}

/// Turns the MMU on for a secondary CPU with the boot CPU's tables.
/// Does nothing if the boot CPU did not turn its MMU on.
pub fn enable_secondary() {
    if let Some(regs) = REGS.get() {
        enable(*regs);
    }
}

fn registers(hyp: &Hyp<El2Mm>) -> Regs {
    let mair = MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
        + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
        + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc;
    // The walker encodes attribute indices for this MAIR layout.
    assert_eq!(mair.value, MAIR_EL2_VALUE, "MAIR_EL2 and pgtable disagree");
    let pa_bits = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101); // at most 48 bits
    let tcr = TCR_EL2::T0SZ.val(hyp.geometry().t0sz())
        + TCR_EL2::TG0::KiB_4
        + TCR_EL2::SH0::Inner
        + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
        + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
        + TCR_EL2::PS.val(pa_bits);
    Regs {
        mair: mair.value,
        tcr: tcr.value | TCR_EL2_RES1,
        ttbr: hyp.root_pa(),
    }
}

fn enable(regs: Regs) {
    MAIR_EL2.set(regs.mair);
    TCR_EL2.set(regs.tcr);
    TTBR0_EL2.set_baddr(regs.ttbr);
    barrier::isb(barrier::SY);
    maint::tlbi_el2_all();
    SCTLR_EL2.modify(SCTLR_EL2::M::Enable + SCTLR_EL2::C::Cacheable + SCTLR_EL2::I::Cacheable);
    barrier::isb(barrier::SY);
}
