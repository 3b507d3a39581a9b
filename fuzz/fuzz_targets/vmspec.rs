//! A VM description (`hvcore::vmspec`), as the user writes it with `scripts/run.sh --vm` and the hypervisor reads it from the bundle: parsing never panics, an accepted description has what the format requires and prints back to an equal one, the default stage-2 budget is computed without overflow, and the fit check refuses exactly the sets whose CPUs are offline or shared.
#![no_main]

use arbitrary::Arbitrary;
use hvcore::vmspec::{self, FitError, VmSpec, MAX_CPUS, MAX_VMS};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Description lines, one VM each.
    lines: Vec<String>,
    /// CPUs online.
    online: u8,
}

fuzz_target!(|input: Input| {
    let online = usize::from(input.online % 65);
    let mut specs = Vec::new();
    for line in input.lines.iter().take(2 * MAX_VMS) {
        let Ok(spec) = VmSpec::parse(line) else {
            continue;
        };
        // What the format requires of an accepted description.
        assert!(!spec.cpus.is_empty());
        assert!(spec.cpus.iter().all(|c| c < MAX_CPUS), "{spec:?}");
        assert!(spec.mem >= 2 << 20 && spec.mem % (2 << 20) == 0, "{spec:?}");
        assert!(matches!(
            spec.block,
            None | Some(4096 | 0x20_0000 | 0x4000_0000)
        ));
        assert!(spec.budget != Some(0));
        assert!(line.ends_with(spec.guest_args));
        // The budget: as given, or the default, which covers at least one
        // table per 2 MiB of RAM; computing it never overflows (a panic here).
        let budget = spec.budget();
        if spec.budget.is_none() {
            assert!(budget as u64 >= spec.mem / (2 << 20), "{spec:?} {budget}");
        }
        // The CPU set prints back as what parses to it.
        let again = format!("cpus={} mem={}", spec.cpus, spec.mem);
        let back = VmSpec::parse(&again).expect("a printed CPU set parses");
        assert_eq!(back.cpus, spec.cpus);
        assert_eq!(back.mem, spec.mem);
        specs.push(spec);
    }
    // The fit check against a model: too many VMs, a CPU not online, or two
    // VMs sharing a CPU is refused; anything else fits.
    let fits = specs.len() <= MAX_VMS
        && specs.iter().all(|s| s.cpus.iter().all(|c| c < online))
        && specs
            .iter()
            .enumerate()
            .all(|(i, a)| specs[i + 1..].iter().all(|b| a.cpus.0 & b.cpus.0 == 0));
    let verdict = vmspec::check(&specs, online);
    assert_eq!(verdict.is_ok(), fits, "{specs:?} on {online}: {verdict:?}");
    if let Err(FitError::Overlap { a, b, cpus }) = verdict {
        assert!(a < b && !cpus.is_empty());
        assert_eq!(cpus.0, specs[a].cpus.0 & specs[b].cpus.0);
    }
    // Spare CPUs: online, and in no VM.
    let spare = vmspec::spare_cpus(&specs, online);
    for c in 0..64 {
        let used = specs.iter().any(|s| s.cpus.0 >> c & 1 == 1);
        assert_eq!(spare.0 >> c & 1 == 1, c < online && !used, "CPU {c}");
    }
});
