//! `cargo xtask <subcommand>`: the host-side helpers scripts/ calls (see `cargo xtask help`).

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{exit, Command};
use xtask::cpio::{self, Entry};
use xtask::{bench_profile, bench_ratios, bench_table};

const USAGE: &str = "\
usage: cargo xtask <subcommand> [args...]

  bench-table --out FILE --machine TEXT --commit TEXT [--pass2 RUN=LINES]... RUN=LINES...
      scripts/bench.sh's table: from each run's `bench: <key>:` lines (pass 1), write the
      report to FILE and print it; with --pass2, first check that each run's second pass
      printed the same lines. Exit 1 if a row is missing, a bracket saw exits other than its
      operations', or the passes differ.
  bench-compare --base LINES --other LINES --what TEXT [--skip KEY,KEY...]
      The rows two runs of the benchmark guest both printed (but the keys skipped), per
      operation, side by side (one VM, and `TEXT`: e.g. beside a busy VM).
  bench-profile [--nm FILE] ELF RUNLOG TRACE
      scripts/bench-profile.sh: per bracket, the EL2 instructions per exit by function, from
      QEMU's exec trace (a file or FIFO), the run's console output and the ELF's symbols
      (`nm -n -C ELF`, or that output saved in FILE).
  bench-ratios [--check] CRITERION_DIR
      scripts/bench-ratios.sh: the walker against aarch64-paging from criterion's results;
      with --check, exit 1 if a headline ratio is below 1.5 (or missing).
  text-range ELF
      The hypervisor's text as QEMU's -dfilter takes it (0xSTART..0xEND).
  initramfs -o OUT [--dir PATH | --file PATH=HOSTFILE | --symlink PATH=TARGET |
            --chardev PATH=MAJOR:MINOR]...
      A cpio (newc) initramfs with these entries, in order (a file keeps its host
      permissions; directories 0755, device nodes 0600; owner root).
  bundle -o OUT [--vm N] --kernel FILE [--initrd FILE] [--vm N --kernel FILE...]
  bundle -o OUT --guest-dir DIR (--vm-spec SPEC | --vm-file FILE)...
      The guest bundle the hypervisor takes as QEMU's -initrd (hvcore::bundle): a kernel and
      an initramfs for each VM (--vm sets the VM of the parts after it; default 0). Or VMs
      as users describe them (crates/xtask/src/vms.rs: guest=NAME|FILE,cpus=..,mem=..,args=..,
      one per --vm-spec or per line of a --vm-file; NAME is DIR/NAME.img): VM n gets the n-th,
      with its settings part; prints `machine: cpus N mem-mib M`, what QEMU must give.
  guest-dtb --cpus N --mem-mib M -o OUT
      The device tree the hypervisor gives a VM with N vCPUs and M MiB of RAM (hvcore::guest_dt),
      with an rng-seed and a kaslr-seed (fixed) and no command line: the benchmark boots bare QEMU
      with it (-dtb), so that both sides of a comparison boot the same devices, seeded alike.
  stopwatch --until TEXT --log FILE -- COMMAND [ARGS...]
      Runs COMMAND (standard input closed, output into FILE) and appends `stopwatch: S s to TEXT`
      to FILE: the wall time from its start to the first output line containing TEXT. Exit status:
      COMMAND's, or 1 if TEXT never came.
  linux-table --bare LOG --hyp LOG --loud LOG --bare-wall LOG --hyp-wall LOG --vcpus N
      scripts/bench.sh's Linux boot table (crates/xtask/src/linux_bench.rs), printed.
  linux-check --cpus N --min-mem-kb KB LOG
      The Linux smoke tests' checks of a run's console log (guests/linux/init, hyp.init=test):
      the marker with nproc and MemTotal, the workload, timer interrupts and IPIs on every CPU
      in /proc/interrupts, no Oops/BUG/WARNING/Call trace. Prints the counts; exit 1 with one
      line per failed check.
  deps [--rules FILE] SRC_DIR
      The module graph of the crate whose sources are under SRC_DIR: printed, then checked.
      Exit 1 if modules use each other in a cycle, or (with --rules) a layer uses one the
      rules do not allow.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, args)) = args.split_first() else {
        usage_error("no subcommand")
    };
    let status = match cmd.as_str() {
        "bench-table" => bench_table_cmd(args),
        "bench-profile" => bench_profile_cmd(args),
        "bench-compare" => bench_compare_cmd(args),
        "bench-ratios" => bench_ratios_cmd(args),
        "text-range" => text_range_cmd(args),
        "deps" => deps_cmd(args),
        "initramfs" => initramfs_cmd(args),
        "bundle" => bundle_cmd(args),
        "linux-check" => linux_check_cmd(args),
        "guest-dtb" => guest_dtb_cmd(args),
        "stopwatch" => stopwatch_cmd(args),
        "linux-table" => linux_table_cmd(args),
        "help" | "--help" | "-h" => {
            print(USAGE);
            0
        }
        other => usage_error(&format!("unknown subcommand {other}")),
    };
    exit(status);
}

