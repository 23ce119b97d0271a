//! What the operator and the local chat client ask about: a message's fate, a completion's,
//! the counts `/status` shows.

use rusqlite::{Connection, OptionalExtension};

use super::rows::*;
use crate::store::types::*;

pub(super) fn inbox_status(conn: &Connection, id: i64) -> Result<Option<InboxStatus>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT i.processed_at IS NOT NULL, i.job_id, o.id, o.key, o.channel, o.state,
                    (SELECT COUNT(*) FROM outbox_chunks c WHERE c.outbox_id = o.id), o.finished_at
             FROM inbox i LEFT JOIN outbox o ON o.id = i.last_reply WHERE i.id = ?1",
        )?
        .query_row([id], |row| {
            Ok(InboxStatus {
                processed: row.get(0)?,
                job_id: row.get(1)?,
                last_reply: delivery_ref(row, 2)?,
            })
        })
        .optional()?)
}

pub(super) fn completion_status(
    conn: &Connection,
    job_id: &str,
) -> Result<Option<CompletionStatus>, StoreError> {
    // Through `event_keys`: a completion folded into another event is found there.
    Ok(conn
        .prepare_cached(
            "SELECT e.id, e.state, e.blocked, o.id, o.key, o.channel, o.state,
                    (SELECT COUNT(*) FROM outbox_chunks c WHERE c.outbox_id = o.id), o.finished_at
             FROM event_keys k JOIN events e ON e.id = k.event_id
             LEFT JOIN outbox o ON o.id = e.outbox_id
             WHERE k.context_key = ?1",
        )?
        .query_row([format!("exec:{job_id}")], |row| {
            Ok(CompletionStatus {
                event_id: row.get(0)?,
                event_state: row.get(1)?,
                blocked: row.get(2)?,
                delivery: delivery_ref(row, 3)?,
            })
        })
        .optional()?)
}

/// Per channel, the creation time of its oldest pending message (through `outbox_pending`:
/// proportional to what is pending, not to history).
pub(super) fn oldest_pending(conn: &Connection) -> Result<Vec<(String, Millis)>, StoreError> {
    collect_rows(
        conn,
        "SELECT channel, MIN(created_at) FROM outbox WHERE state = 'pending'
         GROUP BY channel ORDER BY channel",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

pub(super) fn counts(conn: &Connection) -> Result<Counts, StoreError> {
    let count = |sql: &str| -> Result<i64, StoreError> {
        Ok(conn.prepare_cached(sql)?.query_row([], |row| row.get(0))?)
    };
    Ok(Counts {
        running_jobs: count("SELECT COUNT(*) FROM jobs WHERE state IN ('starting', 'running')")?,
        queued_events: count("SELECT COUNT(*) FROM events WHERE state = 'queued'")?,
        pending_deliveries: count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")?,
        dead_deliveries: count("SELECT COUNT(*) FROM outbox WHERE state = 'dead'")?,
        blocked_events: collect_rows(
            conn,
            "SELECT blocked, COUNT(*) FROM events
             WHERE state = 'queued' AND blocked IS NOT NULL
             GROUP BY blocked ORDER BY blocked",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?,
    })
}
