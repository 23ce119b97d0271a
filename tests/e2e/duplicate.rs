//! Acceptance 9: a redelivered webhook message (same `message_id`) runs nothing twice.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

#[test]
fn duplicate_message_id_runs_the_command_once() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let log = relay.path("ran.log");
    let msg = dm(
        "dm-a",
        "alice",
        &format!("/exec sh -c 'echo ran >> {}'", log.display()),
    );

    let (s1, b1) = relay.post_webhook(&msg);
    assert_eq!(
        (s1, &b1["ok"], &b1["duplicate"]),
        (200, &true.into(), &false.into()),
        "first POST: {b1}"
    );
    let (s2, b2) = relay.post_webhook(&msg);
    assert_eq!(
        (s2, &b2["ok"], &b2["duplicate"]),
        (200, &true.into(), &true.into()),
        "second POST: {b2}"
    );

    let ack = rx.wait_for_message("the acknowledgement", SOON, is_ack);
    let id = ack_job_id(&ack.text).expect("job id in ack");
    rx.wait_for_message("the completion", SOON, |d| is_completion_of(&d.text, &id));
    relay.wait_outbox_drained();

    assert_eq!(rx.count(is_ack), 1, "one acknowledgement");
    assert_eq!(rx.count(is_completion), 1, "one completion");
    assert_eq!(relay.jobs().len(), 1, "one job: {:?}", relay.jobs());
    let ran = std::fs::read_to_string(&log).expect("the command ran");
    assert_eq!(ran, "ran\n", "the command ran more than once");
}

#[test]
fn a_replayed_request_without_message_id_runs_once() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let body = serde_json::to_vec(&serde_json::json!({
        "conversation_id": "dm-a",
        "user_id": "alice",
        "text": "/exec touch replayed-$$",
    }))
    .unwrap();
    let ts = unix_now().to_string();
    let headers = [
        ("Content-Type", "application/json".to_string()),
        ("X-Execrelay-Timestamp", ts.clone()),
        ("X-Execrelay-Signature", sign(SECRET, &ts, &body)),
    ];
    let (status, first) = relay.post_webhook_raw(&headers, body.clone());
    assert_eq!(
        (status, &first["duplicate"]),
        (200, &serde_json::json!(false))
    );
    let (status, replay) = relay.post_webhook_raw(&headers, body.clone());
    assert_eq!(
        (status, &replay["duplicate"]),
        (200, &serde_json::json!(true)),
        "{replay}"
    );
    // Hex verifies in either case: the same signature in capitals is the same request.
    let signature = sign(SECRET, &ts, &body);
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    let shouted = [
        headers[0].clone(),
        headers[1].clone(),
        (
            "X-Execrelay-Signature",
            format!("sha256={}", hex.to_ascii_uppercase()),
        ),
    ];
    let (status, replay) = relay.post_webhook_raw(&shouted, body);
    assert_eq!(
        (status, &replay["duplicate"]),
        (200, &serde_json::json!(true)),
        "a replay with the signature in capitals ran again: {replay}"
    );
    rx.wait_for_message("the one acknowledgement", SOON, is_ack);
    relay.wait_outbox_drained();
    assert_eq!(rx.count(is_ack), 1);
    assert_eq!(relay.jobs().len(), 1);
}
