//! Parser for the hypervisor's command line (`/chosen/bootargs`).
//!
//! Arguments are whitespace-separated `key=value` or bare `key` tokens.
//! Known keys:
//! - `log=off|error|warn|info|debug|trace`: console log level (default `info`);
//! - `fault=panic|abort|brk|write-text`: deliberately crash after boot, to exercise the
//!   fatal-error paths (used by the smoke tests);
//! - `guest=none`: run no guest, even if an image was handed over;
//! - `guest.mem=SIZE`: guest RAM in bytes, with an optional `K`, `M` or `G` suffix
//!   (decimal, or hexadecimal with `0x`); a multiple of 2 MiB, at least 2 MiB;
//! - `guest.smp=N`: number of vCPUs, 1 to [`MAX_GUEST_SMP`].
//! - `guest.block=4K|2M|1G`: the largest block a stage-2 fault maps (default 1G);
//! - `bench=on|off`: answer the guest's benchmark hypercalls (`docs/guest-abi.md`;
//!   default off, when they are `NOT_SUPPORTED` like any unknown function).
//! - `verdict.token=TOKEN`: the token the run's verdict line carries (1 to 32 letters and
//!   digits; `hvcore::verdict`);
//! - `reset=reboot|exit|N`: what a guest's `SYSTEM_RESET` does: reboot its VM (default),
//!   end it with its own exit status (for tests), or reboot it N times and end it at the
//!   next;
//! - `guest.console=log|raw`: guest output as tagged, escaped whole lines (default), or byte by
//!   byte as the guest wrote it, untagged (an interactive session's terminal).
//!
//! - `migrate.vm=N`: the VM `migrate=` copies, with several (default 0).
//!
//! Unknown keys are not errors (a later guest kernel command line may share
//! the string); the caller can list them with [`BootArgs::unknown`].

use core::fmt;

/// Console log verbosity, most to least severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// No log output.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Informational messages (the default).
    Info,
    /// Debug messages.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// All accepted spellings, in order.
    pub const NAMES: [&'static str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "off" => Self::Off,
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }
}

/// A deliberate crash requested with `fault=`, to test the fatal paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultInjection {
    /// A Rust panic.
    Panic,
    /// A data abort at EL2 (a load from outside the translated address space).
    Abort,
    /// A `brk` instruction at EL2.
    Brk,
    /// A write to the hypervisor's own code, which the EL2 MMU maps read-only.
    WriteText,
}

impl FaultInjection {
    /// All accepted spellings, in order.
    pub const NAMES: [&'static str; 4] = ["panic", "abort", "brk", "write-text"];

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "panic" => Self::Panic,
            "abort" => Self::Abort,
            "brk" => Self::Brk,
            "write-text" => Self::WriteText,
            _ => return None,
        })
    }
}

/// Granule of `guest.mem=`: guest RAM is mapped with 2 MiB blocks.
pub const GUEST_MEM_GRANULE: u64 = 2 << 20;

/// Largest `guest.smp=`.
pub const MAX_GUEST_SMP: usize = 8;

/// The keys this parser knows; everything else is listed by
/// [`BootArgs::unknown`].
const KNOWN_KEYS: [&str; 14] = [
    "log",
    "fault",
    "guest",
    "guest.mem",
    "guest.smp",
    "guest.block",
    "migrate",
    "migrate.window",
    "migrate.converge",
    "migrate.vm",
    "bench",
    "verdict.token",
    "reset",
    "guest.console",
];

/// Most pre-copy rounds `migrate=` accepts.
pub const MAX_MIGRATE_ROUNDS: u32 = 1000;

/// Largest `migrate.window=`.
pub const MAX_MIGRATE_WINDOW: u32 = 1_000_000;

/// Largest `migrate.converge=` (pages).
pub const MAX_MIGRATE_CONVERGE: u32 = 1 << 20;

