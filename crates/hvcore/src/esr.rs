//! Typed decoder for the Exception Syndrome Register (`ESR_ELx`).
//!
//! The fatal-exception dump uses it today; the guest-exit path will use the
//! same decoder for stage-2 aborts, HVCs and trapped system registers.

use core::fmt;

/// Raw `ESR_ELx.EC` values of the classes a guest exit dispatches on (the
/// exit path matches these directly: no decode on the hot path).
pub mod ec {
    /// `WFI` or `WFE` (trapped by `HCR_EL2.TWI`/`TWE`).
    pub const WFX: u8 = 0x01;
    /// `HVC` from AArch64.
    pub const HVC64: u8 = 0x16;
    /// `SMC` from AArch64.
    pub const SMC64: u8 = 0x17;
    /// A trapped `MSR`, `MRS` or system instruction (AArch64).
    pub const SYS64: u8 = 0x18;
    /// Instruction abort from a lower exception level.
    pub const IABT_LOWER: u8 = 0x20;
    /// Data abort from a lower exception level.
    pub const DABT_LOWER: u8 = 0x24;
}

/// Exception class: `ESR_ELx.EC`, bits \[31:26\].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// Unknown reason (also undefined instructions).
    Unknown,
    /// Trapped WFI or WFE.
    Wfx,
    /// Trapped AArch32 MCR/MRC to CP15.
    Cp15Rt,
    /// Trapped AArch32 MCRR/MRRC to CP15.
    Cp15Rrt,
    /// Trapped AArch32 MCR/MRC to CP14.
    Cp14Rt,
    /// Trapped AArch32 LDC/STC to CP14.
    Cp14Ls,
    /// Trapped access to SVE, Advanced SIMD or floating point.
    FpAccess,
    /// Trapped LD64B/ST64B.
    Ls64,
    /// Trapped AArch32 MRRC to CP14.
    Cp14Rrt,
    /// Branch target exception.
    BranchTarget,
    /// Illegal execution state.
    IllegalState,
    /// SVC from AArch32.
    Svc32,
    /// HVC from AArch32.
    Hvc32,
    /// SMC from AArch32.
    Smc32,
    /// SVC from AArch64.
    Svc64,
    /// HVC from AArch64.
    Hvc64,
    /// SMC from AArch64.
    Smc64,
    /// Trapped MSR, MRS or system instruction in AArch64.
    SysReg,
    /// Trapped access to SVE.
    Sve,
    /// Trapped ERET, ERETAA or ERETAB.
    Eret,
    /// Pointer authentication failure.
    PacFail,
    /// Instruction abort from a lower exception level.
    InstrAbortLower,
    /// Instruction abort taken without a change of exception level.
    InstrAbortCurrent,
    /// PC alignment fault.
    PcAlignment,
    /// Data abort from a lower exception level.
    DataAbortLower,
    /// Data abort taken without a change of exception level.
    DataAbortCurrent,
    /// SP alignment fault.
    SpAlignment,
    /// Trapped floating-point exception from AArch32.
    Fp32,
    /// Trapped floating-point exception from AArch64.
    Fp64,
    /// SError interrupt.
    SError,
    /// Breakpoint from a lower exception level.
    BreakpointLower,
    /// Breakpoint taken without a change of exception level.
    BreakpointCurrent,
    /// Software step from a lower exception level.
    SoftStepLower,
    /// Software step taken without a change of exception level.
    SoftStepCurrent,
    /// Watchpoint from a lower exception level.
    WatchpointLower,
    /// Watchpoint taken without a change of exception level.
    WatchpointCurrent,
    /// BKPT from AArch32.
    Bkpt32,
    /// BRK from AArch64.
    Brk64,
    /// An encoding this decoder does not know (reserved or newer).
    Other(u8),
}

impl ExceptionClass {
    /// Decodes the 6-bit EC field.
    #[must_use]
    pub const fn from_bits(ec: u8) -> Self {
        match ec & 0x3f {
            0x00 => Self::Unknown,
            0x01 => Self::Wfx,
            0x03 => Self::Cp15Rt,
            0x04 => Self::Cp15Rrt,
            0x05 => Self::Cp14Rt,
            0x06 => Self::Cp14Ls,
            0x07 => Self::FpAccess,
            0x0a => Self::Ls64,
            0x0c => Self::Cp14Rrt,
            0x0d => Self::BranchTarget,
            0x0e => Self::IllegalState,
            0x11 => Self::Svc32,
            0x12 => Self::Hvc32,
            0x13 => Self::Smc32,
            0x15 => Self::Svc64,
            ec::HVC64 => Self::Hvc64,
            ec::SMC64 => Self::Smc64,
            0x18 => Self::SysReg,
            0x19 => Self::Sve,
            0x1a => Self::Eret,
            0x1c => Self::PacFail,
            ec::IABT_LOWER => Self::InstrAbortLower,
            0x21 => Self::InstrAbortCurrent,
            0x22 => Self::PcAlignment,
            ec::DABT_LOWER => Self::DataAbortLower,
            0x25 => Self::DataAbortCurrent,
            0x26 => Self::SpAlignment,
            0x28 => Self::Fp32,
            0x2c => Self::Fp64,
            0x2f => Self::SError,
            0x30 => Self::BreakpointLower,
            0x31 => Self::BreakpointCurrent,
            0x32 => Self::SoftStepLower,
            0x33 => Self::SoftStepCurrent,
            0x34 => Self::WatchpointLower,
            0x35 => Self::WatchpointCurrent,
            0x38 => Self::Bkpt32,
            0x3c => Self::Brk64,
            other => Self::Other(other),
        }
    }

