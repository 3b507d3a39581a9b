//! A vCPU's state outside its general registers: the EL2 controls that make EL1 a guest, and the EL1 system registers the guest owns.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    Readable, Writeable, CNTHCTL_EL2, CNTKCTL_EL1, CNTVOFF_EL2, CONTEXTIDR_EL1, CPACR_EL1, ELR_EL1,
    ESR_EL1, FAR_EL1, HCR_EL2, ID_AA64MMFR0_EL1, MAIR_EL1, MIDR_EL1, PAR_EL1, SCTLR_EL1, SPSR_EL1,
    SP_EL1, TCR_EL1, TPIDR_EL1, TTBR0_EL1, TTBR1_EL1, VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2,
};
use core::arch::asm;
use pgtable::Geometry;

/// `SCTLR_EL1` at reset as a guest expects it: MMU and caches off, the
/// RES1 bits set (Linux's `INIT_SCTLR_EL1_MMU_OFF`).
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// `SPSR_EL2` to enter a guest: EL1 with SP_EL1 (EL1h), D, A, I, F masked.
pub const SPSR_EL1H_MASKED: u64 = 0b1111 << 6 | 0b0101;

/// `CPTR_EL2` (no VHE): bits 13:12 and 9:0 are RES1; TFP (10) clear, so the
/// guest's FP/SIMD use does not trap. The hypervisor itself never touches
/// FP/SIMD registers (softfloat build), so guest FP state survives exits.
const CPTR_EL2_NO_TRAPS: u64 = 0x33ff;

/// `VTCR_EL2` bit 31 is RES1.
const VTCR_EL2_RES1: u64 = 1 << 31;

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
        let hcr = HCR_EL2::VM::Enable
            + HCR_EL2::SWIO::SET
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::AMO::SET
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            + HCR_EL2::BSU.val(0b01) // inner shareable barriers
            + HCR_EL2::FB::SET // broadcast TLB and cache maintenance
            + HCR_EL2::RW::EL1IsAarch64;
        let pa_bits = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101);
        let vtcr = VTCR_EL2::T0SZ.val(geometry.t0sz())
            + VTCR_EL2::SL0.val(geometry.vtcr_sl0())
            + VTCR_EL2::TG0::Granule4KB
            + VTCR_EL2::SH0::Inner
            + VTCR_EL2::IRGN0::NormalWBRAWA
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::PS.val(pa_bits);
        let vttbr = VTTBR_EL2::VMID.val(u64::from(vmid)) + VTTBR_EL2::BADDR.val(root >> 1);
        Self {
            hcr: hcr.value,
            vtcr: vtcr.value | VTCR_EL2_RES1,
            vttbr: vttbr.value,
        }
    }

    /// Loads the controls and the vCPU's identity on this CPU.
    pub fn load(&self, vcpu_mpidr: u64) {
        HCR_EL2.set(self.hcr);
        VTCR_EL2.set(self.vtcr);
        VTTBR_EL2.set(self.vttbr);
        VMPIDR_EL2.set(vcpu_mpidr);
        let midr = MIDR_EL1.get();
        // SAFETY: VPIDR_EL2 only sets what the guest reads as MIDR_EL1;
        // aarch64-cpu has no typed accessor for it.
        unsafe {
            asm!("msr vpidr_el2, {}", in(reg) midr, options(nomem, nostack, preserves_flags))
        };
        // SAFETY: CPTR_EL2 only controls EL2 traps of FP/SIMD and trace;
        // the value keeps every RES1 bit and traps nothing (see the const).
        unsafe {
            asm!("msr cptr_el2, {}", in(reg) CPTR_EL2_NO_TRAPS, options(nomem, nostack, preserves_flags))
        };
        CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCEN::SET + CNTHCTL_EL2::EL1PCTEN::SET);
        CNTVOFF_EL2.set(0);
        barrier::isb(barrier::SY);
    }
}

/// The EL1 system registers a guest owns, loaded when a vCPU starts on its
/// CPU. (vCPUs are pinned, one per CPU, so nothing is switched yet; when
/// CPUs are shared, a `save` beside `load` makes this the switch.)
#[derive(Clone, Copy, Debug, Default)]
pub struct El1Context {
    sctlr: u64,
    tcr: u64,
    ttbr0: u64,
    ttbr1: u64,
    mair: u64,
    vbar: u64,
    cpacr: u64,
    contextidr: u64,
    tpidr: u64,
    sp: u64,
    elr: u64,
    spsr: u64,
    esr: u64,
    far: u64,
    par: u64,
    cntkctl: u64,
}

impl El1Context {
    /// The state of a CPU that was just powered on.
    pub fn reset() -> Self {
        Self {
            sctlr: SCTLR_EL1_RESET,
            ..Self::default()
        }
    }

    /// Puts this context in the CPU's EL1 registers.
    pub fn load(&self) {
        SCTLR_EL1.set(self.sctlr);
        TCR_EL1.set(self.tcr);
        TTBR0_EL1.set(self.ttbr0);
        TTBR1_EL1.set(self.ttbr1);
        MAIR_EL1.set(self.mair);
        VBAR_EL1.set(self.vbar);
        CPACR_EL1.set(self.cpacr);
        CONTEXTIDR_EL1.set(self.contextidr);
        TPIDR_EL1.set(self.tpidr);
        SP_EL1.set(self.sp);
        ELR_EL1.set(self.elr);
        SPSR_EL1.set(self.spsr);
        ESR_EL1.set(self.esr);
        FAR_EL1.set(self.far);
        PAR_EL1.set(self.par);
        CNTKCTL_EL1.set(self.cntkctl);
        barrier::isb(barrier::SY);
    }
}