/// The parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootArgs<'a> {
    /// Requested log level, if given.
    pub log_level: Option<LogLevel>,
    /// Requested deliberate crash, if any.
    pub fault: Option<FaultInjection>,
    /// `guest=none`: run no guest even if an image was handed over.
    pub guest_none: bool,
    /// `guest.mem=`: guest RAM in bytes (a multiple of
    /// [`GUEST_MEM_GRANULE`], at least that), if given.
    pub guest_mem: Option<u64>,
    /// `guest.smp=`: number of vCPUs (1..=[`MAX_GUEST_SMP`]), if given.
    pub guest_smp: Option<usize>,
    /// `guest.block=4K|2M|1G`: the largest block a stage-2 fault maps, if
    /// given (4K makes every guest page its own fault).
    pub guest_block: Option<u64>,
    /// `migrate=N`: live-migrate the guest's RAM with at most N pre-copy
    /// rounds (1..=[`MAX_MIGRATE_ROUNDS`]) on a CPU that runs no vCPU.
    pub migrate: Option<u32>,
    /// `migrate.window=N`: the migration's shared walks spin N times
    /// between reading an entry and swapping it, so that vCPU faults race
    /// them (a test knob; 0..=[`MAX_MIGRATE_WINDOW`]).
    pub migrate_window: Option<u32>,
    /// `migrate.converge=PAGES`: pre-copy ends, and the final round
    /// begins, once a round takes at most PAGES pages
    /// (0..=[`MAX_MIGRATE_CONVERGE`]; 0: only a round that finds none).
    pub migrate_converge: Option<u32>,
    /// `migrate.vm=N`: the VM a migration copies (default 0).
    pub migrate_vm: Option<usize>,
    /// `bench=on`: the benchmark hypercalls are answered (default off).
    pub bench: bool,
    /// `verdict.token=`: the verdict line's token.
    pub verdict_token: Option<&'a str>,
    /// `reset=`: how many reboots a VM gets before a `SYSTEM_RESET` ends
    /// it (`exit`: 0; `N`; default `reboot`: no limit).
    pub reset_limit: Option<u32>,
    /// `guest.console=raw`: guest output byte by byte, untagged (default: tagged
    /// lines).
    pub console_raw: bool,
    source: &'a str,
}

/// Why the command line was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootArgError<'a> {
    /// A known key with a value it does not accept (or no value).
    BadValue {
        /// The key, e.g. `log`.
        key: &'a str,
        /// The value given (empty when there was none).
        value: &'a str,
        /// The accepted values.
        expected: &'static [&'static str],
    },
    /// A known key whose value is not one of a list but still wrong (a
    /// size, a count); `reason` says what it must be.
    Invalid {
        /// The key, e.g. `guest.mem`.
        key: &'a str,
        /// The value given (empty when there was none).
        value: &'a str,
        /// What is wrong, e.g. `guest memory must be a multiple of 2M`.
        reason: &'static str,
    },
}

impl fmt::Display for BootArgError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadValue {
                key,
                value,
                expected,
            } => {
                write!(f, "bad boot argument `{key}={value}`: expected {key}=")?;
                for (i, name) in expected.iter().enumerate() {
                    if i > 0 {
                        f.write_str("|")?;
                    }
                    f.write_str(name)?;
                }
                Ok(())
            }
            Self::Invalid { key, value, reason } => {
                write!(f, "bad boot argument `{key}={value}`: {reason}")
            }
        }
    }
}

fn params(source: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    source
        .split_ascii_whitespace()
        .map(|token| match token.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (token, None),
        })
}

