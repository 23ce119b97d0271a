//! The scenarios every platform passes alike, run against each platform fake (the webhook
//! receiver, Telegram, Discord, Feishu) through `execrelay_fakes::Platform`: one `#[test]` per
//! platform and scenario (`conformance::<platform>::<scenario>`). What is particular to one
//! platform stays in its own file.
//!
//! Each test starts one relay with the platform's channel and the webhook channel (the
//! receiver, where the identity scenario goes to meet the platform); for the webhook platform
//! both are the one receiver.

use std::sync::Arc;

use execrelay_fakes::Person::{Alice, Bob};
use execrelay_fakes::{Attempt, Chat, Failure, Person, Platform};

use crate::fakes::discord::FakeDiscord;
use crate::fakes::feishu::FakeFeishu;
use crate::fakes::receiver::Receiver;
use crate::fakes::telegram::FakeTelegram;
use crate::harness::*;

/// One `#[test]` per scenario, for the platform `$platform` (a function of this module that
/// starts its fake).
macro_rules! for_platform {
    ($platform:ident: $($scenario:ident),*) => {
        mod $platform {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(super::$platform);
                }
            )*
        }
    };
}

/// Every scenario, for every platform.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        for_platform!(webhook: $($scenario),*);
        for_platform!(telegram: $($scenario),*);
        for_platform!(discord: $($scenario),*);
        for_platform!(feishu: $($scenario),*);
    };
}

// Other files' shared scenarios (`live_jobs.rs`) run on every platform the same way.
pub(crate) use {conformance, for_platform};

conformance!(
    exec_is_acknowledged_then_completed_in_the_same_chat,
    long_output_arrives_in_ordered_chunks_within_the_limit,
    a_rate_limited_send_waits_its_retry_after_and_arrives_once,
    an_outage_delays_a_group_s_messages_which_then_arrive_once_in_order,
    a_permanent_refusal_dead_letters_visibly_and_is_not_retried,
    the_last_active_chat_follows_an_identity_to_the_webhook_and_back,
);

/// Starts a platform's fake, given the receiver the relay's webhook channel posts to.
pub(crate) type Fake = fn(&Arc<Receiver>) -> Arc<dyn Platform>;

pub(crate) fn webhook(rx: &Arc<Receiver>) -> Arc<dyn Platform> {
    rx.clone()
}

pub(crate) fn telegram(_: &Arc<Receiver>) -> Arc<dyn Platform> {
    Arc::new(FakeTelegram::start())
}

pub(crate) fn discord(_: &Arc<Receiver>) -> Arc<dyn Platform> {
    Arc::new(FakeDiscord::start())
}

pub(crate) fn feishu(_: &Arc<Receiver>) -> Arc<dyn Platform> {
    Arc::new(FakeFeishu::start())
}

/// A relay pointed at a platform fake and at a webhook receiver.
pub(crate) struct World {
    // First: the relay stops before the fakes do.
    pub(crate) relay: Relay,
    pub(crate) platform: Arc<dyn Platform>,
    pub(crate) rx: Arc<Receiver>,
}

impl World {
    /// The relay configured by `configure` (on top of the platform's settings), once the
    /// platform is heard.
    pub(crate) fn start(
        fake: Fake,
        configure: impl FnOnce(RelayBuilder, &dyn Platform) -> RelayBuilder,
    ) -> World {
        let rx = Arc::new(Receiver::start());
        let platform = fake(&rx);
        let builder = Relay::builder(&rx).apply(platform.settings());
        let relay = configure(builder, &*platform).start();
        platform.wait_listening(SOON);
        World {
            relay,
            platform,
            rx,
        }
    }

    /// The relay with `[access] allow` naming Alice.
    pub(crate) fn for_alice(fake: Fake) -> World {
        World::start(fake, |builder, p| {
            builder.allow(&[p.identity(Alice).as_str()])
        })
    }

    pub(crate) fn p(&self) -> &dyn Platform {
        &*self.platform
    }

    pub(crate) fn say(&self, chat: &Chat, who: Person, text: &str) {
        self.platform.say(self.relay.addr, chat, who, text);
    }

    /// The first text in `chat` that satisfies `pred`, waiting for it (at most `within`).
    #[track_caller]
    pub(crate) fn wait_sent_within(
        &self,
        chat: &Chat,
        what: &str,
        within: std::time::Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let what = format!("{what} in {} chat {}", self.p().channel(), chat.id);
        wait_for(&what, within, || {
            self.p().sent_to(chat).into_iter().find(|t| pred(t))
        })
    }

