//! Rows to domain values and back: routes as JSON, job and event columns, the one loop every
//! listing uses.

use execrelay_channel::{Button, Route};
use rusqlite::Connection;

use crate::store::types::*;

pub(super) fn route_json(route: &Route) -> Result<String, StoreError> {
    serde_json::to_string(route).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn route_from(text: &str) -> Result<Route, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("route: {e}")))
}

/// A message's buttons as stored: `NULL` for none.
pub(super) fn buttons_json(buttons: &[Button]) -> Result<Option<String>, StoreError> {
    if buttons.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(buttons)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn buttons_from(text: &str) -> Result<Vec<Button>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("buttons: {e}")))
}

/// What orders messages: one queue per chat, which its threads share. Not the account: a route
/// named in the config (`heartbeat.target`) has none, and must queue with the chat's replies.
pub(super) fn chat_key(route: &Route) -> String {
    format!("{}|{}", route.channel, route.chat_id)
}

pub(super) const JOB_COLUMNS: &str = "id, session, origin, command, cwd, requester, state, created_at, \
     started_at, finished_at, supervisor_pid, exit_code, signal, detail";

pub(super) fn job_from_row(row: &rusqlite::Row<'_>) -> Result<JobRecord, StoreError> {
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
pub(super) fn collect_rows<T>(
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

pub(super) fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRecord>, StoreError> {
    collect_rows(conn, sql, params, job_from_row)
}

pub(super) fn events_from(
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

pub(super) const EVENT_COLUMNS: &str =
    "id, session, context_key, text, origin, wake, blocked, coalesced, created_at";

/// A `DeliveryRef` from the six columns at `at` (id, key, channel, state, chunk count,
/// finished_at) of a
/// LEFT JOIN: `None` when the join found no row.
pub(super) fn delivery_ref(
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<DeliveryRef>> {
    let Some(id) = row.get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    Ok(Some(DeliveryRef {
        id,
        key: row.get(at + 1)?,
        channel: row.get(at + 2)?,
        state: row.get(at + 3)?,
        chunks: row.get(at + 4)?,
        finished_at: row.get(at + 5)?,
    }))
}
