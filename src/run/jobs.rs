//! The job ledger's vocabulary: ids, outcomes, the `exec finished:` text and the output tail.
//!
//! Pure functions and small types; the process side is `exec`, the rows are `store`'s.

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use execrelay_channel::Secret;

use crate::run::supervisor::ExitRecord;
use crate::store::JobState;
use crate::util::duration::format_duration;
use crate::util::size::format_size;

/// Six hex digits: short enough to type, and `/tail` takes a unique prefix anyway.
pub fn new_job_id() -> String {
    format!("{:06x}", rand::random_range(0..0x100_0000u32))
}

/// How a job ended, as said in its completion message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exit(i32),
    Signal(i32),
    TimedOut(Duration),
    Killed,
    FailedToStart(String),
    Lost(String),
}

impl Outcome {
    pub fn from_record(record: &ExitRecord, timeout: Duration) -> Outcome {
        if let Some(error) = &record.spawn_error {
            return Outcome::FailedToStart(error.clone());
        }
        if record.timed_out {
            let ran_with = match record.timeout_ms {
                0 => timeout,
                ms => Duration::from_millis(ms),
            };
            return Outcome::TimedOut(ran_with);
        }
        if record.killed {
            return Outcome::Killed;
        }
        match (record.exit_code, record.signal) {
            (Some(code), _) => Outcome::Exit(code),
            (None, Some(signal)) => Outcome::Signal(signal),
            (None, None) => Outcome::Lost("the supervisor recorded no exit status".into()),
        }
    }

    pub fn state(&self) -> JobState {
        match self {
            Outcome::Exit(_) | Outcome::Signal(_) => JobState::Exited,
            Outcome::TimedOut(_) => JobState::TimedOut,
            Outcome::Killed => JobState::Killed,
            Outcome::FailedToStart(_) => JobState::FailedToStart,
            Outcome::Lost(_) => JobState::Lost,
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Exit(0))
    }

    fn label(&self) -> String {
        match self {
            Outcome::Exit(code) => format!("exit {code}"),
            Outcome::Signal(signal) => format!("signal {}", signal_name(*signal)),
            Outcome::TimedOut(limit) => format!("timed out after {}", format_duration(*limit)),
            Outcome::Killed => "killed".into(),
            Outcome::FailedToStart(_) => "failed to start".into(),
            Outcome::Lost(_) => "lost".into(),
        }
    }
}

pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        other => return format!("{other}"),
    };
    name.to_string()
}

/// The last lines of a job's output, bounded in lines and characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    pub text: String,
    /// Lines before the tail; `None` when the log was too large to count cheaply.
    pub omitted_lines: Option<usize>,
    pub truncated: bool,
}

/// Reads the end of `log` only: a job that printed gigabytes costs a few kilobytes here.
/// Secrets are redacted in the whole window before it is cut, so a cut never leaves half a
/// secret at the start of the tail.
pub fn read_tail(
    log: &Path,
    max_lines: usize,
    max_chars: usize,
    redactor: &Redactor,
) -> std::io::Result<Tail> {
    let mut file = match std::fs::File::open(log) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tail::default()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Four bytes a character at most, plus room to find line starts.
    let window = (max_chars as u64).saturating_mul(4).saturating_add(4096);
    let start = len.saturating_sub(window);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(window).read_to_end(&mut bytes)?;
    let whole_file = start == 0;
    if !whole_file {
        // The window may start inside a character: skip its continuation bytes.
        let partial = bytes
            .iter()
            .take(3)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count();
        bytes.drain(..partial);
    }
    let raw = String::from_utf8_lossy(&bytes);
    let raw = raw.strip_suffix('\n').unwrap_or(&raw);
    // A window that starts mid-file starts mid-line: drop that partial line, unless it is the
    // only one (a progress bar, minified JSON, `tr -d '\n'`): then its end is the tail.
    let raw = match raw.split_once('\n') {
        Some((_, rest)) if !whole_file => rest,
        _ => raw,
    };
    // Lines as they show, then redacted: escapes between a secret's parts (`grep --color`)
    // must not hide it from redaction and then join it up again.
    let shown: Vec<Cow<'_, str>> = raw
        .split('\n')
        .map(|line| without_escapes(as_shown(line)))
        .collect();
    let text = redactor.redact(&shown.join("\n"));
    let lines: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    let keep_from = lines.len().saturating_sub(max_lines);
    let mut kept = lines[keep_from..].join("\n");
    let mut truncated = keep_from > 0 || !whole_file;
    let char_count = kept.chars().count();
    if char_count > max_chars {
        let skip = char_count - max_chars;
        let cut = kept.char_indices().nth(skip).map_or(kept.len(), |(i, _)| i);
        kept = kept[cut..].to_string();
        truncated = true;
    }
    Ok(Tail {
        text: kept,
        omitted_lines: whole_file.then_some(keep_from),
        truncated,
    })
}

