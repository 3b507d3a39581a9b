//! The guest's own stage-1 tables, read when its walk faults in no slot (`hvcore::s1walk`): whatever the guest put in `TCR_EL1`, `TTBRn_EL1` and its descriptors, the level search never panics, reads at most the three descriptors above the last level, never reads in the faulting page, and a level it names is one whose descriptor the walk would read there.
#![no_main]

use arbitrary::Arbitrary;
use hvcore::s1walk::{table_level, Stage1};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    tcr: u64,
    ttbr0: u64,
    ttbr1: u64,
    va: u64,
    table_page: u64,
    /// Descriptors by address (low 3 bits ignored); unreadable elsewhere,
    /// or `fill` when given.
    mem: Vec<(u64, u64)>,
    fill: Option<u64>,
}

fuzz_target!(|input: Input| {
    let regs = Stage1 {
        tcr: input.tcr,
        ttbr0: input.ttbr0,
        ttbr1: input.ttbr1,
    };
    let mut reads = Vec::new();
    let level = table_level(&regs, input.va, input.table_page, |at| {
        reads.push(at);
        input
            .mem
            .iter()
            .find(|&&(a, _)| a & !7 == at & !7)
            .map(|&(_, d)| d)
            .or(input.fill)
    });
    // A walk has at most four levels: it reads no more than the three
    // table descriptors above its last level (the search stops on
    // reaching the faulting page, before reading there).
    assert!(reads.len() <= 3, "{reads:x?}");
    let page = input.table_page >> 12;
    for &at in &reads {
        assert_ne!(at >> 12, page, "read in the faulting page: {at:#x}");
        assert_eq!(at % 8, 0, "descriptors are 8-byte aligned: {at:#x}");
        assert!(at < 1 << 48, "48-bit output addresses: {at:#x}");
    }
    if let Some(level) = level {
        assert!(level <= 3);
        // Each read is one level, the last read the level above the one
        // named: the walk started at `level - reads`, a valid start level.
        assert!(
            usize::from(level) >= reads.len(),
            "{level} after {reads:x?}"
        );
    }
});
