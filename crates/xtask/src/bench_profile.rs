//! Where the EL2 instructions of each benchmark bracket go, by function (`bench-profile`).
//!
//! From QEMU's exec trace of a bench run, the ELF's symbols (`nm -n -C` output) and the run's
//! `bench:` lines.

use crate::pyfmt::{fixed, splitlines, universal_newlines};
use std::collections::HashMap;
use std::io::BufRead;

/// Functions listed per bracket; the rest are summed as "(others)".
pub const TOP: usize = 16;

/// The symbols an exit is recognised by.
const VECTORS: &str = "exception_vectors";
const READ_PMU: &str = "hyp::arch::pmu::read_evcntr";
const REPORT: &str = "hyp::jobs::bench::report";
/// From `exception_vectors`, the vector for synchronous exceptions from a lower EL.
const LOWER_EL_SYNC: u64 = 0x400;

/// The ELF's code symbols (types t, T, w, W), sorted by address, names without their hash.
pub struct Symbols {
    /// (address, index in `names`), in `nm -n` order.
    syms: Vec<(u64, usize)>,
    /// Distinct names.
    names: Vec<String>,
}

impl Symbols {
    /// Reads `nm -n -C` output. An address that is not hexadecimal is an error.
    pub fn from_nm(text: &str) -> Result<Symbols, String> {
        let mut syms = Vec::new();
        let mut names = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for line in splitlines(text) {
            let mut parts = line.splitn(3, ' ');
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if !"tTwW".contains(kind) {
                continue;
            }
            let addr = u64::from_str_radix(addr, 16)
                .map_err(|_| format!("nm: not an address: {addr:?} in {line:?}"))?;
            let name = strip_hash(name);
            let id = *ids.entry(name.to_string()).or_insert_with(|| {
                names.push(name.to_string());
                names.len() - 1
            });
            syms.push((addr, id));
        }
        Ok(Symbols { syms, names })
    }

    /// The address of the last symbol named `name`.
    pub fn address(&self, name: &str) -> Option<u64> {
        self.syms
            .iter()
            .rev()
            .find(|&&(_, id)| self.names[id] == name)
            .map(|&(a, _)| a)
    }

    /// The function `pc` is in (the last symbol at or below it), as an index in
    /// [`Symbols::name`]; `None` below the first symbol.
    pub fn function(&self, pc: u64) -> Option<usize> {
        let i = self.syms.partition_point(|&(a, _)| a <= pc);
        i.checked_sub(1).map(|i| self.syms[i].1)
    }

    /// A function's name.
    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    /// How many distinct names there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A Rust symbol's name without the `::h<16 hex digits>` hash that ends it.
fn strip_hash(name: &str) -> &str {
    if let Some(i) = name.len().checked_sub(19) {
        if let Some(hash) = name.get(i..).and_then(|s| s.strip_prefix("::h")) {
            if hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return &name[..i];
            }
        }
    }
    name
}

/// The keys of the bracketed measurements in a run's console output, in order. One metered
/// inside the hypervisor (no BENCH_START, `bracket 0`, e.g. dirty-log) has no bracket in the
/// trace.
pub fn bracket_keys(runlog: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for line in universal_newlines(runlog).split('\n') {
        let Some(rest) = line.strip_prefix("bench: ") else {
            continue;
        };
        let key_len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        if key_len == 0 || !rest[key_len..].starts_with(": ") {
            continue;
        }
        // The last "bracket <digits>" of the line (the pattern's `.*` is greedy).
        let after = &rest[key_len + 2..];
        let bracket = after.rmatch_indices("bracket ").find_map(|(i, m)| {
            let digits = &after[i + m.len()..];
            let len = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            (len > 0).then(|| &digits[..len])
        });
        if let Some(bracket) = bracket {
            if bracket != "0" {
                keys.push(rest[..key_len].to_string());
            }
        }
    }
    keys
}

/// One exit to EL2 in the trace: from the lower-EL synchronous vector to the next.
#[derive(Default, Debug)]
pub struct Exit {
    /// It read the PMU (a BENCH_START, or the BENCH_STOP that reports).
    pub read_pmu: bool,
    /// It reported a bracket (BENCH_STOP).
    pub reported: bool,
    /// Instructions by function (index in [`Symbols`], or `None` below every symbol), in the
    /// order functions were first seen.
    pub counts: Vec<(Option<usize>, u64)>,
}

