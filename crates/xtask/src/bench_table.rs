//! The benchmark table of scripts/bench.sh: one row per `bench: <key>:` line the runs printed.

use crate::diff;
use crate::pyfmt::{fixed, percent, splitlines};

/// What a row's value is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// `(instructions - bracket) / ops * scale`.
    Insns,
    /// `exits / ops * scale`.
    Exits,
    /// The sum of other rows' [`Metric::Insns`] values (their keys): a cost
    /// made of brackets on different vCPUs, such as an IPI end to end.
    Sum(&'static [&'static str]),
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// The key the hypervisor prints (`bench: <key>: ...`).
    pub key: &'static str,
    /// What is measured.
    pub label: &'static str,
    /// The value's unit.
    pub unit: &'static str,
    /// What an operation is, for the sample column.
    pub noun: &'static str,
    /// The target: at most this much, if any.
    pub target: Option<f64>,
    /// How the value is computed.
    pub metric: Metric,
    /// The value is per `scale` operations.
    pub scale: u32,
    /// Whether every operation must be exactly one exit: anything else that exited inside the
    /// bracket would be counted as the operations' cost.
    pub one_exit: bool,
}

// One argument per column of ROWS, so that each row reads as a line of the table.
#[allow(clippy::too_many_arguments)]
const fn row(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    noun: &'static str,
    target: Option<f64>,
    metric: Metric,
    scale: u32,
    one_exit: bool,
) -> Row {
    Row {
        key,
        label,
        unit,
        noun,
        target,
        metric,
        scale,
        one_exit,
    }
}

const INSNS: &str = "EL2 instructions";

/// The table's rows, in order. To add one, make the hypervisor print its `bench: <key>:` line.
pub const ROWS: &[Row] = &[
    row(
        "hvc",
        "HVC round trip (null hypercall)",
        INSNS,
        "calls",
        Some(150.0),
        Metric::Insns,
        1,
        true,
    ),
    row(
        "fault-4k",
        "lazy fault, 4K page",
        INSNS,
        "faults",
        Some(1000.0),
        Metric::Insns,
        1,
        true,
    ),
    row(
        "fault-2m",
        "lazy fault, 2M block",
        INSNS,
        "faults",
        Some(1000.0),
        Metric::Insns,
        1,
        true,
    ),
    row(
        "relax-4k",
        "permission relax (exec from a data page), 4K page",
        INSNS,
        "faults",
        None,
        Metric::Insns,
        1,
        true,
    ),
    row(
        "relax-2m",
        "permission relax (exec from a data page), 2M block",
        INSNS,
        "faults",
        None,
        Metric::Insns,
        1,
        true,
    ),
    row(
        "access-flag-4k",
        "access-flag fault, 4K page",
        INSNS,
        "faults",
        None,
        Metric::Insns,
        1,
        true,
    ),
    row(
        "access-flag-2m",
        "access-flag fault, 2M block",
        INSNS,
        "faults",
        None,
        Metric::Insns,
        1,
        true,
    ),
    row(
        "mmio-write",
        "emulated console MMIO write (PL011 UARTDR)",
        INSNS,
        "writes",
        None,
        Metric::Insns,
        1,
        true,
    ),
    row(
        "touch-4k",
        "faults per MiB touched, 4K pages only (guest.block=4K)",
        "faults",
        "MiB",
        None,
        Metric::Exits,
        1,
        false,
    ),
    row(
        "touch-blocks",
        "faults per MiB touched, blocks enabled (default)",
        "faults",
        "MiB",
        Some(0.5),
        Metric::Exits,
        1,
        false,
    ),
    row(
        "sgi-send",
        "IPI send: trapped ICC_SGI1R_EL1 write (the sender's exit)",
        INSNS,
        "SGIs",
        None,
        Metric::Insns,
        1,
        true,
    ),
    row(
        "ipi-receive",
        "IPI receive: the kick's exit and the list register fill (the receiver's)",
        INSNS,
        "SGIs",
        None,
        Metric::Insns,
        1,
        true,
    ),
    row(
        "ipi",
        "IPI end to end (send + receive)",
        INSNS,
        "",
        Some(1500.0),
        Metric::Sum(&["sgi-send", "ipi-receive"]),
        1,
        false,
    ),
    row(
        "vtimer",
        "virtual timer interrupt, physical interrupt to the guest's vector",
        INSNS,
        "interrupts",
        Some(600.0),
        Metric::Insns,
        1,
        true,
    ),
    row(
        "gicd-read",
        "distributor register read (GICD_TYPER)",
        INSNS,
        "reads",
        Some(350.0),
        Metric::Insns,
        1,
        true,
    ),
    row(
        "wfi",
        "WFI that blocks, woken by the vCPU's timer",
        INSNS,
        "WFIs",
        None,
        Metric::Insns,
        1,
        true,
    ),
    row(
        "vm-create",
        "creating a VM (slots, bus, stage-2 root, image and device tree loaded)",
        INSNS,
        "VMs",
        None,
        Metric::Insns,
        1,
        false,
    ),
    row(
        "dirty-log",
        "dirty-log get-and-clear per 1,000 pages",
        INSNS,
        "pages",
        None,
        Metric::Insns,
        1000,
        false,
    ),
];

