//! Events: queuing one (at most one per context key, folded into the newest past the
//! session's bound, never evicted), reading the queue, and taking events out of it.

use rusqlite::{Connection, OptionalExtension, params};

use super::outbox::insert_outbox;
use super::rows::*;
use crate::store::types::*;

/// Inserts an event, or, past the session's bound, folds it into the newest queued one so that
/// nothing is evicted silently. A repeated `context_key` is ignored (returns the existing id).
pub(super) fn insert_event(
    conn: &Connection,
    event: &NewEvent,
    max_queued: usize,
    now: Millis,
) -> Result<i64, StoreError> {
    if let Some(key) = &event.context_key {
        let existing: Option<i64> = conn
            .prepare_cached("SELECT event_id FROM event_keys WHERE context_key = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(id);
        }
    }
    let id = insert_or_fold_event(conn, event, max_queued, now)?;
    if let Some(key) = &event.context_key {
        conn.prepare_cached("INSERT INTO event_keys (context_key, event_id) VALUES (?1, ?2)")?
            .execute(params![key, id])?;
    }
    Ok(id)
}

pub(super) fn insert_or_fold_event(
    conn: &Connection,
    event: &NewEvent,
    max_queued: usize,
    now: Millis,
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
        now
    ])?;
    Ok(conn.last_insert_rowid())
}

/// The queued events of one session, or of all when `session` is `None`, oldest first.
pub(super) fn queued(
    conn: &Connection,
    session: Option<&str>,
) -> Result<Vec<EventRecord>, StoreError> {
    match session {
        Some(session) => {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE session = ?1 AND state = 'queued'
                 ORDER BY id"
            );
            events_from(conn, &sql, [session])
        }
        None => {
            let sql =
                format!("SELECT {EVENT_COLUMNS} FROM events WHERE state = 'queued' ORDER BY id");
            events_from(conn, &sql, [])
        }
    }
}

pub(super) fn mark_blocked(conn: &Connection, ids: &[i64], reason: &str) -> Result<(), StoreError> {
    let mut statement =
        conn.prepare_cached("UPDATE events SET blocked = ?2 WHERE id = ?1 AND state = 'queued'")?;
    for id in ids {
        statement.execute(params![id, reason])?;
    }
    Ok(())
}

/// Drops a queued event (the operator's `drop`): it leaves the queue undelivered.
pub(super) fn drop_queued(conn: &Connection, id: i64, now: Millis) -> Result<(), StoreError> {
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
    // `consumed_at` is when an event left the queue, whichever way: retention forgets dropped
    // events by it too.
    conn.prepare_cached(
        "UPDATE events SET state = 'dropped', consumed_at = ?2 WHERE id = ?1 AND state = 'queued'",
    )?
    .execute(params![id, now])?;
    Ok(())
}

/// Queues `message` and marks `events` (id, the fold count read with it) consumed by it; an
/// event that changed meanwhile (taken, or folded into) fails the whole operation.
pub(super) fn consume(
    conn: &Connection,
    events: &[(i64, i64)],
    message: &NewOutbox,
    now: Millis,
) -> Result<i64, StoreError> {
    let outbox_id = insert_outbox(conn, message, now)?;
    let mut consume = conn.prepare_cached(
        "UPDATE events SET state = 'consumed', consumed_at = ?2, outbox_id = ?3, blocked = NULL
         WHERE id = ?1 AND state = 'queued' AND coalesced = ?4",
    )?;
    for (id, coalesced) in events {
        if consume.execute(params![id, now, outbox_id, coalesced])? != 1 {
            return Err(StoreError::Conflict(format!(
                "event {id} is no longer queued"
            )));
        }
    }
    Ok(outbox_id)
}
