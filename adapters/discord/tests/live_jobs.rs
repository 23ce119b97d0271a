//! The real Discord adapter against the fake Discord (REST and gateway), for live jobs: a
//! message sent with buttons, edited in place, its edits' failures classified, and a button
//! press taken from the gateway to a relay (a test sink here) and answered to its presser.
//!
//! Every wait is bounded and waits on an event (a press reaching the sink, an answer recorded
//! by the fake); the fake listens on 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use execrelay_channel::{
    Accepted, Button, Channel, ChatType, Edit, EditOutcome, InboundMessage, InboundSink,
    OutboundChunk, Press, PressAnswer, Route, Secret, SendOutcome, SinkError,
};
use execrelay_discord::{CANNOT_TAKE, DiscordChannel, DiscordConfig};
use execrelay_fakes::discord::{FakeDiscord, TOKEN};
use execrelay_fakes::{Chat, Failure, Person, Platform};

const WAIT: Duration = Duration::from_secs(15);
/// The fake names no relay address for Discord presses: they come over the gateway.
const NO_RELAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

/// Holds the slow relay below until the test opens it.
#[derive(Clone)]
struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    fn closed() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    fn open(&self) {
        self.0.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    async fn pass(&self) {
        let _ = self.0.acquire().await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn channel(fake: &FakeDiscord) -> DiscordChannel {
    let mut config = DiscordConfig::new(Secret::new(TOKEN));
    config.api_base = fake.api_base();
    DiscordChannel::new(config).expect("the channel builds")
}

fn route(chat: &Chat, thread: Option<u64>) -> Route {
    Route {
        channel: "discord".into(),
        account: "900".into(),
        chat_id: chat.id.clone(),
        thread_id: thread.map(|t| t.to_string()),
        reply_to_message_id: None,
        chat_type: if chat.group {
            ChatType::Group
        } else {
            ChatType::Direct
        },
    }
}

fn buttons(pairs: &[(&str, &str)]) -> Vec<Button> {
    pairs
        .iter()
        .map(|(label, id)| Button {
            id: id.to_string(),
            label: label.to_string(),
        })
        .collect()
}

fn pairs(buttons: &[Button]) -> Vec<(String, String)> {
    buttons
        .iter()
        .map(|b| (b.label.clone(), b.id.clone()))
        .collect()
}

/// Sends `text` with `buttons` as a one-chunk message; the message id.
async fn send(channel: &DiscordChannel, route: &Route, text: &str, buttons: &[Button]) -> String {
    let key = format!("abcd{:x}.0", text.len() * 7919 + buttons.len());
    let outcome = channel
        .send(OutboundChunk {
            route,
            text,
            idempotency_key: &key,
            index: 0,
            count: 1,
            buttons,
        })
        .await;
    match outcome {
        SendOutcome::Delivered {
            platform_id: Some(id),
        } => id,
        other => panic!("the send of {text:?} was not delivered: {other:?}"),
    }
}

async fn edit(
    channel: &DiscordChannel,
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

#[test]
fn a_message_sent_with_buttons_is_edited_in_place() {
    let fake = FakeDiscord::start();
    let rt = runtime();
    let discord = channel(&fake);
    let chat = fake.direct(Person::Alice);
    let to = route(&chat, None);
    let tail_kill = buttons(&[("Tail", "t:7f3a9c"), ("Kill", "k:7f3a9c")]);
    let tail = buttons(&[("Tail", "t:7f3a9c")]);

    let ack = rt.block_on(send(&discord, &to, "started job 7f3a9c: make", &tail_kill));
    let plain = rt.block_on(send(&discord, &to, "a plain answer", &[]));
    let posted = Platform::posted(&fake, &chat);
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[0].message_id, ack);
    assert_eq!(posted[0].buttons, pairs(&tail_kill));
    assert!(posted[1].buttons.is_empty());
    let plain_id: u64 = plain.parse().unwrap();
    let stored = fake.message(chat.id.parse().unwrap(), plain_id).unwrap();
    assert!(
        stored.get("components").is_none(),
        "a send without buttons carries no components: {stored}"
    );

    let progress = "started job 7f3a9c: make\n[12s] compiling";
    assert_eq!(
        rt.block_on(edit(&discord, &to, &ack, progress, &tail_kill)),
        EditOutcome::Edited
    );
    // The same text again: Discord answers 200, which is an edit that changed nothing.
    assert_eq!(
        rt.block_on(edit(&discord, &to, &ack, progress, &tail_kill)),
        EditOutcome::Edited
    );
    let now = &Platform::posted(&fake, &chat)[0];
    assert_eq!(now.text, progress);
    assert_eq!(now.sent_text, "started job 7f3a9c: make");
    assert_eq!(now.buttons, pairs(&tail_kill));

    let done = "started job 7f3a9c: make\nfinished";
    assert_eq!(
        rt.block_on(edit(&discord, &to, &ack, done, &tail)),
        EditOutcome::Edited
    );
    assert_eq!(Platform::posted(&fake, &chat)[0].buttons, pairs(&tail));
    assert_eq!(
        rt.block_on(edit(&discord, &to, &ack, done, &[])),
        EditOutcome::Edited
    );
    let now = &Platform::posted(&fake, &chat)[0];
    assert!(now.buttons.is_empty(), "the last edit removed the buttons");
    assert_eq!(now.text, done);

    let ack_id: u64 = ack.parse().unwrap();
    let edits = fake.edits_of(ack_id);
    assert_eq!(edits.len(), 4);
    assert_eq!(
        edits[3].buttons,
        Some(vec![]),
        "removal is an explicit empty list"
    );
    assert!(fake.edits().iter().all(|e| e.status == 200));
    assert_eq!(fake.edit_attempts(&chat).len(), 4);
    // Edits are no sends: the send views are what they were.
    assert_eq!(
        fake.sent_to(&chat),
        vec!["started job 7f3a9c: make", "a plain answer"]
    );
    assert_eq!(fake.attempts(&chat).len(), 2);
}

#[test]
fn edit_failures_are_classified_and_never_touch_sends() {
    let fake = FakeDiscord::start();
    let rt = runtime();
    let discord = channel(&fake);
    let chat = fake.group();
    let to = route(&chat, None);
    let kill = buttons(&[("Kill", "k:1")]);
    let id = rt.block_on(send(&discord, &to, "started job 1: sleep", &kill));
    let edit_now = |text: &str| rt.block_on(edit(&discord, &to, &id, text, &kill));

    fake.fail_next_edits(
        1,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    assert_eq!(
        edit_now("a"),
        EditOutcome::RetryAfter(Duration::from_secs(1))
    );
    fake.fail_next_edits(1, Failure::Unavailable);
    assert!(matches!(edit_now("b"), EditOutcome::Transient(_)));
    fake.fail_next_edits(1, Failure::Forbidden);
    assert!(matches!(edit_now("c"), EditOutcome::Gone(e) if e.contains("Missing Access")));
    // 30046 comes as a 429 with a retry_after: still "slow down", not "pause the chat".
    fake.slow_down_next_edits(1);
    assert_eq!(edit_now("d"), EditOutcome::SlowDown);
    assert!(matches!(edit_now(&"x".repeat(2001)), EditOutcome::Failed(e) if e.contains("50035")));

    // The sends' script is not the edits' one, either way.
    fake.fail_next(1, Failure::Unavailable);
    assert_eq!(edit_now("e"), EditOutcome::Edited);
    let outcome = rt.block_on(discord.send(OutboundChunk {
        route: &to,
        text: "next",
        idempotency_key: "abcd9.0",
        index: 0,
        count: 1,
        buttons: &[],
    }));
    assert!(matches!(outcome, SendOutcome::Transient(_)), "{outcome:?}");

    fake.delete_message(chat.id.parse().unwrap(), id.parse().unwrap());
    assert!(matches!(edit_now("f"), EditOutcome::Gone(e) if e.contains("10008")));
    assert!(matches!(
        rt.block_on(edit(&discord, &to, "not-an-id", "g", &kill)),
        EditOutcome::Failed(_)
    ));
    let statuses: Vec<u16> = fake.edit_attempts(&chat).iter().map(|e| e.status).collect();
    assert_eq!(statuses, vec![429, 502, 403, 429, 400, 200, 404]);
}

/// A relay that records presses and answers each with a fixed text; a press of `slow` waits
/// for its gate first, a press of `refuse` is refused.
struct Relay {
    presses: Mutex<mpsc::Sender<Press>>,
    finished: Mutex<mpsc::Sender<String>>,
    gate: Gate,
}

#[async_trait::async_trait]
impl InboundSink for Relay {
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
        let action = press.action.clone();
        let _ = self.presses.lock().unwrap().send(press);
        if action.starts_with("slow") {
            self.gate.pass().await;
        }
        let _ = self.finished.lock().unwrap().send(action.clone());
        if action.starts_with("refuse") {
            return Err(SinkError::Unavailable("the disk is full".into()));
        }
        Ok(PressAnswer {
            text: format!("pressed {action}"),
        })
    }
}

/// The adapter's gateway side running against the fake, handing presses to a [`Relay`].
struct Listening {
    rt: tokio::runtime::Runtime,
    discord: Arc<DiscordChannel>,
    presses: mpsc::Receiver<Press>,
    finished: mpsc::Receiver<String>,
    gate: Gate,
    stop: execrelay_channel::CancellationToken,
    inbound: tokio::task::JoinHandle<Result<(), execrelay_channel::ChannelError>>,
}

impl Listening {
    fn start(fake: &FakeDiscord) -> Listening {
        let rt = runtime();
        let discord = Arc::new(channel(fake));
        let (press_tx, presses) = mpsc::channel();
        let (finished_tx, finished) = mpsc::channel();
        let gate = Gate::closed();
        let relay = Arc::new(Relay {
            presses: Mutex::new(press_tx),
            finished: Mutex::new(finished_tx),
            gate: gate.clone(),
        });
        let stop = execrelay_channel::CancellationToken::new();
        let inbound = rt.spawn({
            let (discord, relay, stop) = (discord.clone(), relay.clone(), stop.clone());
            async move { discord.run_inbound(relay, stop).await }
        });
        fake.wait_listening(WAIT);
        Listening {
            rt,
            discord,
            presses,
            finished,
            gate,
            stop,
            inbound,
        }
    }

    fn next_press(&self) -> Press {
        self.presses
            .recv_timeout(WAIT)
            .expect("a press reaches the relay")
    }

    fn send(&self, route: &Route, text: &str, buttons: &[Button]) -> String {
        self.rt.block_on(send(&self.discord, route, text, buttons))
    }

    /// Stops the gateway side; it must end cleanly.
    fn stop(self) {
        self.stop.cancel();
        let inbound = self.inbound;
        let ended = self
            .rt
            .block_on(async { tokio::time::timeout(WAIT, inbound).await });
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }
}

#[test]
fn presses_reach_the_relay_and_their_pressers_see_its_answer() {
    let fake = FakeDiscord::start();
    let relay = Listening::start(&fake);
    let next_press = || relay.next_press();

    // A DM: Alice presses Kill under the acknowledgement.
    let dm = fake.direct(Person::Alice);
    let buttons_here = buttons(&[("Tail", "t:7f3a9c"), ("Kill", "k:7f3a9c")]);
    let ack = relay.rt.block_on(send(
        &relay.discord,
        &route(&dm, None),
        "started job 7f3a9c",
        &buttons_here,
    ));
    let pressed = fake.press(NO_RELAY, &dm, Person::Alice, &ack, "k:7f3a9c");
    let press = next_press();
    assert_eq!(press.action, "k:7f3a9c");
    assert_eq!(press.press_id, pressed.id);
    assert_eq!(press.on_message_id.as_deref(), Some(ack.as_str()));
    assert_eq!(press.sender_id, "400");
    assert_eq!(press.route.chat_id, dm.id);
    assert_eq!(press.route.chat_type, ChatType::Direct);
    assert_eq!(press.route.account, "900");
    assert_eq!(fake.answers(&pressed, WAIT), vec!["pressed k:7f3a9c"]);
    let callbacks = fake.callbacks_of(pressed.id.parse().unwrap());
    assert_eq!(callbacks.len(), 1);
    assert!(callbacks[0].ephemeral(), "only the presser sees the answer");

    // Delivered again (same interaction): the relay sees the same press id; Discord refuses
    // a second answer, so the presser still saw one.
    fake.press_again(NO_RELAY, &pressed);
    assert_eq!(next_press().press_id, pressed.id);
    let id: u64 = pressed.id.parse().unwrap();
    fire_wait("the second answer", || fake.callbacks_of(id).len() == 2);
    assert_eq!(fake.callbacks_of(id)[1].status, 400);
    assert_eq!(
        fake.shown_for(id, WAIT).len(),
        1,
        "the presser saw one answer"
    );

    // A guild channel: Bob is the presser (as the interaction's member), the chat a group.
    let group = fake.group();
    let ack = relay.rt.block_on(send(
        &relay.discord,
        &route(&group, None),
        "started job 1",
        &buttons_here,
    ));
    let pressed = fake.press(NO_RELAY, &group, Person::Bob, &ack, "t:7f3a9c");
    let press = next_press();
    assert_eq!(press.sender_id, "401");
    assert_eq!(press.route.chat_type, ChatType::Group);
    assert_eq!(press.route.chat_id, group.id);
    assert_eq!(press.route.thread_id, None);
    assert_eq!(fake.answers(&pressed, WAIT), vec!["pressed t:7f3a9c"]);

    // A thread: its parent is the chat, as for the thread's messages.
    fake.add_thread(220, 210);
    let in_thread = route(&group, Some(220));
    let ack = relay.rt.block_on(send(
        &relay.discord,
        &in_thread,
        "started job 2",
        &buttons(&[("Kill", "k:2")]),
    ));
    let id = fake.press_button(220, 400, ack.parse().unwrap(), "k:2", true);
    let press = next_press();
    assert_eq!(press.press_id, id.to_string());
    assert_eq!(press.route.chat_id, "210");
    assert_eq!(press.route.thread_id.as_deref(), Some("220"));

    // A relay that cannot take the press, and one too slow to answer in time: the presser is
    // told to check the chat, within Discord's window; the slow press still reaches its end.
    let both = buttons(&[("Refuse", "refuse:1"), ("Slow", "slow:1")]);
    let ack = relay.rt.block_on(send(
        &relay.discord,
        &route(&dm, None),
        "started job 3",
        &both,
    ));
    let refused = fake.press(NO_RELAY, &dm, Person::Alice, &ack, "refuse:1");
    next_press();
    assert_eq!(fake.answers(&refused, WAIT), vec![CANNOT_TAKE]);
    let slow = fake.press(NO_RELAY, &dm, Person::Alice, &ack, "slow:1");
    next_press();
    assert_eq!(fake.answers(&slow, WAIT), vec![CANNOT_TAKE]);
    let answered = fake.callbacks_of(slow.id.parse().unwrap());
    assert_eq!(answered[0].status, 204, "answered within the deadline");
    relay.gate.open();
    loop {
        match relay.finished.recv_timeout(WAIT) {
            Ok(action) if action == "slow:1" => break,
            Ok(_) => {}
            Err(error) => panic!("the slow press never reached its end: {error}"),
        }
    }

    relay.stop();
}

/// A resumed session may replay the press it had already dispatched: the relay is handed the
/// same press id again (and dedupes on it); Discord refuses the second answer.
#[test]
fn a_press_replayed_on_a_resumed_session_keeps_its_id() {
    let fake = FakeDiscord::start();
    let relay = Listening::start(&fake);
    let dm = fake.direct(Person::Bob);
    let ack = relay.send(
        &route(&dm, None),
        "started job 5",
        &buttons(&[("Kill", "k:5")]),
    );
    let pressed = fake.press(NO_RELAY, &dm, Person::Bob, &ack, "k:5");
    assert_eq!(relay.next_press().press_id, pressed.id);
    assert_eq!(fake.answers(&pressed, WAIT), vec!["pressed k:5"]);
    fake.replay_last_on_resume();
    fake.drop_connection();
    assert_eq!(relay.next_press().press_id, pressed.id);
    assert!(fake.resumes() >= 1, "delivered again by a RESUME");
    let id: u64 = pressed.id.parse().unwrap();
    fire_wait("the replayed press's answer", || {
        fake.callbacks_of(id).len() == 2
    });
    assert_eq!(fake.callbacks_of(id)[1].status, 400);
    assert_eq!(
        fake.shown_for(id, WAIT).len(),
        1,
        "the presser saw one answer"
    );
    relay.stop();
}

/// A press answered after Discord's window is refused (10062): the fake holds the adapter to
/// the 3 s, so a slow path would fail a test.
#[test]
fn an_answer_after_the_window_is_refused() {
    let fake = FakeDiscord::start();
    let relay = Listening::start(&fake);
    fake.set_callback_deadline(Duration::ZERO);
    let dm = fake.direct(Person::Alice);
    let ack = relay.send(
        &route(&dm, None),
        "started job 6",
        &buttons(&[("Kill", "k:6")]),
    );
    let pressed = fake.press(NO_RELAY, &dm, Person::Alice, &ack, "k:6");
    relay.next_press();
    let id: u64 = pressed.id.parse().unwrap();
    fire_wait("the late answer", || !fake.callbacks_of(id).is_empty());
    assert_eq!(fake.callbacks_of(id)[0].status, 404);
    assert!(fake.shown_for(id, Duration::ZERO).is_empty());
    relay.stop();
}

/// Waits (bounded) until `done` holds.
fn fire_wait(what: &str, mut done: impl FnMut() -> bool) {
    execrelay_fakes::wait_for(what, WAIT, || done().then_some(()));
}
