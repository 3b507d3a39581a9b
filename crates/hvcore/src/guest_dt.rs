//! The device tree handed to a guest: memory, vCPUs, PSCI, the GICv3 and the architected timer, the PL011 and its interrupt, the ROM slot and `/chosen`, per `docs/guest-abi.md`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use vm_fdt::FdtWriter;

use crate::entropy::GuestSeeds;

use crate::memmap::{DeviceKind, MemoryMap};
use crate::pl011::Pl011Emu;

/// The phandle of the PL011's fixed clock (`/apb-pclk`).
const CLOCK_PHANDLE: u32 = 1;
/// The phandle of the interrupt controller.
const GIC_PHANDLE: u32 = 2;
/// Interrupt specifier types (`interrupts` cell 0).
const SPI: u32 = 0;
const PPI: u32 = 1;
/// Interrupt specifier flags: level-sensitive, active high (with the
/// CPU-mask bits QEMU puts there, which a GICv3 ignores).
const LEVEL_HIGH: u32 = 4;
const PPI_LEVEL_HIGH: u32 = 0x104;
/// Its frequency, as on QEMU's virt board (the emulated UART ignores it).
const CLOCK_HZ: u32 = 24_000_000;

/// What the guest's device tree describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmDesc<'a> {
    /// First IPA of guest RAM.
    pub ram_base: u64,
    /// Size of guest RAM in bytes.
    pub ram_size: u64,
    /// Number of vCPUs; vCPU `n` has MPIDR affinity `n` (`/cpus/cpu@n`).
    pub cpus: usize,
    /// IPA of the emulated PL011 (its window is [`Pl011Emu::SIZE`]).
    pub uart_base: u64,
    /// The read-only memory slot, `(base, size)`, if the VM has one.
    pub rom: Option<(u64, u64)>,
    /// The GICv3: distributor `(base, size)` and redistributor region
    /// `(base, size)`; with it, the timer node and the PL011's interrupt.
    pub gic: Option<((u64, u64), (u64, u64))>,
    /// The guest's command line (`/chosen/bootargs`).
    pub bootargs: &'a str,
    /// The initramfs, `(start, size)` (`/chosen/linux,initrd-start`/`-end`).
    pub initrd: Option<(u64, u64)>,
    /// Seeds for the guest's random pool and KASLR (`/chosen/rng-seed`,
    /// `kaslr-seed`).
    pub seeds: Option<GuestSeeds>,
}

impl<'a> VmDesc<'a> {
    /// The description of a VM whose memory map is `map` (the one table
    /// its slots and MMIO bus come from too), with command line `bootargs`.
    #[must_use]
    pub fn new(map: &MemoryMap, bootargs: &'a str) -> Self {
        Self {
            ram_base: map.ram_base,
            ram_size: map.ram_size,
            cpus: map.vcpus,
            uart_base: map.device(DeviceKind::Uart).base,
            rom: Some(map.rom),
            gic: Some((
                (
                    map.device(DeviceKind::GicDist).base,
                    map.device(DeviceKind::GicDist).size,
                ),
                (
                    map.device(DeviceKind::GicRedist).base,
                    map.device(DeviceKind::GicRedist).size,
                ),
            )),
            bootargs,
            initrd: None,
            seeds: None,
        }
    }
}

/// Why the device tree could not be built.
#[derive(Debug, PartialEq, Eq)]
pub enum GuestDtError {
    /// The writer refused it (e.g. a NUL byte in `bootargs`).
    Fdt(vm_fdt::Error),
    /// `cpus` is 0: a guest needs at least one vCPU.
    NoCpus,
}

impl From<vm_fdt::Error> for GuestDtError {
    fn from(e: vm_fdt::Error) -> Self {
        Self::Fdt(e)
    }
}

impl fmt::Display for GuestDtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fdt(e) => write!(f, "guest device tree: {e}"),
            Self::NoCpus => f.write_str("guest device tree: no vCPUs"),
        }
    }
}

