//! Reading the machine from the guest's device tree: RAM, vCPUs, UART, the ROM slot, the GICv3 and the timer's interrupts, bootargs.
//!
//! Portable (no MMIO, no assembly), so it is unit-tested on the host against
//! device trees built by the tests.
//!
//! The interrupt controller and the timer are optional (a scenario that
//! needs them fails if they are absent), but a node that is there and
//! malformed is an error for every scenario: a `compatible = "arm,gic-v3"`
//! node gives the distributor and `#redistributor-regions` (default 1)
//! redistributor regions in its `reg`, and must say `#interrupt-cells = <3>`;
//! an `arm,armv8-timer` node's `interrupts` are four GIC specifiers
//! `<type number flags>` (secure physical, non-secure physical, virtual,
//! hypervisor; type 1 = PPI, INTID = 16 + number) whose interrupt parent
//! (its own `interrupt-parent`, else the root's, else the only GIC) must be
//! that GIC.

use core::fmt;

use fdt::node::FdtNode;
use fdt::Fdt;

/// The most vCPUs a guest handles (one stack each, indexed by `MPIDR_EL1.Aff0`).
pub const MAX_CPUS: usize = 8;

/// A range of guest physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.end()
    }
}

/// The most redistributor regions read from the GIC node.
pub const MAX_REDIST_REGIONS: usize = 4;

/// How an interrupt line signals (the specifier's flags cell, bits 3:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered (flags 1 rising, 2 falling).
    Edge,
    /// Level-sensitive (flags 4 high, 8 low), or unspecified (0).
    Level,
}

/// An interrupt as a GIC specifier names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irq {
    /// The GIC's interrupt id: 16–31 for a PPI, 32–1019 for an SPI.
    pub intid: u32,
    /// How it signals.
    pub trigger: Trigger,
}

impl Irq {
    /// Decodes a three-cell GIC specifier `<type number flags>`: type 0 is an
    /// SPI (INTID 32 + number), type 1 a PPI (INTID 16 + number); `None` for
    /// another type (extended ranges, not in GICv3 without them) or a number
    /// out of its range.
    pub fn from_specifier(cells: [u32; 3]) -> Option<Self> {
        let [kind, number, flags] = cells;
        let intid = match kind {
            0 if number < 988 => 32 + number,
            1 if number < 16 => 16 + number,
            _ => return None,
        };
        let trigger = if flags & 0b0011 != 0 {
            Trigger::Edge
        } else {
            Trigger::Level
        };
        Some(Self { intid, trigger })
    }
}

/// A GICv3 (`compatible = "arm,gic-v3"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    /// The distributor's registers (`reg` entry 0, 64 KiB).
    pub distributor: Region,
    redistributors: [Region; MAX_REDIST_REGIONS],
    nredistributors: usize,
    /// `redistributor-stride`, if given (else each redistributor's
    /// `GICR_TYPER` says: 128 KiB, or 256 KiB with virtual LPIs).
    pub redistributor_stride: Option<u64>,
    /// The maintenance interrupt (`interrupts`), if listed.
    pub maintenance: Option<Irq>,
}

impl Gic {
    /// The redistributor regions (`reg` entries 1..=`#redistributor-regions`):
    /// each holds consecutive redistributors, one per CPU, the last one
    /// flagged by its `GICR_TYPER.Last`.
    pub fn redistributors(&self) -> &[Region] {
        &self.redistributors[..self.nredistributors]
    }
}

/// The architected timer's interrupts (`compatible = "arm,armv8-timer"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The secure EL1 physical timer (not for a non-secure guest).
    pub secure_phys: Irq,
    /// The non-secure EL1 physical timer (`CNTP_*_EL0`).
    pub phys: Irq,
    /// The virtual timer (`CNTV_*_EL0`).
    pub virt: Irq,
    /// The EL2 physical timer, if listed.
    pub hyp: Option<Irq>,
}

