//! The emulated devices on a VM's MMIO bus, and how an access reaches one: the GIC's distributor and redistributors (`hvcore::vgic`), and the PL011, whose completed lines go to the console tagged with the VM and vCPU.

use hvcore::mmio::MmioOp;

use super::irq;
use super::running::Running;
use super::vm::Device;
use crate::arch::console::println;

/// Serves `op` at `offset` in `device`'s window for the running vCPU;
/// returns the value a read gets (ignored for a write).
pub fn access(run: &Running<'_>, device: Device, offset: u64, op: MmioOp) -> u64 {
    let vm = run.vm;
    let me = run.vcpu.id();
    match device {
        Device::GicDist => match op {
            MmioOp::Read { size } => vm.vgic.lock().dist_read(me, offset, size),
            MmioOp::Write { size, value } => {
                let effects = vm.vgic.lock().dist_write(me, offset, size, value);
                irq::apply(vm, effects);
                0
            }
        },
        Device::GicRedist => match op {
            MmioOp::Read { size } => vm.vgic.lock().redist_read(offset, size),
            MmioOp::Write { size, value } => {
                let effects = vm.vgic.lock().redist_write(offset, size, value);
                irq::apply(vm, effects);
                0
            }
        },
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
