//! The EL2 instruction counter: on every CPU, the last PMU event counter is reserved for the hypervisor and counts instructions retired at EL2 only.
//!
//! `MDCR_EL2.HPMN` splits the event counters: `0..HPMN` belong to EL1 and
//! EL0 (a guest may use them, with `PMCR_EL0.E`), `HPMN..N` to EL2, enabled
//! by `MDCR_EL2.HPME`. [`init_cpu`] sets `HPMN = N - 1` and programs counter
//! `N - 1` to count `INST_RETIRED` (event 0x08) with the filter "not at EL1
//! (`P`), not at EL0 (`U`), at EL2 (`NSH`)"; from PMUv3p1 on, `HPMD` also
//! keeps the guest's own counters from counting at EL2. Architecturally a
//! guest can then neither read, reset nor stop that counter. QEMU 7.2 does
//! not apply `HPMN` to EL1's accesses, and before PMUv3p1 a guest's counter
//! may count at EL2 (`NSH`): so `MDCR_EL2.TPM` traps every PMU access of the
//! guest, and the trap table does it through [`guest_read`] and
//! [`guest_write`] as `hvcore::pmu` rules (the reserved counter never named,
//! reset or stopped, `NSH` cleared).
//!
//! Under QEMU with `-icount shift=0` the count is exact and repeatable; it
//! is what `scripts/bench.sh` measures. The counter is 32 bits wide:
//! [`between`] is the difference of two readings modulo 2^32.
//!
//! The PMU registers `aarch64-cpu` has no type for are typed here with
//! `tock-registers` and reached with one `mrs`/`msr` each; the counter's
//! index is only known at run time, so the indexed registers go through a
//! `match` over the 31 register names.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{ReadWriteable, Readable, ID_AA64DFR0_EL1, MDCR_EL2};
use tock_registers::fields::FieldValue;
use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// `PMCR_EL0`, the PMU control register: only what is read here.
    PMCR_EL0 [
        /// Number of event counters implemented (at EL2 the full count).
        N OFFSET(11) NUMBITS(5) []
    ],
    /// `PMEVTYPER<n>_EL0`: what event counter `n` counts, and where.
    PMEVTYPER [
        /// Do not count at EL1.
        P OFFSET(31) NUMBITS(1) [],
        /// Do not count at EL0.
        U OFFSET(30) NUMBITS(1) [],
        /// Count at EL2.
        NSH OFFSET(27) NUMBITS(1) [],
        /// The event.
        EVT_COUNT OFFSET(0) NUMBITS(16) [
            /// Instructions architecturally executed.
            InstRetired = 0x08
        ]
    ]
}

/// `ID_AA64DFR0_EL1.PMUVer` of PMUv3p1, the first with `MDCR_EL2.HPMD`.
const PMUV3P1: u64 = 4;
/// `ID_AA64DFR0_EL1.PMUVer`: an IMPLEMENTATION DEFINED PMU, not PMUv3.
const PMUVER_IMPDEF: u64 = 0xf;
/// [`COUNTER`] while no counter is set up.
const NONE: u8 = u8::MAX;

/// The index of the EL2 counter (the same on every CPU), or [`NONE`].
static COUNTER: AtomicU8 = AtomicU8::new(NONE);

/// What [`init_cpu`] found and set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmuInfo {
    /// `ID_AA64DFR0_EL1.PMUVer`: 1 is PMUv3, 4 PMUv3p1, and so on.
    pub version: u8,
    /// Event counters implemented (`PMCR_EL0.N` at EL2).
    pub counters: u8,
    /// The counter reserved for EL2: `counters - 1`, also `MDCR_EL2.HPMN`.
    pub counter: u8,
    /// Whether `MDCR_EL2.HPMD` keeps the guest's counters out of EL2.
    pub hpmd: bool,
}

