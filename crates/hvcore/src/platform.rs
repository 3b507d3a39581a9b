//! The machine the hypervisor boots on, read from the flattened device tree QEMU (or firmware) passes in `x0`: memory, CPUs, UART, GIC, PSCI, `/chosen`.
//!
//! Portable: the hardware layer hands over the blob as bytes, so the parser
//! runs (and is fuzzed) on the host. Missing or malformed essentials are
//! reported as [`DtbError`]s, never panics: the blob's structure is checked
//! ([`well_formed`]) before the `fdt` crate, which trusts it, reads it.

use core::fmt;

use fdt::node::FdtNode;
use fdt::Fdt;

use crate::range::{PhysRange, RangeError, RangeSet};
use crate::PhysAddr;

/// How many CPUs the hypervisor supports (one EL2 stack each).
pub const MAX_CPUS: usize = 8;

/// Largest device tree accepted, in bytes.
pub const MAX_DTB_SIZE: usize = 2 << 20;

/// How many disjoint memory (or reserved) ranges are tracked.
pub const MAX_RANGES: usize = 32;

/// Why the device tree could not be used.
#[derive(Debug, PartialEq)]
pub enum DtbError {
    /// `x0` was 0: the image was not booted as an arm64 Image with a DTB.
    Missing,
    /// `x0` is not 8-byte aligned, as the boot protocol requires.
    Misaligned(usize),
    /// The header's size is below the header's own or above
    /// [`MAX_DTB_SIZE`] (the bytes at `x0` are not a device tree).
    BadSize(usize),
    /// The blob failed to parse.
    Invalid(fdt::FdtError),
    /// The blob's structure is not one the reader walks safely
    /// ([`well_formed`]): what is wrong.
    Malformed(&'static str),
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
            Self::BadSize(size) => write!(
                f,
                "device tree header gives a size of {size} bytes (not a device tree, or over {MAX_DTB_SIZE})"
            ),
            Self::Invalid(e) => write!(f, "invalid device tree: {e:?}"),
            Self::Malformed(what) => write!(f, "malformed device tree: {what}"),
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
    /// `cpu` nodes without a `reg`, which are left off.
    pub no_reg: usize,
}

impl CpuList {
    /// MPIDR values in device-tree order.
    pub fn mpidrs(&self) -> &[u64] {
        &self.mpidrs[..self.len]
    }
}

/// Everything the hypervisor needs to know about the machine.
#[derive(Debug)]
pub struct Platform<'a> {
    /// The device tree blob itself (kept: the memory is reserved).
    pub dtb: PhysRange,
    /// Root `model` (or `compatible`).
    pub model: &'a str,
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
    /// Its interrupt's INTID (an SPI of the GIC), if the node gives one.
    pub uart_intid: Option<u32>,
    /// `/chosen/rng-seed` (empty if absent): entropy from the firmware.
    pub rng_seed: &'a [u8],
    /// `/chosen/kaslr-seed`, if present.
    pub kaslr_seed: Option<u64>,
    /// The interrupt controller, if a known one is present.
    pub gic: Option<Gic>,
    /// The PSCI conduit, if a `/psci` node is present.
    pub psci: Option<PsciConduit>,
    /// `/chosen/bootargs` (empty if absent).
    pub bootargs: &'a str,
}

/// The size a device tree header at the start of `header` gives (its
/// `totalsize`), checked to be plausible: at least a header's 40 bytes, at
/// most [`MAX_DTB_SIZE`]. The hardware layer reads this much.
///
/// # Errors
///
/// [`DtbError::BadSize`] otherwise (also for fewer than 8 bytes).
pub fn blob_size(header: &[u8]) -> Result<usize, DtbError> {
    let size = header
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if (40..=MAX_DTB_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(DtbError::BadSize(size))
    }
}

