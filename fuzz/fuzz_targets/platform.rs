//! The host device tree: `hvcore::platform::parse` and `blob_size` on any blob, raw bytes or a tree built from the input (names and properties the parser looks for, any values) with some bytes flipped; a parse either fails with a `DtbError` or gives a machine that holds together.
#![no_main]

use arbitrary::Arbitrary;
use hvcore::platform::{self, MAX_CPUS, MAX_DTB_SIZE};
use libfuzzer_sys::fuzz_target;
use vm_fdt::{FdtReserveEntry, FdtWriter};

/// Node names the parser looks for (a unit address may follow).
const NAMES: [&str; 12] = [
    "memory",
    "cpus",
    "cpu",
    "chosen",
    "reserved-memory",
    "pl011",
    "intc",
    "psci",
    "timer",
    "region",
    "a/b",
    "",
];
/// Property names the parser reads.
const PROPS: [&str; 18] = [
    "reg",
    "device_type",
    "compatible",
    "#address-cells",
    "#size-cells",
    "stdout-path",
    "bootargs",
    "linux,initrd-start",
    "linux,initrd-end",
    "rng-seed",
    "kaslr-seed",
    "interrupts",
    "method",
    "model",
    "phandle",
    "interrupt-parent",
    "#interrupt-cells",
    "status",
];
/// String values it compares with.
const STRINGS: [&str; 16] = [
    "memory",
    "cpu",
    "arm,pl011",
    "arm,gic-v3",
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,psci-1.0",
    "arm,psci-0.2",
    "smc",
    "hvc",
    "/pl011@9000000",
    "/pl011@9000000:115200",
    "/chosen",
    "/",
    "linux,dummy-virt",
    "",
];

#[derive(Arbitrary, Debug)]
enum Value {
    U32(u32),
    U64(u64),
    Cells(Vec<u32>),
    Str(u8),
    Strs(Vec<u8>),
    Text(String),
    Bytes(Vec<u8>),
    Empty,
}

#[derive(Arbitrary, Debug)]
struct Node {
    name: u8,
    unit: Option<u32>,
    props: Vec<(u8, Value)>,
    children: Vec<Node>,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        blob: Vec<u8>,
        addr: u64,
    },
    Built {
        /// The nodes a machine needs (memory, CPUs, a PL011), with
        /// values from the input.
        skeleton: Option<(u64, u64, u8, u32)>,
        reserved: Vec<(u64, u64)>,
        root: Vec<(u8, Value)>,
        nodes: Vec<Node>,
        flips: Vec<(u16, u8)>,
        addr: u64,
    },
}

fn value(v: &Value) -> Vec<u8> {
    let s = |i: u8| STRINGS[usize::from(i) % STRINGS.len()];
    match v {
        Value::U32(x) => x.to_be_bytes().to_vec(),
        Value::U64(x) => x.to_be_bytes().to_vec(),
        Value::Cells(c) => c.iter().flat_map(|x| x.to_be_bytes()).collect(),
        Value::Str(i) => [s(*i).as_bytes(), b"\0"].concat(),
        Value::Strs(l) => l
            .iter()
            .flat_map(|&i| [s(i).as_bytes(), b"\0"].concat())
            .collect(),
        Value::Text(t) => [t.as_bytes(), b"\0"].concat(),
        Value::Bytes(b) => b.clone(),
        Value::Empty => Vec::new(),
    }
}

fn props(w: &mut FdtWriter, props: &[(u8, Value)]) -> Result<(), vm_fdt::Error> {
    for (name, v) in props.iter().take(16) {
        w.property(PROPS[usize::from(*name) % PROPS.len()], &value(v))?;
    }
    Ok(())
}

fn node(w: &mut FdtWriter, n: &Node, depth: usize) -> Result<(), vm_fdt::Error> {
    let mut name = NAMES[usize::from(n.name) % NAMES.len()].to_string();
    if let Some(unit) = n.unit {
        name = format!("{name}@{unit:x}");
    }
    let id = w.begin_node(&name)?;
    props(w, &n.props)?;
    if depth < 6 {
        for c in n.children.iter().take(8) {
            node(w, c, depth + 1)?;
        }
    }
    w.end_node(id)
}

/// The blob the input describes, if the writer takes it.
fn build(
    skeleton: Option<(u64, u64, u8, u32)>,
    reserved: &[(u64, u64)],
    root: &[(u8, Value)],
    nodes: &[Node],
) -> Result<Vec<u8>, vm_fdt::Error> {
    let reserve: Vec<FdtReserveEntry> = reserved
        .iter()
        .take(4)
        .filter_map(|&(a, s)| FdtReserveEntry::new(a, s).ok())
        .collect();
    let mut w = FdtWriter::new_with_mem_reserv(&reserve)?;
    let top = w.begin_node("")?;
    props(&mut w, root)?;
    if let Some((ram, size, cpus, uart)) = skeleton {
        let m = w.begin_node(&format!("memory@{ram:x}"))?;
        w.property_string("device_type", "memory")?;
        w.property_array_u64("reg", &[ram, size])?;
        w.end_node(m)?;
        let c = w.begin_node("cpus")?;
        w.property_u32("#address-cells", 1)?;
        w.property_u32("#size-cells", 0)?;
        for n in 0..u32::from(cpus % 12) {
            let cpu = w.begin_node(&format!("cpu@{n}"))?;
            w.property_string("device_type", "cpu")?;
            w.property_u32("reg", n)?;
            w.end_node(cpu)?;
        }
        w.end_node(c)?;
        let u = w.begin_node(&format!("pl011@{uart:x}"))?;
        w.property_string("compatible", "arm,pl011")?;
        w.property_array_u64("reg", &[u64::from(uart), 0x1000])?;
        w.property_array_u32("interrupts", &[0, uart & 0x3ff, 4])?;
        w.end_node(u)?;
    }
    for n in nodes.iter().take(16) {
        node(&mut w, n, 0)?;
    }
    w.end_node(top)?;
    w.finish()
}

fn check(blob: &[u8], addr: u64) {
    let size = platform::blob_size(blob);
    if let Ok(size) = size {
        assert!((40..=MAX_DTB_SIZE).contains(&size));
        assert_eq!(
            size,
            u32::from_be_bytes(blob[4..8].try_into().unwrap()) as usize
        );
    }
    match platform::parse(blob, addr) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(p) => {
            assert_eq!(p.dtb.start().as_u64(), addr);
            assert!(
                p.dtb.size() as usize <= blob.len(),
                "the blob is the header's size"
            );
            assert!(!p.memory.as_slice().is_empty() && p.memory.total_size() > 0);
            let cpus = p.cpus.mpidrs().len();
            assert!((1..=MAX_CPUS).contains(&cpus));
            if let Some(intid) = p.uart_intid {
                assert!((32..1020).contains(&intid), "INTID {intid}");
            }
            if let Some(initrd) = p.initrd {
                assert!(initrd.start().as_u64() <= initrd.end().as_u64());
            }
            let _ = format!("{p:?}");
        }
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { blob, addr } => check(&blob, addr),
        Input::Built {
            skeleton,
            reserved,
            root,
            nodes,
            flips,
            addr,
        } => {
            let Ok(mut blob) = build(skeleton, &reserved, &root, &nodes) else {
                return;
            };
            check(&blob, addr);
            if !flips.is_empty() {
                let len = blob.len();
                for &(at, x) in flips.iter().take(8) {
                    blob[usize::from(at) % len] ^= x;
                }
                check(&blob, addr);
            }
        }
    }
});
