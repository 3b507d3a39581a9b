//! The virtual GICv3 under a hostile guest: any sequence of distributor and redistributor accesses (any offset, width, value), SGIs, lines, forwarded interrupts, list-register round trips with any values read back, and resets, checked against a model of what a flush must pick and of what the registers must read.
#![no_main]

use arbitrary::Arbitrary;
use hvcore::vgic::lr::Lr;
use hvcore::vgic::{
    sgi_targets, Irq, Vgic, DIST_SIZE, MAX_LRS, NR_IRQS, PRIORITY_MASK, PRIVATE, REDIST_STRIDE,
    SGIS,
};
use libfuzzer_sys::fuzz_target;

/// `SGI_base` in a redistributor frame.
const SGI_BASE: u64 = 0x1_0000;
/// `GICD_IROUTER` fields that exist: affinity and `IRM`.
const ROUTE_BITS: u64 = 0xff_00ff_ffff | 1 << 31;

#[derive(Arbitrary, Debug)]
enum Op {
    DistRead {
        vcpu: u8,
        offset: u16,
        size: u8,
    },
    DistWrite {
        vcpu: u8,
        offset: u16,
        size: u8,
        value: u64,
    },
    /// Any 64-bit offset, in or out of the window.
    DistWild {
        vcpu: u8,
        offset: u64,
        size: u8,
        value: u64,
    },
    RedistRead {
        offset: u32,
        size: u8,
    },
    RedistWrite {
        offset: u32,
        size: u8,
        value: u64,
    },
    SendSgi {
        vcpu: u8,
        value: u64,
        group1: bool,
    },
    SetLine {
        vcpu: u8,
        intid: u16,
        level: bool,
    },
    InjectHw {
        vcpu: u8,
        intid: u16,
        pintid: u16,
    },
    /// The vCPU enters: its list registers are folded back if it was
    /// running, then flushed.
    Enter {
        vcpu: u8,
    },
    /// The guest takes or ends an interrupt: list register `slot`'s state
    /// bits become `state`.
    Guest {
        vcpu: u8,
        slot: u8,
        state: u8,
    },
    /// A list register reads back as anything at all.
    Clobber {
        vcpu: u8,
        slot: u8,
        value: u64,
    },
    /// The vCPU exits: the first `give` registers are read back,
    /// `eoicount` interrupts were ended outside them.
    Exit {
        vcpu: u8,
        give: u8,
        eoicount: u8,
    },
    ResetVcpu {
        vcpu: u8,
    },
    ResetDist,
}

#[derive(Arbitrary, Debug)]
struct Input {
    vcpus: u8,
    lrs: u8,
    ops: Vec<Op>,
}

/// An access width: mostly a valid one, sometimes anything.
fn width(s: u8) -> u8 {
    if s & 0x80 != 0 {
        s & 0x7f
    } else {
        1 << (s & 3)
    }
}

/// What a vCPU's list registers hold while it runs: the INTID each was
/// written with, and the value the "hardware" holds now.
type Running = Vec<(u32, u64)>;

struct World {
    g: Vgic,
    vcpus: usize,
    running: Vec<Option<Running>>,
}

impl World {
    fn vcpu(&self, v: u8) -> usize {
        // One past the last now and then: a vCPU that does not exist.
        usize::from(v) % (self.vcpus + 1)
    }

    fn groups(&self) -> [bool; 2] {
        let ctlr = self.g.dist_read(0, 0, 4);
        [ctlr & 1 != 0, ctlr & 2 != 0]
    }

    fn deliverable(&self, irq: &Irq) -> bool {
        irq.pending() && irq.enabled && self.groups()[usize::from(irq.group1)]
    }

    /// Whether interrupt `intid` goes to vCPU `v`'s list registers.
    fn owned(&self, v: usize, intid: u32) -> bool {
        v < self.vcpus && (intid < PRIVATE || self.g.target(intid) == Some(v))
    }

    fn check_kick(&self, kick: u64) {
        assert_eq!(kick >> self.vcpus, 0, "kick {kick:#x} names no vCPU");
    }

    fn check_read(value: u64, size: u8) {
        match size {
            1 | 2 | 4 => assert!(value < 1 << (8 * u32::from(size)), "{value:#x}"),
            8 => {}
            _ => assert_eq!(value, 0, "a read of width {size}"),
        }
    }