/// Parses the device tree `blob`, which lies at physical address `addr`.
///
/// # Errors
///
/// A [`DtbError`] naming what is missing or malformed.
pub fn parse(blob: &[u8], addr: u64) -> Result<Platform<'_>, DtbError> {
    let fdt = Fdt::new(blob).map_err(DtbError::Invalid)?;
    // The reader trusts the blob: checked first (fuzzing found the panics).
    well_formed(blob).map_err(DtbError::Malformed)?;
    let dtb = PhysRange::from_base_size(addr, fdt.total_size() as u64)
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
        uart: uart(&fdt, chosen).ok_or(DtbError::NoUart)?.0,
        uart_intid: uart(&fdt, chosen).and_then(|u| u.1),
        rng_seed: chosen
            .and_then(|c| c.property("rng-seed"))
            .map_or(&[][..], |p| p.value),
        kaslr_seed: chosen
            .and_then(|c| c.property("kaslr-seed"))
            .and_then(|p| p.as_usize())
            .map(|v| v as u64),
        gic: gic(&fdt),
        psci: psci(&fdt),
        bootargs,
    })
}

/// Deepest node nesting accepted (QEMU's trees are 4 deep; the reader
/// indexes a 64-entry array by depth and recurses as deep).
pub const MAX_DEPTH: usize = 32;

/// `FDT_*` structure-block tokens.
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Checks that `blob` (a header [`Fdt::new`] took) is a device tree the
/// `fdt` crate (0.1.5) can read without panicking, or recursing forever.
/// That crate trusts the blob: it slices by the header's offsets, the
/// properties' lengths and name offsets, unwraps names as UTF-8 C strings,
/// expects `#address-cells` to be a cell, indexes a 64-entry array by
/// depth, asserts the tokens it skips, and resolves a path it does not find
/// through `/aliases` again and again. So, all inside the header's
/// `totalsize`:
///
/// - the structure and strings blocks lie inside the blob, and the memory
///   reservation block ends (a zero entry);
/// - the structure block is one root node then `FDT_END`; each node is
///   `FDT_BEGIN_NODE`, a NUL-terminated UTF-8 name, its properties, its
///   children, `FDT_END_NODE`, at most [`MAX_DEPTH`] deep; no `FDT_NOP`
///   (the reader skips them in some places only; `dtc` or `fdt_pack`
///   remove them);
/// - a property's value lies inside the structure block, its name is a
///   NUL-terminated UTF-8 string inside the strings block;
///   `#address-cells` and `#size-cells` are one cell;
/// - an alias (a property of a node named `aliases`) names a full path
///   (starts with `/`) and is not itself named like one, so a path
///   resolves through at most one alias.
///
/// # Errors
///
/// What is wrong, for [`DtbError::Malformed`].
pub fn well_formed(blob: &[u8]) -> Result<(), &'static str> {
    let word = |b: &[u8], at: usize| -> Option<u32> {
        let bytes = b.get(at..at.checked_add(4)?)?;
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let header = |n: usize| word(blob, 4 * n).ok_or("shorter than a header");
    let blob = blob
        .get(..header(1)? as usize)
        .ok_or("shorter than its header's totalsize")?;
    let block = |off: u32, size: u32| {
        let off = off as usize;
        blob.get(off..off.checked_add(size as usize)?)
    };
    let structs = block(header(2)?, header(9)?).ok_or("structure block outside the blob")?;
    let strings = block(header(3)?, header(8)?).ok_or("strings block outside the blob")?;
    let mut at = header(4)? as usize;
    loop {
        let entry = blob
            .get(at..at.saturating_add(16))
            .ok_or("memory reservation block without its end")?;
        if entry.iter().all(|&b| b == 0) {
            break;
        }
        at += 16;
    }

    // A C string at the start of `b`: its bytes (UTF-8) and its length with
    // the NUL.
    fn cstr(b: &[u8]) -> Option<(&str, usize)> {
        let end = b.iter().position(|&c| c == 0)?;
        Some((core::str::from_utf8(&b[..end]).ok()?, end + 1))
    }
    let aligned = |n: usize| n.next_multiple_of(4);
    let mut at = 0;
    let mut depth = 0;
    let mut root_done = false;
    // Whether the node last begun may still have properties, and whether
    // it is an `aliases` node.
    let (mut props, mut aliases) = (false, false);
    loop {
        let token = word(structs, at).ok_or("structure block ends without FDT_END")?;
        at += 4;
        match token {
            FDT_BEGIN_NODE => {
                if depth == 0 && root_done {
                    return Err("more than one root node");
                }
                let (name, len) = structs
                    .get(at..)
                    .and_then(cstr)
                    .ok_or("a node name that is not a UTF-8 C string")?;
                at += aligned(len);
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err("nodes nested too deep");
                }
                props = true;
                aliases = name.split('@').next() == Some("aliases");
            }
            FDT_PROP => {
                if !props {
                    return Err("a property after a child node, or outside any node");
                }
                let len = word(structs, at).ok_or("a truncated property")? as usize;
                let name_at = word(structs, at + 4).ok_or("a truncated property")? as usize;
                at += 8;
                let value = at
                    .checked_add(len)
                    .and_then(|end| structs.get(at..end))
                    .ok_or("a property value past the structure block")?;
                at += aligned(len);
                let (name, _) = strings
                    .get(name_at..)
                    .and_then(cstr)
                    .ok_or("a property name that is not a UTF-8 C string in the strings block")?;
                if matches!(name, "#address-cells" | "#size-cells") && value.len() != 4 {
                    return Err("#address-cells or #size-cells that is not one cell");
                }
                if aliases && (name.starts_with('/') || !value.starts_with(b"/")) {
                    return Err("an alias that does not name a full path");
                }
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err("FDT_END_NODE outside any node");
                }
                depth -= 1;
                root_done = depth == 0;
                props = false;
            }
            FDT_END if depth == 0 && root_done => return Ok(()),
            FDT_END => return Err("FDT_END inside a node, or before the root"),
            FDT_NOP => return Err("FDT_NOP tokens (remove them: dtc -I dtb -O dtb)"),
            _ => return Err("an unknown structure-block token"),
        }
    }
}

