//! A vCPU's context and the switch into it: the general registers the exception vectors save straight into it, the EL1 and FP/SIMD state loaded and saved around its runs, and the EL2 controls that make EL1 a guest.
//!
//! The switch ([`enter`]) is a function call that returns when the vCPU
//! stops running, as Linux KVM's `__kvm_vcpu_run`: it saves the caller's
//! callee-saved registers and stack pointer in the context, makes the
//! context this CPU's current one (`PerCpu`, reached through
//! `TPIDR_EL2`), loads the guest's registers and `eret`s. Every exit from
//! the guest (`vectors.S`) stores the guest's registers into that context
//! and calls the [`Guest`]'s exit handler on the same stack; when the
//! handler says *resume*, the vectors reload the guest's registers and
//! `eret` at once (the fast path: no return to the caller); otherwise they
//! restore the caller's registers and [`enter`] returns.
//!
//! EL1 system registers and FP/SIMD registers are not switched on exits:
//! the hypervisor uses neither (it is built soft-float), and a vCPU keeps
//! its CPU while it runs. They are loaded when a vCPU starts running on a
//! CPU ([`El1Regs::load`], [`FpRegs::load`]) and saved when it stops
//! ([`El1Regs::save`], [`FpRegs::save`]), so the same context can later
//! move between CPUs or share one.

use core::arch::asm;
use core::mem::offset_of;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1, MIDR_EL1};
use hvcore::regs::GuestRegs;
use pgtable::Geometry;

use super::percpu;

/// `SCTLR_EL1` at reset as a guest expects it: MMU and caches off, the
/// RES1 bits set (Linux's `INIT_SCTLR_EL1_MMU_OFF`).
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// `CPTR_EL2` (no VHE): bits 13:12 and 9:0 are RES1; TFP (10) clear, so the
/// guest's FP/SIMD use does not trap.
const CPTR_EL2_NO_TRAPS: u64 = 0x33ff;

/// `VTCR_EL2` bit 31 is RES1.
const VTCR_EL2_RES1: u64 = 1 << 31;

/// `HCR_EL2` bits.
mod hcr {
    pub const VM: u64 = 1 << 0;
    pub const SWIO: u64 = 1 << 1;
    pub const FMO: u64 = 1 << 3;
    pub const IMO: u64 = 1 << 4;
    pub const AMO: u64 = 1 << 5;
    /// Barrier shareability upgrade: inner shareable.
    pub const BSU_IS: u64 = 0b01 << 10;
    /// Broadcast TLB and cache maintenance.
    pub const FB: u64 = 1 << 9;
    pub const TSC: u64 = 1 << 19;
    /// Trap the ID registers of group 3 (`hvcore::idregs`).
    pub const TID3: u64 = 1 << 18;
    /// Trap data cache maintenance by set/way.
    pub const TSW: u64 = 1 << 22;
    /// Trap `WFI`: a vCPU with nothing to do blocks in the hypervisor.
    pub const TWI: u64 = 1 << 13;
    pub const RW: u64 = 1 << 31;
}

/// The EL2 controls for one VM, the same on every CPU that runs it.
#[derive(Clone, Copy, Debug)]
pub struct VmControls {
    /// `HCR_EL2`: stage 2 on, EL1 is AArch64, SMC and physical interrupts trapped.
    pub hcr: u64,
    /// `VTCR_EL2`: the stage-2 tree's shape.
    pub vtcr: u64,
    /// `VTTBR_EL2`: the stage-2 root and the VMID.
    pub vttbr: u64,
}

