//! Host tests of the virtual GIC: registers, SGI targets, what goes into the list registers and comes back, and a property test against a reference model of the specification.

use std::vec::Vec;

use proptest::prelude::*;

use super::lr::{Lr, LrState};
use super::*;

const GICD_CTLR: u64 = 0x0000;
const GICD_TYPER: u64 = 0x0004;
const GICD_ISENABLER: u64 = 0x0100;
const GICD_ICENABLER: u64 = 0x0180;
const GICD_ISPENDR: u64 = 0x0200;
const GICD_ICPENDR: u64 = 0x0280;
const GICD_IGROUPR: u64 = 0x0080;
const GICD_IPRIORITYR: u64 = 0x0400;
const GICD_ICFGR: u64 = 0x0c00;
const GICD_IROUTER: u64 = 0x6000;
const SGI: u64 = 0x1_0000;

/// A GIC with group 1 enabled and every private interrupt of every vCPU
/// and every SPI in group 1, enabled, priority `0xa0`.
fn ready(vcpus: usize, lrs: usize) -> Vgic {
    let mut g = Vgic::new(vcpus, lrs);
    g.dist_write(0, GICD_CTLR, 4, 0x12);
    for v in 0..vcpus {
        let rd = REDIST_STRIDE * v as u64;
        g.redist_write(rd + SGI + 0x080, 4, u64::from(u32::MAX));
        g.redist_write(rd + SGI + 0x100, 4, u64::from(u32::MAX));
        for i in 0..8 {
            g.redist_write(rd + SGI + 0x400 + 4 * i, 4, 0xa0a0_a0a0);
        }
    }
    for n in 1..NR_IRQS as u64 / 32 {
        g.dist_write(0, GICD_IGROUPR + 4 * n, 4, u64::from(u32::MAX));
        g.dist_write(0, GICD_ISENABLER + 4 * n, 4, u64::from(u32::MAX));
    }
    for i in (32..NR_IRQS as u64).step_by(4) {
        g.dist_write(0, GICD_IPRIORITYR + i, 4, 0xa0a0_a0a0);
    }
    g
}

fn lrs_of(f: &Flush) -> Vec<Lr> {
    f.lrs[..f.used].iter().map(|&v| Lr::decode(v)).collect()
}

#[test]
fn distributor_identity_and_control() {
    let mut g = Vgic::new(2, 4);
    assert_eq!(
        g.dist_read(0, GICD_CTLR, 4),
        0x50,
        "ARE and DS set, groups off"
    );
    let typer = g.dist_read(0, GICD_TYPER, 4);
    assert_eq!(typer & 0x1f, u64::from(NR_IRQS / 32 - 1), "ITLinesNumber");
    assert_eq!((typer >> 19) & 0x1f, 9, "IDbits: 10 bits");
    assert_eq!(typer & (1 << 17), 0, "no LPIs");
    assert_eq!(g.dist_read(0, 0xffe8, 4) >> 4 & 0xf, 3, "PIDR2: GICv3");
    assert_eq!(g.dist_read(0, 0x0008, 4), 0x43b);
    g.dist_write(0, GICD_CTLR, 4, 0x13);
    assert_eq!(g.dist_read(0, GICD_CTLR, 4), 0x53);
    assert_eq!(g.dist_read(0, GICD_CTLR, 4) >> 31, 0, "RWP never set");
    // Wrong widths and unknown offsets read as zero and change nothing.
    assert_eq!(g.dist_read(0, GICD_CTLR, 2), 0);
    let before = g.clone().dist_read(0, GICD_CTLR, 4);
    g.dist_write(0, GICD_CTLR, 8, 0);
    g.dist_write(0, 0x1234, 4, u64::MAX);
    g.dist_write(0, 0xfffc, 1, u64::MAX);
    assert_eq!(g.dist_read(0, GICD_CTLR, 4), before);
    assert_eq!(g.dist_read(0, 0xdead, 8), 0);
}

