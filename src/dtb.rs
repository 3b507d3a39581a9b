//! Reading the platform from the flattened device tree QEMU (or firmware)
//! passes in `x0`: memory, CPUs, UART, GIC, PSCI, `/chosen`. Missing or
//! malformed essentials are reported as [`DtbError`]s, never panics.

use core::fmt;

use fdt::node::FdtNode;
use fdt::Fdt;
use hvcore::range::{PhysRange, RangeError, RangeSet};
use hvcore::PhysAddr;
use log::{info, warn};

use crate::percpu::MAX_CPUS;

/// How many disjoint memory (or reserved) ranges are tracked.
pub const MAX_RANGES: usize = 32;

/// Why the device tree could not be used.
#[derive(Debug)]
pub enum DtbError {
    /// `x0` was 0: the image was not booted as an arm64 Image with a DTB.
    Missing,
    /// `x0` is not 8-byte aligned, as the boot protocol requires.
    Misaligned(usize),
    /// The blob failed to parse.
    Invalid(fdt::FdtError),
    /// No `device_type = "memory"` node with a usable `reg`.
    NoMemory,
    /// A `reg` entry that does not describe a range.
    BadRange(&'static str, RangeError),
    /// No `/cpus/cpu` node with a `reg`.
    NoCpus,
    /// No PL011 UART (via `/chosen/stdout-path` or `compatible`).
    NoUart,
    /// `/chosen/linux,initrd-end` before `linux,initrd-start`.
    BadInitrd,
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str(
                "no device tree: x0 was 0 at entry (boot the raw Image with -kernel, not the ELF)",
            ),
            Self::Misaligned(addr) => write!(f, "device tree at {addr:#x} is not 8-byte aligned"),
            Self::Invalid(e) => write!(f, "invalid device tree: {e:?}"),
            Self::NoMemory => f.write_str("device tree has no memory node with a reg property"),
            Self::BadRange(what, e) => write!(f, "device tree {what}: {e}"),
            Self::NoCpus => f.write_str("device tree lists no CPU under /cpus"),
            Self::NoUart => f.write_str("device tree has no PL011 UART (arm,pl011)"),
            Self::BadInitrd => f.write_str("/chosen/linux,initrd-end lies before initrd-start"),
        }
    }
}

/// How PSCI is reached, from the `/psci` node's `method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `smc`: usable from EL2.
    Smc,
    /// `hvc`: would trap to EL2 itself, so unusable by a hypervisor.
    Hvc,
}

/// The interrupt controller's register frames.
#[derive(Clone, Copy, Debug)]
pub enum Gic {
    /// GICv2: distributor and CPU interface.
    V2 {
        /// Distributor (GICD).
        distributor: PhysRange,
        /// CPU interface (GICC).
        cpu_interface: PhysRange,
    },
    /// GICv3: distributor and redistributor region.
    V3 {
        /// Distributor (GICD).
        distributor: PhysRange,
        /// Redistributors (GICR), one frame pair per CPU.
        redistributors: PhysRange,
    },
}

/// The CPUs the device tree lists, by MPIDR affinity value.
#[derive(Clone, Debug)]
pub struct CpuList {
    mpidrs: [u64; MAX_CPUS],
    len: usize,
    /// CPUs listed beyond [`MAX_CPUS`], which are left off.
    pub ignored: usize,
}

impl CpuList {
    /// MPIDR values in device-tree order.
    pub fn mpidrs(&self) -> &[u64] {
        &self.mpidrs[..self.len]
    }
}

/// Everything the hypervisor needs to know about the machine.
#[derive(Debug)]
pub struct Platform {
    /// The device tree blob itself (kept: the memory is reserved).
    pub dtb: PhysRange,
    /// Root `model` (or `compatible`).
    pub model: &'static str,
    /// RAM, from the memory nodes.
    pub memory: RangeSet<MAX_RANGES>,
    /// `/memreserve/` entries and `/reserved-memory` children.
    pub reserved: RangeSet<MAX_RANGES>,
    /// The initrd, from `/chosen/linux,initrd-start` and `-end`.
    pub initrd: Option<PhysRange>,
    /// CPUs, by MPIDR.
    pub cpus: CpuList,
    /// The PL011 console's register block.
    pub uart: PhysAddr,
    /// The interrupt controller, if a known one is present.
    pub gic: Option<Gic>,
    /// The PSCI conduit, if a `/psci` node is present.
    pub psci: Option<PsciConduit>,
    /// `/chosen/bootargs` (empty if absent).
    pub bootargs: &'static str,
}

