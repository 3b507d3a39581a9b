//! The guest's PSCI: power states of vCPUs (`hvcore::power`) and of the VM.

use hvcore::power::{self, Start};
use hvcore::psci::{self, ret, Call, PsciCall};
use hvcore::verdict::VmEnd;
use log::info;

use super::super::running::{ExitAction, Running};

/// Answers the PSCI call in `args`: the value for `x0`, and what happens
/// next; `None` for a function PSCI does not have.
#[inline(never)]
pub fn call(run: &mut Running<'_>, args: &[u64; 4]) -> Option<(i64, ExitAction)> {
    let vm = run.vm;
    let resume = |value| (value, ExitAction::Resume);
    Some(match psci::decode(args) {
        Call::Psci(PsciCall::Version) => resume(psci::VERSION_1_0 as i64),
        Call::Psci(PsciCall::Features { fid }) => resume(psci::features(fid)),
        Call::Psci(PsciCall::CpuOn {
            target,
            entry,
            context,
        }) => {
            let Some(vcpu) = vm.vcpu_by_mpidr(target) else {
                return Some(resume(ret::INVALID_PARAMETERS));
            };
            if let Err(e) = power::check_entry(vm.ram(), entry) {
                return Some(resume(e));
            }
            let r = vcpu.power.cpu_on(Start { entry, context });
            if r == ret::SUCCESS {
                vm.wake(vcpu);
            }
            resume(r)
        }
        Call::Psci(PsciCall::AffinityInfo {
            target,
            lowest_level,
        }) => resume(match vm.vcpu_by_mpidr(target) {
            Some(vcpu) if lowest_level == 0 => vcpu.power.state() as i64,
            _ => ret::INVALID_PARAMETERS,
        }),
        Call::Psci(PsciCall::CpuOff) => {
            info!("vm{}/vcpu{}: CPU_OFF", vm.id, run.vcpu.id());
            (ret::SUCCESS, ExitAction::PowerOff)
        }
        Call::Psci(PsciCall::SystemOff { status }) => {
            info!(
                "vm{}/vcpu{}: SYSTEM_OFF, status {status}",
                vm.id,
                run.vcpu.id()
            );
            (ret::SUCCESS, ExitAction::StopVm(VmEnd::PoweredOff(status)))
        }
        Call::Psci(PsciCall::SystemReset) => {
            info!(
                "vm{}/vcpu{}: SYSTEM_RESET: ending the run (reset is not supported yet)",
                vm.id,
                run.vcpu.id()
            );
            (ret::SUCCESS, ExitAction::StopVm(VmEnd::Reset))
        }
        Call::Unknown { .. } => return None,
    })
}
