//! Retention: a finished job is forgotten `[exec] keep_jobs` after it ended, once nothing of it
//! is owed any more (its completion has left the event queue): its output directory, its
//! ledger row, and, by the same age, delivered messages, consumed events and processed inbox
//! rows. Nothing running, queued or pending is touched, nor a dead letter. Without it the data
//! directory grows with every job until the disk is full.
//!
//! Output goes first, then the rows: a crash in between leaves rows whose output is already
//! gone (`/tail` finds nothing printed), which the next pass removes; never output nobody can
//! find. A directory that cannot be removed keeps its row (and so its id, which a new job
//! must not draw while the old output is there).

use std::path::PathBuf;
use std::time::Duration;

use execrelay_channel::CancellationToken;

use crate::store::{Store, now_ms};

/// Rows (and job directories) per transaction: a long backlog is worked off in short steps
/// that do not hold up the writes of live work.
const BATCH: usize = 200;
/// Batches per pass: the rest waits for the next pass.
const MAX_BATCHES: usize = 50;

/// Runs a pass at start-up and then every `keep` (at least a second, at most an hour).
pub async fn run(store: Store, jobs_dir: PathBuf, keep: Duration, stop: CancellationToken) {
    if keep.is_zero() {
        return;
    }
    let every = keep.clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        match pass(&store, &jobs_dir, keep).await {
            Ok((0, 0)) => {}
            Ok((jobs, rows)) => tracing::info!(jobs, rows, "forgot finished work past keep_jobs"),
            Err(error) => tracing::warn!(error = %error, "retention pass failed; trying later"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass: returns the jobs and rows forgotten.
async fn pass(
    store: &Store,
    jobs_dir: &std::path::Path,
    keep: Duration,
) -> Result<(usize, usize), crate::store::StoreError> {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let before = now_ms().saturating_sub(keep_ms);
    let (mut jobs, mut rows) = (0, 0);
    for _ in 0..MAX_BATCHES {
        let candidates = store.forgettable_jobs(before, BATCH).await?;
        let candidates_empty = candidates.is_empty();
        let jobs_dir = jobs_dir.to_path_buf();
        let Ok(ids) =
            tokio::task::spawn_blocking(move || remove_job_dirs(&jobs_dir, candidates)).await
        else {
            break;
        };
        let stuck = ids.is_empty() && !candidates_empty;
        jobs += ids.len();
        let forgotten = store.forget_history(ids, before, BATCH).await?;
        rows += forgotten;
        // Nothing left, or only jobs whose directories resist: the next pass tries again.
        if forgotten == 0 || stuck {
            break;
        }
    }
    Ok((jobs, rows))
}

/// Removes each job's directory; returns the ids whose output is gone.
fn remove_job_dirs(jobs_dir: &std::path::Path, ids: Vec<String>) -> Vec<String> {
    ids.into_iter()
        .filter(|id| {
            let dir = jobs_dir.join(id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => true,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), error = %error, "cannot remove a job directory; its job is kept");
                    false
                }
            }
        })
        .collect()
}
