//! The Telegram channel end to end: the real binary, teloxide inside it, and the fake Bot API
//! in `tests/fakes/src/telegram.rs`. What every platform does alike (an `/exec` answered in
//! its chat, chunks, 429s, outages, dead letters, last active) is in `conformance.rs`; here,
//! what only Telegram does.

use std::time::Duration;

use crate::fakes::receiver::Receiver;
use crate::fakes::telegram::{self, FakeTelegram, SUPERGROUP_BASE, Sent, TOKEN, dm, group};
use crate::harness::*;

const ALICE: i64 = 5;

fn start(tg: &FakeTelegram, rx: &Receiver, allow: &[&str]) -> Relay {
    tg.configure(Relay::builder(rx).allow(allow)).start()
}

/// Waits for the `n`-th (from 0) message in `chat_id` whose text satisfies `pred`.
#[track_caller]
fn wait_sent(tg: &FakeTelegram, chat_id: i64, what: &str, pred: impl Fn(&Sent) -> bool) -> Sent {
    wait_for(&format!("{what} in telegram chat {chat_id}"), SOON, || {
        tg.sent_to(chat_id).into_iter().find(|s| pred(s))
    })
}

fn count_sent(tg: &FakeTelegram, pred: impl Fn(&Sent) -> bool) -> usize {
    tg.sent().iter().filter(|s| pred(s)).count()
}

#[track_caller]
fn assert_no_token_in(log: &str) {
    let secret = TOKEN.split_once(':').map(|(_, s)| s).unwrap_or(TOKEN);
    assert!(
        !log.contains(secret),
        "the bot token appears in the relay's log"
    );
}

#[test]
fn forum_topic_replies_stay_in_the_topic_and_other_bots_commands_are_ignored() {
    let (tg, rx) = (FakeTelegram::start(), Receiver::start());
    let relay = start(&tg, &rx, &["telegram:5"]);
    let forum = SUPERGROUP_BASE - 123;

    tg.push(group(
        forum,
        ALICE,
        "/exec@some_other_bot sh -c 'echo not-ours'",
        Some(77),
    ));
    let cmd = format!("/exec@{} sh -c 'echo topic-ok'", telegram::BOT_USERNAME);
    tg.push(group(forum, ALICE, &cmd, Some(77)));
    let ack = wait_sent(&tg, forum, "the acknowledgement", |s| {
        s.text.starts_with("started job ")
    });
    let id = ack_job_id(&ack.text).expect("a job id");
    let done = wait_sent(&tg, forum, "the completion", |s| {
        is_completion_of(&s.text, &id)
    });
    assert_eq!(ack.thread_id, Some(77), "the ack goes to the topic");
    assert_eq!(done.thread_id, Some(77), "the completion goes to the topic");
    assert!(
        output_lines(&done.text).contains(&"topic-ok"),
        "{:?}",
        done.text
    );
    assert_eq!(relay.jobs().len(), 1, "the other bot's /exec ran nothing");
    assert_eq!(count_sent(&tg, |s| s.text.contains("not-ours")), 0);
}

#[test]
fn relay_killed_after_get_updates_runs_the_command_exactly_once_after_restart() {
    let (tg, rx) = (FakeTelegram::start(), Receiver::start());
    let mut relay = tg
        .configure(
            Relay::builder(&rx)
                .allow(&["telegram:5"])
                .env("EXECRELAY_FAILPOINT", "inbound-stored"),
        )
        .start();
    let update = tg.push(dm(ALICE, "/exec sh -c 'echo ran >> marker; echo crash-ok'"));
    // The relay stores the update, then dies before anything acts on it.
    relay.wait_exited(SOON);
    assert!(
        !relay.path("marker").exists(),
        "nothing ran before the crash"
    );
    assert_eq!(tg.unconfirmed(), 1, "update {update} was not confirmed");
    assert!(tg.sent().is_empty());

    relay.set_env(&[]);
    relay.restart();
    let done = wait_sent(&tg, ALICE, "the completion after the restart", |s| {
        s.text.starts_with("exec finished: ")
    });
    assert!(
        output_lines(&done.text).contains(&"crash-ok"),
        "{:?}",
        done.text
    );
    wait_for("the redelivered update to be confirmed", SOON, || {
        (tg.unconfirmed() == 0).then_some(())
    });
    relay.wait_outbox_drained();
    let marker = std::fs::read_to_string(relay.path("marker")).unwrap();
    assert_eq!(marker, "ran\n", "the command ran exactly once");
    assert_eq!(count_sent(&tg, |s| s.text.starts_with("started job ")), 1);
    assert_eq!(
        count_sent(&tg, |s| s.text.starts_with("exec finished: ")),
        1
    );
    assert_eq!(relay.jobs().len(), 1);
    assert_eq!(done.thread_id, None, "a private chat has no topics");
    // The command menu was registered, with names as Telegram wants them; it did not change,
    // so the restart did not register it again.
    let commands = tg.commands().expect("setMyCommands was called");
    let names: Vec<&str> = commands
        .as_array()
        .expect("a command list")
        .iter()
        .filter_map(|c| c["command"].as_str())
        .collect();
    assert!(
        names.contains(&"exec") && names.contains(&"tail"),
        "{names:?}"
    );
    assert_eq!(tg.calls("setMyCommands").len(), 1);
    assert_no_token_in(&relay.log());
}

