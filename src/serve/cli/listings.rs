//! The listings and one-shot clients: `jobs`, `outbox` (with retry and drop), `events` (with
//! drop), `notify`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Client, ClientArgs, EventsAction, ListArgs, OutboxAction, out, text};
use crate::config::ClientConfig;

/// A store timestamp (unix ms) as local time.
fn local_time(ms: &Value) -> String {
    ms.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// How long a job ran, or has been running.
fn job_duration(job: &Value, now_ms: i64) -> String {
    let since = |from: i64, to: i64| {
        crate::util::duration::format_duration(Duration::from_millis(
            to.saturating_sub(from).max(0) as u64,
        ))
    };
    match (job["started_at"].as_i64(), job["finished_at"].as_i64()) {
        (Some(start), Some(end)) => since(start, end),
        (Some(start), None) => format!("running {}", since(start, now_ms)),
        _ => "-".into(),
    }
}

pub(super) fn job_outcome(job: &Value) -> String {
    match (&job["exit_code"], &job["signal"]) {
        (Value::Number(code), _) => format!("{} {code}", text(&job["state"])),
        (_, Value::Number(signal)) => format!("{} signal {signal}", text(&job["state"])),
        _ => text(&job["state"]),
    }
}

/// GET `path`: with `--json`, prints the answer as it is and returns `None`; else the rows
/// under `key`.
async fn listing(
    settings: &ClientConfig,
    args: &ListArgs,
    path: &str,
    key: &str,
) -> anyhow::Result<Option<Vec<Value>>> {
    let body = Client::new(settings, &args.client)?.get(path).await?;
    if args.json {
        out(body)?;
        return Ok(None);
    }
    Ok(Some(body[key].as_array().cloned().unwrap_or_default()))
}

pub async fn jobs(settings: &ClientConfig, args: &ListArgs) -> anyhow::Result<()> {
    let Some(jobs) = listing(settings, args, "/v1/jobs", "jobs").await? else {
        return Ok(());
    };
    if jobs.is_empty() {
        return out("no jobs");
    }
    let now = crate::store::now_ms();
    out(format!(
        "{:<8} {:<18} {:<19} {:<16} {:<24} COMMAND",
        "ID", "STATE", "STARTED", "DURATION", "SESSION"
    ))?;
    for job in jobs {
        out(format!(
            "{:<8} {:<18} {:<19} {:<16} {:<24} {}",
            text(&job["id"]),
            job_outcome(&job),
            local_time(&job["started_at"]),
            job_duration(&job, now),
            text(&job["session"]),
            crate::run::jobs::one_line(&text(&job["command"]), 80)
        ))?;
    }
    Ok(())
}

pub async fn outbox(
    settings: &ClientConfig,
    action: Option<&OutboxAction>,
    list: &ListArgs,
) -> anyhow::Result<()> {
    match action {
        None => list_outbox(settings, list).await,
        // Clap requires an id or `--all`.
        Some(OutboxAction::Retry { id, client, .. }) => {
            let client = Client::new(settings, client)?;
            let path = match id {
                Some(id) => format!("/v1/outbox/{id}/retry"),
                None => "/v1/outbox/retry".to_string(),
            };
            let answer = client.post(&path, json!({})).await?;
            let retried = answer["retried"].as_array().cloned().unwrap_or_default();
            if retried.is_empty() {
                return out("no dead letters to retry");
            }
            for row in retried {
                out(format!(
                    "retrying delivery {} on {} (now delivery {})",
                    text(&row["was"]),
                    text(&row["channel"]),
                    text(&row["id"])
                ))?;
            }
            Ok(())
        }
        Some(OutboxAction::Drop { id, client }) => {
            Client::new(settings, client)?
                .delete(&format!("/v1/outbox/{id}"))
                .await?;
            out(format!("dropped delivery {id}"))
        }
    }
}

async fn list_outbox(settings: &ClientConfig, args: &ListArgs) -> anyhow::Result<()> {
    let body = Client::new(settings, &args.client)?
        .get("/v1/outbox")
        .await?;
    if args.json {
        return out(body);
    }
    let rows = |key: &str| body[key].as_array().cloned().unwrap_or_default();
    let (failing, deliveries, blocked) = (
        rows("failing_channels"),
        rows("deliveries"),
        rows("blocked_events"),
    );
    if failing.is_empty() && deliveries.is_empty() && blocked.is_empty() {
        return out("outbox empty: nothing pending, nothing dead-lettered, nothing blocked");
    }
    for c in failing {
        out(format!(
            "channel {} is failing since {} ({} tries, one at a time until one works); last error: {}",
            text(&c["channel"]),
            local_time(&c["failing_since"]),
            text(&c["tries"]),
            text(&c["last_error"]),
        ))?;
    }
    for d in deliveries {
        let cause = match d["dead_cause"].as_str() {
            Some(cause) => format!(" ({cause}: retried at start once configured)"),
            None => String::new(),
        };
        let disabled = if d["channel_enabled"] == false && d["state"] == "pending" {
            format!(
                " (channel {} is not enabled: waits until it is)",
                text(&d["channel"])
            )
        } else {
            String::new()
        };
        out(format!(
            "{:>6} {:<8} {}  {}:{}  attempts {}  last error: {}{cause}{disabled}  | {}",
            text(&d["id"]),
            text(&d["state"]),
            text(&d["key"]),
            text(&d["channel"]),
            text(&d["chat_id"]),
            text(&d["attempts"]),
            text(&d["last_error"]),
            crate::run::jobs::one_line(&text(&d["text"]), 80)
        ))?;
    }
    for e in blocked {
        out(format!(
            "event {} for {} blocked: {} (queued {})  | {}",
            text(&e["event_id"]),
            text(&e["session"]),
            text(&e["blocked"]),
            local_time(&e["created_at"]),
            crate::run::jobs::one_line(&text(&e["text"]), 80)
        ))?;
    }
    Ok(())
}

pub async fn events(
    settings: &ClientConfig,
    action: Option<&EventsAction>,
    list: &ListArgs,
) -> anyhow::Result<()> {
    if let Some(EventsAction::Drop { id, client }) = action {
        Client::new(settings, client)?
            .delete(&format!("/v1/events/{id}"))
            .await?;
        return out(format!("dropped event {id}"));
    }
    let Some(events) = listing(settings, list, "/v1/events", "events").await? else {
        return Ok(());
    };
    if events.is_empty() {
        return out("no queued events");
    }
    for e in events {
        let why = match e["blocked"].as_str() {
            Some(reason) => format!("blocked: {reason}"),
            None => "queued".into(),
        };
        out(format!(
            "{:>6} {:<24} {:<28} queued {}  | {}",
            text(&e["id"]),
            text(&e["session"]),
            why,
            local_time(&e["created_at"]),
            crate::run::jobs::one_line(&text(&e["text"]), 80)
        ))?;
    }
    Ok(())
}

pub async fn notify(
    settings: &ClientConfig,
    args: &ClientArgs,
    message: &str,
    session: Option<&str>,
    mode: &str,
) -> anyhow::Result<()> {
    let mut body = json!({"text": message, "mode": mode});
    if let Some(session) = session {
        body["session"] = json!(session);
    }
    let answer = Client::new(settings, args)?
        .post("/v1/events", body)
        .await?;
    out(format!("queued event {}", text(&answer["event_id"])))
}
