//! The subcommands on tests/data: the output and status the Python they replaced gave, and
//! since then what the rows added after it give (tests/data/README.md).

use std::path::{Path, PathBuf};
use std::process::Command;

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir)
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `xtask ARGS` in `dir`: (exit status, stdout, stderr).
fn xtask(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A fresh scratch directory for a test's output files.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-fixtures-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bench_table(tag: &str, runs: &[&str]) -> (i32, String, String, String) {
    let out = scratch(tag).join("report.md");
    let out_arg = out.to_str().unwrap();
    let mut args = vec![
        "bench-table",
        "--out",
        out_arg,
        "--machine",
        "QEMU 7.2.22",
        "--commit",
        "366b775",
    ];
    args.extend(runs);
    let (status, stdout, stderr) = xtask(&data("bench"), &args);
    let report = read(&out);
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
    (status, stdout, stderr, report)
}

#[test]
fn bench_table_as_the_python_wrote_it() {
    let (status, stdout, stderr, report) = bench_table(
        "ok",
        &["blocks=blocks.lines", "pages=pages.lines", "irq=irq.lines"],
    );
    let expected = read(data("bench/report.md"));
    assert_eq!((status, stderr.as_str()), (0, ""));
    assert_eq!(report, expected);
    assert_eq!(stdout, expected);
}

#[test]
fn bench_table_wrong_exits_and_no_operations() {
    let (status, stdout, stderr, report) = bench_table(
        "bad",
        &[
            "blocks=blocks.lines",
            "pages=pages-bad.lines",
            "irq=irq.lines",
        ],
    );
    assert_eq!(status, 1);
    assert_eq!(stderr, read(data("bench/bad.err")));
    assert_eq!(report, read(data("bench/report-bad.md")));
    assert_eq!(stdout, report);
}

#[test]
fn bench_table_two_passes_that_differ() {
    let runs = [
        "blocks=blocks.lines",
        "pages=pages.lines",
        "irq=irq.lines",
        "--pass2",
        "blocks=blocks-2.lines",
        "--pass2",
        "pages=pages.lines",
        "--pass2",
        "irq=irq.lines",
    ];
    let (status, stdout, stderr, report) = bench_table("differ", &runs);
    assert_eq!(status, 1);
    assert_eq!(stderr, read(data("bench/differ.err")));
    assert_eq!(report, read(data("bench/report-differ.md")));
    assert_eq!(stdout, report);
}

#[test]
fn bench_table_two_identical_passes() {
    let runs = [
        "blocks=blocks.lines",
        "pages=pages.lines",
        "irq=irq.lines",
        "--pass2",
        "blocks=blocks.lines",
        "--pass2",
        "pages=pages.lines",
        "--pass2",
        "irq=irq.lines",
    ];
    let (status, _, stderr, report) = bench_table("same", &runs);
    assert_eq!((status, stderr.as_str()), (0, ""));
    let expected = read(data("bench/report.md")).replace(
        "one pass (--once): repeatability not checked.",
        "two passes: identical counts.",
    );
    assert_eq!(report, expected);
}

#[test]
fn bench_table_missing_row_and_missing_run() {
    let (status, _, stderr, report) = bench_table(
        "missing",
        &[
            "blocks=blocks.lines",
            "pages=nonexistent.lines",
            "irq=irq.lines",
        ],
    );
    assert_eq!(status, 1);
    assert!(stderr.starts_with("bench.sh: run pages: no output (nonexistent.lines)\nbench.sh: no `bench: fault-4k:` line in any run\n"), "{stderr}");
    assert!(
        report.contains("| lazy fault, 4K page | no data | EL2 instructions |  | ≤ 1000 |  |\n"),
        "{report}"
    );
    assert!(report.contains(
        "| lazy fault, 2M block | 876 | EL2 instructions | 16 faults | ≤ 1000 | met |\n"
    ));
}

#[test]
fn bench_profile_as_the_python_wrote_it() {
    let args = [
        "bench-profile",
        "--nm",
        "nm.txt",
        "hyp",
        "run.log",
        "trace.txt",
    ];
    let (status, stdout, stderr) = xtask(&data("profile"), &args);
    assert_eq!((status, stderr.as_str()), (0, ""));
    assert_eq!(stdout, read(data("profile/expected.md")));
}

#[test]
fn bench_profile_bracket_count_mismatch() {
    let args = [
        "bench-profile",
        "--nm",
        "nm.txt",
        "hyp",
        "run-extra-bracket.log",
        "trace.txt",
    ];
    let (status, stdout, stderr) = xtask(&data("profile"), &args);
    assert_eq!((status, stdout.as_str()), (1, ""));
    assert_eq!(stderr, read(data("profile/extra-bracket.err")));
}

#[test]
fn bench_ratios_as_the_python_wrote_it() {
    let expected = read(data("ratios/expected.txt"));
    assert_eq!(
        xtask(&data("ratios"), &["bench-ratios", "criterion"]),
        (0, expected.clone(), String::new())
    );
    assert_eq!(
        xtask(&data("ratios"), &["bench-ratios", "--check", "criterion"]),
        (1, expected, String::new())
    );
}

#[test]
fn bench_ratios_without_results() {
    let (status, stdout, stderr) = xtask(&data("ratios"), &["bench-ratios", "nonexistent"]);
    assert_eq!((status, stdout.as_str()), (1, ""));
    assert_eq!(
        stderr,
        "no criterion output in nonexistent: run the walker benchmark first\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["bench-profile", "a"],
        &["bench-table", "x=y"],
        &["bench-ratios"],
    ] {
        let (status, _, stderr) = xtask(&data("."), args);
        assert_eq!(status, 2, "{args:?}: {stderr}");
    }
}
