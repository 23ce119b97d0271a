//! Live jobs (issue 16) on Telegram: the real adapter against the fake Bot API
//! (`execrelay-fakes`). A message sent with buttons shows them; edits change its text and
//! buttons (an edit that changes nothing and a 429 map as the relay needs); a press reaches the
//! relay's sink, its answer reaches the presser, and a press delivered again keeps its id.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use execrelay_channel::{
    Accepted, Button, CancellationToken, Channel, ChatType, Edit, EditOutcome, InboundMessage,
    InboundSink, OutboundChunk, Press, PressAnswer, Route, Secret, SendOutcome, SinkError,
};
use execrelay_fakes::telegram::{self, FakeTelegram, GROUP, NOT_MODIFIED, SUPERGROUP_BASE};
use execrelay_fakes::{Chat, Failure, Person, Platform, wait_for};
use execrelay_telegram::{PRESS_UNAVAILABLE, TelegramChannel, TelegramConfig};

/// Generous for a loopback fake; a wait ends as soon as what it waits for happens.
const WAIT: Duration = Duration::from_secs(10);
/// Telegram calls no relay: `Platform::press` takes an address it does not use.
const NO_RELAY: &str = "127.0.0.1:9";

fn channel(fake: &FakeTelegram) -> TelegramChannel {
    let mut config = TelegramConfig::new(Secret::new(telegram::TOKEN));
    config.api_url = fake.api_url();
    TelegramChannel::new(config).expect("a usable config")
}

fn route(chat: &Chat, thread: Option<&str>) -> Route {
    Route {
        channel: "telegram".into(),
        account: telegram::BOT_ID.to_string(),
        chat_id: chat.id.clone(),
        thread_id: thread.map(str::to_string),
        reply_to_message_id: None,
        chat_type: if chat.group {
            ChatType::Group
        } else {
            ChatType::Direct
        },
    }
}

fn button(id: &str, label: &str) -> Button {
    Button {
        id: id.into(),
        label: label.into(),
    }
}

fn tail_kill() -> Vec<Button> {
    vec![button("t:7f3a9c", "Tail"), button("k:7f3a9c", "Kill")]
}

fn shown(buttons: &[Button]) -> Vec<(String, String)> {
    buttons
        .iter()
        .map(|b| (b.label.clone(), b.id.clone()))
        .collect()
}

/// Sends `text` with `buttons` to `route`; the message id Telegram gave it.
async fn send(channel: &TelegramChannel, route: &Route, text: &str, buttons: &[Button]) -> String {
    let outcome = channel
        .send(OutboundChunk {
            route,
            text,
            idempotency_key: "k",
            index: 0,
            count: 1,
            buttons,
        })
        .await;
    match outcome {
        SendOutcome::Delivered {
            platform_id: Some(id),
        } => id,
        other => panic!("expected the send delivered with an id, got {other:?}"),
    }
}

