//! A vCPU's run loop: its context loaded on its CPU, then *pending requests → enter → exit handler → an [`ExitAction`]*, again and again.
//!
//! An exit handler never ends the run or the VM itself: it returns what
//! should happen, and this loop (or, for the VM, the caller's CPU loop)
//! decides. On the fast path (the handler says *resume* and nothing is
//! pending) the guest is resumed straight from the exit, with no return
//! through [`context::enter`].

use hvcore::power::Start;
use hvcore::request;
use hvcore::verdict::VmEnd;
use log::info;

use super::exit;
use super::irq;
use super::running::{ExitAction, Running};
use super::vcpu::{req, Vcpu};
use super::vm::Vm;
use crate::arch::context::{self, Guest, VcpuContext};
use crate::arch::{cpu, percpu};

/// How a vCPU's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// It powered off; a `CPU_ON` may start it again.
    PoweredOff,
    /// It asked for its VM's reboot and leads it ([`super::vm::reboot`]);
    /// it is off.
    Reset,
    /// Its VM ended.
    VmEnded,
}

impl Guest for Running<'_> {
    fn context(&mut self) -> &mut VcpuContext {
        &mut self.state.ctx
    }

    fn exit(&mut self, index: u64) -> bool {
        self.vcpu.requests.exited();
        if self.state.lrs_used == 0 {
            let action = exit::handle(self, index);
            return self.resume_or(action);
        }
        let action = exit_in_flight(self, index);
        self.resume_or(action)
    }
}

impl Running<'_> {
    /// After an exit handler: straight back into the guest if it says
    /// *resume* and nothing is pending, else out to the run loop with its
    /// action.
    #[inline(always)]
    fn resume_or(&mut self, action: ExitAction) -> bool {
        if !matches!(action, ExitAction::Resume) {
            self.action = action;
            return false;
        }
        self.vcpu.requests.try_enter() || raised_irq(self)
    }
}

/// An exit while interrupts are in the list registers: they go back to the
/// model first, so the handler (a `WFI`, a GIC register) sees their state,
/// and the list registers are refilled after.
#[inline(never)]
fn exit_in_flight(run: &mut Running<'_>, index: u64) -> ExitAction {
    irq::fold(run);
    let action = exit::handle(run, index);
    if matches!(action, ExitAction::Resume) {
        // An interrupt raised for this vCPU meanwhile goes in with this
        // flush (once, not again in `raised_irq`).
        run.vcpu.requests.take_bits(req::IRQ);
    }
    irq::flush(run);
    action
}

/// Resuming, but a request holds the vCPU: if it is only an interrupt
/// raised for it meanwhile (its own timer's, forwarded by this very exit,
/// or another CPU's), it goes into the list registers here and the guest
/// is entered at once, without the way round the run loop.
#[cold]
#[inline(never)]
fn raised_irq(run: &mut Running<'_>) -> bool {
    if !run.vcpu.requests.take_bits(req::IRQ) {
        return false;
    }
    if run.state.lrs_used != 0 {
        irq::fold(run);
    }
    irq::flush(run);
    run.vcpu.requests.try_enter()
}

/// Runs `vcpu` of `vm` on this CPU from reset at `start`, until it powers
/// off or its VM ends.
pub fn run(vm: &'static Vm, vcpu: &'static Vcpu, start: Start) -> RunEnd {
    let mut state = vcpu.lock_state();
    // Architectural reset: nothing of a previous run survives.
    state.ctx = VcpuContext::at_reset(start.entry, start.context);
    vm.controls.load(vcpu.mpidr());
    state.ctx.load();
    irq::reset(&mut Running::new(vm, vcpu, &mut state));
    percpu::current().set_running(Some((vm.id, vcpu.id() as u16)));
    guest_log!(
        vm,
        Debug,
        "vm{}/vcpu{}: entering the guest at {:#x} (x0 {:#x})",
        vm.id,
        vcpu.id(),
        start.entry,
        start.context
    );
    // Whether it leaves by its own CPU_OFF (else a reboot's request).
    let mut cpu_off = false;
    let end = loop {
        if !vcpu.requests.try_enter() {
            let requests = vcpu.requests.take();
            if requests & req::STOP != 0 {
                break RunEnd::VmEnded;
            }
            if requests & req::RESET != 0 {
                break RunEnd::PoweredOff;
            }
            if requests & request::PAUSE != 0 {
                while vm.pause.is_paused() {
                    cpu::wait_for_event();
                }
            }
            if requests & req::IRQ != 0 {
                let mut running = Running::new(vm, vcpu, &mut state);
                if running.state.lrs_used != 0 {
                    irq::fold(&mut running);
                }
                irq::flush(&mut running);
            }
            continue;
        }
        let mut running = Running::new(vm, vcpu, &mut state);
        context::enter(&mut running);
        match running.action {
            ExitAction::Resume => {}
            ExitAction::Block => block(&mut running),
            ExitAction::PowerOff => {
                cpu_off = true;
                break RunEnd::PoweredOff;
            }
            ExitAction::Reset => {
                break if vm.begin_reset() {
                    RunEnd::Reset
                } else {
                    RunEnd::PoweredOff
                };
            }
            ExitAction::StopVm(end) => {
                vm.stop(end);
                break RunEnd::VmEnded;
            }
        }
    };
    irq::put(&mut Running::new(vm, vcpu, &mut state));
    state.ctx.save();
    percpu::current().set_running(None);
    if end == RunEnd::VmEnded {
        return end;
    }
    // Counted off while its state still says on: see `hvcore::power`, *The
    // last vCPU off* (a reboot clears its flag only once every state is off).
    if vm.live.went_off() && cpu_off && !vm.is_resetting() {
        info!(
            "vm{}/vcpu{}: the last vCPU on called CPU_OFF: nothing can run the VM again, ending it",
            vm.id,
            vcpu.id()
        );
        vm.stop(VmEnd::NoVcpu);
        return RunEnd::VmEnded;
    }
    // Last: a CPU_ON may now start it again (with a fresh context).
    vcpu.power.off();
    end
}

/// A `WFI` with nothing to take: the CPU waits (`wfi`) until the vCPU has
/// an interrupt or a request, woken by a kick or by the vCPU's own timer
/// (whose interrupt is forwarded to it here).
fn block(run: &mut Running<'_>) {
    let (vm, vcpu) = (run.vm, run.vcpu);
    loop {
        if !vcpu.requests.try_block(|| irq::has_pending(vm, vcpu)) {
            return;
        }
        cpu::wait_for_interrupt();
        exit::take_irqs(vm, vcpu);
        vcpu.requests.unblock();
    }
}
