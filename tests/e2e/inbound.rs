//! Acceptance 7: who may run commands, what the webhook refuses, and output that is not UTF-8.

use serde_json::json;

use crate::fakes::receiver::{Delivery, Receiver};
use crate::harness::*;

#[test]
fn unauthorized_sender_is_refused_and_nothing_runs_or_is_recorded() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let pwned = relay.path("pwned");

    let (status, body) = relay.post_webhook(&dm(
        "dm-m",
        "mallory",
        &format!("/exec touch {}", pwned.display()),
    ));
    assert!(status < 500, "webhook answered {status} {body}");
    let reply = rx.wait_for_message("the refusal in mallory's conversation", SOON, |d| {
        d.conversation_id == "dm-m"
    });
    assert!(
        reply.text.contains("not authorized"),
        "refusal: {:?}",
        reply.text
    );

    assert!(!pwned.exists(), "a refused sender's command ran");
    assert!(
        relay.jobs().is_empty(),
        "a refused sender's job was recorded: {:?}",
        relay.jobs()
    );
    let routes = relay.routes();
    assert!(
        !routes
            .iter()
            .any(|r| r["session"] == "user:webhook:mallory" || r["chat_id"] == "dm-m"),
        "a refused sender's route was recorded: {routes:?}"
    );
    relay.wait_outbox_drained();
    assert_eq!(
        rx.count(|d| d.conversation_id == "dm-m"),
        1,
        "exactly one reply to a refused sender"
    );
    assert!(!pwned.exists(), "a refused sender's command ran");
}

#[test]
fn webhook_rejects_bad_signatures_stale_timestamps_and_malformed_bodies() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let forged = relay.path("forged");
    let body = serde_json::to_vec(&dm(
        "dm-a",
        "alice",
        &format!("/exec touch {}", forged.display()),
    ))
    .unwrap();
    let now = unix_now().to_string();
    let ct = ("Content-Type", "application/json".to_string());

    let wrong_secret = sign("not-the-secret", &now, &body);
    let (s, b) = relay.post_webhook_raw(
        &[
            ct.clone(),
            ("X-Execrelay-Timestamp", now.clone()),
            ("X-Execrelay-Signature", wrong_secret),
        ],
        body.clone(),
    );
    assert_eq!(s, 401, "wrong secret: {b}");

    let (s, b) = relay.post_webhook_raw(
        &[ct.clone(), ("X-Execrelay-Timestamp", now.clone())],
        body.clone(),
    );
    assert_eq!(s, 401, "missing signature: {b}");

    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (s, b) = relay.post_webhook_raw(
        &[
            ct.clone(),
            ("X-Execrelay-Timestamp", now.clone()),
            ("X-Execrelay-Signature", sign(SECRET, &now, &body)),
        ],
        tampered,
    );
    assert_eq!(s, 401, "signature over a different body: {b}");

    for (label, ts) in [("stale", unix_now() - 600), ("future", unix_now() + 600)] {
        let ts = ts.to_string();
        let (s, b) = relay.post_webhook_raw(
            &[
                ct.clone(),
                ("X-Execrelay-Timestamp", ts.clone()),
                ("X-Execrelay-Signature", sign(SECRET, &ts, &body)),
            ],
            body.clone(),
        );
        assert_eq!(s, 401, "{label} timestamp, correctly signed: {b}");
    }

    let signed = |raw: &[u8]| {
        let ts = unix_now().to_string();
        vec![
            ct.clone(),
            ("X-Execrelay-Timestamp", ts.clone()),
            ("X-Execrelay-Signature", sign(SECRET, &ts, raw)),
        ]
    };
    let malformed =
        br#"{"conversation_id": "dm-a", "user_id": "alice", "text": "/exec tr"#.to_vec();
    let (s, b) = relay.post_webhook_raw(&signed(&malformed), malformed.clone());
    assert_eq!(s, 400, "malformed JSON: {b}");
    assert!(b["error"].is_string(), "400 should carry a JSON error: {b}");

    let huge = serde_json::to_vec(&json!({
        "conversation_id": "dm-a", "user_id": "alice", "text": "x".repeat(600 * 1024),
    }))
    .unwrap();
    let (s, b) = relay.post_webhook_raw(&signed(&huge), huge);
    assert_eq!(
        s, 413,
        "a body past the limit is refused before it is read: {b}"
    );
    assert!(b["error"].is_string(), "413 should carry a JSON error: {b}");

    let missing =
        serde_json::to_vec(&json!({"conversation_id": "dm-a", "text": "/status"})).unwrap();
    let (s, b) = relay.post_webhook_raw(&signed(&missing), missing.clone());
    assert_eq!(s, 400, "missing user_id: {b}");
    assert!(b["error"].is_string(), "400 should carry a JSON error: {b}");

    // None of it was acted upon.
    assert!(
        relay.jobs().is_empty(),
        "a rejected request started a job: {:?}",
        relay.jobs()
    );
    assert!(
        relay.routes().is_empty(),
        "a rejected request recorded a route: {:?}",
        relay.routes()
    );
    assert!(!forged.exists(), "a rejected request's command ran");
    assert_eq!(
        rx.messages().len(),
        0,
        "a rejected request got a reply: {:?}",
        rx.messages()
    );
}

