//! Exceptions the hypervisor makes a guest take: `hvcore::inject` computes the entry, this writes it into the running vCPU.

use hvcore::inject::{self, Exception};

use super::super::running::Running;
use crate::arch::context;

/// Makes the running vCPU take `exception` at EL1, as the CPU would;
/// `il32` is the trapped instruction's length (`ESR_EL2.IL`).
pub fn exception(run: &mut Running<'_>, il32: bool, exception: Exception) {
    run.vcpu.stats.injected();
    let vbar = context::live_vbar();
    let injection = inject::take(run.regs(), vbar, il32, exception);
    context::set_el1_exception(&injection);
}