fn usage_error(why: &str) -> ! {
    eprint!("xtask: {why}\n\n{USAGE}");
    exit(2);
}

/// Writes to stdout; a closed pipe (`| head`) ends the program quietly, as SIGPIPE would.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            exit(141);
        }
        eprintln!("xtask: writing to stdout: {e}");
        exit(1);
    }
}

/// `NAME=PATH` as (name, path).
fn run_arg(arg: &str) -> (String, PathBuf) {
    match arg.split_once('=') {
        Some((name, path)) => (name.to_string(), PathBuf::from(path)),
        None => usage_error(&format!("{arg}: expected RUN=FILE")),
    }
}

fn bench_table_cmd(args: &[String]) -> i32 {
    let (mut out, mut machine, mut commit) = (None, None, None);
    let (mut runs, mut second) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| match it.next() {
            Some(v) => v.clone(),
            None => usage_error(&format!("{name} needs a value")),
        };
        match arg.as_str() {
            "--out" => out = Some(value("--out")),
            "--machine" => machine = Some(value("--machine")),
            "--commit" => commit = Some(value("--commit")),
            "--pass2" => second.push(run_arg(&value("--pass2"))),
            a if a.starts_with("--") => usage_error(&format!("bench-table: unknown option {a}")),
            a => runs.push(run_arg(a)),
        }
    }
    let (Some(out), Some(machine), Some(commit)) = (out, machine, commit) else {
        usage_error("bench-table needs --out, --machine and --commit")
    };

    let mut failed = false;
    let repeat = if second.is_empty() {
        bench_table::ONE_PASS.to_string()
    } else {
        let mut passes = Vec::new();
        for (name, first) in &runs {
            match second.iter().find(|(n, _)| n == name) {
                Some((_, path)) => passes.push(bench_table::Passes {
                    name: name.clone(),
                    first: first.clone(),
                    second: path.clone(),
                }),
                None => usage_error(&format!("bench-table: no --pass2 for run {name}")),
            }
        }
        let (repeat, messages) = bench_table::compare_passes(&passes);
        for m in &messages {
            eprintln!("bench.sh: {m}");
        }
        failed |= !messages.is_empty();
        repeat
    };

    let outputs: Vec<_> = runs
        .iter()
        .map(|(name, path)| bench_table::RunOutput {
            name: name.clone(),
            path: path.display().to_string(),
            text: std::fs::read(path)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        })
        .collect();
    let ctx = bench_table::Context {
        machine,
        commit,
        repeat,
    };
    let table = bench_table::build(&outputs, &ctx);
    print(&table.report);
    if let Err(e) = std::fs::write(&out, &table.report) {
        eprintln!("bench.sh: writing {out}: {e}");
        failed = true;
    }
    for e in &table.errors {
        eprintln!("bench.sh: {e}");
    }
    i32::from(failed || !table.errors.is_empty())
}

/// `nm ARGS... ELF`'s output; `None` (after a message) if it failed.
fn nm(args: &[&str], elf: &str, who: &str) -> Option<String> {
    match Command::new("nm").args(args).arg(elf).output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => {
            eprintln!(
                "{who}: nm {elf} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim_end()
            );
            None
        }
        Err(e) => {
            eprintln!("{who}: needs nm (binutils): {e}");
            None
        }
    }
}

