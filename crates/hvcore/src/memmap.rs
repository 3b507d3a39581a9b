//! A VM's guest-physical memory map: where RAM, the ROM slot, the device tree and each emulated device sit. One table, read by VM creation, the MMIO bus and the guest device tree, and checked against `docs/guest-abi.md`.
//!
//! The addresses are QEMU `virt`'s where a device exists there too, so a
//! guest written for that board finds things where it expects them.

/// Guest RAM starts here.
pub const RAM_BASE: u64 = 0x4000_0000;
/// The read-only memory slot.
pub const ROM_BASE: u64 = 0x0400_0000;
/// Its size.
pub const ROM_SIZE: u64 = 0x20_0000;
/// The emulated PL011.
pub const UART_BASE: u64 = 0x0900_0000;
/// Its window.
pub const UART_SIZE: u64 = 0x1000;
/// The PL011's interrupt: SPI 1.
pub const UART_INTID: u32 = 33;
/// The virtual GIC's distributor.
pub const GICD_BASE: u64 = 0x0800_0000;
/// The first redistributor; one [`crate::vgic::REDIST_STRIDE`] per vCPU
/// follows (room for 123 before the UART).
pub const GICR_BASE: u64 = 0x080a_0000;
/// The device tree sits this far below the end of RAM (2 MiB aligned).
pub const DTB_FROM_END: u64 = 0x20_0000;
/// The ROM slot's contents: `"ROM\0"` in the top bytes, the offset below.
pub const ROM_MAGIC: u64 = 0x524f_4d00_0000_0000;

/// An emulated device's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    /// The GIC distributor.
    GicDist,
    /// The GIC redistributors, one frame pair per vCPU.
    GicRedist,
    /// The PL011 UART.
    Uart,
}

/// One device window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceWindow {
    /// What sits there.
    pub kind: DeviceKind,
    /// First IPA.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The memory map of one VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    /// First IPA of RAM.
    pub ram_base: u64,
    /// RAM size in bytes (a multiple of 2 MiB, at least 4 MiB).
    pub ram_size: u64,
    /// The ROM slot `(base, size)`.
    pub rom: (u64, u64),
    /// Number of vCPUs (device windows that are per vCPU grow with it).
    pub vcpus: usize,
}

impl MemoryMap {
    /// The map of a VM with `ram_size` bytes of RAM and `vcpus` vCPUs.
    #[must_use]
    pub const fn new(ram_size: u64, vcpus: usize) -> Self {
        Self {
            ram_base: RAM_BASE,
            ram_size,
            rom: (ROM_BASE, ROM_SIZE),
            vcpus,
        }
    }

    /// The IPA of the guest's device tree: 2 MiB below the end of RAM.
    #[must_use]
    pub const fn dtb(&self) -> u64 {
        self.ram_base + self.ram_size - DTB_FROM_END
    }

    /// Room for the image at the start of RAM, below the device tree.
    #[must_use]
    pub const fn image_room(&self) -> u64 {
        self.ram_size.saturating_sub(DTB_FROM_END)
    }

    /// Every emulated device's window, the busiest first (the MMIO bus
    /// scans them in this order): the console, then the GIC, whose
    /// registers a guest programs at boot and seldom after (it takes and
    /// ends interrupts through system registers).
    #[must_use]
    pub fn devices(&self) -> [DeviceWindow; 3] {
        [
            DeviceWindow {
                kind: DeviceKind::Uart,
                base: UART_BASE,
                size: UART_SIZE,
            },
            DeviceWindow {
                kind: DeviceKind::GicDist,
                base: GICD_BASE,
                size: crate::vgic::DIST_SIZE,
            },
            DeviceWindow {
                kind: DeviceKind::GicRedist,
                base: GICR_BASE,
                size: crate::vgic::REDIST_STRIDE * self.vcpus.max(1) as u64,
            },
        ]
    }

    /// The window of device `kind`.
    #[must_use]
    pub fn device(&self, kind: DeviceKind) -> DeviceWindow {
        let devices = self.devices();
        let mut i = 0;
        while devices[i].kind != kind {
            i += 1;
        }
        devices[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn map_is_consistent() {
        // The largest VM: eight vCPUs' redistributors still end below the UART.
        let big = MemoryMap::new(128 << 20, 8);
        let r = big.device(DeviceKind::GicRedist);
        assert!(r.base + r.size <= UART_BASE);
        let map = MemoryMap::new(128 << 20, 4);
        assert_eq!(map.dtb(), 0x4000_0000 + (126 << 20));
        assert_eq!(map.image_room(), 126 << 20);
        let mut regions: Vec<(u64, u64)> = map.devices().iter().map(|d| (d.base, d.size)).collect();
        regions.push((map.ram_base, map.ram_size));
        regions.push(map.rom);
        regions.sort();
        for w in regions.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?} overlap");
        }
        assert_eq!(map.device(DeviceKind::Uart).base, 0x0900_0000);
    }

    /// `docs/guest-abi.md`'s memory-map table names every region at the
    /// address this table gives (the document is the contract).
    #[test]
    fn guest_abi_document_matches() {
        let doc = include_str!("../../../docs/guest-abi.md");
        let rows: Vec<String> = doc
            .lines()
            .filter(|l| l.starts_with("| `0x"))
            .map(String::from)
            .collect();
        let addr_of = |what: &str| -> u64 {
            let row = rows
                .iter()
                .find(|r| r.contains(what))
                .unwrap_or_else(|| panic!("no row for {what} in docs/guest-abi.md"));
            let cell = row
                .split('|')
                .nth(1)
                .unwrap()
                .trim()
                .trim_matches('`')
                .replace('_', "");
            u64::from_str_radix(cell.trim_start_matches("0x"), 16).unwrap()
        };
        let map = MemoryMap::new(128 << 20, 1);
        assert_eq!(addr_of("`rom`"), map.rom.0);
        assert_eq!(addr_of("PL011"), map.device(DeviceKind::Uart).base);
        assert_eq!(addr_of("guest RAM"), map.ram_base);
        assert_eq!(
            addr_of("GIC distributor"),
            map.device(DeviceKind::GicDist).base
        );
        assert_eq!(
            addr_of("GIC redistributors"),
            map.device(DeviceKind::GicRedist).base
        );
    }
}
