//! Exceptions the hypervisor makes a guest take: `hvcore::inject` computes the entry, this writes it into the running vCPU.

use hvcore::inject::{self, Exception};

use super::super::running::Running;
use crate::arch::context;

/// Whether an abort on the instruction fetch the running vCPU just failed
/// would enter the very address it failed to fetch (a locked-up vCPU:
/// `hvcore::inject`, *A vector that cannot be fetched*).
pub fn fetch_locks_up(run: &mut Running<'_>) -> bool {
    let vbar = context::live_vbar();
    let regs = run.regs();
    inject::enters_itself(regs.pc, regs.pstate, vbar)
}

/// Makes the running vCPU take `exception` at EL1, as the CPU would;
/// `il32` is the trapped instruction's length (`ESR_EL2.IL`).
pub fn exception(run: &mut Running<'_>, il32: bool, exception: Exception) {
    run.vcpu.stats.injected();
    let vbar = context::live_vbar();
    let injection = inject::take(run.regs(), vbar, il32, exception);
    context::set_el1_exception(&injection);
}