fn bench_profile_cmd(args: &[String]) -> i32 {
    const WHO: &str = "bench-profile.sh";
    let (nm_file, args) = match args {
        [flag, file, rest @ ..] if flag == "--nm" => (Some(file), rest),
        _ => (None, args),
    };
    let [elf, runlog, trace] = args else {
        usage_error("bench-profile needs [--nm FILE] ELF RUNLOG TRACE")
    };
    // The trace first: if it is QEMU's FIFO, QEMU waits for a reader before it runs, and must
    // not wait for one that has given up.
    let trace_file = match std::fs::File::open(trace) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{WHO}: {trace}: {e}");
            return 1;
        }
    };
    let log = match std::fs::read(runlog) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            eprintln!("{WHO}: {runlog}: {e}");
            return 1;
        }
    };
    let symbols = match nm_file {
        Some(file) => match std::fs::read(file) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                eprintln!("{WHO}: {file}: {e}");
                return 1;
            }
        },
        None => match nm(&["-n", "-C"], elf, WHO) {
            Some(text) => text,
            None => return 1,
        },
    };
    let reader = BufReader::with_capacity(1 << 20, trace_file);
    match bench_profile::profile(&symbols, &log, runlog, elf, reader) {
        Ok(text) => {
            print(&text);
            0
        }
        Err(e) => {
            eprintln!("{WHO}: {e}");
            1
        }
    }
}

fn bench_ratios_cmd(args: &[String]) -> i32 {
    let (check, dir) = match args {
        [flag, dir] if flag == "--check" => (true, dir),
        [dir] if !dir.starts_with("--") => (false, dir),
        _ => usage_error("bench-ratios needs [--check] CRITERION_DIR"),
    };
    let dir = Path::new(dir);
    if !dir.is_dir() {
        eprintln!(
            "no criterion output in {}: run the walker benchmark first",
            dir.display()
        );
        return 1;
    }
    let r = bench_ratios::report(|group, function| bench_ratios::mean_ns(dir, group, function));
    print(&r.text);
    i32::from(check && r.missed)
}

fn text_range_cmd(args: &[String]) -> i32 {
    let [elf] = args else {
        usage_error("text-range needs ELF")
    };
    let Some(symbols) = nm(&[], elf, "text-range") else {
        return 1;
    };
    match xtask::text_range(&symbols) {
        Some(range) => {
            print(&range);
            0
        }
        None => {
            eprintln!("text-range: no _text_start and _text_end symbols in {elf}");
            1
        }
    }
}

fn deps_cmd(args: &[String]) -> i32 {
    let (rules, dir) = match args {
        [flag, rules, dir] if flag == "--rules" => (Some(rules), dir),
        [dir] => (None, dir),
        _ => usage_error("deps needs [--rules FILE] SRC_DIR"),
    };
    let mut files = Vec::new();
    if let Err(e) = collect_rs(Path::new(dir), Path::new(""), &mut files) {
        eprintln!("deps: reading {dir}: {e}");
        return 1;
    }
    let graph = xtask::deps::graph(&files);
    print(&xtask::deps::render(&graph));
    let mut status = 0;
    for cycle in xtask::deps::cycles(&graph) {
        eprintln!(
            "deps: {dir}: modules use each other: {}",
            cycle.join(" <-> ")
        );
        status = 1;
    }
    if let Some(rules) = rules {
        let text = match std::fs::read_to_string(rules) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("deps: reading {rules}: {e}");
                return 1;
            }
        };
        let rules = match xtask::deps::parse_rules(&text) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("deps: {e}");
                return 1;
            }
        };
        for (from, to) in xtask::deps::violations(&graph, &rules) {
            eprintln!("deps: {dir}: {from} uses {to}, which its layer may not");
            status = 1;
        }
    }
    if status == 0 {
        eprintln!(
            "deps: {dir}: {} modules, no cycle{}",
            graph.edges.len(),
            if rules.is_some() {
                ", layers respected"
            } else {
                ""
            }
        );
    }
    status
}

/// Every `.rs` file under `dir` (relative paths from `rel`), with its text.
fn collect_rs(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = rel.join(e.file_name());
        if path.is_dir() {
            collect_rs(&path, &rel, out)?;
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push((rel, std::fs::read_to_string(&path)?));
        }
    }
    Ok(())
}

/// `FLAG VALUE` pairs of a command line, in order.
fn pairs<'a>(cmd: &str, args: &'a [String]) -> Vec<(&'a str, &'a str)> {
    if !args.len().is_multiple_of(2) {
        usage_error(&format!("{cmd}: every option takes a value"));
    }
    args.chunks(2)
        .map(|p| (p[0].as_str(), p[1].as_str()))
        .collect()
}

fn split_eq<'a>(cmd: &str, flag: &str, value: &'a str) -> (&'a str, &'a str) {
    value
        .split_once('=')
        .unwrap_or_else(|| usage_error(&format!("{cmd}: {flag} {value}: expected PATH=VALUE")))
}