/// Why the device tree could not be used.
#[derive(Debug)]
pub enum DtError {
    /// The blob failed to parse.
    Invalid(fdt::FdtError),
    /// No memory node (`device_type = "memory"`) with a non-empty `reg`.
    NoMemory,
    /// No `/cpus/cpu@N` node with a `reg`.
    NoCpus,
    /// No PL011 UART, neither by `/chosen/stdout-path` nor by `compatible`.
    NoUart,
    /// The `arm,gic-v3` node is malformed (what is wrong).
    BadGic(&'static str),
    /// The `arm,armv8-timer` node is malformed (what is wrong).
    BadTimer(&'static str),
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "invalid device tree: {e:?}"),
            Self::NoMemory => f.write_str("device tree has no memory node with a reg"),
            Self::NoCpus => f.write_str("device tree lists no /cpus/cpu node with a reg"),
            Self::NoUart => f.write_str("device tree has no PL011 UART (arm,pl011)"),
            Self::BadGic(what) => write!(f, "GICv3 node (arm,gic-v3): {what}"),
            Self::BadTimer(what) => write!(f, "timer node (arm,armv8-timer): {what}"),
        }
    }
}

/// What a guest learns from its device tree.
#[derive(Clone, Debug)]
pub struct Platform<'a> {
    /// The device tree blob itself (the scenarios must not write over it).
    pub dtb: Region,
    /// Guest RAM: the first memory node's first `reg` entry.
    pub ram: Region,
    cpus: [u64; MAX_CPUS],
    ncpus: usize,
    /// CPUs listed beyond [`MAX_CPUS`], left off.
    pub cpus_ignored: usize,
    /// The PL011's register base.
    pub uart: u64,
    /// The read-only memory slot (`compatible = "hyp,rom"`), if listed.
    pub rom: Option<Region>,
    /// The GICv3, if listed.
    pub gic: Option<Gic>,
    /// The architected timer's interrupts, if listed.
    pub timer: Option<Timer>,
    /// `/chosen/bootargs` (empty if absent).
    pub bootargs: &'a str,
}

impl<'a> Platform<'a> {
    /// Reads the device tree in `blob`, which the guest found at `addr`.
    ///
    /// # Errors
    ///
    /// A [`DtError`] naming what is missing or malformed.
    pub fn parse(blob: &'a [u8], addr: u64) -> Result<Self, DtError> {
        let fdt = Fdt::new(blob).map_err(DtError::Invalid)?;
        let dtb = Region {
            base: addr,
            size: fdt.total_size() as u64,
        };

        let ram = fdt
            .find_node("/")
            .into_iter()
            .flat_map(|root| root.children())
            .filter(|node| is_memory(node))
            .find_map(|node| first_reg(&node).filter(|r| r.size > 0))
            .ok_or(DtError::NoMemory)?;

        let mut cpus = [0; MAX_CPUS];
        let mut ncpus = 0;
        let mut cpus_ignored = 0;
        let cpu_nodes = fdt
            .find_node("/cpus")
            .into_iter()
            .flat_map(|c| c.children());
        for node in cpu_nodes.filter(|n| n.name == "cpu" || n.name.starts_with("cpu@")) {
            let Some(reg) = node.reg().and_then(|mut r| r.next()) else {
                continue;
            };
            if ncpus < MAX_CPUS {
                cpus[ncpus] = reg.starting_address as u64;
                ncpus += 1;
            } else {
                cpus_ignored += 1;
            }
        }
        if ncpus == 0 {
            return Err(DtError::NoCpus);
        }

        let chosen = fdt.find_node("/chosen");
        let uart = chosen
            .and_then(|c| stdout_node(&fdt, &c))
            .filter(|n| is_compatible(n, "arm,pl011"))
            .or_else(|| fdt.find_compatible(&["arm,pl011"]))
            .and_then(|n| first_reg(&n))
            .ok_or(DtError::NoUart)?
            .base;

        let rom = fdt
            .find_compatible(&["hyp,rom"])
            .and_then(|n| first_reg(&n));

        let gic_node = fdt.find_compatible(&["arm,gic-v3"]);
        let gic = gic_node.map(|n| parse_gic(&n)).transpose()?;
        let timer = fdt
            .find_compatible(&["arm,armv8-timer"])
            .map(|n| parse_timer(&fdt, &n, gic_node.as_ref()))
            .transpose()?;

        let bootargs = chosen
            .and_then(|c| c.property("bootargs"))
            .and_then(|p| p.as_str())
            .unwrap_or("");

        Ok(Self {
            dtb,
            ram,
            cpus,
            ncpus,
            cpus_ignored,
            uart,
            rom,
            gic,
            timer,
            bootargs,
        })
    }