    /// A short human-readable name, as printed in register dumps.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown reason / undefined instruction",
            Self::Wfx => "Trapped WFI/WFE",
            Self::Cp15Rt => "Trapped AArch32 MCR/MRC (CP15)",
            Self::Cp15Rrt => "Trapped AArch32 MCRR/MRRC (CP15)",
            Self::Cp14Rt => "Trapped AArch32 MCR/MRC (CP14)",
            Self::Cp14Ls => "Trapped AArch32 LDC/STC (CP14)",
            Self::FpAccess => "Trapped FP/SIMD/SVE access",
            Self::Ls64 => "Trapped LD64B/ST64B",
            Self::Cp14Rrt => "Trapped AArch32 MRRC (CP14)",
            Self::BranchTarget => "Branch target exception",
            Self::IllegalState => "Illegal execution state",
            Self::Svc32 => "SVC (AArch32)",
            Self::Hvc32 => "HVC (AArch32)",
            Self::Smc32 => "SMC (AArch32)",
            Self::Svc64 => "SVC (AArch64)",
            Self::Hvc64 => "HVC (AArch64)",
            Self::Smc64 => "SMC (AArch64)",
            Self::SysReg => "Trapped MSR/MRS/system instruction",
            Self::Sve => "Trapped SVE access",
            Self::Eret => "Trapped ERET",
            Self::PacFail => "Pointer authentication failure",
            Self::InstrAbortLower => "Instruction Abort from a lower EL",
            Self::InstrAbortCurrent => "Instruction Abort from the current EL",
            Self::PcAlignment => "PC alignment fault",
            Self::DataAbortLower => "Data Abort from a lower EL",
            Self::DataAbortCurrent => "Data Abort from the current EL",
            Self::SpAlignment => "SP alignment fault",
            Self::Fp32 => "FP exception (AArch32)",
            Self::Fp64 => "FP exception (AArch64)",
            Self::SError => "SError interrupt",
            Self::BreakpointLower => "Breakpoint from a lower EL",
            Self::BreakpointCurrent => "Breakpoint from the current EL",
            Self::SoftStepLower => "Software step from a lower EL",
            Self::SoftStepCurrent => "Software step from the current EL",
            Self::WatchpointLower => "Watchpoint from a lower EL",
            Self::WatchpointCurrent => "Watchpoint from the current EL",
            Self::Bkpt32 => "BKPT (AArch32)",
            Self::Brk64 => "BRK (AArch64)",
            Self::Other(_) => "Unrecognised exception class",
        }
    }
}

impl fmt::Display for ExceptionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(ec) => write!(f, "{} (EC {ec:#04x})", self.name()),
            _ => f.write_str(self.name()),
        }
    }
}

/// What kind of fault a data or instruction fault status code reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Address size fault.
    AddressSize,
    /// Translation fault.
    Translation,
    /// Access flag fault.
    AccessFlag,
    /// Permission fault.
    Permission,
    /// Synchronous external abort, not on a table walk.
    SyncExternal,
    /// Synchronous external abort on a table walk.
    SyncExternalOnWalk,
    /// Synchronous tag check fault (MTE).
    TagCheck,
    /// Parity or ECC error, not on a table walk.
    Parity,
    /// Parity or ECC error on a table walk.
    ParityOnWalk,
    /// Alignment fault.
    Alignment,
    /// TLB conflict abort.
    TlbConflict,
    /// Unsupported atomic hardware update.
    UnsupportedAtomicUpdate,
    /// Unsupported exclusive or atomic access.
    UnsupportedExclusive,
    /// A code this decoder does not know.
    Other,
}

/// A decoded DFSC/IFSC field: the fault kind and, for walk-related faults,
/// the translation table level it happened at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultStatus {
    /// The raw 6-bit code.
    pub code: u8,
    /// What kind of fault.
    pub kind: FaultKind,
    /// Translation level (0..=3) for level-reporting faults.
    pub level: Option<u8>,
}

