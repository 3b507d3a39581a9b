//! The panic handler: report message and location, end the run with
//! [`HypFailure::Panic`].

use core::panic::PanicInfo;

use super::console::fatal_println;
use super::exit::{fail, HypFailure};
use super::percpu;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let cpu = percpu::current_id();
    fatal_println!("");
    match info.location() {
        Some(loc) => fatal_println!(
            "!!! PANIC on cpu {cpu} at {}:{}:{}: {}",
            loc.file(),
            loc.line(),
            loc.column(),
            info.message()
        ),
        None => fatal_println!("!!! PANIC on cpu {cpu}: {}", info.message()),
    }
    fail(HypFailure::Panic)
}
