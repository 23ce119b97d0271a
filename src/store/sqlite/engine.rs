//! The SQLite writer thread and group commit.
//!
//! One thread owns the connection. Callers queue closures; the thread takes every closure waiting
//! at that moment (up to [`MAX_BATCH`]), runs each inside its own SAVEPOINT, and commits them all
//! with one COMMIT (one fsync). A caller's future resolves only after that COMMIT, so "returned
//! Ok" always means "durable". One closure failing rolls back only its savepoint.
//!
//! Reads ([`Engine::read`]) run on the same thread outside any transaction, answered at once:
//! they see only what was committed (every write whose caller has been answered), and a batch
//! whose commit fails (a full disk) cannot fail a read that shared it.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;
use crate::util::log_throttle::{FailStreak, LogThrottle};

const MAX_BATCH: usize = 512;
const STATEMENT_CACHE: usize = 128;
const FAILURE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// `None` means the batch could not open a transaction: the op only answers with the error.
/// Besides its reply, an op hands back its own error, which names why a batch was aborted.
type WriteOp = Box<dyn FnOnce(Option<&Connection>) -> (Reply, Option<StoreError>) + Send>;
/// Runs its query and answers its caller itself.
type ReadOp = Box<dyn FnOnce(&Connection) + Send>;

enum Op {
    Write(WriteOp),
    Read(ReadOp),
}

#[derive(Clone)]
pub(super) struct Engine {
    ops: mpsc::Sender<Op>,
}

impl Engine {
    pub(super) fn open(path: &Path) -> Result<Engine, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Io(format!("create {}: {e}", parent.display())))?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Room for every statement the store prepares (about 60): the default 16 would evict
        // and re-parse them in turn.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        super::schema::migrate(&mut conn)?;
        let (ops, receiver) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("execrelay-store".into())
            .spawn(move || run_writer(conn, receiver))
            .map_err(|e| StoreError::Io(format!("spawn store thread: {e}")))?;
        Ok(Engine { ops })
    }

    /// Runs `f` on the store thread in the next group commit; resolves once it is durable.
    pub(super) async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let op: WriteOp = Box::new(move |conn| {
            let outcome = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(StoreError::Unavailable(
                    "transaction could not start".into(),
                )),
            };
            let failure = outcome.as_ref().err().cloned();
            let reply: Reply = Box::new(move |commit: Result<(), StoreError>| {
                let _ = sender.send(commit.and(outcome));
            });
            (reply, failure)
        });
        self.ops
            .send(Op::Write(op))
            .map_err(|_| StoreError::Closed)?;
        receiver.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the store thread outside any transaction, for queries that change nothing:
    /// it waits for no commit, and no other caller's failed write can fail it.
    pub(super) async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let op: ReadOp = Box::new(move |conn| {
            let _ = sender.send(f(conn));
        });
        self.ops
            .send(Op::Read(op))
            .map_err(|_| StoreError::Closed)?;
        receiver.await.map_err(|_| StoreError::Closed)?
    }
}

fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    // Prepared once: every store call runs these, and parsing them each time shows in profiles.
    conn.prepare_cached("SAVEPOINT op")?.execute([])?;
    let outcome = f(conn);
    if outcome.is_err() {
        if conn.is_autocommit() {
            // SQLite already rolled the whole transaction back (disk full, I/O error): the
            // savepoint is gone, and the op's own error is what the batch reports.
            return outcome;
        }
        conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    conn.prepare_cached("RELEASE op")?.execute([])?;
    outcome
}

fn run_writer(conn: Connection, receiver: mpsc::Receiver<Op>) {
    // A full disk fails every batch until space returns: a few lines, then one on recovery.
    let failures = LogThrottle::new(FAILURE_LOG_INTERVAL);
    let mut streak = FailStreak::default();
    while let Ok(first) = receiver.recv() {
        // Reads are answered as they come, before the writes taken with them: those writes'
        // callers have not been answered yet, so not seeing them is what they expect.
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Read(read) => read(&conn),
                Op::Write(write) => batch.push(write),
            }
            if batch.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(error) = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut begin| begin.execute([]))
        {
            let error = StoreError::from(error);
            streak.failed();
            if let Some(held_back) = failures.admit() {
                tracing::error!(error = %error, held_back, "store: cannot begin a transaction");
            }
            for op in batch {
                op(None).0(Err(error.clone()));
            }
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let mut aborted = None;
        for op in batch {
            if aborted.is_some() {
                replies.push(op(None).0);
                continue;
            }
            let (reply, failure) = op(Some(&conn));
            replies.push(reply);
            // SQLite rolls the whole transaction back by itself on some errors (disk full,
            // I/O): later ops would run in autocommit and commit behind their callers' backs.
            if conn.is_autocommit() {
                aborted = Some(failure.unwrap_or_else(|| {
                    StoreError::Unavailable(
                        "the transaction was rolled back by the database".into(),
                    )
                }));
            }
        }
        let commit = match aborted {
            Some(error) => Err(error),
            None => {
                let started = std::time::Instant::now();
                let commit = conn
                    .prepare_cached("COMMIT")
                    .and_then(|mut commit| commit.execute([]))
                    .map(|_| ())
                    .map_err(StoreError::from);
                crate::metrics::store_commit(started.elapsed());
                commit
            }
        };
        match &commit {
            Err(error) => {
                if let Some(held_back) = failures.admit() {
                    tracing::error!(error = %error, held_back, "store: commit failed; the batch is rolled back");
                }
                streak.failed();
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
            Ok(()) => {
                if streak.recovered() {
                    tracing::info!("store: commits work again");
                }
            }
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}