async fn edit(
    channel: &TelegramChannel,
    route: &Route,
    message_id: &str,
    text: &str,
    buttons: &[Button],
) -> EditOutcome {
    channel
        .edit(Edit {
            route,
            message_id,
            text,
            buttons,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_with_buttons_shows_them_and_edits_change_it() {
    let fake = FakeTelegram::start();
    let channel = channel(&fake);
    let alice = fake.direct(Person::Alice);
    let to = route(&alice, None);

    let plain = send(&channel, &to, "plain", &[]).await;
    let ack = send(&channel, &to, "started job 7f3a9c: make", &tail_kill()).await;
    let sends = fake.calls("sendMessage");
    assert!(
        sends[0].body.get("reply_markup").is_none(),
        "no buttons, no keyboard: {}",
        sends[0].body
    );
    assert_eq!(
        sends[1].body["reply_markup"],
        serde_json::json!({"inline_keyboard": [[
            {"text": "Tail", "callback_data": "t:7f3a9c"},
            {"text": "Kill", "callback_data": "k:7f3a9c"},
        ]]})
    );
    let posted = fake.posted(&alice);
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[0].message_id, plain);
    assert!(posted[0].buttons.is_empty());
    assert_eq!(posted[1].message_id, ack);
    assert_eq!(posted[1].buttons, shown(&tail_kill()));

    let progress = "running 7f3a9c: 3 lines";
    assert_eq!(
        edit(&channel, &to, &ack, progress, &tail_kill()).await,
        EditOutcome::Edited
    );
    let now = &fake.posted(&alice)[1];
    assert_eq!(
        (now.sent_text.as_str(), now.text.as_str()),
        ("started job 7f3a9c: make", progress)
    );
    assert_eq!(now.buttons, shown(&tail_kill()));

    // The same again: Telegram's 400 "message is not modified", which is what the edit wanted.
    assert_eq!(
        edit(&channel, &to, &ack, progress, &tail_kill()).await,
        EditOutcome::Edited
    );
    let attempts = fake.edit_attempts(&alice);
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200, 400]
    );
    assert!(attempts.iter().all(|a| a.message_id == ack));

    // The last edit takes the Kill button away, then all of them.
    let tail = [button("t:7f3a9c", "Tail")];
    assert_eq!(
        edit(&channel, &to, &ack, "done 7f3a9c", &tail).await,
        EditOutcome::Edited
    );
    assert_eq!(fake.posted(&alice)[1].buttons, shown(&tail));
    assert_eq!(
        edit(&channel, &to, &ack, "done 7f3a9c", &[]).await,
        EditOutcome::Edited
    );
    assert!(fake.posted(&alice)[1].buttons.is_empty());
    let last = fake.calls("editMessageText").pop().unwrap().body;
    assert_eq!(
        last["reply_markup"],
        serde_json::json!({"inline_keyboard": []})
    );
    assert_eq!(last["link_preview_options"]["is_disabled"], true);
    assert_eq!(last["message_id"].to_string(), ack);

    // Edits never show among the sends.
    assert_eq!(
        Platform::sent_to(&fake, &alice),
        ["plain", "started job 7f3a9c: make"]
    );
}