#[test]
fn redistributors_identify_their_vcpu_and_wake() {
    let mut g = Vgic::new(3, 4);
    for v in 0..3u64 {
        let rd = REDIST_STRIDE * v;
        let typer = g.redist_read(rd + 8, 8);
        assert_eq!(typer >> 32, v, "affinity = the vCPU's MPIDR");
        assert_eq!((typer >> 8) & 0xffff, v, "processor number");
        assert_eq!(typer & (1 << 4) != 0, v == 2, "Last on the last frame only");
        assert_eq!(
            g.redist_read(rd + 8, 4) | g.redist_read(rd + 0xc, 4) << 32,
            typer
        );
        assert_eq!(g.redist_read(rd + 0xffe8, 4), 0x3b);
        assert_eq!(g.redist_read(rd + 0x14, 4), 0b110, "asleep at reset");
        g.redist_write(rd + 0x14, 4, 0);
        assert_eq!(g.redist_read(rd + 0x14, 4), 0, "awake, children awake");
        assert_eq!(g.redist_read(rd, 4) >> 3 & 1, 0, "RWP never set");
    }
    assert_eq!(
        g.redist_read(3 * REDIST_STRIDE + 8, 8),
        0,
        "no fourth frame"
    );
    g.redist_write(3 * REDIST_STRIDE + 0x14, 4, 0);
    assert_eq!(g.redist_read(SGI + 0xc00, 4), 0xaaaa_aaaa, "SGIs are edge");
    g.redist_write(SGI + 0xc00, 4, 0);
    assert_eq!(g.redist_read(SGI + 0xc00, 4), 0xaaaa_aaaa, "read-only");
    g.redist_write(SGI + 0xc04, 4, 0x8 << 16);
    assert_eq!(g.redist_read(SGI + 0xc04, 4), 0x8 << 16, "PPI 25 edge");
    assert!(
        g.irq(0, 25).unwrap().edge && !g.irq(1, 25).unwrap().edge,
        "banked"
    );
}

#[test]
fn bit_registers_priorities_config_and_routes() {
    let mut g = Vgic::new(2, 4);
    g.dist_write(0, GICD_ISENABLER + 4, 4, 0b101);
    assert_eq!(g.dist_read(1, GICD_ISENABLER + 4, 4), 0b101);
    g.dist_write(0, GICD_ICENABLER + 4, 4, 0b001);
    assert_eq!(g.dist_read(0, GICD_ICENABLER + 4, 4), 0b100);
    assert_eq!(
        g.dist_read(0, GICD_ISENABLER, 4),
        0,
        "bank 0 is in the redistributor"
    );
    g.dist_write(0, GICD_ISPENDR + 4, 4, 1 << 3);
    assert!(g.irq(0, 35).unwrap().pending());
    g.dist_write(0, GICD_ICPENDR + 4, 4, 1 << 3);
    assert!(!g.irq(0, 35).unwrap().pending());
    // Priorities keep the five bits the CPU interface has; bytes work.
    g.dist_write(0, GICD_IPRIORITYR + 33, 1, 0xff);
    assert_eq!(g.dist_read(0, GICD_IPRIORITYR + 32, 4), 0xf800);
    assert_eq!(
        g.dist_read(0, GICD_IPRIORITYR + 8, 4),
        0,
        "private ones are not here"
    );
    // ICFGR: SPIs 32-47 are register 2; bit 1 of each pair is "edge".
    g.dist_write(0, GICD_ICFGR + 8, 4, 0b10 << 2);
    assert!(g.irq(0, 33).unwrap().edge && !g.irq(0, 32).unwrap().edge);
    // IROUTER: 64-bit, or two 32-bit halves.
    g.dist_write(0, GICD_IROUTER + 8 * 40, 8, 1);
    assert_eq!(g.target(40), Some(1));
    assert_eq!(g.dist_read(0, GICD_IROUTER + 8 * 40, 8), 1);
    g.dist_write(0, GICD_IROUTER + 8 * 40, 4, 1 << 31);
    assert_eq!(g.target(40), Some(0), "IRM: vCPU 0");
    g.dist_write(0, GICD_IROUTER + 8 * 40 + 4, 4, 0xff);
    assert_eq!(g.dist_read(0, GICD_IROUTER + 8 * 40 + 4, 4), 0xff, "Aff3");
    assert_eq!(g.target(40), Some(0), "IRM still set");
    g.dist_write(0, GICD_IROUTER + 8 * 41, 8, 0x7);
    assert_eq!(g.target(41), None, "no vCPU 7");
    g.dist_write(0, GICD_IROUTER + 8 * 41, 8, u64::MAX);
    assert_eq!(
        g.dist_read(0, GICD_IROUTER + 8 * 41, 8),
        ROUTE_AFF | IRM,
        "reserved bits RAZ"
    );
    assert_eq!(
        g.dist_read(0, GICD_IROUTER + 8 * 20, 8),
        0,
        "no route for a private one"
    );
}