    /// A write of a width no register has changes nothing.
    fn write(&mut self, size: u8, write: impl FnOnce(&mut Vgic) -> u64) {
        let before = (!matches!(size, 1 | 2 | 4 | 8)).then(|| format!("{:?}", self.g));
        let kick = write(&mut self.g);
        self.check_kick(kick);
        if let Some(before) = before {
            assert_eq!(
                before,
                format!("{:?}", self.g),
                "width {size} changed state"
            );
            assert_eq!(kick, 0);
        }
    }

    fn enter(&mut self, v: usize) {
        self.exit(v, usize::MAX, 0);
        // The model: every owned interrupt not in a list register that is
        // active or deliverable, most urgent first.
        let mut want: Vec<(bool, u8, u32)> = (0..NR_IRQS)
            .filter(|&i| self.owned(v, i))
            .filter_map(|i| {
                let irq = self.g.irq(v, i)?;
                let candidate = !irq.in_lr && (irq.active || self.deliverable(irq));
                candidate.then_some((!irq.active, irq.priority, i))
            })
            .collect();
        want.sort_unstable();
        let active = want.iter().filter(|c| !c.0).count();
        let before: Vec<Option<Irq>> = (0..NR_IRQS).map(|i| self.g.irq(v, i).copied()).collect();
        let f = self.g.flush(v);
        let keep = self.g.nr_lrs();
        if v >= self.vcpus {
            assert_eq!(f.used, 0);
            return;
        }
        assert!(f.used <= keep && keep <= MAX_LRS);
        assert_eq!(f.used, want.len().min(keep), "want {want:?}");
        assert_eq!(f.underflow, want.len() > keep);
        assert_eq!(f.eoicount, active > keep);
        assert!(f.lrs[f.used..].iter().all(|&l| l == 0));
        assert_eq!(self.g.used_lrs(v), f.used);
        let mut held = Running::new();
        for (slot, &value) in f.lrs[..f.used].iter().enumerate() {
            let lr = Lr::decode(value);
            assert_eq!(lr.vintid, want[slot].2, "slot {slot}: want {want:?}");
            assert!(lr.vintid < NR_IRQS);
            let was = before[lr.vintid as usize].expect("exists");
            let now = *self.g.irq(v, lr.vintid).expect("exists");
            assert!(now.in_lr);
            assert_eq!(lr.state.is_active(), was.active);
            assert!(!lr.state.is_pending() || self.deliverable(&was));
            assert!(lr.state.is_pending() || lr.state.is_active(), "an empty LR");
            assert_eq!(lr.priority, was.priority);
            assert_eq!(lr.group1, was.group1);
            assert_eq!(lr.pintid, was.hw.map(|p| p & 0x3ff));
            assert_eq!(lr.eoi, was.hw.is_none() && !was.edge);
            if was.edge && lr.state.is_pending() {
                assert!(!now.latch, "an edge's pending state moves into the LR");
            }
            // No interrupt in two list registers, of this vCPU or another.
            let elsewhere = self.running.iter().flatten().flatten();
            let shared = lr.vintid >= PRIVATE;
            assert!(!shared || elsewhere.clone().all(|&(i, _)| i != lr.vintid));
            assert!(held.iter().all(|&(i, _)| i != lr.vintid));
            held.push((lr.vintid, value));
        }
        self.running[v] = Some(held);
    }

    fn exit(&mut self, v: usize, give: usize, eoicount: u32) {
        let Some(held) = self.running.get_mut(v).and_then(Option::take) else {
            return;
        };
        let back: Vec<u64> = held.iter().map(|l| l.1).take(give).collect();
        self.g.fold(v, &back, eoicount);
        assert_eq!(self.g.used_lrs(v), 0);
        for (slot, &(intid, _)) in held.iter().enumerate() {
            let irq = self.g.irq(v, intid).expect("exists");
            assert!(!irq.in_lr, "INTID {intid} still in a list register");
            if let Some(&value) = back.get(slot) {
                assert_eq!(irq.active, Lr::decode(value).state.is_active());
            }
        }
        if self.running.iter().all(Option::is_none) {
            for v in 0..self.vcpus {
                for i in 0..NR_IRQS {
                    assert!(!self.g.irq(v, i).unwrap().in_lr, "vCPU {v} INTID {i}");
                }
            }
        }
    }

    fn hardware(&mut self, v: usize, slot: u8, f: impl FnOnce(u64) -> u64) {
        if let Some(Some(held)) = self.running.get_mut(v) {
            let n = held.len();
            if n > 0 {
                let l = &mut held[usize::from(slot) % n];
                l.1 = f(l.1);
            }
        }
    }

