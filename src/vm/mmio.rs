//! Emulated devices: the guest's PL011, decoded from the abort syndrome.

use hvcore::guest_abort::GuestAbort;
use hvcore::pl011::Pl011Emu;

use super::fault::refuse;
use super::machine::{Vm, UART_IPA};
use crate::console::println;
use crate::exception::TrapFrame;
use crate::percpu;

/// Emulates the access if a device is at `abort.ipa`; false if none is.
pub fn access(vm: &Vm, frame: &mut TrapFrame, abort: &GuestAbort) -> bool {
    if !(UART_IPA..UART_IPA + Pl011Emu::SIZE).contains(&abort.ipa) {
        return false;
    }
    vm.stats.mmio();
    let Some(access) = abort.access.filter(|_| !abort.instruction) else {
        refuse(
            vm,
            frame,
            abort,
            "MMIO access with no valid syndrome (ISV=0)",
        );
        return true;
    };
    let offset = abort.ipa - UART_IPA;
    let reg = usize::from(access.reg);
    let bits = u32::from(access.size) * 8;
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    if abort.write {
        let value = if reg == 31 { 0 } else { frame.regs[reg] & mask };
        if let Some(line) = vm.uart.lock().write(offset, value) {
            println!("[vm{}/vcpu{}] {line}", vm.id, percpu::current_id());
        }
    } else {
        let mut value = vm.uart.lock().read(offset) & mask;
        if access.sign_extend && bits < 64 && value & (1 << (bits - 1)) != 0 {
            value |= !mask;
        }
        if !access.sixty_four {
            value &= u64::from(u32::MAX);
        }
        if reg != 31 {
            frame.regs[reg] = value;
        }
    }
    frame.elr += if abort.il32 { 4 } else { 2 };
    true
}