#[test]
fn sgi_target_lists() {
    // Target list, Aff1..3 zero, RS 0.
    assert!(sgi_targets(0b0110, 0, 1) && sgi_targets(0b0110, 0, 2));
    assert!(!sgi_targets(0b0110, 0, 0) && !sgi_targets(0b0110, 0, 3));
    // The sender may target itself by list.
    assert!(sgi_targets(0b1, 0, 0));
    // IRM: everyone but the sender, whatever the list says.
    assert!(sgi_targets(1 << 40, 2, 0) && !sgi_targets(1 << 40 | 0b100, 2, 2));
    // Aff1 = 1: our vCPUs have Aff1 = 0.
    assert!(!sgi_targets(1 << 16 | 0b10, 0, 1));
    assert!(!sgi_targets(1 << 32 | 0b10, 0, 1) && !sgi_targets(1 << 48 | 0b10, 0, 1));
    // RS = 1 names Aff0 16..31.
    assert!(sgi_targets(1 << 44 | 1, 0, 16) && !sgi_targets(1 << 44 | 1, 0, 0));

    let mut g = ready(4, 4);
    let e = g.send_sgi(0, 3 << 24 | 0b1010, true);
    assert_eq!(e.kick, 0b1010);
    assert!(g.irq(1, 3).unwrap().pending() && g.irq(3, 3).unwrap().pending());
    assert!(!g.irq(0, 3).unwrap().pending() && !g.irq(2, 3).unwrap().pending());
    // Group 0 SGIs reach only SGIs configured as group 0.
    assert_eq!(g.send_sgi(0, 4 << 24 | 0b10, false).kick, 0);
    g.redist_write(
        REDIST_STRIDE + SGI + 0x080,
        4,
        u64::from(u32::MAX) & !(1 << 4),
    );
    assert_eq!(g.send_sgi(0, 4 << 24 | 0b10, false).kick, 0b10);
    assert!(g.irq(1, 4).unwrap().pending());
}

#[test]
fn flush_takes_active_first_then_priority_and_signals_underflow() {
    let mut g = ready(1, 2);
    // Three pending SPIs with priorities 0x80, 0x40, 0xc0.
    for (intid, prio) in [(32u64, 0x80u64), (33, 0x40), (34, 0xc0)] {
        g.dist_write(0, GICD_IPRIORITYR + intid, 1, prio);
        g.set_line(0, intid as u32, true);
    }
    let f = g.flush(0);
    let lrs = lrs_of(&f);
    assert_eq!(lrs.iter().map(|l| l.vintid).collect::<Vec<_>>(), [33, 32]);
    assert!(f.underflow, "three pending, two list registers");
    assert!(lrs
        .iter()
        .all(|l| l.state == LrState::Pending && l.group1 && l.eoi));
    assert_eq!(g.used_lrs(0), 2);
    // The guest acknowledges 33: active. Folded and flushed again, 33 goes
    // first (active), then the best pending one: 32.
    let mut back = f.lrs;
    back[0] = Lr {
        state: LrState::Active,
        ..lrs[0]
    }
    .encode();
    g.fold(0, &back[..2], 0);
    assert!(g.irq(0, 33).unwrap().active);
    let f = g.flush(0);
    let lrs = lrs_of(&f);
    assert_eq!(
        lrs.iter().map(|l| (l.vintid, l.state)).collect::<Vec<_>>(),
        [(33, LrState::Active), (32, LrState::Pending)]
    );
    // Nothing deliverable and nothing active: nothing to flush.
    let mut g = ready(1, 4);
    g.fold(0, &[], 0);
    assert_eq!(g.flush(0).used, 0);
}

#[test]
fn level_interrupts_are_sampled_again_when_ended() {
    let mut g = ready(1, 4);
    g.set_line(0, 40, true);
    let f = g.flush(0);
    assert_eq!(lrs_of(&f)[0].vintid, 40);
    assert!(lrs_of(&f)[0].eoi, "ask for the end of a level interrupt");
    // Acknowledged and ended while the line is still high: pending again.
    g.fold(0, &[0], 0);
    assert!(g.irq(0, 40).unwrap().pending());
    // Flushed, then the line drops before the guest takes it: gone.
    let f = g.flush(0);
    assert_eq!(lrs_of(&f)[0].state, LrState::Pending);
    g.set_line(0, 40, false);
    g.fold(0, &f.lrs[..1], 0);
    assert!(!g.irq(0, 40).unwrap().pending());
    g.set_line(0, 40, true);
    // Acknowledged (active) while high: not also pending by the line.
    let f = g.flush(0);
    let active = Lr {
        state: LrState::Active,
        ..lrs_of(&f)[0]
    };
    g.fold(0, &[active.encode()], 0);
    assert_eq!(lrs_of(&g.flush(0))[0].state, LrState::Active);
    // The device lowers the line, the guest ends it: nothing left.
    g.set_line(0, 40, false);
    g.fold(0, &[0], 0);
    assert!(!g.irq(0, 40).unwrap().pending() && !g.irq(0, 40).unwrap().active);
    assert_eq!(g.flush(0).used, 0);
}

