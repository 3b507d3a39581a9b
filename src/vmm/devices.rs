//! The emulated devices on a VM's MMIO bus, and how an access reaches one: the GIC's distributor and redistributors (`hvcore::vgic`), and the PL011 (`hvcore::pl011`), whose bytes go to the console (`console`) and whose interrupt goes through the door (`irq`).

use hvcore::mmio::MmioOp;

use hvcore::memmap::UART_INTID;

use super::running::Running;
use super::vm::Device;
use super::{console, irq};

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
                let mut uart = vm.uart.lock();
                let effect = uart.emu.write(offset, value);
                if let Some(byte) = effect.tx {
                    console::output(vm, run.vcpu, &mut uart.line, byte);
                }
                drop(uart);
                if let Some(level) = effect.line {
                    irq::set_line(vm, UART_INTID, level);
                }
                0
            }
            MmioOp::Read { .. } => {
                let (value, line) = vm.uart.lock().emu.read(offset);
                if let Some(level) = line {
                    irq::set_line(vm, UART_INTID, level);
                }
                // Room in the FIFO for what was typed meanwhile.
                console::deliver(vm);
                value
            }
        },
    }
}
