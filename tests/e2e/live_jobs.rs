//! Live jobs in chat (issue 16), on every platform alike: a running job's acknowledgement is
//! edited with its progress, paced, and a last time with its outcome; the completion is still a
//! message of its own; [Kill], [Tail] and [Rerun] act for the job's people only, once per press.
//!
//! The pacing is set low (`every = 2s`, `per_chat = 1s`, `after = 1s`) so that a job of a few
//! seconds shows it; the generic webhook's receiver opts in to edits.

use std::time::{Duration, Instant};

use execrelay_fakes::Person::{Alice, Bob};
use execrelay_fakes::{Chat, EditAttempt, Failure, Posted, PressRef};

use crate::conformance::{
    Fake, World, conformance, discord, feishu, for_platform, telegram, webhook,
};
use crate::harness::*;

conformance!(
    a_running_job_s_acknowledgement_shows_its_progress_then_its_outcome,
    a_rate_limited_edit_pauses_that_chat_s_edits_and_never_the_completion,
    kill_by_its_owner_kills_and_a_stranger_s_press_kills_nothing,
    rerun_runs_the_same_command_once_after_a_confirming_press,
    a_restart_mid_job_resumes_its_progress,
);

const EVERY: Duration = Duration::from_secs(2);
const PER_CHAT: Duration = Duration::from_secs(1);
/// Time the relay may take to notice a job's end and its pacing to allow an edit.
const LATE: Duration = Duration::from_millis(1500);

/// A relay for Alice, with progress paced for tests.
fn live_world(fake: Fake) -> World {
    World::start(fake, |builder, p| {
        builder
            .allow(&[p.identity(Alice).as_str()])
            .set("progress", "every", &toml_str("2s"))
            .set("progress", "per_chat", &toml_str("1s"))
            .set("progress", "after", &toml_str("1s"))
            .set("channels.webhook", "progress", "true")
    })
}

/// A job that prints a numbered line every 50 ms until the file `gate` exists (at most 20 s).
fn ticking_job(gate: &str) -> String {
    format!(
        "/exec sh -c 'i=0; while [ ! -f {gate} ] && [ $i -lt 400 ]; do i=$((i+1)); echo tick-$i; sleep 0.05; done; echo ticked-out'"
    )
}

fn labels(posted: &Posted) -> Vec<&str> {
    posted
        .buttons
        .iter()
        .map(|(label, _)| label.as_str())
        .collect()
}

fn button(posted: &Posted, label: &str) -> String {
    posted
        .buttons
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, id)| id.clone())
        .unwrap_or_else(|| panic!("no [{label}] under {posted:?}"))
}

/// The message in `chat` whose first text satisfies `pred`, as it shows now.
#[track_caller]
fn wait_posted(w: &World, chat: &Chat, what: &str, pred: impl Fn(&Posted) -> bool) -> Posted {
    wait_for(what, SOON, || {
        w.p().posted(chat).into_iter().find(|m| pred(m))
    })
}

fn ack_of(w: &World, chat: &Chat, id: &str) -> Posted {
    wait_posted(w, chat, "the acknowledgement", |m| {
        m.sent_text.starts_with(&format!("started job {id}: "))
    })
}

fn accepted_edits(w: &World, chat: &Chat, message_id: &str) -> Vec<EditAttempt> {
    let edits = w.p().edit_attempts(chat).into_iter();
    edits
        .filter(|e| e.message_id == message_id && e.status == 200)
        .collect()
}

#[track_caller]
fn wait_edits(w: &World, chat: &Chat, message_id: &str, n: usize, within: Duration) {
    wait_for(&format!("{n} accepted edits"), within, || {
        (accepted_edits(w, chat, message_id).len() >= n).then_some(())
    });
}

#[track_caller]
fn wait_answer(w: &World, press: &PressRef, n: usize) -> String {
    let answers = w.p().answers(press, SOON);
    assert!(answers.len() >= n, "{n} answers to {press:?}: {answers:?}");
    answers[n - 1].clone()
}

