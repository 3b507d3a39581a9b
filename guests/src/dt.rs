//! Reading the machine from the guest's device tree: RAM, vCPUs, UART, the ROM slot, bootargs.
//!
//! Portable (no MMIO, no assembly), so it is unit-tested on the host against
//! device trees built by the tests.

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
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "invalid device tree: {e:?}"),
            Self::NoMemory => f.write_str("device tree has no memory node with a reg"),
            Self::NoCpus => f.write_str("device tree lists no /cpus/cpu node with a reg"),
            Self::NoUart => f.write_str("device tree has no PL011 UART (arm,pl011)"),
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
        let mut b = Builder::default();
        b.begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2])
            .string("compatible", "hyp,guest");
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

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("64"), Some(64));
        assert_eq!(parse_u64("0x20000000"), Some(0x2000_0000));
        assert_eq!(parse_u64("0X10"), Some(16));
        assert_eq!(parse_u64("64M"), None);
        assert_eq!(parse_u64(""), None);
    }
}
