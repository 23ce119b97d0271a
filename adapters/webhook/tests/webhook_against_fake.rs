//! The generic webhook channel against the fake receiver (`execrelay-fakes`): buttons ride on
//! a send, edits change what the receiver shows (and never count as messages), edit failures
//! follow their own script, and a press posted by the receiver's side reaches the sink and
//! comes back as the presser's answer. A small server stands in for the relay's `/webhook`
//! handler, doing what `src/serve/api.rs` does.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use execrelay_channel::{
    Button, Channel, ChatType, Edit, EditOutcome, OutboundChunk, Route, Secret, SendOutcome,
};
use execrelay_fakes::receiver::Receiver;
use execrelay_fakes::{Failure, Person, Platform, SECRET};
use execrelay_webhook::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, WebhookConfig, WebhookInbound, answer_press,
};
use support::RecordingSink;

const WAIT: Duration = Duration::from_secs(5);

type Relay = (Arc<WebhookChannel>, Arc<RecordingSink>);

/// What the relay's `POST /webhook` does with a request, answers included.
async fn webhook(
    State((channel, sink)): State<Relay>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let (status, body) = match channel.authenticate(
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        now,
    ) {
        Ok(WebhookInbound::Press(press)) => answer_press(sink.as_ref(), press).await,
        Ok(WebhookInbound::Message(_)) => {
            (200, serde_json::json!({"ok": true, "duplicate": false}))
        }
        Err(err) => (
            err.http_status(),
            serde_json::json!({"error": err.to_string()}),
        ),
    };
    (
        StatusCode::from_u16(status).expect("a status"),
        axum::Json(body),
    )
}

fn buttons(job: &str, ids: &[(&str, &str)]) -> Vec<Button> {
    ids.iter()
        .map(|(prefix, label)| Button {
            id: format!("{prefix}:{job}"),
            label: label.to_string(),
        })
        .collect()
}

fn edit_of<'a>(
    route: &'a Route,
    message_id: &'a str,
    text: &'a str,
    buttons: &'a [Button],
) -> Edit<'a> {
    Edit {
        route,
        message_id,
        text,
        buttons,
    }
}

fn pairs(buttons: &[Button]) -> Vec<(String, String)> {
    buttons
        .iter()
        .map(|b| (b.label.clone(), b.id.clone()))
        .collect()
}