/// `line` without terminal escape sequences (colours, cursor moves, titles): a chat shows them
/// as noise. CSI (`ESC [` … or `\u{9b}` …, to a final byte), OSC (`ESC ]` … to BEL or `ESC \\`)
/// and other `ESC` sequences go, and any other control character but a tab.
fn without_escapes(line: &str) -> Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']') => skip_osc(&mut chars),
                // `ESC ( B` and the like: intermediate bytes, then one final byte.
                Some(' '..='/') => {
                    while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
                    chars.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.into()
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    // Parameter and intermediate bytes, then one final byte in 0x40..=0x7e.
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
    }
}

fn skip_osc(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' if chars.peek() == Some(&'\\') => {
                chars.next();
                return;
            }
            _ => {}
        }
    }
}

/// A line as a terminal leaves it: what a carriage return rewrote (a progress bar's earlier
/// states) is gone, and a CRLF line ending is no part of it.
fn as_shown(line: &str) -> &str {
    let line = line.strip_suffix('\r').unwrap_or(line);
    line.rsplit('\r').next().unwrap_or(line)
}

/// Replaces configured secrets in text that leaves the relay.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    pub fn new(secrets: Vec<Secret>) -> Redactor {
        Redactor { secrets }
    }

    /// `text` without configured secrets and without common credential shapes
    /// (`credentials::redact_credentials`).
    pub fn redact(&self, text: &str) -> String {
        let mut out = crate::util::credentials::redact_credentials(text).into_owned();
        for secret in &self.secrets {
            if !secret.is_empty() && out.contains(secret.expose()) {
                out = out.replace(secret.expose(), "[redacted]");
            }
        }
        out
    }

    /// The first line of `text`, redacted whole and then cut to `max` characters: cut first,
    /// a secret cut in two would no longer be recognised.
    pub fn one_line(&self, text: &str, max: usize) -> String {
        one_line(&self.redact(text), max)
    }
}

pub struct Completion<'a> {
    pub job_id: &'a str,
    pub command: &'a str,
    pub hide_command: bool,
    pub outcome: &'a Outcome,
    pub duration: Option<Duration>,
    /// Processes the job left running that were stopped when it ended.
    pub stopped_background: u32,
    /// (bytes written, bytes dropped): the job's output, past `max_output`.
    pub output: (u64, u64),
    pub tail: &'a Tail,
}

/// `exec finished: <command> (<outcome> after <duration>, job <id>)` and the output tail.
pub fn render_completion(completion: &Completion<'_>, redactor: &Redactor) -> String {
    let command = if completion.hide_command {
        "command".to_string()
    } else {
        redactor.one_line(completion.command, 200)
    };
    let timing = match (completion.outcome, completion.duration) {
        (Outcome::TimedOut(_), _) | (_, None) => String::new(),
        (_, Some(duration)) => format!(" after {}", format_duration(duration)),
    };
    let stopped = match completion.stopped_background {
        0 => String::new(),
        1 => "; stopped 1 process it left running".into(),
        n => format!("; stopped {n} processes it left running"),
    };
    let mut text = format!(
        "exec finished: {command} ({}{timing}, job {}{stopped})",
        completion.outcome.label(),
        completion.job_id
    );
    match completion.outcome {
        Outcome::Lost(why) => {
            text.push_str(&format!("\noutcome unknown: {why}"));
        }
        Outcome::FailedToStart(why) => text.push_str(&format!("\n{why}")),
        _ => {}
    }
    if let (written, dropped @ 1..) = completion.output {
        text.push_str(&format!(
            "\n[{} of output; the first {} were dropped to stay within exec.max_output]",
            format_size(written),
            format_size(dropped)
        ));
    }
    let tail = completion.tail;
    if tail.truncated {
        match tail.omitted_lines {
            Some(n) if n > 0 => text.push_str(&format!(
                "\n[{n} earlier lines omitted; /tail {} for more]",
                completion.job_id
            )),
            _ => text.push_str(&format!(
                "\n[earlier output omitted; /tail {} for more]",
                completion.job_id
            )),
        }
    }
    if !tail.text.is_empty() {
        text.push('\n');
        text.push_str(&tail.text);
    }
    redactor.redact(&text)
}