impl fmt::Display for PmuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PMUv3 (PMUVer {}), {} event counters: counter {} reserved for EL2 (MDCR_EL2.HPMN {}{}), counting instructions retired at EL2 only",
            self.version,
            self.counters,
            self.counter,
            self.counter,
            if self.hpmd { ", HPMD" } else { "" }
        )
    }
}

/// Why there is no EL2 instruction counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmuError {
    /// `ID_AA64DFR0_EL1.PMUVer` says no PMUv3 (the value).
    NoPmuV3(u8),
    /// Fewer than two event counters: reserving one would leave the guest
    /// none (and `HPMN = 0` needs FEAT_HPMN0).
    TooFewCounters(u8),
}

impl fmt::Display for PmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPmuV3(v) => write!(
                f,
                "no PMUv3 (ID_AA64DFR0_EL1.PMUVer {v}): no EL2 instruction counter"
            ),
            Self::TooFewCounters(n) => {
                write!(f, "only {n} PMU event counter(s): none to reserve for EL2")
            }
        }
    }
}

/// Reserves the last event counter for EL2 on this CPU and starts it
/// counting instructions retired at EL2, from 0. Call once per CPU, at boot,
/// before any guest runs on it.
///
/// # Errors
///
/// A [`PmuError`] if the CPU has no PMUv3 or too few counters; then
/// [`el2_instructions`] reads 0.
pub fn init_cpu() -> Result<PmuInfo, PmuError> {
    let version = ID_AA64DFR0_EL1.read(ID_AA64DFR0_EL1::PMUVer);
    if version == 0 || version == PMUVER_IMPDEF {
        return Err(PmuError::NoPmuV3(version as u8));
    }
    let counters = PmcrEl0.read(PMCR_EL0::N) as u8;
    if counters < 2 {
        return Err(PmuError::TooFewCounters(counters));
    }
    let counter = counters - 1;
    let hpmd = version >= PMUV3P1;
    let mut mdcr = MDCR_EL2::HPMN.val(u64::from(counter)) + MDCR_EL2::HPME::SET;
    if hpmd {
        mdcr += MDCR_EL2::HPMD::SET;
    }
    // Every PMU access of EL0/EL1 traps (`vmm`'s trap table, with
    // `hvcore::pmu`): the counters from HPMN up stay EL2's even where HPMN is
    // not applied to EL1 (QEMU 7.2), and no guest counter counts at EL2.
    mdcr += MDCR_EL2::TPM::SET;
    MDCR_EL2.modify(mdcr);

    let bit = 1u64 << counter;
    write_counter_set(CounterSet::EnableClear, bit);
    write_evtyper(
        counter,
        PMEVTYPER::EVT_COUNT::InstRetired
            + PMEVTYPER::P::SET
            + PMEVTYPER::U::SET
            + PMEVTYPER::NSH::SET,
    );
    write_evcntr(counter, 0);
    write_counter_set(CounterSet::OverflowClear, bit);
    write_counter_set(CounterSet::InterruptClear, bit);
    write_counter_set(CounterSet::EnableSet, bit);
    barrier::isb(barrier::SY);
    COUNTER.store(counter, Relaxed);
    Ok(PmuInfo {
        version: version as u8,
        counters,
        counter,
        hpmd,
    })
}

/// Whether the EL2 instruction counter runs.
pub fn available() -> bool {
    COUNTER.load(Relaxed) != NONE
}

/// Instructions this CPU retired at EL2 so far, modulo 2^32 (0 if there is
/// no counter). Read it before and after some EL2 work on the same CPU and
/// take [`between`] the two: that is the work's cost, exactly so under
/// QEMU's `-icount`. The reading itself costs a few instructions (a barrier
/// and a jump on the counter's index), the same every time.
#[inline]
pub fn el2_instructions() -> u32 {
    barrier::isb(barrier::SY);
    read_evcntr(COUNTER.load(Relaxed)) as u32
}

/// Instructions at EL2 from reading `start` to reading `end` (modulo 2^32:
/// right for any interval shorter than 2^32 instructions).
pub const fn between(start: u32, end: u32) -> u64 {
    end.wrapping_sub(start) as u64
}