/// One `bench: <key>: <ops> ops, <exits> exits, <n> EL2 instructions, bracket <b>...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchLine {
    /// The bracket's (or measurement's) key.
    pub key: String,
    /// Operations inside the bracket.
    pub ops: u64,
    /// Exits to EL2 inside the bracket.
    pub exits: u64,
    /// Instructions retired at EL2 inside the bracket.
    pub insns: u64,
    /// The cost of an empty bracket, included in `insns` (0: metered inside the hypervisor).
    pub bracket: u64,
}

/// Reads a bench line; `None` for any other line. What follows the bracket's cost is ignored.
pub fn parse_line(line: &str) -> Option<BenchLine> {
    let rest = line.strip_prefix("bench: ")?;
    let key_len = rest
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    let (key, rest) = rest.split_at(key_len);
    if key.is_empty() {
        return None;
    }
    let rest = rest.strip_prefix(": ")?;
    let (ops, rest) = number(rest)?;
    let rest = rest.strip_prefix(" ops, ")?;
    let (exits, rest) = number(rest)?;
    let rest = rest.strip_prefix(" exits, ")?;
    let (insns, rest) = number(rest)?;
    let rest = rest.strip_prefix(" EL2 instructions, bracket ")?;
    let (bracket, _) = number(rest)?;
    Some(BenchLine {
        key: key.to_string(),
        ops,
        exits,
        insns,
        bracket,
    })
}

/// The decimal number `text` starts with, and what follows it.
fn number(text: &str) -> Option<(u64, &str)> {
    let len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let value = text[..len].parse().ok()?;
    Some((value, &text[len..]))
}

/// A run's bench lines: its name, and its output (`None`: it could not be read, with why).
pub struct RunOutput {
    /// The run's name (`blocks`, `pages`).
    pub name: String,
    /// Where its lines were read from, for messages.
    pub path: String,
    /// Its text, or `None` if the file could not be read.
    pub text: Option<String>,
}

/// The table's inputs besides the runs.
pub struct Context {
    /// QEMU's name and version, e.g. `QEMU 7.2.0`.
    pub machine: String,
    /// The hypervisor's commit (`git describe`).
    pub commit: String,
    /// The sentence on repeatability (without its full stop).
    pub repeat: String,
}

/// The report, and what was wrong (each a line for stderr, without the `bench.sh: ` prefix).
#[derive(Debug)]
pub struct Table {
    /// The Markdown report, ending with a newline.
    pub report: String,
    /// Missing rows, bad counts: the run failed if any.
    pub errors: Vec<String>,
}