fn model<'a>(fdt: &Fdt<'a>) -> &'a str {
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
fn reg_ranges<'b, 'a>(
    node: FdtNode<'b, 'a>,
    what: &'static str,
) -> impl Iterator<Item = Result<PhysRange, DtbError>> + use<'b, 'a> {
    node.reg().into_iter().flatten().filter_map(move |region| {
        let size = region.size?;
        Some(
            PhysRange::from_base_size(region.starting_address as u64, size as u64)
                .map_err(|e| DtbError::BadRange(what, e)),
        )
    })
}

fn memory<'a>(fdt: &Fdt<'a>) -> Result<RangeSet<MAX_RANGES>, DtbError> {
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

fn reserved<'a>(fdt: &Fdt<'a>) -> Result<RangeSet<MAX_RANGES>, DtbError> {
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

fn initrd<'a>(chosen: FdtNode<'_, 'a>) -> Result<Option<PhysRange>, DtbError> {
    let prop = |name| chosen.property(name).and_then(|p| p.as_usize());
    match (prop("linux,initrd-start"), prop("linux,initrd-end")) {
        (Some(start), Some(end)) => PhysRange::new(start as u64, end as u64)
            .map(Some)
            .map_err(|_| DtbError::BadInitrd),
        _ => Ok(None),
    }
}

