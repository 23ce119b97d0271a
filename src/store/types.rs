//! The store's domain types: what the rest of the relay hands the store and gets back (jobs,
//! events, outbox rows and chunks, inbound records, how a send ended), and `StoreError`.
//! Nothing here names a database.

use std::sync::Arc;

use execrelay_channel::{Button, Route};

/// What went wrong in the store, in terms of what a caller does next; no backend named.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation: the backend's own error, as it says it
    /// (and with its own source), so that a chain prints it once.
    #[error(transparent)]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Io(String),
    #[error("the store is closed")]
    Closed,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// An operator named a row that does not exist (or no longer does).
    #[error("{0}")]
    NotFound(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The disk (or a quota, or a file-size limit) refuses to grow the store's files.
    #[error("the disk is full or refuses writes: {0}")]
    DiskFull(Arc<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether the disk (or its quota) is full: new work is refused, queued work waits.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull(_))
    }
}

/// Milliseconds since the Unix epoch: every timestamp in the store.
pub type Millis = i64;

/// Where the store reads the time: the system clock, or a test's own.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The system clock, as a [`Clock`].
pub fn system_clock() -> Clock {
    Arc::new(now_ms)
}

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Starting,
    Running,
    Exited,
    FailedToStart,
    TimedOut,
    Killed,
    Lost,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Exited => "exited",
            JobState::FailedToStart => "failed_to_start",
            JobState::TimedOut => "timed_out",
            JobState::Killed => "killed",
            JobState::Lost => "lost",
        }
    }

    pub fn parse(text: &str) -> Result<JobState, StoreError> {
        Ok(match text {
            "starting" => JobState::Starting,
            "running" => JobState::Running,
            "exited" => JobState::Exited,
            "failed_to_start" => JobState::FailedToStart,
            "timed_out" => JobState::TimedOut,
            "killed" => JobState::Killed,
            "lost" => JobState::Lost,
            other => return Err(StoreError::Corrupt(format!("unknown job state `{other}`"))),
        })
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Starting | JobState::Running)
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub session: String,
    pub origin: Route,
    pub command: String,
    pub cwd: String,
    pub requester: String,
}

/// A job whose acknowledgement may be edited with its progress.
#[derive(Debug, Clone)]
pub struct ProgressTarget {
    pub job: JobRecord,
    /// Where the acknowledgement went.
    pub route: Route,
    /// The platform's id of the acknowledgement's last chunk, which carries its buttons.
    pub message_id: String,
    /// A message to the same chat waits in the outbox: it goes first.
    pub chat_busy: bool,
}

#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub session: String,
    pub origin: Route,
    pub command: String,
    pub cwd: String,
    pub requester: String,
    pub state: JobState,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub supervisor_pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct JobFinal {
    pub state: JobState,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub started_at: Option<Millis>,
    pub finished_at: Millis,
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub session: String,
    /// At most one event per key, ever (`exec:<job id>`).
    pub context_key: Option<String>,
    pub text: String,
    pub origin: Option<Route>,
    /// The heartbeat reason this event asks for; `None` waits for the next scheduled run.
    pub wake: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: i64,
    pub session: String,
    pub context_key: Option<String>,
    pub text: String,
    pub origin: Option<Route>,
    pub wake: Option<String>,
    pub blocked: Option<String>,
    pub coalesced: i64,
    pub created_at: Millis,
}

/// A message to write to the outbox, already split into chunks for its channel.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    pub route: Route,
    pub session: Option<String>,
    /// `reply` (to a command), `ack` (a job's acknowledgement) or `events` (a heartbeat's
    /// delivery).
    pub kind: &'static str,
    pub chunks: Vec<String>,
    /// The job the message is about: its acknowledgement, its completion.
    pub job_id: Option<String>,
    /// Under the last chunk.
    pub buttons: Vec<Button>,
}

#[derive(Debug, Clone)]
pub struct InboxRecord {
    pub id: i64,
    pub session: String,
    pub route: Route,
    pub sender: String,
    pub text: String,
    /// When the platform says it was sent (unix ms), where the adapter says.
    pub sent_at_ms: Option<Millis>,
    /// When the relay stored it (unix ms).
    pub received_at_ms: Millis,
}