    /// The MPIDR affinity values (`reg`) of the listed CPUs, in tree order.
    pub fn cpus(&self) -> &[u64] {
        &self.cpus[..self.ncpus]
    }

    /// The value of `key=value` in the bootargs (the last one if repeated).
    pub fn arg(&self, key: &str) -> Option<&'a str> {
        self.bootargs
            .split_ascii_whitespace()
            .rev()
            .filter_map(|token| token.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// The big-endian u32 cells of a property value (a trailing partial cell
/// is dropped).
fn cells<'a>(value: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
    value
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// A property holding one cell.
fn cell(node: &FdtNode<'_, '_>, name: &str) -> Option<u32> {
    let value = node.property(name)?.value;
    (value.len() == 4).then(|| cells(value).next()).flatten()
}

/// The three-cell specifiers of a node's `interrupts`; `None` if it has no
/// such property, `Some(Err)` if its length is not a multiple of three cells.
fn specifiers<'a>(
    node: &FdtNode<'_, 'a>,
) -> Option<Result<impl Iterator<Item = [u32; 3]> + 'a, ()>> {
    let value = node.property("interrupts")?.value;
    if !value.len().is_multiple_of(12) {
        return Some(Err(()));
    }
    Some(Ok(value.chunks_exact(12).map(|c| {
        let mut it = cells(c);
        [0; 3].map(|_| it.next().unwrap_or(0))
    })))
}

fn parse_gic(node: &FdtNode<'_, '_>) -> Result<Gic, DtError> {
    if cell(node, "#interrupt-cells") != Some(3) {
        return Err(DtError::BadGic("#interrupt-cells is not <3>"));
    }
    let nregions = match cell(node, "#redistributor-regions") {
        None => 1,
        Some(n) if (1..=MAX_REDIST_REGIONS as u32).contains(&n) => n as usize,
        Some(_) => return Err(DtError::BadGic("#redistributor-regions is 0 or above 4")),
    };
    let mut regs = node
        .reg()
        .ok_or(DtError::BadGic("no reg with 2 address and size cells"))?
        .map(|r| Region {
            base: r.starting_address as u64,
            size: r.size.unwrap_or(0) as u64,
        });
    let distributor = regs
        .next()
        .filter(|r| r.size >= 0x1_0000)
        .ok_or(DtError::BadGic("no distributor of 64 KiB in reg"))?;
    let mut redistributors = [Region { base: 0, size: 0 }; MAX_REDIST_REGIONS];
    for slot in redistributors.iter_mut().take(nregions) {
        *slot = regs
            .next()
            .filter(|r| r.size >= 0x2_0000)
            .ok_or(DtError::BadGic(
                "fewer redistributor regions of 128 KiB in reg than #redistributor-regions",
            ))?;
    }
    let redistributor_stride = match node.property("redistributor-stride") {
        None => None,
        Some(p) => {
            let mut it = cells(p.value);
            let stride = match (p.value.len(), it.next(), it.next()) {
                (4, Some(lo), _) => u64::from(lo),
                (8, Some(hi), Some(lo)) => (u64::from(hi) << 32) | u64::from(lo),
                _ => return Err(DtError::BadGic("redistributor-stride is not 1 or 2 cells")),
            };
            if stride != 0 && !stride.is_multiple_of(0x1_0000) {
                return Err(DtError::BadGic(
                    "redistributor-stride is not a multiple of 64 KiB",
                ));
            }
            (stride != 0).then_some(stride)
        }
    };
    let maintenance = match specifiers(node) {
        None => None,
        Some(Err(())) => return Err(DtError::BadGic("interrupts is not in 3-cell specifiers")),
        Some(Ok(mut it)) => Some(
            it.next()
                .and_then(Irq::from_specifier)
                .ok_or(DtError::BadGic("maintenance interrupt is no PPI or SPI"))?,
        ),
    };
    Ok(Gic {
        distributor,
        redistributors,
        nredistributors: nregions,
        redistributor_stride,
        maintenance,
    })
}

