//! Issue 7, disk full: with the relay's files capped (`RLIMIT_FSIZE`, `SIGXFSZ` ignored, so
//! writes fail with `EFBIG` as on a full disk), new jobs are refused with a clear message,
//! completions already owed are kept, and once space returns the relay carries on by itself.

use std::collections::BTreeSet;
use std::fs;

use crate::fakes::receiver::Receiver;
use crate::harness::*;

/// Room for the schema, the log and a few dozen jobs; the write-ahead log outgrows it first.
const FILE_SIZE_LIMIT: u64 = 2 * 1024 * 1024;
const MAX_FILL_MESSAGES: usize = 400;

fn is_disk_full_refusal(text: &str) -> bool {
    text.starts_with("refused:") && text.contains("disk is full")
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

    // Fill the disk with jobs whose commands are large, until one is refused.
    let padding = "x".repeat(1000);
    let mut refusal = None;
    for i in 0..MAX_FILL_MESSAGES {
        let conversation = format!("fill-{i}");
        let text = format!("/exec true #fill-{i} {padding}");
        let (status, body) = relay.post_webhook(&dm(&conversation, "alice", &text));
        assert!(
            status == 200 || status == 507,
            "POST answered {status} {body}: a full disk is neither a crash nor a bad request"
        );
        let answer = rx.wait_for_message(&format!("an answer in {conversation}"), SOON, |d| {
            d.conversation_id == conversation && (is_ack(d) || is_disk_full_refusal(&d.text))
        });
        if status == 507 || is_disk_full_refusal(&answer.text) {
            assert!(
                is_disk_full_refusal(&answer.text),
                "the refusal must say why: {answer:?} (POST answered {status} {body})"
            );
            refusal = Some(i);
            break;
        }
        assert!(is_ack(&answer), "{answer:?}");
    }
    let Some(filled_after) = refusal else {
        panic!("{MAX_FILL_MESSAGES} large jobs fit under a {FILE_SIZE_LIMIT}-byte file limit");
    };
    eprintln!("the disk filled after {filled_after} messages");

    // While full: another job is refused too (not run later behind the user's back).
    let (status, body) = relay.post_webhook(&dm("while-full", "alice", "/exec echo never-ran"));
    let answer = rx.wait_for_message("the answer while full", SOON, |d| {
        d.conversation_id == "while-full" && (is_ack(d) || is_disk_full_refusal(&d.text))
    });
    assert!(
        is_disk_full_refusal(&answer.text),
        "{answer:?} (POST answered {status} {body})"
    );

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

    // Every acknowledged job's completion arrives, once; the refused one never ran.
    let acked: BTreeSet<String> = rx
        .messages()
        .iter()
        .filter_map(|d| ack_job_id(&d.text))
        .collect();
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
    assert!(
        !rx.messages()
            .iter()
            .any(|d| is_completion(d) && d.text.contains("never-ran")),
        "a refused job must not run"
    );
    assert_eq!(
        acked.len(),
        filled_after + 2,
        "acks: the early job, the fill jobs, the one after"
    );
}