/// The first line of `text`, cut at `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(max).collect();
    if out.len() < line.len() || text.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_split_by_escapes_is_redacted_once_they_are_taken_out() {
        let (_dir, path) = write_log(
            b"token: ghp_\x1b[m\x1b[Kabcdefghijklmnopqrstuvwxyz0123456789\nhunt\x1b[1mer2\n",
        );
        let redactor = Redactor::new(vec![Secret::new("hunter2")]);
        let tail = read_tail(&path, 10, 1000, &redactor).unwrap();
        assert!(!tail.text.contains("abcdefghijklmnop"), "{:?}", tail.text);
        assert!(!tail.text.contains("hunter2"), "{:?}", tail.text);
    }

    #[test]
    fn escapes_are_taken_out_of_the_output_shown_in_chat() {
        let line = "\u{1b}[1;31merror\u{1b}[0m: \u{1b}]0;title\u{7}done\u{9b}2K\tok\u{1b}]8;;http://x\u{1b}\\link\u{1b}(B";
        assert_eq!(without_escapes(line), "error: done\toklink");
        assert_eq!(without_escapes("plain"), "plain");
    }

    fn write_log(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn tail_keeps_the_last_lines_and_counts_the_rest() {
        let content: String = (1..=50).map(|n| format!("line {n}\n")).collect();
        let (_dir, path) = write_log(content.as_bytes());
        let tail = read_tail(&path, 3, 1000, &Redactor::default()).unwrap();
        assert_eq!(tail.text, "line 48\nline 49\nline 50");
        assert_eq!(tail.omitted_lines, Some(47));
        assert!(tail.truncated);
    }

    #[test]
    fn tail_is_bounded_in_characters_and_lossy() {
        let (_dir, path) = write_log(b"ok\xff\xfeend\nsecond");
        let tail = read_tail(&path, 40, 1000, &Redactor::default()).unwrap();
        assert_eq!(tail.text, "ok\u{fffd}\u{fffd}end\nsecond");
        let tail = read_tail(&path, 40, 4, &Redactor::default()).unwrap();
        assert_eq!(tail.text, "cond");
        assert!(tail.truncated);
    }

    #[test]
    fn tail_of_a_huge_log_reads_only_its_end() {
        let mut content = vec![b'x'; 3_000_000];
        content.extend_from_slice("\nlast line é\n".as_bytes());
        let (_dir, path) = write_log(&content);
        let tail = read_tail(&path, 40, 100, &Redactor::default()).unwrap();
        assert!(tail.text.ends_with("last line é"), "{}", tail.text);
        assert_eq!(tail.omitted_lines, None);
    }

    /// One line longer than the window (`yes | tr -d '\n'`): its end is the tail, not nothing.
    #[test]
    fn tail_of_one_huge_line_is_its_end() {
        let mut content = "é".repeat(1_000_000).into_bytes();
        content.extend_from_slice(b"THE-END");
        for (name, content) in [
            ("no newline", content.clone()),
            ("a final newline", [&content[..], b"\n"].concat()),
        ] {
            let (_dir, path) = write_log(&content);
            let tail = read_tail(&path, 40, 100, &Redactor::default()).unwrap();
            assert_eq!(tail.text.chars().count(), 100, "{name}");
            assert!(tail.text.ends_with("THE-END"), "{name}: {}", tail.text);
            // Cut on a character boundary: no replacement character at the start.
            assert!(tail.text.starts_with('é'), "{name}: {}", tail.text);
            assert!(tail.truncated, "{name}");
        }
    }

    #[test]
    fn tail_shows_progress_bars_as_a_terminal_does() {
        let (_dir, path) = write_log(b"start\r\n 10%\r 50%\r100%\rdone\nlast\r\n");
        let tail = read_tail(&path, 40, 1000, &Redactor::default()).unwrap();
        assert_eq!(tail.text, "start\ndone\nlast");
    }

    #[test]
    fn missing_log_is_an_empty_tail() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_tail(&dir.path().join("none"), 5, 5, &Redactor::default()).unwrap(),
            Tail::default()
        );
    }

    #[test]
    fn completion_text_has_the_exact_prefix() {
        let tail = Tail {
            text: "hi".into(),
            omitted_lines: Some(0),
            truncated: false,
        };
        let text = render_completion(
            &Completion {
                job_id: "7f3a9c",
                command: "cargo test",
                hide_command: false,
                outcome: &Outcome::Exit(101),
                duration: Some(Duration::from_secs(133)),
                stopped_background: 0,
                output: (0, 0),
                tail: &tail,
            },
            &Redactor::default(),
        );
        assert_eq!(
            text,
            "exec finished: cargo test (exit 101 after 2m 13s, job 7f3a9c)\nhi"
        );
    }

    #[test]
    fn lost_and_signals_say_so() {
        let tail = Tail::default();
        let lost = Outcome::Lost("the relay restarted while it ran".into());
        let text = render_completion(
            &Completion {
                job_id: "a",
                command: "sleep 9",
                hide_command: true,
                outcome: &lost,
                duration: None,
                stopped_background: 0,
                output: (0, 0),
                tail: &tail,
            },
            &Redactor::default(),
        );
        assert_eq!(
            text,
            "exec finished: command (lost, job a)\noutcome unknown: the relay restarted while it ran"
        );
        assert_eq!(Outcome::Signal(9).label(), "signal SIGKILL");
        assert_eq!(
            Outcome::TimedOut(Duration::from_secs(1800)).label(),
            "timed out after 30m"
        );
    }

    #[test]
    fn a_secret_at_the_window_edge_is_redacted_before_the_cut() {
        let (_dir, path) = write_log(b"token=hunter22-long-secret\nok\n");
        let redactor = Redactor::new(vec![Secret::new("hunter22-long-secret")]);
        // Cut so that the last characters of the secret would open the tail.
        let tail = read_tail(&path, 40, 12, &redactor).unwrap();
        assert!(!tail.text.contains("secret"), "{:?}", tail.text);
    }

    #[test]
    fn secrets_are_redacted() {
        let redactor = Redactor::new(vec![Secret::new("hunter22")]);
        assert_eq!(redactor.redact("pw=hunter22!"), "pw=[redacted]!");
    }
}
