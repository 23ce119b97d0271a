//! The outbox's own statements: claiming chats' head chunks, drawing ids, writing a message
//! and its chunks, following a chat that moved, reviving dead letters, ending an outage.

use execrelay_channel::Route;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{buttons_from, buttons_json, chat_key, collect_rows, route_from, route_json};
use crate::store::types::*;

/// Which chunks a claim may lease.
#[derive(Clone, Copy)]
pub(super) enum Claim {
    /// Every chat's head that is due, up to `limit`, oldest message first.
    Due { limit: usize },
    /// One head to probe a failing channel with (`Store::claim_probe`).
    Probe,
}

/// The heads of `?1`'s chats: each chat's oldest pending message's first unsent chunk (`c`, of
/// message `o`). A head that is leased or not yet due holds its chat back, which keeps order.
macro_rules! heads {
    () => {
        "FROM outbox o JOIN outbox_chunks c ON c.outbox_id = o.id
         WHERE o.channel = ?1 AND o.state = 'pending' AND c.state = 'pending'
           AND o.id = (SELECT MIN(p.id) FROM outbox p
                       WHERE p.channel = o.channel AND p.chat_key = o.chat_key
                         AND p.state = 'pending')
           AND c.idx = (SELECT MIN(q.idx) FROM outbox_chunks q
                        WHERE q.outbox_id = o.id AND q.state = 'pending')"
    };
}

/// Leases the heads that `ready` lets go, `order` first, at most `?5`. A chat with any chunk
/// leased waits too: rows moved in from a migrated chat sort ahead of a send already in flight
/// at the new id, and must wait for it. One statement picks the heads and leases them, as
/// PostgreSQL's `UPDATE … WHERE (…) IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING` would, so
/// that two writers could never lease one chunk.
macro_rules! claim_heads {
    ($ready:literal, $order:literal) => {
        concat!(
            "UPDATE outbox_chunks SET lease_owner = ?3, lease_until = ?4, attempts = attempts + 1
             WHERE (outbox_id, idx) IN (SELECT c.outbox_id, c.idx ",
            heads!(),
            " AND ",
            $ready,
            " AND (c.lease_until IS NULL OR c.lease_until < ?2)
               AND NOT EXISTS (SELECT 1 FROM outbox lo JOIN outbox_chunks l ON l.outbox_id = lo.id
                               WHERE l.lease_owner IS NOT NULL AND l.lease_until >= ?2
                                 AND lo.channel = o.channel AND lo.chat_key = o.chat_key
                                 AND lo.state = 'pending')
             ORDER BY ",
            $order,
            " LIMIT ?5)
             RETURNING outbox_id, idx, text, attempts, moves"
        )
    };
}

pub(super) fn claim(
    conn: &Connection,
    channel: &str,
    node: &str,
    mode: Claim,
    lease_ms: Millis,
    now: Millis,
) -> Result<Vec<ClaimedChunk>, StoreError> {
    let (sql, limit) = match mode {
        Claim::Due { limit } => (claim_heads!("c.next_attempt_at <= ?2", "o.id"), limit),
        Claim::Probe => (
            claim_heads!(
                "(c.next_attempt_at <= ?2 OR c.channel_wait = 1)",
                "c.next_attempt_at, o.id"
            ),
            1,
        ),
    };
    let leased = collect_rows(
        conn,
        sql,
        params![channel, now, node, now + lease_ms, limit as i64],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        },
    )?;
    let mut message = conn.prepare_cached(
        "SELECT key, route, (SELECT COUNT(*) FROM outbox_chunks n WHERE n.outbox_id = o.id),
                buttons,
                (SELECT j.finished_at FROM jobs j WHERE j.id = o.job_id AND o.kind = 'events')
         FROM outbox o WHERE o.id = ?1",
    )?;
    let mut claimed = Vec::with_capacity(leased.len());
    for (outbox_id, index, text, attempts, moves) in leased {
        let (key, route, count, buttons, exited): (String, String, i64, Option<String>, _) =
            message.query_row([outbox_id], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get::<_, Option<Millis>>(4)?,
                ))
            })?;
        // Buttons sit under a message's last chunk.
        let buttons = match buttons {
            Some(buttons) if index + 1 == count => buttons_from(&buttons)?,
            _ => Vec::new(),
        };
        claimed.push(ClaimedChunk {
            buttons,
            outbox_id,
            key,
            index: index as u32,
            count: count as u32,
            route: route_from(&route)?,
            text,
            attempts: attempts as u32,
            moves: moves as u32,
            completion_of_exit: exited.filter(|_| index + 1 == count),
        });
    }
    // RETURNING names no order: the oldest message first, as the claim chose them.
    claimed.sort_by_key(|chunk| (chunk.outbox_id, chunk.index));
    Ok(claimed)
}

/// The earliest moment some head of `channel`'s chats becomes due (or its lease runs out).
pub(super) fn next_due(conn: &Connection, channel: &str) -> Result<Option<Millis>, StoreError> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT MIN(MAX(c.next_attempt_at, COALESCE(c.lease_until, 0))) ",
            heads!()
        ))?
        .query_row([channel], |row| row.get(0))?)
}

/// The next outbox row id, drawn from its sequence: never one drawn before.
pub(super) fn next_outbox_id(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE sequences SET next = next + 1 WHERE name = 'outbox' RETURNING next - 1",
        )?
        .query_row([], |row| row.get(0))?)
}

