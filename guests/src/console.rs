//! PL011 console output (`UARTDR`, polling `UARTFR.TXFF`), one lock so vCPUs' lines don't interleave.

use core::arch::asm;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::cpu;

/// The UART the ABI promises, used until the device tree is read.
pub const DEFAULT_UART: u64 = 0x0900_0000;

const UARTDR: u64 = 0x00;
const UARTFR: u64 = 0x18;
const UARTFR_TXFF: u32 = 1 << 5;

static BASE: AtomicU64 = AtomicU64::new(DEFAULT_UART);
/// 0 = free, else the owning vCPU's id + 1 (so a vCPU that faults while
/// printing can still print its dump).
static OWNER: AtomicUsize = AtomicUsize::new(0);

/// Sends output to the PL011 at `base` from now on.
pub fn init(base: u64) {
    BASE.store(base, Ordering::Relaxed);
}

struct Uart(u64);

impl Uart {
    fn putc(&self, byte: u8) {
        let fr = self.0 + UARTFR;
        let dr = self.0 + UARTDR;
        loop {
            let flags: u32;
            // SAFETY: `fr` is the PL011's flag register (from the device
            // tree); reading it has no side effect. A plain `ldr` with no
            // writeback, so a trapping hypervisor gets a valid syndrome.
            unsafe {
                asm!("ldr {0:w}, [{1}]", out(reg) flags, in(reg) fr, options(nostack, preserves_flags))
            };
            if flags & UARTFR_TXFF == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: `dr` is the PL011's data register: a write sends one byte.
        unsafe {
            asm!("str {0:w}, [{1}]", in(reg) u32::from(byte), in(reg) dr, options(nostack, preserves_flags))
        };
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.putc(b));
        Ok(())
    }
}

struct Guard {
    nested: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.nested {
            OWNER.store(0, Ordering::Release);
        }
    }
}

/// Takes the console lock. With `patient` false (the fault dump), gives up
/// waiting after a while and prints anyway: a vCPU stuck while holding the
/// lock must not hide another's dump.
fn lock(patient: bool) -> Guard {
    let me = cpu::id() + 1;
    if OWNER.load(Ordering::Relaxed) == me {
        return Guard { nested: true };
    }
    let mut tries = 0u64;
    while OWNER
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        tries += 1;
        if !patient && tries > 10_000_000 {
            return Guard { nested: true };
        }
        core::hint::spin_loop();
    }
    Guard { nested: false }
}

/// Prints `args` then a newline, as one line (the [`println!`](crate::println) backend).
pub fn print_line(args: fmt::Arguments<'_>) {
    let _guard = lock(true);
    let mut uart = Uart(BASE.load(Ordering::Relaxed));
    let _ = uart.write_fmt(args);
    uart.putc(b'\n');
}

/// Prints `args` (the [`print!`](crate::print) backend).
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = lock(true);
    let _ = Uart(BASE.load(Ordering::Relaxed)).write_fmt(args);
}

/// Prints a line even if another vCPU holds the console for long.
pub fn print_line_forced(args: fmt::Arguments<'_>) {
    let _guard = lock(false);
    let mut uart = Uart(BASE.load(Ordering::Relaxed));
    let _ = uart.write_fmt(args);
    uart.putc(b'\n');
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!($($arg)*))
    };
}

/// Prints a line to the guest console; lines from different vCPUs never mix.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
