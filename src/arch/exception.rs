//! EL2 exception handling: the vector table (`vectors.S`), and what an exception taken from EL2 itself gets: a decoded register dump, then the run ends with [`HypFailure::Exception`].
//!
//! Exceptions from a guest (exits) take the other half of the table,
//! which saves into the running vCPU's context and calls its exit handler
//! (`context.rs`).

use core::arch::{asm, global_asm};
use core::fmt;
use core::mem::{offset_of, size_of};

use aarch64_cpu::registers::{Readable, ESR_EL2, FAR_EL2};

/// The syndrome of the exception being handled (`ESR_EL2`).
pub fn syndrome() -> u64 {
    ESR_EL2.get()
}

/// The faulting virtual and intermediate physical address registers of a
/// guest abort: `FAR_EL2`, `HPFAR_EL2`.
pub fn fault_addresses() -> (u64, u64) {
    (FAR_EL2.get(), aarch64_cpu::registers::HPFAR_EL2.get())
}
use hvcore::bootargs::FaultInjection;
use hvcore::esr::Esr;

use super::console::fatal_println;
use super::context::{CTX_GUEST, CTX_HOST, CTX_HOST_SP, CTX_PC};
use super::exit::{fail, HypFailure};
use super::percpu;

/// General registers and return state saved on an exception taken at EL2.
/// Shared with `vectors.S`: the assembly receives the size and the
/// `elr`/`spsr` offsets as constants, and stores `x0..x30` at 8 * n.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// `x0` to `x30`.
    pub regs: [u64; 31],
    /// `ELR_EL2`: where `eret` resumes.
    pub elr: u64,
    /// `SPSR_EL2`: the state `eret` restores.
    pub spsr: u64,
    /// Keeps the frame a multiple of 16 bytes (SP alignment).
    _pad: u64,
}

const _: () = {
    assert!(offset_of!(TrapFrame, regs) == 0);
    assert!(size_of::<TrapFrame>().is_multiple_of(16));
    // vectors.S stores x30 alone at 16 * 15 = 240, just below `elr`.
    assert!(offset_of!(TrapFrame, elr) == 31 * 8);
};

global_asm!(
    include_str!("vectors.S"),
    FRAME_SIZE = const size_of::<TrapFrame>(),
    FRAME_ELR = const offset_of!(TrapFrame, elr),
    FRAME_SPSR = const offset_of!(TrapFrame, spsr),
    HANDLER = sym handle_exception,
    CTX_PC = const CTX_PC,
    CTX_HOST = const CTX_HOST,
    CTX_GUEST = const CTX_GUEST,
    CTX_HOST_SP = const CTX_HOST_SP,
);

/// Where an exception came from: which group of four vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// EL2 using `SP_EL0`.
    CurrentElSp0,
    /// EL2 using `SP_EL2`.
    CurrentElSpx,
    /// EL1/EL0 in AArch64 (a guest).
    LowerElAArch64,
    /// EL1/EL0 in AArch32 (a guest).
    LowerElAArch32,
}

/// The type of exception: the position within a group of four vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Synchronous.
    Sync,
    /// IRQ.
    Irq,
    /// FIQ.
    Fiq,
    /// SError.
    SError,
}

/// Which of the 16 vectors was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vector {
    /// Where the exception came from.
    pub origin: Origin,
    /// What kind it is.
    pub kind: Kind,
}

impl Vector {
    /// Decodes the index (0..16) the vector stub passes.
    pub const fn from_index(index: u64) -> Self {
        let origin = match (index >> 2) & 0b11 {
            0 => Origin::CurrentElSp0,
            1 => Origin::CurrentElSpx,
            2 => Origin::LowerElAArch64,
            _ => Origin::LowerElAArch32,
        };
        let kind = match index & 0b11 {
            0 => Kind::Sync,
            1 => Kind::Irq,
            2 => Kind::Fiq,
            _ => Kind::SError,
        };
        Self { origin, kind }
    }

    /// Whether it is a synchronous exception (the common exit: one test
    /// of the index's low bits, before any decoding).
    #[inline(always)]
    pub const fn index_is_sync(index: u64) -> bool {
        index & 0b11 == 0
    }
}