impl<'a> BootArgs<'a> {
    /// Parses a command line. A later occurrence of a key overrides an
    /// earlier one.
    ///
    /// # Errors
    ///
    /// [`BootArgError::BadValue`] when a known key has a value it does not
    /// accept; the error names the key, the value and the accepted values.
    /// [`BootArgError::Invalid`] for a `guest.mem=` or `guest.smp=` value
    /// that is not a number, or out of range; the error says why.
    pub fn parse(source: &'a str) -> Result<Self, BootArgError<'a>> {
        let mut args = Self {
            log_level: None,
            fault: None,
            guest_none: false,
            guest_mem: None,
            guest_smp: None,
            guest_block: None,
            migrate: None,
            migrate_window: None,
            migrate_converge: None,
            migrate_vm: None,
            bench: false,
            verdict_token: None,
            reset_limit: None,
            console_raw: false,
            source,
        };
        for (key, value) in params(source) {
            let bad = |expected| BootArgError::BadValue {
                key,
                value: value.unwrap_or(""),
                expected,
            };
            match key {
                "log" => {
                    let level = value.and_then(LogLevel::parse);
                    args.log_level = Some(level.ok_or_else(|| bad(&LogLevel::NAMES))?);
                }
                "fault" => {
                    let fault = value.and_then(FaultInjection::parse);
                    args.fault = Some(fault.ok_or_else(|| bad(&FaultInjection::NAMES))?);
                }
                "bench" => match value {
                    Some("on") => args.bench = true,
                    Some("off") => args.bench = false,
                    _ => return Err(bad(&["on", "off"])),
                },
                "reset" => match value {
                    Some("reboot") => args.reset_limit = None,
                    Some("exit") => args.reset_limit = Some(0),
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                        let n = n.parse().map_err(|_| bad(&["reboot", "exit", "N"]))?;
                        args.reset_limit = Some(n);
                    }
                    _ => return Err(bad(&["reboot", "exit", "N"])),
                },
                "guest.console" => match value {
                    Some("log") => args.console_raw = false,
                    Some("raw") => args.console_raw = true,
                    _ => return Err(bad(&["log", "raw"])),
                },
                "verdict.token" => {
                    let value = value.unwrap_or("");
                    if !crate::verdict::valid_token(value) {
                        return Err(BootArgError::Invalid {
                            key,
                            value,
                            reason: "expected 1 to 32 letters and digits",
                        });
                    }
                    args.verdict_token = Some(value);
                }
                "guest" => match value {
                    Some("none") => args.guest_none = true,
                    _ => return Err(bad(&["none"])),
                },
                "guest.mem" => {
                    let value = value.unwrap_or("");
                    let invalid = |reason| BootArgError::Invalid { key, value, reason };
                    args.guest_mem = Some(parse_guest_mem(value).map_err(invalid)?);
                }
                "guest.block" => {
                    let value = value.unwrap_or("");
                    args.guest_block =
                        Some(parse_guest_block(value).ok_or(BootArgError::Invalid {
                            key,
                            value,
                            reason: "expected a block size of 4K, 2M or 1G",
                        })?);
                }
                "guest.smp" => {
                    let value = value.unwrap_or("");
                    args.guest_smp = Some(parse_guest_smp(value).ok_or(BootArgError::Invalid {
                        key,
                        value,
                        reason: "expected a vCPU count from 1 to 8",
                    })?);
                }
                "migrate" => {
                    let value = value.unwrap_or("");
                    args.migrate = Some(parse_count(value, MAX_MIGRATE_ROUNDS).ok_or(
                        BootArgError::Invalid {
                            key,
                            value,
                            reason: "expected a number of pre-copy rounds from 1 to 1000",
                        },
                    )?);
                }
                "migrate.vm" => {
                    let value = value.unwrap_or("");
                    let vm = match value {
                        "0" => Some(0),
                        v => parse_count(v, 7),
                    };
                    args.migrate_vm = Some(vm.ok_or(BootArgError::Invalid {
                        key,
                        value,
                        reason: "expected a VM number from 0 to 7",
                    })? as usize);
                }
                "migrate.window" => {
                    let value = value.unwrap_or("");
                    let spins = match value {
                        "0" => Some(0),
                        v => parse_count(v, MAX_MIGRATE_WINDOW),
                    };
                    args.migrate_window = Some(spins.ok_or(BootArgError::Invalid {
                        key,
                        value,
                        reason: "expected a spin count from 0 to 1000000",
                    })?);
                }
                "migrate.converge" => {
                    let value = value.unwrap_or("");
                    let pages = match value {
                        "0" => Some(0),
                        v => parse_count(v, MAX_MIGRATE_CONVERGE),
                    };
                    args.migrate_converge = Some(pages.ok_or(BootArgError::Invalid {
                        key,
                        value,
                        reason: "expected a page count from 0 to 1048576",
                    })?);
                }
                _ => {}
            }
        }
        Ok(args)
    }

    /// The tokens whose keys this parser does not know.
    pub fn unknown(&self) -> impl Iterator<Item = &'a str> {
        self.source.split_ascii_whitespace().filter(|token| {
            let key = token.split('=').next().unwrap_or(token);
            !KNOWN_KEYS.contains(&key)
        })
    }
}

/// What a `guest.mem=` value that is not a size gets told.
const SIZE_SYNTAX: &str =
    "expected a size in bytes with an optional K, M or G suffix, e.g. guest.mem=256M";

