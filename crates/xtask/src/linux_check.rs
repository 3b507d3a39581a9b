//! `cargo xtask linux-check`: what the Linux smoke tests ask of a guest's boot log (`guests/linux/init` in `hyp.init=test` mode, run by `scripts/run.sh --linux`).
//!
//! From the console log of one run:
//! - the marker `linux-guest: userspace up: nproc N, MemTotal M kB`, with
//!   `N` the vCPUs asked for and `M` at least the given floor;
//! - `linux-guest: workload done on N CPUs`;
//! - `/proc/interrupts` between its two marker lines: one column per CPU,
//!   the architected timer's row non-zero on every CPU and, with more than
//!   one CPU, the IPI rows together non-zero on every CPU;
//! - no kernel line with `Oops`, `BUG`, `WARNING` or `Call trace`.
//!
//! Guest lines carry the hypervisor's `[vmN/vcpuM]` tag, which is dropped
//! before reading them.

/// What a boot must show.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// vCPUs (`nproc`, and columns of `/proc/interrupts`).
    pub cpus: usize,
    /// Least `MemTotal`, in kB.
    pub min_mem_kb: u64,
}

/// What was found: the counts, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// `MemTotal`, kB.
    pub mem_kb: u64,
    /// Timer interrupts per CPU.
    pub timer: Vec<u64>,
    /// IPIs per CPU (all kinds).
    pub ipis: Vec<u64>,
}

/// A guest line without its tag, or `None` for a hypervisor line.
fn guest_text(line: &str) -> Option<&str> {
    let line = line.trim_end_matches('\r');
    let rest = line.strip_prefix("[vm")?;
    let close = rest.find("] ")?;
    Some(&rest[close + 2..])
}

