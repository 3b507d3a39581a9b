//! A virtual GICv3 for one VM: per-interrupt state, the distributor and redistributor registers a guest programs, SGIs, and what goes into a vCPU's list registers and comes back out.
//!
//! Portable and host-tested; the hypervisor keeps one [`Vgic`] per VM
//! behind a lock and does the hardware half (reading and writing
//! `ICH_LR<n>_EL2`, kicking CPUs). What the guest sees:
//!
//! - a distributor and one redistributor per vCPU (affinity routing on,
//!   security disabled: `GICD_CTLR.ARE` and `DS` read as one), [`NR_SPIS`]
//!   SPIs, no LPIs; SGIs 0-15 and PPIs 16-31 banked per vCPU;
//! - per interrupt: enabled, pending, active, group, priority (the five
//!   bits the virtual CPU interface implements), edge or level, and for
//!   SPIs the `GICD_IROUTER` route (a target MPIDR, or `IRM` = any vCPU:
//!   this model then picks vCPU 0).
//!
//! # Pending state
//!
//! An interrupt is pending when its *latch* is set (an edge, a write to
//! `ISPENDR`, a forwarded hardware interrupt) or, level-sensitive, while its
//! input *line* is high. Acknowledging clears the latch, not the line: a
//! level interrupt whose line is still high when the guest ends it is
//! pending again (resampled).
//!
//! # List registers
//!
//! [`Vgic::flush`] picks what a vCPU is about to run with: its active
//! interrupts first (the guest must be able to end them), then its pending,
//! enabled ones by priority, as many as it has list registers; the rest
//! wait, and the underflow maintenance interrupt asks for a refill when the
//! list registers drain. An edge's latch moves into its list register.
//! [`Vgic::fold`] takes the list registers back after an exit: the active
//! bit from the register; an edge's latch set again if the register is
//! still pending (or another edge came meanwhile); a level interrupt's
//! latch cleared once the guest acknowledged it, its line left to say
//! whether it is still pending (a line that dropped before the guest took
//! it takes the pending state with it, as on the wire). A level interrupt
//! without a hardware link is written with `EOI` set, so that its ending
//! causes an exit and the line is sampled again.
//!
//! Every value a guest writes is untrusted: any offset and width is
//! accepted (reserved or unimplemented registers read as zero and ignore
//! writes), and nothing panics.

pub mod lr;
mod regs;

#[cfg(test)]
mod tests;

use alloc::vec;
use alloc::vec::Vec;

use lr::{Lr, LrState};

pub use regs::{DIST_SIZE, REDIST_STRIDE};

/// SGIs: INTIDs 0-15.
pub const SGIS: u32 = 16;
/// Private interrupts (SGIs and PPIs): INTIDs 0-31, banked per vCPU.
pub const PRIVATE: u32 = 32;
/// SPIs the distributor implements: INTIDs 32 to 32 + `NR_SPIS` - 1.
pub const NR_SPIS: u32 = 64;
/// Every INTID below this exists.
pub const NR_IRQS: u32 = PRIVATE + NR_SPIS;
/// The maintenance interrupt's INTID (PPI 9).
pub const MAINTENANCE_INTID: u32 = 25;
/// The virtual timer's INTID (PPI 11).
pub const VTIMER_INTID: u32 = 27;
/// The EL1 physical timer's INTID (PPI 14).
pub const PTIMER_INTID: u32 = 30;
/// Most list registers a CPU may have.
pub const MAX_LRS: usize = 16;
/// The priority bits the virtual CPU interface implements (five): the rest
/// of a priority reads as zero.
pub const PRIORITY_MASK: u8 = 0xf8;

/// One interrupt's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Irq {
    /// Forwarding enabled (`ISENABLER`).
    pub enabled: bool,
    /// Pending by an edge, a write to `ISPENDR`, or a forwarded hardware
    /// interrupt.
    pub latch: bool,
    /// The input line, for a level-sensitive interrupt.
    pub line: bool,
    /// Acknowledged and not yet deactivated.
    pub active: bool,
    /// Group 1 (else group 0).
    pub group1: bool,
    /// Priority, lower is more urgent.
    pub priority: u8,
    /// Edge-triggered (else level-sensitive).
    pub edge: bool,
    /// The physical interrupt it is linked to, if forwarded.
    pub hw: Option<u32>,
    /// Held in a list register of the vCPU it targets.
    pub in_lr: bool,
}

