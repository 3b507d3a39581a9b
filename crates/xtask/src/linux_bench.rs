//! `cargo xtask linux-table`: the Linux boot benchmark's table, from the console logs of its runs (scripts/bench.sh drives them).
//!
//! - **Instructions to boot**: under `-icount shift=0,sleep=off` one
//!   nanosecond of guest time is one instruction, so the kernel's printk
//!   timestamp of the marker line (`linux-guest: marker`, written by
//!   `guests/linux/init` to `/dev/kmsg`) counts the instructions from the
//!   kernel's clock start to userspace, at every exception level. Bare QEMU
//!   (the same kernel, initramfs and device tree, entered at EL1) against
//!   the hypervisor: the overhead.
//! - **Wall time** to the marker, both ways (`cargo xtask stopwatch`'s
//!   line), as a ratio.
//! - **Exits per boot** by reason, from the hypervisor's statistics line.
//! - **Console exits per character**: a boot with the kernel log on the
//!   console against one without (`quiet`), in MMIO exits per byte the
//!   guest printed.

use std::fmt::Write as _;

/// The marker's kernel timestamp in the log, in seconds: the last
/// `[    s.uuuuuu] linux-guest: marker` (with or without the hypervisor's
/// tag before it).
#[must_use]
pub fn marker_seconds(log: &str) -> Option<f64> {
    log.lines()
        .rev()
        .filter(|l| l.trim_end_matches('\r').ends_with("] linux-guest: marker"))
        .find_map(|l| {
            let open = l.rfind("] linux-guest: marker")?;
            let start = l[..open].rfind('[')?;
            l[start + 1..open].trim().parse().ok()
        })
}

/// The wall-clock seconds `cargo xtask stopwatch` printed
/// (`stopwatch: S s to ...`).
#[must_use]
pub fn stopwatch_seconds(log: &str) -> Option<f64> {
    log.lines().rev().find_map(|l| {
        l.strip_prefix("stopwatch: ")?
            .split_once(" s to ")?
            .0
            .parse()
            .ok()
    })
}

/// The hypervisor's exit counts by reason (`stats: exits: hvc 15, smc 0,
/// ...; kicks sent 0`): `(reason, count)` in its order.
#[must_use]
pub fn exits(log: &str) -> Option<Vec<(String, u64)>> {
    let line = log.lines().rev().find(|l| l.contains("stats: exits: "))?;
    let list = line.split("stats: exits: ").nth(1)?.split(';').next()?;
    list.split(", ")
        .map(|item| {
            let (name, n) = item.trim().rsplit_once(' ')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// The MMIO accesses the hypervisor counted (`mmio accesses N,`).
#[must_use]
pub fn mmio_accesses(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("stats: mmio accesses "))?;
    line.split("stats: mmio accesses ")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Bytes the guest printed: each tagged line's text and its line end
/// (`\r\n`, as the kernel's console and tty write it).
#[must_use]
pub fn guest_bytes(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("[vm")?;
            let close = rest.find("] ")?;
            Some(rest[close + 2..].trim_end_matches('\r').len() as u64 + 2)
        })
        .sum()
}

/// The runs' logs.
pub struct Logs<'a> {
    /// Bare QEMU, `-icount`, `quiet`.
    pub bare: &'a str,
    /// The hypervisor, `-icount`, `quiet`.
    pub hyp: &'a str,
    /// The hypervisor, `-icount`, the kernel log on the console.
    pub loud: &'a str,
    /// Bare QEMU, real time.
    pub bare_wall: &'a str,
    /// The hypervisor, real time.
    pub hyp_wall: &'a str,
}

/// What the table reports, for tests and the README.
#[derive(Clone, Debug, PartialEq)]
pub struct Numbers {
    /// Millions of instructions to the marker, bare.
    pub bare_m: f64,
    /// The same under the hypervisor.
    pub hyp_m: f64,
    /// The overhead, in percent.
    pub overhead_pct: f64,
    /// Seconds to the marker, bare and under the hypervisor.
    pub wall: (f64, f64),
    /// Console MMIO exits per byte printed.
    pub exits_per_char: f64,
}

