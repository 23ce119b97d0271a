//! Accepting a message (dedupe, inbox, last route, in one transaction), reading the messages
//! not yet acted on, and finishing one (its job and replies).

use execrelay_channel::Route;
use rusqlite::{Connection, OptionalExtension, params};

use super::outbox::insert_outbox;
use super::rows::*;
use crate::store::types::*;

/// A platform clock is believed this far ahead of ours, no further: a later time would hold a
/// route in place until then.
const MAX_SENT_AT_AHEAD_MS: i64 = 5_000;
/// A message the platform says was sent this long before the current route was set is a late
/// redelivery (a webhook retried for hours, a replay after a resume), whatever its channel;
/// within this, clocks of different platforms are too far apart to compare.
const STALE_SENT_AT_MS: i64 = 5 * 60 * 1000;

/// What a message is deduped on within its channel. Some platforms number messages per chat:
/// the key includes the chat.
fn seen_key(route: &Route, platform_message_id: &str) -> String {
    format!("{}|{}|{platform_message_id}", route.account, route.chat_id)
}

/// Whether a message with this platform id was stored in this chat already.
pub(super) fn was_seen(
    conn: &Connection,
    route: &Route,
    platform_message_id: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM inbound_seen WHERE channel = ?1 AND platform_id = ?2")?
        .exists(params![route.channel, seen_key(route, platform_message_id)])?)
}

pub(super) fn accept_inbound(
    conn: &Connection,
    record: InboundRecord,
    now: Millis,
) -> Result<InboundResult, StoreError> {
    let seen_key = record
        .platform_message_id
        .as_ref()
        .map(|id| seen_key(&record.route, id));
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
}

pub(super) fn finish_inbox(
    conn: &Connection,
    inbox_id: i64,
    job: Option<NewJob>,
    replies: Vec<NewOutbox>,
    now: Millis,
) -> Result<(), StoreError> {
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
        conn.prepare_cached("UPDATE inbox SET job_id = ?2, last_reply = ?3 WHERE id = ?1")?
            .execute(params![inbox_id, job.as_ref().map(|j| &j.id), last_reply])?;
    }
    Ok(())
}

pub(super) fn pending(conn: &Connection, limit: usize) -> Result<Vec<InboxRecord>, StoreError> {
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
}

/// Forgets the dedupe records of messages seen before `before`.
pub(super) fn prune_seen(conn: &Connection, before: Millis) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM inbound_seen WHERE seen_at < ?1")?
        .execute([before])?)
}
