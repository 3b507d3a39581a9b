//! The walker against the aarch64-paging baseline, from criterion's results (`bench-ratios`).
//!
//! Mean point estimates (nanoseconds) of `cargo bench -p pgtable --bench walker`.

use crate::json;
use crate::pyfmt::{fixed, general};
use std::path::Path;

/// Every headline ratio (baseline time / ours) must be at least this.
pub const TARGET: f64 = 1.5;
/// [`TARGET`] as the report prints it.
const TARGET_TEXT: &str = "1.5";

/// The operations (criterion groups), in the table's order.
pub const OPS: &[&str] = &[
    "map_4k",
    "map_2m",
    "map_1g",
    "walk_4k",
    "walk_2m",
    "wrprotect_4k",
    "wrprotect_2m",
    "unmap_4k",
    "unmap_2m",
];

/// (title, ours, baseline) as criterion function names; the first is the headline comparison.
pub const PAIRS: &[(&str, &str, &str)] = &[
    (
        "Stage2 exclusive vs aarch64-paging Stage2 (headline)",
        "pgtable",
        "aarch64_paging",
    ),
    (
        "Stage2 shared vs aarch64-paging Stage2",
        "pgtable_shared",
        "aarch64_paging",
    ),
    (
        "Hyp (EL2 stage 1) vs aarch64-paging El2",
        "pgtable_hyp",
        "aarch64_paging_el2",
    ),
];

/// The mean time of one benchmark in nanoseconds; `None` if it has no readable estimate.
pub fn mean_ns(criterion: &Path, group: &str, function: &str) -> Option<f64> {
    let path = criterion
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    json::parse(&text)
        .ok()?
        .get("mean")?
        .get("point_estimate")?
        .as_f64()
}

/// A time with a unit that keeps it at least 1 (three decimals), or in ns (one).
pub fn time(ns: f64) -> String {
    for (unit, scale) in [("s", 1e9), ("ms", 1e6), ("us", 1e3)] {
        if ns >= scale {
            return format!("{} {unit}", fixed(ns / scale, 3));
        }
    }
    format!("{} ns", fixed(ns, 1))
}

/// The report, and whether a headline operation missed the target (or has no data).
pub struct Ratios {
    /// What to print.
    pub text: String,
    /// Some headline operation is below the target or missing.
    pub missed: bool,
}

/// The tables, from a lookup of mean times by (group, function).
pub fn report(mean: impl Fn(&str, &str) -> Option<f64>) -> Ratios {
    let mut text = String::new();
    let mut missed = Vec::new();
    for (i, &(title, ours, base)) in PAIRS.iter().enumerate() {
        let mut rows = Vec::new();
        for op in OPS {
            let (Some(a), Some(b)) = (mean(op, ours), mean(op, base)) else {
                if i == 0 {
                    missed.push(format!("{op} (no data)"));
                }
                continue;
            };
            let ratio = b / a;
            let mark = if ratio >= TARGET {
                String::new()
            } else {
                format!("  < {TARGET_TEXT}x")
            };
            if i == 0 && ratio < TARGET {
                missed.push(format!("{op} ({}x)", general(ratio, 3)));
            }
            rows.push(format!(
                "{op:<13} | {:>11} | {:>14} | {:>7}x{mark}",
                time(a),
                time(b),
                general(ratio, 3)
            ));
        }
        if rows.is_empty() {
            continue;
        }
        text += &format!(
            "## {title}\n{:<13} | {ours:>11} | {base:>14} | ratio\n",
            "operation"
        );
        text += &rows.join("\n");
        text += "\n\n";
    }
    if missed.is_empty() {
        text += &format!("every headline operation is at least {TARGET_TEXT}x the baseline\n");
    } else {
        text += &format!("below the {TARGET_TEXT}x target: {}\n", missed.join(", "));
    }
    Ratios {
        text,
        missed: !missed.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(table: &'a [(&'a str, &'a str, f64)]) -> impl Fn(&str, &str) -> Option<f64> + 'a {
        move |g, f| {
            table
                .iter()
                .find(|&&(tg, tf, _)| tg == g && tf == f)
                .map(|&(_, _, v)| v)
        }
    }

    #[test]
    fn times_pick_their_unit() {
        assert_eq!(time(999.94), "999.9 ns");
        assert_eq!(time(1000.0), "1.000 us");
        assert_eq!(time(123_456.0), "123.456 us");
        assert_eq!(time(2.5e6), "2.500 ms");
        assert_eq!(time(3e9), "3.000 s");
    }

    #[test]
    fn all_headline_operations_met() {
        let mut t = Vec::new();
        for op in OPS {
            t.push((*op, "pgtable", 100.0));
            t.push((*op, "aarch64_paging", 200.0));
        }
        let r = report(lookup(&t));
        assert!(!r.missed);
        assert!(
            r.text.starts_with(
                "## Stage2 exclusive vs aarch64-paging Stage2 (headline)\n\
             operation     |     pgtable | aarch64_paging | ratio\n\
             map_4k        |    100.0 ns |       200.0 ns |       2x\n"
            ),
            "{}",
            r.text
        );
        // The other comparisons have no data: no table.
        assert!(!r.text.contains("shared"));
        assert!(r
            .text
            .ends_with("\n\nevery headline operation is at least 1.5x the baseline\n"));
    }

    #[test]
    fn a_slow_or_missing_operation_misses() {
        let t = [
            ("map_4k", "pgtable", 100.0),
            ("map_4k", "aarch64_paging", 123.4),
            ("walk_4k", "pgtable_hyp", 10.0),
            ("walk_4k", "aarch64_paging_el2", 30.0),
        ];
        let r = report(lookup(&t));
        assert!(r.missed);
        assert!(
            r.text
                .contains("map_4k        |    100.0 ns |       123.4 ns |    1.23x  < 1.5x\n"),
            "{}",
            r.text
        );
        assert!(r
            .text
            .contains("## Hyp (EL2 stage 1) vs aarch64-paging El2\n"));
        assert!(r
            .text
            .contains("walk_4k       |     10.0 ns |        30.0 ns |       3x\n"));
        assert!(r.text.ends_with("below the 1.5x target: map_4k (1.23x), map_2m (no data), map_1g (no data), walk_4k (no data), walk_2m (no data), wrprotect_4k (no data), wrprotect_2m (no data), unmap_4k (no data), unmap_2m (no data)\n"), "{}", r.text);
    }
}
