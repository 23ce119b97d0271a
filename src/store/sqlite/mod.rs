//! The SQLite implementation of the store: the only module that names `rusqlite`. Each domain
//! method is one transaction on the writer thread (`engine.rs`, which also commits them in
//! groups); `schema.rs` holds the migrations, `backup.rs` the online copy.

mod backup;
mod engine;
mod schema;

pub use backup::backup;

use std::path::Path;
use std::sync::Arc;

use execrelay_channel::Route;
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::Backend;
use crate::store::types::*;
use engine::Engine;

/// A platform clock is believed this far ahead of ours, no further: a later time would hold a
/// route in place until then.
const MAX_SENT_AT_AHEAD_MS: i64 = 5_000;
/// A message the platform says was sent this long before the current route was set is a late
/// redelivery (a webhook retried for hours, a replay after a resume), whatever its channel;
/// within this, clocks of different platforms are too far apart to compare.
const STALE_SENT_AT_MS: i64 = 5 * 60 * 1000;

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
}

fn route_json(route: &Route) -> Result<String, StoreError> {
    serde_json::to_string(route).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn route_from(text: &str) -> Result<Route, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("route: {e}")))
}

/// What orders messages: one queue per chat, which its threads share. Not the account: a route
/// named in the config (`heartbeat.target`) has none, and must queue with the chat's replies.
fn chat_key(route: &Route) -> String {
    format!("{}|{}", route.channel, route.chat_id)
}

const JOB_COLUMNS: &str = "id, session, origin, command, cwd, requester, state, created_at, \
     started_at, finished_at, supervisor_pid, exit_code, signal, detail";

fn job_from_row(row: &rusqlite::Row<'_>) -> Result<JobRecord, StoreError> {
    let origin: String = row.get(2)?;
    let state: String = row.get(6)?;
    Ok(JobRecord {
        id: row.get(0)?,
        session: row.get(1)?,
        origin: route_from(&origin)?,
        command: row.get(3)?,
        cwd: row.get(4)?,
        requester: row.get(5)?,
        state: JobState::parse(&state)?,
        created_at: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
        supervisor_pid: row.get(10)?,
        exit_code: row.get(11)?,
        signal: row.get(12)?,
        detail: row.get(13)?,
    })
}

/// Runs a query and maps every row: the one loop every listing uses.
fn collect_rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut map: impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRecord>, StoreError> {
    collect_rows(conn, sql, params, job_from_row)
}

/// Which chunks a claim may lease.
#[derive(Clone, Copy)]
enum Claim {
    /// Every chat's head that is due, up to `limit`, oldest message first.
    Due { limit: usize },
    /// One head to probe a failing channel with (`Store::claim_probe`).
    Probe,
}

