//! The jobs whose acknowledgement may be edited with their progress, and marking that done.

use rusqlite::{Connection, params};

use super::rows::*;
use crate::store::types::*;

/// Jobs not yet `progress_done` that started before `started_before`, with their delivered
/// acknowledgement (sent with buttons): its route, the platform's id of its last chunk (the one
/// under which the buttons sit), and whether its chat has a message waiting to go out.
pub(super) fn targets(
    conn: &Connection,
    started_before: Millis,
) -> Result<Vec<ProgressTarget>, StoreError> {
    collect_rows(conn, &TARGETS, [started_before], |row| {
        let job = job_from_row(row)?;
        let route: String = row.get(14)?;
        Ok(ProgressTarget {
            job,
            route: route_from(&route)?,
            message_id: row.get(15)?,
            chat_busy: row.get(16)?,
        })
    })
}

/// Built once: it runs every second while progress is on.
static TARGETS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let job_columns = JOB_COLUMNS
        .split(", ")
        .map(|column| format!("j.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {job_columns}, o.route, c.platform_id,
                EXISTS (SELECT 1 FROM outbox p WHERE p.channel = o.channel
                          AND p.chat_key = o.chat_key AND p.state = 'pending')
         FROM jobs j
         JOIN outbox o ON o.job_id = j.id AND o.kind = 'ack' AND o.buttons IS NOT NULL
         JOIN outbox_chunks c ON c.outbox_id = o.id
              AND c.idx = (SELECT MAX(n.idx) FROM outbox_chunks n WHERE n.outbox_id = o.id)
         WHERE j.progress_done = 0 AND j.started_at IS NOT NULL AND j.started_at < ?1
           AND c.state = 'sent' AND c.platform_id IS NOT NULL
         ORDER BY j.started_at"
    )
});

/// No more edits for `job_id`: its last one is done, or its message cannot be edited.
pub(super) fn finish(conn: &Connection, job_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE jobs SET progress_done = 1 WHERE id = ?1")?
        .execute(params![job_id])?;
    Ok(())
}

/// Marks done the jobs that ended before `finished_before` and are still not: their last edit
/// never came (nothing editable to edit). Returns how many.
pub(super) fn settle_stale(
    conn: &Connection,
    finished_before: Millis,
) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE jobs SET progress_done = 1
             WHERE progress_done = 0 AND state NOT IN ('starting', 'running')
               AND finished_at < ?1",
        )?
        .execute([finished_before])?)
}