/// `num` of the Python: two decimals at most, trailing zeros dropped, no `-0`.
pub fn num(v: f64) -> String {
    let text = fixed(v, 2);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Builds the table from the runs' lines: each row from the first run that printed its key.
pub fn build(runs: &[RunOutput], ctx: &Context) -> Table {
    build_rows(runs, ctx, ROWS)
}

/// [`build`] with other rows (for tests).
pub fn build_rows(runs: &[RunOutput], ctx: &Context, rows_wanted: &[Row]) -> Table {
    let mut seen: Vec<(String, BenchLine)> = Vec::new();
    let mut brackets: Vec<u64> = Vec::new();
    let mut errors = Vec::new();
    for run in runs {
        let Some(text) = &run.text else {
            errors.push(format!("run {}: no output ({})", run.name, run.path));
            continue;
        };
        for line in splitlines(text) {
            let Some(b) = parse_line(line) else { continue };
            if b.key == "calibrate" && !brackets.contains(&b.insns) {
                brackets.push(b.insns);
            }
            if !seen.iter().any(|(_, s)| s.key == b.key) {
                seen.push((run.name.clone(), b));
            }
        }
    }
    brackets.sort_unstable();

    let mut rows: Vec<[String; 6]> = Vec::new();
    for r in rows_wanted {
        let target = match r.target {
            None => "—".to_string(),
            Some(t) => format!("≤ {}", num(t)),
        };
        if let Metric::Sum(keys) = r.metric {
            let parts: Option<Vec<f64>> = keys
                .iter()
                .map(|k| {
                    let (_, n) = seen.iter().find(|(_, s)| s.key == *k)?;
                    (n.ops > 0).then(|| {
                        (i128::from(n.insns) - i128::from(n.bracket)) as f64 / n.ops as f64
                    })
                })
                .collect();
            let (value, sample) = match parts {
                Some(p) => (
                    num(p.iter().sum::<f64>()),
                    format!("sum of {}", keys.join(" and ")),
                ),
                None => {
                    errors.push(format!(
                        "bench {}: a part ({}) is missing",
                        r.key,
                        keys.join(", ")
                    ));
                    ("no data".to_string(), String::new())
                }
            };
            let result = match (r.target, parts_sum(&value)) {
                (Some(t), Some(v)) if v <= t => "met".to_string(),
                (Some(t), Some(v)) => {
                    format!("missed by {} (+{})", num(v - t), percent((v - t) / t, 0))
                }
                _ => "—".to_string(),
            };
            rows.push([r.label.into(), value, r.unit.into(), sample, target, result]);
            continue;
        }
        let Some((run, n)) = seen.iter().find(|(_, s)| s.key == r.key) else {
            errors.push(format!("no `bench: {}:` line in any run", r.key));
            rows.push([
                r.label.into(),
                "no data".into(),
                r.unit.into(),
                String::new(),
                target,
                String::new(),
            ]);
            continue;
        };
        if n.ops == 0 {
            errors.push(format!("bench {}: 0 operations", r.key));
            continue;
        }
        if r.one_exit && n.exits != n.ops {
            errors.push(format!(
                "bench {} (run {run}): {} exits for {} operations: something else exited inside \
                 the bracket, so its cost would be counted",
                r.key, n.exits, n.ops
            ));
        }
        let value = match r.metric {
            Metric::Insns => {
                (i128::from(n.insns) - i128::from(n.bracket)) as f64 / n.ops as f64
                    * f64::from(r.scale)
            }
            Metric::Exits => n.exits as f64 / n.ops as f64 * f64::from(r.scale),
            Metric::Sum(_) => unreachable!("sums are made above"),
        };
        let mut sample = format!("{} {}", n.ops, r.noun);
        if r.metric == Metric::Exits {
            sample += &format!(", {} faults", n.exits);
        }
        let result = match r.target {
            None => "—".to_string(),
            Some(t) if value <= t => "met".to_string(),
            Some(t) => format!(
                "missed by {} (+{})",
                num(value - t),
                percent((value - t) / t, 0)
            ),
        };
        rows.push([
            r.label.into(),
            num(value),
            r.unit.into(),
            sample,
            target,
            result,
        ]);
    }

    let mut text = String::from(
        "| measurement | value | unit | sample | target | result |\n| --- | ---: | --- | --- | --- | --- |",
    );
    for r in &rows {
        text += &format!("\n| {} |", r.join(" | "));
    }
    let bracket = if brackets.is_empty() {
        "not measured".to_string()
    } else {
        brackets
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let report = format!(
        "## hyp: EL2 instructions per exit and per fault

{machine}, `-icount shift=0,sleep=off`, `-machine virt,virtualization=on,gic-version=3 -cpu cortex-a72`,
one vCPU (two for the IPI rows, each bracket on its own vCPU); hyp {commit}. Instructions retired at EL2 (PMU event `INST_RETIRED`, counted at EL2 only),
from the exception vector to `eret`, per operation; the bracket's own cost ({bracket} instructions)
subtracted. The dirty-log row is one get-and-clear alone (take the bitmap words, write-protect each
run of dirty pages with a shared walk, one TLB invalidation), metered inside the hypervisor, per
1,000 pages taken.

{text}

{repeat}.
",
        machine = ctx.machine,
        commit = ctx.commit,
        repeat = ctx.repeat,
    );
    Table { report, errors }
}

/// A value as [`num`] wrote it, back as a number (`None` for "no data").
fn parts_sum(text: &str) -> Option<f64> {
    text.parse().ok()
}

/// The two passes' lines of one run.
pub struct Passes {
    /// The run's name.
    pub name: String,
    /// The first pass's lines file.
    pub first: std::path::PathBuf,
    /// The second pass's.
    pub second: std::path::PathBuf,
}

/// Compares each run's two passes: the repeatability sentence, and for every run whose counts
/// differ, a message (a line, then the lines' differences as `diff` prints them, indented).
pub fn compare_passes(runs: &[Passes]) -> (String, Vec<String>) {
    let mut repeat = "two passes: identical counts".to_string();
    let mut messages = Vec::new();
    for run in runs {
        let a = std::fs::read(&run.first);
        let b = std::fs::read(&run.second);
        if let (Ok(a), Ok(b)) = (&a, &b) {
            if a == b {
                continue;
            }
        }
        let mut msg = format!("run {} gave different counts in the two passes:", run.name);
        match (&a, &b) {
            (Ok(a), Ok(b)) => {
                let a = String::from_utf8_lossy(a);
                let b = String::from_utf8_lossy(b);
                // Indented as `sed 's/^/    /'` did: a \r ending a line stays.
                for line in diff::normal(&a, &b).trim_end_matches('\n').split('\n') {
                    msg += &format!("\n    {line}");
                }
            }
            (Err(e), _) => msg += &format!("\n    {}: {e}", run.first.display()),
            (_, Err(e)) => msg += &format!("\n    {}: {e}", run.second.display()),
        }
        messages.push(msg);
        repeat = format!("two passes: counts DIFFER (run {})", run.name);
    }
    (repeat, messages)
}

/// The sentence when only one pass was made (or the second could not be compared).
pub const ONE_PASS: &str = "one pass (--once): repeatability not checked";

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, text: &str) -> RunOutput {
        RunOutput {
            name: name.into(),
            path: format!("{name}.lines"),
            text: Some(text.into()),
        }
    }

    fn ctx() -> Context {
        Context {
            machine: "QEMU 7.2.0".into(),
            commit: "abc1234".into(),
            repeat: ONE_PASS.into(),
        }
    }

    const HVC: &str = "bench: calibrate: 0 ops, 0 exits, 145 EL2 instructions, bracket 145\n\
        bench: hvc: 1000 ops, 1000 exits, 114145 EL2 instructions, bracket 145: 114.0 per op\n";

    fn only(key: &str) -> Vec<Row> {
        ROWS.iter().filter(|r| r.key == key).copied().collect()
    }

    #[test]
    fn parses_a_bench_line() {
        let line = "bench: fault-4k: 512 ops, 512 exits, 482079 EL2 instructions, bracket 145: 941.3 per op";
        assert_eq!(
            parse_line(line),
            Some(BenchLine {
                key: "fault-4k".into(),
                ops: 512,
                exits: 512,
                insns: 482079,
                bracket: 145
            })
        );
    }

    #[test]
    fn ignores_other_lines() {
        for line in [
            "",
            "[vm0/vcpu0] guest: bench: done",
            " bench: hvc: 1 ops, 1 exits, 1 EL2 instructions, bracket 1",
            "bench: HVC: 1 ops, 1 exits, 1 EL2 instructions, bracket 1",
            "bench: hvc: 1 ops, 1 exits, 1 EL2 instructions, bracket ",
            "bench: hvc: x ops, 1 exits, 1 EL2 instructions, bracket 1",
            "bench: benchmark hypercalls on (bench=on)",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn value_is_per_operation_without_the_bracket() {
        let t = build_rows(&[run("blocks", HVC)], &ctx(), &only("hvc"));
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert!(t.report.contains("| HVC round trip (null hypercall) | 114 | EL2 instructions | 1000 calls | ≤ 150 | met |"));
        assert!(t
            .report
            .contains("the bracket's own cost (145 instructions)"));
        assert!(t
            .report
            .ends_with("\n\none pass (--once): repeatability not checked.\n"));
    }

    #[test]
    fn a_missed_target_is_reported_not_an_error() {
        let text = "bench: hvc: 10 ops, 10 exits, 2145 EL2 instructions, bracket 145\n";
        let t = build_rows(&[run("blocks", text)], &ctx(), &only("hvc"));
        assert!(t.errors.is_empty());
        assert!(
            t.report
                .contains("| 200 | EL2 instructions | 10 calls | ≤ 150 | missed by 50 (+33%) |"),
            "{}",
            t.report
        );
    }

    #[test]
    fn a_missing_row_is_an_error_and_says_no_data() {
        let t = build(&[run("blocks", HVC)], &ctx());
        assert!(t
            .errors
            .contains(&"no `bench: fault-4k:` line in any run".to_string()));
        assert!(
            t.report
                .contains("| lazy fault, 4K page | no data | EL2 instructions |  | ≤ 1000 |  |"),
            "{}",
            t.report
        );
        assert!(t
            .report
            .contains("| access-flag fault, 4K page | no data | EL2 instructions |  | — |  |"));
        assert_eq!(t.errors.len(), ROWS.len() - 1);
    }

    #[test]
    fn an_unreadable_run_is_an_error() {
        let runs = [RunOutput {
            name: "pages".into(),
            path: "/nonexistent".into(),
            text: None,
        }];
        let t = build_rows(&runs, &ctx(), &[]);
        assert_eq!(t.errors, ["run pages: no output (/nonexistent)"]);
        assert!(t
            .report
            .contains("the bracket's own cost (not measured instructions)"));
    }

    #[test]
    fn a_bracket_with_the_wrong_number_of_exits_is_an_error() {
        let text = "bench: fault-2m: 16 ops, 17 exits, 14161 EL2 instructions, bracket 145\n";
        let t = build_rows(&[run("blocks", text)], &ctx(), &only("fault-2m"));
        assert_eq!(
            t.errors,
            [
                "bench fault-2m (run blocks): 17 exits for 16 operations: something else exited \
              inside the bracket, so its cost would be counted"
            ]
        );
        // The row is still shown.
        assert!(t.report.contains("| lazy fault, 2M block | 876 |"));
    }

    #[test]
    fn fewer_exits_than_operations_are_fine_where_not_one_per_operation() {
        let text = "bench: touch-blocks: 16 ops, 8 exits, 7153 EL2 instructions, bracket 145\n";
        let t = build_rows(&[run("blocks", text)], &ctx(), &only("touch-blocks"));
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert!(t.report.contains("| faults per MiB touched, blocks enabled (default) | 0.5 | faults | 16 MiB, 8 faults | ≤ 0.5 | met |"));
    }

    #[test]
    fn zero_operations_drop_the_row() {
        let text = "bench: hvc: 0 ops, 0 exits, 145 EL2 instructions, bracket 145\n";
        let t = build_rows(&[run("blocks", text)], &ctx(), &only("hvc"));
        assert_eq!(t.errors, ["bench hvc: 0 operations"]);
        assert!(!t.report.contains("HVC round trip"));
    }

    #[test]
    fn the_first_run_that_printed_a_key_wins() {
        let a = "bench: hvc: 10 ops, 10 exits, 1145 EL2 instructions, bracket 145\n\
                 bench: hvc: 10 ops, 10 exits, 9145 EL2 instructions, bracket 145\n";
        let b = "bench: hvc: 10 ops, 10 exits, 5145 EL2 instructions, bracket 145\n";
        let t = build_rows(&[run("blocks", a), run("pages", b)], &ctx(), &only("hvc"));
        assert!(t
            .report
            .contains("| HVC round trip (null hypercall) | 100 |"));
    }

    #[test]
    fn every_calibration_is_listed_once_in_order() {
        let a = "bench: calibrate: 0 ops, 0 exits, 150 EL2 instructions, bracket 150\n";
        let b = "bench: calibrate: 0 ops, 0 exits, 145 EL2 instructions, bracket 145\n\
                 bench: calibrate: 0 ops, 0 exits, 150 EL2 instructions, bracket 150\n";
        let t = build_rows(&[run("blocks", a), run("pages", b)], &ctx(), &[]);
        assert!(t
            .report
            .contains("the bracket's own cost (145, 150 instructions)"));
    }

    #[test]
    fn num_drops_zeros_and_negative_zero() {
        assert_eq!(num(150.0), "150");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(941.28125), "941.28");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(1000.0), "1000");
    }

    fn passes(dir: &std::path::Path, name: &str, a: &str, b: &str) -> Passes {
        let first = dir.join(format!("{name}.1.lines"));
        let second = dir.join(format!("{name}.2.lines"));
        std::fs::write(&first, a).unwrap();
        std::fs::write(&second, b).unwrap();
        Passes {
            name: name.into(),
            first,
            second,
        }
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn identical_passes() {
        let dir = temp_dir("same");
        let runs = [
            passes(&dir, "blocks", HVC, HVC),
            passes(&dir, "pages", "", ""),
        ];
        assert_eq!(
            compare_passes(&runs),
            ("two passes: identical counts".to_string(), vec![])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn two_passes_that_differ() {
        let dir = temp_dir("differ");
        let other = HVC.replace("114145", "114146");
        let runs = [
            passes(&dir, "blocks", HVC, &other),
            passes(&dir, "pages", HVC, HVC),
        ];
        let (repeat, messages) = compare_passes(&runs);
        assert_eq!(repeat, "two passes: counts DIFFER (run blocks)");
        assert_eq!(
            messages,
            ["run blocks gave different counts in the two passes:\n    2c2\n    \
              < bench: hvc: 1000 ops, 1000 exits, 114145 EL2 instructions, bracket 145: 114.0 per op\n    \
              ---\n    \
              > bench: hvc: 1000 ops, 1000 exits, 114146 EL2 instructions, bracket 145: 114.0 per op"]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_second_pass_differs() {
        let dir = temp_dir("missing");
        let mut run = passes(&dir, "pages", HVC, HVC);
        run.second = dir.join("nonexistent");
        let (repeat, messages) = compare_passes(&[run]);
        assert_eq!(repeat, "two passes: counts DIFFER (run pages)");
        assert_eq!(messages.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The rows of `base`'s lines that `other`'s lines have too, side by side (per operation, as
/// the table computes them), with the change: the same brackets in two settings. Keys in the
/// order of [`ROWS`], but those in `skip`; `what` names the second setting.
pub fn compare(base: &str, other: &str, what: &str, skip: &[&str]) -> String {
    let per_op = |text: &str, r: &Row| {
        splitlines(text)
            .into_iter()
            .filter_map(parse_line)
            .find(|b| b.key == r.key && b.ops > 0)
            .map(|b| {
                (i128::from(b.insns) - i128::from(b.bracket)) as f64 / b.ops as f64
                    * f64::from(r.scale)
            })
    };
    let mut out =
        format!("| measurement | one VM | {what} | change |\n| --- | ---: | ---: | ---: |\n");
    for r in ROWS
        .iter()
        .filter(|r| r.metric == Metric::Insns && !skip.contains(&r.key))
    {
        if let (Some(a), Some(b)) = (per_op(base, r), per_op(other, r)) {
            out += &format!(
                "| {} | {} | {} | {} |\n",
                r.label,
                num(a),
                num(b),
                if a == 0.0 {
                    "—".to_string()
                } else {
                    format!(
                        "{}{}",
                        if b >= a { "+" } else { "" },
                        percent((b - a) / a, 1)
                    )
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod compare_tests {
    use super::*;

    #[test]
    fn side_by_side() {
        let a = "bench: calibrate: 0 ops, 0 exits, 100 EL2 instructions, bracket 100\nbench: hvc: 10 ops, 10 exits, 1100 EL2 instructions, bracket 100\nbench: fault-2m: 2 ops, 2 exits, 2100 EL2 instructions, bracket 100\n";
        let b = "bench: hvc: 10 ops, 10 exits, 1110 EL2 instructions, bracket 100\n";
        let t = compare(a, b, "beside a busy VM", &[]);
        assert!(
            t.starts_with("| measurement | one VM | beside a busy VM | change |\n"),
            "{t}"
        );
        assert!(
            t.contains("| HVC round trip (null hypercall) | 100 | 101 | +1.0% |"),
            "{t}"
        );
        assert!(!t.contains("fault"), "only rows both have: {t}");
        assert!(!compare(a, b, "x", &["hvc"]).contains("HVC"), "skipped");
    }
}
