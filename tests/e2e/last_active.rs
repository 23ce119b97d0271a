//! Acceptance 2: a completion goes to the conversation where its session was last active; a
//! group's job stays in the group.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

/// Panics unless job `id` is still running: the scenario is only meaningful if the user moved
/// before the job exited.
fn assert_still_running(relay: &Relay, id: &str) {
    let job = relay
        .job(id)
        .unwrap_or_else(|| panic!("job {id} missing from GET /v1/jobs"));
    let state = job["state"].as_str().unwrap_or("");
    assert!(
        state == "running" || state == "starting",
        "precondition: job {id} should still be running when the user moves on, but is {job}"
    );
}

fn route_of(relay: &Relay, session: &str) -> Option<serde_json::Value> {
    relay.routes().into_iter().find(|r| r["session"] == session)
}

#[test]
fn direct_job_reports_to_the_dm_where_the_user_last_spoke() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);

    let job = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go", "moved")));
    relay.say(&dm("dm-b", "alice", "/status"));
    wait_for("alice's last route to become dm-b", SOON, || {
        route_of(&relay, "user:webhook:alice").filter(|r| r["chat_id"] == "dm-b")
    });
    assert_still_running(&relay, &job.id);
    relay.open_gate("go");

    let done = rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert_eq!(
        done.conversation_id, "dm-b",
        "completion should follow alice to dm-b: {done:?}"
    );
    assert!(
        output_lines(&done.text).contains(&"moved"),
        "{:?}",
        done.text
    );
    relay.wait_outbox_drained();
    assert_eq!(
        rx.count(|d| d.conversation_id == "dm-a" && is_completion(d)),
        0,
        "nothing in dm-a"
    );
    assert_eq!(rx.count(is_completion), 1);
}

#[test]
fn group_job_reports_to_the_group_even_after_the_user_speaks_in_a_dm() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);

    let job = relay.start_job(
        &rx,
        &group_msg("grp-1", "alice", &gated_exec("go", "grouped")),
    );
    let route = wait_for("the group's route", SOON, || {
        route_of(&relay, "chat:webhook:grp-1")
    });
    assert_eq!(route["chat_type"], "group", "{route}");
    relay.say(&dm("dm-c", "alice", "/status"));
    wait_for("alice's DM route to become dm-c", SOON, || {
        route_of(&relay, "user:webhook:alice").filter(|r| r["chat_id"] == "dm-c")
    });
    assert_still_running(&relay, &job.id);
    relay.open_gate("go");

    let done = rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert_eq!(
        done.conversation_id, "grp-1",
        "a group's job must stay in the group: {done:?}"
    );
    assert!(
        output_lines(&done.text).contains(&"grouped"),
        "{:?}",
        done.text
    );
    relay.wait_outbox_drained();
    assert_eq!(
        rx.count(|d| d.conversation_id == "dm-c" && is_completion(d)),
        0,
        "nothing in the DM"
    );
    assert_eq!(rx.count(is_completion), 1);
}

/// Webhook senders may post concurrently; `sent_at_ms` says which message is newer.
#[test]
fn a_message_sent_earlier_but_posted_later_leaves_the_route_where_it_is() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let now_ms = unix_now_ms();
    let sent_at = |mut msg: serde_json::Value, at: i64| {
        msg["sent_at_ms"] = serde_json::json!(at);
        msg
    };

    relay.say(&sent_at(dm("dm-new", "alice", "/status"), now_ms));
    relay.say(&sent_at(dm("dm-old", "alice", "/status"), now_ms - 1000));
    rx.wait_for_message("the late message's answer", SOON, |d| {
        d.conversation_id == "dm-old"
    });
    let route = route_of(&relay, "user:webhook:alice").expect("alice's route");
    assert_eq!(
        route["chat_id"], "dm-new",
        "a message sent earlier moved the route: {route}"
    );

    relay.say(&sent_at(dm("dm-old", "alice", "/status"), now_ms + 1000));
    wait_for("the route to follow a newer message", SOON, || {
        route_of(&relay, "user:webhook:alice").filter(|r| r["chat_id"] == "dm-old")
    });
}