/// The table (Markdown), and the numbers; or what is missing.
///
/// # Errors
///
/// One message per value that could not be read.
pub fn table(logs: &Logs<'_>, vcpus_wall: usize) -> Result<(String, Numbers), Vec<String>> {
    let mut errors = Vec::new();
    let mut need = |v: Option<f64>, what: &str| {
        v.unwrap_or_else(|| {
            errors.push(format!("no {what}"));
            f64::NAN
        })
    };
    let bare = need(marker_seconds(logs.bare), "marker in the bare -icount run");
    let hyp = need(
        marker_seconds(logs.hyp),
        "marker in the hypervisor's -icount run",
    );
    let bare_wall = need(
        stopwatch_seconds(logs.bare_wall),
        "stopwatch line in the bare wall-time run",
    );
    let hyp_wall = need(
        stopwatch_seconds(logs.hyp_wall),
        "stopwatch line in the hypervisor's wall-time run",
    );
    let quiet_mmio = need(
        mmio_accesses(logs.hyp).map(|n| n as f64),
        "mmio count in the quiet run",
    );
    let loud_mmio = need(
        mmio_accesses(logs.loud).map(|n| n as f64),
        "mmio count in the loud run",
    );
    let exit_list = exits(logs.hyp);
    if exit_list.is_none() {
        errors.push("no exit statistics in the hypervisor's -icount run".into());
    }
    let extra_bytes = guest_bytes(logs.loud).saturating_sub(guest_bytes(logs.hyp));
    if extra_bytes == 0 {
        errors.push("the loud run printed no more than the quiet one".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let n = Numbers {
        bare_m: bare * 1e3,
        hyp_m: hyp * 1e3,
        overhead_pct: (hyp - bare) / bare * 100.0,
        wall: (bare_wall, hyp_wall),
        exits_per_char: (loud_mmio - quiet_mmio) / extra_bytes as f64,
    };
    let target = if n.overhead_pct <= 1.5 {
        "met"
    } else {
        "missed"
    };
    let mut t = String::new();
    let _ = writeln!(t, "## Linux boot: Debian's kernel to userspace\n");
    let _ = writeln!(
        t,
        "The same `Image`, busybox initramfs and device tree (`cargo xtask guest-dtb`, seeded) on bare QEMU at EL1\n\
         and under the hypervisor; `quiet`; instructions from the kernel's clock start to the userspace marker\n\
         (its printk timestamp under `-icount shift=0,sleep=off`: every instruction at any EL), one vCPU, 512 MiB.\n"
    );
    let _ = writeln!(
        t,
        "| measurement | bare QEMU | hypervisor | ratio | target |"
    );
    let _ = writeln!(t, "| --- | ---: | ---: | ---: | --- |");
    let _ = writeln!(
        t,
        "| instructions to userspace (millions) | {:.2} | {:.2} | {:+.2} % | ≤ +1.5 %: {target} |",
        n.bare_m, n.hyp_m, n.overhead_pct
    );
    let _ = writeln!(
        t,
        "| wall time to the marker, {vcpus_wall} vCPUs, from QEMU's start (s) | {:.2} | {:.2} | {:.2} × | — |",
        n.wall.0,
        n.wall.1,
        n.wall.1 / n.wall.0
    );
    let _ = writeln!(
        t,
        "| console MMIO exits per character printed | — | {:.2} | — | — |",
        n.exits_per_char
    );
    let _ = write!(t, "\nExits in the quiet one-vCPU boot, by reason:");
    for (reason, count) in exit_list.unwrap_or_default() {
        let _ = write!(t, " {reason} {count},");
    }
    t.pop();
    t.push_str(".\n");
    Ok((t, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = "[    0.000000] Booting Linux\n[    0.774713] linux-guest: marker\n[    0.775479] reboot: Power down\n";
    const HYP: &str = "\
[   0.01] INFO  cpu0: vm0: kernel
[vm0/vcpu0] [    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]\r
[vm0/vcpu0] [    0.775402] linux-guest: marker\r
[   0.880359] INFO  cpu0: stats: exits: hvc 15, smc 0, data abort 464, instruction abort 9, irq 195, wfi 1, sysreg 0, other 0; kicks sent 0
[   0.88] INFO  cpu0: stats: mmio accesses 400, aborts injected 0, pages marked dirty 0
";

    fn loud() -> String {
        let mut s = String::from(HYP).replace("mmio accesses 400", "mmio accesses 2400");
        // 1000 more bytes: 10 lines of 98 characters and their \r\n.
        for _ in 0..10 {
            s.push_str(&format!("[vm0/vcpu0] {}\n", "x".repeat(98)));
        }
        s
    }

    #[test]
    fn readers() {
        assert_eq!(marker_seconds(BARE), Some(0.774713));
        assert_eq!(marker_seconds(HYP), Some(0.775402));
        assert_eq!(marker_seconds("linux-guest: marker\n"), None);
        assert_eq!(
            stopwatch_seconds("x\nstopwatch: 4.25 s to linux-guest: marker\n"),
            Some(4.25)
        );
        assert_eq!(mmio_accesses(HYP), Some(400));
        let e = exits(HYP).unwrap();
        assert_eq!(e[0], ("hvc".to_string(), 15));
        assert_eq!(e[2], ("data abort".to_string(), 464));
        assert_eq!(e.len(), 8);
        assert_eq!(
            guest_bytes("[vm0/vcpu0] abc\r\n[   1.0] INFO x\n[vm0/vcpu1,0] d\n"),
            5 + 3
        );
    }

    #[test]
    fn the_table() {
        let loud = loud();
        let logs = Logs {
            bare: BARE,
            hyp: HYP,
            loud: &loud,
            bare_wall: "stopwatch: 2.00 s to linux-guest: marker\n",
            hyp_wall: "stopwatch: 3.00 s to linux-guest: marker\n",
        };
        let (t, n) = table(&logs, 2).unwrap();
        assert!(
            (n.overhead_pct - 0.0889).abs() < 0.001,
            "{}",
            n.overhead_pct
        );
        assert_eq!(n.exits_per_char, 2.0);
        assert!(t.contains("| instructions to userspace (millions) | 774.71 | 775.40 | +0.09 % | ≤ +1.5 %: met |"), "{t}");
        assert!(t.contains("| 2.00 | 3.00 | 1.50 × |"), "{t}");
        assert!(t.contains("hvc 15, smc 0, data abort 464, instruction abort 9, irq 195, wfi 1, sysreg 0, other 0.\n"), "{t}");
        // A missed target says so.
        let slow = HYP.replace("0.775402", "0.800000");
        let (t, _) = table(&Logs { hyp: &slow, ..logs }, 2).unwrap();
        assert!(t.contains("≤ +1.5 %: missed"), "{t}");
    }

    #[test]
    fn missing_values_are_errors() {
        let logs = Logs {
            bare: "",
            hyp: HYP,
            loud: HYP,
            bare_wall: "",
            hyp_wall: "stopwatch: 3 s to x\n",
        };
        let errors = table(&logs, 2).unwrap_err();
        assert_eq!(
            errors,
            [
                "no marker in the bare -icount run",
                "no stopwatch line in the bare wall-time run",
                "the loud run printed no more than the quiet one"
            ]
        );
    }
}
