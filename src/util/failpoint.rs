//! Crash points for tests: `EXECRELAY_FAILPOINT=<name>` makes the relay SIGKILL itself when it
//! reaches the named point, so an end-to-end test can stop it exactly between two durable steps
//! (as a power cut would) instead of racing a timer. Unset, a check is one load of a cached
//! `Option`.

use std::sync::OnceLock;

/// Set by tests only; read once.
pub const VARIABLE: &str = "EXECRELAY_FAILPOINT";

/// After an inbound message is stored, before the command processor is told of it (and so before
/// an adapter confirms it to its platform).
pub const INBOUND_STORED: &str = "inbound-stored";
/// After a job and its acknowledgement are committed, before its supervisor is spawned.
pub const JOB_RECORDED: &str = "job-recorded";
/// After a job's supervisor exited, before its end and completion event are recorded.
pub const JOB_EXITED: &str = "job-exited";
/// After a job's completion event is committed, before a heartbeat hands it to the outbox.
pub const EVENT_QUEUED: &str = "event-queued";
/// After a heartbeat wrote events into an outbox row, before any of it is sent.
pub const OUTBOX_WRITTEN: &str = "outbox-written";
/// After the platform accepted a chunk, before that is recorded.
pub const CHUNK_SENT: &str = "chunk-sent";
/// The same, for a chunk with more of its message still to send: the message is cut in two.
pub const MID_MESSAGE: &str = "mid-message";

/// In a job's supervisor (which inherits the relay's environment): a pause before it installs
/// its signal handlers and writes its pid file, to widen the moment `/kill` and a restart must
/// wait out.
pub const SUPERVISOR_SLOW_START: &str = "supervisor-slow-start";

/// Not a crash: right after the workers start, the start fails with an error (once their first
/// sends are under way), so a test sees that whatever fails, what is in flight is recorded.
pub const FAIL_AFTER_START: &str = "fail-after-start";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(VARIABLE).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Whether `name` is the armed point.
pub fn is_armed(name: &str) -> bool {
    armed() == Some(name)
}

/// Sleeps here if `name` is the armed point (for points that widen a window, not crash).
pub fn pause(name: &str, pause: std::time::Duration) {
    if armed() == Some(name) {
        std::thread::sleep(pause);
    }
}

/// Kills the process here if `name` is the armed crash point.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        tracing::warn!(failpoint = name, "{VARIABLE}: killing the relay here");
        // SAFETY: kill(2) on our own pid; SIGKILL runs no handlers, like a power cut.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
