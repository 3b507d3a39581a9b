//! A vCPU running on this CPU, as its exit handlers see it, and what a handler decides ([`ExitAction`]).

use hvcore::regs::GuestRegs;
use hvcore::verdict::VmEnd;

use super::vcpu::{Vcpu, VcpuState};
use super::vm::Vm;

/// What an exit handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Run the guest again.
    Resume,
    /// Wait until the vCPU has an interrupt to take (`WFI`).
    Block,
    /// The vCPU powered itself off (`CPU_OFF`).
    PowerOff,
    /// The VM reboots (`SYSTEM_RESET`).
    Reset,
    /// The VM ends.
    StopVm(VmEnd),
}

/// A vCPU running on this CPU: what its exit handlers get.
pub struct Running<'a> {
    /// Its VM.
    pub vm: &'static Vm,
    /// The vCPU.
    pub vcpu: &'static Vcpu,
    /// Its state.
    pub state: &'a mut VcpuState,
    /// The action that made the switch into the guest return.
    pub action: ExitAction,
}

impl Running<'_> {
    /// The guest's general registers, PC and PSTATE.
    pub fn regs(&mut self) -> &mut GuestRegs {
        &mut self.state.ctx.regs
    }
}

impl<'a> Running<'a> {
    /// `vcpu` of `vm`, with its state, about to run.
    pub fn new(vm: &'static Vm, vcpu: &'static Vcpu, state: &'a mut VcpuState) -> Self {
        Self {
            vm,
            vcpu,
            state,
            action: ExitAction::Resume,
        }
    }
}
