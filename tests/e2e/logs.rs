//! Logs for collectors (issue 17): with `[log] format = "json"` (or `EXECRELAY_LOG=json`) every
//! line the relay writes is one JSON object, and the fields of the spans it happened in
//! (`job_id`, `delivery_id`, `channel`) are keys of its own.

use serde_json::Value;

use crate::fakes::receiver::Receiver;
use crate::harness::*;

/// The relay's log lines of this start, parsed; panics on a line that is not JSON.
fn json_lines(relay: &Relay) -> Vec<Value> {
    relay
        .log()
        .lines()
        .filter(|line| !line.starts_with("=== e2e harness"))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

fn assert_job_lines_carry_their_fields(relay: &Relay, rx: &Receiver) {
    let (job, _done) = relay.run_job(rx, &dm("dm-a", "alice", "/exec echo logged"));
    relay.wait_outbox_drained();
    let lines = json_lines(relay);
    assert!(
        lines
            .iter()
            .any(|l| l["job_id"] == job.id.as_str() && l["message"] == "job finished"),
        "no `job finished` line with its job_id: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["channel"] == "webhook"
            && l["delivery_id"].as_str().is_some_and(|d| !d.is_empty())
            && l["level"].is_string()
            && l["timestamp"].is_string()),
        "no delivery line with its delivery_id and channel: {lines:#?}"
    );
}

#[test]
fn json_logs_carry_span_fields_as_keys() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("log", "format", &toml_str("json"))
        .start();
    assert_job_lines_carry_their_fields(&relay, &rx);
}

#[test]
fn the_environment_chooses_json_over_the_file() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .env("EXECRELAY_LOG", "json")
        .start();
    assert_job_lines_carry_their_fields(&relay, &rx);
}
