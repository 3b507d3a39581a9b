//! Ending the run with a status QEMU passes to the shell: semihosting
//! `SYS_EXIT_EXTENDED`, with PSCI `SYSTEM_OFF` as the fallback.

use core::sync::atomic::{AtomicUsize, Ordering};

use super::console::fatal_println;
use super::{console, percpu, psci, semihost};

/// The hypervisor's verdict, as the process exit status of QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitStatus {
    /// The job ran to completion.
    Success = 0,
    /// Boot failed with a reported error (bad device tree, bad arguments, a
    /// CPU that did not come up...).
    Failure = 1,
    /// A Rust panic.
    Panic = 2,
    /// An unexpected exception.
    Exception = 3,
}

/// No CPU is exiting.
const NOBODY: usize = usize::MAX;

/// The logical id of the CPU that is exiting, or [`NOBODY`].
static EXITING: AtomicUsize = AtomicUsize::new(NOBODY);

/// Ends the emulation with `status`.
///
/// Only the first CPU to call this exits; any other parks, so a second
/// failure cannot overwrite the first verdict. If the exit itself faults
/// (QEMU without `-semihosting`: `hlt` is undefined) and re-enters here,
/// power off through PSCI instead, losing the status.
pub fn exit(status: ExitStatus) -> ! {
    exit_code(status as u32)
}

/// Ends the run with an arbitrary exit code (a guest's `SYSTEM_OFF`
/// status); the shell sees it modulo 256.
pub fn exit_code(code: u32) -> ! {
    let me = percpu::current_id().index();
    match EXITING.compare_exchange(NOBODY, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            console::flush();
            semihost::exit(code);
            fatal_println!("semihosting exit was ignored; powering off via PSCI");
        }
        Err(cpu) if cpu == me => {
            fatal_println!(
                "semihosting unavailable (run QEMU with -semihosting); powering off via \
                 PSCI, the exit status ({}) is lost",
                code
            );
        }
        Err(_) => park(),
    }
    psci::system_off()
}

/// Stops the calling CPU for good.
pub fn park() -> ! {
    loop {
        aarch64_cpu::asm::wfe();
    }
}