impl Exit {
    fn count(&mut self, f: Option<usize>) {
        match self.counts.iter_mut().find(|(g, _)| *g == f) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((f, 1)),
        }
    }
}

/// The program counter of a trace line: the second field of its first `[hex/hex/`.
pub fn trace_pc(line: &[u8]) -> Option<u64> {
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    let mut from = 0;
    while let Some(open) = line[from..].iter().position(|&b| b == b'[') {
        let start = from + open + 1;
        from = start;
        let first = line[start..].iter().take_while(|b| hex(b)).count();
        if first == 0 || line.get(start + first) != Some(&b'/') {
            continue;
        }
        let pc_start = start + first + 1;
        let len = line[pc_start..].iter().take_while(|b| hex(b)).count();
        if len == 0 || line.get(pc_start + len) != Some(&b'/') {
            continue;
        }
        let pc = line[pc_start..pc_start + len].iter().fold(0u64, |acc, &b| {
            let d = (b as char).to_digit(16).expect("a hex digit") as u64;
            acc.saturating_mul(16).saturating_add(d)
        });
        return Some(pc);
    }
    None
}

/// Reads a trace: the exits in order, with what each ran. Instructions before the first exit
/// (boot) are not counted.
pub fn read_trace(trace: impl BufRead, syms: &Symbols) -> Result<Vec<Exit>, String> {
    let vector = syms.address(VECTORS).ok_or(VECTORS)? + LOWER_EL_SYNC;
    let read = syms.address(READ_PMU).ok_or(READ_PMU)?;
    let report = syms.address(REPORT).ok_or(REPORT)?;
    let mut exits: Vec<Exit> = Vec::new();
    let mut functions: HashMap<u64, Option<usize>> = HashMap::new();
    for line in trace.split(b'\n') {
        let line = line.map_err(|e| format!("reading the trace: {e}"))?;
        // Text mode: a lone \r ends a line too.
        for line in line.split(|&b| b == b'\r') {
            let Some(pc) = trace_pc(line) else { continue };
            if pc == vector {
                exits.push(Exit::default());
            }
            let Some(exit) = exits.last_mut() else {
                continue;
            };
            if pc == read {
                exit.read_pmu = true;
            } else if pc == report {
                exit.reported = true;
            }
            let f = *functions.entry(pc).or_insert_with(|| syms.function(pc));
            exit.count(f);
        }
    }
    Ok(exits)
}

/// The brackets, as (index of the exit that started it, index of the one that reported it):
/// a bracket starts at the last exit that read the PMU without reporting, and ends at the next
/// that reported.
pub fn brackets(exits: &[Exit]) -> Vec<(usize, usize)> {
    let mut brackets = Vec::new();
    let mut start = None;
    for (i, e) in exits.iter().enumerate() {
        if e.reported && start.is_some() {
            brackets.push((start.take().expect("checked"), i));
        } else if e.read_pmu && !e.reported {
            start = Some(i);
        }
    }
    brackets
}

/// The profile: for each bracket with exits inside, the instructions per exit by function.
pub fn render(
    keys: &[String],
    exits: &[Exit],
    brackets: &[(usize, usize)],
    syms: &Symbols,
) -> String {
    let mut out = String::new();
    for (key, &(a, b)) in keys.iter().zip(brackets) {
        let inside = &exits[a + 1..b];
        if inside.is_empty() {
            continue;
        }
        let mut total = Exit::default();
        for e in inside {
            for &(f, n) in &e.counts {
                match total.counts.iter_mut().find(|(g, _)| *g == f) {
                    Some((_, m)) => *m += n,
                    None => total.counts.push((f, n)),
                }
            }
        }
        // Python's Counter keys by name: merge functions of the same name (the `?` below
        // every symbol too).
        let name = |f: Option<usize>| f.map_or("?", |f| syms.name(f));
        let mut by_name: Vec<(&str, u64)> = Vec::new();
        for &(f, n) in &total.counts {
            match by_name.iter_mut().find(|(g, _)| *g == name(f)) {
                Some((_, m)) => *m += n,
                None => by_name.push((name(f), n)),
            }
        }
        let n = inside.len() as f64;
        let sum: u64 = by_name.iter().map(|&(_, c)| c).sum();
        out += &format!(
            "### {key}: {} exits, {} EL2 instructions per exit\n\n",
            inside.len(),
            fixed(sum as f64 / n, 1)
        );
        out += "| per exit | function |\n|---:|---|\n";
        let mut top = by_name.clone();
        top.sort_by_key(|&(_, c)| std::cmp::Reverse(c)); // stable: ties in the order first seen
        top.truncate(TOP);
        for &(f, c) in &top {
            out += &format!("| {} | `{f}` |\n", fixed(c as f64 / n, 1));
        }
        let rest = sum - top.iter().map(|&(_, c)| c).sum::<u64>();
        if rest != 0 {
            out += &format!("| {} | (others) |\n", fixed(rest as f64 / n, 1));
        }
        out += "\n";
    }
    out
}