    #[track_caller]
    pub(crate) fn wait_sent(&self, chat: &Chat, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_sent_within(chat, what, SOON, pred)
    }

    /// Alice says `command` (an `/exec`) in `chat`; its acknowledgement's job id.
    #[track_caller]
    pub(crate) fn start_job(&self, chat: &Chat, command: &str) -> String {
        let acks = || {
            self.p()
                .sent_to(chat)
                .into_iter()
                .filter(|t| is_ack_text(t))
        };
        let before = acks().count();
        self.say(chat, Alice, command);
        let what = format!(
            "the acknowledgement of {command:?} in {} chat {}",
            self.p().channel(),
            chat.id
        );
        let ack = wait_for(&what, SOON, || acks().nth(before));
        ack_job_id(&ack).unwrap_or_else(|| panic!("no job id in the acknowledgement {ack:?}"))
    }

    #[track_caller]
    pub(crate) fn wait_completion(&self, chat: &Chat, id: &str) -> String {
        self.wait_sent(chat, "the completion", |t| is_completion_of(t, id))
    }

    /// The sends to `chat` of the completion of job `id`, whatever they were answered.
    pub(crate) fn completion_attempts(&self, chat: &Chat, id: &str) -> Vec<Attempt> {
        let attempts = self.p().attempts(chat).into_iter();
        attempts.filter(|a| is_completion_of(&a.text, id)).collect()
    }

    /// Waits until `session`'s last route is `channel`'s `chat_id`.
    #[track_caller]
    pub(crate) fn wait_route(
        &self,
        session: &str,
        channel: &str,
        chat_id: &str,
    ) -> serde_json::Value {
        let what = format!("{session}'s last route to be {channel}:{chat_id}");
        wait_for(&what, SOON, || {
            self.relay.routes().into_iter().find(|r| {
                r["session"] == session && r["channel"] == channel && r["chat_id"] == chat_id
            })
        })
    }
}

fn is_ack_text(text: &str) -> bool {
    text.starts_with("started job ")
}

/// A stranger is refused; Alice's `/exec` gets its acknowledgement, then its completion, in
/// her chat, once each; every request the relay made carried the platform's credentials.
fn exec_is_acknowledged_then_completed_in_the_same_chat(fake: Fake) {
    let w = World::for_alice(fake);
    let p = w.p();

    let bobs = p.direct(Bob);
    w.say(&bobs, Bob, "/exec touch stranger-ran");
    let refusal = w.wait_sent(&bobs, "the refusal", |t| t.contains("not authorized"));
    assert!(refusal.contains(&p.identity(Bob)), "{refusal:?}");

    let chat = p.direct(Alice);
    let command = "sh -c 'sleep 0.2; echo conformance-ok'";
    let id = w.start_job(&chat, &format!("/exec {command}"));
    let done = w.wait_completion(&chat, &id);
    let first = done.lines().next().unwrap_or("");
    assert!(first.contains("exit 0"), "first line: {first:?}");
    assert!(output_lines(&done).contains(&"conformance-ok"), "{done:?}");

    w.relay.wait_outbox_drained();
    let sent = p.sent_to(&chat);
    assert_eq!(
        sent.len(),
        2,
        "the acknowledgement, then the completion: {sent:?}"
    );
    assert!(
        sent[0].starts_with(&format!("started job {id}: ")) && sent[0].contains(command),
        "the acknowledgement names the job and its command: {:?}",
        sent[0]
    );
    assert_eq!(sent[1], done);
    let keys: Vec<_> = p
        .attempts(&chat)
        .into_iter()
        .filter_map(|a| a.key)
        .collect();
    assert!(
        keys.len() < 2 || keys[0] != keys[1],
        "the acknowledgement and the completion share a key: {keys:?}"
    );
    assert_eq!(
        p.sent_to(&bobs).len(),
        1,
        "one refusal: {:?}",
        p.sent_to(&bobs)
    );
    assert_eq!(w.relay.jobs().len(), 1, "the stranger's /exec ran nothing");
    assert!(!w.relay.path("stranger-ran").exists());
    assert!(
        w.relay
            .routes()
            .iter()
            .all(|r| r["chat_id"] != bobs.id.as_str()),
        "the stranger left no route"
    );
    assert_eq!(p.unauthorized(), 0, "a request lacked the credentials");
}

/// 50 characters a line, with an emoji (two UTF-16 units) and CJK in each.
fn fifty_wide(i: usize) -> String {
    let line = format!("L{i:04} 😀 漢字 {}", "x".repeat(50 - 11));
    assert_eq!(line.chars().count(), 50);
    line
}

