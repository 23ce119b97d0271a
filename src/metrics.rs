//! What the relay counts, for `GET /metrics`: every metric's name, help and buckets, and one
//! function per thing counted, so that each stage records with one line and no stage spells a
//! name or a label. Recorded through the `metrics` facade: until `serve::metrics::install`
//! sets the Prometheus recorder (as `run` does), every call here is a no-op.
//!
//! Base units (seconds), `_total` counters, and labels with few values (channel, outcome,
//! reason kind): never a job, chat or user id. The gauges of what the store holds (queued
//! events, pending and dead messages, the oldest pending message's age) are read at scrape
//! time by `serve::metrics`, not kept here.

use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use execrelay_channel::{EditOutcome, SendOutcome};

pub const JOBS_STARTED: &str = "execrelay_jobs_started_total";
pub const JOBS_FINISHED: &str = "execrelay_jobs_finished_total";
pub const JOBS_RUNNING: &str = "execrelay_jobs_running";
pub const JOB_DURATION: &str = "execrelay_job_duration_seconds";
pub const EVENTS_QUEUED: &str = "execrelay_events_queued";
pub const OUTBOX_PENDING: &str = "execrelay_outbox_pending";
pub const OUTBOX_OLDEST_AGE: &str = "execrelay_outbox_oldest_pending_age_seconds";
pub const OUTBOX_DEAD: &str = "execrelay_outbox_dead";
pub const DELIVERIES: &str = "execrelay_deliveries_total";
pub const RATE_LIMITED: &str = "execrelay_platform_rate_limited_total";
pub const EXIT_TO_MESSAGE: &str = "execrelay_exit_to_message_seconds";
pub const HEARTBEAT_RUNS: &str = "execrelay_heartbeat_runs_total";
pub const INBOUND: &str = "execrelay_inbound_total";
pub const SIGNATURE_FAILURES: &str = "execrelay_webhook_signature_failures_total";
pub const STORE_COMMIT: &str = "execrelay_store_commit_seconds";
pub const PROGRESS_EDITS: &str = "execrelay_progress_edits_total";
pub const BUILD_INFO: &str = "execrelay_build_info";

/// Each histogram's bucket bounds, in seconds.
pub const BUCKETS: &[(&str, &[f64])] = &[
    (
        JOB_DURATION,
        &[
            1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 43200.0, 86400.0,
        ],
    ),
    (
        EXIT_TO_MESSAGE,
        &[
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
        ],
    ),
    (
        STORE_COMMIT,
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
        ],
    ),
];

/// The help line of every metric, and the counters without labels at 0 (a rate over them has
/// a first point); called once the recorder is set.
pub fn describe() {
    counter!(JOBS_STARTED).increment(0);
    describe_counter!(JOBS_STARTED, "Jobs whose supervisor the relay started.");
    describe_counter!(
        JOBS_FINISHED,
        "Jobs that ended, by outcome (exited, killed, timed_out, failed_to_start, lost)."
    );
    describe_gauge!(JOBS_RUNNING, "Jobs starting or running now.");
    describe_histogram!(JOB_DURATION, Unit::Seconds, "How long ended jobs ran.");
    describe_gauge!(EVENTS_QUEUED, "System events waiting for a heartbeat run.");
    describe_gauge!(OUTBOX_PENDING, "Messages not yet delivered.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of each channel's oldest pending message (0 when none is pending)."
    );
    describe_gauge!(
        OUTBOX_DEAD,
        "Dead-lettered messages, until retried or dropped."
    );
    describe_counter!(DELIVERIES, "Chunk sends by channel and outcome.");
    describe_counter!(
        RATE_LIMITED,
        "Sends the platform answered with a rate limit (429)."
    );
    describe_histogram!(
        EXIT_TO_MESSAGE,
        Unit::Seconds,
        "From a job's exit to the delivery of its completion's last chunk."
    );
    describe_counter!(HEARTBEAT_RUNS, "Heartbeat runs by reason and result.");
    describe_counter!(
        INBOUND,
        "Inbound messages by channel and what became of them."
    );
    describe_counter!(
        SIGNATURE_FAILURES,
        "Signed inbound requests refused as unauthenticated."
    );
    describe_histogram!(STORE_COMMIT, Unit::Seconds, "Time of each group COMMIT.");
    describe_counter!(PROGRESS_EDITS, "Progress edits by channel and outcome.");
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
}

pub fn job_started() {
    counter!(JOBS_STARTED).increment(1);
}