impl FaultStatus {
    /// Decodes a 6-bit DFSC or IFSC value.
    #[must_use]
    pub const fn from_bits(code: u8) -> Self {
        let code = code & 0x3f;
        let level = code & 0b11;
        let (kind, level) = match code >> 2 {
            0b0000 => (FaultKind::AddressSize, Some(level)),
            0b0001 => (FaultKind::Translation, Some(level)),
            0b0010 => (FaultKind::AccessFlag, Some(level)),
            0b0011 => (FaultKind::Permission, Some(level)),
            0b0101 => (FaultKind::SyncExternalOnWalk, Some(level)),
            0b0111 => (FaultKind::ParityOnWalk, Some(level)),
            _ => match code {
                0b01_0000 => (FaultKind::SyncExternal, None),
                0b01_0001 => (FaultKind::TagCheck, None),
                0b01_1000 => (FaultKind::Parity, None),
                0b10_0001 => (FaultKind::Alignment, None),
                0b11_0000 => (FaultKind::TlbConflict, None),
                0b11_0001 => (FaultKind::UnsupportedAtomicUpdate, None),
                0b11_0101 => (FaultKind::UnsupportedExclusive, None),
                _ => (FaultKind::Other, None),
            },
        };
        Self { code, kind, level }
    }
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            FaultKind::AddressSize => "address size fault",
            FaultKind::Translation => "translation fault",
            FaultKind::AccessFlag => "access flag fault",
            FaultKind::Permission => "permission fault",
            FaultKind::SyncExternal => "synchronous external abort",
            FaultKind::SyncExternalOnWalk => "synchronous external abort on table walk",
            FaultKind::TagCheck => "tag check fault",
            FaultKind::Parity => "parity/ECC error",
            FaultKind::ParityOnWalk => "parity/ECC error on table walk",
            FaultKind::Alignment => "alignment fault",
            FaultKind::TlbConflict => "TLB conflict abort",
            FaultKind::UnsupportedAtomicUpdate => "unsupported atomic hardware update",
            FaultKind::UnsupportedExclusive => "unsupported exclusive/atomic access",
            FaultKind::Other => "unrecognised fault status",
        };
        f.write_str(name)?;
        if let Some(level) = self.level {
            write!(f, ", level {level}")?;
        }
        write!(f, " ({:#04x})", self.code)
    }
}

/// Width of a single data access, from `ISS.SAS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessSize {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Halfword,
    /// 32 bits.
    Word,
    /// 64 bits.
    Doubleword,
}

impl AccessSize {
    /// Access width in bytes.
    #[must_use]
    pub const fn bytes(self) -> u8 {
        match self {
            Self::Byte => 1,
            Self::Halfword => 2,
            Self::Word => 4,
            Self::Doubleword => 8,
        }
    }
}

/// The instruction syndrome of a data abort, present when `ISS.ISV` is set:
/// enough to emulate the faulting load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSyndrome {
    /// Access size (`SAS`).
    pub size: AccessSize,
    /// Whether a load sign-extends (`SSE`).
    pub sign_extend: bool,
    /// Transfer register number, 31 meaning XZR (`SRT`).
    pub reg: u8,
    /// Whether the register is 64-bit (`SF`).
    pub sixty_four: bool,
    /// Acquire/release semantics (`AR`).
    pub acquire_release: bool,
}

/// The ISS of a data abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// Instruction syndrome, `None` when `ISV` is clear.
    pub access: Option<AccessSyndrome>,
    /// FAR is not valid (`FnV`).
    pub far_not_valid: bool,
    /// External abort type (`EA`).
    pub external: bool,
    /// Cache maintenance or address translation instruction (`CM`).
    pub cache_maintenance: bool,
    /// Fault on a stage-2 walk for a stage-1 walk (`S1PTW`).
    pub s1ptw: bool,
    /// Write, not read (`WnR`).
    pub write: bool,
    /// Data fault status code (`DFSC`).
    pub status: FaultStatus,
}

impl DataAbort {
    /// Decodes a data-abort ISS.
    #[must_use]
    pub const fn from_iss(iss: u32) -> Self {
        let isv = bit(iss, 24);
        let access = if isv {
            Some(AccessSyndrome {
                size: match (iss >> 22) & 0b11 {
                    0 => AccessSize::Byte,
                    1 => AccessSize::Halfword,
                    2 => AccessSize::Word,
                    _ => AccessSize::Doubleword,
                },
                sign_extend: bit(iss, 21),
                reg: ((iss >> 16) & 0x1f) as u8,
                sixty_four: bit(iss, 15),
                acquire_release: bit(iss, 14),
            })
        } else {
            None
        };
        Self {
            access,
            far_not_valid: bit(iss, 10),
            external: bit(iss, 9),
            cache_maintenance: bit(iss, 8),
            s1ptw: bit(iss, 7),
            write: bit(iss, 6),
            status: FaultStatus::from_bits((iss & 0x3f) as u8),
        }
    }
}

/// The ISS of an instruction abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionAbort {
    /// FAR is not valid (`FnV`).
    pub far_not_valid: bool,
    /// External abort type (`EA`).
    pub external: bool,
    /// Fault on a stage-2 walk for a stage-1 walk (`S1PTW`).
    pub s1ptw: bool,
    /// Instruction fault status code (`IFSC`).
    pub status: FaultStatus,
}

