//! The Feishu channel against the fake open platform (`execrelay-fakes`): a chunk with buttons
//! is a shared card, its updates (`PATCH`) change what the fake shows and never count as
//! messages, update failures follow their own script, the token is refreshed once, and a card
//! press (an encrypted, signed `card.action.trigger`) reaches the sink and comes back as the
//! presser's toast. A small server stands in for the relay's Feishu handler, doing what
//! `src/serve/api.rs` does.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use execrelay_channel::{
    Button, Channel, ChatType, Edit, EditOutcome, InboundSink, OutboundChunk, Route, Secret,
    SendOutcome,
};
use execrelay_fakes::feishu::{
    APP_ID, APP_SECRET, ENCRYPT_KEY, EVENTS_PATH, FakeFeishu, Kind, VERIFICATION_TOKEN,
};
use execrelay_fakes::{Chat, Failure, Person, Platform};
use execrelay_webhook::feishu::{
    FeishuChannel, FeishuConfig, FeishuEvent, FeishuHeaders, NONCE_HEADER, SIGNATURE_HEADER,
    TIMESTAMP_HEADER, answer_press,
};
use support::RecordingSink;

const WAIT: Duration = Duration::from_secs(5);

type Relay = (Arc<FeishuChannel>, Arc<RecordingSink>);

/// What the relay's Feishu handler does with a callback, answers included.
async fn events(State((channel, sink)): State<Relay>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let received = FeishuHeaders {
        timestamp: header(TIMESTAMP_HEADER),
        nonce: header(NONCE_HEADER),
        signature: header(SIGNATURE_HEADER),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    match channel.receive(received, &body, now) {
        Ok(FeishuEvent::Press(press)) => {
            let sink: Arc<dyn InboundSink> = sink;
            Json(answer_press(sink, press).await).into_response()
        }
        Ok(FeishuEvent::Challenge(challenge)) => {
            Json(serde_json::json!({ "challenge": challenge })).into_response()
        }
        Ok(_) => Json(serde_json::json!({"ok": true, "duplicate": false})).into_response(),
        Err(err) => {
            let status = StatusCode::from_u16(err.http_status()).expect("a status");
            (status, Json(serde_json::json!({"error": err.to_string()}))).into_response()
        }
    }
}

fn route(chat: &Chat) -> Route {
    Route {
        channel: "feishu".into(),
        account: APP_ID.into(),
        chat_id: chat.id.clone(),
        thread_id: None,
        reply_to_message_id: None,
        chat_type: if chat.group {
            ChatType::Group
        } else {
            ChatType::Direct
        },
    }
}

fn chunk<'a>(
    route: &'a Route,
    text: &'a str,
    key: &'a str,
    buttons: &'a [Button],
) -> OutboundChunk<'a> {
    OutboundChunk {
        route,
        text,
        idempotency_key: key,
        index: 0,
        count: 1,
        buttons,
    }
}

fn edit<'a>(
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

fn delivered_id(outcome: SendOutcome) -> String {
    match outcome {
        SendOutcome::Delivered {
            platform_id: Some(id),
        } => id,
        other => panic!("not delivered with an id: {other:?}"),
    }
}

