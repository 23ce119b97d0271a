//! Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text for a person or
//! as one JSON object a line (`[log] format`, `EXECRELAY_LOG`; `json.rs`).
//!
//! Logging never stops work. A line is handed to a writer thread through a bounded queue:
//! a reader that stalls (a paused pager, a stuck pipe) costs lines, never a task's progress,
//! and a count of what was dropped follows once lines flow again. A write that fails (stderr
//! a closed pipe, a terminal gone) is dropped: the formatter's own fallback for a failed write
//! is `eprintln!`, which would panic on that same stderr, inside whatever task logged, and so
//! stop deliveries and SIGTERM handling.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

pub use crate::config::LogFormat;

mod json;

/// Lines waiting for a slow stderr before new ones are dropped.
const QUEUE: usize = 1024;
/// How long the last lines get to reach stderr when the process ends.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Keeps the writer thread's queue; dropping it waits (bounded) for what is queued.
pub struct LogGuard {
    queue: SyncSender<Line>,
    flushed: Receiver<()>,
}

enum Line {
    Text(Vec<u8>),
    /// Everything before it was written: say so.
    Flush,
}

pub fn init(format: LogFormat) -> LogGuard {
    let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE);
    let (flushed_tx, flushed) = std::sync::mpsc::channel();
    let dropped = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&dropped);
    let started = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(lines, &counted, flushed_tx));
    let writer = QueueWriter {
        queue: queue.clone(),
        dropped,
        // Without its thread, a line goes straight to stderr (and may wait on it).
        direct: started.is_err(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || writer.clone())
            .log_internal_errors(false)
            // Colour for a person at a terminal; plain text for files and journald.
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            tracing_subscriber::registry()
                .with(filter)
                .with(json::SpanFieldsLayer)
                .with(
                    tracing_subscriber::fmt::layer()
                        .event_format(json::JsonLines)
                        .with_writer(move || writer.clone())
                        .log_internal_errors(false),
                )
                .init();
        }
    }
    LogGuard { queue, flushed }
}

fn write_lines(lines: Receiver<Line>, dropped: &AtomicU64, flushed: std::sync::mpsc::Sender<()>) {
    let mut stderr = std::io::stderr();
    for line in lines {
        match line {
            Line::Text(text) => {
                let _ = stderr.write_all(&text);
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = writeln!(stderr, "[{lost} log lines dropped: stderr was not read]");
                }
            }
            Line::Flush => {
                let _ = flushed.send(());
            }
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if self.queue.try_send(Line::Flush).is_ok() {
            let _ = self.flushed.recv_timeout(FLUSH_AT_EXIT);
        }
    }
}

/// One formatted event goes to the queue whole (the formatter writes each in one call).
#[derive(Clone)]
struct QueueWriter {
    queue: SyncSender<Line>,
    dropped: Arc<AtomicU64>,
    direct: bool,
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.direct {
            let _ = std::io::stderr().write_all(buf);
        } else if let Err(TrySendError::Full(_)) = self.queue.try_send(Line::Text(buf.to_vec())) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A line for a person on stderr, dropped if stderr is gone (`eprintln!` would panic). What
/// it quotes (a relay's answer, a config's text) cannot drive the terminal: [`visible`].
pub fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{}", visible(&line.to_string()));
}

/// `text` with terminal control characters made visible (`^[`, `^G`, `\x9b`), newlines and
/// tabs kept: job output printed by a client must not drive the operator's terminal (OSC 52
/// clipboard writes, window titles, cursor moves).
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    // Bidirectional overrides reorder what a terminal shows: they are shown as escapes too.
    let shown = |c: char| {
        c == '\n'
            || c == '\t'
            || !(c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c))
    };
    if text.chars().all(shown) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if shown(c) => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(visible("plain\ttext\nnext"), "plain\ttext\nnext");
        assert_eq!(
            visible("\x1b]52;c;ZXZpbA==\x07 \x1b[2J\r\x7f \u{9b}31m"),
            "^[]52;c;ZXZpbA==^G ^[[2J^M^? \\x9b31m"
        );
        assert_eq!(visible("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(visible("é ü 中文"), "é ü 中文");
    }
}
