//! Feishu end to end: the real binary receiving encrypted, signed event callbacks (the test
//! plays Feishu) and replying through the fake open API in `tests/fakes/src/feishu.rs`. What
//! every platform does alike is in `conformance.rs`; here, what only Feishu does.

use serde_json::json;

use crate::fakes::feishu::{
    self, EVENTS_PATH, FakeFeishu, Sent, Tamper, VERIFICATION_TOKEN, deliver, encrypt,
    message_event,
};
use crate::fakes::receiver::Receiver;
use crate::harness::*;

const ALICE: &str = "ou_alice";
const ALICE_DM: &str = "oc_alice_dm";

fn start(fs: &FakeFeishu, rx: &Receiver, allow: &[&str]) -> Relay {
    fs.configure(Relay::builder(rx).allow(allow)).start()
}

#[track_caller]
fn wait_sent(fs: &FakeFeishu, chat: &str, what: &str, pred: impl Fn(&Sent) -> bool) -> Sent {
    wait_for(&format!("{what} in feishu chat {chat}"), SOON, || {
        fs.sent_to(chat).into_iter().find(|s| pred(s))
    })
}

fn is_ack_sent(s: &Sent) -> bool {
    s.text.starts_with("started job ")
}

static EVENT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn event_id() -> String {
    let n = EVENT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("ev-{}-{n}", std::process::id())
}

#[track_caller]
fn deliver_ok(relay: &Relay, event: &serde_json::Value) -> serde_json::Value {
    let (status, body) = deliver(relay, event, Tamper::None);
    assert_eq!(status, 200, "the relay answered {body}");
    body
}

#[test]
fn url_verification_is_answered_plain_and_encrypted_after_the_token() {
    let (fs, rx) = (FakeFeishu::start(), Receiver::start());
    let relay = start(&fs, &rx, &[]);
    let challenge = json!({"challenge": "c-plain", "token": VERIFICATION_TOKEN,
                           "type": "url_verification"});
    let (status, body) = relay.post_raw(EVENTS_PATH, &[], challenge.to_string());
    assert_eq!((status, body["challenge"].clone()), (200, json!("c-plain")));

    let hidden = json!({"challenge": "c-secret", "token": VERIFICATION_TOKEN,
                        "type": "url_verification"});
    let encrypted = json!({"encrypt": encrypt(feishu::ENCRYPT_KEY, hidden.to_string().as_bytes())});
    let (status, body) = relay.post_raw(EVENTS_PATH, &[], encrypted.to_string());
    assert_eq!(
        (status, body["challenge"].clone()),
        (200, json!("c-secret"))
    );

    let wrong = json!({"challenge": "c", "token": "not-the-token", "type": "url_verification"});
    let (status, _) = relay.post_raw(EVENTS_PATH, &[], wrong.to_string());
    assert_eq!(status, 401);
}

