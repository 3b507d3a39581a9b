//! A tiny EL1 runtime for the hypervisor's test guests (see `docs/guest-abi.md`).
//!
//! Each scenario is a binary in `src/bin/` that names its entry points with
//! [`entry!`]: `main(&Platform)` runs on the boot vCPU once the device tree is
//! read and the console is up; returning from it ends the run with status 0.
//! A failed check prints `guest: FAIL: <what>` and ends the run with status 1
//! ([`check!`], [`fail!`]); an unexpected exception prints a dump and ends it
//! with status 3. The run ends through PSCI `SYSTEM_OFF` with the status in
//! `x1` (the hypervisor's convention), so the status is the run's verdict.
//!
//! What the runtime sets up before `main` (`start.rs`): the vCPU's stack (one
//! per vCPU, indexed by `MPIDR_EL1.Aff0`), `.bss` cleared, `VBAR_EL1`. The MMU
//! stays off unless a scenario turns on the identity map ([`mmu::enable`]).
//! Secondary vCPUs start at [`start::secondary_entry`] through PSCI `CPU_ON`
//! ([`psci::start_secondary`]) and run the scenario's `secondary_main(context)`.
//!
//!
//! Interrupts, for the scenarios that use them: [`gic::init`] on the boot
//! vCPU (the distributor, then its own redistributor and CPU interface),
//! [`gic::init_cpu`] on each other vCPU, a handler registered with
//! [`irq::set_handler`], then [`cpu::irq_unmask`]; the timers are in
//! [`timer`]. Scenarios that share memory between vCPUs turn on the identity
//! map first ([`mmu::enable`]) so their atomics run on normal memory.
//!
//! Only the device-tree reader ([`dt`]) and the SGI register encoding
//! ([`sgi`]) are portable: they are unit-tested on the host; everything else
//! is aarch64 code.

#![cfg_attr(not(test), no_std)]

pub mod dt;
pub mod sgi;

#[cfg(target_arch = "aarch64")]
pub mod console;
#[cfg(target_arch = "aarch64")]
pub mod cpu;
#[cfg(target_arch = "aarch64")]
pub mod fault;
#[cfg(target_arch = "aarch64")]
pub mod gic;
#[cfg(target_arch = "aarch64")]
pub mod irq;
#[cfg(target_arch = "aarch64")]
pub mod mem;
#[cfg(target_arch = "aarch64")]
pub mod mmu;
#[cfg(target_arch = "aarch64")]
pub mod psci;
#[cfg(target_arch = "aarch64")]
pub mod start;
#[cfg(target_arch = "aarch64")]
pub mod timer;

#[cfg(target_arch = "aarch64")]
pub use crate::dt::Platform;
#[cfg(target_arch = "aarch64")]
pub use crate::start::platform;

/// Run status for a failed check.
pub const STATUS_FAIL: u64 = 1;
/// Run status for an unexpected exception.
pub const STATUS_EXCEPTION: u64 = 3;

/// Ends the run with `status` (PSCI `SYSTEM_OFF`, status in `x1`).
#[cfg(target_arch = "aarch64")]
pub fn exit(status: u64) -> ! {
    psci::system_off(status)
}

/// Prints `guest: FAIL: <what>` and ends the run with status 1.
#[cfg(target_arch = "aarch64")]
pub fn fail(what: core::fmt::Arguments<'_>) -> ! {
    println!("guest: FAIL: {}", what);
    exit(STATUS_FAIL)
}

/// The `secondary_main` of a scenario that starts no secondary vCPU.
#[cfg(target_arch = "aarch64")]
pub fn no_secondary(context: u64) -> ! {
    fail!(
        "vcpu{} started (context {:#x}), but this guest starts no other vCPU",
        cpu::id(),
        context
    )
}

/// Prints a formatted `guest: FAIL: ...` line and ends the run with status 1.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        $crate::fail(format_args!($($arg)*))
    };
}

/// Fails the run (status 1) with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::fail!($($arg)*)
        }
    };
}

/// Names a scenario's entry points: `entry!(main)` or
/// `entry!(main, secondary_main)`, with `fn main(&'static Platform)` and
/// `fn secondary_main(context: u64) -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry!($main, $crate::no_secondary);
    };
    ($main:path, $secondary:path) => {
        /// The scenario's main function, called by the runtime on the boot vCPU.
        #[no_mangle]
        pub extern "Rust" fn __guest_main(platform: &'static $crate::Platform<'static>) {
            $main(platform)
        }

        /// The scenario's secondary vCPU function, called with the `CPU_ON` context id.
        #[no_mangle]
        pub extern "Rust" fn __guest_secondary_main(context: u64) -> ! {
            $secondary(context)
        }
    };
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => fail!(
            "panic on vcpu{} at {}:{}: {}",
            cpu::id(),
            at.file(),
            at.line(),
            info.message()
        ),
        None => fail!("panic on vcpu{}: {}", cpu::id(), info.message()),
    }
}
