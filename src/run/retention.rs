//! Retention: a finished job is forgotten `[exec] keep_jobs` after it ended, once nothing of it
//! is owed any more (its completion has left the event queue): its output directory, its
//! ledger row, and, by the same age, delivered messages, consumed events and processed inbox
//! rows. Nothing running, queued or pending is touched, nor a dead letter. Without it the data
//! directory grows with every job until the disk is full.
//!
//! Output goes first, then the rows: a crash in between leaves rows whose output is already
//! gone (`/tail` finds nothing printed), which the next pass removes; never output nobody can
//! find. A directory that cannot be removed keeps its row (and so its id, which a new job
//! must not draw while the old output is there); the walk goes on past it, so a few such
//! directories never hold up the rest.
//!
//! Inbound dedupe records (a platform message id already accepted) are forgotten a week after
//! they were made, once platforms have long stopped redelivering ([`prune_dedupe_records`]).

use std::path::PathBuf;
use std::time::Duration;

use execrelay_channel::CancellationToken;

use crate::store::{JobCursor, Store, now_ms};

/// Rows (and job directories) per transaction: a long backlog is worked off in short steps
/// that do not hold up the writes of live work.
const BATCH: usize = 200;
/// Batches per pass: the rest waits for the next pass.
const MAX_BATCHES: usize = 50;

/// Platforms redeliver for hours at most (Feishu: about 7); a week of dedupe is plenty.
const DEDUPE_KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

pub async fn prune_dedupe_records(store: Store, stop: CancellationToken) {
    loop {
        match store.prune_seen(now_ms() - DEDUPE_KEEP_MS).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "forgot old inbound dedupe records"),
            Err(error) => tracing::warn!(error = %error, "cannot prune dedupe records"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

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
    let mut after = JobCursor::start();
    let mut resisting = Resisting::default();
    for _ in 0..MAX_BATCHES {
        let candidates = store.forgettable_jobs(before, &after, BATCH).await?;
        if let Some(last) = candidates.last() {
            after = last.clone();
        }
        let walked_all = candidates.len() < BATCH;
        let jobs_dir = jobs_dir.to_path_buf();
        let Ok((ids, kept)) =
            tokio::task::spawn_blocking(move || remove_job_dirs(&jobs_dir, candidates)).await
        else {
            break;
        };
        resisting.add(kept);
        jobs += ids.len();
        let forgotten = store.forget_history(ids, before, BATCH).await?;
        rows += forgotten;
        if walked_all && forgotten == 0 {
            break;
        }
    }
    resisting.report();
    Ok((jobs, rows))
}

/// Job directories a pass could not remove: reported once per pass, not once each.
#[derive(Default)]
struct Resisting {
    count: usize,
    first: Option<(PathBuf, std::io::Error)>,
}

impl Resisting {
    fn add(&mut self, other: Resisting) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    fn report(self) {
        if let Some((dir, error)) = self.first {
            tracing::warn!(
                count = self.count,
                first = %dir.display(),
                error = %error,
                "cannot remove job directories; their jobs are kept and retried next pass"
            );
        }
    }
}

/// Removes each job's directory; returns the ids whose output is gone, and what resisted.
fn remove_job_dirs(jobs_dir: &std::path::Path, jobs: Vec<JobCursor>) -> (Vec<String>, Resisting) {
    let mut resisting = Resisting::default();
    let removed = jobs
        .into_iter()
        .filter_map(|job| {
            let dir = jobs_dir.join(&job.id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => Some(job.id),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some(job.id),
                Err(error) => {
                    resisting.add(Resisting {
                        count: 1,
                        first: Some((dir, error)),
                    });
                    None
                }
            }
        })
        .collect();
    (removed, resisting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobFinal;
    use crate::store::fixtures::{exit_ok, stored_job};

    async fn finished_job(store: &Store, id: &str, finished_at: i64) {
        stored_job(store, id, "user:webhook:alice").await;
        let outcome = JobFinal {
            started_at: Some(finished_at),
            finished_at,
            ..exit_ok()
        };
        store.finish_job(id, outcome, None, 100).await.unwrap();
    }

    #[tokio::test]
    async fn directories_that_resist_do_not_hold_up_the_jobs_behind_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite"), "test").unwrap();
        let jobs_dir = dir.path().join("jobs");
        std::fs::create_dir(&jobs_dir).unwrap();
        let ids: Vec<String> = (0..BATCH + 3).map(|i| format!("{i:06x}")).collect();
        for (age, id) in ids.iter().enumerate() {
            finished_job(&store, id, 1_000 + age as i64).await;
            std::fs::create_dir(jobs_dir.join(id)).unwrap();
        }
        // A whole batch of the oldest cannot be removed: a file where the directory was
        // (removing it fails with ENOTDIR, as a directory one may not write fails for a user).
        for id in &ids[..=BATCH] {
            std::fs::remove_dir(jobs_dir.join(id)).unwrap();
            std::fs::write(jobs_dir.join(id), "stuck").unwrap();
        }

        let (jobs, _) = pass(&store, &jobs_dir, Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(jobs, 2, "the two jobs behind the stuck batch are forgotten");
        for id in &ids[BATCH + 1..] {
            assert!(store.job(id).await.unwrap().is_none(), "{id} kept");
            assert!(!jobs_dir.join(id).exists(), "{id}'s output kept");
        }
        for id in &ids[..=BATCH] {
            assert!(store.job(id).await.unwrap().is_some(), "{id} forgotten");
        }
    }
}
