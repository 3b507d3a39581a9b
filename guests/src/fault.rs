//! EL1 exception vectors: IRQs go to the interrupt dispatch, faults a scenario provokes on purpose are recorded and skipped; anything else is dumped and ends the run with status 3.
//!
//! Every vector saves the same frame on the current stack and calls
//! `handle_exception`; an IRQ from the current EL with `SP_EL1` (offset
//! 0x280, where a guest running at EL1h takes them) goes to [`crate::irq`].
//!
//! A scenario arms its vCPU's slot with [`expect_fault`] around one access
//! made by a probe ([`probe_load`], [`probe_store`], [`probe_call`]); the
//! synchronous-exception handler then records `ESR_EL1`, `FAR_EL1` and
//! `ELR_EL1` and resumes after the access. Only the vector for synchronous
//! exceptions from the current EL with `SP_EL1` (offset 0x200, where the ABI
//! injects aborts) is ever expected.

use core::arch::{asm, global_asm};
use core::sync::atomic::{compiler_fence, AtomicU64, AtomicU8, Ordering};

use crate::cpu::{self, MAX_CPUS};
use crate::irq;
use crate::psci;

/// The registers the vector code saves (`x0`–`x30`, `ELR_EL1`, `SPSR_EL1`).
#[repr(C)]
pub struct Frame {
    /// `x0`–`x30`.
    pub x: [u64; 31],
    /// `ELR_EL1`: where the exception returns to.
    pub elr: u64,
    /// `SPSR_EL1`.
    pub spsr: u64,
    _pad: u64,
}

const FRAME_SIZE: usize = core::mem::size_of::<Frame>();
const _: () = assert!(FRAME_SIZE == 272 && FRAME_SIZE.is_multiple_of(16));

global_asm!(
    r#"
    .macro GUEST_VECTOR kind
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp]
    mov     x1, #\kind
    b       guest_vector_common
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global guest_vectors
guest_vectors:
    GUEST_VECTOR 0
    GUEST_VECTOR 1
    GUEST_VECTOR 2
    GUEST_VECTOR 3
    GUEST_VECTOR 4
    GUEST_VECTOR 5
    GUEST_VECTOR 6
    GUEST_VECTOR 7
    GUEST_VECTOR 8
    GUEST_VECTOR 9
    GUEST_VECTOR 10
    GUEST_VECTOR 11
    GUEST_VECTOR 12
    GUEST_VECTOR 13
    GUEST_VECTOR 14
    GUEST_VECTOR 15

guest_vector_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el1
    stp     x30, x2, [sp, #240]
    mrs     x2, spsr_el1
    str     x2, [sp, #256]
    mov     x0, sp
    bl      {handler}
    ldr     x2, [sp, #256]
    msr     spsr_el1, x2
    ldp     x30, x2, [sp, #240]
    msr     elr_el1, x2
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp]
    add     sp, sp, #{frame}
    eret
    "#,
    frame = const FRAME_SIZE,
    handler = sym handle_exception,
);

/// Vector index of a synchronous exception from the current EL with `SP_EL1`.
const SYNC_CURRENT_SPX: u64 = 4;
/// Vector index of an IRQ from the current EL with `SP_EL1`.
const IRQ_CURRENT_SPX: u64 = 5;

/// How to continue after an expected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// At the instruction after the faulting one (`ELR_EL1 + 4`): a load or store.
    Next,
    /// At the link register (`x30`): a branch-and-link to an address that
    /// cannot be fetched, where `ELR_EL1` is the branch target.
    Return,
}

/// A recorded synchronous exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// `ESR_EL1`.
    pub esr: u64,
    /// `FAR_EL1`.
    pub far: u64,
    /// `ELR_EL1`: the faulting instruction.
    pub elr: u64,
}