impl VmControls {
    /// Controls for a stage-2 tree of `geometry` at `root` with `vmid`.
    pub fn new(geometry: Geometry, root: u64, vmid: u16) -> Self {
        let hcr = hcr::VM
            | hcr::SWIO
            | hcr::FMO
            | hcr::IMO
            | hcr::AMO
            | hcr::TSC
            | hcr::TID3
            | hcr::TSW
            | hcr::TWI
            | hcr::BSU_IS
            | hcr::FB
            | hcr::RW;
        let pa_bits = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101);
        let vtcr = geometry.t0sz()
            | geometry.vtcr_sl0() << 6
            | 0b01 << 8 // IRGN0: normal, write-back read/write-allocate
            | 0b01 << 10 // ORGN0: the same
            | 0b11 << 12 // SH0: inner shareable
            // TG0 = 0: 4 KiB granule
            | pa_bits << 16
            | VTCR_EL2_RES1;
        let vttbr = u64::from(vmid) << 48 | (root & 0x0000_ffff_ffff_fffe);
        Self { hcr, vtcr, vttbr }
    }

    /// Loads the controls and the vCPU's identity on this CPU.
    pub fn load(&self, vcpu_mpidr: u64) {
        let midr = MIDR_EL1.get();
        // SAFETY: these registers only configure how EL1 runs as a guest:
        // the traps (HCR_EL2, CPTR_EL2: every RES1 bit kept, FP/SIMD not
        // trapped), the stage-2 tree (VTCR_EL2, VTTBR_EL2: a tree the VM
        // owns, built by the walker), what the guest reads as MIDR and
        // MPIDR, and EL1's access to the physical counter and timer. None
        // affects EL2's own translation or state.
        unsafe {
            asm!(
                "msr hcr_el2, {hcr}",
                "msr vtcr_el2, {vtcr}",
                "msr vttbr_el2, {vttbr}",
                "msr vmpidr_el2, {mpidr}",
                "msr vpidr_el2, {midr}",
                "msr cptr_el2, {cptr}",
                "msr cnthctl_el2, {cnthctl}",
                "msr cntvoff_el2, xzr",
                "isb",
                hcr = in(reg) self.hcr,
                vtcr = in(reg) self.vtcr,
                vttbr = in(reg) self.vttbr,
                mpidr = in(reg) vcpu_mpidr,
                midr = in(reg) midr,
                cptr = in(reg) CPTR_EL2_NO_TRAPS,
                // EL1PCTEN | EL1PCEN: EL1 reads the physical counter and
                // uses the EL1 physical timer.
                cnthctl = in(reg) 0b11u64,
                options(nostack, preserves_flags)
            );
        }
    }
}

/// Declares the EL1 (and EL0) system registers a vCPU owns, with a
/// `save` that reads each and a `load` that writes each.
macro_rules! el1_regs {
    ($($(#[$doc:meta])* $field:ident: $name:literal,)*) => {
        /// The EL1 and EL0 system registers a guest owns.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct El1Regs {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl El1Regs {
            /// Reads them from this CPU.
            pub fn save(&mut self) {
                $(
                    // SAFETY: reading an EL1/EL0 system register at EL2
                    // has no side effect.
                    unsafe { asm!(concat!("mrs {}, ", $name), out(reg) self.$field, options(nomem, nostack, preserves_flags)) };
                )*
            }

            /// Writes them to this CPU.
            pub fn load(&self) {
                $(
                    // SAFETY: these registers configure EL1 and EL0 only
                    // (translation, vectors, timers, thread pointers...),
                    // which run the guest; EL2 does not depend on them.
                    unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) self.$field, options(nomem, nostack, preserves_flags)) };
                )*
                barrier::isb(barrier::SY);
            }
        }
    };
}

el1_regs! {
    /// `SCTLR_EL1`.
    sctlr: "sctlr_el1",
    /// `CPACR_EL1`.
    cpacr: "cpacr_el1",
    /// `TTBR0_EL1`.
    ttbr0: "ttbr0_el1",
    /// `TTBR1_EL1`.
    ttbr1: "ttbr1_el1",
    /// `TCR_EL1`.
    tcr: "tcr_el1",
    /// `MAIR_EL1`.
    mair: "mair_el1",
    /// `AMAIR_EL1`.
    amair: "amair_el1",
    /// `VBAR_EL1`.
    vbar: "vbar_el1",
    /// `CONTEXTIDR_EL1`.
    contextidr: "contextidr_el1",
    /// `TPIDR_EL1`.
    tpidr_el1: "tpidr_el1",
    /// `TPIDR_EL0`.
    tpidr_el0: "tpidr_el0",
    /// `TPIDRRO_EL0`.
    tpidrro_el0: "tpidrro_el0",
    /// `SP_EL0`.
    sp_el0: "sp_el0",
    /// `SP_EL1`.
    sp_el1: "sp_el1",
    /// `ELR_EL1`.
    elr: "elr_el1",
    /// `SPSR_EL1`.
    spsr: "spsr_el1",
    /// `ESR_EL1`.
    esr: "esr_el1",
    /// `FAR_EL1`.
    far: "far_el1",
    /// `AFSR0_EL1`.
    afsr0: "afsr0_el1",
    /// `AFSR1_EL1`.
    afsr1: "afsr1_el1",
    /// `PAR_EL1`.
    par: "par_el1",
    /// `CNTKCTL_EL1`.
    cntkctl: "cntkctl_el1",
    /// `CNTV_CTL_EL0`: the virtual timer.
    cntv_ctl: "cntv_ctl_el0",
    /// `CNTV_CVAL_EL0`.
    cntv_cval: "cntv_cval_el0",
    /// `CNTP_CTL_EL0`: the EL1 physical timer.
    cntp_ctl: "cntp_ctl_el0",
    /// `CNTP_CVAL_EL0`.
    cntp_cval: "cntp_cval_el0",
    /// `MDSCR_EL1`.
    mdscr: "mdscr_el1",
}