/// Parses a size: decimal, or hexadecimal with `0x`, then an optional
/// `K`, `M` or `G` (either case) multiplying by 2^10, 2^20, 2^30.
fn parse_size(value: &str) -> Result<u64, &'static str> {
    let (digits, shift) = match value.as_bytes().last() {
        Some(b'k' | b'K') => (&value[..value.len() - 1], 10),
        Some(b'm' | b'M') => (&value[..value.len() - 1], 20),
        Some(b'g' | b'G') => (&value[..value.len() - 1], 30),
        _ => (value, 0),
    };
    let (digits, radix) = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => (hex, 16),
        None => (digits, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(SIZE_SYNTAX);
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or("size does not fit in 64 bits")
}

/// Parses and checks `guest.mem=` (also a VM's `mem=`, `crate::vmspec`).
pub(crate) fn parse_guest_mem(value: &str) -> Result<u64, &'static str> {
    let size = parse_size(value)?;
    if size < GUEST_MEM_GRANULE {
        return Err("guest memory must be at least 2M");
    }
    if !size.is_multiple_of(GUEST_MEM_GRANULE) {
        return Err("guest memory must be a multiple of 2M");
    }
    Ok(size)
}

/// Parses `guest.block=`: one of the three leaf sizes of the 4 KiB granule.
fn parse_guest_block(value: &str) -> Option<u64> {
    match value {
        "4K" | "4k" => Some(4 << 10),
        "2M" | "2m" => Some(2 << 20),
        "1G" | "1g" => Some(1 << 30),
        _ => None,
    }
}

/// Parses and checks `guest.smp=`: a decimal count, 1..=`MAX_GUEST_SMP`.
fn parse_guest_smp(value: &str) -> Option<usize> {
    parse_count(value, MAX_GUEST_SMP as u32).map(|n| n as usize)
}

/// A decimal count from 1 to `max`.
fn parse_count(value: &str, max: u32) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = value.parse().ok()?;
    (1..=max).contains(&n).then_some(n)
}

/// The verdict token of a command line (the last valid `verdict.token=`),
/// found even when the rest of the line does not parse: a boot error's
/// verdict must still carry it.
#[must_use]
pub fn verdict_token(line: &str) -> Option<&str> {
    params(line)
        .filter(|(key, _)| *key == "verdict.token")
        .filter_map(|(_, value)| value.filter(|v| crate::verdict::valid_token(v)))
        .last()
}