#[test]
fn an_encrypted_exec_is_acknowledged_and_completed_once_even_when_redelivered() {
    let (fs, rx) = (FakeFeishu::start(), Receiver::start());
    let mut relay = start(&fs, &rx, &["feishu:ou_alice"]);

    let event = message_event(
        &event_id(),
        ALICE,
        ALICE_DM,
        "p2p",
        "/exec sh -c 'sleep 0.2; echo fs-ok'",
    );
    let first = deliver_ok(&relay, &event);
    assert_eq!(first["duplicate"], json!(false), "{first}");
    // Feishu redelivers an event it thinks went unanswered: same event_id.
    let again = deliver_ok(&relay, &event);
    assert_eq!(again["duplicate"], json!(true), "{again}");

    let ack = wait_sent(&fs, ALICE_DM, "the acknowledgement", is_ack_sent);
    let id = ack_job_id(&ack.text).expect("a job id");
    let done = wait_sent(&fs, ALICE_DM, "the completion", |s| {
        is_completion_of(&s.text, &id)
    });
    assert!(
        output_lines(&done.text).contains(&"fs-ok"),
        "{:?}",
        done.text
    );
    assert!(
        done.token.starts_with("t-"),
        "sent with a tenant token: {done:?}"
    );
    relay.wait_outbox_drained();
    assert_eq!(relay.jobs().len(), 1, "the redelivered event ran nothing");
    assert_eq!(fs.sent().iter().filter(|s| is_ack_sent(s)).count(), 1);
    assert_eq!(fs.tokens_issued(), 1, "the token is cached");
    // Feishu retries for hours: a redelivery after a restart is still recognised.
    relay.restart();
    let after_restart = deliver_ok(&relay, &event);
    assert_eq!(after_restart["duplicate"], json!(true), "{after_restart}");
    assert_eq!(relay.jobs().len(), 1);
    let log = relay.log();
    for secret in [feishu::APP_SECRET, feishu::ENCRYPT_KEY, VERIFICATION_TOKEN] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
fn bad_signatures_stale_timestamps_and_wrong_tokens_get_401_and_run_nothing() {
    let (fs, rx) = (FakeFeishu::start(), Receiver::start());
    let relay = start(&fs, &rx, &["feishu:ou_alice"]);
    let pwned = relay.path("pwned");
    let command = format!("/exec touch {}", pwned.display());

    let event = message_event(&event_id(), ALICE, ALICE_DM, "p2p", &command);
    assert_eq!(deliver(&relay, &event, Tamper::BadSignature).0, 401);
    assert_eq!(deliver(&relay, &event, Tamper::StaleTimestamp).0, 401);
    let mut wrong_token = message_event(&event_id(), ALICE, ALICE_DM, "p2p", &command);
    wrong_token["header"]["token"] = json!("forged-token");
    assert_eq!(deliver(&relay, &wrong_token, Tamper::None).0, 401);
    // With an encrypt key, an unsigned event is refused whatever it holds (even unparseable,
    // which is not even parsed), and a body that does not decrypt answers exactly like one
    // that does (no padding oracle).
    let (status, body) = relay.post_raw(EVENTS_PATH, &[], "{not json");
    assert_eq!(status, 401, "{body}");
    let (status, _) = relay.post_raw(EVENTS_PATH, &[], event.to_string());
    assert_eq!(status, 401, "an unsigned plain event");
    let garbage = json!({"encrypt": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}).to_string();
    let unsigned_event =
        json!({"encrypt": encrypt(feishu::ENCRYPT_KEY, event.to_string().as_bytes())});
    let answers: Vec<_> = [garbage, unsigned_event.to_string()]
        .into_iter()
        .map(|body| relay.post_raw(EVENTS_PATH, &[], body))
        .collect();
    assert_eq!(
        answers[0], answers[1],
        "undecryptable and unsigned answer alike"
    );
    assert_eq!(answers[0].0, 401);

    assert!(relay.jobs().is_empty(), "nothing ran");
    assert!(relay.routes().is_empty(), "nothing was recorded");
    assert!(!pwned.exists());
}

#[test]
fn an_expired_token_is_refreshed_and_the_message_arrives_once() {
    let (fs, rx) = (FakeFeishu::start(), Receiver::start());
    let relay = start(&fs, &rx, &["feishu:ou_alice"]);

    let gated = gated_exec("go", "refreshed");
    deliver_ok(
        &relay,
        &message_event(&event_id(), ALICE, ALICE_DM, "p2p", &gated),
    );
    let ack = wait_sent(&fs, ALICE_DM, "the acknowledgement", is_ack_sent);
    let id = ack_job_id(&ack.text).expect("a job id");
    fs.expire_tokens();
    relay.open_gate("go");
    let done = wait_sent(&fs, ALICE_DM, "the completion", |s| {
        is_completion_of(&s.text, &id)
    });
    assert_ne!(done.token, ack.token, "sent with a fresh token");
    assert_eq!(fs.token_refusals(), 1, "one refusal, then the refresh");
    assert_eq!(fs.tokens_issued(), 2);
    relay.wait_outbox_drained();
    assert_eq!(
        fs.refused_uuids(),
        vec![done.uuid.clone()],
        "the resend after the refresh reused the refused send's uuid"
    );
    assert_eq!(
        fs.sent()
            .iter()
            .filter(|s| is_completion_of(&s.text, &id))
            .count(),
        1
    );
}

#[test]
fn a_group_mention_runs_and_replies_in_the_group_and_non_text_gets_a_notice() {
    let (fs, rx) = (FakeFeishu::start(), Receiver::start());
    let relay = start(&fs, &rx, &["feishu:ou_alice"]);
    let group = "oc_team_room";

    let mention = "@_user_1 /exec sh -c 'echo group-ok'";
    deliver_ok(
        &relay,
        &message_event(&event_id(), ALICE, group, "group", mention),
    );
    let ack = wait_sent(&fs, group, "the acknowledgement", is_ack_sent);
    let id = ack_job_id(&ack.text).expect("a job id");
    let done = wait_sent(&fs, group, "the completion", |s| {
        is_completion_of(&s.text, &id)
    });
    assert!(output_lines(&done.text).contains(&"group-ok"));
    assert!(fs.sent_to(ALICE_DM).is_empty(), "nothing in the DM");

    let mut image = message_event(&event_id(), ALICE, ALICE_DM, "p2p", "");
    image["event"]["message"]["message_type"] = json!("image");
    image["event"]["message"]["content"] = json!(json!({"image_key": "img_1"}).to_string());
    deliver_ok(&relay, &image);
    let notice = wait_sent(&fs, ALICE_DM, "the text-only notice", |s| {
        s.text.contains("text")
    });
    assert!(
        notice.text.contains("text messages only"),
        "{:?}",
        notice.text
    );
}

#[test]
fn the_custom_group_bot_is_a_signed_heartbeat_target() {
    let (fs, rx) = (FakeFeishu::start(), Receiver::start());
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("heartbeat", "target", &toml_str("feishu_bot:ops"))
        .set("channels.feishu_bot", "enabled", "true")
        .set("channels.feishu_bot", "hook_url", &toml_str(&fs.hook_url()))
        .set(
            "channels.feishu_bot",
            "secret",
            &toml_str(feishu::BOT_SECRET),
        )
        .start();

    let job = relay.start_job(&rx, &dm("wh-alice", "alice", "/exec echo to-the-bot"));
    let posted = wait_for("the completion at the custom bot", SOON, || {
        fs.bot_posts()
            .into_iter()
            .find(|text| is_completion_of(text, &job.id))
    });
    assert!(posted.contains("to-the-bot"), "{posted:?}");
    assert_eq!(fs.bot_refusals(), 0, "every post was signed correctly");
}
