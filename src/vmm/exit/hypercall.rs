//! A guest's `HVC`: routed by SMCCC service to the Arm architecture calls, PSCI, or the vendor-specific hypervisor service a job installed; the result goes to `x0`.

use hvcore::psci::ret;
use hvcore::smccc::{self, ArchCall, Service};

use super::super::running::{ExitAction, Running};
use super::super::vcpu::Vcpu;
use super::super::vm::Vm;
use super::psci;

/// Handles the `HVC` the running vCPU made.
#[inline(always)]
pub fn hvc(run: &mut Running<'_>) -> ExitAction {
    let fid = run.regs().x[0] as u32;
    let service = smccc::service(fid);
    if service == Service::VendorHyp {
        // The vendor calls (the benchmarks' null hypercall) first.
        run.regs().x[0] = vendor(run) as u64;
        return ExitAction::Resume;
    }
    standard(run, service, fid)
}

/// The other services.
#[inline(never)]
fn standard(run: &mut Running<'_>, service: Service, fid: u32) -> ExitAction {
    let (result, action) = match service {
        Service::VendorHyp => (vendor(run), ExitAction::Resume),
        Service::Psci => {
            let args = run.regs().args4();
            psci::call(run, &args)
                .unwrap_or_else(|| (unknown(run.vm, run.vcpu, fid), ExitAction::Resume))
        }
        Service::Arch => {
            let call = smccc::decode_arch(&run.regs().args4());
            if let ArchCall::Workaround(n) = call {
                if run.vm.workarounds.forwarded(n) {
                    psci::firmware_workaround(n);
                }
            }
            (
                smccc::answer_arch(call, &run.vm.workarounds),
                ExitAction::Resume,
            )
        }
        Service::Other => (unknown(run.vm, run.vcpu, fid), ExitAction::Resume),
    };
    run.regs().x[0] = result as u64;
    action
}

/// The vendor service's answer, `NOT_SUPPORTED` without one.
#[inline(always)]
fn vendor(run: &mut Running<'_>) -> i64 {
    let (vm, vcpu) = (run.vm, run.vcpu);
    let args = run
        .state
        .ctx
        .regs
        .x
        .first_chunk::<4>()
        .expect("31 registers");
    match vm.vendor.and_then(|service| service(vm, vcpu, args)) {
        Some(result) => result,
        None => unknown(vm, vcpu, args[0] as u32),
    }
}

/// An unknown function: `NOT_SUPPORTED`, as SMCCC requires.
#[cold]
pub fn unknown(vm: &Vm, vcpu: &Vcpu, fid: u32) -> i64 {
    guest_log!(
        vm,
        Debug,
        "vm{}/vcpu{}: unknown hypercall {fid:#x}: NOT_SUPPORTED",
        vm.id,
        vcpu.id()
    );
    ret::NOT_SUPPORTED
}
