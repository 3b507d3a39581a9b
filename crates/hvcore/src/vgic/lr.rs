//! The GICv3 list registers (`ICH_LR<n>_EL2`) as values: how an interrupt is written into one, and read back.
//!
//! Layout (GICv3 architecture specification, `ICH_LR<n>_EL2`):
//!
//! | bits | field |
//! |------|-------|
//! | 31:0 | vINTID |
//! | 41:32 | pINTID when `HW` = 1; else bit 41 is `EOI` (maintenance interrupt on deactivation) |
//! | 55:48 | priority |
//! | 60 | group (1: group 1) |
//! | 61 | `HW`: deactivating the virtual interrupt deactivates physical `pINTID` |
//! | 63:62 | state: invalid, pending, active, pending and active |

/// An interrupt's state in a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrState {
    /// Nothing (the guest has deactivated it, or the register is free).
    Invalid,
    /// Pending.
    Pending,
    /// Active (acknowledged, not yet deactivated).
    Active,
    /// Active, and pending again.
    PendingActive,
}

impl LrState {
    const fn bits(self) -> u64 {
        match self {
            Self::Invalid => 0,
            Self::Pending => 1,
            Self::Active => 2,
            Self::PendingActive => 3,
        }
    }

    const fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => Self::Invalid,
            1 => Self::Pending,
            2 => Self::Active,
            _ => Self::PendingActive,
        }
    }

    /// Whether the interrupt is pending in this state.
    #[must_use]
    pub const fn is_pending(self) -> bool {
        matches!(self, Self::Pending | Self::PendingActive)
    }

    /// Whether the interrupt is active in this state.
    #[must_use]
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Active | Self::PendingActive)
    }

    /// The state with the given pending and active bits.
    #[must_use]
    pub const fn of(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => Self::Invalid,
            (true, false) => Self::Pending,
            (false, true) => Self::Active,
            (true, true) => Self::PendingActive,
        }
    }
}

/// One list register's content, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lr {
    /// The virtual interrupt.
    pub vintid: u32,
    /// The physical interrupt it is linked to (`HW`), if any.
    pub pintid: Option<u32>,
    /// Ask for a maintenance interrupt when the guest deactivates it (not
    /// for a hardware-linked interrupt, whose deactivation the hardware
    /// forwards).
    pub eoi: bool,
    /// Priority (lower is more urgent).
    pub priority: u8,
    /// Group 1 (else group 0).
    pub group1: bool,
    /// Its state.
    pub state: LrState,
}

const STATE_SHIFT: u32 = 62;
const HW: u64 = 1 << 61;
const GROUP: u64 = 1 << 60;
const PRIORITY_SHIFT: u32 = 48;
const PINTID_SHIFT: u32 = 32;
const PINTID_MASK: u64 = 0x3ff;
const EOI: u64 = 1 << 41;

impl Lr {
    /// The register value.
    #[must_use]
    pub const fn encode(&self) -> u64 {
        let mut v = self.vintid as u64
            | (self.priority as u64) << PRIORITY_SHIFT
            | self.state.bits() << STATE_SHIFT;
        if self.group1 {
            v |= GROUP;
        }
        match self.pintid {
            Some(p) => v |= HW | (p as u64 & PINTID_MASK) << PINTID_SHIFT,
            None => {
                if self.eoi {
                    v |= EOI;
                }
            }
        }
        v
    }

    /// Decodes a register value.
    #[must_use]
    pub const fn decode(v: u64) -> Self {
        let hw = v & HW != 0;
        Self {
            vintid: v as u32,
            pintid: if hw {
                Some(((v >> PINTID_SHIFT) & PINTID_MASK) as u32)
            } else {
                None
            },
            eoi: !hw && v & EOI != 0,
            priority: (v >> PRIORITY_SHIFT) as u8,
            group1: v & GROUP != 0,
            state: LrState::from_bits(v >> STATE_SHIFT),
        }
    }
}

/// `ICH_HCR_EL2` bits.
pub mod hcr {
    /// The virtual CPU interface is enabled.
    pub const EN: u64 = 1 << 0;
    /// A maintenance interrupt when at most one list register holds an
    /// interrupt (underflow): time to refill.
    pub const UIE: u64 = 1 << 1;
    /// A maintenance interrupt when the guest ends an interrupt that is in
    /// no list register (counted in `EOIcount`, bits 31:27).
    pub const LRENPIE: u64 = 1 << 2;
}

/// `ICH_VTR_EL2`: how many list registers the CPU has (`ListRegs` + 1).
#[must_use]
pub const fn lrs_from_vtr(vtr: u64) -> usize {
    (vtr & 0x1f) as usize + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_and_decode_agree() {
        for state in [
            LrState::Invalid,
            LrState::Pending,
            LrState::Active,
            LrState::PendingActive,
        ] {
            for pintid in [None, Some(27), Some(1019)] {
                for eoi in [false, true] {
                    let lr = Lr {
                        vintid: 33,
                        pintid,
                        eoi: eoi && pintid.is_none(),
                        priority: 0xa0,
                        group1: true,
                        state,
                    };
                    assert_eq!(Lr::decode(lr.encode()), lr);
                }
            }
        }
    }

    #[test]
    fn fields_are_where_the_architecture_puts_them() {
        let hw = Lr {
            vintid: 27,
            pintid: Some(27),
            eoi: false,
            priority: 0x80,
            group1: true,
            state: LrState::Pending,
        };
        assert_eq!(
            hw.encode(),
            1 << 62 | 1 << 61 | 1 << 60 | 0x80 << 48 | 27 << 32 | 27
        );
        let sw = Lr {
            vintid: 33,
            pintid: None,
            eoi: true,
            priority: 0,
            group1: false,
            state: LrState::Active,
        };
        assert_eq!(sw.encode(), 2 << 62 | 1 << 41 | 33);
        assert_eq!(lrs_from_vtr(0x90b8_0003), 4, "QEMU cortex-a72");
    }

    #[test]
    fn states() {
        assert!(LrState::PendingActive.is_pending() && LrState::PendingActive.is_active());
        assert!(!LrState::Invalid.is_pending() && !LrState::Invalid.is_active());
        for p in [false, true] {
            for a in [false, true] {
                let s = LrState::of(p, a);
                assert_eq!((s.is_pending(), s.is_active()), (p, a));
            }
        }
    }
}
