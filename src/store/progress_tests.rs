//! The store's part in live jobs: which acknowledgements may be edited, and buttons kept with
//! their message through a send and a dead letter's revival.

use execrelay_channel::Button;

use super::fixtures::*;
use super::*;

const SESSION: &str = "user:webhook:alice";

/// A job started at `started_at` whose acknowledgement (with buttons) went out as `m-ack`.
async fn job_with_delivered_ack(store: &Store, id: &str, started_at: Millis) {
    stored_job(store, id, SESSION).await;
    store.mark_job_running(id, 1, started_at).await.unwrap();
    let ack = NewOutbox {
        kind: "ack",
        job_id: Some(id.into()),
        buttons: vec![Button {
            id: format!("k:{id}"),
            label: "Kill".into(),
        }],
        ..reply("a", &["started job"])
    };
    store.enqueue_outbox(vec![ack]).await.unwrap();
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].buttons.len(),
        1,
        "the last chunk carries the buttons"
    );
    let sent = ChunkOutcome::Delivered {
        platform_id: Some("m-ack".into()),
    };
    store
        .record_outcome(claimed[0].outbox_id, claimed[0].index, sent)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_delivered_acknowledgement_is_edited_until_its_job_is_done() {
    let (_dir, store) = open();
    job_with_delivered_ack(&store, "0a0b0c", 1_000).await;

    assert!(
        store.progress_targets(1_000).await.unwrap().is_empty(),
        "a job that started at the cut-off is too young"
    );
    let targets = store.progress_targets(1_001).await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].job.id, "0a0b0c");
    assert_eq!(targets[0].message_id, "m-ack");
    assert_eq!(targets[0].route.chat_id, "a");
    assert!(!targets[0].chat_busy);

    // A message waiting for the same chat goes first.
    store
        .enqueue_outbox(vec![reply("a", &["exec finished"])])
        .await
        .unwrap();
    assert!(store.progress_targets(1_001).await.unwrap()[0].chat_busy);

    // An ended job stays a target (for its last edit) until that is done.
    assert!(
        store
            .finish_job("0a0b0c", exit_ok(), None, 10)
            .await
            .unwrap()
    );
    assert_eq!(store.progress_targets(1_001).await.unwrap().len(), 1);
    store.finish_progress("0a0b0c").await.unwrap();
    assert!(store.progress_targets(1_001).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_message_without_buttons_or_not_yet_delivered_is_not_edited() {
    let (_dir, store) = open();
    stored_job(&store, "0a0b0c", SESSION).await;
    store.mark_job_running("0a0b0c", 1, 1_000).await.unwrap();
    let plain = NewOutbox {
        kind: "ack",
        job_id: Some("0a0b0c".into()),
        ..reply("a", &["started job"])
    };
    store.enqueue_outbox(vec![plain]).await.unwrap();
    assert!(store.progress_targets(5_000).await.unwrap().is_empty());
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert!(claimed[0].buttons.is_empty());
    mark_sent(&store, &claimed[0]).await;
    assert!(
        store.progress_targets(5_000).await.unwrap().is_empty(),
        "sent without buttons: not editable"
    );
}

#[tokio::test]
async fn buttons_sit_under_the_last_chunk_and_survive_a_revival() {
    let (_dir, store) = open();
    let buttons = vec![Button {
        id: "r:0a0b0c".into(),
        label: "Rerun".into(),
    }];
    let message = NewOutbox {
        job_id: Some("0a0b0c".into()),
        buttons: buttons.clone(),
        ..reply("a", &["one", "two"])
    };
    store.enqueue_outbox(vec![message]).await.unwrap();
    let first = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].buttons.is_empty(), "not under the first chunk");
    mark_sent(&store, &first[0]).await;
    let second = store.claim_due("webhook", 10, 60_000).await.unwrap();
    let dead = ChunkOutcome::Permanent {
        error: "refused".into(),
    };
    store
        .record_outcome(second[0].outbox_id, second[0].index, dead)
        .await
        .unwrap();
    let revived = store.retry_dead(second[0].outbox_id).await.unwrap();
    let again = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(again[0].outbox_id, revived.id);
    assert_eq!(again[0].buttons, buttons);
}

#[tokio::test]
async fn jobs_that_ended_long_ago_leave_the_lane_and_running_ones_stay() {
    let (_dir, store) = open();
    job_with_delivered_ack(&store, "0a0b0c", 1).await;
    job_with_delivered_ack(&store, "0d0e0f", 1).await;
    // exit_ok ends it at 2.
    assert!(
        store
            .finish_job("0a0b0c", exit_ok(), None, 10)
            .await
            .unwrap()
    );
    assert_eq!(
        store.settle_stale_progress(2).await.unwrap(),
        0,
        "not before it ended"
    );
    assert_eq!(store.settle_stale_progress(3).await.unwrap(), 1);
    let left: Vec<String> = store
        .progress_targets(10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.job.id)
        .collect();
    assert_eq!(left, ["0d0e0f"]);
}