/// A 10 s job: its acknowledgement carries [Tail] [Kill] and is edited at least three times
/// with its running time and last lines, never more often than the pacing, then a last time
/// with its outcome and no buttons; the completion is a new message with [Tail] [Rerun].
fn a_running_job_s_acknowledgement_shows_its_progress_then_its_outcome(fake: Fake) {
    let w = live_world(fake);
    let chat = w.p().direct(Alice);
    let id = w.start_job(&chat, &ticking_job("stop"));
    let ack = ack_of(&w, &chat, &id);
    assert_eq!(labels(&ack), ["Tail", "Kill"], "{ack:?}");
    wait_edits(&w, &chat, &ack.message_id, 3, secs(20.0));
    w.relay.open_gate("stop");
    let done = w.wait_completion(&chat, &id);
    assert!(done.contains("exit 0"), "{done:?}");
    let last = wait_posted(&w, &chat, "the last edit", |m| {
        m.message_id == ack.message_id && m.text.starts_with("exit 0 after ")
    });
    assert!(
        last.buttons.is_empty(),
        "the buttons stay after the end: {last:?}"
    );
    assert!(last.text.contains(&format!("job {id}")), "{last:?}");

    let edits = accepted_edits(&w, &chat, &ack.message_id);
    let (running, end) = edits.split_at(edits.len() - 1);
    assert!(running.len() >= 3, "{edits:?}");
    for edit in running {
        assert!(
            edit.text.starts_with("running ") && edit.text.contains(&format!("job {id}")),
            "{edit:?}"
        );
        assert!(edit.text.contains("tick-"), "the output shows: {edit:?}");
        assert_eq!(
            edit.buttons
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>(),
            ["Tail", "Kill"]
        );
    }
    assert!(end[0].buttons.is_empty());
    for pair in running.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= EVERY - secs(0.1), "edits {gap:?} apart: {edits:?}");
    }
    let gap = end[0].at.duration_since(running[running.len() - 1].at);
    assert!(
        gap >= PER_CHAT - secs(0.1),
        "the last edit {gap:?} after one"
    );

    // The completion is a message of its own, after the acknowledgement; nothing else.
    w.relay.wait_outbox_drained();
    let posted = w.p().posted(&chat);
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert_eq!(posted[1].sent_text, done);
    assert_eq!(labels(&posted[1]), ["Tail", "Rerun"], "{:?}", posted[1]);
}

/// A 429 on an edit: that chat's edits wait the whole `retry_after`, and the completion of a
/// job that ends meanwhile is not held back by it.
fn a_rate_limited_edit_pauses_that_chat_s_edits_and_never_the_completion(fake: Fake) {
    let w = live_world(fake);
    let chat = w.p().direct(Alice);
    let id = w.start_job(&chat, &ticking_job("stop"));
    let ack = ack_of(&w, &chat, &id);
    wait_edits(&w, &chat, &ack.message_id, 1, secs(10.0));
    w.p().fail_next_edits(
        1,
        Failure::RateLimited {
            retry_after_secs: 4,
        },
    );
    let limited = wait_for("an edit answered 429", secs(10.0), || {
        w.p()
            .edit_attempts(&chat)
            .into_iter()
            .find(|e| e.status == 429)
    });
    w.relay.open_gate("stop");
    let done_at = {
        w.wait_completion(&chat, &id);
        Instant::now()
    };
    assert!(
        done_at.duration_since(limited.at) < secs(3.5),
        "the completion waited for the edits' pause: {:?}",
        done_at.duration_since(limited.at)
    );
    wait_posted(&w, &chat, "the last edit", |m| {
        m.message_id == ack.message_id && m.text.starts_with("exit 0 after ")
    });
    let after: Vec<EditAttempt> = w
        .p()
        .edit_attempts(&chat)
        .into_iter()
        .filter(|e| e.at > limited.at)
        .collect();
    assert!(!after.is_empty());
    for edit in &after {
        assert!(
            edit.at.duration_since(limited.at) >= secs(3.9),
            "an edit {:?} into a 4 s pause: {after:?}",
            edit.at.duration_since(limited.at)
        );
    }
}

