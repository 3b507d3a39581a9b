//! A guest's `HVC`: routed by SMCCC service to the Arm architecture calls, PSCI, or the vendor-specific hypervisor service a job installed; the result goes to `x0`.

use hvcore::psci::ret;
use hvcore::smccc::{self, Service};
use log::debug;

use super::psci;
use super::vcpu::{ExitAction, Running, Vcpu};
use super::vm::Vm;

/// A vendor-specific hypervisor service (owning entity 6), such as the
/// benchmark calls. Installed by whoever provides it; the VM layer only
/// routes to it.
pub trait VendorService: Sync {
    /// Answers the call in `args` (`x0`-`x3`) made by `vcpu` of `vm`, or
    /// `None` if it is not one of this service's (then `NOT_SUPPORTED`).
    fn call(&self, vm: &Vm, vcpu: &Vcpu, args: &[u64; 4]) -> Option<i64>;
}

/// Handles the `HVC` the running vCPU made.
pub fn hvc(run: &mut Running<'_>) -> ExitAction {
    let args = run.regs().args4();
    let fid = args[0] as u32;
    let (result, action) = match smccc::service(fid) {
        Service::VendorHyp => (vendor(run, &args), ExitAction::Resume),
        Service::Psci => psci::call(run, &args),
        Service::Arch => (
            smccc::answer_arch(smccc::decode_arch(&args), &run.vm.workarounds),
            ExitAction::Resume,
        ),
        Service::Other => (unknown(run, fid), ExitAction::Resume),
    };
    run.regs().x[0] = result as u64;
    action
}

/// The vendor service's answer, `NOT_SUPPORTED` without one.
fn vendor(run: &Running<'_>, args: &[u64; 4]) -> i64 {
    run.vm
        .vendor_service()
        .and_then(|s| s.call(run.vm, run.vcpu, args))
        .unwrap_or_else(|| unknown(run, args[0] as u32))
}

/// An unknown function: `NOT_SUPPORTED`, as SMCCC requires.
#[cold]
pub fn unknown(run: &Running<'_>, fid: u32) -> i64 {
    debug!(
        "vm{}/vcpu{}: unknown hypercall {fid:#x}: NOT_SUPPORTED",
        run.vm.id,
        run.vcpu.id()
    );
    ret::NOT_SUPPORTED
}
