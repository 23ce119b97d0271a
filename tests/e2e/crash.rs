//! Acceptance 4: SIGKILL never loses a completion, and a restart does not duplicate one.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

#[test]
fn pending_completion_survives_sigkill_and_is_delivered_exactly_once() {
    let rx = Receiver::start();
    let mut relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        // Long enough that no retry is on the wire when the relay is killed: one would reach
        // the recovered receiver unrecorded and be resent, a duplicate this test does not want.
        .set("outbox", "backoff_base", &toml_str("3s"))
        .set("outbox", "backoff_cap", &toml_str("3s"))
        .start();

    let job = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go", "crash-once")));
    rx.set_unavailable(true);
    relay.open_gate("go");
    // The outbox counts an attempt when it claims the chunk, before the request arrives, so the
    // receiver's own record is what proves a send was refused.
    wait_for("the receiver to answer the completion 503", SOON, || {
        rx.attempts()
            .into_iter()
            .find(|d| d.status == 503 && is_completion_of(&d.text, &job.id))
    });
    let pending = wait_for(
        "the completion pending in GET /v1/outbox with attempts >= 1",
        SOON,
        || {
            relay.deliveries().into_iter().find(|d| {
                d["state"] == "pending"
                    && d["attempts"].as_u64().unwrap_or(0) >= 1
                    && is_completion_of(d["text"].as_str().unwrap_or(""), &job.id)
            })
        },
    );
    assert_eq!(pending["channel"], "webhook", "{pending}");
    assert_eq!(pending["chat_id"], "dm-a", "{pending}");
    assert_eq!(
        rx.count(|d| is_completion_of(&d.text, &job.id)),
        0,
        "precondition: not delivered yet"
    );

    relay.kill9();
    rx.set_unavailable(false);
    relay.restart();

    let done = rx.wait_for_message("the completion after the restart", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert_eq!(done.conversation_id, "dm-a");
    assert!(
        output_lines(&done.text).contains(&"crash-once"),
        "{:?}",
        done.text
    );
    relay.wait_outbox_drained();
    assert_eq!(
        rx.count(|d| is_completion_of(&d.text, &job.id)),
        1,
        "exactly one completion"
    );
}

#[test]
fn job_running_across_sigkill_is_still_reported() {
    let rx = Receiver::start();
    let mut relay = Relay::start(&rx, &["webhook:alice"]);
    let marker = relay.path("survived.done");
    // The job says when it runs, then waits for the test's `go`: the relay dies mid-job.
    let cmd = "sh -c 'touch started; for i in $(seq 1 400); do [ -f go ] && break; sleep 0.05; done; echo survived; touch survived.done'";

    let job = relay.start_job(&rx, &dm("dm-a", "alice", &format!("/exec {cmd}")));
    wait_for("the job to start", SOON, || {
        relay.path("started").exists().then_some(())
    });
    relay.kill9();
    relay.restart();
    relay.open_gate("go");

    // Its supervisor outlived the relay and recorded the exit, so the outcome is known.
    let done = rx.wait_for_message(
        "the completion of the job that outlived the relay",
        SOON,
        |d| is_completion_of(&d.text, &job.id),
    );
    assert_eq!(done.conversation_id, "dm-a");
    let first = done.text.lines().next().unwrap_or("");
    assert!(
        first.contains("exit 0") && output_lines(&done.text).contains(&"survived"),
        "expected `exit 0` and `survived`: {:?}",
        done.text
    );

    // The job's process group outlives the relay; once it has finished, no second report follows.
    wait_for("the job's process to finish (marker file)", SOON, || {
        marker.exists().then_some(())
    });
    wait_for(
        "the job to reach a final state in GET /v1/jobs",
        SOON,
        || {
            relay
                .job(&job.id)
                .filter(|j| j["state"] != "running" && j["state"] != "starting")
        },
    );
    relay.wait_outbox_drained();
    rx.assert_none_for("second completion", secs(0.5), |d| {
        is_completion_of(&d.text, &job.id) && d.idempotency_key != done.idempotency_key
    });
    assert_eq!(
        rx.count(|d| is_completion_of(&d.text, &job.id)),
        1,
        "exactly one completion"
    );
}

#[test]
fn a_supervisor_still_starting_when_the_relay_dies_is_followed_not_lost() {
    let rx = Receiver::start();
    // Every supervisor pauses half a second before writing its pid file.
    let mut relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .env("EXECRELAY_FAILPOINT", "supervisor-slow-start")
        .start();
    let job = relay.start_job(&rx, &dm("dm-a", "alice", &gated_exec("go", "followed")));
    wait_for("the job's supervisor to be started", SOON, || {
        (relay.job(&job.id)?["state"] == "running").then_some(())
    });
    let pid_file = relay.path(&format!("jobs/{}/supervisor.pid", job.id));
    let still_starting = !pid_file.exists();
    relay.kill9();
    relay.restart();
    eprintln!("restarted while the supervisor was still starting: {still_starting}");
    relay.open_gate("go");

    let done = rx.wait_for_message("the job's completion after the restart", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    assert!(
        done.text.lines().next().unwrap_or("").contains("exit 0")
            && output_lines(&done.text).contains(&"followed"),
        "the restarted relay must follow the supervisor, not call the job lost: {:?}",
        done.text
    );
}
