//! Issue 7, disk full: with the relay's files capped (`RLIMIT_FSIZE`, `SIGXFSZ` ignored, so
//! writes fail with `EFBIG` as on a full disk), new commands are refused with a clear message
//! and never run later, commands stored before the disk filled wait and then run once,
//! completions already owed are kept, and once space returns the relay carries on by itself.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fakes::receiver::{Delivery, Receiver};
use crate::harness::*;

/// Room for the schema, the log and a dozen large jobs; the write-ahead log outgrows it first.
const FILE_SIZE_LIMIT: u64 = 2 * 1024 * 1024;
const MAX_FILL_MESSAGES: usize = 400;
const MAX_WHILE_FULL_MESSAGES: usize = 20;
/// How long a stored message's answer may take before the next one is sent: with the disk
/// nearly full its acknowledgement may wait for space (its send cannot be recorded).
const ANSWER_WAIT: Duration = Duration::from_secs(3);

fn is_disk_full_refusal(text: &str) -> bool {
    text.starts_with("refused:") && text.contains("disk is full")
}

fn is_disk_full_delay(text: &str) -> bool {
    text.starts_with("not started yet:") && text.contains("disk is full")
}

/// The first answer in `conversation` (an ack or a disk-full notice) within `wait`, if any.
fn answer_in(rx: &Receiver, conversation: &str, wait: Duration) -> Option<Delivery> {
    let deadline = Instant::now() + wait;
    loop {
        let found = rx.messages().into_iter().find(|d| {
            d.conversation_id == conversation
                && (is_ack(d) || is_disk_full_refusal(&d.text) || is_disk_full_delay(&d.text))
        });
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// Posts large commands (`/exec echo <tag>-<i> #<padding>`, each in a conversation of its
/// own) until the relay refuses one for the full disk, at most `max`; returns how many it
/// stored and the refused one's number. With `check_answers`, each stored one's first answer
/// must not be a refusal.
fn post_until_refused(
    relay: &Relay,
    rx: &Receiver,
    tag: &str,
    max: usize,
    check_answers: bool,
) -> (usize, usize) {
    let padding = "x".repeat(1000);
    for i in 0..max {
        let conversation = format!("{tag}-{i}");
        let text = format!("/exec echo {tag}-{i} #{padding}");
        let (status, body) = relay.post_webhook(&dm(&conversation, "alice", &text));
        assert_eq!(
            status, 200,
            "a full disk is not an error to the platform: {body}"
        );
        if body["refused"] == json!(true) {
            let notice = answer_in(rx, &conversation, SOON)
                .unwrap_or_else(|| panic!("no notice in {conversation} for a refused command"));
            assert!(is_disk_full_refusal(&notice.text), "{notice:?}");
            return (i, i);
        }
        assert_eq!(body["ok"], json!(true), "{body}");
        if check_answers && let Some(answer) = answer_in(rx, &conversation, ANSWER_WAIT) {
            assert!(
                !is_disk_full_refusal(&answer.text),
                "stored, then refused: {answer:?}"
            );
        }
    }
    panic!("{max} large {tag} jobs stored under a {FILE_SIZE_LIMIT}-byte file limit, none refused");
}

#[test]
fn a_full_disk_refuses_new_jobs_keeps_owed_completions_and_recovers() {
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "max_concurrent", "1000")
        .file_size_limit(FILE_SIZE_LIMIT)
        .start();

    // Started before the disk fills; it ends (on the test's word, bounded at 30 s) while the
    // disk is full, so its completion is owed with no room to queue it.
    let early = relay.start_job(
        &rx,
        &dm(
            "dm-full",
            "alice",
            "/exec sh -c 'i=0; while [ ! -e end-now ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo kept-through-full; touch ended'",
        ),
    );

    // Fill the disk with large commands until the relay cannot even store one. Each one it
    // stored runs, now or once space returns.
    let (mut stored, refused_at) = post_until_refused(&relay, &rx, "fill", MAX_FILL_MESSAGES, true);
    eprintln!("disk full: the relay refused message {refused_at} ({stored} stored before it)");

    // While full, commands of the same size are refused too, and never run later. The limit
    // cuts the write-ahead log at a byte, not a message: a smaller write (a send recorded)
    // may still fit, and a message after it. Such a one is stored and must run like the rest.
    let (more, refused_while_full) =
        post_until_refused(&relay, &rx, "while-full", MAX_WHILE_FULL_MESSAGES, false);
    stored += more;

    fs::write(relay.path("end-now"), "").expect("write end-now");
    wait_for("the early job to end while the disk is full", SOON, || {
        relay.path("ended").exists().then_some(())
    });

    // Space returns; the relay recovers without a restart.
    relay.lift_file_size_limit();
    let after = relay.start_job(&rx, &dm("after", "alice", "/exec echo after-space"));
    rx.wait_for_message(
        "the completion of a job started after recovery",
        SOON,
        |d| carries_completion_of(&d.text, &after.id),
    );
    let early_done = rx.wait_for_message(
        "the completion owed since before the disk filled",
        SOON,
        |d| carries_completion_of(&d.text, &early.id),
    );
    assert!(
        early_done.text.contains("kept-through-full"),
        "{early_done:?}"
    );

    // Every stored command ran once (the early one, the fills, the one after), each with one
    // completion; the refused ones never ran.
    let acked = wait_for("an acknowledgement of every stored command", SOON, || {
        let acked: BTreeSet<String> = rx
            .messages()
            .iter()
            .filter_map(|d| ack_job_id(&d.text))
            .collect();
        (acked.len() >= stored + 2).then_some(acked)
    });
    assert_eq!(acked.len(), stored + 2, "one job per stored command");
    for id in &acked {
        rx.wait_for_message(&format!("the completion of job {id}"), SOON, |d| {
            carries_completion_of(&d.text, id)
        });
    }
    relay.wait_outbox_drained();
    for id in &acked {
        assert_eq!(
            rx.count(|d| carries_completion_of(&d.text, id)),
            1,
            "job {id}: one completion"
        );
    }
    let ran_refused = relay.jobs().iter().any(|job| {
        let command = job["command"].as_str().unwrap_or("");
        command.contains(&format!("echo while-full-{refused_while_full} #"))
            || command.contains(&format!("echo fill-{refused_at} #"))
    });
    assert!(!ran_refused, "a refused command ran");
}

/// The attack: one `/exec` prints far past `[exec] max_output`. Its log keeps only the most
/// recent output on disk, the tail is still its end, and the completion says how much was
/// written and dropped.
#[test]
fn output_past_max_output_keeps_the_most_recent_on_disk() {
    use std::os::unix::fs::MetadataExt;
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "max_output", &toml_str("1MiB"))
        .start();
    let (job, done) = relay.run_job(
        &rx,
        &dm(
            "dm-a",
            "alice",
            "/exec head -c 8000000 /dev/zero | tr '\\0' x; echo; echo THE-END",
        ),
    );
    assert!(
        done.text.contains("[7.6 MiB of output; the first ")
            && done
                .text
                .contains("were dropped to stay within exec.max_output]"),
        "{:?}",
        &done.text[..done.text.len().min(300)]
    );
    assert_eq!(output_lines(&done.text).last(), Some(&"THE-END"));
    let log = relay.path(&format!("jobs/{}/output.log", job.id));
    let on_disk = std::fs::metadata(&log).unwrap().blocks() * 512;
    assert!(
        on_disk <= (1 << 20) + (64 << 10),
        "the log takes {on_disk} bytes on disk"
    );
}