    /// `has_pending` agrees with the state: a deliverable interrupt is
    /// never forgotten by the flush's short list of hot interrupts.
    fn check_pending(&self) {
        for v in 0..=self.vcpus {
            let want = (0..NR_IRQS)
                .filter(|&i| self.owned(v, i))
                .any(|i| self.deliverable(self.g.irq(v, i).unwrap()));
            assert_eq!(self.g.has_pending(v), want, "vCPU {v}");
        }
    }

    /// Every register reads what the interrupts' state says.
    fn check_registers(&self) {
        let banks = [
            (0x080, 0),
            (0x100, 1),
            (0x180, 1),
            (0x200, 2),
            (0x280, 2),
            (0x300, 3),
        ];
        let field = |irq: &Irq, f: u32| match f {
            0 => irq.group1,
            1 => irq.enabled,
            2 => irq.pending(),
            _ => irq.active,
        };
        for v in 0..self.vcpus {
            let rd = REDIST_STRIDE * v as u64 + SGI_BASE;
            for &(bank, f) in &banks {
                let bits = self.g.redist_read(rd + bank, 4);
                for i in 0..PRIVATE {
                    let irq = self.g.irq(v, i).unwrap();
                    assert_eq!(bits >> i & 1 == 1, field(irq, f), "vCPU {v} {bank:#x} {i}");
                }
                assert_eq!(self.g.dist_read(v, bank, 4), 0, "bank 0 is not in GICD");
            }
            assert_eq!(
                self.g.redist_read(rd + 0xc00, 4),
                0xaaaa_aaaa,
                "SGIs are edge"
            );
            let cfg = self.g.redist_read(rd + 0xc04, 4);
            for i in 0..PRIVATE {
                let irq = self.g.irq(v, i).unwrap();
                let p = self.g.redist_read(rd + 0x400 + u64::from(i), 1);
                assert_eq!(p, u64::from(irq.priority));
                assert_eq!(irq.priority & !PRIORITY_MASK, 0);
                if i < SGIS {
                    assert!(irq.edge);
                } else {
                    assert_eq!(cfg >> (2 * (i - 16) + 1) & 1 == 1, irq.edge);
                }
            }
        }
        for n in 1..u64::from(NR_IRQS / 32) {
            for &(bank, f) in &banks {
                let bits = self.g.dist_read(0, bank + 4 * n, 4);
                for b in 0..32 {
                    let irq = self.g.irq(0, 32 * n as u32 + b).unwrap();
                    assert_eq!(bits >> b & 1 == 1, field(irq, f));
                }
            }
        }
        for i in PRIVATE..NR_IRQS {
            let irq = self.g.irq(0, i).unwrap();
            assert_eq!(
                self.g.dist_read(0, 0x400 + u64::from(i), 1),
                u64::from(irq.priority)
            );
            let cfg = self.g.dist_read(0, 0xc00 + 4 * u64::from(i / 16), 4);
            assert_eq!(cfg >> (2 * (i % 16) + 1) & 1 == 1, irq.edge);
            let route = self.g.dist_read(0, 0x6000 + 8 * u64::from(i), 8);
            assert_eq!(route & !ROUTE_BITS, 0);
            let want = if route & 1 << 31 != 0 {
                Some(0)
            } else {
                (0..self.vcpus).find(|&v| v as u64 == route & 0xff_00ff_ffff)
            };
            assert_eq!(self.g.target(i), want, "INTID {i} route {route:#x}");
        }
    }
}

