//! Schema migrations, versioned in code: `user_version` counts the steps applied.

use rusqlite::Connection;

use super::StoreError;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    -- The last place each session spoke from (§1 of the relay semantics).
    CREATE TABLE routes (
        session    TEXT PRIMARY KEY,
        route      TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );

    -- Platform message ids already accepted: a redelivery is never run twice.
    CREATE TABLE inbound_seen (
        channel     TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        seen_at     INTEGER NOT NULL,
        PRIMARY KEY (channel, platform_id)
    );

    -- Accepted messages waiting for the command processor.
    CREATE TABLE inbox (
        id           INTEGER PRIMARY KEY,
        session      TEXT NOT NULL,
        route        TEXT NOT NULL,
        sender       TEXT NOT NULL,
        text         TEXT NOT NULL,
        received_at  INTEGER NOT NULL,
        processed_at INTEGER
    );
    CREATE INDEX inbox_pending ON inbox (id) WHERE processed_at IS NULL;

    CREATE TABLE jobs (
        id             TEXT PRIMARY KEY,
        session        TEXT NOT NULL,
        origin         TEXT NOT NULL,
        command        TEXT NOT NULL,
        cwd            TEXT NOT NULL,
        requester      TEXT NOT NULL,
        state          TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        started_at     INTEGER,
        finished_at    INTEGER,
        supervisor_pid INTEGER,
        exit_code      INTEGER,
        signal         INTEGER,
        detail         TEXT
    );
    CREATE INDEX jobs_session ON jobs (session, created_at);
    CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('starting', 'running');

    -- The system-event queue (§4). `wake` is the heartbeat reason the event asks for; NULL
    -- waits for the next scheduled run.
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        session     TEXT NOT NULL,
        context_key TEXT UNIQUE,
        text        TEXT NOT NULL,
        origin      TEXT,
        wake        TEXT,
        state       TEXT NOT NULL,
        blocked     TEXT,
        coalesced   INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        consumed_at INTEGER,
        outbox_id   INTEGER
    );
    CREATE INDEX events_queued ON events (session, id) WHERE state = 'queued';

    -- Every context key ever queued, including those folded into another event: at most one
    -- completion per job, even past the queue bound.
    CREATE TABLE event_keys (
        context_key TEXT PRIMARY KEY,
        event_id    INTEGER NOT NULL
    );

    -- One row per outbound message; its text lives in chunks with per-chunk progress (§7).
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY,
        key         TEXT NOT NULL UNIQUE,
        channel     TEXT NOT NULL,
        chat_key    TEXT NOT NULL,
        route       TEXT NOT NULL,
        session     TEXT,
        kind        TEXT NOT NULL,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX outbox_pending ON outbox (channel, chat_key, id) WHERE state = 'pending';

    CREATE TABLE outbox_chunks (
        outbox_id       INTEGER NOT NULL REFERENCES outbox (id),
        idx             INTEGER NOT NULL,
        text            TEXT NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        lease_owner     TEXT,
        lease_until     INTEGER,
        last_error      TEXT,
        platform_id     TEXT,
        sent_at         INTEGER,
        PRIMARY KEY (outbox_id, idx)
    );
    "#,
    // 2: the tables grow with history; keep the reads that list, count or recover from it
    // proportional to what they return (measured: 15-250 ms each at 200,000 jobs without).
    r#"
    CREATE INDEX events_queued_id ON events (id) WHERE state = 'queued';
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE INDEX outbox_open ON outbox (id) WHERE state IN ('pending', 'dead');
    CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead';
    CREATE INDEX outbox_chunks_leased ON outbox_chunks (lease_owner) WHERE lease_owner IS NOT NULL;
    "#,
    // 3: retention ([exec] keep_jobs) walks what ended longest ago.
    r#"
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state NOT IN ('starting', 'running');
    CREATE INDEX outbox_delivered ON outbox (finished_at) WHERE state = 'delivered';
    CREATE INDEX events_consumed ON events (consumed_at) WHERE state = 'consumed';
    CREATE INDEX inbox_processed ON inbox (processed_at) WHERE processed_at IS NOT NULL;
    "#,
    // 4: messages one channel hands over out of order must not move a route backwards: the
    // route remembers its channel and when the platform says its message was sent.
    r#"
    ALTER TABLE routes ADD COLUMN channel TEXT;
    ALTER TABLE routes ADD COLUMN sent_at INTEGER;
    "#,
    // 5: retention walks finished jobs by (finished_at, id), past those it must keep back.
    r#"
    DROP INDEX jobs_finished;
    CREATE INDEX jobs_finished ON jobs (finished_at, id) WHERE state NOT IN ('starting', 'running');
    "#,
    // 6: how often a chunk's chat moved, apart from how often it was tried: a completion that
    // waited out an outage may still follow its group's one move.
    r#"
    ALTER TABLE outbox_chunks ADD COLUMN moves INTEGER NOT NULL DEFAULT 0;
    "#,
    // 7: a chat's queue no longer depends on the account a route names (`chat_key`).
    r#"
    UPDATE outbox SET chat_key = channel || '|' || json_extract(route, '$.chat_id');
    "#,
    // 8: operators retry and drop what is stuck. A dead letter remembers whether a missing
    // setting caused it (`dead_cause = 'config'`: retried at start once the channel has it); a
    // dropped message or event stays as history (state `dropped`) until retention forgets it;
    // an inbox row remembers the job and the last reply it produced, and a dedupe record the
    // row it let in, so a client can follow them (also after resending a message).
    r#"
    ALTER TABLE outbox ADD COLUMN dead_cause TEXT;
    CREATE INDEX outbox_dead_config ON outbox (channel) WHERE state = 'dead' AND dead_cause = 'config';
    CREATE INDEX outbox_dropped ON outbox (finished_at) WHERE state = 'dropped';
    CREATE INDEX events_dropped ON events (consumed_at) WHERE state = 'dropped';
    ALTER TABLE inbox ADD COLUMN job_id TEXT;
    ALTER TABLE inbox ADD COLUMN last_reply INTEGER;
    ALTER TABLE inbound_seen ADD COLUMN inbox_id INTEGER;
    UPDATE outbox SET dead_cause = 'config'
     WHERE state = 'dead' AND channel = 'webhook' AND EXISTS (SELECT 1 FROM outbox_chunks c
           WHERE c.outbox_id = outbox.id AND c.state = 'dead'
             AND c.last_error = 'no callback_url configured for the webhook channel');
    "#,
    // 9: a chunk that waits because its channel failed as a whole (the platform was down), not
    // for its chat: due again the moment a send on the channel works.
    r#"
    ALTER TABLE outbox_chunks ADD COLUMN channel_wait INTEGER NOT NULL DEFAULT 0;
    "#,
    // 10: an inbox row keeps when the platform says its message was sent, so that a command
    // that reaches the relay long after (a Discord backfill after a day down) is not run.
    r#"
    ALTER TABLE inbox ADD COLUMN sent_at INTEGER;
    "#,
    // 11: outbox ids (and so idempotency keys) come from a sequence, never from MAX(id) + 1: a
    // key once used is never drawn again, whatever rows are forgotten, and the step is one
    // statement, as PostgreSQL's nextval is.
    r#"
    CREATE TABLE sequences (
        name TEXT PRIMARY KEY,
        next INTEGER NOT NULL
    );
    INSERT INTO sequences (name, next) SELECT 'outbox', COALESCE(MAX(id), 0) + 1 FROM outbox;
    "#,
    // 12: a message may carry buttons (JSON, under its last chunk) and name the job it is
    // about: a job's acknowledgement is found by it, to edit with the job's progress until
    // `progress_done`. Jobs that ended before this step are done.
    r#"
    ALTER TABLE outbox ADD COLUMN job_id TEXT;
    ALTER TABLE outbox ADD COLUMN buttons TEXT;
    CREATE INDEX outbox_job ON outbox (job_id) WHERE job_id IS NOT NULL;
    ALTER TABLE jobs ADD COLUMN progress_done INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET progress_done = 1 WHERE state NOT IN ('starting', 'running');
    CREATE INDEX jobs_progress ON jobs (id) WHERE progress_done = 0;
    "#,
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {applied}, newer than this relay knows ({known})"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        if index == 0 {
            // A short install id makes idempotency keys unique across databases.
            let install: String = (0..4)
                .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
                .collect();
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('install_id', ?1)",
                [install],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}
