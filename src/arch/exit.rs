//! Ending the run: the verdict line (`hvcore::verdict`) on the console, then PSCI `SYSTEM_OFF`.
//!
//! QEMU cannot pass a status to the shell without semihosting, which would
//! also hand every guest the host's files; so the status travels as the
//! last console line, with the token from the hypervisor's command line
//! (`verdict.token=`), and `scripts/run.sh` exits with it.

use core::sync::atomic::{AtomicUsize, Ordering};

use hvcore::verdict::{self, Verdict, TOKEN_MAX};
use spin::Once;

use super::console::fatal_println;
use super::{console, percpu, psci};

/// How the hypervisor itself failed (each ends the run with
/// [`verdict::HYP_FAILURE`]; the console says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypFailure {
    /// Boot failed with a reported error (bad device tree, bad arguments,
    /// a CPU that did not come up...).
    Boot,
    /// A Rust panic.
    Panic,
    /// An unexpected exception at EL2.
    Exception,
}

/// No CPU is exiting.
const NOBODY: usize = usize::MAX;

/// The logical id of the CPU that is exiting, or [`NOBODY`].
static EXITING: AtomicUsize = AtomicUsize::new(NOBODY);

/// The verdict token, once the command line has been read.
static TOKEN: Once<([u8; TOKEN_MAX], usize)> = Once::new();

/// Records the token the verdict line carries (`verdict.token=`, already
/// checked by the argument parser). Only the first call counts.
pub fn set_token(token: &str) {
    TOKEN.call_once(|| {
        let mut buf = [0; TOKEN_MAX];
        let len = token.len().min(TOKEN_MAX);
        buf[..len].copy_from_slice(&token.as_bytes()[..len]);
        (buf, len)
    });
}

/// Ends the run because the hypervisor failed (what failed was printed
/// already; this line names the kind).
pub fn fail(why: HypFailure) -> ! {
    let what = match why {
        HypFailure::Boot => "boot failed",
        HypFailure::Panic => "panic",
        HypFailure::Exception => "exception at EL2",
    };
    fatal_println!("run: the hypervisor failed ({what})");
    exit_code(verdict::HYP_FAILURE)
}

/// Ends the run with `status`: prints the verdict line and powers off.
///
/// Only the first CPU to call this exits; any other parks, so a second
/// failure cannot overwrite the first verdict. A CPU that re-enters here
/// (a fault while printing) powers off at once.
pub fn exit_code(status: u8) -> ! {
    let me = percpu::current_id().index();
    match EXITING.compare_exchange(NOBODY, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            let token = TOKEN
                .get()
                .and_then(|(buf, len)| core::str::from_utf8(&buf[..*len]).ok());
            fatal_println!("{}", Verdict { token, status });
            console::flush();
        }
        Err(cpu) if cpu == me => {}
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