fn claim(
    conn: &Connection,
    channel: &str,
    node: &str,
    mode: Claim,
    lease_ms: Millis,
) -> Result<Vec<ClaimedChunk>, StoreError> {
    let now = now_ms();
    let (ready, order, limit) = match mode {
        Claim::Due { limit } => ("c.next_attempt_at <= ?2", "o.id", limit),
        Claim::Probe => (
            "(c.next_attempt_at <= ?2 OR c.channel_wait = 1)",
            "c.next_attempt_at, o.id",
            1,
        ),
    };
    // The head of a chat: its oldest pending message's first unsent chunk. A head that is
    // leased or not yet due holds the chat back, which keeps order. So does any other leased
    // chunk of the chat: rows moved in from a migrated chat sort ahead of a send already in
    // flight at the new id, and must wait for it.
    let sql = format!(
        "SELECT o.id, o.key, c.idx, o.route, c.text, c.attempts,
                (SELECT COUNT(*) FROM outbox_chunks n WHERE n.outbox_id = o.id),
                c.moves
         FROM outbox o JOIN outbox_chunks c ON c.outbox_id = o.id
         WHERE o.channel = ?1 AND o.state = 'pending' AND c.state = 'pending'
           AND o.id = (SELECT MIN(p.id) FROM outbox p
                       WHERE p.channel = o.channel AND p.chat_key = o.chat_key
                         AND p.state = 'pending')
           AND c.idx = (SELECT MIN(q.idx) FROM outbox_chunks q
                        WHERE q.outbox_id = o.id AND q.state = 'pending')
           AND {ready}
           AND (c.lease_until IS NULL OR c.lease_until < ?2)
           AND NOT EXISTS (SELECT 1 FROM outbox lo JOIN outbox_chunks l ON l.outbox_id = lo.id
                           WHERE l.lease_owner IS NOT NULL AND l.lease_until >= ?2
                             AND lo.channel = o.channel AND lo.chat_key = o.chat_key
                             AND lo.state = 'pending')
         ORDER BY {order} LIMIT ?3"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut rows = statement.query(params![channel, now, limit as i64])?;
    let mut claimed = Vec::new();
    while let Some(row) = rows.next()? {
        let route: String = row.get(3)?;
        claimed.push(ClaimedChunk {
            outbox_id: row.get(0)?,
            key: row.get(1)?,
            index: row.get::<_, i64>(2)? as u32,
            route: route_from(&route)?,
            text: row.get(4)?,
            attempts: row.get::<_, i64>(5)? as u32,
            count: row.get::<_, i64>(6)? as u32,
            moves: row.get::<_, i64>(7)? as u32,
        });
    }
    drop(rows);
    let mut lease = conn.prepare_cached(
        "UPDATE outbox_chunks SET lease_owner = ?3, lease_until = ?4, attempts = attempts + 1
         WHERE outbox_id = ?1 AND idx = ?2",
    )?;
    for chunk in &mut claimed {
        lease.execute(params![
            chunk.outbox_id,
            chunk.index as i64,
            node,
            now + lease_ms
        ])?;
        chunk.attempts += 1;
    }
    Ok(claimed)
}

/// The next outbox row id, drawn from its sequence: never one drawn before.
fn next_outbox_id(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE sequences SET next = next + 1 WHERE name = 'outbox' RETURNING next - 1",
        )?
        .query_row([], |row| row.get(0))?)
}

fn insert_outbox(conn: &Connection, message: &NewOutbox, now: Millis) -> Result<i64, StoreError> {
    // Cached like every statement here: this runs for every message, and parsing SQL costs
    // more than running it.
    let install: String = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'install_id'")?
        .query_row([], |row| row.get(0))?;
    let next_id = next_outbox_id(conn)?;
    // Short on purpose: Discord nonces allow 25 characters, Feishu uuids 50.
    let key = format!("{install}{next_id:x}");
    conn.prepare_cached(
        "INSERT INTO outbox (id, key, channel, chat_key, route, session, kind, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
    )?
    .execute(params![
        next_id,
        key,
        message.route.channel,
        chat_key(&message.route),
        route_json(&message.route)?,
        message.session,
        message.kind,
        now
    ])?;
    let mut insert_chunk = conn.prepare_cached(
        "INSERT INTO outbox_chunks (outbox_id, idx, text, state, next_attempt_at)
         VALUES (?1, ?2, ?3, 'pending', ?4)",
    )?;
    for (index, text) in message.chunks.iter().enumerate() {
        insert_chunk.execute(params![next_id, index as i64, text, now])?;
    }
    Ok(next_id)
}