fn parse_timer(
    fdt: &Fdt<'_>,
    node: &FdtNode<'_, '_>,
    gic: Option<&FdtNode<'_, '_>>,
) -> Result<Timer, DtError> {
    let Some(gic) = gic else {
        return Err(DtError::BadTimer(
            "no GICv3 (arm,gic-v3) to be its interrupt parent",
        ));
    };
    // The interrupt parent: the node's own, else the root's (the timer sits
    // at the root in the trees this guest meets), else the only GIC.
    let parent = cell(node, "interrupt-parent").or_else(|| {
        fdt.find_node("/")
            .and_then(|root| cell(&root, "interrupt-parent"))
    });
    if let Some(phandle) = parent {
        if cell(gic, "phandle") != Some(phandle) {
            return Err(DtError::BadTimer("its interrupt parent is not the GICv3"));
        }
    }
    let mut irqs = match specifiers(node) {
        Some(Ok(it)) => it.map(Irq::from_specifier),
        _ => {
            return Err(DtError::BadTimer(
                "interrupts is missing or not in 3-cell specifiers",
            ))
        }
    };
    let mut ppi = |what| match irqs.next() {
        Some(Some(irq)) if (16..32).contains(&irq.intid) => Ok(Some(irq)),
        Some(_) => Err(DtError::BadTimer(what)),
        None => Ok(None),
    };
    let missing =
        DtError::BadTimer("fewer than 3 interrupts (secure, non-secure physical, virtual)");
    let secure_phys = ppi("secure physical timer interrupt is no PPI")?;
    let phys = ppi("physical timer interrupt is no PPI")?;
    let virt = ppi("virtual timer interrupt is no PPI")?;
    let hyp = ppi("hypervisor timer interrupt is no PPI")?;
    match (secure_phys, phys, virt) {
        (Some(secure_phys), Some(phys), Some(virt)) => Ok(Timer {
            secure_phys,
            phys,
            virt,
            hyp,
        }),
        _ => Err(missing),
    }
}

/// Parses a decimal or `0x` hexadecimal number.
pub fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn is_memory(node: &FdtNode<'_, '_>) -> bool {
    match node.property("device_type").and_then(|p| p.as_str()) {
        Some(kind) => kind == "memory",
        None => node.name == "memory" || node.name.starts_with("memory@"),
    }
}

fn is_compatible(node: &FdtNode<'_, '_>, with: &str) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|s| s == with))
}

fn first_reg(node: &FdtNode<'_, '_>) -> Option<Region> {
    let reg = node.reg()?.next()?;
    Some(Region {
        base: reg.starting_address as u64,
        size: reg.size.unwrap_or(0) as u64,
    })
}