/// Checks `log` against `want`: the counts found, or every problem.
///
/// # Errors
///
/// One message per check that failed.
pub fn check(log: &str, want: Expect) -> Result<Found, Vec<String>> {
    let mut errors = Vec::new();
    let mut found = Found::default();
    let guest: Vec<&str> = log.lines().filter_map(guest_text).collect();

    let marker = guest
        .iter()
        .find_map(|l| l.strip_prefix("linux-guest: userspace up: nproc "));
    match marker.and_then(|m| {
        let (n, rest) = m.split_once(", MemTotal ")?;
        Some((
            n.parse::<usize>().ok()?,
            rest.strip_suffix(" kB")?.parse::<u64>().ok()?,
        ))
    }) {
        Some((n, mem)) => {
            found.mem_kb = mem;
            if n != want.cpus {
                errors.push(format!("nproc is {n}, expected {}", want.cpus));
            }
            if mem < want.min_mem_kb {
                errors.push(format!(
                    "MemTotal is {mem} kB, expected at least {}",
                    want.min_mem_kb
                ));
            }
        }
        None => errors.push("no `linux-guest: userspace up: nproc N, MemTotal M kB` marker".into()),
    }
    let done = format!("linux-guest: workload done on {} CPUs", want.cpus);
    if !guest.iter().any(|l| *l == done) {
        errors.push(format!("no `{done}`"));
    }

    let begin = guest
        .iter()
        .position(|l| *l == "linux-guest: /proc/interrupts begin");
    let end = guest
        .iter()
        .position(|l| *l == "linux-guest: /proc/interrupts end");
    match (begin, end) {
        (Some(b), Some(e)) if b < e => {
            interrupts(&guest[b + 1..e], want.cpus, &mut found, &mut errors);
        }
        _ => errors.push("no /proc/interrupts between its markers".into()),
    }

    for bad in ["Oops", "BUG", "WARNING", "Call trace"] {
        if let Some(l) = guest.iter().find(|l| l.contains(bad)) {
            errors.push(format!("kernel log has `{bad}`: {l}"));
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

/// Reads `/proc/interrupts` (`rows`, header first).
fn interrupts(rows: &[&str], cpus: usize, found: &mut Found, errors: &mut Vec<String>) {
    let Some((header, rows)) = rows.split_first() else {
        errors.push("/proc/interrupts is empty".into());
        return;
    };
    let columns = header
        .split_whitespace()
        .filter(|c| c.starts_with("CPU"))
        .count();
    if columns != cpus {
        errors.push(format!(
            "/proc/interrupts has {columns} CPU columns, expected {cpus}"
        ));
        return;
    }
    let counts = |row: &str| -> Option<Vec<u64>> {
        row.split_whitespace()
            .skip(1)
            .take(cpus)
            .map(|c| c.parse().ok())
            .collect::<Option<Vec<u64>>>()
            .filter(|v| v.len() == cpus)
    };
    found.timer = match rows
        .iter()
        .find(|r| r.contains("arch_timer"))
        .and_then(|r| counts(r))
    {
        Some(v) => v,
        None => {
            errors.push("/proc/interrupts has no arch_timer row".into());
            vec![0; cpus]
        }
    };
    found.ipis = vec![0; cpus];
    let mut ipi_rows = 0;
    for row in rows.iter().filter(|r| r.trim_start().starts_with("IPI")) {
        if let Some(v) = counts(row) {
            ipi_rows += 1;
            for (sum, n) in found.ipis.iter_mut().zip(v) {
                *sum += n;
            }
        }
    }
    for (cpu, &n) in found.timer.iter().enumerate() {
        if n == 0 {
            errors.push(format!("no timer interrupt on CPU{cpu}"));
        }
    }
    if cpus > 1 {
        if ipi_rows == 0 {
            errors.push("/proc/interrupts has no IPI rows".into());
        }
        for (cpu, &n) in found.ipis.iter().enumerate() {
            if n == 0 {
                errors.push(format!("no IPI on CPU{cpu}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2-vCPU run's log, as the hypervisor prints it (trimmed).
    const GOOD: &str = "\
[   0.1] INFO  cpu0: vm0: 2 vCPUs
[vm0/vcpu0] [    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]
[vm0/vcpu1] linux-guest: userspace up: nproc 2, MemTotal 491292 kB\r
[vm0/vcpu1] linux-guest: workload done on 2 CPUs
[vm0/vcpu1] linux-guest: /proc/interrupts begin
[vm0/vcpu0]            CPU0       CPU1       
[vm0/vcpu0]  11:        643        518     GICv3  27 Level     arch_timer
[vm0/vcpu0]  13:          0          0     GICv3  33 Level     uart-pl011
[vm0/vcpu0] IPI0:         6         30       Rescheduling interrupts
[vm0/vcpu0] IPI1:       124        201       Function call interrupts
[vm0/vcpu0] IPI2:         0          0       CPU stop interrupts
[vm0/vcpu0] Err:          0
[vm0/vcpu1,0] linux-guest: /proc/interrupts end
[vm0/vcpu0] [    3.631521] reboot: Power down
";

    const TWO: Expect = Expect {
        cpus: 2,
        min_mem_kb: 400_000,
    };

    #[test]
    fn a_good_boot() {
        let f = check(GOOD, TWO).unwrap();
        assert_eq!(f.mem_kb, 491_292);
        assert_eq!(f.timer, [643, 518]);
        assert_eq!(f.ipis, [130, 231]);
    }

    fn errors(log: &str, want: Expect) -> Vec<String> {
        check(log, want).unwrap_err()
    }

    #[test]
    fn each_check_bites() {
        assert_eq!(
            errors(GOOD, Expect { cpus: 4, ..TWO }),
            [
                "nproc is 2, expected 4",
                "no `linux-guest: workload done on 4 CPUs`",
                "/proc/interrupts has 2 CPU columns, expected 4"
            ]
        );
        assert_eq!(
            errors(
                GOOD,
                Expect {
                    min_mem_kb: 500_000,
                    ..TWO
                }
            ),
            ["MemTotal is 491292 kB, expected at least 500000"]
        );
        let no_timer = GOOD.replace("518     GICv3  27", "0     GICv3  27");
        assert_eq!(errors(&no_timer, TWO), ["no timer interrupt on CPU1"]);
        let no_ipi = GOOD
            .replace("6         30", "0         30")
            .replace("124        201", "0        201");
        assert_eq!(errors(&no_ipi, TWO), ["no IPI on CPU0"]);
        let oops = GOOD.replace("reboot: Power down", "Internal error: Oops: 96000004");
        assert_eq!(
            errors(&oops, TWO),
            ["kernel log has `Oops`: [    3.631521] Internal error: Oops: 96000004"]
        );
        let warn = GOOD.replace(
            "reboot: Power down",
            "WARNING: CPU: 1 PID: 1 at kernel/x.c:1",
        );
        assert_eq!(errors(&warn, TWO).len(), 1);
        let no_marker = GOOD.replace("userspace up", "userspace down");
        assert_eq!(
            errors(&no_marker, TWO),
            ["no `linux-guest: userspace up: nproc N, MemTotal M kB` marker"]
        );
        let no_table = GOOD.replace("/proc/interrupts end", "/proc/interrupts fin");
        assert_eq!(
            errors(&no_table, TWO),
            ["no /proc/interrupts between its markers"]
        );
    }

    #[test]
    fn hypervisor_lines_are_not_guest_lines() {
        // A hypervisor line saying WARNING (its log level) is not the kernel's.
        let log = format!("{GOOD}[   4.0] WARN  cpu0: something\n");
        assert!(check(&log, TWO).is_ok());
        // The marker must come from the guest.
        let forged = GOOD.replace(
            "[vm0/vcpu1] linux-guest: userspace up",
            "linux-guest: userspace up",
        );
        assert!(check(&forged, TWO).is_err());
    }

    #[test]
    fn one_cpu_needs_no_ipi() {
        let one = "\
[vm0/vcpu0] linux-guest: userspace up: nproc 1, MemTotal 491292 kB
[vm0/vcpu0] linux-guest: workload done on 1 CPUs
[vm0/vcpu0] linux-guest: /proc/interrupts begin
[vm0/vcpu0]            CPU0
[vm0/vcpu0]  11:        643     GICv3  27 Level     arch_timer
[vm0/vcpu0] IPI0:         0       Rescheduling interrupts
[vm0/vcpu0] linux-guest: /proc/interrupts end
";
        let f = check(one, Expect { cpus: 1, ..TWO }).unwrap();
        assert_eq!((f.timer, f.ipis), (vec![643], vec![0]));
    }
}
