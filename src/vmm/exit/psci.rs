//! The guest's PSCI: power states of vCPUs (`hvcore::power`) and of the VM.

use core::sync::atomic::Ordering;
use hvcore::power::{self, Start};
use hvcore::psci::{self, ret, Call, PsciCall};
use hvcore::verdict::VmEnd;
use log::info;

use super::super::running::{ExitAction, Running};

/// Passes a guest's `ARCH_WORKAROUND_n` to the firmware that offered it.
pub fn firmware_workaround(n: u8) {
    crate::arch::psci::workaround(n);
}

/// Answers the PSCI call in `args`: the value for `x0`, and what happens
/// next; `None` for a function PSCI does not have.
#[inline(never)]
pub fn call(run: &mut Running<'_>, args: &[u64; 4]) -> Option<(i64, ExitAction)> {
    let vm = run.vm;
    let resume = |value| (value, ExitAction::Resume);
    Some(match psci::decode(args) {
        Call::Psci(PsciCall::Version) => resume(psci::VERSION_1_1 as i64),
        Call::Psci(PsciCall::MigrateInfoType) => resume(psci::MIGRATE_INFO_NONE),
        // Every state as standby: back when there is an interrupt to take.
        Call::Psci(PsciCall::CpuSuspend { .. }) => (ret::SUCCESS, ExitAction::Block),
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
            if vm.is_resetting() {
                return Some(resume(ret::DENIED));
            }
            let r = vcpu.power.cpu_on(Start { entry, context }, &vm.live);
            if r == ret::SUCCESS {
                // A reboot that began meanwhile must stop this vCPU too
                // (it may have sent its request before the vCPU was on).
                if vm.is_resetting() {
                    vm.request_reset(vcpu);
                }
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
            guest_log!(vm, Info, "vm{}/vcpu{}: CPU_OFF", vm.id, run.vcpu.id());
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
            // Boots so far, the first included: reboots = boots - 1.
            let reboots = vm.boot.boots.load(Ordering::Relaxed).saturating_sub(1);
            let limited = vm.boot.reset_limit.is_some_and(|n| reboots >= n);
            let ends = limited || vm.logs_reserved();
            guest_log!(
                vm,
                Info,
                "vm{}/vcpu{}: SYSTEM_RESET: {}",
                vm.id,
                run.vcpu.id(),
                if limited {
                    "the VM ends (reset=: no reboot left)"
                } else if ends {
                    "the VM ends (a job owns its memory's dirty logs)"
                } else {
                    "rebooting the VM"
                }
            );
            if ends {
                (ret::SUCCESS, ExitAction::StopVm(VmEnd::Reset))
            } else {
                (ret::SUCCESS, ExitAction::Reset)
            }
        }
        Call::Unknown { .. } => return None,
    })
}
