//! Parser for the hypervisor's command line (`/chosen/bootargs`).
//!
//! Arguments are whitespace-separated `key=value` or bare `key` tokens.
//! Known keys:
//! - `log=off|error|warn|info|debug|trace`: console log level (default `info`);
//! - `fault=panic|abort|brk|write-text`: deliberately crash after boot, to exercise the
//!   fatal-error paths (used by the smoke tests).
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

/// The parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootArgs<'a> {
    /// Requested log level, if given.
    pub log_level: Option<LogLevel>,
    /// Requested deliberate crash, if any.
    pub fault: Option<FaultInjection>,
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
    pub fn parse(source: &'a str) -> Result<Self, BootArgError<'a>> {
        let mut args = Self {
            log_level: None,
            fault: None,
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
                _ => {}
            }
        }
        Ok(args)
    }

    /// The tokens whose keys this parser does not know.
    pub fn unknown(&self) -> impl Iterator<Item = &'a str> {
        self.source
            .split_ascii_whitespace()
            .filter(|token| !matches!(token.split('=').next(), Some("log" | "fault")))
    }
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

    proptest! {
        #[test]
        fn parse_never_panics(line in "[a-z=\\t ]{0,40}") {
            let _ = BootArgs::parse(&line).map(|a| a.unknown().count());
        }
    }
}