#[test]
fn cards_updates_and_presses_through_the_fake_platform() {
    let rt = support::runtime();
    let fs = FakeFeishu::start();
    let mut config = FeishuConfig::new(
        APP_ID,
        Secret::new(APP_SECRET),
        Secret::new(VERIFICATION_TOKEN),
    );
    config.encrypt_key = Some(Secret::new(ENCRYPT_KEY));
    config.base_url = fs.base_url();
    let channel = Arc::new(FeishuChannel::new(config).expect("the channel"));
    let sink = Arc::new(RecordingSink::default());
    let app = axum::Router::new()
        .route(EVENTS_PATH, post(events))
        .with_state((channel.clone(), sink.clone()));
    let relay = support::serve(&rt, app);

    let group = fs.group();
    let to_group = route(&group);
    let live = [
        Button {
            id: "t:7f3a9c".into(),
            label: "Tail".into(),
        },
        Button {
            id: "k:7f3a9c".into(),
            label: "Kill".into(),
        },
    ];
    let pairs: Vec<(String, String)> = live
        .iter()
        .map(|b| (b.label.clone(), b.id.clone()))
        .collect();

    // Without buttons, text as ever; with them, a card.
    let notice_id =
        delivered_id(rt.block_on(channel.send(chunk(&to_group, "a notice", "k1.0", &[]))));
    let ack = "started job 7f3a9c: make";
    let card_id = delivered_id(rt.block_on(channel.send(chunk(&to_group, ack, "k2.0", &live))));
    let sent = fs.sent();
    assert_eq!(sent[0].kind, Kind::Text);
    assert_eq!((sent[1].kind, sent[1].shared), (Kind::Card, true));
    assert_eq!(sent[1].uuid, "k2.0");
    let posted = fs.posted(&group);
    assert_eq!(posted[1].message_id, card_id);
    assert_eq!((posted[1].text.as_str(), &posted[1].buttons), (ack, &pairs));

    let progress = "started job 7f3a9c: make\n[12s] building…";
    let update = || rt.block_on(channel.edit(edit(&to_group, &card_id, progress, &live)));
    assert_eq!(update(), EditOutcome::Edited);
    assert_eq!(
        update(),
        EditOutcome::Edited,
        "the same card again is still done"
    );
    let posted = fs.posted(&group);
    assert_eq!(
        (posted[1].sent_text.as_str(), posted[1].text.as_str()),
        (ack, progress)
    );
    assert_eq!(
        Platform::sent_to(&fs, &group),
        ["a notice", ack],
        "updates are no messages"
    );
    assert_eq!(Platform::attempts(&fs, &group).len(), 2);

    // The scripts are apart: an update meets only the updates'.
    fs.fail_next(1, Failure::Unavailable);
    fs.fail_next_edits(
        1,
        Failure::RateLimited {
            retry_after_secs: 3,
        },
    );
    assert_eq!(update(), EditOutcome::RetryAfter(Duration::from_secs(3)));
    fs.fail_next_edits(1, Failure::Unavailable);
    assert!(matches!(update(), EditOutcome::Transient(_)));
    assert_eq!(update(), EditOutcome::Edited);
    assert!(matches!(
        rt.block_on(channel.send(chunk(&to_group, "another", "k3.0", &[]))),
        SendOutcome::Transient(_)
    ));

    // A stale token: refreshed once, the update goes through.
    let (issued, refusals) = (fs.tokens_issued(), fs.token_refusals());
    fs.expire_tokens();
    assert_eq!(update(), EditOutcome::Edited);
    assert_eq!(
        (fs.tokens_issued(), fs.token_refusals()),
        (issued + 1, refusals + 1)
    );

    // What Feishu refuses: a text message, an unknown one, a recalled card.
    let refused = |id: &str| rt.block_on(channel.edit(edit(&to_group, id, progress, &live)));
    assert!(matches!(refused(&notice_id), EditOutcome::Failed(_)));
    assert!(matches!(refused("om_999"), EditOutcome::Failed(_)));
    assert!(matches!(refused("om_1/../x"), EditOutcome::Failed(_)));

    // A press in the group: the toast carries the relay's answer.
    let press = fs.press(relay, &group, Person::Alice, &card_id, "k:7f3a9c");
    assert_eq!(fs.answers(&press, WAIT), ["pressed k:7f3a9c"]);
    fs.press_again(relay, &press);
    assert_eq!(fs.answers(&press, WAIT).len(), 2);
    let presses = sink.presses();
    assert_eq!(presses.len(), 2);
    assert_eq!(
        presses[0], presses[1],
        "the same event id again: the relay dedupes"
    );
    assert_eq!(presses[0].press_id, press.id);
    assert_eq!(presses[0].sender_id, "ou_alice");
    assert_eq!(presses[0].action, "k:7f3a9c");
    assert_eq!(presses[0].on_message_id.as_deref(), Some(card_id.as_str()));
    assert_eq!(
        (
            presses[0].route.chat_id.as_str(),
            presses[0].route.chat_type
        ),
        (group.id.as_str(), ChatType::Group)
    );

    // A relay that cannot take it still answers, with an error toast.
    sink.set_refusing(true);
    let unheard = fs.press(relay, &group, Person::Bob, &card_id, "t:7f3a9c");
    let answers = fs.answers(&unheard, WAIT);
    assert!(
        answers.len() == 1 && answers[0].contains("check the chat before you press again"),
        "{answers:?}"
    );
    sink.set_refusing(false);

    // In a direct chat the channel has sent a card to, the press says Direct.
    let dm = fs.direct(Person::Alice);
    let to_dm = route(&dm);
    let dm_card = delivered_id(rt.block_on(channel.send(chunk(&to_dm, ack, "k4.0", &live))));
    fs.press(relay, &dm, Person::Alice, &dm_card, "t:7f3a9c");
    let last = sink.presses().pop().expect("the DM press");
    assert_eq!(
        (last.route.chat_id.as_str(), last.route.chat_type),
        (dm.id.as_str(), ChatType::Direct)
    );

    // The final update drops the buttons; a recalled card is gone.
    let done = "started job 7f3a9c: make\nfinished: exit 0";
    assert_eq!(
        rt.block_on(channel.edit(edit(&to_group, &card_id, done, &[]))),
        EditOutcome::Edited
    );
    assert_eq!(fs.current(&card_id), Some((done.to_string(), Vec::new())));
    fs.recall(&card_id);
    assert!(matches!(
        rt.block_on(channel.edit(edit(&to_group, &card_id, done, &[]))),
        EditOutcome::Gone(_)
    ));
    let statuses: Vec<u16> = fs.edit_attempts(&group).iter().map(|e| e.status).collect();
    assert_eq!(statuses, [200, 200, 429, 503, 200, 400, 200, 400, 200, 400]);
}