/// New jobs wait for room: while the data directory's filesystem has less than
/// `[store] min_free` free, `/exec` is refused saying so, before anything runs.
#[test]
fn exec_is_refused_while_the_disk_is_below_min_free() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("store", "min_free", &toml_str("1000TiB"))
        .start();
    relay.say(&dm("dm-a", "alice", "/exec touch ran-anyway"));
    let refusal = rx.wait_for_message("the refusal", SOON, |d| d.text.starts_with("not started"));
    assert!(
        refusal.text.contains("store.min_free"),
        "{:?}",
        refusal.text
    );
    assert!(relay.jobs().is_empty());
    assert!(!relay.path("ran-anyway").exists());
}

/// The attack on the cap: the job holds its log too, and truncates it to a huge sparse size
/// and back before writing, so that "size minus what was dropped" says nothing. What the disk
/// holds is what counts: the log stays within `max_output` on disk all the same.
#[test]
fn a_job_cannot_trick_the_output_cap_by_truncating_its_log() {
    capped_whole(
        "/exec perl -e 'truncate(STDOUT, 8 * 1024 ** 3); select(undef, undef, undef, 0.3); truncate(STDOUT, 0); print q(x) x (30 * 1024 * 1024); print qq(\\nTHE-END\\n)'",
    );
}

/// The other trick: the job allocates blocks past its log's end (`fallocate --keep-size`),
/// which no size shows. They are freed all the same, and the output written after them is
/// kept whole (the cap frees past the end only when something is allocated there).
#[test]
fn blocks_a_job_allocates_past_its_logs_end_are_freed() {
    capped_whole(
        "/exec sh -c 'fallocate --keep-size --length 64MiB /dev/stdout && echo allocated; perl -e \"print q(y) x (3 * 1024 * 1024)\"; echo; echo THE-END'",
    );
}

/// Runs `trick` under a 1 MiB `max_output`: its completion ends with its last line,
/// `THE-END`, and its log takes no more than the cap on disk.
fn capped_whole(trick: &str) {
    use std::os::unix::fs::MetadataExt;
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "max_output", &toml_str("1MiB"))
        .start();
    let (job, done) = relay.run_job(&rx, &dm("dm-a", "alice", trick));
    assert_eq!(
        output_lines(&done.text).last(),
        Some(&"THE-END"),
        "{:?}",
        &done.text[..200.min(done.text.len())]
    );
    let log = relay.path(&format!("jobs/{}/output.log", job.id));
    let on_disk = std::fs::metadata(&log).unwrap().blocks() * 512;
    assert!(
        on_disk <= (1 << 20) + (64 << 10),
        "the log takes {on_disk} bytes on disk"
    );
}
