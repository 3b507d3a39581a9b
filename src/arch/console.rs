//! The console: a PL011 UART driven through typed MMIO registers, found
//! from the device tree. Before it is known (a device tree that cannot be
//! read, or a CPU entered at the wrong exception level), output goes to
//! [`EARLY_UART`], where QEMU `virt` has its first PL011, with the MMU off.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use spin::{Mutex, Once};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

use super::machine::Machine;

register_bitfields! {u32,
    /// Data register.
    DR [
        /// Transmit/receive character.
        DATA OFFSET(0) NUMBITS(8) []
    ],
    /// Flag register.
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    /// Line control register.
    LCR_H [
        /// Word length.
        WLEN OFFSET(5) NUMBITS(2) [
            EightBit = 0b11
        ],
        /// FIFOs enabled.
        FEN OFFSET(4) NUMBITS(1) []
    ],
    /// Control register.
    CR [
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    /// Interrupt mask / clear: one bit per source (11 sources).
    INT [
        /// Receive time-out.
        RT OFFSET(6) NUMBITS(1) [],
        /// Receive.
        RX OFFSET(4) NUMBITS(1) [],
        /// All interrupt sources.
        ALL OFFSET(0) NUMBITS(11) []
    ]
}

register_structs! {
    /// PL011 register block (ARM DDI 0183).
    Pl011Registers {
        (0x000 => dr: ReadWrite<u32, DR::Register>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x02c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x030 => cr: ReadWrite<u32, CR::Register>),
        (0x034 => _reserved2),
        (0x038 => imsc: ReadWrite<u32, INT::Register>),
        (0x03c => _reserved3),
        (0x044 => icr: WriteOnly<u32, INT::Register>),
        (0x048 => @END),
    }
}

/// A PL011 UART. The baud rate is left as firmware set it.
pub struct Pl011 {
    regs: &'static Pl011Registers,
}

// SAFETY: the registers are MMIO with no Rust-visible memory behind them;
// every access is a single volatile load or store, which is sound from any
// CPU. Interleaving of whole lines is prevented by `LINE_LOCK`.
unsafe impl Sync for Pl011 {}
// SAFETY: as for `Sync`: the value is only an address of device registers.
unsafe impl Send for Pl011 {}

impl Pl011 {
    /// # Safety
    ///
    /// `base` must be the physical address of a PL011's register block, with
    /// the MMU off (or that address identity-mapped as Device memory), and
    /// no other driver may own the UART.
    unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees `base` addresses a PL011 register
        // block for the rest of the program; the MMIO registers are accessed
        // only through volatile tock-registers operations.
        let regs = unsafe { &*(base as *const Pl011Registers) };
        Self { regs }
    }

    /// 8N1 with FIFOs, interrupts masked, transmitter and receiver on.
    fn init(&self) {
        self.flush();
        self.regs.cr.set(0);
        self.regs.imsc.set(0);
        self.regs.icr.write(INT::ALL::SET);
        self.regs
            .lcr_h
            .write(LCR_H::WLEN::EightBit + LCR_H::FEN::SET);
        self.regs
            .cr
            .write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    fn put_byte(&self, byte: u8) {
        while self.regs.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.regs.dr.write(DR::DATA.val(u32::from(byte)));
    }

    fn flush(&self) {
        while self.regs.fr.is_set(FR::BUSY) {
            core::hint::spin_loop();
        }
    }

    fn get_byte(&self) -> Option<u8> {
        if self.regs.fr.is_set(FR::RXFE) {
            return None;
        }
        Some(self.regs.dr.read(DR::DATA) as u8)
    }
}

/// The UART used before the device tree names one: QEMU `virt`'s first
/// PL011 (the board this hypervisor boots on). Only ever used with the MMU
/// off, before [`init`].
pub const EARLY_UART: usize = 0x0900_0000;

/// Writes a string to the UART or, before it is known, to [`EARLY_UART`].
struct Sink;

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let early;
        let uart = match UART.get() {
            Some(uart) => uart,
            None => {
                // SAFETY: before `init` the MMU is still off (it is turned
                // on after the console starts), so the physical address is
                // usable as is; QEMU virt has its PL011 there, and no other
                // driver owns it yet. Writes only transmit bytes.
                early = unsafe { Pl011::new(EARLY_UART) };
                &early
            }
        };
        if OPEN_LINE.swap(false, Ordering::Relaxed) {
            // A guest's raw output left a line open: this starts a new one.
            uart.put_byte(b'\r');
            uart.put_byte(b'\n');
        }
        for byte in s.bytes() {
            if byte == b'\n' {
                uart.put_byte(b'\r');
            }
            uart.put_byte(byte);
        }
        Ok(())
    }
}