#[test]
fn an_edge_while_in_a_list_register_is_not_lost() {
    let mut g = ready(2, 4);
    g.send_sgi(1, 5 << 24 | 1, true);
    let f = g.flush(0);
    let lr = lrs_of(&f)[0];
    assert!(!lr.eoi, "an edge needs no end maintenance");
    // While it is in the list register, acknowledged, another edge comes.
    g.send_sgi(1, 5 << 24 | 1, true);
    g.fold(
        0,
        &[Lr {
            state: LrState::Active,
            ..lr
        }
        .encode()],
        0,
    );
    let irq = g.irq(0, 5).unwrap();
    assert!(irq.active && irq.pending());
    assert_eq!(lrs_of(&g.flush(0))[0].state, LrState::PendingActive);
}

#[test]
fn forwarded_hardware_interrupts() {
    let mut g = ready(2, 4);
    let e = g.inject_hw(1, VTIMER_INTID, VTIMER_INTID);
    assert_eq!(e.kick, 0b10);
    let lr = lrs_of(&g.flush(1))[0];
    assert_eq!((lr.vintid, lr.pintid, lr.eoi), (27, Some(27), false));
    // The guest acknowledged it and left it active: the link stays.
    g.fold(
        1,
        &[Lr {
            state: LrState::Active,
            ..lr
        }
        .encode()],
        0,
    );
    assert_eq!(g.irq(1, 27).unwrap().hw, Some(27));
    // A reset of the vCPU hands back the physical interrupt to deactivate.
    assert_eq!(g.reset_vcpu(1), 1 << 27);
    assert_eq!(g.reset_vcpu(1), 0);
    assert!(!g.irq(1, 27).unwrap().active && !g.irq(1, 27).unwrap().enabled);
    // Ended by the guest (list register invalid): the link is gone.
    let mut g = ready(1, 4);
    g.inject_hw(0, PTIMER_INTID, PTIMER_INTID);
    g.flush(0);
    g.fold(0, &[0], 0);
    assert_eq!(g.irq(0, 30).unwrap().hw, None);
    assert_eq!(g.reset_vcpu(0), 0);
}

#[test]
fn spis_follow_their_route_and_group_enables() {
    let mut g = ready(2, 4);
    g.dist_write(0, GICD_IROUTER + 8 * 50, 8, 1);
    assert_eq!(g.set_line(0, 50, true).kick, 0b10, "kick the target");
    assert!(g.has_pending(1) && !g.has_pending(0));
    assert_eq!(g.flush(0).used, 0);
    assert_eq!(lrs_of(&g.flush(1))[0].vintid, 50);
    // Disabled group: not deliverable; re-enabling kicks the target.
    let mut g = ready(2, 4);
    g.dist_write(0, GICD_CTLR, 4, 0);
    g.set_line(0, 33, true);
    assert!(!g.has_pending(0));
    assert_eq!(g.dist_write(0, GICD_CTLR, 4, 2).kick, 0b1);
    assert!(g.has_pending(0));
    // Disabled interrupt in a list register: its owner is kicked to take it
    // back.
    let f = g.flush(0);
    assert_eq!(f.used, 1);
    assert_eq!(g.dist_write(0, GICD_ICENABLER + 4, 4, 1 << 1).kick, 0b1);
    g.fold(0, &f.lrs[..1], 0);
    assert_eq!(g.flush(0).used, 0, "disabled: not delivered");
}

