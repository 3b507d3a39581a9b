//! What the user hands the hypervisor to boot: a guest bundle (`hvcore::bundle`), the kernel's arm64 `Image` header and where everything goes in RAM (`hvcore::loader`), and the device tree built for the guest from it (`hvcore::guest_dt`), which must read back with the `fdt` crate and with the hypervisor's own `platform::parse`.
#![no_main]

use arbitrary::Arbitrary;
use hvcore::bootargs::split_guest;
use hvcore::bundle::{self, Bundle, Kind, MAX_PARTS};
use hvcore::entropy::GuestSeeds;
use hvcore::guest_dt::{self, GuestDtError, VmDesc};
use hvcore::loader::{self, ImageHeader, LoadError, KERNEL_ALIGN};
use hvcore::memmap::{MemoryMap, DTB_FROM_END, UART_INTID};
use hvcore::platform::{self, Gic, PsciConduit};
use libfuzzer_sys::fuzz_target;

/// Granule of the initramfs's placement.
const PAGE: u64 = 4096;

#[derive(Arbitrary, Debug)]
struct Input {
    /// The blob on the command line: a bundle or a raw image.
    blob: Vec<u8>,
    /// Or build a bundle of these parts first.
    parts: Option<Vec<(bool, u8, Vec<u8>)>>,
    /// RAM in 2 MiB units (the minimum `guest.mem`, up to 128 GiB).
    ram: u16,
    cpus: u8,
    /// An initramfs length when the bundle has none.
    initrd_len: Option<u64>,
    /// The hypervisor's command line; the guest's part goes to the tree.
    cmdline: String,
    seeds: Option<([u8; 32], u64)>,
    gic: bool,
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fuzz_target!(|input: Input| {
    // --- the bundle ---------------------------------------------------------
    let written;
    let blob: &[u8] = match &input.parts {
        Some(parts) => {
            let parts: Vec<(Kind, u32, &[u8])> = parts
                .iter()
                .take(MAX_PARTS)
                .map(|(initrd, vm, bytes)| {
                    let kind = if *initrd { Kind::Initrd } else { Kind::Kernel };
                    (kind, u32::from(*vm % 4), &bytes[..])
                })
                .collect();
            written = bundle::write(&parts);
            let unique = parts
                .iter()
                .enumerate()
                .all(|(i, a)| parts[i + 1..].iter().all(|b| (a.0, a.1) != (b.0, b.1)));
            let back = Bundle::parse(&written);
            assert_eq!(back.is_ok(), unique, "{back:?}");
            if let Ok(b) = back {
                // What was written reads back, part for part.
                let got: Vec<(Kind, u32, &[u8])> =
                    b.iter().map(|p| (p.kind, p.vm, p.bytes)).collect();
                assert_eq!(got, parts);
            }
            &written
        }
        None => &input.blob,
    };
    let Ok(b) = Bundle::parse(blob) else {
        return;
    };
    let range = blob.as_ptr_range();
    let mut seen = Vec::new();
    for p in b.iter() {
        let r = p.bytes.as_ptr_range();
        assert!(
            range.start <= r.start && r.end <= range.end,
            "a part outside the blob"
        );
        assert!(
            !seen.contains(&(p.vm, p.kind)),
            "two {:?} for VM {}",
            p.kind,
            p.vm
        );
        seen.push((p.vm, p.kind));
    }
    assert!(seen.len() <= MAX_PARTS);
    if !blob.starts_with(&bundle::MAGIC) {
        assert_eq!(seen, [(0, Kind::Kernel)]);
        assert_eq!(b.part(0, Kind::Kernel), Some(blob));
    }

    // --- the kernel's header and the plan -----------------------------------
    let kernel = b.part(0, Kind::Kernel).unwrap_or(&[]);
    let header = ImageHeader::parse(kernel);
    let magic = kernel.get(56..60) == Some(&loader::MAGIC.to_le_bytes()[..]);
    assert_eq!(header.is_some(), magic);
    if let Some(h) = header {
        assert_eq!(
            (h.text_offset, h.image_size, h.flags),
            (le64(kernel, 8), le64(kernel, 16), le64(kernel, 24))
        );
        assert_eq!(h.big_endian(), h.flags & 1 == 1);
    }
    let cpus = usize::from(input.cpus % 9);
    let map = MemoryMap::new((u64::from(input.ram) + 1) * (2 << 20), cpus);
    let initrd = b.part(0, Kind::Initrd);
    let initrd_len = initrd.map(|i| i.len() as u64).or(input.initrd_len);
    let plan = loader::plan(&map, kernel, initrd_len);
    let ram_end = map.ram_base + map.ram_size;
    match plan {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(e == LoadError::EmptyKernel, kernel.is_empty());
            assert_eq!(
                e == LoadError::BigEndian,
                !kernel.is_empty() && header.is_some_and(|h| h.big_endian())
            );
        }
        Ok(p) => {
            // Everything in RAM, in order, aligned (as the loader's
            // property test asks).
            let file = kernel.len() as u64;
            assert!(!kernel.is_empty() && header.is_none_or(|h| !h.big_endian()));
            assert!(p.kernel >= map.ram_base);
            assert_eq!((p.kernel - map.ram_base) % 8, 0);
            assert_eq!(p.entry(), p.kernel);
            assert!(p.kernel_span >= file);
            let mut end = p.kernel + p.kernel_span;
            match (p.initrd, initrd_len) {
                (Some((start, size)), Some(len)) => {
                    assert_eq!(size, len);
                    assert_eq!(start % PAGE, 0);
                    assert!(start >= end);
                    end = start + size;
                }
                (None, len) => assert!(len.is_none_or(|l| l == 0)),
                (Some(_), None) => panic!("an initramfs out of nothing"),
            }
            assert!(end <= p.dtb);
            assert_eq!(p.dtb, map.dtb());
            assert!(p.dtb + DTB_FROM_END <= ram_end);
            assert_eq!(p.dtb % KERNEL_ALIGN, 0);
        }
    }

    // --- the guest's device tree --------------------------------------------
    let (_, bootargs) = split_guest(&input.cmdline);
    let mut desc = VmDesc::new(&map, bootargs);
    if !input.gic {
        desc.gic = None;
    }
    desc.initrd = plan.ok().and_then(|p| p.initrd);
    desc.seeds = input.seeds.map(|(rng_seed, kaslr_seed)| GuestSeeds {
        rng_seed,
        kaslr_seed,
    });
    let dtb = match guest_dt::build(&desc) {
        Err(GuestDtError::NoCpus) => {
            assert_eq!(cpus, 0);
            return;
        }
        Err(e) => {
            assert!(bootargs.contains('\0'), "{e}");
            return;
        }
        Ok(dtb) => dtb,
    };
    assert!(cpus > 0 && !bootargs.contains('\0'));
    let fdt = fdt::Fdt::new(&dtb).expect("the fdt crate reads it");
    assert_eq!(fdt.total_size(), dtb.len());
    assert_eq!(fdt.chosen().bootargs(), Some(bootargs));
    assert_eq!(fdt.cpus().count(), cpus);
    let regions: Vec<_> = fdt.memory().regions().collect();
    assert_eq!(regions.len(), 1);
    assert_eq!(regions[0].starting_address as u64, map.ram_base);
    assert_eq!(regions[0].size, Some(map.ram_size as usize));
    assert_eq!(fdt.chosen().stdout().map(|n| n.name), Some("pl011@9000000"));

    // The hypervisor reads the same machine back.
    let m = platform::parse(&dtb, map.dtb()).expect("platform::parse reads it");
    assert_eq!(m.bootargs, bootargs);
    assert_eq!(m.dtb.size(), dtb.len() as u64);
    let ram: Vec<(u64, u64)> = m
        .memory
        .as_slice()
        .iter()
        .map(|r| (r.start().as_u64(), r.size()))
        .collect();
    assert_eq!(ram, [(map.ram_base, map.ram_size)]);
    assert!(m.reserved.as_slice().is_empty());
    assert_eq!(m.cpus.mpidrs(), (0..cpus as u64).collect::<Vec<_>>());
    assert_eq!(m.uart.as_u64(), desc.uart_base);
    assert_eq!(m.uart_intid, desc.gic.map(|_| UART_INTID));
    assert_eq!(m.psci, Some(PsciConduit::Hvc));
    assert_eq!(
        m.initrd.map(|r| (r.start().as_u64(), r.size())),
        desc.initrd.filter(|&(_, size)| size > 0)
    );
    let seed = desc.seeds.map(|s| s.rng_seed);
    assert_eq!(m.rng_seed, seed.as_ref().map_or(&[][..], |s| &s[..]));
    assert_eq!(m.kaslr_seed, desc.seeds.map(|s| s.kaslr_seed));
    match (m.gic, desc.gic) {
        (None, None) => {}
        (
            Some(Gic::V3 {
                distributor,
                redistributors,
            }),
            Some((d, r)),
        ) => {
            assert_eq!((distributor.start().as_u64(), distributor.size()), d);
            assert_eq!((redistributors.start().as_u64(), redistributors.size()), r);
        }
        (got, want) => panic!("GIC {got:?}, want {want:?}"),
    }
});