impl El1Regs {
    /// The state of a CPU that was just powered on: everything zero (timers
    /// disabled, no thread pointers, no stale fault state) but `SCTLR_EL1`.
    pub fn reset() -> Self {
        Self {
            sctlr: SCTLR_EL1_RESET,
            ..Self::default()
        }
    }
}

/// Writes the EL1 exception registers an injected exception sets
/// (`ESR_EL1`, `ELR_EL1`, `SPSR_EL1`, and `FAR_EL1` for an abort) on this
/// CPU, where the vCPU runs.
pub fn set_el1_exception(injection: &hvcore::inject::Injection) {
    // SAFETY: the guest's own exception registers, which only the guest
    // reads (after the `eret` into its vector).
    unsafe {
        asm!(
            "msr esr_el1, {esr}",
            "msr elr_el1, {elr}",
            "msr spsr_el1, {spsr}",
            esr = in(reg) injection.esr,
            elr = in(reg) injection.elr,
            spsr = in(reg) injection.spsr,
            options(nomem, nostack, preserves_flags)
        );
    }
    if let Some(far) = injection.far {
        // SAFETY: as above.
        unsafe { asm!("msr far_el1, {}", in(reg) far, options(nomem, nostack, preserves_flags)) };
    }
}

/// The guest's stage-1 translation registers as it has them now:
/// `TCR_EL1`, `TTBR0_EL1`, `TTBR1_EL1`.
pub fn live_stage1() -> hvcore::s1walk::Stage1 {
    let (tcr, ttbr0, ttbr1): (u64, u64, u64);
    // SAFETY: reading EL1 registers has no side effect.
    unsafe {
        asm!(
            "mrs {tcr}, tcr_el1",
            "mrs {t0}, ttbr0_el1",
            "mrs {t1}, ttbr1_el1",
            tcr = out(reg) tcr,
            t0 = out(reg) ttbr0,
            t1 = out(reg) ttbr1,
            options(nomem, nostack, preserves_flags)
        );
    }
    hvcore::s1walk::Stage1 { tcr, ttbr0, ttbr1 }
}

/// Reads the ID register at `reg` (op0 3, op1 0, CRn 0, CRm 1-7; the
/// space `HCR_EL2.TID3` traps) on this CPU; 0 for any other encoding.
pub fn read_id_reg(reg: hvcore::sysreg::SysReg) -> u64 {
    macro_rules! mrs_id {
        ($($crm:literal, $op2:literal);* $(;)?) => {
            match (reg.op0, reg.op1, reg.crn, reg.crm, reg.op2) {
                $((3, 0, 0, $crm, $op2) => {
                    let v: u64;
                    // SAFETY: reading an ID register (reserved encodings
                    // of the ID space read as zero) has no side effect.
                    unsafe {
                        asm!(
                            concat!("mrs {}, S3_0_C0_C", stringify!($crm), "_", stringify!($op2)),
                            out(reg) v,
                            options(nomem, nostack, preserves_flags)
                        )
                    };
                    v
                })*
                _ => 0,
            }
        };
    }
    mrs_id!(
        1, 0; 1, 1; 1, 2; 1, 3; 1, 4; 1, 5; 1, 6; 1, 7;
        2, 0; 2, 1; 2, 2; 2, 3; 2, 4; 2, 5; 2, 6; 2, 7;
        3, 0; 3, 1; 3, 2; 3, 3; 3, 4; 3, 5; 3, 6; 3, 7;
        4, 0; 4, 1; 4, 2; 4, 3; 4, 4; 4, 5; 4, 6; 4, 7;
        5, 0; 5, 1; 5, 2; 5, 3; 5, 4; 5, 5; 5, 6; 5, 7;
        6, 0; 6, 1; 6, 2; 6, 3; 6, 4; 6, 5; 6, 6; 6, 7;
        7, 0; 7, 1; 7, 2; 7, 3; 7, 4; 7, 5; 7, 6; 7, 7;
    )
}

