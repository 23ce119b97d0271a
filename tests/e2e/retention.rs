//! Retention: a finished job whose completion was delivered is forgotten `[exec] keep_jobs`
//! after it ended (its output directory and its ledger row); a running job, and one whose
//! completion is still owed, are kept.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

#[test]
fn finished_delivered_jobs_are_forgotten_after_keep_jobs_and_running_ones_kept() {
    let rx = Receiver::start();
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("exec", "keep_jobs", &toml_str("1s"))
        .start();
    let jobs_dir = relay.path("jobs");

    let running = relay.start_job(
        &rx,
        &dm(
            "dm-keep",
            "alice",
            "/exec sh -c 'i=0; while [ ! -e release ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; echo released'",
        ),
    );
    let done = relay.start_job(&rx, &dm("dm-keep", "alice", "/exec echo short-lived"));
    rx.wait_for_message("the short job's completion", SOON, |d| {
        carries_completion_of(&d.text, &done.id)
    });
    wait_for("the finished job to be forgotten", SOON, || {
        let listed = relay.jobs().iter().any(|j| json_id(&j["id"]) == done.id);
        (!listed && !jobs_dir.join(&done.id).exists()).then_some(())
    });
    assert!(
        relay.job(&running.id).is_some() && jobs_dir.join(&running.id).exists(),
        "a running job is never forgotten"
    );
    relay.say(&dm("dm-keep", "alice", &format!("/tail {}", done.id)));
    rx.wait_for_message("the answer to /tail of a forgotten job", SOON, |d| {
        d.text == format!("no job {} in this conversation", done.id)
    });

    std::fs::write(relay.path("release"), "").expect("write release");
    let finished = rx.wait_for_message("the running job's completion", SOON, |d| {
        carries_completion_of(&d.text, &running.id)
    });
    assert!(finished.text.contains("released"), "{finished:?}");
    wait_for(
        "the second job to be forgotten once delivered",
        SOON,
        || (relay.job(&running.id).is_none() && !jobs_dir.join(&running.id).exists()).then_some(()),
    );
}