#[derive(Debug, Clone)]
pub struct InboundRecord {
    pub session: String,
    pub route: Route,
    /// `<channel>:<user_id>`.
    pub sender: String,
    pub text: String,
    pub platform_message_id: Option<String>,
    /// When the platform says it was sent (unix ms), for channels that hand messages over out
    /// of order.
    pub sent_at_ms: Option<i64>,
}

/// A place in the walk through finished jobs, oldest first: the next batch starts after it, so
/// jobs kept back (their output would not go) do not hold up those behind them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCursor {
    pub finished_at: Millis,
    pub id: String,
}

impl JobCursor {
    pub fn start() -> JobCursor {
        JobCursor {
            finished_at: Millis::MIN,
            id: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundResult {
    Stored {
        inbox_id: i64,
        has_queued_events: bool,
    },
    /// Seen before; `inbox_id` is the first copy's row, where it is known (kept since schema
    /// step 8, and while the row is).
    Duplicate { inbox_id: Option<i64> },
}

#[derive(Debug, Clone)]
pub struct ClaimedChunk {
    pub outbox_id: i64,
    pub key: String,
    pub index: u32,
    pub count: u32,
    pub route: Route,
    pub text: String,
    pub attempts: u32,
    /// How often its chat has moved (a Telegram group become a supergroup) so far.
    pub moves: u32,
    /// The message's buttons, when this is its last chunk.
    pub buttons: Vec<Button>,
    /// When the job exited, if this is the last chunk of its completion (what
    /// `execrelay_exit_to_message_seconds` measures to).
    pub completion_of_exit: Option<Millis>,
}

#[derive(Debug, Clone)]
pub enum ChunkOutcome {
    Delivered {
        platform_id: Option<String>,
    },
    /// Not sent: due again at `at` (a chat's own limit, a backoff, nobody listening yet).
    Retry {
        at: Millis,
        error: String,
        /// The channel failed as a whole (the platform is down), not this chat: the chunk is
        /// due again the moment a send on the channel works (`Store::recover_channel`).
        channel_wide: bool,
    },
    /// Refused for good: the message is dead-lettered.
    Permanent {
        error: String,
    },
    /// Dead too, but for a setting the channel lacks: retried at the next start if it has it
    /// then (`Store::retry_unconfigured`).
    Unconfigured {
        error: String,
    },
    /// The chat has a new id: every stored route to the old one is rewritten, and the chunk is
    /// due again at once.
    ChatMigrated {
        chat_id: String,
    },
}

#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: i64,
    pub key: String,
    pub channel: String,
    pub chat_id: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Millis>,
    pub text: String,
    /// `config` when a missing setting dead-lettered it.
    pub dead_cause: Option<String>,
}

/// A dead letter made pending again, at the back of its chat's queue under a new row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revived {
    pub id: i64,
    pub was: i64,
    pub channel: String,
}

/// What became of an inbox message: whether the command processor took it, the job it
/// started and the key of its last reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxStatus {
    pub processed: bool,
    pub job_id: Option<String>,
    pub last_reply: Option<DeliveryRef>,
}

/// One outbox row as a client follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRef {
    pub id: i64,
    pub key: String,
    pub channel: String,
    pub state: String,
    pub chunks: i64,
    /// When it was delivered, dead-lettered or dropped; `None` while pending.
    pub finished_at: Option<Millis>,
}

/// Where a job's completion is: its event, and the message that carries it once consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionStatus {
    pub event_id: i64,
    pub event_state: String,
    pub blocked: Option<String>,
    pub delivery: Option<DeliveryRef>,
}

#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub running_jobs: i64,
    pub queued_events: i64,
    pub pending_deliveries: i64,
    pub dead_deliveries: i64,
    /// Queued events that wait for a target, by why (`no-route`, a channel not enabled, …).
    pub blocked_events: Vec<(String, i64)>,
}
