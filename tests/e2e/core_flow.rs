//! Acceptance 1: from a chat message to the completion in the same conversation.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

#[test]
fn exec_is_acknowledged_then_its_completion_reaches_the_same_conversation() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);

    let job = relay.start_job(
        &rx,
        &dm("dm-alice", "alice", "/exec sh -c 'sleep 0.3; echo hi'"),
    );
    assert!(
        job.ack
            .text
            .starts_with(&format!("started job {}: ", job.id)),
        "ack: {:?}",
        job.ack.text
    );
    assert!(
        job.ack.text.contains("sh -c 'sleep 0.3; echo hi'"),
        "ack names the command: {:?}",
        job.ack.text
    );
    assert_eq!(job.ack.conversation_id, "dm-alice");

    let done = rx.wait_for_message("the completion of the job", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert_eq!(
        done.conversation_id, "dm-alice",
        "completion went elsewhere: {done:?}"
    );
    let first = done.text.lines().next().unwrap();
    assert!(first.contains("exit 0"), "first line: {first:?}");
    assert!(
        output_lines(&done.text).contains(&"hi"),
        "output `hi` missing: {:?}",
        done.text
    );
    assert!(done.at > job.ack.at, "completion arrived before the ack");
    assert_ne!(
        done.idempotency_key, job.ack.idempotency_key,
        "ack and completion share a key"
    );

    relay.wait_outbox_drained();
    assert_eq!(rx.count(is_completion), 1, "exactly one completion");
    assert_eq!(
        rx.rejected_count(),
        0,
        "every callback must carry a valid signature"
    );
}

/// One output line longer than the tail's window (`seq | tr '\n' ' '`, a progress bar, minified
/// JSON): the completion and `/tail` show that line's end, not nothing.
#[test]
fn a_long_last_line_is_shown_by_its_end() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let job = relay.start_job(
        &rx,
        &dm("dm-a", "alice", "/exec seq 1 100000 | tr '\\n' ' '"),
    );
    let done = rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert!(
        done.text.trim_end().ends_with("99999 100000"),
        "the completion lost the line's end: {:?}",
        done.text
    );
    relay.say(&dm("dm-a", "alice", &format!("/tail {}", job.id)));
    // The answer may come in several chunks: its last one ends with the line's end.
    rx.wait_for_message("the end of the /tail answer", SOON, |d| {
        !is_completion(d) && d.text.trim_end().ends_with("99999 100000")
    });
}
