//! The console as the VMs see it: what a guest's UART transmits goes out on the hypervisor's console, and what the user types comes in through the physical UART's receive interrupt, past the escape sequence (`hvcore::escape`), into the receive FIFO of the VM that has the input.
//!
//! Output: as whole lines tagged `[vmN/vcpuM]` with the vCPUs that wrote
//! them (`hvcore::lines`: nothing a guest prints can move the cursor or
//! forge a line of the hypervisor's), or, with `guest.console=raw`, byte by
//! byte as written (an interactive session).
//!
//! Input: the physical UART's interrupt is routed to the boot CPU, which
//! takes it wherever it is (an exit, a blocked vCPU, an idle wait) and
//! calls [`host_irq`]. Typed bytes queue in the VM (up to [`INPUT_MAX`];
//! more is dropped, as a UART overrun would) and move into its PL011's
//! FIFO as the guest makes room ([`deliver`], after each read of the
//! data register too). VM 0 has the input first; `Ctrl-A n` passes it to
//! the next VM.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hvcore::escape::{Escape, Key, HELP};
use hvcore::lines::UartLine;
use hvcore::verdict::VmEnd;
use log::{info, warn};
use spin::{Mutex, Once};

use super::irq;
use super::table;
use super::vcpu::Vcpu;
use super::vm::Vm;
use crate::arch::console::{self, println};
use crate::arch::gic;

/// Most typed bytes a VM holds beyond its UART's FIFO.
pub const INPUT_MAX: usize = 4096;

/// The physical UART's interrupt, once input is on.
static INPUT_INTID: Once<u32> = Once::new();
/// The escape sequence's state.
static ESCAPE: Mutex<Escape> = Mutex::new(Escape::new());
/// Typed bytes dropped because the VM's queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The VM with the input (its id).
static FOCUS: AtomicU32 = AtomicU32::new(0);

/// Turns console input on: the physical UART's interrupt `intid` to this
/// CPU. Returns false if it cannot be routed (no GICv3).
pub fn start_input(intid: u32) -> bool {
    if !gic::enable_spi(intid) {
        return false;
    }
    INPUT_INTID.call_once(|| intid);
    console::enable_input();
    true
}

/// A byte the guest's vCPU `vcpu` of `vm` transmitted on its UART, whose
/// line is `line`.
pub fn output(vm: &Vm, vcpu: &Vcpu, line: &mut UartLine, byte: u8) {
    if vm.console_raw {
        console::write_raw(&[byte]);
    } else if let Some((writers, text)) = line.push(vcpu.id(), byte) {
        println!("[vm{}/{writers}] {text}", vm.id);
    }
}

/// Prints what `vm`'s UART left unfinished on its line (it ended).
pub fn flush(vm: &Vm) {
    if let Some((writers, line)) = vm.uart.lock().line.flush() {
        println!("[vm{}/{writers}] {line}", vm.id);
    }
}

/// A physical interrupt no vCPU owns, taken on this CPU: the console's is
/// served (true); anything else is the caller's.
pub fn host_irq(intid: u32) -> bool {
    if INPUT_INTID.get() != Some(&intid) {
        return false;
    }
    let mut buf = [0u8; 64];
    loop {
        let n = console::read_input(&mut buf);
        if n == 0 {
            break;
        }
        typed(&buf[..n]);
    }
    gic::deactivate(intid);
    true
}

/// What the user typed: each byte for the VM that has the input then.
fn typed(bytes: &[u8]) {
    let mut escape = ESCAPE.lock();
    for &b in bytes {
        let Some(vm) = focused() else {
            return;
        };
        match escape.feed(b) {
            Key::Guest(b) => {
                let mut q = vm.input.lock();
                if q.len() < INPUT_MAX {
                    q.push_back(b);
                } else {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            Key::Pending => {}
            Key::Help => println!("{HELP}"),
            Key::Unknown(_) => println!("console: unknown escape ({HELP})"),
            Key::Next => {
                deliver(vm);
                let next = next_vm(vm.id);
                FOCUS.store(u32::from(next), Ordering::Relaxed);
                println!("console: input to vm{next}");
            }
            Key::Quit => {
                info!("console: Ctrl-A x: ending the run");
                for vm in table::vms() {
                    vm.stop(VmEnd::Console);
                }
                return;
            }
        }
    }
    drop(escape);
    if let Some(vm) = focused() {
        deliver(vm);
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            warn!(
                "console: vm{}: input full, {dropped} typed bytes dropped",
                vm.id
            );
        }
    }
}

/// The VM that has the input.
fn focused() -> Option<&'static Vm> {
    let focus = FOCUS.load(Ordering::Relaxed);
    table::vms().find(|vm| u32::from(vm.id) == focus)
}

/// The VM after the one numbered `id`, round the table.
fn next_vm(id: u16) -> u16 {
    let first = table::vms().map(|vm| vm.id).next().unwrap_or(0);
    table::vms()
        .map(|vm| vm.id)
        .find(|&other| other > id)
        .unwrap_or(first)
}

/// Moves `vm`'s queued input into its UART's receive FIFO, as far as there
/// is room, and raises its interrupt if that changes it.
pub fn deliver(vm: &Vm) {
    let mut q = vm.input.lock();
    if q.is_empty() {
        return;
    }
    let mut uart = vm.uart.lock();
    let (front, _) = q.as_slices();
    let (taken, line) = uart.emu.receive(front);
    drop(uart);
    q.drain(..taken);
    drop(q);
    if let Some(level) = line {
        irq::set_line(vm, hvcore::memmap::UART_INTID, level);
    }
}