fn cpus<'a>(fdt: &Fdt<'a>) -> Result<CpuList, DtbError> {
    let mut list = CpuList {
        mpidrs: [0; MAX_CPUS],
        len: 0,
        ignored: 0,
        no_reg: 0,
    };
    let nodes = fdt
        .find_node("/cpus")
        .into_iter()
        .flat_map(|c| c.children());
    for node in nodes.filter(|n| is_device_type(n, "cpu")) {
        let Some(mpidr) = node.reg().and_then(|mut r| r.next()) else {
            list.no_reg += 1;
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

/// The console PL011: its registers, and its interrupt's INTID if its
/// `interrupts` is a GIC SPI (`<0 N flags>`: INTID 32 + N).
fn uart<'a>(fdt: &Fdt<'a>, chosen: Option<FdtNode<'_, 'a>>) -> Option<(PhysAddr, Option<u32>)> {
    // Prefer the console /chosen/stdout-path names ("path[:options]").
    let stdout = chosen
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
        .and_then(|path| fdt.find_node(path.split(':').next().unwrap_or(path)))
        .filter(is_pl011);
    let node = stdout.or_else(|| fdt.find_compatible(&["arm,pl011"]))?;
    let reg = node.reg()?.next()?;
    let cells: Option<[u32; 3]> = node.property("interrupts").and_then(|p| {
        let v = p.value;
        (v.len() == 12).then(|| {
            core::array::from_fn(|i| {
                u32::from_be_bytes([v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]])
            })
        })
    });
    let intid = cells.filter(|c| c[0] == 0 && c[1] < 988).map(|c| 32 + c[1]);
    Some((PhysAddr::new(reg.starting_address as u64), intid))
}

fn gic<'a>(fdt: &Fdt<'a>) -> Option<Gic> {
    let two_ranges = |node: FdtNode<'_, 'a>| {
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

fn psci<'a>(fdt: &Fdt<'a>) -> Option<PsciConduit> {
    let node = fdt.find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
    match node.property("method").and_then(|p| p.as_str())? {
        "smc" => Some(PsciConduit::Smc),
        "hvc" => Some(PsciConduit::Hvc),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;
    use vm_fdt::FdtWriter;

    /// What a QEMU virt machine passes, trimmed: memory, four CPUs, a
    /// GICv3, PSCI over SMC, two PL011s with stdout on the second, an initrd.
    fn qemu_like(cpus: u32, with_memory: bool, psci: &str) -> Vec<u8> {
        let reserve = vm_fdt::FdtReserveEntry::new(0x4c00_0000, 0x1000).unwrap();
        let mut w = FdtWriter::new_with_mem_reserv(&[reserve]).unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_string("model", "linux,dummy-virt").unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("bootargs", "log=debug -- x").unwrap();
        w.property_string("stdout-path", "/pl011@9040000:115200")
            .unwrap();
        w.property_u64("linux,initrd-start", 0x4800_0000).unwrap();
        w.property_u64("linux,initrd-end", 0x4830_0000).unwrap();
        w.property("rng-seed", &[7; 32]).unwrap();
        w.property_u64("kaslr-seed", 0xfeed).unwrap();
        w.end_node(chosen).unwrap();
        if with_memory {
            let mem = w.begin_node("memory@40000000").unwrap();
            w.property_string("device_type", "memory").unwrap();
            w.property_array_u64("reg", &[0x4000_0000, 0x4000_0000])
                .unwrap();
            w.end_node(mem).unwrap();
        }
        let cpus_node = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        for n in 0..cpus {
            let c = w.begin_node(&std::format!("cpu@{n}")).unwrap();
            w.property_string("device_type", "cpu").unwrap();
            w.property_u32("reg", n).unwrap();
            w.end_node(c).unwrap();
        }
        let c = w.begin_node("cpu@ff").unwrap();
        w.property_string("device_type", "cpu").unwrap();
        w.end_node(c).unwrap();
        w.end_node(cpus_node).unwrap();
        let gic = w.begin_node("intc@8000000").unwrap();
        w.property_string("compatible", "arm,gic-v3").unwrap();
        w.property_array_u64("reg", &[0x0800_0000, 0x1_0000, 0x080a_0000, 0xf6_0000])
            .unwrap();
        w.end_node(gic).unwrap();
        let p = w.begin_node("psci").unwrap();
        w.property_string("compatible", "arm,psci-1.0").unwrap();
        w.property_string("method", psci).unwrap();
        w.end_node(p).unwrap();
        for (base, spi) in [(0x0900_0000u64, 1), (0x0904_0000, 8)] {
            let u = w.begin_node(&std::format!("pl011@{base:x}")).unwrap();
            w.property_string("compatible", "arm,pl011").unwrap();
            w.property_array_u64("reg", &[base, 0x1000]).unwrap();
            w.property_array_u32("interrupts", &[0, spi, 4]).unwrap();
            w.end_node(u).unwrap();
        }
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn reads_a_qemu_like_machine() {
        let blob = qemu_like(4, true, "smc");
        assert_eq!(blob_size(&blob), Ok(blob.len()));
        let p = parse(&blob, 0x4400_0000).unwrap();
        assert_eq!(p.model, "linux,dummy-virt");
        assert_eq!(p.dtb.start().as_u64(), 0x4400_0000);
        assert_eq!(p.dtb.size(), blob.len() as u64);
        assert_eq!(p.memory.as_slice().len(), 1);
        assert_eq!(p.memory.total_size(), 0x4000_0000);
        assert_eq!(p.reserved.total_size(), 0x1000);
        let initrd = p.initrd.unwrap();
        assert_eq!(
            (initrd.start().as_u64(), initrd.size()),
            (0x4800_0000, 0x30_0000)
        );
        assert_eq!(p.cpus.mpidrs(), [0, 1, 2, 3]);
        assert_eq!((p.cpus.ignored, p.cpus.no_reg), (0, 1));
        assert_eq!(p.uart.as_u64(), 0x0904_0000, "the stdout-path one");
        assert_eq!(p.uart_intid, Some(40), "SPI 8");
        assert_eq!(p.rng_seed, [7; 32]);
        assert_eq!(p.kaslr_seed, Some(0xfeed));
        assert!(
            matches!(p.gic, Some(Gic::V3 { distributor, .. }) if distributor.start().as_u64() == 0x0800_0000)
        );
        assert_eq!(p.psci, Some(PsciConduit::Smc));
        assert_eq!(p.bootargs, "log=debug -- x");
    }

    #[test]
    fn cpus_beyond_the_limit_are_counted_not_kept() {
        let blob = qemu_like(10, true, "hvc");
        let p = parse(&blob, 0).unwrap();
        assert_eq!(p.cpus.mpidrs().len(), MAX_CPUS);
        assert_eq!(p.uart_intid, Some(40));
        assert_eq!(p.cpus.ignored, 2);
        assert_eq!(p.psci, Some(PsciConduit::Hvc));
    }

    /// The offset of the `FDT_PROP` token of the first property named
    /// `name` in `blob` (written by vm-fdt: well formed).
    fn prop_token(blob: &[u8], name: &str) -> usize {
        let be = |at: usize| u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        let (structs, strings) = (be(8), be(12));
        let mut at = structs;
        loop {
            match be(at) {
                1 => {
                    let len = blob[at + 4..].iter().position(|&b| b == 0).unwrap() + 1;
                    at += 4 + len.next_multiple_of(4);
                }
                3 => {
                    let name_at = strings + be(at + 8);
                    if blob[name_at..].starts_with(name.as_bytes())
                        && blob[name_at + name.len()] == 0
                    {
                        return at;
                    }
                    at += 12 + be(at + 4).next_multiple_of(4);
                }
                2 | 4 => at += 4,
                t => panic!("no property {name} (token {t})"),
            }
        }
    }

    /// A small machine whose root's `#address-cells` is `cells`, with
    /// `extra` written into the root before its other nodes.
    fn machine(cells: &[u8], extra: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property("#address-cells", cells).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        extra(&mut w);
        // The rest of the machine, as qemu_like writes it.
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("stdout-path", "/pl011@9000000").unwrap();
        w.end_node(chosen).unwrap();
        let mem = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u32("reg", &[0, 0x4000_0000, 0, 0x4000_0000])
            .unwrap();
        w.end_node(mem).unwrap();
        let cpus = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        let c = w.begin_node("cpu@0").unwrap();
        w.property_string("device_type", "cpu").unwrap();
        w.property_u32("reg", 0).unwrap();
        w.end_node(c).unwrap();
        w.end_node(cpus).unwrap();
        let u = w.begin_node("pl011@9000000").unwrap();
        w.property_string("compatible", "arm,pl011").unwrap();
        w.property_array_u32("reg", &[0, 0x0900_0000, 0, 0x1000])
            .unwrap();
        w.end_node(u).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    // Blobs the `fdt` crate panics on (or recurses on until the stack
    // overflows), found by the platform fuzz target: each is refused as
    // malformed instead.

    #[test]
    fn a_cell_count_that_is_not_a_cell_is_refused() {
        let ok = machine(&2u32.to_be_bytes(), |_| {});
        assert!(parse(&ok, 0).is_ok());
        // `#address-cells = <>` in the root: "not enough bytes for
        // #address-cells value" when the memory node's reg is read.
        let blob = machine(&[], |_| {});
        assert!(matches!(parse(&blob, 0), Err(DtbError::Malformed(_))));
    }

    #[test]
    fn a_property_name_outside_the_strings_block_is_refused() {
        let mut blob = qemu_like(1, true, "smc");
        let at = prop_token(&blob, "model");
        blob[at + 8..at + 12].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
        assert!(matches!(parse(&blob, 0), Err(DtbError::Malformed(_))));
        // A name that is not UTF-8.
        let mut blob = qemu_like(1, true, "smc");
        let strings = u32::from_be_bytes(blob[12..16].try_into().unwrap()) as usize;
        let name = strings + u32::from_be_bytes(blob[at + 8..at + 12].try_into().unwrap()) as usize;
        blob[name] = 0xff;
        assert_eq!(
            parse(&blob, 0).unwrap_err(),
            DtbError::Malformed(
                "a property name that is not a UTF-8 C string in the strings block"
            )
        );
    }

    #[test]
    fn a_property_value_past_the_block_is_refused() {
        let mut blob = qemu_like(1, true, "smc");
        let at = prop_token(&blob, "model");
        blob[at + 4..at + 8].copy_from_slice(&0x0100_0000u32.to_be_bytes());
        assert!(matches!(parse(&blob, 0), Err(DtbError::Malformed(_))));
    }

    #[test]
    fn an_alias_loop_is_refused() {
        // stdout-path names no node; the reader then resolves it as an
        // alias, whose value it resolves again, forever.
        let blob = machine(&2u32.to_be_bytes(), |w| {
            let a = w.begin_node("aliases").unwrap();
            w.property_string("serial0", "serial0").unwrap();
            w.end_node(a).unwrap();
            let c = w.begin_node("chosen").unwrap();
            w.property_string("stdout-path", "serial0").unwrap();
            w.end_node(c).unwrap();
        });
        assert!(matches!(parse(&blob, 0), Err(DtbError::Malformed(_))));
        // Aliases as dtc writes them are fine.
        let blob = machine(&2u32.to_be_bytes(), |w| {
            let a = w.begin_node("aliases").unwrap();
            w.property_string("serial0", "/pl011@9000000").unwrap();
            w.end_node(a).unwrap();
        });
        assert!(parse(&blob, 0).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 64 deep (the most vm-fdt and Linux write), the reader indexes
        // past its 64-entry parents array.
        let nest = |levels: usize| {
            machine(&2u32.to_be_bytes(), |w| {
                let nodes: Vec<_> = (0..levels).map(|_| w.begin_node("n").unwrap()).collect();
                for n in nodes.into_iter().rev() {
                    w.end_node(n).unwrap();
                }
            })
        };
        assert!(parse(&nest(MAX_DEPTH - 1), 0).is_ok());
        assert_eq!(
            parse(&nest(63), 0).unwrap_err(),
            DtbError::Malformed("nodes nested too deep")
        );
    }

    #[test]
    fn nop_tokens_are_refused() {
        // A property turned into three FDT_NOPs (as fdt_nop_property does)
        // in a node the reader skips: it asserts an FDT_END_NODE there.
        let mut blob = machine(&2u32.to_be_bytes(), |w| {
            let n = w.begin_node("skipped").unwrap();
            w.property_null("a").unwrap();
            w.property_null("b").unwrap();
            w.end_node(n).unwrap();
        });
        let at = prop_token(&blob, "a");
        for word in blob[at..at + 12].chunks_exact_mut(4) {
            word.copy_from_slice(&4u32.to_be_bytes());
        }
        assert!(matches!(parse(&blob, 0), Err(DtbError::Malformed(_))));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let blob = qemu_like(1, false, "smc");
        assert!(matches!(parse(&blob, 0), Err(DtbError::NoMemory)));
        assert!(matches!(
            parse(&blob[..blob.len() - 8], 0),
            Err(DtbError::Invalid(_))
        ));
        assert!(matches!(parse(&[0u8; 64], 0), Err(DtbError::Invalid(_))));
        assert_eq!(
            blob_size(&[0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0, 8]),
            Err(DtbError::BadSize(8))
        );
        assert_eq!(
            blob_size(&[0, 0, 0, 0, 0x7f, 0, 0, 0]),
            Err(DtbError::BadSize(0x7f00_0000))
        );
        assert_eq!(blob_size(&[0; 3]), Err(DtbError::BadSize(0)));
        for e in [
            DtbError::Missing,
            DtbError::Misaligned(3),
            DtbError::BadSize(1),
            DtbError::NoCpus,
        ] {
            assert!(!std::format!("{e}").is_empty());
        }
    }
}
