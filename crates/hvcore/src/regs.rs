//! A vCPU's general registers as the exit path saves them: `x0`-`x30`, the PC and PSTATE, with register 31 read and written as the zero register.
//!
//! The layout is `#[repr(C)]` because the hardware layer's exception
//! vectors store the guest's registers straight into it (`x<n>` at byte
//! `8 * n`, then the PC from `ELR_EL2` and PSTATE from `SPSR_EL2`): an
//! exit saves into the vCPU, not onto a stack.

/// `SPSR` / PSTATE mode field (`M[3:0]`) and execution state (`M[4]`).
pub mod mode {
    /// `M[4]`: the exception was taken from AArch32.
    pub const AARCH32: u64 = 1 << 4;
    /// `M[3:0]` mask.
    pub const MASK: u64 = 0b1111;
    /// EL0 with `SP_EL0`.
    pub const EL0T: u64 = 0b0000;
    /// EL1 with `SP_EL0`.
    pub const EL1T: u64 = 0b0100;
    /// EL1 with `SP_EL1`.
    pub const EL1H: u64 = 0b0101;
}

/// PSTATE of a vCPU entering at EL1h with D, A, I and F masked: how a
/// vCPU starts and how it takes an exception.
pub const PSTATE_EL1H_MASKED: u64 = 0b1111 << 6 | mode::EL1H;

/// The general registers, PC and PSTATE of a vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    /// `x0` to `x30`.
    pub x: [u64; 31],
    /// Where the guest resumes (`ELR_EL2` at the exit).
    pub pc: u64,
    /// The guest's PSTATE (`SPSR_EL2` at the exit).
    pub pstate: u64,
}

impl GuestRegs {
    /// Byte offset of the PC in the layout (for the exception vectors).
    pub const PC_OFFSET: usize = 31 * 8;
    /// Byte offset of PSTATE in the layout.
    pub const PSTATE_OFFSET: usize = 32 * 8;

    /// The registers of a vCPU that starts at `pc` at EL1h, interrupts
    /// masked, with `x0` = `arg` and every other register zero.
    #[must_use]
    pub const fn at_entry(pc: u64, arg: u64) -> Self {
        let mut x = [0; 31];
        x[0] = arg;
        Self {
            x,
            pc,
            pstate: PSTATE_EL1H_MASKED,
        }
    }

    /// Register `n` as an instruction's transfer register reads it:
    /// 31 is the zero register.
    #[must_use]
    pub const fn get(&self, n: u8) -> u64 {
        if n < 31 {
            self.x[n as usize]
        } else {
            0
        }
    }

    /// Writes register `n`; a write to 31 (the zero register) is dropped.
    pub fn set(&mut self, n: u8, value: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = value;
        }
    }

    /// `x0`-`x3`: a hypercall's function id and first arguments.
    #[must_use]
    pub const fn args4(&self) -> [u64; 4] {
        [self.x[0], self.x[1], self.x[2], self.x[3]]
    }

    /// Moves the PC past the trapped instruction: 4 bytes, or 2 for a
    /// 16-bit T32 one (`il32` false).
    pub fn skip_instruction(&mut self, il32: bool) {
        self.pc = self.pc.wrapping_add(if il32 { 4 } else { 2 });
    }

    /// Whether the guest was running in AArch32 (at EL0) when it exited.
    #[must_use]
    pub const fn is_aarch32(&self) -> bool {
        self.pstate & mode::AARCH32 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_is_what_the_vectors_store() {
        assert_eq!(offset_of!(GuestRegs, x), 0);
        assert_eq!(offset_of!(GuestRegs, pc), GuestRegs::PC_OFFSET);
        assert_eq!(offset_of!(GuestRegs, pstate), GuestRegs::PSTATE_OFFSET);
        assert_eq!(size_of::<GuestRegs>(), 33 * 8);
    }

    #[test]
    fn register_31_is_the_zero_register() {
        let mut r = GuestRegs::at_entry(0x4000_0000, 7);
        r.x[30] = 0xdead;
        assert_eq!(r.get(0), 7);
        assert_eq!(r.get(30), 0xdead);
        assert_eq!(r.get(31), 0);
        let before = r;
        r.set(31, 0x1234);
        assert_eq!(r, before, "a write to xzr changes nothing");
        r.set(5, 0x55);
        assert_eq!(r.x[5], 0x55);
    }

    #[test]
    fn entry_state_and_skip() {
        let mut r = GuestRegs::at_entry(0x1000, 0);
        assert_eq!(r.pstate, 0x3c5, "EL1h, DAIF masked");
        assert!(!r.is_aarch32());
        r.skip_instruction(true);
        assert_eq!(r.pc, 0x1004);
        r.skip_instruction(false);
        assert_eq!(r.pc, 0x1006);
        r.pstate = mode::AARCH32;
        assert!(r.is_aarch32());
        assert_eq!(r.args4(), [0; 4]);
    }
}
