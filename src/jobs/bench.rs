//! The benchmark hypercalls (`bench=on`): a guest brackets operations, and the instructions the hypervisor retires at EL2 in between are counted and printed.
//!
//! `BENCH_START(id)` reads this CPU's EL2 instruction counter ([`pmu`]) as
//! the *last* thing before returning to the guest, `BENCH_STOP(id, ops)` as
//! the *first* thing it does; so a bracket counts, besides the `ops`
//! operations' exits (each from the exception vector to `eret`), a fixed
//! cost: the tail of `START` and the head of `STOP`. An empty bracket
//! (`calibrate`, `ops` = 0) measures that cost, and later brackets on the
//! same CPU print it as `bracket` to subtract. Every bracket prints one line
//! (see [`report`]), which `scripts/bench.sh` turns into its table.
//!
//! A bracket belongs to the vCPU that opened it, and counts that vCPU's
//! exits. The calls are the VM's vendor-specific hypervisor service
//! ([`service`]), installed only with `bench=on`; without it they are
//! unknown functions (`NOT_SUPPORTED`).

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hvcore::bench::{self, BenchCall, BenchId, DirtyLogOp};
use hvcore::dirty::DirtyPages;
use hvcore::psci::ret;
use log::warn;
use pgtable::{MemCache, MmOps};

use crate::arch::console::println;
use crate::arch::percpu::MAX_CPUS;
use crate::arch::pmu;
use crate::vmm::vcpu::Vcpu;
use crate::vmm::vm::Vm;

/// The benchmark hypercalls, as a VM's vendor service
/// ([`crate::vmm::vm::VendorService`]).
pub fn service(vm: &Vm, vcpu: &Vcpu, args: &[u64; 4]) -> Option<i64> {
    // The null hypercall answers at once: it measures the exit alone.
    if args[0] as u32 == bench::fid::NULL {
        return Some(ret::SUCCESS);
    }
    calls(vm, vcpu, args)
}

/// Every benchmark call but the null one.
#[inline(never)]
fn calls(vm: &Vm, vcpu: &Vcpu, args: &[u64; 4]) -> Option<i64> {
    Some(hypercall(vm, vcpu, bench::decode(args)?))
}