/// The whole profile of a run: `nm` output, console output, trace. Errors are messages for
/// stderr (without the script's name).
pub fn profile(
    nm: &str,
    runlog: &str,
    runlog_name: &str,
    elf_name: &str,
    trace: impl BufRead,
) -> Result<String, String> {
    let syms = Symbols::from_nm(nm)?;
    for needed in [VECTORS, READ_PMU, REPORT] {
        if syms.address(needed).is_none() {
            return Err(format!("no symbol {needed} in {elf_name}"));
        }
    }
    let keys = bracket_keys(runlog);
    let exits = read_trace(trace, &syms)?;
    let brackets = brackets(&exits);
    if brackets.len() != keys.len() {
        return Err(format!(
            "{} brackets in the trace, {} in {runlog_name}",
            brackets.len(),
            keys.len()
        ));
    }
    Ok(render(&keys, &exits, &brackets, &syms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NM: &str = "\
0000000040080000 T _start
0000000040081000 T exception_vectors
0000000040082000 t trap_common
0000000040082100 t hyp::arch::exception::handle_exception::h0123456789abcdef
0000000040082800 t hyp::arch::pmu::read_evcntr::h1111111111111111
0000000040082900 t hyp::jobs::bench::report::h2222222222222222
0000000040083000 t pgtable::walker::Walk<M,V>::run::h3333333333333333
0000000040083800 t pgtable::walker::Walk<M,V>::run::h4444444444444444
0000000040084000 r some_rodata
0000000040085000 W weak_fn
";

    fn syms() -> Symbols {
        Symbols::from_nm(NM).unwrap()
    }

    fn line(pc: u64) -> String {
        format!("Trace 0: 0x7f00 [0000000000000000/{pc:016x}/00000061/ff020201] \n")
    }

    const VEC: u64 = 0x40081400;
    const TRAP: u64 = 0x40082000;
    const HANDLE: u64 = 0x40082104;
    const READ: u64 = 0x40082800;
    const REPORT: u64 = 0x40082900;
    const WALK1: u64 = 0x40083010;
    const WALK2: u64 = 0x40083810;

    /// One exit: the vector, then the given functions' instructions.
    fn exit(pcs: &[u64]) -> String {
        std::iter::once(VEC)
            .chain(pcs.iter().copied())
            .map(line)
            .collect()
    }

    #[test]
    fn symbols_lose_their_hash_and_keep_code_only() {
        let s = syms();
        assert_eq!(s.address("hyp::arch::pmu::read_evcntr"), Some(READ));
        assert_eq!(s.address("some_rodata"), None);
        assert_eq!(
            s.function(0x40084010).map(|f| s.name(f)),
            Some("pgtable::walker::Walk<M,V>::run")
        );
        assert_eq!(s.function(0x40085000).map(|f| s.name(f)), Some("weak_fn"));
        assert_eq!(s.function(0x1000), None);
        assert_eq!(strip_hash("a::h0123456789abcdeg"), "a::h0123456789abcdeg");
        assert_eq!(strip_hash("::h0123456789abcdef"), "");
    }

    #[test]
    fn a_bad_address_is_an_error() {
        assert!(Symbols::from_nm("zzzz T foo\n").is_err());
    }

    #[test]
    fn pc_is_the_second_field() {
        assert_eq!(trace_pc(line(0x40082104).as_bytes()), Some(0x40082104));
        assert_eq!(trace_pc(b"Trace [x] [12/ab/"), Some(0xab));
        assert_eq!(trace_pc(b"Trace [12/ab"), None);
        assert_eq!(
            trace_pc(b"Linking TBs 0x1 [40080000] index 0 -> 0x2 [40080040]"),
            None
        );
    }

    #[test]
    fn keys_skip_measurements_without_a_bracket() {
        let log = "bench: calibrate: 0 ops, 0 exits, 145 EL2 instructions, bracket 145\n\
                   [vm0] guest: bench: warm\r\n\
                   bench: hvc: 2 ops, 2 exits, 300 EL2 instructions, bracket 145: 150.0 per op\n\
                   bench: dirty-log: 1025 ops, 0 exits, 45540 EL2 instructions, bracket 0: 44.4 per op\n";
        assert_eq!(bracket_keys(log), ["calibrate", "hvc"]);
    }

    /// calibrate (empty), then hvc with two exits, each a mix of functions.
    fn trace() -> String {
        [
            exit(&[TRAP, HANDLE, READ]),         // BENCH_START
            exit(&[TRAP, HANDLE, READ, REPORT]), // BENCH_STOP: calibrate, no exits inside
            exit(&[TRAP, HANDLE, READ]),         // BENCH_START
            exit(&[TRAP, HANDLE, HANDLE, WALK1]),
            exit(&[TRAP, WALK2, WALK2, HANDLE]),
            exit(&[TRAP, READ, REPORT]), // BENCH_STOP: hvc
        ]
        .concat()
    }

    const LOG: &str = "bench: calibrate: 0 ops, 0 exits, 10 EL2 instructions, bracket 10\n\
                       bench: hvc: 2 ops, 2 exits, 20 EL2 instructions, bracket 10\n";

    #[test]
    fn profile_per_exit_by_function() {
        let out = profile(NM, LOG, "run.log", "hyp", trace().as_bytes()).unwrap();
        assert_eq!(
            out,
            "### hvc: 2 exits, 5.0 EL2 instructions per exit\n\n\
             | per exit | function |\n|---:|---|\n\
             | 1.5 | `hyp::arch::exception::handle_exception` |\n\
             | 1.5 | `pgtable::walker::Walk<M,V>::run` |\n\
             | 1.0 | `exception_vectors` |\n\
             | 1.0 | `trap_common` |\n\n"
        );
    }

    #[test]
    fn a_bracket_count_that_does_not_match_the_log_is_an_error() {
        let log =
            format!("{LOG}bench: fault-4k: 1 ops, 1 exits, 20 EL2 instructions, bracket 10\n");
        assert_eq!(
            profile(NM, &log, "run.log", "hyp", trace().as_bytes()),
            Err("2 brackets in the trace, 3 in run.log".to_string())
        );
    }

    #[test]
    fn a_missing_symbol_is_an_error() {
        let nm = NM.replace("hyp::jobs::bench::report", "hyp::jobs::bench::other");
        assert_eq!(
            profile(&nm, LOG, "run.log", "hyp", trace().as_bytes()),
            Err("no symbol hyp::jobs::bench::report in hyp".to_string())
        );
    }

    #[test]
    fn more_than_top_functions_sum_as_others() {
        let mut nm = String::from(NM);
        let mut pcs = vec![TRAP];
        for i in 0..TOP as u64 + 2 {
            let addr = 0x40090000 + i * 0x100;
            nm += &format!("{addr:016x} t f{i}\n");
            pcs.extend(std::iter::repeat_n(addr, if i < 3 { 5 } else { 1 }));
        }
        let t = [exit(&[READ]), exit(&pcs), exit(&[READ, REPORT])].concat();
        let log = "bench: x: 1 ops, 1 exits, 1 EL2 instructions, bracket 1\n";
        let out = profile(&nm, log, "run.log", "hyp", t.as_bytes()).unwrap();
        assert!(
            out.starts_with("### x: 1 exits, 32.0 EL2 instructions per exit\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "| 5.0 | `f0` |\n| 5.0 | `f1` |\n| 5.0 | `f2` |\n\
                 | 1.0 | `exception_vectors` |\n| 1.0 | `trap_common` |\n| 1.0 | `f3` |\n"
            ),
            "{out}"
        );
        assert!(
            out.ends_with("| 1.0 | `f13` |\n| 4.0 | (others) |\n\n"),
            "{out}"
        );
    }
}