/// Strings for a string-list property.
fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// Builds the guest's flattened device tree blob.
///
/// # Errors
///
/// [`GuestDtError::NoCpus`] if `desc.cpus` is 0; [`GuestDtError::Fdt`] if
/// the writer refuses a value (a NUL byte in `bootargs`, or a blob over
/// 4 GiB).
pub fn build(desc: &VmDesc<'_>) -> Result<Vec<u8>, GuestDtError> {
    if desc.cpus == 0 {
        return Err(GuestDtError::NoCpus);
    }
    let uart_node = format!("pl011@{:x}", desc.uart_base);
    let mut fdt = FdtWriter::new()?;

    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "hyp guest")?;
    if desc.gic.is_some() {
        fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;
    }

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", desc.bootargs)?;
    fdt.property_string("stdout-path", &format!("/{uart_node}"))?;
    if let Some((start, size)) = desc.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", start + size)?;
    }
    if let Some(seeds) = desc.seeds {
        fdt.property("rng-seed", &seeds.rng_seed)?;
        fdt.property_u64("kaslr-seed", seeds.kaslr_seed)?;
    }
    fdt.end_node(chosen)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", desc.ram_base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[desc.ram_base, desc.ram_size])?;
    fdt.end_node(memory)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for n in 0..desc.cpus {
        let cpu = fdt.begin_node(&format!("cpu@{n:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,armv8")?;
        fdt.property_u32("reg", n as u32)?;
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list("compatible", strings(&["arm,psci-1.0", "arm,psci-0.2"]))?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    // Linux's PL011 driver (an AMBA device) will not probe without a clock.
    let clock = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", CLOCK_HZ)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(CLOCK_PHANDLE)?;
    fdt.end_node(clock)?;

    let uart = fdt.begin_node(&uart_node)?;
    fdt.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
    fdt.property_array_u64("reg", &[desc.uart_base, Pl011Emu::SIZE])?;
    fdt.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    fdt.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
    if desc.gic.is_some() {
        let spi = crate::memmap::UART_INTID - crate::vgic::PRIVATE;
        fdt.property_array_u32("interrupts", &[SPI, spi, LEVEL_HIGH])?;
    }
    fdt.end_node(uart)?;

    if let Some(((dist, dist_size), (redist, redist_size))) = desc.gic {
        let gic = fdt.begin_node(&format!("intc@{dist:x}"))?;
        fdt.property_string("compatible", "arm,gic-v3")?;
        fdt.property_u32("#interrupt-cells", 3)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_u32("#address-cells", 2)?;
        fdt.property_u32("#size-cells", 2)?;
        fdt.property_u32("#redistributor-regions", 1)?;
        fdt.property_array_u64("reg", &[dist, dist_size, redist, redist_size])?;
        // The maintenance interrupt, PPI 9.
        let maintenance = crate::vgic::MAINTENANCE_INTID - 16;
        fdt.property_array_u32("interrupts", &[PPI, maintenance, LEVEL_HIGH])?;
        fdt.property_phandle(GIC_PHANDLE)?;
        fdt.end_node(gic)?;

        // Secure physical, non-secure physical, virtual, hypervisor: PPIs
        // 13, 14, 11, 10 (INTIDs 29, 30, 27, 26).
        let timer = fdt.begin_node("timer")?;
        fdt.property_string("compatible", "arm,armv8-timer")?;
        let ppis: Vec<u32> = [13, 14, 11, 10]
            .iter()
            .flat_map(|&p| [PPI, p, PPI_LEVEL_HIGH])
            .collect();
        fdt.property_array_u32("interrupts", &ppis)?;
        fdt.property_null("always-on")?;
        fdt.end_node(timer)?;
    }

    if let Some((base, size)) = desc.rom {
        let rom = fdt.begin_node(&format!("rom@{base:x}"))?;
        fdt.property_string("compatible", "hyp,rom")?;
        fdt.property_array_u64("reg", &[base, size])?;
        fdt.end_node(rom)?;
    }

    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdt::Fdt;
    use proptest::prelude::*;

    fn desc(cpus: usize, bootargs: &str) -> VmDesc<'_> {
        VmDesc {
            ram_base: 0x4000_0000,
            ram_size: 128 << 20,
            cpus,
            uart_base: 0x0900_0000,
            rom: Some((0x0400_0000, 2 << 20)),
            gic: Some((
                (0x0800_0000, 0x1_0000),
                (0x080a_0000, cpus as u64 * 0x2_0000),
            )),
            bootargs,
            initrd: None,
            seeds: None,
        }
    }

    fn prop<'a>(fdt: &'a Fdt<'a>, path: &str, name: &str) -> &'a [u8] {
        fdt.find_node(path)
            .unwrap_or_else(|| panic!("no node {path}"))
            .property(name)
            .unwrap_or_else(|| panic!("no property {path}:{name}"))
            .value
    }

    fn str_list<'a>(fdt: &'a Fdt<'a>, path: &str, name: &str) -> Vec<&'a str> {
        let raw = prop(fdt, path, name);
        let raw = raw.strip_suffix(&[0]).expect("NUL-terminated");
        raw.split(|&b| b == 0)
            .map(|s| core::str::from_utf8(s).unwrap())
            .collect()
    }

    fn u32s(fdt: &Fdt<'_>, path: &str, name: &str) -> Vec<u32> {
        prop(fdt, path, name)
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn u64s(fdt: &Fdt<'_>, path: &str, name: &str) -> Vec<u64> {
        prop(fdt, path, name)
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Checks every node and property the ABI promises for `d`.
    fn check(blob: &[u8], d: &VmDesc<'_>) {
        let fdt = Fdt::new(blob).expect("a valid blob");
        assert_eq!(fdt.total_size(), blob.len());

        assert_eq!(u32s(&fdt, "/", "#address-cells"), [2]);
        assert_eq!(u32s(&fdt, "/", "#size-cells"), [2]);
        assert_eq!(str_list(&fdt, "/", "compatible"), ["linux,dummy-virt"]);
        assert_eq!(fdt.root().model(), "hyp guest");

        let mem = format!("/memory@{:x}", d.ram_base);
        assert_eq!(str_list(&fdt, &mem, "device_type"), ["memory"]);
        assert_eq!(u64s(&fdt, &mem, "reg"), [d.ram_base, d.ram_size]);
        let regions: Vec<_> = fdt.memory().regions().collect();
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].starting_address as u64, d.ram_base);
        assert_eq!(regions[0].size, Some(d.ram_size as usize));

        assert_eq!(u32s(&fdt, "/cpus", "#address-cells"), [1]);
        assert_eq!(u32s(&fdt, "/cpus", "#size-cells"), [0]);
        let cpus = fdt.find_node("/cpus").unwrap();
        assert_eq!(cpus.children().count(), d.cpus);
        for n in 0..d.cpus {
            let path = format!("/cpus/cpu@{n:x}");
            assert_eq!(str_list(&fdt, &path, "device_type"), ["cpu"]);
            assert_eq!(str_list(&fdt, &path, "compatible"), ["arm,armv8"]);
            assert_eq!(u32s(&fdt, &path, "reg"), [n as u32]);
            assert_eq!(str_list(&fdt, &path, "enable-method"), ["psci"]);
        }
        let ids: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(ids, (0..d.cpus).collect::<Vec<_>>());

        assert_eq!(
            str_list(&fdt, "/psci", "compatible"),
            ["arm,psci-1.0", "arm,psci-0.2"]
        );
        assert_eq!(str_list(&fdt, "/psci", "method"), ["hvc"]);

        let uart = format!("/pl011@{:x}", d.uart_base);
        assert_eq!(
            str_list(&fdt, &uart, "compatible"),
            ["arm,pl011", "arm,primecell"]
        );
        assert_eq!(u64s(&fdt, &uart, "reg"), [d.uart_base, 0x1000]);
        assert_eq!(
            str_list(&fdt, &uart, "clock-names"),
            ["uartclk", "apb_pclk"]
        );
        let clocks = u32s(&fdt, &uart, "clocks");
        assert_eq!(clocks.len(), 2);
        assert_eq!(clocks[0], clocks[1]);
        let clock = fdt.find_phandle(clocks[0]).expect("clocks names a node");
        assert_eq!(clock.name, "apb-pclk");
        assert_eq!(str_list(&fdt, "/apb-pclk", "compatible"), ["fixed-clock"]);
        assert_eq!(u32s(&fdt, "/apb-pclk", "#clock-cells"), [0]);
        assert_eq!(u32s(&fdt, "/apb-pclk", "clock-frequency"), [24_000_000]);

        match d.rom {
            Some((base, size)) => {
                let rom = format!("/rom@{base:x}");
                assert_eq!(str_list(&fdt, &rom, "compatible"), ["hyp,rom"]);
                assert_eq!(u64s(&fdt, &rom, "reg"), [base, size]);
            }
            None => assert!(fdt.find_compatible(&["hyp,rom"]).is_none()),
        }

        assert_eq!(fdt.chosen().bootargs(), Some(d.bootargs));
        assert_eq!(str_list(&fdt, "/chosen", "stdout-path"), [uart.as_str()]);
        assert_eq!(fdt.chosen().stdout().map(|n| n.name), Some(&uart[1..]));
        let chosen = fdt.find_node("/chosen").unwrap();
        match d.initrd {
            Some((start, size)) => {
                assert_eq!(u64s(&fdt, "/chosen", "linux,initrd-start"), [start]);
                assert_eq!(u64s(&fdt, "/chosen", "linux,initrd-end"), [start + size]);
            }
            None => assert!(chosen.property("linux,initrd-start").is_none()),
        }
        match d.seeds {
            Some(s) => {
                assert_eq!(prop(&fdt, "/chosen", "rng-seed"), &s.rng_seed[..]);
                assert_eq!(u64s(&fdt, "/chosen", "kaslr-seed"), [s.kaslr_seed]);
            }
            None => assert!(chosen.property("rng-seed").is_none()),
        }

        match d.gic {
            Some(((dist, dsize), (redist, rsize))) => {
                let node = format!("/intc@{dist:x}");
                assert_eq!(str_list(&fdt, &node, "compatible"), ["arm,gic-v3"]);
                assert_eq!(u64s(&fdt, &node, "reg"), [dist, dsize, redist, rsize]);
                assert_eq!(u32s(&fdt, &node, "#interrupt-cells"), [3]);
                assert_eq!(u32s(&fdt, &node, "#redistributor-regions"), [1]);
                assert_eq!(u32s(&fdt, &node, "interrupts"), [1, 9, 4]);
                assert!(fdt
                    .find_node(&node)
                    .unwrap()
                    .property("interrupt-controller")
                    .is_some());
                let phandle = u32s(&fdt, &node, "phandle")[0];
                assert_eq!(u32s(&fdt, "/", "interrupt-parent"), [phandle]);
                assert_eq!(str_list(&fdt, "/timer", "compatible"), ["arm,armv8-timer"]);
                assert_eq!(
                    u32s(&fdt, "/timer", "interrupts"),
                    [1, 13, 0x104, 1, 14, 0x104, 1, 11, 0x104, 1, 10, 0x104]
                );
                assert_eq!(
                    u32s(&fdt, &uart, "interrupts"),
                    [0, 1, 4],
                    "SPI 1: INTID 33"
                );
            }
            None => {
                assert!(fdt.find_compatible(&["arm,gic-v3"]).is_none());
                assert!(fdt.find_node("/timer").is_none());
            }
        }
    }

    #[test]
    fn the_abi_machine() {
        let d = desc(4, "console=ttyAMA0 earlycon");
        let blob = build(&d).unwrap();
        check(&blob, &d);
        let fdt = Fdt::new(&blob).unwrap();
        // The exact names docs/guest-abi.md gives.
        for path in [
            "/memory@40000000",
            "/cpus/cpu@3",
            "/psci",
            "/pl011@9000000",
            "/rom@4000000",
            "/intc@8000000",
            "/timer",
            "/chosen",
        ] {
            assert!(fdt.find_node(path).is_some(), "{path}");
        }
        assert_eq!(str_list(&fdt, "/chosen", "stdout-path"), ["/pl011@9000000"]);
    }

    #[test]
    fn initramfs_and_seeds_in_chosen() {
        let mut d = desc(1, "console=ttyAMA0");
        let blob = build(&d).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        for name in [
            "linux,initrd-start",
            "linux,initrd-end",
            "rng-seed",
            "kaslr-seed",
        ] {
            assert!(
                fdt.find_node("/chosen").unwrap().property(name).is_none(),
                "{name}"
            );
        }
        d.initrd = Some((0x4780_0000, 0x12345));
        d.seeds = Some(GuestSeeds {
            rng_seed: core::array::from_fn(|i| i as u8 + 1),
            kaslr_seed: 0x0123_4567_89ab_cdef,
        });
        let blob = build(&d).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(u64s(&fdt, "/chosen", "linux,initrd-start"), [0x4780_0000]);
        assert_eq!(u64s(&fdt, "/chosen", "linux,initrd-end"), [0x4781_2345]);
        assert_eq!(u64s(&fdt, "/chosen", "kaslr-seed"), [0x0123_4567_89ab_cdef]);
        let seed: Vec<u8> = (1..=32).collect();
        assert_eq!(prop(&fdt, "/chosen", "rng-seed"), &seed[..]);
        check(&blob, &d);
    }

    #[test]
    fn without_rom_and_with_empty_bootargs() {
        let d = VmDesc {
            rom: None,
            gic: None,
            ..desc(1, "")
        };
        let blob = build(&d).unwrap();
        check(&blob, &d);
        let fdt = Fdt::new(&blob).unwrap();
        assert!(fdt.all_nodes().all(|n| !n.name.starts_with("rom")));
    }

    #[test]
    fn eight_cpus_fit_in_64k() {
        let long = "x".repeat(2048);
        let d = desc(8, &long);
        let blob = build(&d).unwrap();
        check(&blob, &d);
        assert!(blob.len() < 64 << 10, "{} bytes", blob.len());
        // And with a short command line it is tiny.
        assert!(build(&desc(8, "quiet")).unwrap().len() < 4096);
    }

    #[test]
    fn errors() {
        assert_eq!(build(&desc(0, "")), Err(GuestDtError::NoCpus));
        assert_eq!(
            GuestDtError::NoCpus.to_string(),
            "guest device tree: no vCPUs"
        );
        let err = build(&desc(1, "a\0b")).unwrap_err();
        assert_eq!(err, GuestDtError::Fdt(vm_fdt::Error::InvalidString));
        assert_eq!(
            err.to_string(),
            "guest device tree: Strings cannot contain NUL"
        );
    }

    proptest! {
        #[test]
        fn every_layout_parses_back(
            cpus in 1usize..=8,
            ram_mb in 1u64..4096,
            ram_g in 1u64..256,
            uart_page in 1u64..0x10_0000,
            rom in proptest::option::of((1u64..0x1000, 1u64..64)),
            gic in proptest::option::of((1u64..0x1000, 1u64..0x1000)),
            bootargs in "[ -~]{0,200}",
            initrd in proptest::option::of((1u64..0x10_0000, 0u64..(1 << 30))),
            seed in any::<[u8; 32]>(),
            kaslr_seed in any::<u64>(),
        ) {
            let d = VmDesc {
                ram_base: ram_g << 30,
                ram_size: ram_mb << 20,
                cpus,
                uart_base: uart_page << 12,
                rom: rom.map(|(base, size)| (base << 21, size << 21)),
                gic: gic.map(|(d, r)| ((d << 16, 0x1_0000), (r << 17, cpus as u64 * 0x2_0000))),
                bootargs: &bootargs,
                initrd: initrd.map(|(page, size)| (page << 12, size)),
                seeds: initrd.map(|_| GuestSeeds { rng_seed: seed, kaslr_seed }),
            };
            let blob = build(&d).unwrap();
            check(&blob, &d);
        }
    }

    #[test]
    fn from_the_memory_map() {
        let map = MemoryMap::new(64 << 20, 3);
        let d = VmDesc::new(&map, "x");
        assert_eq!(d, desc(3, "x").with_ram(64 << 20));
        check(&build(&d).unwrap(), &d);
    }

    impl VmDesc<'_> {
        fn with_ram(mut self, size: u64) -> Self {
            self.ram_size = size;
            self
        }
    }
}