/// An output five times the platform's limit arrives whole, in order, in chunks each within
/// the limit in the platform's unit (UTF-16 for Telegram), no character split.
fn long_output_arrives_in_ordered_chunks_within_the_limit(fake: Fake) {
    let w = World::start(fake, |builder, p| {
        let lines = 5 * p.text_limit().max / 50;
        builder
            .allow(&[p.identity(Alice).as_str()])
            .set("exec", "tail_chars", &(lines * 60).to_string())
            .set("exec", "tail_lines", &(lines + 10).to_string())
    });
    let (p, limit) = (w.p(), w.p().text_limit());
    let lines: Vec<String> = (0..5 * limit.max / 50).map(fifty_wide).collect();
    std::fs::write(w.relay.path("big.txt"), lines.join("\n") + "\n").unwrap();

    let chat = p.direct(Alice);
    let id = w.start_job(&chat, "/exec cat big.txt");
    let last = lines.last().expect("lines").clone();
    w.wait_sent(&chat, "the last line", |t| t.contains(&last));
    w.relay.wait_outbox_drained();
    let refused: Vec<_> = p
        .attempts(&chat)
        .into_iter()
        .filter(|a| a.status != 200)
        .collect();
    assert!(
        refused.is_empty(),
        "the platform refused chunks: {refused:?}"
    );
    let chunks: Vec<String> = p
        .sent_to(&chat)
        .into_iter()
        .skip_while(|t| !is_completion_of(t, &id))
        .collect();
    assert!(
        chunks.len() >= 5,
        "expected several chunks, got {}",
        chunks.len()
    );
    for chunk in &chunks {
        let length = limit.measure(chunk);
        assert!(length <= limit.max, "a chunk of {length} ({limit:?})");
        assert!(!chunk.contains('\u{FFFD}'), "a character was split");
    }
    let received: Vec<&str> = chunks
        .iter()
        .flat_map(|c| c.lines())
        .map(str::trim)
        .filter(|l| l.starts_with('L') && l.contains('😀'))
        .collect();
    assert_eq!(received, lines, "every line, whole and in order");
}

/// Two 429s naming a 1 s wait: each retry waits it out, resends the same message with the
/// same key, and it arrives once.
fn a_rate_limited_send_waits_its_retry_after_and_arrives_once(fake: Fake) {
    let w = World::for_alice(fake);
    let p = w.p();
    let chat = p.direct(Alice);
    let id = w.start_job(&chat, &gated_exec("go", "after-429"));
    p.fail_next(
        2,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    w.relay.open_gate("go");
    let done = w.wait_completion(&chat, &id);
    assert!(output_lines(&done).contains(&"after-429"), "{done:?}");

    w.relay.wait_outbox_drained();
    let tries = w.completion_attempts(&chat, &id);
    let statuses: Vec<u16> = tries.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [429, 429, 200], "{tries:?}");
    for pair in tries.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        // Transient backoff would start at ~0.5 s.
        assert!(gap >= secs(0.95), "retried after only {gap:?}: {tries:?}");
        assert_eq!(
            (&pair[1].text, &pair[1].key),
            (&pair[0].text, &pair[0].key),
            "the retry resends the same message"
        );
    }
    let delivered = p
        .sent_to(&chat)
        .iter()
        .filter(|t| is_completion_of(t, &id))
        .count();
    assert_eq!(delivered, 1, "delivered exactly once");
}

/// The platform answers a 5xx: the group's acknowledgement waits, the completion queues behind
/// it, and both arrive once, in order, in the group.
fn an_outage_delays_a_group_s_messages_which_then_arrive_once_in_order(fake: Fake) {
    let w = World::for_alice(fake);
    let p = w.p();
    let group = p.group();
    p.fail_next(1, Failure::Unavailable);
    w.say(&group, Alice, &gated_exec("go", "after-outage"));
    let failed = wait_for("the first send to meet the outage", SOON, || {
        p.attempts(&group).into_iter().find(|a| a.status >= 500)
    });
    assert!(is_ack_text(&failed.text), "{failed:?}");
    // The completion is owed while the acknowledgement still waits.
    w.relay.open_gate("go");
    // Telegram's client reads a 5xx answer only after 10 s.
    let done = w.wait_sent_within(&group, "the completion", secs(30.0), |t| {
        t.starts_with("exec finished: ")
    });
    assert!(output_lines(&done).contains(&"after-outage"), "{done:?}");

    w.relay.wait_outbox_drained();
    let sent = p.sent_to(&group);
    assert_eq!(
        sent.len(),
        2,
        "the acknowledgement, then the completion: {sent:?}"
    );
    assert_eq!(sent[0], failed.text, "the acknowledgement came first");
    let id = ack_job_id(&sent[0]).expect("a job id");
    assert!(is_completion_of(&sent[1], &id), "{sent:?}");
    let attempts = p.attempts(&group);
    let resent = attempts
        .iter()
        .find(|a| a.status == 200)
        .expect("a delivered send");
    assert_eq!(resent.key, failed.key, "the resend carries the same key");
    let session = format!("chat:{}:{}", p.channel(), group.id);
    let route = w.wait_route(&session, p.channel(), &group.id);
    assert_eq!(route["chat_type"], "group", "{route}");
}