fuzz_target!(|input: Input| {
    let vcpus = usize::from(input.vcpus % 8) + 1;
    let mut w = World {
        g: Vgic::new(vcpus, usize::from(input.lrs)),
        vcpus,
        running: vec![None; vcpus],
    };
    assert_eq!(w.g.vcpus(), vcpus);
    assert_eq!(w.g.nr_lrs(), usize::from(input.lrs).clamp(1, MAX_LRS));
    for op in input.ops.iter().take(256) {
        match *op {
            Op::DistRead { vcpu, offset, size } => {
                let size = width(size);
                World::check_read(w.g.dist_read(w.vcpu(vcpu), u64::from(offset), size), size);
            }
            Op::DistWrite {
                vcpu,
                offset,
                size,
                value,
            } => {
                let (v, size) = (w.vcpu(vcpu), width(size));
                w.write(size, |g| {
                    g.dist_write(v, u64::from(offset), size, value).kick
                });
            }
            Op::DistWild {
                vcpu,
                offset,
                size,
                value,
            } => {
                let (v, size) = (w.vcpu(vcpu), width(size));
                let read = w.g.dist_read(v, offset, size);
                World::check_read(read, size);
                if offset >= DIST_SIZE {
                    assert_eq!(read, 0, "outside the window");
                    let before = format!("{:?}", w.g);
                    assert_eq!(w.g.dist_write(v, offset, size, value).kick, 0);
                    assert_eq!(before, format!("{:?}", w.g), "{offset:#x} is outside");
                } else {
                    w.write(size, |g| g.dist_write(v, offset, size, value).kick);
                }
            }
            Op::RedistRead { offset, size } => {
                let size = width(size);
                let value = w.g.redist_read(u64::from(offset), size);
                World::check_read(value, size);
                if u64::from(offset) >= REDIST_STRIDE * vcpus as u64 {
                    assert_eq!(value, 0, "no such frame");
                }
            }
            Op::RedistWrite {
                offset,
                size,
                value,
            } => {
                let size = width(size);
                w.write(size, |g| {
                    g.redist_write(u64::from(offset), size, value).kick
                });
            }
            Op::SendSgi {
                vcpu,
                value,
                group1,
            } => {
                let v = w.vcpu(vcpu);
                let kick = w.g.send_sgi(v, value, group1).kick;
                w.check_kick(kick);
                let sgi = (value >> 24 & 0xf) as u32;
                for t in 0..vcpus {
                    let named = sgi_targets(value, v, t);
                    let irq = w.g.irq(t, sgi).unwrap();
                    if named && irq.group1 == group1 {
                        assert!(irq.latch, "SGI {sgi} to vCPU {t}");
                    }
                    if kick >> t & 1 == 1 {
                        assert!(named && irq.group1 == group1, "kicked vCPU {t}");
                    }
                }
            }
            Op::SetLine { vcpu, intid, level } => {
                let (v, intid) = (w.vcpu(vcpu), u32::from(intid));
                let was = w.g.irq(v, intid).copied();
                let kick = w.g.set_line(v, intid, level).kick;
                w.check_kick(kick);
                if let (Some(was), Some(now)) = (was, w.g.irq(v, intid)) {
                    assert_eq!(now.line, level);
                    if now.edge && level && !was.line {
                        assert!(now.latch, "a rising edge pends");
                    }
                } else {
                    assert_eq!(kick, 0);
                }
            }
            Op::InjectHw {
                vcpu,
                intid,
                pintid,
            } => {
                let (v, intid) = (w.vcpu(vcpu), u32::from(intid));
                let kick = w.g.inject_hw(v, intid, u32::from(pintid)).kick;
                w.check_kick(kick);
                if let Some(irq) = w.g.irq(v, intid) {
                    assert!(irq.latch && irq.hw == Some(u32::from(pintid)));
                }
            }
            Op::Enter { vcpu } => {
                let v = w.vcpu(vcpu);
                w.enter(v);
            }
            Op::Guest { vcpu, slot, state } => {
                let v = w.vcpu(vcpu);
                let state = u64::from(state & 3) << 62;
                w.hardware(v, slot, |l| (l & !(3 << 62)) | state);
            }
            Op::Clobber { vcpu, slot, value } => {
                let v = w.vcpu(vcpu);
                w.hardware(v, slot, |_| value);
            }
            Op::Exit {
                vcpu,
                give,
                eoicount,
            } => {
                let v = w.vcpu(vcpu);
                w.exit(v, usize::from(give), u32::from(eoicount));
            }
            Op::ResetVcpu { vcpu } => {
                let v = w.vcpu(vcpu);
                let _hw = w.g.reset_vcpu(v);
                if let Some(r) = w.running.get_mut(v) {
                    *r = None;
                }
                assert_eq!(w.g.used_lrs(v), 0);
                for i in 0..PRIVATE {
                    let Some(irq) = w.g.irq(v, i) else { break };
                    let reset = Irq {
                        edge: i < SGIS,
                        ..Irq::default()
                    };
                    assert_eq!(*irq, reset, "vCPU {v} INTID {i} after reset");
                }
            }
            Op::ResetDist => {
                // Called while no vCPU runs.
                for v in 0..vcpus {
                    w.exit(v, usize::MAX, 0);
                }
                w.g.reset_dist();
                assert_eq!(w.g.dist_read(0, 0, 4) & 3, 0, "both groups off");
                for i in PRIVATE..NR_IRQS {
                    assert_eq!(*w.g.irq(0, i).unwrap(), Irq::default(), "INTID {i}");
                    assert_eq!(w.g.target(i), Some(0));
                }
            }
        }
        w.check_pending();
    }
    w.check_registers();
    for v in 0..vcpus {
        w.exit(v, usize::MAX, 0);
    }
    w.check_pending();
});