/// In a group: a stranger's [Kill] is refused, to them alone, and kills nothing; the owner's
/// kills once; the same press delivered again does nothing more.
fn kill_by_its_owner_kills_and_a_stranger_s_press_kills_nothing(fake: Fake) {
    let w = live_world(fake);
    let p = w.p();
    let group = p.group();
    let id = w.start_job(&group, &ticking_job("never"));
    let ack = ack_of(&w, &group, &id);
    let kill = button(&ack, "Kill");
    let sent_before = p.sent_to(&group).len();

    let strangers = p.press(w.relay.addr, &group, Bob, &ack.message_id, &kill);
    let refusal = wait_answer(&w, &strangers, 1);
    assert!(refusal.contains("not authorized"), "{refusal:?}");
    let job = &w.relay.jobs()[0];
    assert_eq!(job["state"], "running", "{job}");
    assert_eq!(
        p.sent_to(&group).len(),
        sent_before,
        "the refusal went to the group"
    );

    let owners = p.press(w.relay.addr, &group, Alice, &ack.message_id, &kill);
    assert_eq!(wait_answer(&w, &owners, 1), format!("stopping job {id}"));
    let done = w.wait_completion(&group, &id);
    assert!(!done.contains("exit 0"), "{done:?}");
    p.press_again(w.relay.addr, &owners);
    let again = wait_answer(&w, &owners, 2);
    assert!(
        again.starts_with("already pressed") || again.ends_with("has already finished (killed)"),
        "{again:?}"
    );
    w.relay.wait_outbox_drained();
    let stopping = p
        .sent_to(&group)
        .into_iter()
        .filter(|t| t.starts_with(&format!("stopping job {id}")))
        .count();
    assert_eq!(stopping, 1, "the kill ran once: {:?}", p.sent_to(&group));
    assert_eq!(w.relay.jobs().len(), 1);
}

/// [Rerun] under a completion asks for a second press, then runs the same command line as a
/// new job, acknowledged like any `/exec`; that press delivered again runs nothing more. A
/// job that ends within `after` is never edited.
fn rerun_runs_the_same_command_once_after_a_confirming_press(fake: Fake) {
    let w = live_world(fake);
    let p = w.p();
    let chat = p.direct(Alice);
    let id = w.start_job(&chat, "/exec echo rerun-me");
    w.wait_completion(&chat, &id);
    let completion = wait_posted(&w, &chat, "the completion", |m| {
        is_completion_of(&m.sent_text, &id)
    });
    let rerun = button(&completion, "Rerun");

    let first = p.press(w.relay.addr, &chat, Alice, &completion.message_id, &rerun);
    let ask = wait_answer(&w, &first, 1);
    assert!(ask.starts_with("press Rerun again within 30s"), "{ask:?}");
    assert_eq!(w.relay.jobs().len(), 1, "one press ran it");

    // A person reads the question before pressing again: sooner is a double click.
    std::thread::sleep(secs(1.0));
    let second = p.press(w.relay.addr, &chat, Alice, &completion.message_id, &rerun);
    assert_eq!(wait_answer(&w, &second, 1), "running `echo rerun-me` again");
    let jobs = wait_for("the rerun", SOON, || {
        let jobs = w.relay.jobs();
        (jobs.len() == 2).then_some(jobs)
    });
    let new_id = jobs
        .iter()
        .map(|j| j["id"].as_str().unwrap_or_default().to_string())
        .find(|j| *j != id)
        .expect("the new job");
    assert!(
        jobs.iter().all(|j| j["command"] == "echo rerun-me"),
        "{jobs:?}"
    );
    let new_ack = ack_of(&w, &chat, &new_id);
    assert_eq!(labels(&new_ack), ["Tail", "Kill"]);
    w.wait_completion(&chat, &new_id);

    p.press_again(w.relay.addr, &second);
    let again = wait_answer(&w, &second, 2);
    assert!(again.starts_with("already pressed"), "{again:?}");
    w.relay.wait_outbox_drained();
    assert_eq!(w.relay.jobs().len(), 2, "the replayed press ran it again");
    assert!(
        p.edit_attempts(&chat).is_empty(),
        "short jobs are never edited: {:?}",
        p.edit_attempts(&chat)
    );
}

/// The relay is killed while a job runs and its acknowledgement is being edited: once back,
/// the edits go on where they were, and the last one comes.
fn a_restart_mid_job_resumes_its_progress(fake: Fake) {
    let mut w = live_world(fake);
    let chat = w.p().direct(Alice);
    let id = w.start_job(&chat, &ticking_job("stop"));
    let ack = ack_of(&w, &chat, &id);
    wait_edits(&w, &chat, &ack.message_id, 1, secs(10.0));
    w.relay.restart();
    w.p().wait_listening(SOON);
    let restarted = Instant::now();
    wait_for("an edit after the restart", secs(15.0), || {
        accepted_edits(&w, &chat, &ack.message_id)
            .into_iter()
            .find(|e| e.at > restarted && e.text.starts_with("running "))
    });
    w.relay.open_gate("stop");
    w.wait_completion(&chat, &id);
    wait_for("the last edit", SOON + LATE, || {
        w.p()
            .posted(&chat)
            .into_iter()
            .find(|m| m.message_id == ack.message_id && m.text.starts_with("exit 0 after "))
    });
}