/// The platform refuses the completion for good: it is dead in `GET /v1/outbox` and
/// `execrelay outbox`, with the platform's words, after one try.
fn a_permanent_refusal_dead_letters_visibly_and_is_not_retried(fake: Fake) {
    let w = World::for_alice(fake);
    let p = w.p();
    let chat = p.direct(Alice);
    let id = w.start_job(&chat, &gated_exec("go", "refused"));
    p.fail_next(1, Failure::Forbidden);
    w.relay.open_gate("go");

    let dead = wait_for("the completion dead in GET /v1/outbox", SOON, || {
        w.relay.deliveries().into_iter().find(|d| {
            d["state"] == "dead" && is_completion_of(d["text"].as_str().unwrap_or(""), &id)
        })
    });
    assert_eq!(dead["channel"], p.channel(), "{dead}");
    assert_eq!(dead["chat_id"], chat.id.as_str(), "{dead}");
    assert_eq!(dead["attempts"], 1, "{dead}");
    let words = p.refusal_words();
    assert!(
        dead["last_error"].as_str().unwrap_or("").contains(words),
        "last_error should carry {words:?}: {dead}"
    );
    let out = w.relay.cli(&["outbox"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "`execrelay outbox` failed: {out:?}");
    assert!(
        listed
            .lines()
            .any(|l| l.contains("dead") && l.contains(words)),
        "`execrelay outbox` lists the dead completion with {words:?}:\n{listed}"
    );
    assert_eq!(
        w.completion_attempts(&chat, &id).len(),
        1,
        "a refusal is not retried"
    );
    assert!(!p.sent_to(&chat).iter().any(|t| is_completion_of(t, &id)));
}

/// Alice is one identity on the platform and on the webhook: a completion goes where she
/// spoke last, there and back.
fn the_last_active_chat_follows_an_identity_to_the_webhook_and_back(fake: Fake) {
    // On the webhook she is `alice-other` in `wh-other` (on the webhook platform, a second
    // user and chat of the same channel).
    let (other_user, other_chat) = ("alice-other", "wh-other");
    let w = World::start(fake, |builder, p| {
        let names = [p.identity(Alice), format!("webhook:{other_user}")];
        let names: Vec<String> = names.iter().map(|n| toml_str(n)).collect();
        builder
            .allow(&["alice"])
            .set("identities", "alice", &format!("[{}]", names.join(", ")))
    });
    let (p, rx) = (w.p(), &w.rx);
    let chat = p.direct(Alice);

    let first = w.start_job(&chat, &gated_exec("go-1", "to-webhook"));
    w.relay.say(&dm(other_chat, other_user, "over here now"));
    w.wait_route("user:alice", "webhook", other_chat);
    w.relay.open_gate("go-1");
    let done = rx.wait_for_message("the completion on the webhook", SOON, |d| {
        is_completion_of(&d.text, &first)
    });
    assert_eq!(done.conversation_id, other_chat);
    assert!(
        output_lines(&done.text).contains(&"to-webhook"),
        "{:?}",
        done.text
    );

    let back = gated_exec("go-2", "back-home");
    let second = w.relay.start_job(rx, &dm(other_chat, other_user, &back)).id;
    w.say(&chat, Alice, "back here");
    w.wait_route("user:alice", p.channel(), &chat.id);
    w.relay.open_gate("go-2");
    let done = w.wait_completion(&chat, &second);
    assert!(output_lines(&done).contains(&"back-home"), "{done:?}");

    w.relay.wait_outbox_drained();
    let here = p.sent_to(&chat);
    assert!(
        !here.iter().any(|t| is_completion_of(t, &first)),
        "{here:?}"
    );
    let there = rx.count(|d| d.conversation_id == other_chat && is_completion_of(&d.text, &second));
    assert_eq!(
        there, 0,
        "the second completion went back to the webhook too"
    );
}