fn read_file(who: &str, path: &str) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("{who}: {path}: {e}");
            None
        }
    }
}

fn write_file(who: &str, path: &str, bytes: &[u8]) -> i32 {
    match std::fs::write(path, bytes) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{who}: writing {path}: {e}");
            1
        }
    }
}

fn initramfs_cmd(args: &[String]) -> i32 {
    use std::os::unix::fs::PermissionsExt;
    const WHO: &str = "initramfs";
    let mut out = None;
    let mut entries = Vec::new();
    for (flag, value) in pairs(WHO, args) {
        match flag {
            "-o" => out = Some(value),
            "--dir" => entries.push(Entry::Dir {
                path: value.to_string(),
                mode: 0o755,
            }),
            "--file" => {
                let (path, host) = split_eq(WHO, flag, value);
                let Some(data) = read_file(WHO, host) else {
                    return 1;
                };
                let mode = std::fs::metadata(host).map_or(0o644, |m| m.permissions().mode());
                entries.push(Entry::File {
                    path: path.to_string(),
                    mode,
                    data,
                });
            }
            "--symlink" => {
                let (path, target) = split_eq(WHO, flag, value);
                entries.push(Entry::Symlink {
                    path: path.to_string(),
                    target: target.to_string(),
                });
            }
            "--chardev" => {
                let (path, dev) = split_eq(WHO, flag, value);
                let nums = dev
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                let Some((major, minor)) = nums else {
                    usage_error(&format!(
                        "{WHO}: --chardev {value}: expected PATH=MAJOR:MINOR"
                    ))
                };
                entries.push(Entry::CharDev {
                    path: path.to_string(),
                    mode: 0o600,
                    major,
                    minor,
                });
            }
            other => usage_error(&format!("{WHO}: unknown option {other}")),
        }
    }
    let Some(out) = out else {
        usage_error("initramfs needs -o OUT")
    };
    match cpio::write(&entries) {
        Ok(bytes) => write_file(WHO, out, &bytes),
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn bundle_cmd(args: &[String]) -> i32 {
    use hvcore::bundle::{self, Kind};
    const WHO: &str = "bundle";
    let mut out = None;
    let mut vm = 0u32;
    let mut guest_dir = None;
    let mut specs: Vec<String> = Vec::new();
    let mut parts: Vec<(Kind, u32, Vec<u8>)> = Vec::new();
    for (flag, value) in pairs(WHO, args) {
        let kind = match flag {
            "-o" => {
                out = Some(value);
                continue;
            }
            "--vm" => {
                vm = value.parse().unwrap_or_else(|_| {
                    usage_error(&format!("{WHO}: --vm {value}: expected a number"))
                });
                continue;
            }
            "--guest-dir" => {
                guest_dir = Some(value);
                continue;
            }
            "--vm-spec" => {
                specs.push(value.to_string());
                continue;
            }
            "--vm-file" => {
                let Some(bytes) = read_file(WHO, value) else {
                    return 1;
                };
                let text = String::from_utf8_lossy(&bytes).into_owned();
                specs.extend(xtask::vms::file_specs(&text).into_iter().map(String::from));
                continue;
            }
            "--kernel" => Kind::Kernel,
            "--initrd" => Kind::Initrd,
            other => usage_error(&format!("{WHO}: unknown option {other}")),
        };
        let Some(bytes) = read_file(WHO, value) else {
            return 1;
        };
        parts.push((kind, vm, bytes));
    }
    let Some(out) = out else {
        usage_error("bundle needs -o OUT")
    };
    if !specs.is_empty() {
        if !parts.is_empty() {
            usage_error("bundle: --vm-spec/--vm-file or --kernel/--initrd, not both");
        }
        match vm_parts(&specs, guest_dir) {
            Ok(p) => parts = p,
            Err(e) => {
                eprintln!("{WHO}: {e}");
                return 1;
            }
        }
    }
    if parts.len() > bundle::MAX_PARTS {
        eprintln!(
            "{WHO}: {} parts, at most {}",
            parts.len(),
            bundle::MAX_PARTS
        );
        return 1;
    }
    let refs: Vec<(Kind, u32, &[u8])> = parts
        .iter()
        .map(|(k, v, b)| (*k, *v, b.as_slice()))
        .collect();
    let blob = bundle::write(&refs);
    // What the hypervisor will read: refuse here what it would refuse.
    match bundle::Bundle::parse(&blob) {
        Ok(b) if b.part(0, Kind::Kernel).is_some() => write_file(WHO, out, &blob),
        Ok(_) => {
            eprintln!("{WHO}: no kernel for VM 0");
            1
        }
        Err(e) => {
            eprintln!("{WHO}: {e}");
            1
        }
    }
}

/// The parts of the VMs `specs` describe (VM n: the n-th), and the
/// machine line printed.
fn vm_parts(
    specs: &[String],
    guest_dir: Option<&str>,
) -> Result<Vec<(hvcore::bundle::Kind, u32, Vec<u8>)>, String> {
    use hvcore::bundle::Kind;
    let mut vms = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        vms.push(xtask::vms::parse(spec).map_err(|e| format!("VM {i} (`{spec}`): {e}"))?);
    }
    let mut parts = Vec::new();
    for (i, v) in vms.iter().enumerate() {
        let path = if v.guest.contains('/') || guest_dir.is_none() {
            PathBuf::from(&v.guest)
        } else {
            Path::new(guest_dir.unwrap_or(".")).join(format!("{}.img", v.guest))
        };
        let kernel = std::fs::read(&path)
            .map_err(|e| format!("VM {i}: guest {} ({}): {e}", v.guest, path.display()))?;
        let index = i as u32;
        parts.push((Kind::Kernel, index, kernel));
        if let Some(initrd) = &v.initrd {
            let bytes =
                std::fs::read(initrd).map_err(|e| format!("VM {i}: initrd {initrd}: {e}"))?;
            parts.push((Kind::Initrd, index, bytes));
        }
        parts.push((Kind::Config, index, v.config.clone().into_bytes()));
    }
    let (cpus, mib) = xtask::vms::machine(&vms);
    print(&format!("machine: cpus {cpus} mem-mib {mib}\n"));
    Ok(parts)
}

fn linux_check_cmd(args: &[String]) -> i32 {
    use xtask::linux_check::{check, Expect};
    const WHO: &str = "linux-check";
    let (Some((log, opts)), true) = (args.split_last(), args.len() % 2 == 1) else {
        usage_error("linux-check needs --cpus N --min-mem-kb KB LOG")
    };
    let (mut cpus, mut min_mem_kb) = (None, None);
    for (flag, value) in pairs(WHO, opts) {
        let n: u64 = value
            .parse()
            .unwrap_or_else(|_| usage_error(&format!("{WHO}: {flag} {value}: expected a number")));
        match flag {
            "--cpus" => cpus = Some(n as usize),
            "--min-mem-kb" => min_mem_kb = Some(n),
            other => usage_error(&format!("{WHO}: unknown option {other}")),
        }
    }
    let (Some(cpus), Some(min_mem_kb)) = (cpus, min_mem_kb) else {
        usage_error("linux-check needs --cpus N --min-mem-kb KB LOG")
    };
    let Some(bytes) = read_file(WHO, log) else {
        return 1;
    };
    match check(
        &String::from_utf8_lossy(&bytes),
        Expect { cpus, min_mem_kb },
    ) {
        Ok(f) => {
            print(&format!(
                "linux-check: nproc {cpus}, MemTotal {} kB, timer interrupts per CPU {:?}, IPIs per CPU {:?}\n",
                f.mem_kb, f.timer, f.ipis
            ));
            0
        }
        Err(errors) => {
            for e in errors {
                eprintln!("linux-check: {e}");
            }
            1
        }
    }
}

fn guest_dtb_cmd(args: &[String]) -> i32 {
    use hvcore::guest_dt::{build, VmDesc};
    use hvcore::memmap::MemoryMap;
    const WHO: &str = "guest-dtb";
    let (mut cpus, mut mib, mut out) = (None, None, None);
    for (flag, value) in pairs(WHO, args) {
        let number = || -> u64 {
            value.parse().unwrap_or_else(|_| {
                usage_error(&format!("{WHO}: {flag} {value}: expected a number"))
            })
        };
        match flag {
            "--cpus" => cpus = Some(number() as usize),
            "--mem-mib" => mib = Some(number()),
            "-o" => out = Some(value),
            other => usage_error(&format!("{WHO}: unknown option {other}")),
        }
    }
    let (Some(cpus), Some(mib), Some(out)) = (cpus, mib, out) else {
        usage_error("guest-dtb needs --cpus N --mem-mib M -o OUT")
    };
    let map = MemoryMap::new(mib << 20, cpus);
    let mut desc = VmDesc::new(&map, "");
    desc.seeds =
        Some(hvcore::entropy::Entropy::gather([&b"cargo xtask guest-dtb"[..]]).seeds(0, 0));
    match build(&desc) {
        Ok(blob) => write_file(WHO, out, &blob),
        Err(e) => {
            eprintln!("{WHO}: {e}");
            1
        }
    }
}

fn stopwatch_cmd(args: &[String]) -> i32 {
    use std::io::BufRead;
    use std::process::Stdio;
    const WHO: &str = "stopwatch";
    let Some(split) = args.iter().position(|a| a == "--") else {
        usage_error("stopwatch needs -- COMMAND")
    };
    let (opts, command) = (&args[..split], &args[split + 1..]);
    let (mut until, mut log) = (None, None);
    for (flag, value) in pairs(WHO, opts) {
        match flag {
            "--until" => until = Some(value),
            "--log" => log = Some(value),
            other => usage_error(&format!("{WHO}: unknown option {other}")),
        }
    }
    let (Some(until), Some(log), Some((program, rest))) = (until, log, command.split_first())
    else {
        usage_error("stopwatch needs --until TEXT --log FILE -- COMMAND")
    };
    let mut out = match std::fs::File::create(log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{WHO}: {log}: {e}");
            return 1;
        }
    };
    let start = std::time::Instant::now();
    let mut child = match Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{WHO}: {program}: {e}");
            return 1;
        }
    };
    let mut seen = None;
    let reader = BufReader::new(child.stdout.take().expect("piped"));
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        if seen.is_none() && String::from_utf8_lossy(&line).contains(until) {
            seen = Some(start.elapsed());
        }
        let _ = out.write_all(&line).and_then(|()| out.write_all(b"\n"));
    }
    let status = child.wait().map_or(1, |s| s.code().unwrap_or(1));
    match seen {
        Some(t) => {
            let line = format!("stopwatch: {:.3} s to {until}\n", t.as_secs_f64());
            let _ = out.write_all(line.as_bytes());
            print(&line);
            status
        }
        None => {
            eprintln!("{WHO}: `{until}` never came (log: {log})");
            1
        }
    }
}