/// `outcome` is the job's final state (`JobState::as_str`); `ran` how long it ran, if known.
pub fn job_finished(outcome: &'static str, ran: Option<Duration>) {
    counter!(JOBS_FINISHED, "outcome" => outcome).increment(1);
    if let Some(ran) = ran {
        histogram!(JOB_DURATION).record(ran.as_secs_f64());
    }
}

/// One send's outcome; a rate limit also counts in [`RATE_LIMITED`].
pub fn delivery(channel: &str, outcome: &SendOutcome) {
    let label = send_label(outcome);
    counter!(DELIVERIES, "channel" => channel.to_string(), "outcome" => label).increment(1);
    if matches!(outcome, SendOutcome::RetryAfter(_)) {
        counter!(RATE_LIMITED, "channel" => channel.to_string()).increment(1);
    }
}

fn send_label(outcome: &SendOutcome) -> &'static str {
    match outcome {
        SendOutcome::Delivered { .. } => "delivered",
        SendOutcome::RetryAfter(_) => "rate_limited",
        SendOutcome::Transient(_) => "retry",
        SendOutcome::NoReceiver(_) => "no_receiver",
        SendOutcome::Permanent(_) => "dead",
        SendOutcome::Unconfigured(_) => "unconfigured",
        SendOutcome::ChatMigrated { .. } => "chat_moved",
    }
}

/// A completion delivered `after` its job exited.
pub fn exit_to_message(after: Duration) {
    histogram!(EXIT_TO_MESSAGE).record(after.as_secs_f64());
}

/// `reason` is the reason's kind (`hook`, not `hook:<name>`); `result` what the run did.
pub fn heartbeat_run(reason: &'static str, result: &'static str) {
    counter!(HEARTBEAT_RUNS, "reason" => reason, "result" => result).increment(1);
}

/// `result`: `stored`, `duplicate`, `refused` (the disk is full), `unauthorized`,
/// `forwarded`, `ignored` (for another bot).
pub fn inbound(channel: &str, result: &'static str) {
    counter!(INBOUND, "channel" => channel.to_string(), "result" => result).increment(1);
}

pub fn signature_failure(channel: &'static str) {
    counter!(SIGNATURE_FAILURES, "channel" => channel).increment(1);
}

pub fn store_commit(took: Duration) {
    histogram!(STORE_COMMIT).record(took.as_secs_f64());
}

pub fn progress_edit(channel: &str, outcome: &EditOutcome) {
    let label = match outcome {
        EditOutcome::Edited => "edited",
        EditOutcome::RetryAfter(_) => "rate_limited",
        EditOutcome::SlowDown => "slow_down",
        EditOutcome::Transient(_) => "retry",
        EditOutcome::Gone(_) => "gone",
        EditOutcome::Failed(_) => "failed",
        EditOutcome::Unsupported => "unsupported",
    };
    counter!(PROGRESS_EDITS, "channel" => channel.to_string(), "outcome" => label).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let names = [
            JOBS_STARTED,
            JOBS_FINISHED,
            JOBS_RUNNING,
            JOB_DURATION,
            EVENTS_QUEUED,
            OUTBOX_PENDING,
            OUTBOX_OLDEST_AGE,
            OUTBOX_DEAD,
            DELIVERIES,
            RATE_LIMITED,
            EXIT_TO_MESSAGE,
            HEARTBEAT_RUNS,
            INBOUND,
            SIGNATURE_FAILURES,
            STORE_COMMIT,
            PROGRESS_EDITS,
            BUILD_INFO,
        ];
        for name in names {
            assert!(name.starts_with("execrelay_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                "{name}"
            );
        }
        for (name, bounds) in BUCKETS {
            assert!(name.ends_with("_seconds"), "{name}");
            assert!(
                bounds.windows(2).all(|w| w[0] < w[1]),
                "{name}: not ascending"
            );
        }
    }

    #[test]
    fn every_send_outcome_has_its_own_label() {
        let outcomes = [
            SendOutcome::Delivered { platform_id: None },
            SendOutcome::RetryAfter(Duration::from_secs(1)),
            SendOutcome::Transient("503".into()),
            SendOutcome::NoReceiver("none".into()),
            SendOutcome::Permanent("403".into()),
            SendOutcome::Unconfigured("no url".into()),
            SendOutcome::ChatMigrated {
                chat_id: "2".into(),
            },
        ];
        let labels: std::collections::HashSet<_> = outcomes.iter().map(send_label).collect();
        assert_eq!(labels.len(), outcomes.len());
    }
}