impl InstructionAbort {
    /// Decodes an instruction-abort ISS.
    #[must_use]
    pub const fn from_iss(iss: u32) -> Self {
        Self {
            far_not_valid: bit(iss, 10),
            external: bit(iss, 9),
            s1ptw: bit(iss, 7),
            status: FaultStatus::from_bits((iss & 0x3f) as u8),
        }
    }
}

/// A trapped AArch64 `MSR`/`MRS`/system instruction (EC 0x18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// `Op0`.
    pub op0: u8,
    /// `Op1`.
    pub op1: u8,
    /// `CRn`.
    pub crn: u8,
    /// `CRm`.
    pub crm: u8,
    /// `Op2`.
    pub op2: u8,
    /// Transfer register number.
    pub reg: u8,
    /// A read (`MRS`), not a write.
    pub read: bool,
}

impl SysRegAccess {
    /// Decodes the ISS of a trapped system-register access.
    #[must_use]
    pub const fn from_iss(iss: u32) -> Self {
        Self {
            op0: ((iss >> 20) & 0b11) as u8,
            op2: ((iss >> 17) & 0b111) as u8,
            op1: ((iss >> 14) & 0b111) as u8,
            crn: ((iss >> 10) & 0xf) as u8,
            reg: ((iss >> 5) & 0x1f) as u8,
            crm: ((iss >> 1) & 0xf) as u8,
            read: bit(iss, 0),
        }
    }
}

/// The instruction-specific syndrome, decoded according to the class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iss {
    /// Data abort (lower or current EL).
    DataAbort(DataAbort),
    /// Instruction abort (lower or current EL).
    InstructionAbort(InstructionAbort),
    /// `HVC` immediate.
    Hvc {
        /// The 16-bit immediate.
        imm: u16,
    },
    /// `SMC` immediate.
    Smc {
        /// The 16-bit immediate.
        imm: u16,
    },
    /// `SVC` immediate.
    Svc {
        /// The 16-bit immediate.
        imm: u16,
    },
    /// `BRK` comment.
    Brk {
        /// The 16-bit comment field.
        comment: u16,
    },
    /// Trapped system-register access.
    SysReg(SysRegAccess),
    /// A class whose ISS is not decoded here: the raw 25 bits.
    Raw(u32),
}

/// A decoded exception syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr {
    /// The raw register value.
    pub raw: u64,
    /// Exception class.
    pub class: ExceptionClass,
    /// 32-bit instruction (`IL`), as opposed to a 16-bit T32 one.
    pub il: bool,
    /// Decoded instruction-specific syndrome.
    pub iss: Iss,
}

impl Esr {
    /// Decodes a raw `ESR_ELx` value.
    #[must_use]
    pub const fn decode(raw: u64) -> Self {
        let class = ExceptionClass::from_bits(((raw >> 26) & 0x3f) as u8);
        let iss = (raw & 0x1ff_ffff) as u32;
        let imm16 = (iss & 0xffff) as u16;
        let iss = match class {
            ExceptionClass::DataAbortLower | ExceptionClass::DataAbortCurrent => {
                Iss::DataAbort(DataAbort::from_iss(iss))
            }
            ExceptionClass::InstrAbortLower | ExceptionClass::InstrAbortCurrent => {
                Iss::InstructionAbort(InstructionAbort::from_iss(iss))
            }
            ExceptionClass::Hvc32 | ExceptionClass::Hvc64 => Iss::Hvc { imm: imm16 },
            ExceptionClass::Smc32 | ExceptionClass::Smc64 => Iss::Smc { imm: imm16 },
            ExceptionClass::Svc32 | ExceptionClass::Svc64 => Iss::Svc { imm: imm16 },
            ExceptionClass::Brk64 => Iss::Brk { comment: imm16 },
            ExceptionClass::SysReg => Iss::SysReg(SysRegAccess::from_iss(iss)),
            _ => Iss::Raw(iss),
        };
        Self {
            raw,
            class,
            il: raw & (1 << 25) != 0,
            iss,
        }
    }
}

impl fmt::Display for Iss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DataAbort(da) => {
                write!(
                    f,
                    "{}, {}",
                    da.status,
                    if da.write { "write" } else { "read" }
                )?;
                match da.access {
                    Some(a) => write!(
                        f,
                        ", ISV: {}-byte access via {}{}{}",
                        a.size.bytes(),
                        if a.sixty_four { 'x' } else { 'w' },
                        a.reg,
                        if a.sign_extend { " sign-extended" } else { "" }
                    )?,
                    None => f.write_str(", no instruction syndrome")?,
                }
                if da.far_not_valid {
                    f.write_str(", FAR not valid")?;
                }
                if da.s1ptw {
                    f.write_str(", on stage-1 walk")?;
                }
                Ok(())
            }
            Self::InstructionAbort(ia) => {
                write!(f, "{}", ia.status)?;
                if ia.far_not_valid {
                    f.write_str(", FAR not valid")?;
                }
                if ia.s1ptw {
                    f.write_str(", on stage-1 walk")?;
                }
                Ok(())
            }
            Self::Hvc { imm } => write!(f, "hvc #{imm:#x}"),
            Self::Smc { imm } => write!(f, "smc #{imm:#x}"),
            Self::Svc { imm } => write!(f, "svc #{imm:#x}"),
            Self::Brk { comment } => write!(f, "brk #{comment:#x}"),
            Self::SysReg(s) => write!(
                f,
                "{} S{}_{}_C{}_C{}_{} {} x{}",
                if s.read { "mrs" } else { "msr" },
                s.op0,
                s.op1,
                s.crn,
                s.crm,
                s.op2,
                if s.read { "->" } else { "<-" },
                s.reg
            ),
            Self::Raw(iss) => write!(f, "ISS {iss:#09x}"),
        }
    }
}