impl Fault {
    /// Exception class (`ESR_EL1.EC`): 0x25 data abort, 0x21 instruction abort (same EL).
    pub fn ec(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// Fault status code (`DFSC`/`IFSC`, `ESR_EL1[5:0]`): 0x10 synchronous external abort.
    pub fn fsc(&self) -> u64 {
        self.esr & 0x3f
    }
}

/// One vCPU's expected-fault slot; only that vCPU touches it (from its code
/// and its own exception handler).
struct Slot {
    /// 0 = not armed, 1 = [`Resume::Next`], 2 = [`Resume::Return`].
    armed: AtomicU8,
    taken: AtomicU8,
    esr: AtomicU64,
    far: AtomicU64,
    elr: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    armed: AtomicU8::new(0),
    taken: AtomicU8::new(0),
    esr: AtomicU64::new(0),
    far: AtomicU64::new(0),
    elr: AtomicU64::new(0),
};
static SLOTS: [Slot; MAX_CPUS] = [EMPTY; MAX_CPUS];

/// Runs `access` with this vCPU's slot armed, so one synchronous exception
/// is recorded and resumed from as `resume` says instead of ending the run.
/// Returns what `access` returned and the fault, if one was taken.
pub fn expect_fault<R>(resume: Resume, access: impl FnOnce() -> R) -> (R, Option<Fault>) {
    let slot = &SLOTS[cpu::id()];
    slot.taken.store(0, Ordering::Relaxed);
    let mode = match resume {
        Resume::Next => 1,
        Resume::Return => 2,
    };
    slot.armed.store(mode, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let result = access();
    compiler_fence(Ordering::SeqCst);
    slot.armed.store(0, Ordering::Relaxed);
    let fault = (slot.taken.load(Ordering::Relaxed) != 0).then(|| Fault {
        esr: slot.esr.load(Ordering::Relaxed),
        far: slot.far.load(Ordering::Relaxed),
        elr: slot.elr.load(Ordering::Relaxed),
    });
    (result, fault)
}

/// Loads the u64 at `addr` with one `ldr`. Returns the value (meaningless
/// if the load faulted) and the address of the `ldr`, to compare with `ELR_EL1`.
///
/// # Safety
///
/// `addr` must be 8-byte aligned, and reading it must not have effects Rust
/// cannot see (it is meant for memory and unbacked addresses, not devices).
pub unsafe fn probe_load(addr: u64) -> (u64, u64) {
    let (value, pc): (u64, u64);
    // SAFETY: the caller vouches for the address; a fault there is taken by
    // the vectors and resumed after the `ldr` when expected.
    unsafe {
        asm!(
            "adr {pc}, 2f",
            "2: ldr {value}, [{addr}]",
            addr = in(reg) addr, value = out(reg) value, pc = out(reg) pc,
            options(nostack, readonly, preserves_flags),
        );
    }
    (value, pc)
}

/// Loads the 16 bytes at `addr` with one `ldp`, an access whose abort
/// syndrome carries no register (ISV = 0). Returns the address of the `ldp`.
///
/// # Safety
///
/// `addr` must be 16-byte aligned, and reading it must have no effect Rust
/// cannot see (meant for an MMIO access the hypervisor refuses).
pub unsafe fn probe_load_pair(addr: u64) -> u64 {
    let pc: u64;
    // SAFETY: the caller vouches for the address; a fault there is taken by
    // the vectors and resumed after the `ldp` when expected.
    unsafe {
        asm!(
            "adr {pc}, 2f",
            "2: ldp {a}, {b}, [{addr}]",
            addr = in(reg) addr, a = out(reg) _, b = out(reg) _, pc = out(reg) pc,
            options(nostack, readonly, preserves_flags),
        );
    }
    pc
}

/// Stores `value` at `addr` with one `str`; returns the address of the `str`.
///
/// # Safety
///
/// `addr` must be 8-byte aligned and not hold anything Rust uses (meant for
/// read-only slots and unbacked addresses, where the store is refused).
pub unsafe fn probe_store(addr: u64, value: u64) -> u64 {
    let pc: u64;
    // SAFETY: the caller vouches for the address; a fault there is taken by
    // the vectors and resumed after the `str` when expected.
    unsafe {
        asm!(
            "adr {pc}, 2f",
            "2: str {value}, [{addr}]",
            addr = in(reg) addr, value = in(reg) value, pc = out(reg) pc,
            options(nostack, preserves_flags),
        );
    }
    pc
}

/// Branches with link to `addr` (a function returning a u64 in `x0`, or an
/// address that cannot be fetched, resumed from with [`Resume::Return`]);
/// returns `x0`.
///
/// # Safety
///
/// `addr` must hold a function following the C calling convention, or be
/// unfetchable (the hypervisor injects an abort).
pub unsafe fn probe_call(addr: u64) -> u64 {
    let ret: u64;
    // SAFETY: the caller vouches for the target; all caller-saved registers
    // are declared clobbered.
    unsafe {
        asm!(
            "blr {addr}",
            addr = in(reg) addr,
            inout("x0") 0u64 => ret,
            out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
            out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
            out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _, out("x30") _,
        );
    }
    ret
}

fn read_esr_far() -> (u64, u64) {
    let (esr, far): (u64, u64);
    // SAFETY: reading the syndrome registers has no side effect.
    unsafe {
        asm!(
            "mrs {esr}, esr_el1",
            "mrs {far}, far_el1",
            esr = out(reg) esr, far = out(reg) far,
            options(nomem, nostack, preserves_flags),
        );
    }
    (esr, far)
}

/// Called by the vector code with the saved registers and the vector index.
extern "C" fn handle_exception(frame: &mut Frame, kind: u64) {
    if kind == IRQ_CURRENT_SPX {
        irq::handle();
        return;
    }
    let (esr, far) = read_esr_far();
    if kind == SYNC_CURRENT_SPX {
        let slot = &SLOTS[cpu::id()];
        let mode = slot.armed.load(Ordering::Relaxed);
        if mode != 0 {
            slot.armed.store(0, Ordering::Relaxed);
            slot.esr.store(esr, Ordering::Relaxed);
            slot.far.store(far, Ordering::Relaxed);
            slot.elr.store(frame.elr, Ordering::Relaxed);
            slot.taken.store(1, Ordering::Relaxed);
            frame.elr = if mode == 2 {
                frame.x[30]
            } else {
                frame.elr + 4
            };
            return;
        }
    }
    dump(frame, kind, esr, far);
    psci::system_off(crate::STATUS_EXCEPTION)
}

const VECTOR_NAMES: [&str; 16] = [
    "synchronous, current EL with SP_EL0",
    "IRQ, current EL with SP_EL0",
    "FIQ, current EL with SP_EL0",
    "SError, current EL with SP_EL0",
    "synchronous, current EL with SP_EL1",
    "IRQ, current EL with SP_EL1",
    "FIQ, current EL with SP_EL1",
    "SError, current EL with SP_EL1",
    "synchronous, lower EL (AArch64)",
    "IRQ, lower EL (AArch64)",
    "FIQ, lower EL (AArch64)",
    "SError, lower EL (AArch64)",
    "synchronous, lower EL (AArch32)",
    "IRQ, lower EL (AArch32)",
    "FIQ, lower EL (AArch32)",
    "SError, lower EL (AArch32)",
];

fn ec_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "MSR/MRS/system instruction",
        0x20 => "instruction abort, lower EL",
        0x21 => "instruction abort, same EL",
        0x22 => "PC alignment",
        0x24 => "data abort, lower EL",
        0x25 => "data abort, same EL",
        0x26 => "SP alignment",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

fn dump(frame: &Frame, kind: u64, esr: u64, far: u64) {
    let line = crate::console::print_line_forced;
    let name = VECTOR_NAMES.get(kind as usize).copied().unwrap_or("?");
    let ec = (esr >> 26) & 0x3f;
    line(format_args!(
        "guest: FAIL: unexpected exception on vcpu{}: {} (vector offset {:#x})",
        cpu::id(),
        name,
        kind * 0x80
    ));
    line(format_args!(
        "guest:   ESR_EL1 {esr:#010x}: EC {ec:#04x} ({}), ISS {:#x}",
        ec_name(ec),
        esr & 0x1ff_ffff
    ));
    line(format_args!(
        "guest:   FAR_EL1 {far:#x}  ELR_EL1 {:#x}  SPSR_EL1 {:#x}",
        frame.elr, frame.spsr
    ));
    for (row, regs) in frame.x.chunks(4).enumerate() {
        let mut text = [0u8; 128];
        let mut w = Buf::new(&mut text);
        for (i, value) in regs.iter().enumerate() {
            let _ = core::fmt::write(&mut w, format_args!(" x{:<2} {value:#018x}", row * 4 + i));
        }
        line(format_args!("guest:  {}", w.as_str()));
    }
}

/// A fixed buffer to format one dump line into (no allocator here).
struct Buf<'a> {
    bytes: &'a mut [u8],
    len: usize,
}

impl<'a> Buf<'a> {
    fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes, len: 0 }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(core::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
