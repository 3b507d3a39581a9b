//! The VM layer: the table of VMs, each VM's memory, bus and devices, its vCPUs and their run loop, and the exit handlers. It touches the machine only through `arch`, and has no `unsafe` (the crate root denies it everywhere but `arch`).
//!
//! Modules, each using only those listed after it:
//!
//! | module | what |
//! |--------|------|
//! | `table` | VM ids, VMIDs, which CPU runs which vCPU, whether all VMs ended |
//! | `run` | a vCPU's run loop: requests, enter, exit handler, `ExitAction` |
//! | `exit` | an exit dispatched by class: `abort` (memory, devices, refusals), `hypercall` (SMCCC services → `psci`), `inject` |
//! | `devices` | the emulated devices behind the bus: the GIC, the PL011 |
//! | `console` | guest output to the console (tagged lines or raw), typed input to the focused VM's PL011, the escape keys |
//! | `irq` | the door devices, timers and SGIs raise interrupts through; list registers around entries and exits |
//! | `running` | a running vCPU as the exit handlers see it; `ExitAction` |
//! | `vm` | one VM: slots and memory map, stage 2, MMIO bus, devices, pause, end |
//! | `vcpu` | one vCPU: power state, requests, counters, context |
//! | `stats` | per-vCPU counters and the VM's sum |
//!
//! Every log line a guest can trigger repeatedly goes through `guest_log!`, its VM's rate
//! limit (a burst, then a few lines a second, and a count of what was dropped).

/// Logs a line a guest can make the hypervisor print again and again (a
/// refused access, an unknown register, a `CPU_OFF`): through its VM's
/// limit ([`vm::Vm::log_admit`], `hvcore::ratelimit`), so a guest in a
/// loop cannot flood the console. `guest_log!(vm, Warn, "...", args)`.
macro_rules! guest_log {
    ($vm:expr, $level:ident, $($arg:tt)+) => {
        if log::log_enabled!(log::Level::$level) && $vm.log_admit() {
            log::log!(log::Level::$level, $($arg)+);
        }
    };
}

pub mod console;
pub mod devices;
pub mod exit;
pub mod irq;
pub mod run;
pub mod running;
pub mod stats;
pub mod table;
pub mod vcpu;
pub mod vm;
