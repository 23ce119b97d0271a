//! Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! A log line that cannot be written (stderr a closed pipe, a terminal gone) is dropped. The
//! formatter's own fallback for a failed write is `eprintln!`, which panics on that same
//! stderr, inside whatever task logged: a relay that cannot log would stop delivering and
//! ignore SIGTERM. Logging is never allowed to stop work.

use std::io::{IsTerminal, Write};

pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(|| StderrOrNowhere)
        .log_internal_errors(false)
        // Colour for a person at a terminal; plain text for files and journald.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Stderr, where a failed write counts as written.
struct StderrOrNowhere;

impl Write for StderrOrNowhere {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// A line for a person on stderr, dropped if stderr is gone (`eprintln!` would panic).
pub fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