/// Whether raw guest output ([`write_raw`]) left the cursor in the middle
/// of a line.
static OPEN_LINE: AtomicBool = AtomicBool::new(false);

static UART: Once<Pl011> = Once::new();

/// Serialises whole messages so lines from different CPUs do not mix.
static LINE_LOCK: Mutex<()> = Mutex::new(());

/// How often the fatal path retries the line lock before writing anyway.
const FATAL_LOCK_TRIES: usize = 1 << 20;

/// Starts the console on the platform's PL011. Only the first call has an
/// effect.
pub fn init(machine: &Machine) {
    UART.call_once(|| {
        // SAFETY: a `Machine` only comes from `boot::read_machine`, so `uart`
        // is the PL011 the device tree (the boot protocol's trusted
        // description of the machine) names; the MMU is off, so its physical address is
        // usable as is, and this module is its only driver.
        let uart = unsafe { Pl011::new(machine.platform().uart.as_u64() as usize) };
        uart.init();
        uart
    });
}

/// Prints formatted text (whole, not interleaved with other CPUs').
pub fn print(args: fmt::Arguments<'_>) {
    let _line = LINE_LOCK.lock();
    // `Sink` never fails.
    let _ = Sink.write_fmt(args);
}

/// Prints on the fatal path: the lock may be held by this very CPU (a fault
/// or panic while printing), so after a bounded wait print regardless.
pub fn print_fatal(args: fmt::Arguments<'_>) {
    let _line = (0..FATAL_LOCK_TRIES).find_map(|_| LINE_LOCK.try_lock());
    let _ = Sink.write_fmt(args);
    flush();
}

/// Writes a guest's bytes as they are (`guest.console=raw`: an
/// interactive session, where the guest's terminal control must work); a
/// hypervisor line printed after them starts on a line of its own.
pub fn write_raw(bytes: &[u8]) {
    let Some(uart) = UART.get() else {
        return;
    };
    let Some(&last) = bytes.last() else {
        return;
    };
    let _line = LINE_LOCK.lock();
    for &b in bytes {
        uart.put_byte(b);
    }
    OPEN_LINE.store(last != b'\n', Ordering::Relaxed);
}

/// Turns on the UART's receive interrupts (the console's input).
pub fn enable_input() {
    if let Some(uart) = UART.get() {
        uart.regs.imsc.modify(INT::RX::SET + INT::RT::SET);
    }
}

/// Reads the bytes the UART has received into `buf` (as many as fit);
/// returns how many. Reading empties its FIFO, which lowers its interrupt.
pub fn read_input(buf: &mut [u8]) -> usize {
    let Some(uart) = UART.get() else {
        return 0;
    };
    let mut n = 0;
    while n < buf.len() {
        match uart.get_byte() {
            Some(b) => {
                buf[n] = b;
                n += 1;
            }
            None => break,
        }
    }
    n
}

/// Waits until the UART has sent everything (before the run ends).
pub fn flush() {
    if let Some(uart) = UART.get() {
        uart.flush();
    }
}

/// Prints a line to the console.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::arch::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints a line on the fatal path (see [`print_fatal`]).
macro_rules! fatal_println {
    ($($arg:tt)*) => {
        $crate::arch::console::print_fatal(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {fatal_println, println};
