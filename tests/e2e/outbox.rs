//! Acceptance 5: the outbox honours `Retry-After`, and dead-letters permanent failures visibly.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

#[test]
fn rate_limited_completion_honours_retry_after_and_arrives_once() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);

    let job = relay.start_job(
        &rx,
        &dm("dm-a", "alice", "/exec sh -c 'sleep 0.3; echo limited'"),
    );
    let id = job.id.clone();
    rx.respond_next_where(2, 429, &[("Retry-After", "1")], move |d| {
        is_completion_of(&d.text, &id)
    });

    let done = rx.wait_for_message("the completion after two 429s", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    let tries: Vec<_> = rx
        .attempts()
        .into_iter()
        .filter(|d| is_completion_of(&d.text, &job.id))
        .collect();
    let statuses: Vec<u16> = tries.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [429, 429, 200], "attempts: {tries:?}");
    let waited = done.at.duration_since(tries[0].at);
    assert!(
        waited >= secs(1.9),
        "Retry-After: 1 twice, but delivered {waited:?} after the first attempt"
    );
    assert!(
        tries
            .iter()
            .all(|d| d.idempotency_key == done.idempotency_key && d.text == done.text),
        "retries must resend the same chunk with the same idempotency key: {tries:?}"
    );

    relay.wait_outbox_drained();
    assert_eq!(
        rx.count(|d| is_completion_of(&d.text, &job.id)),
        1,
        "delivered exactly once"
    );
}

#[test]
fn permanent_410_dead_letters_the_completion_visibly() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);

    let job = relay.start_job(
        &rx,
        &dm("dm-gone", "alice", "/exec sh -c 'sleep 0.2; echo gone'"),
    );
    let id = job.id.clone();
    rx.respond_next_where(usize::MAX, 410, &[], move |d| {
        is_completion_of(&d.text, &id)
    });

    let dead = wait_for(
        "the completion to show as dead in GET /v1/outbox",
        SOON,
        || {
            relay.deliveries().into_iter().find(|d| {
                d["state"] == "dead" && is_completion_of(d["text"].as_str().unwrap_or(""), &job.id)
            })
        },
    );
    assert_eq!(dead["channel"], "webhook", "{dead}");
    assert_eq!(dead["chat_id"], "dm-gone", "{dead}");
    assert!(dead["attempts"].as_u64().unwrap_or(0) >= 1, "{dead}");
    assert!(
        dead["last_error"].to_string().contains("410"),
        "last_error should name 410: {dead}"
    );

    let out = relay.cli(&["outbox"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "`execrelay outbox` failed: {out:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("dead") && l.contains("410")),
        "`execrelay outbox` should list the dead delivery with its 410:\n{stdout}"
    );

    // Permanent means no retry.
    let tries = rx
        .attempts()
        .into_iter()
        .filter(|d| is_completion_of(&d.text, &job.id))
        .count();
    assert_eq!(tries, 1, "a 410 must not be retried");
    assert_eq!(rx.count(|d| is_completion_of(&d.text, &job.id)), 0);
}
