//! The store: every SQL statement in execrelay lives under this module, in `sqlite/` (the
//! only place that names `rusqlite`); `types.rs` holds the domain types it speaks in.
//!
//! The rest of the relay sees domain operations ("accept this inbound message", "finish this job
//! and queue its completion", "consume these events into this outbox row"), never SQL, so that a
//! PostgreSQL backend can replace SQLite behind the same methods.
//!
//! Tables (see `schema.rs`): `routes` (last route per session), `inbound_seen` (dedupe),
//! `inbox` (accepted messages not yet processed), `jobs` (the ledger), `events` (the system-event
//! queue), `outbox` + `outbox_chunks` (deliveries with per-chunk progress).
//!
//! Which transaction does what (each method is one transaction; see `engine.rs` for batching):
//! - `accept_inbound`: dedupe row + inbox row + last-route upsert. Crash before: the platform
//!   redelivers. Crash after: the command runs on restart, once.
//! - `finish_inbox`: inbox row processed + new job (`starting`) + its replies in the outbox.
//!   Crash after it but before the spawn: restart finds the job `starting` with no job directory
//!   and spawns it; with a directory, it re-attaches or reports `lost`.
//! - `finish_job`: final job state + its `exec:<id>` event (unique: at most one per job).
//! - `consume_events`: events still queued → consumed + their outbox rows; conditional, so a
//!   concurrent consumer makes it fail instead of sending twice.
//! - `claim_due` (or `claim_probe`, one chunk while the channel fails) / `record_outcome`: a
//!   lease on the head chunk of each chat, then the send's result. No send happens inside a
//!   transaction. Crash mid-send: the lease is released at start-up (same node) or expires,
//!   and the chunk is sent again with the same key. `recover_channel`: the chunks that waited
//!   for their channel are due again.
//! - Operators (`retry_dead`, `retry_all_dead`, `retry_unconfigured`, `drop_outbox`,
//!   `drop_event`): a retried dead letter moves to the back of its chat's queue (a new row id,
//!   the same key) with fresh attempts, due now; a dropped message or event becomes `dropped`,
//!   never deleted here: an event leaves the
//!   queue only into the outbox or by such a recorded drop (its `event_keys` entry stays, so a
//!   completion is never queued twice).

mod sqlite;
mod types;

pub use sqlite::backup;
pub use types::*;

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use execrelay_channel::Route;

/// The handle every stage holds: the store behind its interface ([`Backend`]). Cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl Store {
    /// Opens the SQLite store at `path` (created and migrated as needed); `node` names this
    /// relay's delivery leases.
    pub fn open(path: &Path, node: &str) -> Result<Store, StoreError> {
        Store::open_with_clock(path, node, system_clock())
    }

    /// [`Store::open`] with the time read from `clock` (a test's, to assert exact times).
    pub fn open_with_clock(path: &Path, node: &str, clock: Clock) -> Result<Store, StoreError> {
        Ok(Store(Arc::new(sqlite::SqliteStore::open(
            path, node, clock,
        )?)))
    }
}

impl Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