fn events_from(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<EventRecord>, StoreError> {
    collect_rows(conn, sql, params, |row| {
        let origin: Option<String> = row.get(4)?;
        Ok(EventRecord {
            id: row.get(0)?,
            session: row.get(1)?,
            context_key: row.get(2)?,
            text: row.get(3)?,
            origin: origin.as_deref().map(route_from).transpose()?,
            wake: row.get(5)?,
            blocked: row.get(6)?,
            coalesced: row.get(7)?,
            created_at: row.get(8)?,
        })
    })
}

/// Rewrites every route that still names `old`'s chat to `new_chat_id`: last routes, pending
/// deliveries (which keep their order under the new chat), and the origins of unfinished jobs
/// and queued events. Finished history keeps the id it had.
fn move_chat(conn: &Connection, old: &Route, new_chat_id: &str) -> Result<(), StoreError> {
    let same_chat = |route: &Route| chat_key(route) == chat_key(old);
    let moved = |text: &str| -> Result<Option<String>, StoreError> {
        let mut route = route_from(text)?;
        if !same_chat(&route) {
            return Ok(None);
        }
        route.chat_id = new_chat_id.to_string();
        route_json(&route).map(Some)
    };
    let rewrite = |select: &str, update: &str| -> Result<(), StoreError> {
        let rows = collect_rows(conn, select, [], |row| {
            Ok((
                row.get::<_, rusqlite::types::Value>(0)?,
                row.get::<_, String>(1)?,
            ))
        })?;
        let mut statement = conn.prepare_cached(update)?;
        for (id, text) in rows {
            if let Some(route) = moved(&text)? {
                statement.execute(params![id, route])?;
            }
        }
        Ok(())
    };
    rewrite(
        "SELECT session, route FROM routes",
        "UPDATE routes SET route = ?2 WHERE session = ?1",
    )?;
    rewrite(
        "SELECT id, origin FROM jobs WHERE state IN ('starting', 'running')",
        "UPDATE jobs SET origin = ?2 WHERE id = ?1",
    )?;
    rewrite(
        "SELECT id, origin FROM events WHERE state = 'queued' AND origin IS NOT NULL",
        "UPDATE events SET origin = ?2 WHERE id = ?1",
    )?;
    let old_key = chat_key(old);
    let new_key = chat_key(&Route {
        chat_id: new_chat_id.to_string(),
        ..old.clone()
    });
    let pending = collect_rows(
        conn,
        "SELECT id, route FROM outbox WHERE state = 'pending' AND chat_key = ?1",
        [&old_key],
        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
    )?;
    let mut update =
        conn.prepare_cached("UPDATE outbox SET route = ?2, chat_key = ?3 WHERE id = ?1")?;
    for (id, text) in pending {
        if let Some(route) = moved(&text)? {
            update.execute(params![id, route, new_key])?;
        }
    }
    Ok(())
}

const EVENT_COLUMNS: &str =
    "id, session, context_key, text, origin, wake, blocked, coalesced, created_at";

impl SqliteStore {
    /// Opens (creating if needed) the database and applies migrations.
    pub fn open(path: &Path, node: &str) -> Result<SqliteStore, StoreError> {
        Ok(SqliteStore {
            engine: Engine::open(path)?,
            node: node.to_string(),
        })
    }

    async fn revive_where(
        &self,
        select: &'static str,
        channel: Option<String>,
    ) -> Result<Vec<Revived>, StoreError> {
        self.engine
            .call(move |conn| {
                let ids = match &channel {
                    Some(channel) => collect_rows(conn, select, [channel], |row| Ok(row.get(0)?))?,
                    None => collect_rows(conn, select, [], |row| Ok(row.get(0)?))?,
                };
                let now = now_ms();
                ids.into_iter().map(|id| revive(conn, id, now)).collect()
            })
            .await
    }
}

#[async_trait::async_trait]
impl Backend for SqliteStore {
    async fn accept_inbound(&self, record: InboundRecord) -> Result<InboundResult, StoreError> {
        self.engine
            .call(move |conn| {
                let now = now_ms();
                // Some platforms number messages per chat: the key includes the chat.
                let seen_key = record
                    .platform_message_id
                    .as_ref()
                    .map(|id| format!("{}|{}|{id}", record.route.account, record.route.chat_id));
                if let Some(key) = &seen_key {
                    let inserted = conn
                        .prepare_cached(
                            "INSERT OR IGNORE INTO inbound_seen (channel, platform_id, seen_at)
                             VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![record.route.channel, key, now])?;
                    if inserted == 0 {
                        // The first copy's row: a client whose answer was lost follows it.
                        let inbox_id = conn
                            .prepare_cached(
                                "SELECT inbox_id FROM inbound_seen
                                 WHERE channel = ?1 AND platform_id = ?2",
                            )?
                            .query_row(params![record.route.channel, key], |row| row.get(0))
                            .optional()?
                            .flatten();
                        return Ok(InboundResult::Duplicate { inbox_id });
                    }
                }
                let route = route_json(&record.route)?;
                conn.prepare_cached(
                    "INSERT INTO inbox (session, route, sender, text, received_at, sent_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    record.session,
                    route,
                    record.sender,
                    record.text,
                    now,
                    record.sent_at_ms
                ])?;
                let inbox_id = conn.last_insert_rowid();
                if let Some(key) = &seen_key {
                    conn.prepare_cached(
                        "UPDATE inbound_seen SET inbox_id = ?3 WHERE channel = ?1 AND platform_id = ?2",
                    )?
                    .execute(params![record.route.channel, key, inbox_id])?;
                }
                let sent_at = record
                    .sent_at_ms
                    .map(|at| at.min(now + MAX_SENT_AT_AHEAD_MS));
                // A message that came late runs, but leaves the route where a newer one put it.
                // Late means: sent before the message that set the route, on the same channel
                // (handed over out of order); or, on any channel, sent well before the route
                // was set (redelivered). Otherwise arrival order decides.
                conn.prepare_cached(
                    "INSERT INTO routes (session, route, updated_at, channel, sent_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (session) DO UPDATE SET route = excluded.route,
                                                         updated_at = excluded.updated_at,
                                                         channel = excluded.channel,
                                                         sent_at = excluded.sent_at
                     WHERE NOT (
                         (routes.channel IS excluded.channel AND routes.sent_at IS NOT NULL
                          AND excluded.sent_at IS NOT NULL AND excluded.sent_at < routes.sent_at)
                         OR (excluded.sent_at IS NOT NULL
                             AND excluded.sent_at < routes.updated_at - ?6))",
                )?
                .execute(params![
                    record.session,
                    route,
                    now,
                    record.route.channel,
                    sent_at,
                    STALE_SENT_AT_MS
                ])?;
                let has_queued_events: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM events WHERE session = ?1 AND state = 'queued')",
                    )?
                    .query_row([&record.session], |row| row.get(0))?;
                Ok(InboundResult::Stored {
                    inbox_id,
                    has_queued_events,
                })
            })
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
        self.engine
            .call(move |conn| {
                let now = now_ms();
                let updated = conn
                    .prepare_cached(
                        "UPDATE inbox SET processed_at = ?2 WHERE id = ?1 AND processed_at IS NULL",
                    )?
                    .execute(params![inbox_id, now])?;
                if updated == 0 {
                    return Err(StoreError::Conflict(format!(
                        "inbox message {inbox_id} was already processed"
                    )));
                }
                if let Some(job) = &job {
                    let inserted = conn
                        .prepare_cached(
                            "INSERT OR IGNORE INTO jobs
                               (id, session, origin, command, cwd, requester, state, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'starting', ?7)",
                        )?
                        .execute(params![
                            job.id,
                            job.session,
                            route_json(&job.origin)?,
                            job.command,
                            job.cwd,
                            job.requester,
                            now
                        ])?;
                    if inserted == 0 {
                        return Err(StoreError::Conflict(format!("job id {} is taken", job.id)));
                    }
                }
                let mut last_reply = None;
                for reply in &replies {
                    last_reply = Some(insert_outbox(conn, reply, now)?);
                }
                if job.is_some() || last_reply.is_some() {
                    conn.prepare_cached(
                        "UPDATE inbox SET job_id = ?2, last_reply = ?3 WHERE id = ?1",
                    )?
                    .execute(params![
                        inbox_id,
                        job.as_ref().map(|j| &j.id),
                        last_reply
                    ])?;
                }
                Ok(())
            })
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
        self.engine
            .call(move |conn| {
                let now = now_ms();
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
                    insert_event(conn, event, max_queued)?;
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
        self.engine
            .call(move |conn| insert_event(conn, &event, max_queued))
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
                .execute(params![id, now_ms()])?;
                Ok(())
            })
            .await
    }

    async fn consume_events(
        &self,
        events: Vec<(i64, i64)>,
        message: NewOutbox,
    ) -> Result<i64, StoreError> {
        self.engine
            .call(move |conn| {
                let now = now_ms();
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
            .call(move |conn| {
                let mut forgotten = 0;
                for id in &jobs {
                    let key = format!("exec:{id}");
                    forgotten += conn
                        .prepare_cached("DELETE FROM event_keys WHERE context_key = ?1")?
                        .execute([&key])?;
                    forgotten += conn
                        .prepare_cached(
                            "DELETE FROM events WHERE context_key = ?1
                             AND state IN ('consumed', 'dropped')",
                        )?
                        .execute([&key])?;
                    forgotten += conn
                        .prepare_cached(
                            "DELETE FROM jobs WHERE id = ?1
                             AND state NOT IN ('starting', 'running')",
                        )?
                        .execute([id])?;
                }
                let limit = limit as i64;
                // Delivered and dropped messages alike, each through its own partial index.
                for state in ["delivered", "dropped"] {
                    forgotten += conn
                        .prepare_cached(&format!(
                            "DELETE FROM outbox_chunks WHERE outbox_id IN
                                 (SELECT id FROM outbox WHERE state = '{state}'
                                    AND finished_at < ?1
                                  ORDER BY finished_at LIMIT ?2)"
                        ))?
                        .execute(params![before, limit])?;
                    forgotten += conn
                        .prepare_cached(&format!(
                            "DELETE FROM outbox WHERE id IN
                                 (SELECT o.id FROM outbox o WHERE o.state = '{state}'
                                    AND o.finished_at < ?1
                                    AND NOT EXISTS (SELECT 1 FROM outbox_chunks c
                                                    WHERE c.outbox_id = o.id)
                                  ORDER BY o.finished_at LIMIT ?2)"
                        ))?
                        .execute(params![before, limit])?;
                }
                // Events that left the queue, whose key is still kept (user-posted keys stay
                // deduped).
                for state in ["consumed", "dropped"] {
                    forgotten += conn
                        .prepare_cached(&format!(
                            "DELETE FROM events WHERE id IN
                                 (SELECT id FROM events WHERE state = '{state}' AND consumed_at < ?1
                                    AND (context_key IS NULL OR context_key NOT LIKE 'exec:%')
                                  ORDER BY consumed_at LIMIT ?2)"
                        ))?
                        .execute(params![before, limit])?;
                }
                forgotten += conn
                    .prepare_cached(
                        "DELETE FROM inbox WHERE id IN
                             (SELECT id FROM inbox WHERE processed_at < ?1
                              ORDER BY processed_at LIMIT ?2)",
                    )?
                    .execute(params![before, limit])?;
                Ok(forgotten)
            })
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
        self.engine
            .call(move |conn| claim(conn, &channel, &node, Claim::Due { limit }, lease_ms))
            .await
    }

    async fn claim_probe(
        &self,
        channel: &str,
        lease_ms: Millis,
    ) -> Result<Option<ClaimedChunk>, StoreError> {
        let channel = channel.to_string();
        let node = self.node.clone();
        self.engine
            .call(move |conn| {
                let claimed = claim(conn, &channel, &node, Claim::Probe, lease_ms)?;
                Ok(claimed.into_iter().next())
            })
            .await
    }

    async fn recover_channel(&self, channel: &str) -> Result<usize, StoreError> {
        let channel = channel.to_string();
        self.engine
            .call(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE outbox_chunks SET next_attempt_at = MIN(next_attempt_at, ?2),
                                                  channel_wait = 0
                         WHERE state = 'pending' AND channel_wait = 1 AND outbox_id IN
                             (SELECT id FROM outbox WHERE channel = ?1 AND state = 'pending')",
                    )?
                    .execute(params![channel, now_ms()])?)
            })
            .await
    }

    async fn record_outcome(
        &self,
        outbox_id: i64,
        index: u32,
        outcome: ChunkOutcome,
    ) -> Result<(), StoreError> {
        self.engine
            .call(move |conn| {
                let now = now_ms();
                let index = index as i64;
                // An outcome that comes late (recorded after its lease ran out, say while the
                // disk was full) for a message an operator dropped or retried meanwhile changes
                // nothing: it must not bring the message back or stall its chat.
                let pending = conn
                    .prepare_cached("SELECT 1 FROM outbox WHERE id = ?1 AND state = 'pending'")?
                    .exists([outbox_id])?;
                if !pending {
                    return Ok(());
                }
                match &outcome {
                    ChunkOutcome::Delivered { platform_id } => {
                        conn.prepare_cached(
                            "UPDATE outbox_chunks SET state = 'sent', sent_at = ?3, platform_id = ?4,
                                    lease_owner = NULL, lease_until = NULL, last_error = NULL
                             WHERE outbox_id = ?1 AND idx = ?2",
                        )?
                        .execute(params![outbox_id, index, now, platform_id])?;
                        conn.prepare_cached(
                            "UPDATE outbox SET state = 'delivered', finished_at = ?2
                             WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM outbox_chunks
                                 WHERE outbox_id = ?1 AND state = 'pending')",
                        )?
                        .execute(params![outbox_id, now])?;
                    }
                    ChunkOutcome::Retry {
                        at,
                        error,
                        channel_wide,
                    } => {
                        conn.prepare_cached(
                            "UPDATE outbox_chunks SET next_attempt_at = ?3, last_error = ?4,
                                    lease_owner = NULL, lease_until = NULL, channel_wait = ?5
                             WHERE outbox_id = ?1 AND idx = ?2",
                        )?
                        .execute(params![outbox_id, index, at, error, channel_wide])?;
                    }
                    ChunkOutcome::ChatMigrated { chat_id } => {
                        let route: String = conn
                            .prepare_cached("SELECT route FROM outbox WHERE id = ?1")?
                            .query_row([outbox_id], |row| row.get(0))?;
                        move_chat(conn, &route_from(&route)?, chat_id)?;
                        conn.prepare_cached(
                            "UPDATE outbox_chunks SET next_attempt_at = ?3, last_error = ?4,
                                    lease_owner = NULL, lease_until = NULL, moves = moves + 1
                             WHERE outbox_id = ?1 AND idx = ?2",
                        )?
                        .execute(params![
                            outbox_id,
                            index,
                            now,
                            format!("the chat moved to {chat_id}")
                        ])?;
                    }
                    ChunkOutcome::Permanent { error } | ChunkOutcome::Unconfigured { error } => {
                        let cause = matches!(outcome, ChunkOutcome::Unconfigured { .. })
                            .then_some("config");
                        conn.prepare_cached(
                            "UPDATE outbox_chunks SET state = 'dead', last_error = ?3,
                                    lease_owner = NULL, lease_until = NULL
                             WHERE outbox_id = ?1 AND idx >= ?2 AND state = 'pending'",
                        )?
                        .execute(params![outbox_id, index, error])?;
                        conn.prepare_cached(
                            "UPDATE outbox SET state = 'dead', finished_at = ?2, dead_cause = ?3
                             WHERE id = ?1",
                        )?
                        .execute(params![outbox_id, now, cause])?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn next_due(&self, channel: &str) -> Result<Option<Millis>, StoreError> {
        let channel = channel.to_string();
        self.engine
            .call(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT MIN(MAX(c.next_attempt_at, COALESCE(c.lease_until, 0)))
                         FROM outbox o JOIN outbox_chunks c ON c.outbox_id = o.id
                         WHERE o.channel = ?1 AND o.state = 'pending' AND c.state = 'pending'
                           AND o.id = (SELECT MIN(p.id) FROM outbox p
                                       WHERE p.channel = o.channel AND p.chat_key = o.chat_key
                                         AND p.state = 'pending')
                           AND c.idx = (SELECT MIN(q.idx) FROM outbox_chunks q
                                        WHERE q.outbox_id = o.id AND q.state = 'pending')",
                    )?
                    .query_row([channel], |row| row.get(0))?)
            })
            .await
    }

    async fn retry_now(&self, channel: &str) -> Result<(), StoreError> {
        let channel = channel.to_string();
        self.engine
            .call(move |conn| {
                conn.prepare_cached(
                    "UPDATE outbox_chunks SET next_attempt_at = ?2
                     WHERE state = 'pending' AND next_attempt_at > ?2 AND outbox_id IN
                         (SELECT id FROM outbox WHERE channel = ?1 AND state = 'pending')",
                )?
                .execute(params![channel, now_ms()])?;
                Ok(())
            })
            .await
    }

    async fn list_outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.engine
            .call(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT o.id, o.key, o.channel, o.route, o.state,
                            (SELECT MAX(attempts) FROM outbox_chunks c WHERE c.outbox_id = o.id),
                            (SELECT last_error FROM outbox_chunks c WHERE c.outbox_id = o.id
                               AND last_error IS NOT NULL ORDER BY idx DESC LIMIT 1),
                            (SELECT MIN(next_attempt_at) FROM outbox_chunks c
                               WHERE c.outbox_id = o.id AND c.state = 'pending'),
                            (SELECT group_concat(text, '') FROM
                               (SELECT text FROM outbox_chunks c WHERE c.outbox_id = o.id
                                ORDER BY idx)),
                            o.dead_cause
                     FROM outbox o WHERE o.state IN ('pending', 'dead') ORDER BY o.id LIMIT ?1",
                )?;
                let mut rows = statement.query([limit as i64])?;
                let mut entries = Vec::new();
                while let Some(row) = rows.next()? {
                    let route: String = row.get(3)?;
                    entries.push(OutboxEntry {
                        id: row.get(0)?,
                        key: row.get(1)?,
                        channel: row.get(2)?,
                        chat_id: route_from(&route)?.chat_id,
                        state: row.get(4)?,
                        attempts: row.get::<_, Option<i64>>(5)?.unwrap_or(0),
                        last_error: row.get(6)?,
                        next_attempt_at: row.get(7)?,
                        text: row.get::<_, Option<String>>(8)?.unwrap_or_default(),
                        dead_cause: row.get(9)?,
                    });
                }
                Ok(entries)
            })
            .await
    }

    async fn retry_dead(&self, id: i64) -> Result<Revived, StoreError> {
        self.engine
            .call(move |conn| {
                let state: Option<String> = conn
                    .prepare_cached("SELECT state FROM outbox WHERE id = ?1")?
                    .query_row([id], |row| row.get(0))
                    .optional()?;
                match state.as_deref() {
                    None => Err(StoreError::NotFound(format!("no delivery {id}"))),
                    Some("dead") => revive(conn, id, now_ms()),
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
        self.engine
            .call(move |conn| {
                let now = now_ms();
                let row: Option<(String, bool)> = conn
                    .prepare_cached(
                        "SELECT state, EXISTS (SELECT 1 FROM outbox_chunks c
                                               WHERE c.outbox_id = o.id AND c.lease_until >= ?2)
                         FROM outbox o WHERE id = ?1",
                    )?
                    .query_row(params![id, now], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                match row {
                    None => return Err(StoreError::NotFound(format!("no delivery {id}"))),
                    Some((_, true)) => {
                        return Err(StoreError::Conflict(format!(
                            "delivery {id} is being sent right now; try again in a moment"
                        )));
                    }
                    Some((state, false)) if state != "pending" && state != "dead" => {
                        return Err(StoreError::Conflict(format!(
                            "delivery {id} is {state}, not pending or dead"
                        )));
                    }
                    Some(_) => {}
                }
                conn.prepare_cached(
                    "UPDATE outbox_chunks SET state = 'dropped'
                     WHERE outbox_id = ?1 AND state IN ('pending', 'dead')",
                )?
                .execute([id])?;
                conn.prepare_cached(
                    "UPDATE outbox SET state = 'dropped', finished_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now])?;
                Ok(())
            })
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

/// Makes dead letter `id` pending again: its dead chunks get fresh attempts and are due `now`.
/// It moves to the back of its chat's queue under a new row id (the next from the sequence), keeping its
/// key (platforms that dedupe see the same message): left in place it would become its chat's
/// head and could cut into a message whose first chunks already went out.
fn revive(conn: &Connection, id: i64, now: Millis) -> Result<Revived, StoreError> {
    let new_id = next_outbox_id(conn)?;
    // The key is unique: the old row lends it to the new one, which its chunks then follow
    // (they reference the row, so the old one goes last).
    conn.prepare_cached("UPDATE outbox SET key = key || '~' WHERE id = ?1")?
        .execute([id])?;
    let copied = conn
        .prepare_cached(
            "INSERT INTO outbox (id, key, channel, chat_key, route, session, kind, state,
                                 created_at)
             SELECT ?2, substr(key, 1, length(key) - 1), channel, chat_key, route, session, kind,
                    'pending', created_at
             FROM outbox WHERE id = ?1 AND state = 'dead'",
        )?
        .execute(params![id, new_id])?;
    if copied != 1 {
        return Err(StoreError::Conflict(format!("delivery {id} is not dead")));
    }
    let dead_chunks: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM outbox_chunks WHERE outbox_id = ?1 AND state = 'dead'",
        )?
        .query_row([id], |row| row.get(0))?;
    if dead_chunks == 0 {
        // Nothing left to send: a pending row without a pending chunk would head its chat's
        // queue for ever.
        return Err(StoreError::Conflict(format!(
            "delivery {id} has no chunk left to send"
        )));
    }
    conn.prepare_cached("UPDATE outbox_chunks SET outbox_id = ?2 WHERE outbox_id = ?1")?
        .execute(params![id, new_id])?;
    conn.prepare_cached(
        "UPDATE outbox_chunks SET state = 'pending', attempts = 0, next_attempt_at = ?2,
                lease_owner = NULL, lease_until = NULL
         WHERE outbox_id = ?1 AND state = 'dead'",
    )?
    .execute(params![new_id, now])?;
    conn.prepare_cached("UPDATE events SET outbox_id = ?2 WHERE outbox_id = ?1")?
        .execute(params![id, new_id])?;
    conn.prepare_cached("UPDATE inbox SET last_reply = ?2 WHERE last_reply = ?1")?
        .execute(params![id, new_id])?;
    conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
        .execute([id])?;
    let channel: String = conn
        .prepare_cached("SELECT channel FROM outbox WHERE id = ?1")?
        .query_row([new_id], |row| row.get(0))?;
    Ok(Revived {
        id: new_id,
        was: id,
        channel,
    })
}

/// A `DeliveryRef` from the five columns at `at` (id, key, channel, state, chunk count) of a
/// LEFT JOIN: `None` when the join found no row.
fn delivery_ref(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<DeliveryRef>> {
    let Some(id) = row.get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    Ok(Some(DeliveryRef {
        id,
        key: row.get(at + 1)?,
        channel: row.get(at + 2)?,
        state: row.get(at + 3)?,
        chunks: row.get(at + 4)?,
    }))
}

/// Inserts an event, or, past the session's bound, folds it into the newest queued one so that
/// nothing is evicted silently. A repeated `context_key` is ignored (returns the existing id).
fn insert_event(conn: &Connection, event: &NewEvent, max_queued: usize) -> Result<i64, StoreError> {
    if let Some(key) = &event.context_key {
        let existing: Option<i64> = conn
            .prepare_cached("SELECT event_id FROM event_keys WHERE context_key = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(id);
        }
    }
    let id = insert_or_fold_event(conn, event, max_queued)?;
    if let Some(key) = &event.context_key {
        conn.prepare_cached("INSERT INTO event_keys (context_key, event_id) VALUES (?1, ?2)")?
            .execute(params![key, id])?;
    }
    Ok(id)
}

fn insert_or_fold_event(
    conn: &Connection,
    event: &NewEvent,
    max_queued: usize,
) -> Result<i64, StoreError> {
    let queued: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM events WHERE session = ?1 AND state = 'queued'")?
        .query_row([&event.session], |row| row.get(0))?;
    let origin = event.origin.as_ref().map(route_json).transpose()?;
    if queued as usize >= max_queued {
        let newest: Option<i64> = conn
            .prepare_cached("SELECT MAX(id) FROM events WHERE session = ?1 AND state = 'queued'")?
            .query_row([&event.session], |row| row.get(0))?;
        if let Some(id) = newest {
            const FOLDED_TEXT_CAP: usize = 16_000;
            conn.prepare_cached(
                "UPDATE events SET coalesced = coalesced + 1,
                        text = CASE WHEN length(text) < ?3 THEN text || char(10) || char(10) || ?2
                                    ELSE text END,
                        wake = COALESCE(?4, wake)
                 WHERE id = ?1",
            )?
            .execute(params![id, event.text, FOLDED_TEXT_CAP as i64, event.wake])?;
            return Ok(id);
        }
    }
    conn.prepare_cached(
        "INSERT INTO events (session, context_key, text, origin, wake, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
    )?
    .execute(params![
        event.session,
        event.context_key,
        event.text,
        origin,
        event.wake,
        now_ms()
    ])?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
mod tests;