impl Irq {
    /// Whether it is pending.
    #[must_use]
    pub const fn pending(&self) -> bool {
        self.latch || (!self.edge && self.line)
    }

    /// A private interrupt at reset: SGIs edge-triggered, PPIs level.
    const fn private_reset(intid: u32) -> Self {
        Self {
            enabled: false,
            latch: false,
            line: false,
            active: false,
            group1: false,
            priority: 0,
            edge: intid < SGIS,
            hw: None,
            in_lr: false,
        }
    }
}

/// One vCPU's view: its banked interrupts, its redistributor, its list
/// registers.
#[derive(Clone, Debug)]
struct Cpu {
    private: [Irq; PRIVATE as usize],
    /// `GICR_WAKER.ProcessorSleep`.
    asleep: bool,
    /// What each list register holds since the last flush: its INTID and
    /// the value written.
    lrs: [Option<(u32, u64)>; MAX_LRS],
    /// Private interrupts (bit n: INTID n) that may be pending or active:
    /// set whenever one becomes so, cleared lazily once it is neither. A
    /// flush looks at these only.
    hot: u32,
}

impl Cpu {
    fn new() -> Self {
        Self {
            private: core::array::from_fn(|i| Irq::private_reset(i as u32)),
            asleep: true,
            lrs: [None; MAX_LRS],
            hot: 0,
        }
    }
}

/// What a register write changed that the hypervisor must act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// vCPUs (bit n: vCPU n) that may have an interrupt to take now: kick
    /// them.
    pub kick: u64,
}

/// What a vCPU enters with besides its list registers' values
/// ([`Vgic::flush_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushInfo {
    /// How many list registers hold an interrupt.
    pub used: usize,
    /// More interrupts are waiting than fit: set `ICH_HCR_EL2.UIE`.
    pub underflow: bool,
    /// More interrupts are active than fit: set `ICH_HCR_EL2.LRENPIE`.
    pub eoicount: bool,
}

/// What a vCPU enters with: the list registers to write and whether to ask
/// for the underflow maintenance interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    /// Values for `ICH_LR0_EL2` on.
    pub lrs: [u64; MAX_LRS],
    /// How many of them hold an interrupt (the rest are zero).
    pub used: usize,
    /// More interrupts are waiting than fit: set `ICH_HCR_EL2.UIE`.
    pub underflow: bool,
    /// More interrupts are active than fit: the guest may end one that is
    /// in no list register; set `ICH_HCR_EL2.LRENPIE` and pass
    /// `ICH_HCR_EL2.EOIcount` to [`Vgic::fold`].
    pub eoicount: bool,
}

/// The virtual GICv3 of one VM.
#[derive(Clone, Debug)]
pub struct Vgic {
    /// `GICD_CTLR.EnableGrp0`, `EnableGrp1`.
    group_enabled: [bool; 2],
    spis: Vec<Irq>,
    /// `GICD_IROUTER` of each SPI.
    routes: Vec<u64>,
    cpus: Vec<Cpu>,
    /// SPIs (bit n: INTID 32 + n) that may be pending or active, as
    /// [`Cpu`]'s `hot` for private ones.
    hot_spis: u64,
    /// List registers per CPU.
    nr_lrs: usize,
}

/// The affinity value (`Aff3.Aff2.Aff1.Aff0` packed as in `GICD_IROUTER`,
/// without `IRM`) of vCPU `n`: its MPIDR is `Aff0 = n`.
const fn affinity_of(vcpu: usize) -> u64 {
    vcpu as u64
}

/// `GICD_IROUTER.IRM`: route to any one vCPU.
const IRM: u64 = 1 << 31;
/// The affinity fields of `GICD_IROUTER`: Aff0-2 in bits 23:0, Aff3 in 39:32.
const ROUTE_AFF: u64 = 0xff_00ff_ffff;