#[test]
fn sends_with_buttons_edits_and_presses_through_the_fake_receiver() {
    let rt = support::runtime();
    let rx = Receiver::start();
    let channel = Arc::new(
        WebhookChannel::new(WebhookConfig {
            callback_url: Some(rx.callback_url()),
            ..WebhookConfig::new(Secret::new(SECRET))
        })
        .expect("the channel"),
    );
    let sink = Arc::new(RecordingSink::default());
    let app = axum::Router::new()
        .route("/webhook", post(webhook))
        .with_state((channel.clone(), sink.clone()));
    let relay = support::serve(&rt, app);

    let chat = rx.group();
    let route = Route {
        channel: "webhook".into(),
        account: String::new(),
        chat_id: chat.id.clone(),
        thread_id: None,
        reply_to_message_id: None,
        chat_type: ChatType::Group,
    };
    let live = buttons("7f3a9c", &[("t", "Tail"), ("k", "Kill")]);
    let ack = "started job 7f3a9c: make";
    let chunk = OutboundChunk {
        route: &route,
        text: ack,
        idempotency_key: "abcd1.0",
        index: 0,
        count: 1,
        buttons: &live,
    };
    let SendOutcome::Delivered {
        platform_id: Some(message_id),
    } = rt.block_on(channel.send(chunk))
    else {
        panic!("the ack was not delivered with an id")
    };
    assert_eq!(message_id, "abcd1.0", "the receiver names it by its key");
    let posted = rx.posted(&chat);
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].message_id, message_id);
    assert_eq!(posted[0].buttons, pairs(&live));

    let edit = |text, buttons| edit_of(&route, &message_id, text, buttons);
    let progress = "started job 7f3a9c: make\n[12s] building…";
    assert_eq!(
        rt.block_on(channel.edit(edit(progress, &live))),
        EditOutcome::Edited
    );
    // Not modified: the same edit again is still an edit done.
    assert_eq!(
        rt.block_on(channel.edit(edit(progress, &live))),
        EditOutcome::Edited
    );
    let posted = rx.posted(&chat);
    assert_eq!(
        (posted[0].sent_text.as_str(), posted[0].text.as_str()),
        (ack, progress)
    );
    assert_eq!(
        rx.sent_to(&chat),
        vec![ack.to_string()],
        "edits are no messages"
    );
    assert_eq!(Platform::attempts(&rx, &chat).len(), 1);

    // The scripts are apart: an edit meets only the edits', a send only the sends'.
    rx.fail_next(1, Failure::Unavailable);
    rx.fail_next_edits(
        1,
        Failure::RateLimited {
            retry_after_secs: 2,
        },
    );
    assert_eq!(
        rt.block_on(channel.edit(edit(progress, &live))),
        EditOutcome::RetryAfter(Duration::from_secs(2))
    );
    assert_eq!(
        rt.block_on(channel.edit(edit(progress, &live))),
        EditOutcome::Edited
    );
    rx.fail_next_edits(1, Failure::Forbidden);
    assert!(matches!(
        rt.block_on(channel.edit(edit(progress, &live))),
        EditOutcome::Failed(why) if why.starts_with("HTTP 403")
    ));
    let chunk = OutboundChunk {
        route: &route,
        text: "a notice",
        idempotency_key: "abcd2.0",
        index: 0,
        count: 1,
        buttons: &[],
    };
    assert!(matches!(
        rt.block_on(channel.send(chunk)),
        SendOutcome::Transient(_)
    ));

    // A press: the receiver's side posts it, the sink takes it, the presser sees the answer.
    let press = rx.press(relay, &chat, Person::Alice, &message_id, "k:7f3a9c");
    assert_eq!(
        rx.answers(&press, WAIT),
        vec!["pressed k:7f3a9c".to_string()]
    );
    rx.press_again(relay, &press);
    assert_eq!(rx.answers(&press, WAIT).len(), 2);
    let presses = sink.presses();
    assert_eq!(presses.len(), 2);
    assert_eq!(
        presses[0], presses[1],
        "the same press, the same id: the relay dedupes"
    );
    assert_eq!(presses[0].press_id, press.id);
    assert_eq!(presses[0].action, "k:7f3a9c");
    assert_eq!(presses[0].sender_id, "alice");
    assert_eq!(presses[0].on_message_id.as_deref(), Some("abcd1.0"));
    assert_eq!(presses[0].route.chat_id, chat.id);
    assert_eq!(presses[0].route.chat_type, ChatType::Group);

    // A relay that cannot take it answers 503: nothing is shown, the bridge may try again.
    sink.set_refusing(true);
    let refused = rx.press(relay, &chat, Person::Bob, &message_id, "t:7f3a9c");
    assert!(rx.answers(&refused, Duration::from_millis(100)).is_empty());
    sink.set_refusing(false);

    // The final edit takes the buttons away; an edit of a message never sent is gone.
    let done = "started job 7f3a9c: make\nfinished: exit 0";
    assert_eq!(
        rt.block_on(channel.edit(edit(done, &[]))),
        EditOutcome::Edited
    );
    let posted = rx.posted(&chat);
    assert_eq!(
        (posted[0].text.as_str(), posted[0].buttons.len()),
        (done, 0)
    );
    let stray = Edit {
        message_id: "never-sent.0",
        ..edit(done, &[])
    };
    assert!(matches!(
        rt.block_on(channel.edit(stray)),
        EditOutcome::Gone(_)
    ));
    let statuses: Vec<u16> = rx.edit_attempts(&chat).iter().map(|e| e.status).collect();
    assert_eq!(statuses, [200, 200, 429, 200, 403, 200, 404]);
}