/// Splits a command line at a lone `--`: what comes before is the
/// hypervisor's, what follows is the guest's `/chosen/bootargs` (with its
/// leading spaces dropped). Without one, all of it is the hypervisor's.
#[must_use]
pub fn split_guest(line: &str) -> (&str, &str) {
    let mut at = 0;
    for token in line.split(' ') {
        if token == "--" {
            return (&line[..at], line[at + 2..].trim_start());
        }
        at += token.len() + 1;
    }
    (line, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_line_has_defaults() {
        let args = BootArgs::parse("").unwrap();
        assert_eq!(args.log_level, None);
        assert_eq!(args.fault, None);
        assert!(!args.guest_none);
        assert_eq!(args.guest_mem, None);
        assert_eq!(args.guest_smp, None);
        assert_eq!(args.unknown().count(), 0);
    }

    #[test]
    fn every_log_level() {
        for (name, level) in LogLevel::NAMES.iter().zip([
            LogLevel::Off,
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ]) {
            let line = format!("log={name}");
            assert_eq!(BootArgs::parse(&line).unwrap().log_level, Some(level));
        }
    }

    #[test]
    fn last_occurrence_wins_and_unknown_are_kept() {
        let args = BootArgs::parse("  console=ttyAMA0 log=warn\tquiet log=trace ").unwrap();
        assert_eq!(args.log_level, Some(LogLevel::Trace));
        assert_eq!(
            args.unknown().collect::<Vec<_>>(),
            ["console=ttyAMA0", "quiet"]
        );
    }

    #[test]
    fn bad_log_value_is_a_clear_error() {
        let err = BootArgs::parse("log=loud").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad boot argument `log=loud`: expected log=off|error|warn|info|debug|trace"
        );
        let err = BootArgs::parse("log").unwrap_err();
        assert!(matches!(err, BootArgError::BadValue { value: "", .. }));
        assert!(BootArgs::parse("log=").is_err());
        assert!(BootArgs::parse("log=INFO").is_err());
    }

    #[test]
    fn fault_injection() {
        assert_eq!(
            BootArgs::parse("fault=abort").unwrap().fault,
            Some(FaultInjection::Abort)
        );
        assert_eq!(
            BootArgs::parse("fault=brk log=off").unwrap().fault,
            Some(FaultInjection::Brk)
        );
        assert_eq!(
            BootArgs::parse("fault=write-text").unwrap().fault,
            Some(FaultInjection::WriteText)
        );
        assert!(BootArgs::parse("fault=everything").is_err());
    }

    #[test]
    fn guest_options() {
        let args = BootArgs::parse("guest=none guest.mem=256M guest.smp=4").unwrap();
        assert!(args.guest_none);
        assert_eq!(args.guest_mem, Some(256 << 20));
        assert_eq!(args.guest_smp, Some(4));
        assert_eq!(args.unknown().count(), 0);
        // Other guest.* keys are not ours: listed, not errors.
        let args = BootArgs::parse("guest.foo=1 guests=2 log=info guest.mem=2M").unwrap();
        assert_eq!(
            args.unknown().collect::<Vec<_>>(),
            ["guest.foo=1", "guests=2"]
        );
        assert!(!args.guest_none);
    }

    #[test]
    fn guest_block_sizes() {
        assert_eq!(
            BootArgs::parse("guest.block=4K").unwrap().guest_block,
            Some(4096)
        );
        assert_eq!(
            BootArgs::parse("guest.block=2m").unwrap().guest_block,
            Some(2 << 20)
        );
        assert_eq!(
            BootArgs::parse("guest.block=1G").unwrap().guest_block,
            Some(1 << 30)
        );
        assert_eq!(BootArgs::parse("").unwrap().guest_block, None);
        let err = BootArgs::parse("guest.block=8K").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad boot argument `guest.block=8K`: expected a block size of 4K, 2M or 1G"
        );
    }

    #[test]
    fn guest_mem_sizes() {
        for (value, bytes) in [
            ("2M", 2 << 20),
            ("2m", 2 << 20),
            ("4096K", 4 << 20),
            ("4096k", 4 << 20),
            ("1G", 1 << 30),
            ("3g", 3 << 30),
            ("2097152", 2 << 20),
            ("0x200000", 2 << 20),
            ("0X40000000", 1 << 30),
            ("0x10M", 16 << 20),
            ("1024G", 1 << 40),
        ] {
            let line = format!("guest.mem={value}");
            assert_eq!(
                BootArgs::parse(&line).unwrap().guest_mem,
                Some(bytes),
                "{line}"
            );
        }
        // The last occurrence wins.
        let args = BootArgs::parse("guest.mem=2M guest.mem=64M").unwrap();
        assert_eq!(args.guest_mem, Some(64 << 20));
    }

    #[test]
    fn bad_guest_mem_is_a_clear_error() {
        let syntax =
            "expected a size in bytes with an optional K, M or G suffix, e.g. guest.mem=256M";
        for (value, reason) in [
            ("", syntax),
            ("M", syntax),
            ("lots", syntax),
            ("2T", syntax),
            ("2MB", syntax),
            ("-2M", syntax),
            ("+2M", syntax),
            ("0x", syntax),
            ("0xG", syntax),
            ("12ab", syntax),
            ("0", "guest memory must be at least 2M"),
            ("0M", "guest memory must be at least 2M"),
            ("1M", "guest memory must be at least 2M"),
            ("2097151", "guest memory must be at least 2M"),
            ("3M", "guest memory must be a multiple of 2M"),
            ("2097153", "guest memory must be a multiple of 2M"),
            ("3073K", "guest memory must be a multiple of 2M"),
            ("18446744073709551616", "size does not fit in 64 bits"),
            ("17179869184G", "size does not fit in 64 bits"),
        ] {
            let line = format!("guest.mem={value}");
            let err = BootArgs::parse(&line).unwrap_err();
            assert_eq!(
                err,
                BootArgError::Invalid {
                    key: "guest.mem",
                    value,
                    reason
                },
                "{line}"
            );
            assert_eq!(
                err.to_string(),
                format!("bad boot argument `guest.mem={value}`: {reason}")
            );
        }
        // A bare key reads as an empty value.
        assert_eq!(
            BootArgs::parse("guest.mem").unwrap_err().to_string(),
            format!("bad boot argument `guest.mem=`: {syntax}")
        );
        assert_eq!(
            BootArgs::parse("guest.mem=3M").unwrap_err().to_string(),
            "bad boot argument `guest.mem=3M`: guest memory must be a multiple of 2M"
        );
    }

    #[test]
    fn guest_smp() {
        for n in 1..=MAX_GUEST_SMP {
            let line = format!("guest.smp={n}");
            assert_eq!(BootArgs::parse(&line).unwrap().guest_smp, Some(n));
        }
        assert_eq!(BootArgs::parse("guest.smp=02").unwrap().guest_smp, Some(2));
        for value in [
            "0",
            "9",
            "100",
            "",
            "-1",
            "+1",
            "one",
            "0x2",
            "18446744073709551617",
        ] {
            let line = format!("guest.smp={value}");
            let Err(err) = BootArgs::parse(&line) else {
                panic!("{line:?} accepted");
            };
            assert_eq!(
                err.to_string(),
                format!("bad boot argument `guest.smp={value}`: expected a vCPU count from 1 to 8"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn migrate_rounds() {
        assert_eq!(BootArgs::parse("").unwrap().migrate, None);
        assert_eq!(BootArgs::parse("migrate=1").unwrap().migrate, Some(1));
        assert_eq!(BootArgs::parse("migrate=1000").unwrap().migrate, Some(1000));
        assert_eq!(
            BootArgs::parse("migrate").unwrap_err().to_string(),
            "bad boot argument `migrate=`: expected a number of pre-copy rounds from 1 to 1000"
        );
        for value in ["0", "1001", "x", "-3", "99999999999"] {
            let line = format!("migrate={value}");
            assert!(
                matches!(
                    BootArgs::parse(&line),
                    Err(BootArgError::Invalid { key: "migrate", .. })
                ),
                "{line:?} accepted"
            );
        }
        assert_eq!(BootArgs::parse("migrate=3").unwrap().unknown().count(), 0);
        let args = BootArgs::parse("migrate=3 migrate.window=500").unwrap();
        assert_eq!(args.migrate_window, Some(500));
        assert_eq!(args.unknown().count(), 0);
        assert_eq!(
            BootArgs::parse("migrate.window=0").unwrap().migrate_window,
            Some(0)
        );
        for value in ["", "-1", "1000001", "1e3"] {
            let line = format!("migrate.window={value}");
            assert!(
                matches!(
                    BootArgs::parse(&line),
                    Err(BootArgError::Invalid {
                        key: "migrate.window",
                        ..
                    })
                ),
                "{line:?} accepted"
            );
        }
    }

    #[test]
    fn migrate_converge() {
        assert_eq!(BootArgs::parse("migrate=3").unwrap().migrate_converge, None);
        for (value, want) in [("0", 0), ("16", 16), ("1048576", 1 << 20)] {
            let line = format!("migrate=3 migrate.converge={value}");
            let args = BootArgs::parse(&line).unwrap();
            assert_eq!(args.migrate_converge, Some(want), "{line}");
            assert_eq!(args.unknown().count(), 0);
        }
        for value in ["", "-1", "1048577", "16k", "00x"] {
            let line = format!("migrate.converge={value}");
            assert_eq!(
                BootArgs::parse(&line).unwrap_err().to_string(),
                format!(
                    "bad boot argument `migrate.converge={value}`: expected a page count from 0 to 1048576"
                ),
                "{line:?}"
            );
        }
    }

    #[test]
    fn bench_switch() {
        assert!(!BootArgs::parse("").unwrap().bench);
        assert!(BootArgs::parse("bench=on").unwrap().bench);
        assert!(!BootArgs::parse("bench=on bench=off").unwrap().bench);
        assert_eq!(BootArgs::parse("bench=on").unwrap().unknown().count(), 0);
        for line in ["bench", "bench=", "bench=yes", "bench=ON"] {
            let value = line.strip_prefix("bench=").unwrap_or("");
            assert_eq!(
                BootArgs::parse(line).unwrap_err().to_string(),
                format!("bad boot argument `bench={value}`: expected bench=on|off")
            );
        }
    }

    #[test]
    fn migrate_vm() {
        assert_eq!(BootArgs::parse("").unwrap().migrate_vm, None);
        assert_eq!(BootArgs::parse("migrate.vm=0").unwrap().migrate_vm, Some(0));
        assert_eq!(BootArgs::parse("migrate.vm=7").unwrap().migrate_vm, Some(7));
        for bad in ["migrate.vm=8", "migrate.vm=", "migrate.vm=x"] {
            assert!(BootArgs::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_switches() {
        let a = BootArgs::parse("verdict.token=ab12 reset=exit guest.console=raw").unwrap();
        assert_eq!(a.verdict_token, Some("ab12"));
        assert_eq!(a.reset_limit, Some(0));
        assert!(a.console_raw);
        assert_eq!(BootArgs::parse("reset=3").unwrap().reset_limit, Some(3));
        assert_eq!(BootArgs::parse("reset=0").unwrap().reset_limit, Some(0));
        for bad in ["reset=-1", "reset=99999999999", "reset="] {
            assert!(BootArgs::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(a.unknown().count(), 0);
        let d = BootArgs::parse("").unwrap();
        assert_eq!(d.verdict_token, None);
        assert!(d.reset_limit.is_none() && !d.console_raw);
        let back =
            BootArgs::parse("reset=exit reset=reboot guest.console=raw guest.console=log").unwrap();
        assert!(back.reset_limit.is_none() && !back.console_raw);
        for (line, err) in [
            (
                "reset=halt",
                "bad boot argument `reset=halt`: expected reset=reboot|exit|N",
            ),
            (
                "guest.console",
                "bad boot argument `guest.console=`: expected guest.console=log|raw",
            ),
            (
                "verdict.token=a-b",
                "bad boot argument `verdict.token=a-b`: expected 1 to 32 letters and digits",
            ),
            (
                "verdict.token=",
                "bad boot argument `verdict.token=`: expected 1 to 32 letters and digits",
            ),
        ] {
            assert_eq!(BootArgs::parse(line).unwrap_err().to_string(), err);
        }
    }

    #[test]
    fn the_token_even_from_a_bad_line() {
        assert_eq!(verdict_token("log=bad verdict.token=x1 -- y"), Some("x1"));
        assert_eq!(verdict_token("verdict.token=a verdict.token=b"), Some("b"));
        assert_eq!(
            verdict_token("verdict.token=a verdict.token=b-c"),
            Some("a")
        );
        assert_eq!(verdict_token("verdict.token"), None);
        assert_eq!(verdict_token("xverdict.token=a"), None);
    }

    #[test]
    fn guest_none() {
        assert!(BootArgs::parse("guest=none").unwrap().guest_none);
        for line in ["guest", "guest=", "guest=linux", "guest=NONE"] {
            let err = BootArgs::parse(line).unwrap_err();
            let value = line.strip_prefix("guest=").unwrap_or("");
            assert_eq!(
                err.to_string(),
                format!("bad boot argument `guest={value}`: expected guest=none")
            );
        }
    }

    proptest! {
        #[test]
        fn guest_mem_round_trips(units in 1u64..(1 << 20), suffix in 0usize..4) {
            let bytes = units * GUEST_MEM_GRANULE;
            let (shift, name) = [(0, ""), (10, "K"), (20, "M"), (30, "G")][suffix];
            prop_assume!(bytes.is_multiple_of(1 << shift));
            let line = format!("guest.mem={}{name}", bytes >> shift);
            prop_assert_eq!(BootArgs::parse(&line).unwrap().guest_mem, Some(bytes));
            let hex = format!("guest.mem={:#x}", bytes);
            prop_assert_eq!(BootArgs::parse(&hex).unwrap().guest_mem, Some(bytes));
        }

        #[test]
        fn guest_mem_off_the_granule_is_refused(bytes in any::<u64>()) {
            prop_assume!(!bytes.is_multiple_of(GUEST_MEM_GRANULE));
            let line = format!("guest.mem={bytes}");
            prop_assert!(BootArgs::parse(&line).is_err());
        }

        #[test]
        fn parse_never_panics(line in "[a-z=\\t ]{0,40}") {
            let _ = BootArgs::parse(&line).map(|a| a.unknown().count());
        }
    }

    #[test]
    fn split_at_a_lone_double_dash() {
        assert_eq!(split_guest("log=info"), ("log=info", ""));
        assert_eq!(split_guest("log=info -- a b"), ("log=info ", "a b"));
        assert_eq!(split_guest("-- a"), ("", "a"));
        assert_eq!(split_guest("log=info --"), ("log=info ", ""));
        assert_eq!(
            split_guest("x --y -- z -- w"),
            ("x --y ", "z -- w"),
            "the first lone one"
        );
        assert_eq!(split_guest("a --  spaced"), ("a ", "spaced"));
        assert_eq!(split_guest("a--b"), ("a--b", ""), "not a lone token");
        assert_eq!(split_guest(""), ("", ""));
    }
}
