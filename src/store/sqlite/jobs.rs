//! Jobs: their state as the supervisor reports it, and the listings `/jobs`, `/status` and
//! retention read.

use rusqlite::{Connection, params};

use super::events::insert_event;
use super::rows::*;
use crate::store::types::*;

pub(super) fn mark_running(
    conn: &Connection,
    id: &str,
    supervisor_pid: u32,
    started_at: Millis,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET state = 'running', supervisor_pid = ?2, started_at = ?3
         WHERE id = ?1 AND state IN ('starting', 'running')",
    )?
    .execute(params![id, supervisor_pid as i64, started_at])?;
    Ok(())
}

/// Records how a job ended and queues its event with it; `false` when it had already ended.
pub(super) fn finish(
    conn: &Connection,
    id: &str,
    outcome: &JobFinal,
    event: Option<&NewEvent>,
    max_queued: usize,
    now: Millis,
) -> Result<bool, StoreError> {
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
    if let Some(event) = event {
        insert_event(conn, event, max_queued, now)?;
    }
    Ok(true)
}

pub(super) fn by_id(conn: &Connection, id: &str) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    Ok(query_jobs(conn, &sql, [id])?.into_iter().next())
}

/// Up to ten jobs whose id starts with `prefix` (lowercase), newest first.
pub(super) fn by_prefix(
    conn: &Connection,
    session: Option<&str>,
    prefix: &str,
) -> Result<Vec<JobRecord>, StoreError> {
    // Ids are lowercase hex; a range on the id's index (not LIKE, which scans) finds the ids
    // that start with the prefix.
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id >= ?1 AND id < ?1 || char(1114111)
         AND (?2 IS NULL OR session = ?2) ORDER BY created_at DESC LIMIT 10"
    );
    query_jobs(conn, &sql, params![prefix, session])
}

pub(super) fn recent(
    conn: &Connection,
    session: Option<&str>,
    limit: usize,
) -> Result<Vec<JobRecord>, StoreError> {
    match session {
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
    }
}

pub(super) fn unfinished(conn: &Connection) -> Result<Vec<JobRecord>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('starting', 'running') ORDER BY created_at"
    );
    query_jobs(conn, &sql, [])
}

pub(super) fn unfinished_count_of(conn: &Connection, session: &str) -> Result<usize, StoreError> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM jobs WHERE session = ?1 AND state IN ('starting', 'running')",
        )?
        .query_row([session], |row| row.get(0))?;
    Ok(count as usize)
}

/// Finished jobs before `before`, after the cursor, whose completion is no longer queued.
pub(super) fn forgettable(
    conn: &Connection,
    before: Millis,
    after: &JobCursor,
    limit: usize,
) -> Result<Vec<JobCursor>, StoreError> {
    collect_rows(
        conn,
        "SELECT j.finished_at, j.id FROM jobs j
         WHERE j.state NOT IN ('starting', 'running') AND j.finished_at < ?1
           AND (j.finished_at, j.id) > (?3, ?4)
           AND NOT EXISTS (SELECT 1 FROM event_keys k
                           JOIN events e ON e.id = k.event_id
                           WHERE k.context_key = 'exec:' || j.id
                             AND e.state = 'queued')
         ORDER BY j.finished_at, j.id LIMIT ?2",
        params![before, limit as i64, after.finished_at, after.id],
        |row| {
            Ok(JobCursor {
                finished_at: row.get(0)?,
                id: row.get(1)?,
            })
        },
    )
}
