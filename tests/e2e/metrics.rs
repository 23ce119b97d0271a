//! `GET /metrics` (issue 17): real traffic through the real relay moves each counter, the
//! store's gauges follow the tables, a Prometheus text-format parser reads every scrape, and
//! without the API's token nothing is shown.

use std::io::{Read, Write};
use std::net::TcpStream;

use execrelay_fakes::{Failure, Platform};
use prometheus_parse::{Scrape, Value};
use serde_json::json;

use crate::fakes::receiver::Receiver;
use crate::harness::*;

/// `GET path` with exactly these extra header lines: the status and the body.
fn raw_get(relay: &Relay, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(relay.addr).expect("connect to the relay");
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        relay.addr
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the answer");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Scrapes with the API token; the parser must take every line.
#[track_caller]
fn scrape(relay: &Relay) -> Scrape {
    let token = format!("Bearer {}", relay.api_token());
    let (status, body) = raw_get(relay, "/metrics", &[("Authorization", &token)]);
    assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
    let metric_lines = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("text format");
    // Every line read as a sample: a histogram's buckets fold into one, `_sum`/`_count` stay.
    let read: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(read, metric_lines, "lines the parser skipped in:\n{body}");
    scrape
}

/// The sample `name` with `labels` (others may be present): a counter's or gauge's value, a
/// histogram's count. `None` if it is not shown.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("{name} is a summary, not a histogram"),
        })
}

fn count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, name, labels).unwrap_or(0.0)
}