/// One vCPU's bracket. Only that vCPU's CPU touches it.
struct Bracket {
    /// The open bracket's id + 1; 0 when none is open.
    open: AtomicU64,
    /// The EL2 instruction counter at `BENCH_START`.
    start: AtomicU64,
    /// VM exits counted at `BENCH_START`.
    exits: AtomicU64,
    /// The last `calibrate` bracket: what an empty bracket costs.
    overhead: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const CLOSED: Bracket = Bracket {
    open: AtomicU64::new(0),
    start: AtomicU64::new(0),
    exits: AtomicU64::new(0),
    overhead: AtomicU64::new(0),
};

static BRACKETS: [Bracket; MAX_CPUS] = [CLOSED; MAX_CPUS];

/// Serves a benchmark hypercall of `vcpu`; returns the SMCCC result for `x0`.
fn hypercall(vm: &Vm, vcpu: &Vcpu, call: BenchCall) -> i64 {
    match call {
        BenchCall::Null => ret::SUCCESS,
        BenchCall::Start { .. } | BenchCall::Stop { .. } if !pmu::available() => ret::NOT_SUPPORTED,
        BenchCall::Start { id } => {
            let bracket = &BRACKETS[vcpu.cpu.index()];
            bracket.open.store(id as u64 + 1, Relaxed);
            bracket.exits.store(vcpu.stats.exits_total(), Relaxed);
            // Last: what follows until `eret` is the bracket's fixed cost.
            bracket
                .start
                .store(u64::from(pmu::el2_instructions()), Relaxed);
            ret::SUCCESS
        }
        BenchCall::Stop { id, ops } => {
            // First: what led here since the vector is the fixed cost.
            let end = pmu::el2_instructions();
            stop(vcpu, id, ops, end)
        }
        BenchCall::Age { ipa, size } => age(vm, vcpu, ipa, size),
        BenchCall::DirtyLog { op } => dirty_log(vm, op),
        BenchCall::Invalid { .. } => ret::INVALID_PARAMETERS,
    }
}

/// `BENCH_DIRTY_LOG`: dirty logging of guest RAM on or off, or a
/// get-and-clear metered by itself (printed as `dirty-log`, pages taken as
/// the operations). Refused (`DENIED`) while a migration owns the log.
#[inline(never)]
fn dirty_log(vm: &Vm, op: DirtyLogOp) -> i64 {
    let Some((index, _)) = vm.slots.find_indexed(vm.map.ram_base) else {
        return ret::INVALID_PARAMETERS;
    };
    let log = &vm.logs[index];
    if vm.logs_reserved() {
        return ret::DENIED;
    }
    match op {
        DirtyLogOp::Enable => {
            let mut cache = MemCache::new();
            if cache.topup(&vm.s2mm, log.pages_to_enable()).is_err() {
                cache.drain(&vm.s2mm);
                return ret::INTERNAL_FAILURE;
            }
            let enabled = log.enable(&mut vm.stage2.write(), &mut cache);
            cache.drain(&vm.s2mm);
            match enabled {
                Ok(_) => ret::SUCCESS,
                Err(e) => {
                    warn!("vm{}: bench: enabling the dirty log: {e}", vm.id);
                    ret::INTERNAL_FAILURE
                }
            }
        }
        DirtyLogOp::GetAndClear if !log.is_enabled() => ret::DENIED,
        DirtyLogOp::GetAndClear => {
            // Room for every bitmap word first: no allocation is metered.
            let mut pages = DirtyPages::for_log(log);
            let start = pmu::el2_instructions();
            let cleared = log.get_and_clear(&vm.stage2.read(), &mut pages);
            let instructions = pmu::between(start, pmu::el2_instructions());
            match cleared {
                Ok(c) => {
                    if pmu::available() {
                        report("dirty-log", c.pages, 0, instructions, 0);
                    }
                    i64::try_from(c.pages).unwrap_or(i64::MAX)
                }
                Err(e) => {
                    warn!("vm{}: bench: get-and-clear: {e}", vm.id);
                    ret::INTERNAL_FAILURE
                }
            }
        }
        DirtyLogOp::Disable => {
            log.disable();
            ret::SUCCESS
        }
    }
}

/// Closes this CPU's bracket `id` with the counter at `end`, and prints it.
#[inline(never)]
fn stop(vcpu: &Vcpu, id: BenchId, ops: u64, end: u32) -> i64 {
    let bracket = &BRACKETS[vcpu.cpu.index()];
    let exits_now = vcpu.stats.exits_total();
    if bracket.open.load(Relaxed) != id as u64 + 1 {
        return ret::INVALID_PARAMETERS;
    }
    bracket.open.store(0, Relaxed);
    let instructions = pmu::between(bracket.start.load(Relaxed) as u32, end);
    // Not this STOP's own exit, counted before it was served.
    let exits = exits_now
        .wrapping_sub(bracket.exits.load(Relaxed))
        .saturating_sub(1);
    if id == BenchId::Calibrate {
        bracket.overhead.store(instructions, Relaxed);
    }
    report(
        id.key(),
        ops,
        exits,
        instructions,
        bracket.overhead.load(Relaxed),
    );
    ret::SUCCESS
}

/// Prints one measurement the way `scripts/bench.sh` reads it:
///
/// `bench: <key>: <ops> ops, <exits> exits, <instructions> EL2 instructions, bracket <bracket>: <x.y> per op`
///
/// `instructions` is what was counted at EL2 for `ops` operations;
/// `bracket` is the part of it that is the measurement's own fixed cost
/// (0 when there is none), and the per-op figure is
/// `(instructions - bracket) / ops`, rounded to a tenth (omitted for 0 ops).
/// A measurement made inside the hypervisor (two [`pmu::el2_instructions`]
/// readings around some work on one CPU) reports itself with this too.
/// Never inlined: `scripts/bench-profile.sh` finds a bracket's end by it.
#[inline(never)]
pub fn report(key: &str, ops: u64, exits: u64, instructions: u64, bracket: u64) {
    let net = instructions.saturating_sub(bracket);
    if ops == 0 {
        println!(
            "bench: {key}: {ops} ops, {exits} exits, {instructions} EL2 instructions, bracket {bracket}"
        );
        return;
    }
    let tenths = (u128::from(net) * 10 + u128::from(ops) / 2) / u128::from(ops);
    println!(
        "bench: {key}: {ops} ops, {exits} exits, {instructions} EL2 instructions, bracket {bracket}: {}.{} per op",
        tenths / 10,
        tenths % 10
    );
}

/// `BENCH_AGE`: clears the access flag of every leaf mapping the range (a
/// shared walk, as a real aging pass would do while vCPUs run), then
/// invalidates the TLB so the next access takes an access-flag fault.
#[inline(never)]
fn age(vm: &Vm, vcpu: &Vcpu, ipa: u64, size: u64) -> i64 {
    if !bench::age_range_ok(vm.ram(), ipa, size) {
        return ret::INVALID_PARAMETERS;
    }
    let aged = vm.stage2.read().shared().test_clear_young(ipa, size, true);
    match aged {
        Ok(_) => {
            vm.s2mm.tlb_flush_range(ipa, size);
            ret::SUCCESS
        }
        Err(e) => {
            warn!(
                "vm{}/vcpu{}: BENCH_AGE({ipa:#x}, {size:#x}): {e}",
                vm.id,
                vcpu.id()
            );
            ret::INTERNAL_FAILURE
        }
    }
}