/// Parses the device tree at `addr`.
///
/// # Errors
///
/// A [`DtbError`] naming what is missing or malformed.
pub fn parse(addr: usize) -> Result<Platform, DtbError> {
    if addr == 0 {
        return Err(DtbError::Missing);
    }
    if !addr.is_multiple_of(8) {
        return Err(DtbError::Misaligned(addr));
    }
    // SAFETY: `addr` is the DTB address from the boot protocol (x0 at
    // entry), non-null and aligned; the MMU is off so it is a physical
    // address in RAM. `from_ptr` reads the header, then only `totalsize`
    // bytes. The blob is never written and its range is excluded from the
    // heap and frame allocator (mm::init), so it stays valid for 'static.
    let fdt: Fdt<'static> =
        unsafe { Fdt::from_ptr(addr as *const u8) }.map_err(DtbError::Invalid)?;
    let dtb = PhysRange::from_base_size(addr as u64, fdt.total_size() as u64)
        .map_err(|e| DtbError::BadRange("blob", e))?;

    let chosen = fdt.find_node("/chosen");
    let bootargs = chosen
        .and_then(|c| c.property("bootargs"))
        .and_then(|p| p.as_str())
        .unwrap_or("");

    Ok(Platform {
        dtb,
        model: model(&fdt),
        memory: memory(&fdt)?,
        reserved: reserved(&fdt)?,
        initrd: chosen.map(initrd).transpose()?.flatten(),
        cpus: cpus(&fdt)?,
        uart: uart(&fdt, chosen).ok_or(DtbError::NoUart)?,
        gic: gic(&fdt),
        psci: psci(&fdt),
        bootargs,
    })
}

fn model(fdt: &Fdt<'static>) -> &'static str {
    let root = fdt.find_node("/");
    root.and_then(|r| r.property("model"))
        .or_else(|| root.and_then(|r| r.property("compatible")))
        .and_then(|p| p.as_str())
        .unwrap_or("unknown")
}

fn is_device_type(node: &FdtNode<'_, '_>, ty: &str) -> bool {
    node.property("device_type").and_then(|p| p.as_str()) == Some(ty)
}

/// The `reg` entries of `node` that have a size, as ranges.
fn reg_ranges(
    node: FdtNode<'_, 'static>,
    what: &'static str,
) -> impl Iterator<Item = Result<PhysRange, DtbError>> {
    node.reg().into_iter().flatten().filter_map(move |region| {
        let size = region.size?;
        Some(
            PhysRange::from_base_size(region.starting_address as u64, size as u64)
                .map_err(|e| DtbError::BadRange(what, e)),
        )
    })
}

fn memory(fdt: &Fdt<'static>) -> Result<RangeSet<MAX_RANGES>, DtbError> {
    let mut set = RangeSet::new();
    for node in fdt.all_nodes().filter(|n| is_device_type(n, "memory")) {
        for range in reg_ranges(node, "memory reg") {
            set.insert(range?)
                .map_err(|e| DtbError::BadRange("memory", e))?;
        }
    }
    if set.is_empty() {
        return Err(DtbError::NoMemory);
    }
    Ok(set)
}

fn reserved(fdt: &Fdt<'static>) -> Result<RangeSet<MAX_RANGES>, DtbError> {
    let mut set = RangeSet::new();
    for rsv in fdt.memory_reservations() {
        let range = PhysRange::from_base_size(rsv.address() as u64, rsv.size() as u64)
            .map_err(|e| DtbError::BadRange("/memreserve/", e))?;
        set.insert(range)
            .map_err(|e| DtbError::BadRange("/memreserve/", e))?;
    }
    if let Some(node) = fdt.find_node("/reserved-memory") {
        for child in node.children() {
            for range in reg_ranges(child, "/reserved-memory reg") {
                set.insert(range?)
                    .map_err(|e| DtbError::BadRange("/reserved-memory", e))?;
            }
        }
    }
    Ok(set)
}

fn initrd(chosen: FdtNode<'_, 'static>) -> Result<Option<PhysRange>, DtbError> {
    let prop = |name| chosen.property(name).and_then(|p| p.as_usize());
    match (prop("linux,initrd-start"), prop("linux,initrd-end")) {
        (Some(start), Some(end)) => PhysRange::new(start as u64, end as u64)
            .map(Some)
            .map_err(|_| DtbError::BadInitrd),
        _ => Ok(None),
    }
}

fn cpus(fdt: &Fdt<'static>) -> Result<CpuList, DtbError> {
    let mut list = CpuList {
        mpidrs: [0; MAX_CPUS],
        len: 0,
        ignored: 0,
    };
    let nodes = fdt
        .find_node("/cpus")
        .into_iter()
        .flat_map(|c| c.children());
    for node in nodes.filter(|n| is_device_type(n, "cpu")) {
        let Some(mpidr) = node.reg().and_then(|mut r| r.next()) else {
            warn!("dtb: {} has no reg; ignored", node.name);
            continue;
        };
        if list.len == MAX_CPUS {
            list.ignored += 1;
            continue;
        }
        list.mpidrs[list.len] = mpidr.starting_address as u64;
        list.len += 1;
    }
    if list.len == 0 {
        return Err(DtbError::NoCpus);
    }
    Ok(list)
}

fn is_pl011(node: &FdtNode<'_, '_>) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
}

