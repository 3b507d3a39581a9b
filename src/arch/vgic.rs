//! The GICv3 virtual CPU interface's control registers (`ICH_*_EL2`): the list registers, the hypervisor control, the guest's saved interface state.
//!
//! The list registers are numbered at run time (`ICH_VTR_EL2` says how
//! many exist); each one has its own system-register name, so access goes
//! through a `match` over the sixteen names.

use core::arch::asm;

use hvcore::vgic::lr::lrs_from_vtr;
use hvcore::vgic::MAX_LRS;

/// The list registers this CPU implements.
pub fn nr_lrs() -> usize {
    let vtr: u64;
    // SAFETY: reading ICH_VTR_EL2 has no side effect.
    unsafe { asm!("mrs {}, ich_vtr_el2", out(reg) vtr, options(nomem, nostack, preserves_flags)) };
    lrs_from_vtr(vtr).min(MAX_LRS)
}

/// `match`es `$n` over the sixteen list registers, running `$op` with the
/// register's name.
macro_rules! by_lr {
    ($n:expr, $op:ident, $args:tt) => {
        by_lr!(@ $n, $op, $args; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    };
    (@ $n:expr, $op:ident, $args:tt; $($i:literal)*) => {
        match $n {
            $($i => $op!(concat!("ich_lr", $i, "_el2"); $args),)*
            _ => Default::default(),
        }
    };
}

macro_rules! mrs_lr {
    ($name:expr; []) => {{
        let value: u64;
        // SAFETY: reading a list register has no side effect.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags)) };
        value
    }};
}

macro_rules! msr_lr {
    ($name:expr; [$value:expr]) => {{
        // SAFETY: a list register only says what the guest's virtual CPU
        // interface presents to it; EL2 is unaffected.
        unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) $value, options(nomem, nostack, preserves_flags)) }
    }};
}

/// List register `n` (0 if this CPU has no such register).
pub fn read_lr(n: usize) -> u64 {
    by_lr!(n, mrs_lr, [])
}

/// Writes list register `n` (ignored if this CPU has no such register).
pub fn write_lr(n: usize, value: u64) {
    by_lr!(n, msr_lr, [value])
}

/// `ICH_HCR_EL2`.
pub fn read_hcr() -> u64 {
    let v: u64;
    // SAFETY: reading ICH_HCR_EL2 has no side effect.
    unsafe { asm!("mrs {}, ich_hcr_el2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes `ICH_HCR_EL2`.
pub fn write_hcr(value: u64) {
    // SAFETY: ICH_HCR_EL2 controls the guest's virtual CPU interface and
    // which maintenance interrupts reach EL2; EL2 itself is unaffected.
    unsafe {
        asm!("msr ich_hcr_el2, {}", "isb", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}

/// The guest's virtual CPU interface state: `ICH_VMCR_EL2` (priority mask,
/// binary points, group enables, EOI mode) and the active-priority
/// registers `ICH_AP0R0_EL2` / `ICH_AP1R0_EL2` (five priority bits: one
/// register each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuIf {
    /// `ICH_VMCR_EL2`.
    pub vmcr: u64,
    /// `ICH_AP0R0_EL2`.
    pub ap0r0: u64,
    /// `ICH_AP1R0_EL2`.
    pub ap1r0: u64,
}

impl VcpuIf {
    /// Reads it from this CPU.
    pub fn save(&mut self) {
        // SAFETY: reading these registers has no side effect.
        unsafe {
            asm!(
                "mrs {vmcr}, ich_vmcr_el2",
                "mrs {ap0}, ich_ap0r0_el2",
                "mrs {ap1}, ich_ap1r0_el2",
                vmcr = out(reg) self.vmcr,
                ap0 = out(reg) self.ap0r0,
                ap1 = out(reg) self.ap1r0,
                options(nomem, nostack, preserves_flags)
            );
        }
    }

    /// Writes it to this CPU.
    pub fn load(&self) {
        // SAFETY: these registers only hold the guest's virtual CPU
        // interface state; EL2 is unaffected.
        unsafe {
            asm!(
                "msr ich_vmcr_el2, {vmcr}",
                "msr ich_ap0r0_el2, {ap0}",
                "msr ich_ap1r0_el2, {ap1}",
                "isb",
                vmcr = in(reg) self.vmcr,
                ap0 = in(reg) self.ap0r0,
                ap1 = in(reg) self.ap1r0,
                options(nomem, nostack, preserves_flags)
            );
        }
    }
}