#[test]
fn the_fake_words_not_modified_as_teloxide_knows_it() {
    let known: teloxide::ApiError =
        serde_json::from_value(serde_json::Value::String(NOT_MODIFIED.into())).unwrap();
    assert_eq!(known, teloxide::ApiError::MessageNotModified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_fail_as_the_relay_needs_and_never_touch_the_send_script() {
    let fake = FakeTelegram::start();
    let channel = channel(&fake);
    let alice = fake.direct(Person::Alice);
    let to = route(&alice, None);
    let ack = send(&channel, &to, "started", &tail_kill()).await;

    // A send's 429 is kept for the next send: the edits in between do not meet it.
    fake.fail_next(
        1,
        Failure::RateLimited {
            retry_after_secs: 3,
        },
    );
    fake.rate_limit_next_edits(1, 5);
    assert_eq!(
        edit(&channel, &to, &ack, "one", &tail_kill()).await,
        EditOutcome::RetryAfter(Duration::from_secs(5))
    );
    assert_eq!(
        edit(&channel, &to, &ack, "two", &tail_kill()).await,
        EditOutcome::Edited
    );
    let outcome = channel
        .send(OutboundChunk {
            route: &to,
            text: "next",
            idempotency_key: "k2",
            index: 0,
            count: 1,
            buttons: &[],
        })
        .await;
    assert_eq!(outcome, SendOutcome::RetryAfter(Duration::from_secs(3)));

    fake.fail_next_edits(1, Failure::Forbidden);
    let blocked = edit(&channel, &to, &ack, "three", &tail_kill()).await;
    assert!(matches!(blocked, EditOutcome::Gone(_)), "{blocked:?}");

    let unknown = edit(&channel, &to, "999999", "four", &tail_kill()).await;
    let EditOutcome::Gone(error) = unknown else {
        panic!("an edit of a message Telegram does not know is gone, got {unknown:?}")
    };
    assert!(error.contains("message to edit not found"), "{error}");

    let too_long = "x".repeat(telegram::TEXT_LIMIT + 1);
    let refused = edit(&channel, &to, &ack, &too_long, &tail_kill()).await;
    assert!(matches!(refused, EditOutcome::Failed(_)), "{refused:?}");
    let bad_id = edit(&channel, &to, "not-a-number", "five", &[]).await;
    assert!(matches!(bad_id, EditOutcome::Failed(_)), "{bad_id:?}");

    assert_eq!(
        fake.attempts(&alice)
            .iter()
            .map(|a| a.status)
            .collect::<Vec<_>>(),
        [200, 429],
        "sends only, each meeting its own script"
    );
    for outcome in [blocked, refused, bad_id] {
        let text = format!("{outcome:?}");
        assert!(
            !text.contains(telegram::TOKEN) && !text.contains("SecretPart"),
            "{text}"
        );
    }
}

/// A sink that records presses and answers each with `answer` (`None`: it cannot take them).
struct Presses {
    seen: Mutex<mpsc::Sender<Press>>,
    answer: Option<String>,
}

impl Presses {
    fn new(answer: Option<&str>) -> (Arc<Presses>, mpsc::Receiver<Press>) {
        let (tx, rx) = mpsc::channel();
        let sink = Presses {
            seen: Mutex::new(tx),
            answer: answer.map(str::to_string),
        };
        (Arc::new(sink), rx)
    }
}

#[async_trait::async_trait]
impl InboundSink for Presses {
    async fn accept(&self, _message: InboundMessage) -> Result<Accepted, SinkError> {
        Ok(Accepted::Stored)
    }

    async fn load_state(&self, _key: &str) -> Result<Option<String>, SinkError> {
        Ok(None)
    }

    async fn save_state(&self, _key: &str, _value: &str) -> Result<(), SinkError> {
        Ok(())
    }

    async fn press(&self, press: Press) -> Result<PressAnswer, SinkError> {
        let _ = self.seen.lock().expect("sink lock").send(press);
        match &self.answer {
            Some(text) => Ok(PressAnswer { text: text.clone() }),
            None => Err(SinkError::Unavailable("the store is down".into())),
        }
    }
}

/// The channel polling the fake into `sink` until the returned token fires.
fn listen(
    fake: &FakeTelegram,
    sink: Arc<Presses>,
) -> (
    Arc<TelegramChannel>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let channel = Arc::new(channel(fake));
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (channel, stop) = (channel.clone(), stop.clone());
        async move {
            channel
                .run_inbound(sink, stop)
                .await
                .expect("polling ends cleanly");
        }
    });
    // The bot has told Telegram what it wants once the fake saw a getUpdates.
    wait_for("the adapter's first getUpdates", WAIT, || {
        (!fake.calls("getUpdates").is_empty()).then_some(())
    });
    (channel, stop, task)
}