/// What every stage asks of the store: one domain operation per method, each one transaction
/// (see the list above). SQLite implements it (`sqlite::SqliteStore`); the domain and model
/// tests (`tests.rs`, `model_tests.rs`) speak only this interface, so a second backend runs
/// them unchanged.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    // ----- inbound and routes -----
    /// Dedupes, stores the message for the command processor and records the session's last
    /// route, in one transaction. Only for allowed senders: refused ones record nothing.
    async fn accept_inbound(&self, record: InboundRecord) -> Result<InboundResult, StoreError>;

    /// Whether a message with this platform id was stored in the route's chat already (by
    /// `accept_inbound`, until retention forgets its dedupe record).
    async fn was_seen(&self, route: &Route, platform_message_id: &str) -> Result<bool, StoreError>;

    async fn pending_inbox(&self, limit: usize) -> Result<Vec<InboxRecord>, StoreError>;

    /// Marks a message processed, with what processing it produced: at most one new job, and
    /// replies. One transaction, so a restart neither loses nor repeats the command.
    async fn finish_inbox(
        &self,
        inbox_id: i64,
        job: Option<NewJob>,
        replies: Vec<NewOutbox>,
    ) -> Result<(), StoreError>;

    /// What became of inbox message `id`; `None` if there is none (or retention forgot it).
    async fn inbox_status(&self, id: i64) -> Result<Option<InboxStatus>, StoreError>;

    /// Writes replies that belong to no inbox message (refusals, notices).
    async fn enqueue_outbox(&self, messages: Vec<NewOutbox>) -> Result<(), StoreError>;

    async fn last_route(&self, session: &str) -> Result<Option<Route>, StoreError>;

    /// Whether `session` has spoken anywhere (has a last route).
    async fn has_route(&self, session: &str) -> Result<bool, StoreError>;

    async fn list_routes(&self) -> Result<Vec<(String, Route)>, StoreError>;

    // ----- jobs -----
    async fn mark_job_running(
        &self,
        id: &str,
        supervisor_pid: u32,
        started_at: Millis,
    ) -> Result<(), StoreError>;

    /// Records the job's outcome and queues its completion event, in one transaction. Returns
    /// false when the job was already final (a second watcher, a replay): nothing is written.
    async fn finish_job(
        &self,
        id: &str,
        outcome: JobFinal,
        event: Option<NewEvent>,
        max_queued: usize,
    ) -> Result<bool, StoreError>;

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;

    /// Where job `id`'s completion is; `None` while it has none (the job runs).
    async fn completion_status(&self, id: &str) -> Result<Option<CompletionStatus>, StoreError>;

    /// Jobs of `session` (all sessions when `None`) whose id starts with `prefix`.
    async fn jobs_by_prefix(
        &self,
        session: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<JobRecord>, StoreError>;

    async fn recent_jobs(
        &self,
        session: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError>;

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;

    // ----- events -----
    async fn enqueue_event(&self, event: NewEvent, max_queued: usize) -> Result<i64, StoreError>;

    /// Queued events of one session, oldest first.
    async fn queued_events(&self, session: &str) -> Result<Vec<EventRecord>, StoreError>;

    async fn all_queued_events(&self) -> Result<Vec<EventRecord>, StoreError>;

    /// Notes why queued events wait (`heartbeat file empty`, `no-route`, …). They stay queued.
    async fn mark_events_blocked(&self, ids: Vec<i64>, reason: String) -> Result<(), StoreError>;

    /// An operator's drop of a queued event: it leaves the queue as `dropped` (recorded, not
    /// deleted) and its `event_keys` entry stays, so its completion is never queued again.
    async fn drop_event(&self, id: i64) -> Result<(), StoreError>;

    /// Marks `event_ids` consumed and writes `message` to the outbox, in one transaction, only
    /// if every event is still queued; otherwise nothing changes and `Conflict` is returned.
    /// `events` pairs each id with the `coalesced` count the caller rendered: an event that
    /// absorbed another since then is a conflict too, so nothing folded into it is lost.
    async fn consume_events(
        &self,
        events: Vec<(i64, i64)>,
        message: NewOutbox,
    ) -> Result<i64, StoreError>;

    /// Forgets dedupe records older than `before`: platforms stop redelivering long before.
    async fn prune_seen(&self, before: Millis) -> Result<usize, StoreError>;

    // ----- retention -----
    /// Up to `limit` jobs that ended before `before` and whose completion has left the event
    /// queue (so nothing of them is owed any more), oldest first.
    async fn forgettable_jobs(
        &self,
        before: Millis,
        after: &JobCursor,
        limit: usize,
    ) -> Result<Vec<JobCursor>, StoreError>;

    /// Forgets these jobs (their output is already gone) and, up to `limit` of each, what
    /// ended before `before`: consumed events, delivered messages, processed inbox rows.
    /// Returns how many rows went. Nothing pending, queued or running is touched; dead letters
    /// stay until someone looks. Ids (and so idempotency keys) come from a sequence, so a
    /// forgotten row's key is never drawn again (a platform would drop a reused one).
    async fn forget_history(
        &self,
        jobs: Vec<String>,
        before: Millis,
        limit: usize,
    ) -> Result<usize, StoreError>;

    // ----- adapter state -----
    /// A small value an adapter keeps across restarts (`InboundSink::load_state`).
    async fn adapter_state(&self, key: &str) -> Result<Option<String>, StoreError>;

    async fn set_adapter_state(&self, key: &str, value: &str) -> Result<(), StoreError>;

    // ----- outbox -----
    /// Releases leases this node held before a restart: those sends never finished.
    async fn release_own_leases(&self) -> Result<usize, StoreError>;

    /// Leases the next chunk of every chat on `channel` whose turn it is, up to `limit`.
    async fn claim_due(
        &self,
        channel: &str,
        limit: usize,
        lease_ms: Millis,
    ) -> Result<Vec<ClaimedChunk>, StoreError>;

    /// Leases one chunk to probe a failing channel with: a chat's head that is due, or that
    /// waits only for the channel to recover (however long its own backoff), the one whose
    /// turn came longest ago. A chat's own `retry_after` is still honoured.
    async fn claim_probe(
        &self,
        channel: &str,
        lease_ms: Millis,
    ) -> Result<Option<ClaimedChunk>, StoreError>;

    /// A send on `channel` worked again: every chunk that waited for the channel (not for its
    /// chat's own limit) is due now. Returns how many.
    async fn recover_channel(&self, channel: &str) -> Result<usize, StoreError>;

    /// Records how sends ended; a message whose chunks are all sent is delivered, and one
    /// dead chunk dead-letters the rest of its message.
    async fn record_outcome(
        &self,
        outbox_id: i64,
        index: u32,
        outcome: ChunkOutcome,
    ) -> Result<(), StoreError>;

    /// The earliest moment the head chunk of some chat on `channel` becomes due, if any.
    async fn next_due(&self, channel: &str) -> Result<Option<Millis>, StoreError>;

    /// Makes every waiting chunk on `channel` due now (a client just connected).
    async fn retry_now(&self, channel: &str) -> Result<(), StoreError>;

    /// Pending and dead-lettered deliveries, oldest first (delivered ones are history).
    async fn list_outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Retries dead letter `id` (the SQLite store's `revive`: a new row id at the back of its chat, the same key).
    async fn retry_dead(&self, id: i64) -> Result<Revived, StoreError>;

    /// Retries every dead letter, oldest first (so they keep their order).
    async fn retry_all_dead(&self) -> Result<Vec<Revived>, StoreError>;

    /// Retries the dead letters of `channel` that a missing setting caused: called at start for
    /// a channel that has the setting now.
    async fn retry_unconfigured(&self, channel: &str) -> Result<Vec<Revived>, StoreError>;

    /// An operator's drop of a pending or dead message: it becomes `dropped` and is never sent
    /// (the rest of its chat's queue moves up). A chunk in flight refuses the drop: its send
    /// is being recorded.
    async fn drop_outbox(&self, id: i64) -> Result<(), StoreError>;

    /// Jobs of `session` not yet finished (starting or running).
    async fn unfinished_jobs_of(&self, session: &str) -> Result<usize, StoreError>;

    async fn counts(&self) -> Result<Counts, StoreError>;

    /// Per channel with messages pending, when the oldest of them was written (`GET /metrics`
    /// shows its age).
    async fn oldest_pending(&self) -> Result<Vec<(String, Millis)>, StoreError>;

    // ----- progress -----
    /// Jobs whose acknowledgement (delivered, sent with buttons) may still be edited with
    /// their progress: not marked done, started before `started_before`, running or ended.
    async fn progress_targets(
        &self,
        started_before: Millis,
    ) -> Result<Vec<ProgressTarget>, StoreError>;

    /// No more progress edits for `job_id`.
    async fn finish_progress(&self, job_id: &str) -> Result<(), StoreError>;

    /// No more progress edits for jobs that ended before `finished_before`; how many.
    async fn settle_stale_progress(&self, finished_before: Millis) -> Result<usize, StoreError>;
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod operator_tests;

#[cfg(test)]
mod progress_tests;