fn linux_table_cmd(args: &[String]) -> i32 {
    use xtask::linux_bench::{table, Logs};
    const WHO: &str = "linux-table";
    let mut files: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let mut vcpus = 0;
    for (flag, value) in pairs(WHO, args) {
        match flag {
            "--vcpus" => {
                vcpus = value.parse().unwrap_or_else(|_| {
                    usage_error(&format!("{WHO}: --vcpus {value}: expected a number"))
                })
            }
            "--bare" | "--hyp" | "--loud" | "--bare-wall" | "--hyp-wall" => {
                let Some(bytes) = read_file(WHO, value) else {
                    return 1;
                };
                files.insert(flag, String::from_utf8_lossy(&bytes).into_owned());
            }
            other => usage_error(&format!("{WHO}: unknown option {other}")),
        }
    }
    let get = |k: &str| {
        files
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| usage_error(&format!("{WHO} needs {k}")))
    };
    let logs = Logs {
        bare: get("--bare"),
        hyp: get("--hyp"),
        loud: get("--loud"),
        bare_wall: get("--bare-wall"),
        hyp_wall: get("--hyp-wall"),
    };
    match table(&logs, vcpus) {
        Ok((text, _)) => {
            print(&text);
            0
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{WHO}: {e}");
            }
            1
        }
    }
}

fn bench_compare_cmd(args: &[String]) -> i32 {
    const WHO: &str = "bench-compare";
    let (mut base, mut other, mut what, mut skip) = (None, None, None, Vec::new());
    for (flag, value) in pairs(WHO, args) {
        match flag {
            "--skip" => skip = value.split(',').collect(),
            "--base" => base = read_file(WHO, value),
            "--other" => other = read_file(WHO, value),
            "--what" => what = Some(value),
            o => usage_error(&format!("{WHO}: unknown option {o}")),
        }
    }
    let (Some(base), Some(other), Some(what)) = (base, other, what) else {
        eprintln!("{WHO}: needs readable --base, --other and --what");
        return 1;
    };
    print(&bench_table::compare(
        &String::from_utf8_lossy(&base),
        &String::from_utf8_lossy(&other),
        what,
        &skip,
    ));
    0
}
