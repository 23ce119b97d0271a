//! Forgetting what nothing is owed for any more: finished jobs' rows, delivered or dropped
//! messages, consumed or dropped events, processed inbox rows.

use rusqlite::{Connection, params};

use crate::store::types::*;

pub(super) fn forget_history(
    conn: &Connection,
    jobs: Vec<String>,
    before: Millis,
    limit: usize,
) -> Result<usize, StoreError> {
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
}