/// `VBAR_EL1` as the guest has it now (it writes it without exiting).
pub fn live_vbar() -> u64 {
    let vbar: u64;
    // SAFETY: reading VBAR_EL1 has no side effect.
    unsafe { asm!("mrs {}, vbar_el1", out(reg) vbar, options(nomem, nostack, preserves_flags)) };
    vbar
}

/// The FP/SIMD registers: `q0`-`q31`, `FPCR`, `FPSR`.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpRegs {
    /// `q0` to `q31`.
    pub q: [u128; 32],
    /// `FPCR`.
    pub fpcr: u64,
    /// `FPSR`.
    pub fpsr: u64,
}

impl FpRegs {
    /// Reads them from this CPU.
    pub fn save(&mut self) {
        // SAFETY: stores the 32 vector registers into `self.q` (512 bytes,
        // 16-aligned) and reads FPCR/FPSR; FP/SIMD is not trapped at EL2
        // (CPTR_EL2.TFP clear) and the hypervisor itself never uses these
        // registers, so nothing of its own is in them.
        unsafe {
            asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                "stp q0, q1, [{p}, #0]", "stp q2, q3, [{p}, #32]",
                "stp q4, q5, [{p}, #64]", "stp q6, q7, [{p}, #96]",
                "stp q8, q9, [{p}, #128]", "stp q10, q11, [{p}, #160]",
                "stp q12, q13, [{p}, #192]", "stp q14, q15, [{p}, #224]",
                "stp q16, q17, [{p}, #256]", "stp q18, q19, [{p}, #288]",
                "stp q20, q21, [{p}, #320]", "stp q22, q23, [{p}, #352]",
                "stp q24, q25, [{p}, #384]", "stp q26, q27, [{p}, #416]",
                "stp q28, q29, [{p}, #448]", "stp q30, q31, [{p}, #480]",
                "mrs {cr}, fpcr",
                "mrs {sr}, fpsr",
                p = in(reg) self.q.as_mut_ptr(),
                cr = out(reg) self.fpcr,
                sr = out(reg) self.fpsr,
                options(nostack, preserves_flags)
            );
        }
    }

    /// Writes them to this CPU.
    pub fn load(&self) {
        // SAFETY: loads the vector registers from `self.q` and writes
        // FPCR/FPSR: guest state only (see `save`).
        unsafe {
            asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                "ldp q0, q1, [{p}, #0]", "ldp q2, q3, [{p}, #32]",
                "ldp q4, q5, [{p}, #64]", "ldp q6, q7, [{p}, #96]",
                "ldp q8, q9, [{p}, #128]", "ldp q10, q11, [{p}, #160]",
                "ldp q12, q13, [{p}, #192]", "ldp q14, q15, [{p}, #224]",
                "ldp q16, q17, [{p}, #256]", "ldp q18, q19, [{p}, #288]",
                "ldp q20, q21, [{p}, #320]", "ldp q22, q23, [{p}, #352]",
                "ldp q24, q25, [{p}, #384]", "ldp q26, q27, [{p}, #416]",
                "ldp q28, q29, [{p}, #448]", "ldp q30, q31, [{p}, #480]",
                "msr fpcr, {cr}",
                "msr fpsr, {sr}",
                p = in(reg) self.q.as_ptr(),
                cr = in(reg) self.fpcr,
                sr = in(reg) self.fpsr,
                options(nostack, preserves_flags)
            );
        }
    }
}

/// What [`enter`] keeps of its caller while the guest runs: the
/// callee-saved registers, the stack pointer, and the exit handler.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct HostRegs {
    /// `x19` to `x30`.
    x19_x30: [u64; 12],
    sp: u64,
    /// The [`Guest`] object and its exit trampoline.
    guest: u64,
    trampoline: u64,
    _pad: u64,
}