async fn stop(stop: CancellationToken, task: tokio::task::JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("polling stops when told")
        .expect("the polling task does not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_reaches_the_relay_and_its_answer_the_presser() {
    let fake = FakeTelegram::start();
    let (sink, presses) = Presses::new(Some("killing 7f3a9c"));
    let (channel, token, task) = listen(&fake, sink);
    let alice = fake.direct(Person::Alice);
    let to = route(&alice, None);
    let ack = send(&channel, &to, "started job 7f3a9c: make", &tail_kill()).await;
    let relay: SocketAddr = NO_RELAY.parse().unwrap();

    let pressed = fake.press(relay, &alice, Person::Alice, &ack, "k:7f3a9c");
    let press = presses
        .recv_timeout(WAIT)
        .expect("the press reaches the sink");
    assert_eq!(press.route, to);
    assert_eq!(press.sender_id, "5");
    assert_eq!(press.action, "k:7f3a9c");
    assert_eq!(press.press_id, pressed.id);
    assert_eq!(press.on_message_id.as_deref(), Some(ack.as_str()));
    assert_eq!(fake.answers(&pressed, WAIT), ["killing 7f3a9c"]);

    fake.press_again(relay, &pressed);
    let again = presses
        .recv_timeout(WAIT)
        .expect("the press, delivered again");
    assert_eq!(again.press_id, press.press_id, "the relay dedupes on it");
    assert_eq!(
        fake.answers(&pressed, WAIT),
        ["killing 7f3a9c", "killing 7f3a9c"]
    );
    wait_for("both presses confirmed", WAIT, || {
        (fake.unconfirmed() == 0).then_some(())
    });
    let asked = &fake.calls("getUpdates")[0].body["allowed_updates"];
    assert_eq!(*asked, serde_json::json!(["message", "callback_query"]));
    stop(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presses_in_groups_and_topics_keep_their_route() {
    let fake = FakeTelegram::start();
    let (sink, presses) = Presses::new(Some(&"é".repeat(300)));
    let (channel, token, task) = listen(&fake, sink);
    let relay: SocketAddr = NO_RELAY.parse().unwrap();

    let group = fake.group();
    let in_group = route(&group, None);
    let ack = send(&channel, &in_group, "started", &tail_kill()).await;
    let pressed = fake.press(relay, &group, Person::Bob, &ack, "t:7f3a9c");
    let press = presses
        .recv_timeout(WAIT)
        .expect("the press reaches the sink");
    assert_eq!(press.route, in_group);
    assert_eq!(press.route.chat_id, GROUP.to_string());
    assert_eq!(
        press.sender_id, "6",
        "the presser, whoever sent the command"
    );
    // Telegram shows at most 200 characters (and the fake refuses more).
    assert_eq!(fake.answers(&pressed, WAIT), ["é".repeat(200)]);

    let forum = Chat {
        id: (SUPERGROUP_BASE - 123).to_string(),
        group: true,
    };
    let in_topic = route(&forum, Some("77"));
    let ack = send(&channel, &in_topic, "started", &tail_kill()).await;
    fake.press(relay, &forum, Person::Alice, &ack, "t:7f3a9c");
    let press = presses.recv_timeout(WAIT).expect("the topic's press");
    assert_eq!(press.route.thread_id.as_deref(), Some("77"));
    assert_eq!(press.route, in_topic);
    stop(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_the_relay_cannot_take_is_answered_and_still_confirmed() {
    let fake = FakeTelegram::start();
    let (sink, presses) = Presses::new(None);
    let (channel, token, task) = listen(&fake, sink);
    let alice = fake.direct(Person::Alice);
    let ack = send(&channel, &route(&alice, None), "started", &tail_kill()).await;
    let relay: SocketAddr = NO_RELAY.parse().unwrap();

    let pressed = fake.press(relay, &alice, Person::Alice, &ack, "k:7f3a9c");
    presses
        .recv_timeout(WAIT)
        .expect("the press reaches the sink");
    assert_eq!(fake.answers(&pressed, WAIT), [PRESS_UNAVAILABLE]);
    // Not replayed later: a Kill minutes after its presser was told to try again would
    // surprise them.
    wait_for("the press confirmed", WAIT, || {
        (fake.unconfirmed() == 0).then_some(())
    });
    assert!(presses.try_recv().is_err(), "delivered once");
    stop(token, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_without_data_is_answered_and_skipped() {
    let fake = FakeTelegram::start();
    let (sink, presses) = Presses::new(Some("unused"));
    let (channel, token, task) = listen(&fake, sink);
    let alice = fake.direct(Person::Alice);
    let ack = send(&channel, &route(&alice, None), "started", &tail_kill()).await;

    // No data, as for a game's button: nothing for the relay, but the spinner must stop.
    let (_, query) = fake.press_button(5, ack.parse().unwrap(), 5, "");
    wait_for("the empty press answered", WAIT, || {
        fake.answered()
            .iter()
            .any(|a| a.query_id == query)
            .then_some(())
    });
    assert_eq!(
        fake.answered()[0].text,
        "",
        "no text: the spinner just stops"
    );
    wait_for("the press confirmed", WAIT, || {
        (fake.unconfirmed() == 0).then_some(())
    });
    assert!(presses.try_recv().is_err(), "not the relay's");
    stop(token, task).await;
}