/// What is already pending costs its vCPU no second kick: a guest that
/// repeats an SGI its target cannot take yet (masked, or below a running
/// priority), or a device that keeps its line up, does not keep the target
/// exiting.
#[test]
fn no_kick_without_a_change() {
    let mut g = ready(2, 4);
    assert_eq!(g.send_sgi(0, 7 << 24 | 0b10, true).kick, 0b10);
    for _ in 0..3 {
        assert_eq!(g.send_sgi(0, 7 << 24 | 0b10, true).kick, 0, "still pending");
    }
    // Once it moved to a list register, a new edge is news again.
    let f = g.flush(1);
    assert_eq!(f.used, 1);
    assert_eq!(g.send_sgi(0, 7 << 24 | 0b10, true).kick, 0b10);
    g.fold(1, &f.lrs[..1], 0);
    // A level line: kicked when it rises, not while it stays up.
    assert_eq!(g.set_line(0, 33, true).kick, 0b1);
    assert_eq!(g.set_line(0, 33, true).kick, 0);
    assert_eq!(g.set_line(0, 33, false).kick, 0);
    assert_eq!(g.set_line(0, 33, true).kick, 0b1);
}

#[test]
fn hostile_inputs_do_not_panic() {
    let mut g = ready(2, 4);
    for offset in (0..0x1_0000u64)
        .step_by(4)
        .chain([u64::MAX, u64::MAX - 3, 0x7fff])
    {
        for size in [0u8, 1, 2, 3, 4, 8, 16, 255] {
            let _ = g.dist_read(0, offset, size);
            g.dist_write(0, offset, size, u64::MAX);
            let _ = g.redist_read(offset, size);
            g.redist_write(offset, size, u64::MAX);
            let _ = g.redist_read(offset.wrapping_add(SGI), size);
            g.redist_write(offset.wrapping_add(SGI), size, u64::MAX);
        }
    }
    for v in 0..4 {
        g.send_sgi(v, u64::MAX, true);
        g.set_line(v, u32::MAX, true);
        g.inject_hw(v, 2000, 9999);
        let _ = g.flush(v);
        g.fold(v, &[u64::MAX; 20], u32::MAX);
        let _ = g.reset_vcpu(v);
    }
}

// ---------------------------------------------------------------------------
// A reference model: the specification's per-interrupt state and a CPU that
// takes the highest-priority pending interrupt, without list registers.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct RefIrq {
    enabled: bool,
    latch: bool,
    line: bool,
    active: bool,
    priority: u8,
    edge: bool,
}

impl RefIrq {
    fn pending(&self) -> bool {
        self.latch || (!self.edge && self.line)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Raise(u32),
    Lower(u32),
    Enable(u32),
    Disable(u32),
    Priority(u32, u8),
    Ack,
    Eoi,
}

/// The interrupts the property test uses: SPIs 32-39, edge below 36.
const IRQS: core::ops::Range<u32> = 32..40;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => IRQS.prop_map(Op::Raise),
        1 => IRQS.prop_map(Op::Lower),
        1 => IRQS.prop_map(Op::Enable),
        1 => IRQS.prop_map(Op::Disable),
        1 => (IRQS, 0u8..32).prop_map(|(i, p)| Op::Priority(i, p << 3)),
        3 => Just(Op::Ack),
        2 => Just(Op::Eoi),
    ]
}

/// The guest's CPU interface over the list registers: acknowledges the
/// pending register of highest priority (lowest value, then lowest INTID)
/// that is more urgent than the running priority; ends the last one it
/// acknowledged. Returns what it acknowledged.
struct GuestCpu {
    lrs: Vec<u64>,
    /// Acknowledged and not ended: INTID and priority.
    stack: Vec<(u32, u8)>,
    /// Ends of interrupts in no list register (`ICH_HCR_EL2.EOIcount`).
    eoicount: u32,
}

impl GuestCpu {
    fn ack(&mut self) -> Option<u32> {
        let running = self.stack.last().map_or(0x100, |&(_, p)| u16::from(p));
        let best = self
            .lrs
            .iter()
            .enumerate()
            .map(|(i, &v)| (i, Lr::decode(v)))
            .filter(|(_, l)| l.state == LrState::Pending && u16::from(l.priority) < running)
            .min_by_key(|(_, l)| (l.priority, l.vintid))?;
        let (i, lr) = best;
        self.lrs[i] = Lr {
            state: LrState::Active,
            ..lr
        }
        .encode();
        self.stack.push((lr.vintid, lr.priority));
        Some(lr.vintid)
    }

