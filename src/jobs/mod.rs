//! Test and benchmark jobs that use the VM layer and are never used by it: the live migration and its page ager, the benchmark hypercalls (a VM's vendor service), the race-window knob.

pub mod bench;
pub mod migrate;
pub mod race;