#[test]
fn invalid_utf8_output_is_delivered_lossily() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);

    let job = relay.start_job(&rx, &dm("dm-a", "alice", r"/exec printf 'ok\377\376end'"));
    let done = rx.wait_for_message("the completion of the non-UTF-8 job", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    let first = done.text.lines().next().unwrap();
    assert!(first.contains("exit 0"), "{:?}", done.text);
    let output = output_lines(&done.text).join("\n");
    assert!(
        output.contains("ok") && output.contains("end"),
        "output should keep `ok` and `end`: {:?}",
        done.text
    );
    let ok_at = output.find("ok").unwrap();
    assert!(
        output[ok_at..].contains("end"),
        "`end` should follow `ok`: {output:?}"
    );
}

/// Plain text from an allowed user in a direct chat gets a one-line hint, once an hour per
/// chat; in a group, chatter is left alone.
#[test]
fn plain_text_in_a_direct_chat_gets_a_hint_once() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let is_hint = |d: &Delivery| d.text.starts_with("I run commands: /exec");
    relay.say(&dm("dm-a", "alice", "hello?"));
    let hint = rx.wait_for_message("the hint", SOON, is_hint);
    assert_eq!(hint.text, "I run commands: /exec <command line>, /help");
    assert_eq!(hint.conversation_id, "dm-a");
    relay.say(&dm("dm-a", "alice", "anyone there?"));
    relay.say(&group_msg("room", "alice", "morning all"));
    // Commands are taken in order: once /help is answered, the chatter before it was read.
    relay.say(&dm("dm-a", "alice", "/help"));
    rx.wait_for_message("the /help answer", SOON, |d| d.text.contains("/tail"));
    assert_eq!(rx.count(is_hint), 1, "{:?}", rx.messages());
}

/// A sender that puts milliseconds in `X-Execrelay-Timestamp` is told so, and nothing runs.
#[test]
fn a_timestamp_in_milliseconds_is_refused_saying_so() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let raw = serde_json::to_vec(&dm("dm-a", "alice", "/exec true")).unwrap();
    let ts = unix_now_ms().to_string();
    let headers = [
        ("Content-Type", "application/json".to_string()),
        ("X-Execrelay-Timestamp", ts.clone()),
        ("X-Execrelay-Signature", sign(SECRET, &ts, &raw)),
    ];
    let (status, body) = relay.post_webhook_raw(&headers, raw);
    assert_eq!(status, 401, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("in milliseconds"), "{body}");
    assert!(relay.jobs().is_empty());
}

/// `/cmd@otherbot` is another bot's business on every channel (Telegram already dropped it):
/// in a group or a direct chat, nothing runs and nothing is answered.
#[test]
fn a_command_for_another_bot_is_ignored() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    relay.say(&group_msg(
        "room",
        "alice",
        "/exec@otherbot touch ran-for-otherbot",
    ));
    relay.say(&dm("dm-a", "alice", "/jobs@otherbot"));
    relay.say(&dm("dm-a", "alice", "/help"));
    rx.wait_for_message("the /help answer", SOON, |d| d.text.contains("/tail"));
    assert_eq!(rx.messages().len(), 1, "{:?}", rx.messages());
    assert!(relay.jobs().is_empty());
    assert!(!relay.path("ran-for-otherbot").exists());
}

/// A bridge that leaves out `chat_type`: a conversation seen as a group stays one, so its
/// jobs share the group's session and a stranger's command there draws no public refusal.
#[test]
fn a_message_without_chat_type_in_a_known_group_is_a_group_message() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    relay.run_job(&rx, &group_msg("room-x", "alice", "/exec echo one"));
    let untyped = |user: &str, text: &str| {
        let mut message = dm("room-x", user, text);
        message
            .as_object_mut()
            .expect("an object")
            .remove("chat_type");
        message
    };
    let (job, _) = relay.run_job(&rx, &untyped("alice", "/exec echo two"));
    assert_eq!(
        relay.job(&job.id).expect("the job")["session"],
        "chat:webhook:room-x"
    );
    relay.say(&untyped("mallory", "/exec id"));
    relay.run_job(&rx, &untyped("alice", "/exec echo three"));
    assert_eq!(
        rx.count(|d| d.text.contains("not authorized")),
        0,
        "a refusal for the whole group to see"
    );
    // A conversation never seen as a group is still direct without the field.
    let (dm_job, _) = relay.run_job(&rx, &{
        let mut message = dm("dm-alice", "alice", "/exec echo four");
        message
            .as_object_mut()
            .expect("an object")
            .remove("chat_type");
        message
    });
    assert_eq!(
        relay.job(&dm_job.id).expect("the job")["session"],
        "user:webhook:alice"
    );
}
