//! The architected timers an EL1 guest owns, the virtual (`CNTV_*_EL0`) and the EL1 physical (`CNTP_*_EL0`), and their counters.
//!
//! A timer fires when its counter reaches its compare value (`CVAL`) while
//! it is enabled: its interrupt (a level-sensitive PPI, INTID from the device
//! tree) stays asserted until the timer is stopped, masked or given a later
//! deadline, so a handler stops it before ending the interrupt. The virtual
//! counter is the physical one minus the hypervisor's offset: each timer is
//! compared with its own counter.

use core::arch::asm;

use crate::dt::Platform;

/// `CNT*_CTL_EL0.ENABLE`.
pub const CTL_ENABLE: u64 = 1 << 0;
/// `CNT*_CTL_EL0.IMASK`: the interrupt is masked at the timer.
pub const CTL_IMASK: u64 = 1 << 1;
/// `CNT*_CTL_EL0.ISTATUS`: the timer condition is met.
pub const CTL_ISTATUS: u64 = 1 << 2;

/// One of the EL1 timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The virtual timer: `CNTV_*_EL0`, compared with `CNTVCT_EL0`.
    Virtual,
    /// The EL1 physical timer: `CNTP_*_EL0`, compared with `CNTPCT_EL0`.
    Physical,
}

/// Both timers, virtual first.
pub const BOTH: [Timer; 2] = [Timer::Virtual, Timer::Physical];

macro_rules! sysreg_read {
    ($reg:literal) => {{
        let value: u64;
        // SAFETY: reading a timer register has no side effect; the isb keeps
        // a counter read from being done early.
        unsafe {
            asm!("isb", concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags))
        };
        value
    }};
}

macro_rules! sysreg_write {
    ($reg:literal, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: the EL1 timers are this vCPU's own: programming one only
        // changes when its interrupt fires. The isb makes the change take
        // effect before what follows; no `nomem`, so the compiler keeps
        // memory accesses (what a handler will read) on their side of it.
        unsafe {
            asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) value, options(nostack, preserves_flags))
        };
    }};
}

impl Timer {
    /// `"virtual"` or `"physical"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Virtual => "virtual",
            Self::Physical => "physical",
        }
    }

    /// Its interrupt, from the device tree's timer node; fails the run if
    /// there is none.
    pub fn intid(self, p: &Platform<'_>) -> u32 {
        let Some(timer) = p.timer else {
            crate::fail!("the device tree has no timer node (arm,armv8-timer)")
        };
        match self {
            Self::Virtual => timer.virt.intid,
            Self::Physical => timer.phys.intid,
        }
    }

    /// Its counter now (`CNTVCT_EL0` or `CNTPCT_EL0`).
    pub fn count(self) -> u64 {
        match self {
            Self::Virtual => sysreg_read!("cntvct_el0"),
            Self::Physical => sysreg_read!("cntpct_el0"),
        }
    }

    /// `CNT*_CTL_EL0`.
    pub fn ctl(self) -> u64 {
        match self {
            Self::Virtual => sysreg_read!("cntv_ctl_el0"),
            Self::Physical => sysreg_read!("cntp_ctl_el0"),
        }
    }

    /// `CNT*_CVAL_EL0`: the deadline.
    pub fn cval(self) -> u64 {
        match self {
            Self::Virtual => sysreg_read!("cntv_cval_el0"),
            Self::Physical => sysreg_read!("cntp_cval_el0"),
        }
    }

    fn set_ctl(self, ctl: u64) {
        match self {
            Self::Virtual => sysreg_write!("cntv_ctl_el0", ctl),
            Self::Physical => sysreg_write!("cntp_ctl_el0", ctl),
        }
    }

    /// Fires when its counter reaches `deadline` (`CVAL`, then enabled,
    /// interrupt unmasked).
    pub fn arm_at(self, deadline: u64) {
        match self {
            Self::Virtual => sysreg_write!("cntv_cval_el0", deadline),
            Self::Physical => sysreg_write!("cntp_cval_el0", deadline),
        }
        self.set_ctl(CTL_ENABLE);
    }

    /// Fires `ticks` from now (`TVAL`: the deadline becomes the counter at
    /// the write plus `ticks`), enabled, interrupt unmasked.
    pub fn arm_in(self, ticks: u32) {
        let tval = u64::from(ticks.min(i32::MAX as u32));
        match self {
            Self::Virtual => sysreg_write!("cntv_tval_el0", tval),
            Self::Physical => sysreg_write!("cntp_tval_el0", tval),
        }
        self.set_ctl(CTL_ENABLE);
    }

    /// Disables it: its interrupt goes down.
    pub fn stop(self) {
        self.set_ctl(0);
    }

    /// Whether its condition is met (`ISTATUS`; only meaningful while enabled).
    pub fn fired(self) -> bool {
        self.ctl() & CTL_ISTATUS != 0
    }
}

/// The virtual counter (`CNTVCT_EL0`).
pub fn counter() -> u64 {
    Timer::Virtual.count()
}

/// The counter frequency (`CNTFRQ_EL0`), in Hz; QEMU's 62.5 MHz if the
/// register was never set (0), so time computations stay finite.
pub fn frequency() -> u64 {
    match sysreg_read!("cntfrq_el0") {
        0 => 62_500_000,
        f => f,
    }
}

/// Counter ticks in `us` microseconds.
pub fn ticks_from_us(us: u64) -> u64 {
    (u128::from(us) * u128::from(frequency()) / 1_000_000) as u64
}

/// Microseconds in `ticks` counter ticks.
pub fn us_from_ticks(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000 / u128::from(frequency())) as u64
}