    fn eoi(&mut self) -> Option<u32> {
        let (intid, _) = self.stack.pop()?;
        let mut found = false;
        for v in &mut self.lrs {
            let lr = Lr::decode(*v);
            if lr.vintid == intid && lr.state.is_active() {
                *v = Lr {
                    state: LrState::of(lr.state.is_pending(), false),
                    ..lr
                }
                .encode();
                found = true;
            }
        }
        if !found {
            self.eoicount += 1;
        }
        Some(intid)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Against the reference model: the guest acknowledges the same
    /// interrupts in the same order, and the pending and active state of
    /// every interrupt agrees after each step. Each step is an exit (fold)
    /// and an entry (flush), as the hypervisor does around every exit.
    #[test]
    fn matches_the_reference_model(ops in prop::collection::vec(op(), 1..80), lrs in 1usize..5) {
        let mut g = Vgic::new(1, lrs);
        g.dist_write(0, GICD_CTLR, 4, 0x12);
        g.dist_write(0, GICD_IGROUPR + 4, 4, u64::from(u32::MAX));
        let mut model = [RefIrq::default(); NR_IRQS as usize];
        // SPIs 32-35 edge-triggered, the rest level-sensitive.
        g.dist_write(0, GICD_ICFGR + 8, 4, 0xaa);
        for i in IRQS {
            model[i as usize].edge = i < 36;
        }
        let mut cpu = GuestCpu { lrs: Vec::new(), stack: Vec::new(), eoicount: 0 };
        // Acknowledged and not ended, with the priority at the time: the
        // running priority, which a later priority write does not change.
        let mut ref_stack: Vec<(u32, u8)> = Vec::new();
        for op in ops {
            // Exit: the list registers come back.
            g.fold(0, &cpu.lrs, core::mem::take(&mut cpu.eoicount));
            let bit = |i: u32| 1u64 << (i - 32);
            match op {
                Op::Raise(i) => {
                    g.set_line(0, i, true);
                    let m = &mut model[i as usize];
                    if m.edge && !m.line { m.latch = true; }
                    m.line = true;
                }
                Op::Lower(i) => {
                    g.set_line(0, i, false);
                    model[i as usize].line = false;
                }
                Op::Enable(i) => {
                    g.dist_write(0, GICD_ISENABLER + 4, 4, bit(i));
                    model[i as usize].enabled = true;
                }
                Op::Disable(i) => {
                    g.dist_write(0, GICD_ICENABLER + 4, 4, bit(i));
                    model[i as usize].enabled = false;
                }
                Op::Priority(i, p) => {
                    g.dist_write(0, GICD_IPRIORITYR + u64::from(i), 1, u64::from(p));
                    model[i as usize].priority = p;
                }
                Op::Ack | Op::Eoi => {}
            }
            // Entry: what the guest runs with.
            let f = g.flush(0);
            prop_assert!(f.used <= lrs);
            cpu.lrs = f.lrs[..f.used].to_vec();
            let mut seen: Vec<u32> = cpu.lrs.iter().map(|&v| Lr::decode(v).vintid).collect();
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), f.used, "an interrupt in two list registers");
            match op {
                Op::Ack => {
                    let running = ref_stack.last().map_or(0x100, |&(_, p)| u16::from(p));
                    let want = IRQS
                        .filter(|&i| {
                            let m = &model[i as usize];
                            m.pending() && m.enabled && !m.active && u16::from(m.priority) < running
                        })
                        .min_by_key(|&i| (model[i as usize].priority, i));
                    // More pending than list registers: the guest sees the
                    // best of them after the active ones, which contain the
                    // model's choice unless active ones take every slot.
                    let slots_free = cpu.stack.len() < lrs;
                    let got = cpu.ack();
                    if slots_free {
                        prop_assert_eq!(got, want, "acknowledged");
                    } else {
                        prop_assert!(got.is_none() || got == want, "acknowledged {:?}, model {:?}", got, want);
                    }
                    if let Some(i) = got {
                        let m = &mut model[i as usize];
                        m.active = true;
                        m.latch = false;
                        ref_stack.push((i, m.priority));
                    }
                }
                Op::Eoi => {
                    let got = cpu.eoi();
                    prop_assert_eq!(got, ref_stack.pop().map(|(i, _)| i));
                    if let Some(i) = got {
                        model[i as usize].active = false;
                    }
                }
                _ => {}
            }
            // Compare at the next exit.
            let mut probe = g.clone();
            probe.fold(0, &cpu.lrs, cpu.eoicount);
            for i in IRQS {
                let (irq, m) = (probe.irq(0, i).unwrap(), model[i as usize]);
                prop_assert_eq!(irq.active, m.active, "active {}", i);
                prop_assert_eq!(irq.pending(), m.pending(), "pending {}", i);
            }
        }
    }
}