/// Everything of a vCPU that lives in the CPU while it runs.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct VcpuContext {
    /// General registers, PC and PSTATE: saved on every exit.
    pub regs: GuestRegs,
    host: HostRegs,
    /// EL1 system registers: saved when the vCPU stops running here.
    pub el1: El1Regs,
    /// FP/SIMD registers: the same.
    pub fp: FpRegs,
}

impl VcpuContext {
    /// A vCPU at reset that starts at `pc` with `x0` = `arg`.
    pub fn at_reset(pc: u64, arg: u64) -> Self {
        Self {
            regs: GuestRegs::at_entry(pc, arg),
            host: HostRegs::default(),
            el1: El1Regs::reset(),
            fp: FpRegs::default(),
        }
    }

    /// Puts the EL1 and FP/SIMD state in this CPU (the vCPU starts running
    /// here).
    pub fn load(&self) {
        self.el1.load();
        self.fp.load();
    }

    /// Takes the EL1 and FP/SIMD state back from this CPU (the vCPU stops
    /// running here).
    pub fn save(&mut self) {
        self.el1.save();
        self.fp.save();
    }
}

/// Offsets `vectors.S` needs.
pub(super) const CTX_PC: usize = offset_of!(VcpuContext, regs) + GuestRegs::PC_OFFSET;
pub(super) const CTX_HOST: usize = offset_of!(VcpuContext, host);
pub(super) const CTX_GUEST: usize = CTX_HOST + offset_of!(HostRegs, guest);
pub(super) const CTX_HOST_SP: usize = CTX_HOST + offset_of!(HostRegs, sp);

const _: () = {
    assert!(offset_of!(VcpuContext, regs) == 0);
    assert!(offset_of!(HostRegs, trampoline) == offset_of!(HostRegs, guest) + 8);
    // `ldp`/`stp` reach 504 bytes from the base.
    assert!(CTX_GUEST + 8 <= 504);
    assert!(CTX_HOST.is_multiple_of(8));
};

/// A running vCPU as its exit handler sees it.
pub trait Guest {
    /// Its context ([`enter`] runs it).
    fn context(&mut self) -> &mut VcpuContext;

    /// Handles an exit through vector `index` (0 to 15: see
    /// `exception::Vector`);
    /// the guest's registers are in the context. Returns `true` to resume
    /// the guest at once, `false` to return from [`enter`].
    fn exit(&mut self, index: u64) -> bool;
}

/// Called by `vectors.S` on every exit with the object [`enter`] was given.
extern "C" fn trampoline<G: Guest>(guest: *mut G, index: u64) -> u64 {
    // SAFETY: `guest` is the `&mut G` that `enter` received and handed to
    // the assembly, which passes it back only from an exit taken while
    // that `enter` call runs; `enter` does nothing with it meanwhile, so
    // this is the only reference in use (a reborrow across the guest run).
    let guest = unsafe { &mut *guest };
    u64::from(!guest.exit(index))
}

unsafe extern "C" {
    /// `vectors.S`: saves the caller's registers in `ctx`, makes it this
    /// CPU's current context and enters the guest; returns when the exit
    /// trampoline returns non-zero.
    fn arch_enter(ctx: *mut VcpuContext, guest: *mut (), trampoline: usize);
}

/// Runs the guest whose context `guest` holds until its exit handler
/// returns `false`. The EL2 controls and EL1 state must be loaded.
pub fn enter<G: Guest>(guest: &mut G) {
    let ctx: *mut VcpuContext = guest.context();
    let guest_ptr = (guest as *mut G).cast::<()>();
    percpu::current().set_current(ctx.cast());
    // SAFETY: `ctx` and `guest_ptr` are valid for the whole call (borrowed
    // from `guest` by this function); the assembly saves the callee-saved
    // registers and SP it will restore before returning, loads only the
    // guest's registers from `ctx`, and calls `trampoline::<G>` with
    // `guest_ptr` on this stack below this frame. The guest runs at EL1
    // under the VM's stage 2, so it cannot reach this stack.
    unsafe { arch_enter(ctx, guest_ptr, trampoline::<G> as *const () as usize) }
}
