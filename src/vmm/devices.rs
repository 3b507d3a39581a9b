//! The emulated devices on a VM's MMIO bus, and how an access reaches one. For now: the PL011, whose completed lines go to the console tagged with the VM and vCPU.

use hvcore::mmio::MmioOp;

use super::running::Running;
use super::vm::Device;
use crate::arch::console::println;

/// Serves `op` at `offset` in `device`'s window for the running vCPU;
/// returns the value a read gets (ignored for a write).
pub fn access(run: &Running<'_>, device: Device, offset: u64, op: MmioOp) -> u64 {
    match device {
        Device::Uart => match op {
            MmioOp::Write { value, .. } => {
                if let Some(line) = run.vm.uart.lock().write(offset, value) {
                    println!("[vm{}/vcpu{}] {line}", run.vm.id, run.vcpu.id());
                }
                0
            }
            MmioOp::Read { .. } => run.vm.uart.lock().read(offset),
        },
    }
}