fn uart(fdt: &Fdt<'static>, chosen: Option<FdtNode<'_, 'static>>) -> Option<PhysAddr> {
    // Prefer the console /chosen/stdout-path names ("path[:options]").
    let stdout = chosen
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
        .and_then(|path| fdt.find_node(path.split(':').next().unwrap_or(path)))
        .filter(is_pl011);
    let node = stdout.or_else(|| fdt.find_compatible(&["arm,pl011"]))?;
    let reg = node.reg()?.next()?;
    Some(PhysAddr::new(reg.starting_address as u64))
}

fn gic(fdt: &Fdt<'static>) -> Option<Gic> {
    let two_ranges = |node: FdtNode<'_, 'static>| {
        let mut regs = reg_ranges(node, "GIC reg").filter_map(Result::ok);
        Some((regs.next()?, regs.next()?))
    };
    if let Some(node) = fdt.find_compatible(&["arm,gic-v3"]) {
        let (distributor, redistributors) = two_ranges(node)?;
        return Some(Gic::V3 {
            distributor,
            redistributors,
        });
    }
    let node = fdt.find_compatible(&["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"])?;
    let (distributor, cpu_interface) = two_ranges(node)?;
    Some(Gic::V2 {
        distributor,
        cpu_interface,
    })
}

fn psci(fdt: &Fdt<'static>) -> Option<PsciConduit> {
    let node = fdt.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
    match node.property("method").and_then(|p| p.as_str())? {
        "smc" => Some(PsciConduit::Smc),
        "hvc" => Some(PsciConduit::Hvc),
        _ => None,
    }
}

impl Platform {
    /// Logs what was found, one line per item.
    pub fn log_summary(&self) {
        const MIB: u64 = 1024 * 1024;
        info!("platform: {}", self.model);
        info!("dtb: {} ({} bytes)", self.dtb, self.dtb.size());
        for range in self.memory.as_slice() {
            info!("memory: {range} ({} MiB)", range.size() / MIB);
        }
        for range in self.reserved.as_slice() {
            info!("reserved: {range}");
        }
        match self.initrd {
            Some(initrd) => info!("initrd: {initrd} ({} bytes)", initrd.size()),
            None => info!("initrd: none"),
        }
        info!(
            "cpus: {}, mpidr {}",
            self.cpus.mpidrs().len(),
            HexList(self.cpus.mpidrs())
        );
        if self.cpus.ignored > 0 {
            warn!(
                "cpus: {} more listed, ignored (MAX_CPUS = {MAX_CPUS})",
                self.cpus.ignored
            );
        }
        info!("uart: pl011 at {}", self.uart);
        match self.gic {
            Some(Gic::V3 {
                distributor,
                redistributors,
            }) => info!("gic: v3, distributor {distributor}, redistributors {redistributors}"),
            Some(Gic::V2 {
                distributor,
                cpu_interface,
            }) => info!("gic: v2, distributor {distributor}, cpu interface {cpu_interface}"),
            None => warn!("gic: none found"),
        }
        match self.psci {
            Some(PsciConduit::Smc) => info!("psci: method smc"),
            Some(PsciConduit::Hvc) => warn!("psci: method hvc, unusable from EL2"),
            None => warn!("psci: no /psci node"),
        }
        info!("bootargs: {:?}", self.bootargs);
    }
}

/// Formats values as `0x0 0x1 ...`.
struct HexList<'a>(&'a [u64]);

impl fmt::Display for HexList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{v:#x}")?;
        }
        Ok(())
    }
}
