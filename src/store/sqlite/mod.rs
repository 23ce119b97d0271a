//! The SQLite implementation of the store: the only module that names `rusqlite`. Each domain
//! method that writes is one transaction on the writer thread (`engine.rs`, which also commits
//! them in groups), each one that reads a query outside any; the statements live in one module
//! per table group (`inbound`, `routes`, `jobs`, `events`, `outbox`, `history`, `meta`,
//! `status`, `progress`), composed here; `schema.rs` holds the migrations, `backup.rs` the online copy.

mod backup;
mod engine;
mod events;
mod history;
mod inbound;
mod jobs;
mod meta;
mod outbox;
mod progress;
mod routes;
mod rows;
mod schema;
mod status;

pub use backup::backup;

use std::path::Path;
use std::sync::Arc;

use execrelay_channel::Route;

use crate::store::Backend;
use crate::store::types::*;
use engine::Engine;
use events::insert_event;
use outbox::{Claim, DeadLetters, claim, insert_outbox};

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        // ENOSPC surfaces as SQLITE_FULL; EFBIG (a quota or RLIMIT_FSIZE) as a failed write.
        let full = error.sqlite_error().is_some_and(|e| {
            e.code == rusqlite::ErrorCode::DiskFull
                || e.extended_code == rusqlite::ffi::SQLITE_IOERR_WRITE
        });
        if full {
            StoreError::DiskFull(Arc::new(error))
        } else {
            StoreError::Backend(Arc::new(error))
        }
    }
}

/// The SQLite store: a writer thread (`engine.rs`) and this node's name for its leases.
pub struct SqliteStore {
    engine: Engine,
    node: String,
    /// What time it is: every timestamp and due time the store writes comes from here, read
    /// once per operation and passed to its statements.
    clock: Clock,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies migrations.
    pub fn open(path: &Path, node: &str, clock: Clock) -> Result<SqliteStore, StoreError> {
        Ok(SqliteStore {
            engine: Engine::open(path)?,
            node: node.to_string(),
            clock,
        })
    }

    fn now(&self) -> Millis {
        (self.clock)()
    }
}

