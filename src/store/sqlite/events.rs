//! Queuing an event: at most one per context key, folded into the newest past the session's
//! bound, never evicted.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::route_json;
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