impl fmt::Display for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Sync => "synchronous",
            Kind::Irq => "IRQ",
            Kind::Fiq => "FIQ",
            Kind::SError => "SError",
        };
        let origin = match self.origin {
            Origin::CurrentElSp0 => "current EL with SP_EL0",
            Origin::CurrentElSpx => "current EL with SP_EL2",
            Origin::LowerElAArch64 => "lower EL, AArch64",
            Origin::LowerElAArch32 => "lower EL, AArch32",
        };
        write!(f, "{kind} from {origin}")
    }
}

/// Called by `vectors.S` with the frame of an exception taken at EL2 and
/// the vector index. Never returns.
extern "C" fn handle_exception(frame: &mut TrapFrame, index: u64) -> ! {
    fatal(
        frame,
        Vector::from_index(index),
        "unexpected exception at EL2",
    )
}

/// Prints a decoded register dump and ends the run.
fn fatal(frame: &TrapFrame, vector: Vector, why: &str) -> ! {
    let esr_raw = ESR_EL2.get();
    let esr = Esr::decode(esr_raw);
    let cpu = percpu::current_id();
    fatal_println!("");
    match percpu::current().running() {
        Some((vm, vcpu)) => {
            fatal_println!("!!! FATAL on cpu {cpu} (running vm{vm}/vcpu{vcpu}): {why}")
        }
        None => fatal_println!("!!! FATAL on cpu {cpu}: {why}"),
    }
    fatal_println!("    vector: {vector}");
    fatal_println!(
        "    EC:     {} ({:#04x})",
        esr.class,
        ESR_EL2::EC.read(esr_raw)
    );
    fatal_println!("    ISS:    {}", esr.iss);
    fatal_println!(
        "    ESR_EL2 {esr_raw:#018x}  ELR_EL2 {:#018x}  FAR_EL2 {:#018x}  SPSR_EL2 {:#018x}",
        frame.elr,
        FAR_EL2.get(),
        frame.spsr
    );
    for row in 0..8 {
        let mut line = [(0usize, 0u64); 4];
        let mut n = 0;
        for col in 0..4 {
            let reg = row * 4 + col;
            if reg < 31 {
                line[n] = (reg, frame.regs[reg]);
                n += 1;
            }
        }
        fatal_println!("    {}", RegRow(&line[..n]));
    }
    fail(HypFailure::Exception)
}

/// One row of the register dump.
struct RegRow<'a>(&'a [(usize, u64)]);

impl fmt::Display for RegRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (reg, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("  ")?;
            }
            write!(f, "x{reg:<2} {value:#018x}")?;
        }
        Ok(())
    }
}

/// Crashes on purpose, as `fault=` on the command line asks, so the fatal
/// paths can be tested end to end.
pub fn inject(fault: FaultInjection) -> ! {
    match fault {
        FaultInjection::Panic => panic!("deliberate panic (fault=panic)"),
        FaultInjection::Abort => {
            // SAFETY: the load targets an address outside the 40-bit EL2
            // address space (and any physical one), so it reads no memory:
            // it takes a data abort (a translation fault with the MMU on),
            // which is fatal and never returns here.
            unsafe {
                asm!("ldr {tmp}, [{addr}]", addr = in(reg) !0xfu64, tmp = out(reg) _, options(nostack, readonly));
            }
        }
        FaultInjection::WriteText => {
            let target = inject as *const () as u64;
            // SAFETY: the store targets this function's own code, which the
            // EL2 stage-1 tables map read-only: it takes a permission fault,
            // which is fatal and never returns here, so no code changes.
            unsafe {
                asm!("str xzr, [{addr}]", addr = in(reg) target, options(nostack));
            }
        }
        FaultInjection::Brk => {
            // SAFETY: `brk` only raises a breakpoint exception, which is
            // fatal and never returns here; no memory or register is used.
            unsafe { asm!("brk #0x1", options(nomem, nostack)) };
        }
    }
    unreachable!("an injected fault returned")
}