#[async_trait::async_trait]
impl Backend for SqliteStore {
    async fn accept_inbound(&self, record: InboundRecord) -> Result<InboundResult, StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| inbound::accept_inbound(conn, record, now))
            .await
    }

    async fn was_seen(&self, route: &Route, platform_message_id: &str) -> Result<bool, StoreError> {
        let (route, id) = (route.clone(), platform_message_id.to_string());
        self.engine
            .read(move |conn| inbound::was_seen(conn, &route, &id))
            .await
    }

    async fn pending_inbox(&self, limit: usize) -> Result<Vec<InboxRecord>, StoreError> {
        self.engine
            .read(move |conn| inbound::pending(conn, limit))
            .await
    }

    async fn finish_inbox(
        &self,
        inbox_id: i64,
        job: Option<NewJob>,
        replies: Vec<NewOutbox>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| inbound::finish_inbox(conn, inbox_id, job, replies, now))
            .await
    }

    async fn inbox_status(&self, id: i64) -> Result<Option<InboxStatus>, StoreError> {
        self.engine
            .read(move |conn| status::inbox_status(conn, id))
            .await
    }

    async fn enqueue_outbox(&self, messages: Vec<NewOutbox>) -> Result<(), StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| {
                for message in &messages {
                    insert_outbox(conn, message, now)?;
                }
                Ok(())
            })
            .await
    }

    async fn last_route(&self, session: &str) -> Result<Option<Route>, StoreError> {
        let session = session.to_string();
        self.engine
            .read(move |conn| routes::last_route(conn, &session))
            .await
    }

    async fn has_route(&self, session: &str) -> Result<bool, StoreError> {
        let session = session.to_string();
        self.engine
            .read(move |conn| routes::has_route(conn, &session))
            .await
    }

    async fn list_routes(&self) -> Result<Vec<(String, Route)>, StoreError> {
        self.engine.read(routes::list_routes).await
    }

    async fn mark_job_running(
        &self,
        id: &str,
        supervisor_pid: u32,
        started_at: Millis,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.engine
            .call(move |conn| jobs::mark_running(conn, &id, supervisor_pid, started_at))
            .await
    }

    async fn finish_job(
        &self,
        id: &str,
        outcome: JobFinal,
        event: Option<NewEvent>,
        max_queued: usize,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        let now = self.now();
        self.engine
            .call(move |conn| jobs::finish(conn, &id, &outcome, event.as_ref(), max_queued, now))
            .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let id = id.to_string();
        self.engine.read(move |conn| jobs::by_id(conn, &id)).await
    }

    async fn completion_status(&self, id: &str) -> Result<Option<CompletionStatus>, StoreError> {
        let id = id.to_string();
        self.engine
            .read(move |conn| status::completion_status(conn, &id))
            .await
    }

    async fn jobs_by_prefix(
        &self,
        session: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let session = session.map(str::to_string);
        // Ids are lowercase hex, whatever case the user typed.
        let prefix = prefix.to_lowercase();
        self.engine
            .read(move |conn| jobs::by_prefix(conn, session.as_deref(), &prefix))
            .await
    }

    async fn recent_jobs(
        &self,
        session: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let session = session.map(str::to_string);
        self.engine
            .read(move |conn| jobs::recent(conn, session.as_deref(), limit))
            .await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.engine.read(jobs::unfinished).await
    }

    async fn enqueue_event(&self, event: NewEvent, max_queued: usize) -> Result<i64, StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| insert_event(conn, &event, max_queued, now))
            .await
    }

    async fn queued_events(&self, session: &str) -> Result<Vec<EventRecord>, StoreError> {
        let session = session.to_string();
        self.engine
            .read(move |conn| events::queued(conn, Some(&session)))
            .await
    }

    async fn all_queued_events(&self) -> Result<Vec<EventRecord>, StoreError> {
        self.engine.read(|conn| events::queued(conn, None)).await
    }

    async fn mark_events_blocked(&self, ids: Vec<i64>, reason: String) -> Result<(), StoreError> {
        self.engine
            .call(move |conn| events::mark_blocked(conn, &ids, &reason))
            .await
    }

    async fn drop_event(&self, id: i64) -> Result<(), StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| events::drop_queued(conn, id, now))
            .await
    }

    async fn consume_events(
        &self,
        events: Vec<(i64, i64)>,
        message: NewOutbox,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| events::consume(conn, &events, &message, now))
            .await
    }

    async fn prune_seen(&self, before: Millis) -> Result<usize, StoreError> {
        self.engine
            .call(move |conn| inbound::prune_seen(conn, before))
            .await
    }

    async fn forgettable_jobs(
        &self,
        before: Millis,
        after: &JobCursor,
        limit: usize,
    ) -> Result<Vec<JobCursor>, StoreError> {
        let after = after.clone();
        self.engine
            .read(move |conn| jobs::forgettable(conn, before, &after, limit))
            .await
    }

    async fn forget_history(
        &self,
        jobs: Vec<String>,
        before: Millis,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.engine
            .call(move |conn| history::forget_history(conn, jobs, before, limit))
            .await
    }

    async fn adapter_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = format!("adapter:{key}");
        self.engine.read(move |conn| meta::get(conn, &key)).await
    }

    async fn set_adapter_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (format!("adapter:{key}"), value.to_string());
        self.engine
            .call(move |conn| meta::set(conn, &key, &value))
            .await
    }

    async fn release_own_leases(&self) -> Result<usize, StoreError> {
        let node = self.node.clone();
        self.engine
            .call(move |conn| outbox::release_leases_of(conn, &node))
            .await
    }

    async fn claim_due(
        &self,
        channel: &str,
        limit: usize,
        lease_ms: Millis,
    ) -> Result<Vec<ClaimedChunk>, StoreError> {
        let channel = channel.to_string();
        let node = self.node.clone();
        let now = self.now();
        self.engine
            .call(move |conn| claim(conn, &channel, &node, Claim::Due { limit }, lease_ms, now))
            .await
    }

    async fn claim_probe(
        &self,
        channel: &str,
        lease_ms: Millis,
    ) -> Result<Option<ClaimedChunk>, StoreError> {
        let channel = channel.to_string();
        let node = self.node.clone();
        let now = self.now();
        self.engine
            .call(move |conn| {
                let claimed = claim(conn, &channel, &node, Claim::Probe, lease_ms, now)?;
                Ok(claimed.into_iter().next())
            })
            .await
    }

    async fn recover_channel(&self, channel: &str) -> Result<usize, StoreError> {
        let channel = channel.to_string();
        let now = self.now();
        self.engine
            .call(move |conn| outbox::recover_channel(conn, &channel, now))
            .await
    }

    async fn record_outcome(
        &self,
        outbox_id: i64,
        index: u32,
        outcome: ChunkOutcome,
    ) -> Result<(), StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| outbox::record_outcome(conn, outbox_id, index, outcome, now))
            .await
    }

    async fn next_due(&self, channel: &str) -> Result<Option<Millis>, StoreError> {
        let channel = channel.to_string();
        self.engine
            .read(move |conn| outbox::next_due(conn, &channel))
            .await
    }

    async fn retry_now(&self, channel: &str) -> Result<(), StoreError> {
        let channel = channel.to_string();
        let now = self.now();
        self.engine
            .call(move |conn| outbox::due_now(conn, &channel, now))
            .await
    }

    async fn list_outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.engine
            .read(move |conn| outbox::list_outbox(conn, limit))
            .await
    }

    async fn retry_dead(&self, id: i64) -> Result<Revived, StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| outbox::revive_dead(conn, id, now))
            .await
    }

    async fn retry_all_dead(&self) -> Result<Vec<Revived>, StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| outbox::revive_all(conn, DeadLetters::All, now))
            .await
    }

    async fn retry_unconfigured(&self, channel: &str) -> Result<Vec<Revived>, StoreError> {
        let channel = channel.to_string();
        let now = self.now();
        self.engine
            .call(move |conn| {
                outbox::revive_all(conn, DeadLetters::Unconfigured { channel: &channel }, now)
            })
            .await
    }

    async fn drop_outbox(&self, id: i64) -> Result<(), StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| outbox::drop_outbox(conn, id, now))
            .await
    }

    async fn unfinished_jobs_of(&self, session: &str) -> Result<usize, StoreError> {
        let session = session.to_string();
        self.engine
            .read(move |conn| jobs::unfinished_count_of(conn, &session))
            .await
    }

    async fn progress_targets(
        &self,
        started_before: Millis,
    ) -> Result<Vec<ProgressTarget>, StoreError> {
        self.engine
            .read(move |conn| progress::targets(conn, started_before))
            .await
    }

    async fn finish_progress(&self, job_id: &str) -> Result<(), StoreError> {
        let job_id = job_id.to_string();
        self.engine
            .call(move |conn| progress::finish(conn, &job_id))
            .await
    }

    async fn settle_stale_progress(&self, finished_before: Millis) -> Result<usize, StoreError> {
        self.engine
            .call(move |conn| progress::settle_stale(conn, finished_before))
            .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.engine.read(status::counts).await
    }

    async fn oldest_pending(&self) -> Result<Vec<(String, Millis)>, StoreError> {
        self.engine.read(status::oldest_pending).await
    }
}

#[cfg(test)]
mod tests;