/// `PMCR_EL0`, read only (writing it is the guest's business).
struct PmcrEl0;

impl Readable for PmcrEl0 {
    type T = u64;
    type R = PMCR_EL0::Register;

    fn get(&self) -> u64 {
        let value;
        // SAFETY: reading the PMU control register has no side effect.
        unsafe {
            asm!("mrs {}, pmcr_el0", out(reg) value, options(nomem, nostack, preserves_flags))
        };
        value
    }
}

/// The set/clear registers of the per-counter bit masks.
#[derive(Clone, Copy)]
enum CounterSet {
    /// `PMCNTENSET_EL0`: start counters.
    EnableSet,
    /// `PMCNTENCLR_EL0`: stop counters.
    EnableClear,
    /// `PMOVSCLR_EL0`: clear overflow flags.
    OverflowClear,
    /// `PMINTENCLR_EL1`: no overflow interrupt.
    InterruptClear,
}

/// Writes `bits` (one bit per counter) to a set/clear register: only the
/// counters whose bit is set are affected.
fn write_counter_set(reg: CounterSet, bits: u64) {
    // SAFETY: (every arm) these registers only start, stop or clear flags
    // of the counters named in `bits`, which the caller passes as the EL2
    // counter alone; no memory is touched.
    unsafe {
        match reg {
            CounterSet::EnableSet => {
                asm!("msr pmcntenset_el0, {}", in(reg) bits, options(nomem, nostack, preserves_flags))
            }
            CounterSet::EnableClear => {
                asm!("msr pmcntenclr_el0, {}", in(reg) bits, options(nomem, nostack, preserves_flags))
            }
            CounterSet::OverflowClear => {
                asm!("msr pmovsclr_el0, {}", in(reg) bits, options(nomem, nostack, preserves_flags))
            }
            CounterSet::InterruptClear => {
                asm!("msr pmintenclr_el1, {}", in(reg) bits, options(nomem, nostack, preserves_flags))
            }
        }
    }
}

/// `match`es `$n` over the event counters 0 to 30, running `$op` with the
/// register named `<$reg><n>_el0` (a string literal `asm!` can take) and
/// the bracketed arguments.
macro_rules! by_counter {
    ($n:expr, $reg:literal, $op:ident, $args:tt) => {
        by_counter!(@ $n, $reg, $op, $args;
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30)
    };
    (@ $n:expr, $reg:literal, $op:ident, $args:tt; $($i:literal)*) => {
        match $n {
            $($i => $op!(concat!($reg, $i, "_el0"); $args),)*
            _ => Default::default(),
        }
    };
}

/// `mrs` from the register named by the literal.
macro_rules! mrs {
    ($name:expr; []) => {{
        let value: u64;
        // SAFETY: reading an event counter has no side effect.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags)) };
        value
    }};
}

/// `msr` of a value to the register named by the literal.
macro_rules! msr {
    ($name:expr; [$value:expr]) => {{
        // SAFETY: only `init_cpu` writes, to the counter it reserved for
        // EL2 (`HPMN..N`): the guest's counters are not touched.
        unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) $value, options(nomem, nostack, preserves_flags)) }
    }};
}

/// `PMEVCNTR<n>_EL0`: event counter `n` (0 for no such counter). Never
/// inlined: `scripts/bench-profile.sh` finds a bracket's start by it.
#[inline(never)]
fn read_evcntr(n: u8) -> u64 {
    by_counter!(n, "pmevcntr", mrs, [])
}

/// Sets event counter `n`.
fn write_evcntr(n: u8, value: u64) {
    by_counter!(n, "pmevcntr", msr, [value])
}

/// Programs `PMEVTYPER<n>_EL0`.
fn write_evtyper(n: u8, value: FieldValue<u64, PMEVTYPER::Register>) {
    by_counter!(n, "pmevtyper", msr, [value.value])
}