/// The node `/chosen/stdout-path` names: a path or an alias, with any
/// `:options` suffix dropped.
fn stdout_node<'b, 'a>(fdt: &'b Fdt<'a>, chosen: &FdtNode<'b, 'a>) -> Option<FdtNode<'b, 'a>> {
    let path = chosen.property("stdout-path")?.as_str()?;
    let path = path.split(':').next()?;
    if path.starts_with('/') {
        fdt.find_node(path)
    } else {
        let aliases = fdt.find_node("/aliases")?;
        let target = aliases.property(path)?.as_str()?;
        fdt.find_node(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a flattened device tree (version 17), enough for these tests.
    #[derive(Default)]
    struct Builder {
        structs: Vec<u8>,
        strings: Vec<u8>,
    }

    const BEGIN_NODE: u32 = 1;
    const END_NODE: u32 = 2;
    const PROP: u32 = 3;
    const END: u32 = 9;

    impl Builder {
        fn word(&mut self, w: u32) {
            self.structs.extend_from_slice(&w.to_be_bytes());
        }

        fn pad(&mut self) {
            while !self.structs.len().is_multiple_of(4) {
                self.structs.push(0);
            }
        }

        fn begin(&mut self, name: &str) -> &mut Self {
            self.word(BEGIN_NODE);
            self.structs.extend_from_slice(name.as_bytes());
            self.structs.push(0);
            self.pad();
            self
        }

        fn end(&mut self) -> &mut Self {
            self.word(END_NODE);
            self
        }

        fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            self.word(PROP);
            self.word(value.len() as u32);
            self.word(offset);
            self.structs.extend_from_slice(value);
            self.pad();
            self
        }

        fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
            let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
            self.prop(name, &bytes)
        }

        fn string(&mut self, name: &str, value: &str) -> &mut Self {
            let mut bytes = value.as_bytes().to_vec();
            bytes.push(0);
            self.prop(name, &bytes)
        }

        fn finish(mut self) -> Vec<u8> {
            self.word(END);
            let header = 40;
            let rsvmap = 16;
            let off_struct = header + rsvmap;
            let off_strings = off_struct + self.structs.len();
            let total = off_strings + self.strings.len();
            let mut blob = Vec::new();
            for w in [
                0xd00d_feed,
                total as u32,
                off_struct as u32,
                off_strings as u32,
                header as u32, // the memory reservation map
                17,
                16,
                0,
                self.strings.len() as u32,
                self.structs.len() as u32,
            ] {
                blob.extend_from_slice(&w.to_be_bytes());
            }
            blob.extend_from_slice(&[0; 16]);
            blob.extend_from_slice(&self.structs);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    /// A tree shaped like the one `docs/guest-abi.md` describes.
    fn hyp_tree(ncpus: u32, stdout: Option<&str>, rom: bool, bootargs: Option<&str>) -> Vec<u8> {
        tree_with(ncpus, stdout, rom, bootargs, |_| {})
    }

    /// [`hyp_tree`] with more nodes and root properties added by `extra`
    /// (called with the root node open, after its first properties).
    fn tree_with(
        ncpus: u32,
        stdout: Option<&str>,
        rom: bool,
        bootargs: Option<&str>,
        extra: impl FnOnce(&mut Builder),
    ) -> Vec<u8> {
        let mut b = Builder::default();
        b.begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2])
            .string("compatible", "hyp,guest");
        extra(&mut b);
        b.begin("chosen");
        if let Some(path) = stdout {
            b.string("stdout-path", path);
        }
        if let Some(args) = bootargs {
            b.string("bootargs", args);
        }
        b.end();
        b.begin("aliases").string("serial0", "/pl011@9000000").end();
        b.begin("memory@40000000")
            .string("device_type", "memory")
            .cells("reg", &[0, 0x4000_0000, 0, 0x0800_0000])
            .end();
        b.begin("cpus")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[0]);
        for n in 0..ncpus {
            b.begin(&format!("cpu@{n}"))
                .string("device_type", "cpu")
                .string("compatible", "arm,cortex-a72")
                .string("enable-method", "psci")
                .cells("reg", &[n])
                .end();
        }
        // QEMU puts a cpu-map next to the cpu nodes: not a CPU.
        b.begin("cpu-map").begin("cluster0").end().end();
        b.end();
        b.begin("psci")
            .prop("compatible", b"arm,psci-1.0\0arm,psci-0.2\0")
            .string("method", "hvc")
            .end();
        b.begin("pl011@9000000")
            .prop("compatible", b"arm,pl011\0arm,primecell\0")
            .cells("reg", &[0, 0x0900_0000, 0, 0x1000])
            .end();
        if rom {
            b.begin("rom@4000000")
                .string("compatible", "hyp,rom")
                .cells("reg", &[0, 0x0400_0000, 0, 0x20_0000])
                .end();
        }
        b.end();
        b.finish()
    }

    #[test]
    fn reads_the_machine_the_abi_describes() {
        let blob = hyp_tree(4, Some("/pl011@9000000"), true, Some("touch=16 mmu=off"));
        let p = Platform::parse(&blob, 0x47e0_0000).unwrap();
        assert_eq!(
            p.dtb,
            Region {
                base: 0x47e0_0000,
                size: blob.len() as u64
            }
        );
        assert_eq!(
            p.ram,
            Region {
                base: 0x4000_0000,
                size: 128 << 20
            }
        );
        assert_eq!(p.cpus(), &[0, 1, 2, 3]);
        assert_eq!(p.cpus_ignored, 0);
        assert_eq!(p.uart, 0x0900_0000);
        assert_eq!(
            p.rom,
            Some(Region {
                base: 0x0400_0000,
                size: 2 << 20
            })
        );
        assert_eq!(p.bootargs, "touch=16 mmu=off");
        assert_eq!(p.arg("touch"), Some("16"));
        assert_eq!(p.arg("mmu"), Some("off"));
        assert_eq!(p.arg("tou"), None);
    }

    #[test]
    fn stdout_path_with_options_or_alias() {
        for path in ["/pl011@9000000:115200n8", "serial0", "serial0:115200"] {
            let blob = hyp_tree(1, Some(path), false, None);
            let p = Platform::parse(&blob, 0).unwrap();
            assert_eq!(p.uart, 0x0900_0000, "stdout-path {path}");
        }
    }

    #[test]
    fn falls_back_to_compatible_and_defaults() {
        let blob = hyp_tree(1, None, false, None);
        let p = Platform::parse(&blob, 0).unwrap();
        assert_eq!(p.uart, 0x0900_0000);
        assert_eq!(p.rom, None);
        assert_eq!(p.bootargs, "");
        assert_eq!(p.arg("touch"), None);
        // A stdout-path naming a missing node also falls back.
        let blob = hyp_tree(1, Some("/serial@1234"), false, None);
        assert_eq!(Platform::parse(&blob, 0).unwrap().uart, 0x0900_0000);
    }

    #[test]
    fn caps_cpus_at_max() {
        let blob = hyp_tree(10, Some("/pl011@9000000"), false, None);
        let p = Platform::parse(&blob, 0).unwrap();
        assert_eq!(p.cpus(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(p.cpus_ignored, 2);
    }

    #[test]
    fn missing_pieces_are_errors() {
        let mut b = Builder::default();
        b.begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2]);
        b.begin("chosen").end();
        b.end();
        let blob = b.finish();
        assert!(matches!(Platform::parse(&blob, 0), Err(DtError::NoMemory)));

        let mut blob = hyp_tree(0, None, false, None);
        assert!(matches!(Platform::parse(&blob, 0), Err(DtError::NoCpus)));
        blob[0] = 0;
        assert!(matches!(
            Platform::parse(&blob, 0),
            Err(DtError::Invalid(_))
        ));
    }

    const GIC_PHANDLE: u32 = 0x8005;

    /// What the GICv3 and timer nodes hold on the machine the ABI describes,
    /// each part replaceable to break it.
    struct IrqNodes {
        interrupt_cells: u32,
        regions: Option<u32>,
        reg: Vec<u32>,
        stride: Option<Vec<u32>>,
        maintenance: Option<Vec<u32>>,
        root_parent: Option<u32>,
        timer_parent: Option<u32>,
        timer: Option<Vec<u32>>,
    }

    impl Default for IrqNodes {
        fn default() -> Self {
            Self {
                interrupt_cells: 3,
                regions: None,
                reg: vec![0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0x10_0000],
                stride: None,
                maintenance: Some(vec![1, 9, 4]),
                root_parent: Some(GIC_PHANDLE),
                timer_parent: None,
                timer: Some(vec![1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]),
            }
        }
    }

    impl IrqNodes {
        fn tree(&self) -> Vec<u8> {
            tree_with(1, None, false, None, |b| {
                if let Some(parent) = self.root_parent {
                    b.cells("interrupt-parent", &[parent]);
                }
                b.begin("intc@8000000")
                    .string("compatible", "arm,gic-v3")
                    .cells("#interrupt-cells", &[self.interrupt_cells])
                    .prop("interrupt-controller", &[])
                    .cells("reg", &self.reg)
                    .cells("phandle", &[GIC_PHANDLE]);
                if let Some(n) = self.regions {
                    b.cells("#redistributor-regions", &[n]);
                }
                if let Some(stride) = &self.stride {
                    b.cells("redistributor-stride", stride);
                }
                if let Some(m) = &self.maintenance {
                    b.cells("interrupts", m);
                }
                b.end();
                if let Some(irqs) = &self.timer {
                    b.begin("timer")
                        .prop("compatible", b"arm,armv8-timer\0arm,armv7-timer\0");
                    if let Some(parent) = self.timer_parent {
                        b.cells("interrupt-parent", &[parent]);
                    }
                    b.cells("interrupts", irqs).end();
                }
            })
        }

        fn parse(&self) -> Result<(Option<Gic>, Option<Timer>), DtError> {
            let blob = self.tree();
            Platform::parse(&blob, 0).map(|p| (p.gic, p.timer))
        }
    }

    fn level(intid: u32) -> Irq {
        Irq {
            intid,
            trigger: Trigger::Level,
        }
    }

    #[test]
    fn reads_the_gic_and_the_timer() {
        let (gic, timer) = IrqNodes::default().parse().unwrap();
        let gic = gic.unwrap();
        assert_eq!(
            gic.distributor,
            Region {
                base: 0x0800_0000,
                size: 0x1_0000
            }
        );
        assert_eq!(
            gic.redistributors(),
            &[Region {
                base: 0x080a_0000,
                size: 0x10_0000
            }]
        );
        assert_eq!(gic.redistributor_stride, None);
        assert_eq!(gic.maintenance, Some(level(25)));
        assert_eq!(
            timer,
            Some(Timer {
                secure_phys: level(29),
                phys: level(30),
                virt: level(27),
                hyp: Some(level(26)),
            })
        );
    }

    #[test]
    fn gic_and_timer_are_optional() {
        let blob = hyp_tree(1, None, false, None);
        let p = Platform::parse(&blob, 0).unwrap();
        assert_eq!((p.gic, p.timer), (None, None));
        let nodes = IrqNodes {
            timer: None,
            maintenance: None,
            ..IrqNodes::default()
        };
        let (gic, timer) = nodes.parse().unwrap();
        assert_eq!(gic.unwrap().maintenance, None);
        assert_eq!(timer, None);
        // Three timer interrupts (no hypervisor timer) are enough.
        let nodes = IrqNodes {
            timer: Some(vec![1, 13, 8, 1, 14, 8, 1, 11, 8]),
            ..IrqNodes::default()
        };
        let timer = nodes.parse().unwrap().1.unwrap();
        assert_eq!((timer.virt, timer.hyp), (level(27), None));
    }

    #[test]
    fn several_redistributor_regions_and_a_stride() {
        let nodes = IrqNodes {
            regions: Some(2),
            reg: vec![
                0,
                0x0800_0000,
                0,
                0x1_0000,
                0,
                0x080a_0000,
                0,
                0xf6_0000,
                0x100,
                0,
                0,
                0x400_0000,
                // GICC, GICH, GICV of a GICv2-compatible CPU interface: not read.
                0,
                0x0801_0000,
                0,
                0x1_0000,
            ],
            stride: Some(vec![0, 0x4_0000]),
            ..IrqNodes::default()
        };
        let gic = nodes.parse().unwrap().0.unwrap();
        assert_eq!(
            gic.redistributors(),
            &[
                Region {
                    base: 0x080a_0000,
                    size: 0xf6_0000
                },
                Region {
                    base: 0x100_0000_0000,
                    size: 0x400_0000
                }
            ]
        );
        assert_eq!(gic.redistributor_stride, Some(0x4_0000));
        let nodes = IrqNodes {
            stride: Some(vec![0]),
            ..IrqNodes::default()
        };
        assert_eq!(nodes.parse().unwrap().0.unwrap().redistributor_stride, None);
    }

    #[test]
    fn timer_parent_must_be_the_gic() {
        // Its own interrupt-parent wins over the root's.
        let own = IrqNodes {
            root_parent: Some(0x1234),
            timer_parent: Some(GIC_PHANDLE),
            ..IrqNodes::default()
        };
        assert!(own.parse().unwrap().1.is_some());
        // No interrupt-parent anywhere: the only GIC.
        let none = IrqNodes {
            root_parent: None,
            ..IrqNodes::default()
        };
        assert!(none.parse().unwrap().1.is_some());
        for (root_parent, timer_parent) in [(Some(0x1234), None), (None, Some(0x1234))] {
            let other = IrqNodes {
                root_parent,
                timer_parent,
                ..IrqNodes::default()
            };
            assert!(matches!(other.parse(), Err(DtError::BadTimer(_))));
        }
    }

    #[test]
    fn malformed_gic_or_timer_is_an_error() {
        let gic_errors = [
            IrqNodes {
                interrupt_cells: 2,
                ..IrqNodes::default()
            },
            IrqNodes {
                reg: vec![0, 0x0800_0000, 0, 0x1_0000],
                ..IrqNodes::default()
            },
            IrqNodes {
                reg: vec![0, 0x0800_0000, 0, 0x1000, 0, 0x080a_0000, 0, 0x2_0000],
                ..IrqNodes::default()
            },
            IrqNodes {
                regions: Some(2),
                ..IrqNodes::default()
            },
            IrqNodes {
                regions: Some(0),
                ..IrqNodes::default()
            },
            IrqNodes {
                stride: Some(vec![0x1000]),
                ..IrqNodes::default()
            },
            IrqNodes {
                maintenance: Some(vec![1, 9]),
                ..IrqNodes::default()
            },
            IrqNodes {
                maintenance: Some(vec![1, 16, 4]),
                ..IrqNodes::default()
            },
        ];
        for (i, nodes) in gic_errors.iter().enumerate() {
            let got = nodes.parse();
            assert!(matches!(got, Err(DtError::BadGic(_))), "case {i}: {got:?}");
        }
        let timer_errors = [
            vec![1, 13, 4, 1, 14, 4],
            vec![1, 13, 4, 1, 14, 4, 1, 11],
            vec![1, 13, 4, 0, 14, 4, 1, 11, 4],
            vec![1, 13, 4, 1, 14, 4, 2, 11, 4],
            vec![],
        ];
        for (i, irqs) in timer_errors.into_iter().enumerate() {
            let nodes = IrqNodes {
                timer: Some(irqs),
                ..IrqNodes::default()
            };
            let got = nodes.parse();
            assert!(
                matches!(got, Err(DtError::BadTimer(_))),
                "case {i}: {got:?}"
            );
        }
        let no_gic = tree_with(1, None, false, None, |b| {
            b.begin("timer")
                .string("compatible", "arm,armv8-timer")
                .cells("interrupts", &[1, 13, 4, 1, 14, 4, 1, 11, 4])
                .end();
        });
        assert!(matches!(
            Platform::parse(&no_gic, 0),
            Err(DtError::BadTimer(_))
        ));
    }

    #[test]
    fn gic_specifiers() {
        let irq = |cells| Irq::from_specifier(cells);
        assert_eq!(irq([0, 0, 4]), Some(level(32)));
        assert_eq!(irq([0, 987, 4]), Some(level(1019)));
        assert_eq!(irq([0, 988, 4]), None);
        assert_eq!(irq([1, 0, 4]), Some(level(16)));
        assert_eq!(irq([1, 15, 8]), Some(level(31)));
        assert_eq!(irq([1, 16, 4]), None);
        assert_eq!(irq([2, 0, 4]), None);
        assert_eq!(irq([1, 11, 0]), Some(level(27)));
        for flags in [1, 2] {
            let edge = Irq {
                intid: 33,
                trigger: Trigger::Edge,
            };
            assert_eq!(irq([0, 1, flags]), Some(edge));
        }
    }

    /// The tree the hypervisor hands an 8-vCPU guest (`hvcore::guest_dt`,
    /// the same code): what the test guests meet under it.
    #[test]
    fn reads_the_hypervisors_tree() {
        use hvcore::guest_dt::{build, VmDesc};
        use hvcore::memmap::MemoryMap;
        let map = MemoryMap::new(128 << 20, 8);
        let blob = build(&VmDesc::new(&map, "n=3")).unwrap();
        let p = Platform::parse(&blob, 0x4800_0000).unwrap();
        assert_eq!(p.cpus(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(p.uart, 0x0900_0000);
        let gic = p.gic.unwrap();
        assert_eq!(gic.distributor.base, 0x0800_0000);
        assert_eq!(gic.redistributors().len(), 1);
        assert_eq!(gic.redistributors()[0].base, 0x080a_0000);
        assert_eq!(gic.maintenance, Some(level(25)));
        let timer = p.timer.unwrap();
        assert_eq!(
            [timer.secure_phys, timer.phys, timer.virt],
            [level(29), level(30), level(27)]
        );
        assert_eq!(timer.hyp, Some(level(26)));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("64"), Some(64));
        assert_eq!(parse_u64("0x20000000"), Some(0x2000_0000));
        assert_eq!(parse_u64("0X10"), Some(16));
        assert_eq!(parse_u64("64M"), None);
        assert_eq!(parse_u64(""), None);
    }
}
