//! The `log` backend: one console line per record, stamped with the time
//! since boot (generic timer) and the logical CPU id.

use hvcore::bootargs::LogLevel;
use log::{LevelFilter, Log, Metadata, Record};

use crate::arch::{console, cpu, percpu};

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (secs, micros) = cpu::uptime();
        console::print(format_args!(
            "[{secs:4}.{micros:06}] {:<5} cpu{}: {}\n",
            record.level(),
            percpu::current_id(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`. Later calls only change the level.
pub fn init(level: LogLevel) {
    // An error only means a logger is already installed: keep it.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match level {
        LogLevel::Off => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    });
}
