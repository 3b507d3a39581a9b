//! The guest's PSCI, over `HVC`: power state of vCPUs and of the VM; the benchmark calls go to `bench.rs`.

use hvcore::psci::{self, ret, Call, PsciCall};
use log::{debug, error, info};

use super::machine::Vm;
use super::{bench, vcpu};
use crate::exception::TrapFrame;
use crate::exit::{exit, exit_code, ExitStatus};
use crate::percpu;

/// Handles the hypercall in `frame` (`x0`-`x3`), leaving the result in `x0`.
pub fn hypercall(vm: &'static Vm, frame: &mut TrapFrame) {
    let args = [frame.regs[0], frame.regs[1], frame.regs[2], frame.regs[3]];
    if bench::enabled() {
        if let Some(call) = hvcore::bench::decode(&args) {
            frame.regs[0] = bench::hypercall(vm, call) as u64;
            return;
        }
    }
    frame.regs[0] = standard(vm, &args) as u64;
}

/// PSCI and anything unknown. Kept out of line: its many arms would
/// otherwise make every hypercall save the registers they need.
#[inline(never)]
fn standard(vm: &'static Vm, args: &[u64; 4]) -> i64 {
    match psci::decode(args) {
        Call::Psci(PsciCall::Version) => psci::VERSION_1_0 as i64,
        Call::Psci(PsciCall::Features { fid }) => psci::features(fid),
        Call::Psci(PsciCall::CpuOn {
            target,
            entry,
            context,
        }) => vcpu::cpu_on(vm, target, entry, context),
        Call::Psci(PsciCall::AffinityInfo {
            target,
            lowest_level,
        }) => vcpu::affinity_info(vm, target, lowest_level),
        Call::Psci(PsciCall::CpuOff) => vcpu::cpu_off(vm),
        Call::Psci(PsciCall::SystemOff { status }) => {
            info!(
                "vm{}/vcpu{}: SYSTEM_OFF, status {status}",
                vm.id,
                percpu::current_id()
            );
            shutdown(vm, status)
        }
        Call::Psci(PsciCall::SystemReset) => {
            info!(
                "vm{}/vcpu{}: SYSTEM_RESET: ending the run (reset is not supported yet)",
                vm.id,
                percpu::current_id()
            );
            shutdown(vm, 0)
        }
        Call::Unknown { fid } => {
            debug!("vm{}: unknown hypercall {fid:#x}: NOT_SUPPORTED", vm.id);
            ret::NOT_SUPPORTED
        }
    }
}

/// Ends the run: statistics, then exit with the guest's status (or a
/// failure, if a migration had not finished: its copy was never checked).
fn shutdown(vm: &Vm, status: u64) -> ! {
    vm.stats.log(&vm.stage2.read().stats(), vm.pause.kicks());
    if vm.migration.as_ref().is_some_and(|m| m.is_unfinished()) {
        error!(
            "migrate: FAIL: vm{} powered off before its migration finished (run it longer, or with fewer migrate= rounds)",
            vm.id
        );
        exit(ExitStatus::Failure);
    }
    exit_code(u32::try_from(status).unwrap_or(u32::MAX))
}
