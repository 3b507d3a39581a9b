//! The table of VMs: VM ids and VMIDs, which physical CPU runs which vCPU, and whether every VM has ended.
//!
//! VMs are created by the boot CPU before any vCPU runs and live for the
//! rest of the run (`&'static`); a CPU belongs to at most one vCPU. Other
//! CPUs learn their vCPU through [`vcpu_of`] once [`publish`] made the
//! VM visible.

use alloc::boxed::Box;

use spin::Once;

use super::vcpu::Vcpu;
use super::vm::{self, Vm, VmConfig, VmError};
use crate::arch::percpu::{CpuId, MAX_CPUS};

/// How many VMs the table holds.
pub const MAX_VMS: usize = 8;

/// VMIDs handed out: VM `n` gets `FIRST_VMID + n` (0 is left unused, so a
/// stage-2 TLB entry tagged 0 is never a guest's).
const FIRST_VMID: u16 = 1;

static VMS: [Once<&'static Vm>; MAX_VMS] = [const { Once::new() }; MAX_VMS];
/// Which VM runs on each CPU (its index in [`VMS`]).
static CPU_VM: [Once<usize>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// Creates a VM in the next free slot of the table, with the next VMID.
/// It is not visible to other CPUs until [`publish`].
///
/// # Errors
///
/// [`VmError::TableFull`], or whatever VM creation reports.
pub fn create(cfg: &VmConfig<'_>) -> Result<&'static Vm, VmError> {
    let slot = VMS
        .iter()
        .position(|s| s.get().is_none())
        .ok_or(VmError::TableFull)?;
    let id = slot as u16;
    let vm: &'static Vm = Box::leak(Box::new(vm::create(id, FIRST_VMID + id, cfg)?));
    VMS[slot].call_once(|| vm);
    Ok(vm)
}

/// Makes `vm`'s vCPUs known to their CPUs, and wakes those CPUs.
pub fn publish(vm: &'static Vm) {
    for vcpu in &vm.vcpus {
        CPU_VM[vcpu.cpu.index()].call_once(|| usize::from(vm.id));
        vm.wake(vcpu);
    }
}

/// The VM and vCPU that CPU `cpu` runs, once published.
pub fn vcpu_of(cpu: CpuId) -> Option<(&'static Vm, &'static Vcpu)> {
    let vm = *VMS.get(*CPU_VM[cpu.index()].get()?)?.get()?;
    let vcpu = vm.vcpus.iter().find(|v| v.cpu == cpu)?;
    Some((vm, vcpu))
}

/// Every VM created so far.
pub fn vms() -> impl Iterator<Item = &'static Vm> {
    VMS.iter().filter_map(|s| s.get().copied())
}

/// Whether every VM has ended and every vCPU has left it.
pub fn all_finished() -> bool {
    vms().all(Vm::is_finished)
}