#[test]
fn metrics_move_with_real_traffic() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("progress", "every", &toml_str("2s"))
        .set("progress", "per_chat", &toml_str("1s"))
        .set("progress", "after", &toml_str("1s"))
        .set("channels.webhook", "progress", "true")
        .start();
    let first = scrape(&relay);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&first, "execrelay_build_info", &[("version", version)]),
        Some(1.0)
    );
    assert!(first.docs.contains_key("execrelay_build_info"));
    // Shown from the start, so that a rate over it has a first point.
    assert_eq!(
        value(&first, "execrelay_jobs_started_total", &[]),
        Some(0.0)
    );

    // A job through the webhook, held until its acknowledgement has been edited; then its
    // completion meets a 429 and waits for it.
    let job = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go", "metrics-1")));
    let running = wait_for("a running job and a progress edit", SOON, || {
        let s = scrape(&relay);
        (count(&s, "execrelay_jobs_running", &[]) >= 1.0
            && count(
                &s,
                "execrelay_progress_edits_total",
                &[("channel", "webhook"), ("outcome", "edited")],
            ) >= 1.0)
            .then_some(s)
    });
    assert_eq!(count(&running, "execrelay_jobs_started_total", &[]), 1.0);
    rx.fail_next(
        1,
        Failure::RateLimited {
            retry_after_secs: 3,
        },
    );
    relay.open_gate("go");
    let limited = wait_for("the completion's 429 counted", SOON, || {
        let s = scrape(&relay);
        (count(
            &s,
            "execrelay_platform_rate_limited_total",
            &[("channel", "webhook")],
        ) >= 1.0)
            .then_some(s)
    });
    let labels = [("channel", "webhook"), ("outcome", "rate_limited")];
    assert_eq!(count(&limited, "execrelay_deliveries_total", &labels), 1.0);
    // It waits out the 429's 3 s: pending, with an age.
    assert_eq!(count(&limited, "execrelay_outbox_pending", &[]), 1.0);
    let age = value(
        &limited,
        "execrelay_outbox_oldest_pending_age_seconds",
        &[("channel", "webhook")],
    );
    assert!(age.is_some_and(|age| age >= 0.0), "{age:?}");
    rx.wait_for_message("the completion", secs(15.0), |d| {
        is_completion_of(&d.text, &job.id)
    });

    // A forged request, a stranger, and one message posted twice.
    let (headers, body) = signed_webhook(&dm("dm-a", "alice", "/exec echo forged"));
    let mut forged = headers.to_vec();
    forged[2].1 = format!("sha256={}", "0".repeat(64));
    assert_eq!(relay.post_webhook_raw(&forged, body).0, 401);
    relay.say(&dm("dm-m", "mallory", "/exec echo hi"));
    let twice = dm("dm-a", "alice", "hello");
    relay.say(&twice);
    let (status, answer) = relay.post_webhook(&twice);
    assert_eq!((status, &answer["duplicate"]), (200, &json!(true)));

    // A completion refused for good: a dead letter.
    let refused = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go2", "metrics-2")));
    rx.fail_next(1, Failure::Forbidden);
    relay.open_gate("go2");
    let s = wait_for(
        "the dead letter and the first delivery's latency",
        SOON,
        || {
            let s = scrape(&relay);
            (count(&s, "execrelay_outbox_dead", &[]) == 1.0
                && count(
                    &s,
                    "execrelay_jobs_finished_total",
                    &[("outcome", "exited")],
                ) == 2.0)
                .then_some(s)
        },
    );
    assert!(
        relay.deliveries().iter().any(|d| d["state"] == "dead"
            && is_completion_of(d["text"].as_str().unwrap_or(""), &refused.id))
    );

    assert_eq!(count(&s, "execrelay_jobs_started_total", &[]), 2.0);
    assert_eq!(count(&s, "execrelay_jobs_running", &[]), 0.0);
    assert_eq!(count(&s, "execrelay_job_duration_seconds", &[]), 2.0);
    assert_eq!(count(&s, "execrelay_events_queued", &[]), 0.0);
    assert_eq!(count(&s, "execrelay_outbox_pending", &[]), 0.0);
    assert_eq!(
        value(
            &s,
            "execrelay_outbox_oldest_pending_age_seconds",
            &[("channel", "webhook")]
        ),
        Some(0.0),
        "nothing pending shows as 0, not the last age"
    );
    let delivered = [("channel", "webhook"), ("outcome", "delivered")];
    // Two acknowledgements and the first completion (the stranger's refusal: one more).
    assert!(count(&s, "execrelay_deliveries_total", &delivered) >= 3.0);
    let dead = [("channel", "webhook"), ("outcome", "dead")];
    assert_eq!(count(&s, "execrelay_deliveries_total", &dead), 1.0);
    // Only the first completion was delivered, at least 3 s (its 429) after its exit.
    assert_eq!(count(&s, "execrelay_exit_to_message_seconds", &[]), 1.0);
    let latency = count(&s, "execrelay_exit_to_message_seconds_sum", &[]);
    assert!((2.5..15.0).contains(&latency), "{latency}");
    let runs = [("reason", "exec-event"), ("result", "delivered")];
    assert!(count(&s, "execrelay_heartbeat_runs_total", &runs) >= 2.0);
    let inbound = |result: &str| {
        count(
            &s,
            "execrelay_inbound_total",
            &[("channel", "webhook"), ("result", result)],
        )
    };
    assert_eq!(inbound("stored"), 3.0, "two jobs and a hello");
    assert_eq!(inbound("duplicate"), 1.0);
    assert_eq!(inbound("unauthorized"), 1.0);
    assert_eq!(
        count(
            &s,
            "execrelay_webhook_signature_failures_total",
            &[("channel", "webhook")]
        ),
        1.0
    );
    assert!(count(&s, "execrelay_store_commit_seconds", &[]) >= 5.0);
    for name in [
        "execrelay_jobs_finished_total",
        "execrelay_exit_to_message_seconds",
        "execrelay_outbox_dead",
    ] {
        assert!(s.docs.contains_key(name), "no HELP for {name}");
    }
}

#[test]
fn metrics_need_the_api_token() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let (status, body) = raw_get(&relay, "/metrics", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("execrelay_"), "{body}");
    let (status, _) = raw_get(&relay, "/metrics", &[("Authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    // A web page on this machine, even with the token: the API's rule for a generated token.
    let token = format!("Bearer {}", relay.api_token());
    let from_page = [
        ("Authorization", token.as_str()),
        ("Origin", "http://evil.example"),
    ];
    assert_eq!(raw_get(&relay, "/metrics", &from_page).0, 403);
    let (status, body) = raw_get(&relay, "/metrics", &[("Authorization", &token)]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("execrelay_build_info"), "{body}");
}