const fn bit(value: u32, n: u32) -> bool {
    value & (1 << n) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn data_abort_with_syndrome() {
        // EC=0x24 (DA lower), IL, ISV, SAS=word, SRT=3, SF=0, WnR, DFSC=translation L3.
        let raw = (0x24u64 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 0x07;
        let esr = Esr::decode(raw);
        assert_eq!(esr.class, ExceptionClass::DataAbortLower);
        assert!(esr.il);
        let Iss::DataAbort(da) = esr.iss else {
            panic!("not a data abort: {esr:?}");
        };
        assert!(da.write);
        assert_eq!(
            da.access,
            Some(AccessSyndrome {
                size: AccessSize::Word,
                sign_extend: false,
                reg: 3,
                sixty_four: false,
                acquire_release: false,
            })
        );
        assert_eq!(da.status.kind, FaultKind::Translation);
        assert_eq!(da.status.level, Some(3));
        assert_eq!(
            esr.iss.to_string(),
            "translation fault, level 3 (0x07), write, ISV: 4-byte access via w3"
        );
    }

    #[test]
    fn data_abort_without_syndrome() {
        let raw = (0x25u64 << 26) | (1 << 25) | 0x21;
        let esr = Esr::decode(raw);
        assert_eq!(esr.class, ExceptionClass::DataAbortCurrent);
        let Iss::DataAbort(da) = esr.iss else {
            panic!("not a data abort");
        };
        assert_eq!(da.access, None);
        assert!(!da.write);
        assert_eq!(da.status.kind, FaultKind::Alignment);
        assert_eq!(da.status.level, None);
    }

    #[test]
    fn instruction_abort() {
        let raw = (0x20u64 << 26) | (1 << 25) | (1 << 7) | 0x0d;
        let esr = Esr::decode(raw);
        assert_eq!(esr.class, ExceptionClass::InstrAbortLower);
        let Iss::InstructionAbort(ia) = esr.iss else {
            panic!("not an instruction abort");
        };
        assert!(ia.s1ptw);
        assert_eq!(ia.status.kind, FaultKind::Permission);
        assert_eq!(ia.status.level, Some(1));
    }

    #[test]
    fn hvc_smc_brk_immediates() {
        assert_eq!(
            Esr::decode((0x16u64 << 26) | (1 << 25) | 0x1234).iss,
            Iss::Hvc { imm: 0x1234 }
        );
        assert_eq!(Esr::decode((0x17u64 << 26) | 7).iss, Iss::Smc { imm: 7 });
        assert_eq!(
            Esr::decode((0x3cu64 << 26) | 0xf00).iss,
            Iss::Brk { comment: 0xf00 }
        );
    }

    #[test]
    fn sysreg_access() {
        // mrs x5, CNTPCT_EL0 = S3_3_C14_C0_1
        let iss = (3 << 20) | (1 << 17) | (3 << 14) | (14 << 10) | (5 << 5) | 1;
        let esr = Esr::decode((0x18u64 << 26) | (1 << 25) | iss);
        assert_eq!(
            esr.iss,
            Iss::SysReg(SysRegAccess {
                op0: 3,
                op1: 3,
                crn: 14,
                crm: 0,
                op2: 1,
                reg: 5,
                read: true
            })
        );
        assert_eq!(esr.iss.to_string(), "mrs S3_3_C14_C0_1 -> x5");
    }

    #[test]
    fn unknown_and_reserved_classes() {
        assert_eq!(Esr::decode(0).class, ExceptionClass::Unknown);
        assert_eq!(
            Esr::decode(0x3fu64 << 26).class,
            ExceptionClass::Other(0x3f)
        );
        assert!(ExceptionClass::Other(0x3f).to_string().contains("0x3f"));
    }

    #[test]
    fn fault_status_codes() {
        for level in 0..4u8 {
            assert_eq!(FaultStatus::from_bits(level).kind, FaultKind::AddressSize);
            assert_eq!(
                FaultStatus::from_bits(0x04 | level).kind,
                FaultKind::Translation
            );
            assert_eq!(
                FaultStatus::from_bits(0x08 | level).kind,
                FaultKind::AccessFlag
            );
            assert_eq!(
                FaultStatus::from_bits(0x0c | level).kind,
                FaultKind::Permission
            );
            assert_eq!(FaultStatus::from_bits(0x14 | level).level, Some(level));
        }
        assert_eq!(FaultStatus::from_bits(0x10).kind, FaultKind::SyncExternal);
        assert_eq!(FaultStatus::from_bits(0x30).kind, FaultKind::TlbConflict);
        assert_eq!(FaultStatus::from_bits(0x3f).kind, FaultKind::Other);
    }

    /// Every exception class the decoder knows, by raw EC, with its name.
    const CLASSES: [(u8, ExceptionClass, &str); 38] = [
        (
            0x00,
            ExceptionClass::Unknown,
            "Unknown reason / undefined instruction",
        ),
        (0x01, ExceptionClass::Wfx, "Trapped WFI/WFE"),
        (
            0x03,
            ExceptionClass::Cp15Rt,
            "Trapped AArch32 MCR/MRC (CP15)",
        ),
        (
            0x04,
            ExceptionClass::Cp15Rrt,
            "Trapped AArch32 MCRR/MRRC (CP15)",
        ),
        (
            0x05,
            ExceptionClass::Cp14Rt,
            "Trapped AArch32 MCR/MRC (CP14)",
        ),
        (
            0x06,
            ExceptionClass::Cp14Ls,
            "Trapped AArch32 LDC/STC (CP14)",
        ),
        (0x07, ExceptionClass::FpAccess, "Trapped FP/SIMD/SVE access"),
        (0x0a, ExceptionClass::Ls64, "Trapped LD64B/ST64B"),
        (0x0c, ExceptionClass::Cp14Rrt, "Trapped AArch32 MRRC (CP14)"),
        (
            0x0d,
            ExceptionClass::BranchTarget,
            "Branch target exception",
        ),
        (
            0x0e,
            ExceptionClass::IllegalState,
            "Illegal execution state",
        ),
        (0x11, ExceptionClass::Svc32, "SVC (AArch32)"),
        (0x12, ExceptionClass::Hvc32, "HVC (AArch32)"),
        (0x13, ExceptionClass::Smc32, "SMC (AArch32)"),
        (0x15, ExceptionClass::Svc64, "SVC (AArch64)"),
        (0x16, ExceptionClass::Hvc64, "HVC (AArch64)"),
        (0x17, ExceptionClass::Smc64, "SMC (AArch64)"),
        (
            0x18,
            ExceptionClass::SysReg,
            "Trapped MSR/MRS/system instruction",
        ),
        (0x19, ExceptionClass::Sve, "Trapped SVE access"),
        (0x1a, ExceptionClass::Eret, "Trapped ERET"),
        (
            0x1c,
            ExceptionClass::PacFail,
            "Pointer authentication failure",
        ),
        (
            0x20,
            ExceptionClass::InstrAbortLower,
            "Instruction Abort from a lower EL",
        ),
        (
            0x21,
            ExceptionClass::InstrAbortCurrent,
            "Instruction Abort from the current EL",
        ),
        (0x22, ExceptionClass::PcAlignment, "PC alignment fault"),
        (
            0x24,
            ExceptionClass::DataAbortLower,
            "Data Abort from a lower EL",
        ),
        (
            0x25,
            ExceptionClass::DataAbortCurrent,
            "Data Abort from the current EL",
        ),
        (0x26, ExceptionClass::SpAlignment, "SP alignment fault"),
        (0x28, ExceptionClass::Fp32, "FP exception (AArch32)"),
        (0x2c, ExceptionClass::Fp64, "FP exception (AArch64)"),
        (0x2f, ExceptionClass::SError, "SError interrupt"),
        (
            0x30,
            ExceptionClass::BreakpointLower,
            "Breakpoint from a lower EL",
        ),
        (
            0x31,
            ExceptionClass::BreakpointCurrent,
            "Breakpoint from the current EL",
        ),
        (
            0x32,
            ExceptionClass::SoftStepLower,
            "Software step from a lower EL",
        ),
        (
            0x33,
            ExceptionClass::SoftStepCurrent,
            "Software step from the current EL",
        ),
        (
            0x34,
            ExceptionClass::WatchpointLower,
            "Watchpoint from a lower EL",
        ),
        (
            0x35,
            ExceptionClass::WatchpointCurrent,
            "Watchpoint from the current EL",
        ),
        (0x38, ExceptionClass::Bkpt32, "BKPT (AArch32)"),
        (0x3c, ExceptionClass::Brk64, "BRK (AArch64)"),
    ];

    #[test]
    fn every_exception_class_and_its_name() {
        for ec in 0..64u8 {
            let class = ExceptionClass::from_bits(ec);
            match CLASSES.iter().find(|(raw, _, _)| *raw == ec) {
                Some(&(_, want, name)) => {
                    assert_eq!(class, want, "EC {ec:#04x}");
                    assert_eq!(class.name(), name, "EC {ec:#04x}");
                    assert_eq!(class.to_string(), name, "EC {ec:#04x}");
                }
                None => {
                    assert_eq!(class, ExceptionClass::Other(ec), "EC {ec:#04x}");
                    assert_eq!(
                        class.to_string(),
                        format!("Unrecognised exception class (EC {ec:#04x})")
                    );
                }
            }
            // Only the six EC bits count.
            assert_eq!(ExceptionClass::from_bits(ec | 0xc0), class);
        }
        // The raw values the exit path dispatches on name the same classes.
        assert_eq!(ExceptionClass::from_bits(ec::HVC64), ExceptionClass::Hvc64);
        assert_eq!(ExceptionClass::from_bits(ec::SMC64), ExceptionClass::Smc64);
        assert_eq!(
            ExceptionClass::from_bits(ec::IABT_LOWER),
            ExceptionClass::InstrAbortLower
        );
        assert_eq!(
            ExceptionClass::from_bits(ec::DABT_LOWER),
            ExceptionClass::DataAbortLower
        );
    }

    #[test]
    fn every_fault_status_code() {
        use FaultKind as K;
        for code in 0..64u8 {
            let level = code & 0b11;
            let (kind, lvl, name) = match code {
                0x00..=0x03 => (K::AddressSize, Some(level), "address size fault"),
                0x04..=0x07 => (K::Translation, Some(level), "translation fault"),
                0x08..=0x0b => (K::AccessFlag, Some(level), "access flag fault"),
                0x0c..=0x0f => (K::Permission, Some(level), "permission fault"),
                0x10 => (K::SyncExternal, None, "synchronous external abort"),
                0x11 => (K::TagCheck, None, "tag check fault"),
                0x14..=0x17 => (
                    K::SyncExternalOnWalk,
                    Some(level),
                    "synchronous external abort on table walk",
                ),
                0x18 => (K::Parity, None, "parity/ECC error"),
                0x1c..=0x1f => (
                    K::ParityOnWalk,
                    Some(level),
                    "parity/ECC error on table walk",
                ),
                0x21 => (K::Alignment, None, "alignment fault"),
                0x30 => (K::TlbConflict, None, "TLB conflict abort"),
                0x31 => (
                    K::UnsupportedAtomicUpdate,
                    None,
                    "unsupported atomic hardware update",
                ),
                0x35 => (
                    K::UnsupportedExclusive,
                    None,
                    "unsupported exclusive/atomic access",
                ),
                _ => (K::Other, None, "unrecognised fault status"),
            };
            let status = FaultStatus::from_bits(code | 0xc0);
            assert_eq!(
                status,
                FaultStatus {
                    code,
                    kind,
                    level: lvl
                },
                "code {code:#04x}"
            );
            let text = match lvl {
                Some(l) => format!("{name}, level {l} ({code:#04x})"),
                None => format!("{name} ({code:#04x})"),
            };
            assert_eq!(status.to_string(), text);
        }
    }

    #[test]
    fn sysreg_access_of_every_field() {
        // msr MDSCR_EL1, x17 = S2_0_C0_C2_2: op0 2, a write.
        let iss = (2 << 20) | (2 << 17) | (2 << 1) | (17 << 5);
        let esr = Esr::decode((0x18u64 << 26) | (1 << 25) | iss);
        assert_eq!(
            esr.iss,
            Iss::SysReg(SysRegAccess {
                op0: 2,
                op1: 0,
                crn: 0,
                crm: 2,
                op2: 2,
                reg: 17,
                read: false
            })
        );
        assert_eq!(esr.iss.to_string(), "msr S2_0_C0_C2_2 <- x17");
        // Each field alone at its widest, the others zero.
        let fields: [(u32, u32, SysRegAccess); 7] = [
            (20, 0b11, SysRegAccess { op0: 3, ..SYS0 }),
            (17, 0b111, SysRegAccess { op2: 7, ..SYS0 }),
            (14, 0b111, SysRegAccess { op1: 7, ..SYS0 }),
            (10, 0xf, SysRegAccess { crn: 15, ..SYS0 }),
            (5, 0x1f, SysRegAccess { reg: 31, ..SYS0 }),
            (1, 0xf, SysRegAccess { crm: 15, ..SYS0 }),
            (0, 1, SysRegAccess { read: true, ..SYS0 }),
        ];
        for (shift, max, want) in fields {
            assert_eq!(SysRegAccess::from_iss(max << shift), want, "bit {shift}");
        }
        assert_eq!(SysRegAccess::from_iss(0), SYS0);
    }

    /// A system-register access with every field zero.
    const SYS0: SysRegAccess = SysRegAccess {
        op0: 0,
        op1: 0,
        crn: 0,
        crm: 0,
        op2: 0,
        reg: 0,
        read: false,
    };

    #[test]
    fn svc_and_classes_left_raw() {
        for ec in [0x11u64, 0x15] {
            let esr = Esr::decode((ec << 26) | (1 << 25) | 0x42);
            assert_eq!(esr.iss, Iss::Svc { imm: 0x42 }, "EC {ec:#x}");
            assert_eq!(esr.iss.to_string(), "svc #0x42");
        }
        assert_eq!(
            Esr::decode((0x12u64 << 26) | 0x1_0007).iss,
            Iss::Hvc { imm: 7 },
            "HVC from AArch32, the immediate's 16 bits only"
        );
        assert_eq!(Esr::decode((0x13u64 << 26) | 9).iss, Iss::Smc { imm: 9 });
        assert_eq!(Esr::decode(0x3cu64 << 26).iss.to_string(), "brk #0x0");
        assert_eq!(Esr::decode(0x16u64 << 26).iss.to_string(), "hvc #0x0");
        assert_eq!(Esr::decode((0x17u64 << 26) | 3).iss.to_string(), "smc #0x3");
        // WFI/WFE: not decoded, the 25 ISS bits kept.
        let esr = Esr::decode((0x01u64 << 26) | (1 << 25) | 0x1ff_ffff);
        assert_eq!(esr.iss, Iss::Raw(0x1ff_ffff));
        assert_eq!(esr.iss.to_string(), "ISS 0x1ffffff");
    }

    #[test]
    fn abort_syndrome_flags_and_their_rendering() {
        // ISV, SAS doubleword, SSE, SRT 9, SF, AR, FnV, EA, CM, S1PTW, WnR.
        let iss = (1 << 24)
            | (3 << 22)
            | (1 << 21)
            | (9 << 16)
            | (1 << 15)
            | (1 << 14)
            | (1 << 10)
            | (1 << 9)
            | (1 << 8)
            | (1 << 7)
            | (1 << 6)
            | 0x0b;
        let da = DataAbort::from_iss(iss);
        assert_eq!(
            da,
            DataAbort {
                access: Some(AccessSyndrome {
                    size: AccessSize::Doubleword,
                    sign_extend: true,
                    reg: 9,
                    sixty_four: true,
                    acquire_release: true,
                }),
                far_not_valid: true,
                external: true,
                cache_maintenance: true,
                s1ptw: true,
                write: true,
                status: FaultStatus::from_bits(0x0b),
            }
        );
        assert_eq!(
            Iss::DataAbort(da).to_string(),
            "access flag fault, level 3 (0x0b), write, ISV: 8-byte access via x9 \
             sign-extended, FAR not valid, on stage-1 walk"
        );
        let sizes = [
            (0, AccessSize::Byte, 1),
            (1, AccessSize::Halfword, 2),
            (2, AccessSize::Word, 4),
            (3, AccessSize::Doubleword, 8),
        ];
        for (sas, size, bytes) in sizes {
            let da = DataAbort::from_iss((1 << 24) | (sas << 22));
            assert_eq!(da.access.map(|a| a.size), Some(size));
            assert_eq!(size.bytes(), bytes);
        }
        // Each flag alone.
        let none = DataAbort::from_iss(0);
        assert_eq!(
            DataAbort::from_iss(1 << 10),
            DataAbort {
                far_not_valid: true,
                ..none
            }
        );
        assert_eq!(
            DataAbort::from_iss(1 << 9),
            DataAbort {
                external: true,
                ..none
            }
        );
        assert_eq!(
            DataAbort::from_iss(1 << 8),
            DataAbort {
                cache_maintenance: true,
                ..none
            }
        );
        assert_eq!(
            DataAbort::from_iss(1 << 7),
            DataAbort {
                s1ptw: true,
                ..none
            }
        );
        assert_eq!(
            DataAbort::from_iss(1 << 6),
            DataAbort {
                write: true,
                ..none
            }
        );
        let ia = InstructionAbort::from_iss((1 << 10) | (1 << 9) | (1 << 7) | 0x24);
        assert_eq!(
            ia,
            InstructionAbort {
                far_not_valid: true,
                external: true,
                s1ptw: true,
                status: FaultStatus::from_bits(0x24),
            }
        );
        assert_eq!(
            Iss::InstructionAbort(ia).to_string(),
            "unrecognised fault status (0x24), FAR not valid, on stage-1 walk"
        );
        let ia = InstructionAbort::from_iss(1 << 9);
        assert!(ia.external && !ia.far_not_valid && !ia.s1ptw);
        assert_eq!(
            Iss::InstructionAbort(ia).to_string(),
            "address size fault, level 0 (0x00)"
        );
    }

    proptest! {
        #[test]
        fn decode_is_total_and_keeps_fields(raw in any::<u64>()) {
            let esr = Esr::decode(raw);
            prop_assert_eq!(esr.raw, raw);
            prop_assert_eq!(esr.il, raw & (1 << 25) != 0);
            // Rendering never panics.
            let _ = esr.iss.to_string();
            let _ = esr.class.to_string();
            if let Iss::DataAbort(da) = esr.iss {
                prop_assert_eq!(da.access.is_some(), raw & (1 << 24) != 0);
                prop_assert_eq!(da.status.code as u64, raw & 0x3f);
            }
        }
    }
}
