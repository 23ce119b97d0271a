//! The SQLite implementation of the store: the only module that names `rusqlite`. Each domain
//! method is one transaction on the writer thread (`engine.rs`, which also commits them in
//! groups); `schema.rs` holds the migrations, `backup.rs` the online copy.

mod backup;
mod engine;
mod events;
mod history;
mod inbound;
mod outbox;
mod rows;
mod schema;

pub use backup::backup;

use std::path::Path;
use std::sync::Arc;

use execrelay_channel::Route;
use rusqlite::{OptionalExtension, params};

use crate::store::Backend;
use crate::store::types::*;
use engine::Engine;
use events::insert_event;
use outbox::{Claim, claim, insert_outbox, revive};
use rows::*;

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

    async fn revive_where(
        &self,
        select: &'static str,
        channel: Option<String>,
    ) -> Result<Vec<Revived>, StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| {
                let ids = match &channel {
                    Some(channel) => collect_rows(conn, select, [channel], |row| Ok(row.get(0)?))?,
                    None => collect_rows(conn, select, [], |row| Ok(row.get(0)?))?,
                };
                ids.into_iter().map(|id| revive(conn, id, now)).collect()
            })
            .await
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

    async fn pending_inbox(&self, limit: usize) -> Result<Vec<InboxRecord>, StoreError> {
        self.engine
            .call(move |conn| {
                collect_rows(
                    conn,
                    "SELECT id, session, route, sender, text, sent_at, received_at FROM inbox
                     WHERE processed_at IS NULL ORDER BY id LIMIT ?1",
                    [limit as i64],
                    |row| {
                        let route: String = row.get(2)?;
                        Ok(InboxRecord {
                            id: row.get(0)?,
                            session: row.get(1)?,
                            route: route_from(&route)?,
                            sender: row.get(3)?,
                            text: row.get(4)?,
                            sent_at_ms: row.get(5)?,
                            received_at_ms: row.get(6)?,
                        })
                    },
                )
            })
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
            .call(move |conn| {
                let row = conn
                    .prepare_cached(
                        "SELECT i.processed_at IS NOT NULL, i.job_id, o.id, o.key, o.channel,
                                o.state,
                                (SELECT COUNT(*) FROM outbox_chunks c WHERE c.outbox_id = o.id)
                         FROM inbox i LEFT JOIN outbox o ON o.id = i.last_reply WHERE i.id = ?1",
                    )?
                    .query_row([id], |row| {
                        Ok(InboxStatus {
                            processed: row.get(0)?,
                            job_id: row.get(1)?,
                            last_reply: delivery_ref(row, 2)?,
                        })
                    })
                    .optional()?;
                Ok(row)
            })
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
            .call(move |conn| {
                let route: Option<String> = conn
                    .prepare_cached("SELECT route FROM routes WHERE session = ?1")?
                    .query_row([&session], |row| row.get(0))
                    .optional()?;
                route.as_deref().map(route_from).transpose()
            })
            .await
    }

    async fn has_route(&self, session: &str) -> Result<bool, StoreError> {
        let session = session.to_string();
        self.engine
            .call(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT 1 FROM routes WHERE session = ?1")?
                    .exists([session])?)
            })
            .await
    }

    async fn list_routes(&self) -> Result<Vec<(String, Route)>, StoreError> {
        self.engine
            .call(|conn| {
                collect_rows(
                    conn,
                    "SELECT session, route FROM routes ORDER BY session",
                    [],
                    |row| {
                        let route: String = row.get(1)?;
                        Ok((row.get(0)?, route_from(&route)?))
                    },
                )
            })
            .await
    }

    async fn mark_job_running(
        &self,
        id: &str,
        supervisor_pid: u32,
        started_at: Millis,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.engine
            .call(move |conn| {
                conn.prepare_cached(
                    "UPDATE jobs SET state = 'running', supervisor_pid = ?2, started_at = ?3
                     WHERE id = ?1 AND state IN ('starting', 'running')",
                )?
                .execute(params![id, supervisor_pid as i64, started_at])?;
                Ok(())
            })
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
            .call(move |conn| {
                let updated = conn
                    .prepare_cached(
                        "UPDATE jobs SET state = ?2, exit_code = ?3, signal = ?4,
                                         started_at = COALESCE(started_at, ?5),
                                         finished_at = ?6, detail = ?7
                         WHERE id = ?1 AND state IN ('starting', 'running')",
                    )?
                    .execute(params![
                        id,
                        outcome.state.as_str(),
                        outcome.exit_code,
                        outcome.signal,
                        outcome.started_at,
                        outcome.finished_at,
                        outcome.detail
                    ])?;
                if updated == 0 {
                    return Ok(false);
                }
                if let Some(event) = &event {
                    insert_event(conn, event, max_queued, now)?;
                }
                Ok(true)
            })
            .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let id = id.to_string();
        self.engine
            .call(move |conn| {
                let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
                Ok(query_jobs(conn, &sql, [&id])?.into_iter().next())
            })
            .await
    }

    async fn completion_status(&self, id: &str) -> Result<Option<CompletionStatus>, StoreError> {
        let key = format!("exec:{id}");
        self.engine
            .call(move |conn| {
                // Through `event_keys`: a completion folded into another event is found there.
                let row = conn
                    .prepare_cached(
                        "SELECT e.id, e.state, e.blocked, o.id, o.key, o.channel, o.state,
                                (SELECT COUNT(*) FROM outbox_chunks c WHERE c.outbox_id = o.id)
                         FROM event_keys k JOIN events e ON e.id = k.event_id
                         LEFT JOIN outbox o ON o.id = e.outbox_id
                         WHERE k.context_key = ?1",
                    )?
                    .query_row([key], |row| {
                        Ok(CompletionStatus {
                            event_id: row.get(0)?,
                            event_state: row.get(1)?,
                            blocked: row.get(2)?,
                            delivery: delivery_ref(row, 3)?,
                        })
                    })
                    .optional()?;
                Ok(row)
            })
            .await
    }

    async fn jobs_by_prefix(
        &self,
        session: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let session = session.map(str::to_string);
        // Ids are lowercase hex; a range on the id's index (not LIKE, which scans) finds the
        // ids that start with the prefix, whatever case the user typed.
        let prefix = prefix.to_lowercase();
        self.engine
            .call(move |conn| {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE id >= ?1 AND id < ?1 || char(1114111)
                     AND (?2 IS NULL OR session = ?2) ORDER BY created_at DESC LIMIT 10"
                );
                query_jobs(conn, &sql, params![prefix, session])
            })
            .await
    }

    async fn recent_jobs(
        &self,
        session: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let session = session.map(str::to_string);
        self.engine
            .call(move |conn| match session {
                // Two statements, so that each walks its own index newest first.
                Some(session) => {
                    let sql = format!(
                        "SELECT {JOB_COLUMNS} FROM jobs WHERE session = ?1
                         ORDER BY created_at DESC, rowid DESC LIMIT ?2"
                    );
                    query_jobs(conn, &sql, params![session, limit as i64])
                }
                None => {
                    let sql = format!(
                        "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?1"
                    );
                    query_jobs(conn, &sql, params![limit as i64])
                }
            })
            .await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.engine
            .call(|conn| {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('starting', 'running')
                     ORDER BY created_at"
                );
                query_jobs(conn, &sql, [])
            })
            .await
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
            .call(move |conn| {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE session = ?1 AND state = 'queued'
                     ORDER BY id"
                );
                events_from(conn, &sql, [&session])
            })
            .await
    }

    async fn all_queued_events(&self) -> Result<Vec<EventRecord>, StoreError> {
        self.engine
            .call(|conn| {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE state = 'queued' ORDER BY id"
                );
                events_from(conn, &sql, [])
            })
            .await
    }

    async fn mark_events_blocked(&self, ids: Vec<i64>, reason: String) -> Result<(), StoreError> {
        self.engine
            .call(move |conn| {
                let mut statement = conn.prepare_cached(
                    "UPDATE events SET blocked = ?2 WHERE id = ?1 AND state = 'queued'",
                )?;
                for id in &ids {
                    statement.execute(params![id, reason])?;
                }
                Ok(())
            })
            .await
    }

    async fn drop_event(&self, id: i64) -> Result<(), StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| {
                let state: Option<String> = conn
                    .prepare_cached("SELECT state FROM events WHERE id = ?1")?
                    .query_row([id], |row| row.get(0))
                    .optional()?;
                match state.as_deref() {
                    None => return Err(StoreError::NotFound(format!("no event {id}"))),
                    Some("queued") => {}
                    Some(other) => {
                        return Err(StoreError::Conflict(format!(
                            "event {id} is {other}, not queued"
                        )));
                    }
                }
                // `consumed_at` is when an event left the queue, whichever way: retention
                // forgets dropped events by it too.
                conn.prepare_cached(
                    "UPDATE events SET state = 'dropped', consumed_at = ?2
                     WHERE id = ?1 AND state = 'queued'",
                )?
                .execute(params![id, now])?;
                Ok(())
            })
            .await
    }

    async fn consume_events(
        &self,
        events: Vec<(i64, i64)>,
        message: NewOutbox,
    ) -> Result<i64, StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| {
                let outbox_id = insert_outbox(conn, &message, now)?;
                let mut consume = conn.prepare_cached(
                    "UPDATE events SET state = 'consumed', consumed_at = ?2, outbox_id = ?3,
                                       blocked = NULL
                     WHERE id = ?1 AND state = 'queued' AND coalesced = ?4",
                )?;
                for (id, coalesced) in &events {
                    if consume.execute(params![id, now, outbox_id, coalesced])? != 1 {
                        return Err(StoreError::Conflict(format!(
                            "event {id} is no longer queued"
                        )));
                    }
                }
                Ok(outbox_id)
            })
            .await
    }

    async fn prune_seen(&self, before: Millis) -> Result<usize, StoreError> {
        self.engine
            .call(move |conn| {
                Ok(conn
                    .prepare_cached("DELETE FROM inbound_seen WHERE seen_at < ?1")?
                    .execute([before])?)
            })
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
            .call(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT j.finished_at, j.id FROM jobs j
                     WHERE j.state NOT IN ('starting', 'running') AND j.finished_at < ?1
                       AND (j.finished_at, j.id) > (?3, ?4)
                       AND NOT EXISTS (SELECT 1 FROM event_keys k
                                       JOIN events e ON e.id = k.event_id
                                       WHERE k.context_key = 'exec:' || j.id
                                         AND e.state = 'queued')
                     ORDER BY j.finished_at, j.id LIMIT ?2",
                )?;
                let jobs = statement
                    .query_map(
                        params![before, limit as i64, after.finished_at, after.id],
                        |row| {
                            Ok(JobCursor {
                                finished_at: row.get(0)?,
                                id: row.get(1)?,
                            })
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(jobs)
            })
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
        self.engine
            .call(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                    .query_row([key], |row| row.get(0))
                    .optional()?)
            })
            .await
    }

    async fn set_adapter_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (format!("adapter:{key}"), value.to_string());
        self.engine
            .call(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, value])?;
                Ok(())
            })
            .await
    }

    async fn release_own_leases(&self) -> Result<usize, StoreError> {
        let node = self.node.clone();
        self.engine
            .call(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE outbox_chunks SET lease_owner = NULL, lease_until = NULL
                         WHERE lease_owner = ?1",
                    )?
                    .execute([node])?)
            })
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
            .call(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE outbox_chunks SET next_attempt_at = MIN(next_attempt_at, ?2),
                                                  channel_wait = 0
                         WHERE state = 'pending' AND channel_wait = 1 AND outbox_id IN
                             (SELECT id FROM outbox WHERE channel = ?1 AND state = 'pending')",
                    )?
                    .execute(params![channel, now])?)
            })
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
            .call(move |conn| outbox::next_due(conn, &channel))
            .await
    }

    async fn retry_now(&self, channel: &str) -> Result<(), StoreError> {
        let channel = channel.to_string();
        let now = self.now();
        self.engine
            .call(move |conn| {
                conn.prepare_cached(
                    "UPDATE outbox_chunks SET next_attempt_at = ?2
                     WHERE state = 'pending' AND next_attempt_at > ?2 AND outbox_id IN
                         (SELECT id FROM outbox WHERE channel = ?1 AND state = 'pending')",
                )?
                .execute(params![channel, now])?;
                Ok(())
            })
            .await
    }

    async fn list_outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.engine
            .call(move |conn| outbox::list_outbox(conn, limit))
            .await
    }

    async fn retry_dead(&self, id: i64) -> Result<Revived, StoreError> {
        let now = self.now();
        self.engine
            .call(move |conn| {
                let state: Option<String> = conn
                    .prepare_cached("SELECT state FROM outbox WHERE id = ?1")?
                    .query_row([id], |row| row.get(0))
                    .optional()?;
                match state.as_deref() {
                    None => Err(StoreError::NotFound(format!("no delivery {id}"))),
                    Some("dead") => revive(conn, id, now),
                    Some(other) => Err(StoreError::Conflict(format!(
                        "delivery {id} is {other}, not dead"
                    ))),
                }
            })
            .await
    }

    async fn retry_all_dead(&self) -> Result<Vec<Revived>, StoreError> {
        self.revive_where(
            "SELECT id FROM outbox WHERE state = 'dead' ORDER BY id",
            None,
        )
        .await
    }

    async fn retry_unconfigured(&self, channel: &str) -> Result<Vec<Revived>, StoreError> {
        self.revive_where(
            "SELECT id FROM outbox WHERE state = 'dead' AND dead_cause = 'config'
               AND channel = ?1 ORDER BY id",
            Some(channel.to_string()),
        )
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
            .call(move |conn| {
                let count: i64 = conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM jobs
                         WHERE session = ?1 AND state IN ('starting', 'running')",
                    )?
                    .query_row([session], |row| row.get(0))?;
                Ok(count as usize)
            })
            .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.engine
            .call(|conn| {
                let count = |sql: &str| -> Result<i64, StoreError> {
                    Ok(conn.prepare_cached(sql)?.query_row([], |row| row.get(0))?)
                };
                Ok(Counts {
                    running_jobs: count(
                        "SELECT COUNT(*) FROM jobs WHERE state IN ('starting', 'running')",
                    )?,
                    queued_events: count("SELECT COUNT(*) FROM events WHERE state = 'queued'")?,
                    pending_deliveries: count(
                        "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
                    )?,
                    dead_deliveries: count("SELECT COUNT(*) FROM outbox WHERE state = 'dead'")?,
                    blocked_events: conn
                        .prepare_cached(
                            "SELECT blocked, COUNT(*) FROM events
                             WHERE state = 'queued' AND blocked IS NOT NULL
                             GROUP BY blocked ORDER BY blocked",
                        )?
                        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect::<Result<_, _>>()?,
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests;