pub(super) fn insert_outbox(
    conn: &Connection,
    message: &NewOutbox,
    now: Millis,
) -> Result<i64, StoreError> {
    // Cached like every statement here: this runs for every message, and parsing SQL costs
    // more than running it.
    let install: String = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'install_id'")?
        .query_row([], |row| row.get(0))?;
    let next_id = next_outbox_id(conn)?;
    // Short on purpose: Discord nonces allow 25 characters, Feishu uuids 50.
    let key = format!("{install}{next_id:x}");
    conn.prepare_cached(
        "INSERT INTO outbox (id, key, channel, chat_key, route, session, kind, state, created_at,
                             job_id, buttons)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10)",
    )?
    .execute(params![
        next_id,
        key,
        message.route.channel,
        chat_key(&message.route),
        route_json(&message.route)?,
        message.session,
        message.kind,
        now,
        message.job_id,
        buttons_json(&message.buttons)?
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

/// Rewrites every route that still names `old`'s chat to `new_chat_id`: last routes, pending
/// deliveries (which keep their order under the new chat), and the origins of unfinished jobs
/// and queued events. Finished history keeps the id it had.
pub(super) fn move_chat(
    conn: &Connection,
    old: &Route,
    new_chat_id: &str,
) -> Result<(), StoreError> {
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

/// Makes dead letter `id` pending again: its dead chunks get fresh attempts and are due `now`.
/// It moves to the back of its chat's queue under a new row id (the next from the sequence), keeping its
/// key (platforms that dedupe see the same message): left in place it would become its chat's
/// head and could cut into a message whose first chunks already went out.
pub(super) fn revive(conn: &Connection, id: i64, now: Millis) -> Result<Revived, StoreError> {
    let new_id = next_outbox_id(conn)?;
    // The key is unique: the old row lends it to the new one, which its chunks then follow
    // (they reference the row, so the old one goes last).
    conn.prepare_cached("UPDATE outbox SET key = key || '~' WHERE id = ?1")?
        .execute([id])?;
    let copied = conn
        .prepare_cached(
            "INSERT INTO outbox (id, key, channel, chat_key, route, session, kind, state,
                                 created_at, job_id, buttons)
             SELECT ?2, substr(key, 1, length(key) - 1), channel, chat_key, route, session, kind,
                    'pending', created_at, job_id, buttons
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

/// Revives dead letter `id`, which must be dead.
pub(super) fn revive_dead(conn: &Connection, id: i64, now: Millis) -> Result<Revived, StoreError> {
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
}

/// Which dead letters to revive together.
pub(super) enum DeadLetters<'a> {
    All,
    /// Those dead for a setting `channel` lacked (`SendOutcome::Unconfigured`).
    Unconfigured {
        channel: &'a str,
    },
}

pub(super) fn revive_all(
    conn: &Connection,
    which: DeadLetters<'_>,
    now: Millis,
) -> Result<Vec<Revived>, StoreError> {
    let ids: Vec<i64> = match which {
        DeadLetters::All => collect_rows(
            conn,
            "SELECT id FROM outbox WHERE state = 'dead' ORDER BY id",
            [],
            |row| Ok(row.get(0)?),
        )?,
        DeadLetters::Unconfigured { channel } => collect_rows(
            conn,
            "SELECT id FROM outbox WHERE state = 'dead' AND dead_cause = 'config'
               AND channel = ?1 ORDER BY id",
            [channel],
            |row| Ok(row.get(0)?),
        )?,
    };
    ids.into_iter().map(|id| revive(conn, id, now)).collect()
}

/// Frees the chunks `node` had leased: at a start, sends in flight when it stopped.
pub(super) fn release_leases_of(conn: &Connection, node: &str) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE outbox_chunks SET lease_owner = NULL, lease_until = NULL
             WHERE lease_owner = ?1",
        )?
        .execute([node])?)
}

/// Ends `channel`'s outage: every chunk that waited for it is due now.
pub(super) fn recover_channel(
    conn: &Connection,
    channel: &str,
    now: Millis,
) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE outbox_chunks SET next_attempt_at = MIN(next_attempt_at, ?2), channel_wait = 0
             WHERE state = 'pending' AND channel_wait = 1 AND outbox_id IN
                 (SELECT id FROM outbox WHERE channel = ?1 AND state = 'pending')",
        )?
        .execute(params![channel, now])?)
}

/// Makes every pending chunk of `channel` due now (a local chat client just connected).
pub(super) fn due_now(conn: &Connection, channel: &str, now: Millis) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE outbox_chunks SET next_attempt_at = ?2
         WHERE state = 'pending' AND next_attempt_at > ?2 AND outbox_id IN
             (SELECT id FROM outbox WHERE channel = ?1 AND state = 'pending')",
    )?
    .execute(params![channel, now])?;
    Ok(())
}

pub(super) fn record_outcome(
    conn: &Connection,
    outbox_id: i64,
    index: u32,
    outcome: ChunkOutcome,
    now: Millis,
) -> Result<(), StoreError> {
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
            let cause = matches!(outcome, ChunkOutcome::Unconfigured { .. }).then_some("config");
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
}

pub(super) fn drop_outbox(conn: &Connection, id: i64, now: Millis) -> Result<(), StoreError> {
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
    conn.prepare_cached("UPDATE outbox SET state = 'dropped', finished_at = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

pub(super) fn list_outbox(conn: &Connection, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
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
}
