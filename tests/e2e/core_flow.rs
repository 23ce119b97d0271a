//! Acceptance 1: from a chat message to the completion in the same conversation (for every
//! platform: `conformance.rs`), and what the completion shows.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

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