impl Vgic {
    /// A GIC at reset for `vcpus` vCPUs whose CPUs have `nr_lrs` list
    /// registers each (at most [`MAX_LRS`]).
    #[must_use]
    pub fn new(vcpus: usize, nr_lrs: usize) -> Self {
        let spi = Irq {
            edge: false,
            ..Irq::default()
        };
        Self {
            group_enabled: [false; 2],
            spis: vec![spi; NR_SPIS as usize],
            routes: vec![0; NR_SPIS as usize],
            cpus: (0..vcpus).map(|_| Cpu::new()).collect(),
            hot_spis: 0,
            nr_lrs: nr_lrs.clamp(1, MAX_LRS),
        }
    }

    /// How many vCPUs it serves.
    #[must_use]
    pub fn vcpus(&self) -> usize {
        self.cpus.len()
    }

    /// Interrupt `intid` as vCPU `vcpu` sees it (its own bank for a private
    /// one), if it exists.
    #[must_use]
    pub fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        if intid < PRIVATE {
            self.cpus.get(vcpu)?.private.get(intid as usize)
        } else {
            self.spis.get((intid - PRIVATE) as usize)
        }
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        if intid < PRIVATE {
            self.cpus.get_mut(vcpu)?.private.get_mut(intid as usize)
        } else {
            self.spis.get_mut((intid - PRIVATE) as usize)
        }
    }

    /// The vCPU an SPI is routed to, if any (`IRM` picks vCPU 0).
    #[must_use]
    pub fn target(&self, intid: u32) -> Option<usize> {
        let route = *self.routes.get(intid.checked_sub(PRIVATE)? as usize)?;
        if route & IRM != 0 {
            return (!self.cpus.is_empty()).then_some(0);
        }
        (0..self.cpus.len()).find(|&v| affinity_of(v) == route & ROUTE_AFF)
    }

    /// The vCPU whose list registers an interrupt seen by `vcpu` belongs
    /// to: `vcpu` itself for a private one, the route for an SPI.
    fn owner(&self, vcpu: usize, intid: u32) -> Option<usize> {
        if intid < PRIVATE {
            (vcpu < self.cpus.len()).then_some(vcpu)
        } else {
            self.target(intid)
        }
    }

    /// Whether `irq` may be signalled: pending, enabled, its group enabled.
    fn deliverable(&self, irq: &Irq) -> bool {
        irq.pending() && irq.enabled && self.group_enabled[usize::from(irq.group1)]
    }

    /// Marks interrupt `intid` (as `vcpu` sees it) as possibly pending or
    /// active: the next flush of its owner looks at it.
    fn heat(&mut self, vcpu: usize, intid: u32) {
        if intid < PRIVATE {
            if let Some(cpu) = self.cpus.get_mut(vcpu) {
                cpu.hot |= 1 << intid;
            }
        } else if intid < NR_IRQS {
            self.hot_spis |= 1 << (intid - PRIVATE);
        }
    }

    /// The interrupts that may concern `vcpu`: its hot private ones and
    /// the hot SPIs routed to it.
    fn hot_for(&self, vcpu: usize) -> impl Iterator<Item = u32> + '_ {
        let private = self.cpus.get(vcpu).map_or(0, |c| c.hot);
        bits(u64::from(private))
            .chain(bits(self.hot_spis).map(|s| s + PRIVATE))
            .filter(move |&i| i < PRIVATE || self.target(i) == Some(vcpu))
    }

    /// Clears the hot bit of interrupts that are neither pending, active
    /// nor in a list register.
    fn cool(&mut self, vcpu: usize) {
        let cold = |irq: &Irq| !irq.pending() && !irq.active && !irq.in_lr;
        if let Some(cpu) = self.cpus.get_mut(vcpu) {
            for i in bits(u64::from(cpu.hot)) {
                if cold(&cpu.private[i as usize]) {
                    cpu.hot &= !(1 << i);
                }
            }
        }
        for s in bits(self.hot_spis) {
            if cold(&self.spis[s as usize]) {
                self.hot_spis &= !(1 << s);
            }
        }
    }

    /// The kick mask for vCPU `v`, if there is one.
    fn kick_of(v: Option<usize>) -> u64 {
        v.filter(|&v| v < 64).map_or(0, |v| 1 << v)
    }

    // -- the door: devices, timers and SGIs raise interrupts here ----------

    /// Sets the input line of interrupt `intid` (private ones of `vcpu`),
    /// as a device or a timer drives it: a rising edge pends an
    /// edge-triggered interrupt, a level interrupt is pending while the
    /// line is high. Returns the vCPUs to kick.
    pub fn set_line(&mut self, vcpu: usize, intid: u32, level: bool) -> Effects {
        let owner = self.owner(vcpu, intid);
        let Some(irq) = self.irq_mut(vcpu, intid) else {
            return Effects::default();
        };
        let rising = level && !irq.line;
        irq.line = level;
        if irq.edge && rising {
            irq.latch = true;
        }
        if level {
            self.heat(vcpu, intid);
        }
        // Only a rising line can make something pending.
        Effects {
            kick: if rising { Self::kick_of(owner) } else { 0 },
        }
    }

    /// A physical interrupt the hypervisor acknowledged on `vcpu`'s CPU
    /// and forwards as `intid`, linked to physical `pintid`: the guest's
    /// deactivation will deactivate the physical one.
    pub fn inject_hw(&mut self, vcpu: usize, intid: u32, pintid: u32) -> Effects {
        let owner = self.owner(vcpu, intid);
        let Some(irq) = self.irq_mut(vcpu, intid) else {
            return Effects::default();
        };
        irq.hw = Some(pintid);
        irq.latch = true;
        self.heat(vcpu, intid);
        Effects {
            kick: Self::kick_of(owner),
        }
    }

    /// `vcpu` wrote `value` to `ICC_SGI1R_EL1` (`group1`) or
    /// `ICC_SGI0R_EL1` / `ICC_ASGI1R_EL1` (group 0): pends the SGI on every
    /// vCPU it names whose copy of the SGI is in that group. Returns the
    /// vCPUs to kick.
    pub fn send_sgi(&mut self, vcpu: usize, value: u64, group1: bool) -> Effects {
        let intid = ((value >> 24) & 0xf) as u32;
        let mut kick = 0;
        for target in 0..self.cpus.len() {
            if !sgi_targets(value, vcpu, target) {
                continue;
            }
            let cpu = &mut self.cpus[target];
            let irq = &mut cpu.private[intid as usize];
            if irq.group1 == group1 {
                // Already pending: its vCPU was asked to look when it became
                // so, and one more edge changes nothing (no kick: a guest
                // repeating an SGI that cannot be taken costs its target
                // nothing).
                if !irq.latch {
                    kick |= Self::kick_of(Some(target));
                }
                irq.latch = true;
                cpu.hot |= 1 << intid;
            }
        }
        Effects { kick }
    }

    // -- list registers ---------------------------------------------------

    /// Whether `vcpu` has an interrupt to take: one in its list registers
    /// still pending, or one waiting that is deliverable. (A `WFI` with one
    /// does not block.)
    #[must_use]
    pub fn has_pending(&self, vcpu: usize) -> bool {
        self.hot_for(vcpu)
            .any(|i| self.irq(vcpu, i).is_some_and(|irq| self.deliverable(irq)))
    }

    /// The list registers `vcpu` enters with (see the module doc). Call
    /// after [`Vgic::fold`]: the list registers must be empty.
    pub fn flush(&mut self, vcpu: usize) -> Flush {
        let mut lrs = [0; MAX_LRS];
        let info = self.flush_with(vcpu, |slot, value| lrs[slot] = value);
        Flush {
            lrs,
            used: info.used,
            underflow: info.underflow,
            eoicount: info.eoicount,
        }
    }

    /// [`Vgic::flush`], handing list register `n`'s value to `write(n,
    /// value)` (registers `used` and up are the caller's to clear): the
    /// hardware layer writes them straight to the CPU.
    pub fn flush_with(&mut self, vcpu: usize, mut write: impl FnMut(usize, u64)) -> FlushInfo {
        let mut out = FlushInfo {
            used: 0,
            underflow: false,
            eoicount: false,
        };
        if vcpu >= self.cpus.len() {
            return out;
        }
        self.cool(vcpu);
        // The most urgent `nr_lrs` candidates, kept sorted as they come
        // (active first, then priority, then INTID: one u32 key each), on
        // the stack: this runs on every exit with interrupts in flight, and
        // there are seldom more than a few.
        let keep = self.nr_lrs;
        let mut best = [0u32; MAX_LRS];
        let (mut kept, mut total, mut active) = (0, 0, 0);
        for intid in self.hot_for(vcpu) {
            let irq = self.irq(vcpu, intid).expect("in range");
            if irq.in_lr || !(irq.active || self.deliverable(irq)) {
                continue;
            }
            total += 1;
            active += usize::from(irq.active);
            let key = u32::from(!irq.active) << 18 | u32::from(irq.priority) << 10 | intid;
            // Insertion into the sorted prefix; what falls off the end
            // waits for a later flush.
            let mut at = if kept < keep {
                kept += 1;
                kept - 1
            } else if key < best[keep - 1] {
                keep - 1
            } else {
                continue;
            };
            while at > 0 && best[at - 1] > key {
                best[at] = best[at - 1];
                at -= 1;
            }
            best[at] = key;
        }
        out.underflow = total > keep;
        out.eoicount = active > keep;
        for &key in &best[..kept] {
            let intid = key & 0x3ff;
            let deliver = self.deliverable(self.irq(vcpu, intid).expect("in range"));
            let irq = self.irq_mut(vcpu, intid).expect("in range");
            // An active level interrupt is not also pending by its line:
            // its ending exits (EOI maintenance) and samples the line then.
            let pending = if irq.active && !irq.edge {
                deliver && irq.latch
            } else {
                deliver
            };
            let lr = Lr {
                vintid: intid,
                pintid: irq.hw,
                eoi: irq.hw.is_none() && !irq.edge,
                priority: irq.priority,
                group1: irq.group1,
                state: LrState::of(pending, irq.active),
            };
            if pending && irq.edge {
                // An edge's pending state moves into the list register.
                irq.latch = false;
            }
            irq.in_lr = true;
            let slot = out.used;
            let value = lr.encode();
            write(slot, value);
            self.cpus[vcpu].lrs[slot] = Some((intid, value));
            out.used += 1;
        }
        out
    }

    /// How many list registers `vcpu`'s last [`Vgic::flush`] filled (the
    /// ones [`Vgic::fold`] wants back).
    #[must_use]
    pub fn used_lrs(&self, vcpu: usize) -> usize {
        self.cpus
            .get(vcpu)
            .map_or(0, |c| c.lrs.iter().take_while(|l| l.is_some()).count())
    }

    /// Takes back `vcpu`'s list registers after an exit: `lrs` holds the
    /// values read from its first registers (a register not passed back
    /// counts as left as it was written); `eoicount` is how many
    /// interrupts the guest ended that were in no list register
    /// (`ICH_HCR_EL2.EOIcount`, counted while [`Flush::eoicount`] asked):
    /// that many active ones outside the list registers are deactivated,
    /// most urgent first, as the guest ends them in that order.
    pub fn fold(&mut self, vcpu: usize, lrs: &[u64], eoicount: u32) {
        self.fold_with(vcpu, |slot| lrs.get(slot).copied(), eoicount);
    }

    /// [`Vgic::fold`], reading list register `n` with `read(n)` (only
    /// those the last flush filled; `None`: left as written): the hardware
    /// layer reads them straight from the CPU, with no array on the way.
    pub fn fold_with(&mut self, vcpu: usize, read: impl Fn(usize) -> Option<u64>, eoicount: u32) {
        if vcpu >= self.cpus.len() {
            return;
        }
        for _ in 0..eoicount {
            let outside = self
                .hot_for(vcpu)
                .filter(|&i| self.irq(vcpu, i).is_some_and(|q| q.active && !q.in_lr))
                .min_by_key(|&i| (self.irq(vcpu, i).map_or(0, |q| q.priority), i));
            match outside.and_then(|i| self.irq_mut(vcpu, i)) {
                Some(irq) => irq.active = false,
                None => break,
            }
        }
        // A flush fills the first registers in order: the first empty one
        // ends them.
        for slot in 0..self.nr_lrs {
            let Some((intid, written)) = self.cpus[vcpu].lrs[slot].take() else {
                break;
            };
            let lr = Lr::decode(read(slot).unwrap_or(written));
            let Some(irq) = self.irq_mut(vcpu, intid) else {
                continue;
            };
            irq.in_lr = false;
            irq.active = lr.state.is_active();
            if irq.edge {
                // Still pending, or pending again by an edge meanwhile.
                irq.latch |= lr.state.is_pending();
            } else if !lr.state.is_pending() {
                // Acknowledged: that consumed a software (or forwarded)
                // pend; the line alone says whether it is pending now.
                irq.latch = false;
            }
            if irq.hw.is_some() && lr.state == LrState::Invalid {
                // The guest deactivated it, and with it the physical one.
                irq.hw = None;
            }
        }
    }

    /// A vCPU powered on again, or its VM reset: its banked interrupts and
    /// list registers back to reset. Returns the physical interrupts (bit n:
    /// INTID n, all private) that were forwarded to it and not ended: the
    /// caller deactivates them on the vCPU's CPU.
    pub fn reset_vcpu(&mut self, vcpu: usize) -> u32 {
        let Some(cpu) = self.cpus.get_mut(vcpu) else {
            return 0;
        };
        let mut hw = 0;
        for irq in &cpu.private {
            if let Some(p) = irq.hw.filter(|&p| p < PRIVATE) {
                hw |= 1 << p;
            }
        }
        let lrs = cpu.lrs;
        *cpu = Cpu::new();
        // SPIs in its list registers go back to waiting, still pending if
        // they were; the guest that had them active is gone.
        for (intid, written) in lrs.into_iter().flatten() {
            if intid >= PRIVATE {
                if let Some(irq) = self.spis.get_mut((intid - PRIVATE) as usize) {
                    irq.in_lr = false;
                    irq.active = false;
                    irq.latch |= Lr::decode(written).state.is_pending();
                }
            }
        }
        hw
    }

    /// The distributor back to reset, for a VM that reboots: every SPI
    /// disabled, idle, low and routed to vCPU 0, both groups off. Call
    /// while no vCPU runs (no SPI is in a list register); the private
    /// interrupts reset with each vCPU ([`Vgic::reset_vcpu`]).
    pub fn reset_dist(&mut self) {
        let fresh = Self::new(self.cpus.len(), self.nr_lrs);
        self.group_enabled = fresh.group_enabled;
        self.spis = fresh.spis;
        self.routes = fresh.routes;
        self.hot_spis = 0;
    }

    /// How many list registers a vCPU may use.
    #[must_use]
    pub fn nr_lrs(&self) -> usize {
        self.nr_lrs
    }
}

/// The positions of the set bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = u32> {
    core::iter::from_fn(move || {
        let i = mask.trailing_zeros();
        (mask != 0).then(|| {
            mask &= mask - 1;
            i
        })
    })
}

/// Whether an SGI register value written by vCPU `sender` names vCPU
/// `target` (whose MPIDR has `Aff0` = its index, higher levels 0).
#[must_use]
pub const fn sgi_targets(value: u64, sender: usize, target: usize) -> bool {
    if value & (1 << 40) != 0 {
        // IRM: every PE but the sender.
        return target != sender;
    }
    let aff1 = (value >> 16) & 0xff;
    let aff2 = (value >> 32) & 0xff;
    let aff3 = (value >> 48) & 0xff;
    let rs = (value >> 44) & 0xf;
    let list = value & 0xffff;
    let t = target as u64;
    if aff1 != 0 || aff2 != 0 || aff3 != 0 || t >> 4 != rs {
        return false;
    }
    list & (1 << (t & 0xf)) != 0
}