#[test]
fn unauthorized_user_is_refused_and_nothing_runs() {
    let (tg, rx) = (FakeTelegram::start(), Receiver::start());
    let relay = start(&tg, &rx, &["telegram:5"]);

    tg.push(group(-55, 6, "just chatting in the group", None));
    tg.push(dm(6, "/exec sh -c 'echo no > pwned'"));
    let refusal = wait_sent(&tg, 6, "the refusal", |s| s.text.contains("not authorized"));
    // Updates are handled in order: the group line was dealt with before the DM's refusal.
    assert!(tg.sent_to(-55).is_empty(), "plain chat draws no refusal");
    assert!(refusal.text.contains("telegram:6"), "{:?}", refusal.text);
    wait_for("the refused update to be confirmed", SOON, || {
        (tg.unconfirmed() == 0).then_some(())
    });
    assert!(relay.jobs().is_empty(), "no job");
    assert!(relay.routes().is_empty(), "no route recorded");
    assert!(!relay.path("pwned").exists());
}

#[test]
fn a_migrated_group_follows_its_new_id() {
    let (tg, rx) = (FakeTelegram::start(), Receiver::start());
    let relay = start(&tg, &rx, &["telegram:5"]);

    let (old, new) = (-300, SUPERGROUP_BASE - 300);
    tg.migrate(old, new);
    tg.push(group(old, ALICE, &gated_exec("go", "migrated-ok"), None));
    let ack = wait_sent(&tg, new, "the acknowledgement at the new id", |s| {
        s.text.starts_with("started job ")
    });
    let id = ack_job_id(&ack.text).expect("a job id");
    let (session, new_id) = (format!("chat:telegram:{old}"), new.to_string());
    wait_for("the group's stored route to carry the new id", SOON, || {
        relay
            .routes()
            .into_iter()
            .find(|r| r["session"] == session && r["chat_id"] == new_id.as_str())
    });
    relay.open_gate("go");
    let done = wait_sent(&tg, new, "the completion at the new id", |s| {
        is_completion_of(&s.text, &id)
    });
    assert!(output_lines(&done.text).contains(&"migrated-ok"));
    let to_old = tg
        .calls("sendMessage")
        .into_iter()
        .filter(|c| c.body["chat_id"] == old)
        .count();
    assert_eq!(to_old, 1, "only the first send went to the old id");
}

#[test]
fn a_409_conflict_is_reported_and_retried_with_backoff() {
    let (tg, rx) = (FakeTelegram::start(), Receiver::start());
    tg.conflict_next(1);
    let relay = start(&tg, &rx, &["telegram:5"]);

    tg.push(dm(ALICE, "/exec echo after-conflict"));
    // The relay waits out a 5 s conflict backoff first.
    wait_for("the completion after the conflict", secs(30.0), || {
        tg.sent_to(ALICE)
            .into_iter()
            .find(|s| s.text.starts_with("exec finished: "))
    });
    let polls = tg.calls("getUpdates");
    let conflict = polls
        .iter()
        .position(|c| c.status == 409)
        .expect("a 409 was answered");
    let next = &polls[conflict + 1];
    let gap = next.at.duration_since(polls[conflict].at);
    assert!(gap >= Duration::from_secs(4), "retried after only {gap:?}");
    assert!(
        relay.log().contains("409 Conflict"),
        "the conflict is reported clearly"
    );
}

#[test]
fn a_photo_sent_directly_gets_a_text_only_notice() {
    let (tg, rx) = (FakeTelegram::start(), Receiver::start());
    let relay = start(&tg, &rx, &["telegram:5"]);

    let mut photo = dm(ALICE, "");
    photo.as_object_mut().expect("an object").remove("text");
    photo["photo"] = serde_json::json!([{"file_id": "f1", "file_unique_id": "u1",
                                         "width": 90, "height": 90}]);
    tg.push(photo);
    let notice = wait_sent(&tg, ALICE, "the text-only notice", |s| {
        s.text.contains("text messages only")
    });
    assert_eq!(notice.thread_id, None);
    assert!(relay.jobs().is_empty());
}

/// The attack: someone gets an allowed user to forward them a message that holds a command
/// (or forwards one the user once sent elsewhere). A forward is someone else's words: it never
/// runs as the forwarder's command, and a direct chat is told why.
#[test]
fn a_forwarded_command_never_runs() {
    let (tg, rx) = (FakeTelegram::start(), Receiver::start());
    let relay = start(&tg, &rx, &[&format!("telegram:{ALICE}")]);
    let mut forwarded = dm(ALICE, "/exec touch forwarded-ran");
    forwarded["forward_origin"] = serde_json::json!({
        "type": "user",
        "date": 1_700_000_000,
        "sender_user": {"id": 666, "is_bot": false, "first_name": "Mallory"},
    });
    tg.push(forwarded);
    let refusal = wait_sent(&tg, ALICE, "the refusal", |s| s.text.contains("forwarded"));
    assert!(refusal.text.contains("not run"), "{:?}", refusal.text);
    // Commands are taken in order: once her own /help is answered, the forward was read.
    tg.push(dm(ALICE, "/help"));
    wait_sent(&tg, ALICE, "the /help answer", |s| s.text.contains("/tail"));
    assert!(relay.jobs().is_empty(), "{:?}", relay.jobs());
    assert!(!relay.path("forwarded-ran").exists());
}