/// `HPMN`, the first event counter reserved for EL2, once [`init_cpu`] set
/// one up (the PMU accesses of guests trap then).
pub fn guest_counters() -> Option<u8> {
    let counter = COUNTER.load(Relaxed);
    (counter != NONE).then_some(counter)
}

/// `mrs` for the guest's PMU access (`guest_read`).
macro_rules! mrs_guest {
    ($name:expr; []) => {{
        let value: u64;
        // SAFETY: reading a PMU register has no side effect.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags)) };
        value
    }};
}

/// `msr` for the guest's PMU access (`guest_write`).
macro_rules! msr_guest {
    ($name:expr; [$value:expr]) => {{
        // SAFETY: a PMU register of the guest's own counters (0..HPMN, the
        // cycle counter, their controls), with every bit naming the EL2
        // counters and every EL2 filter removed by `hvcore::pmu` first; no
        // memory is touched.
        unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) $value, options(nomem, nostack, preserves_flags)) }
    }};
}

/// Reads a (resolved, readable) PMU register for the guest; `PMXEV*`
/// arrive here resolved, so they read 0.
pub fn guest_read(reg: hvcore::pmu::PmuReg) -> u64 {
    use hvcore::pmu::PmuReg::*;
    match reg {
        Pmcr => mrs_guest!("pmcr_el0"; []),
        CntenSet => mrs_guest!("pmcntenset_el0"; []),
        CntenClr => mrs_guest!("pmcntenclr_el0"; []),
        OvsClr => mrs_guest!("pmovsclr_el0"; []),
        OvsSet => mrs_guest!("pmovsset_el0"; []),
        IntenSet => mrs_guest!("pmintenset_el1"; []),
        IntenClr => mrs_guest!("pmintenclr_el1"; []),
        Selr => mrs_guest!("pmselr_el0"; []),
        Ceid0 => mrs_guest!("pmceid0_el0"; []),
        Ceid1 => mrs_guest!("pmceid1_el0"; []),
        Ccntr => mrs_guest!("pmccntr_el0"; []),
        Userenr => mrs_guest!("pmuserenr_el0"; []),
        Mmir => mrs_guest!("S3_0_C9_C14_6"; []),
        Ccfiltr => mrs_guest!("pmccfiltr_el0"; []),
        Evcntr(n) => by_counter!(n, "pmevcntr", mrs_guest, []),
        Evtyper(n) => by_counter!(n, "pmevtyper", mrs_guest, []),
        Swinc | Xevtyper | Xevcntr => 0,
    }
}

/// Writes a (resolved) PMU register for the guest, a value
/// `hvcore::pmu::guest_write` made.
pub fn guest_write(reg: hvcore::pmu::PmuReg, value: u64) {
    use hvcore::pmu::PmuReg::*;
    match reg {
        Pmcr => msr_guest!("pmcr_el0"; [value]),
        CntenSet => msr_guest!("pmcntenset_el0"; [value]),
        CntenClr => msr_guest!("pmcntenclr_el0"; [value]),
        OvsClr => msr_guest!("pmovsclr_el0"; [value]),
        OvsSet => msr_guest!("pmovsset_el0"; [value]),
        IntenSet => msr_guest!("pmintenset_el1"; [value]),
        IntenClr => msr_guest!("pmintenclr_el1"; [value]),
        Swinc => msr_guest!("pmswinc_el0"; [value]),
        Selr => msr_guest!("pmselr_el0"; [value]),
        Ccntr => msr_guest!("pmccntr_el0"; [value]),
        Userenr => msr_guest!("pmuserenr_el0"; [value]),
        Ccfiltr => msr_guest!("pmccfiltr_el0"; [value]),
        Evcntr(n) => by_counter!(n, "pmevcntr", msr_guest, [value]),
        Evtyper(n) => by_counter!(n, "pmevtyper", msr_guest, [value]),
        Ceid0 | Ceid1 | Mmir | Xevtyper | Xevcntr => {}
    }
    barrier::isb(barrier::SY);
}
