//! The store's operator tests: retrying dead letters, dropping messages and events, and what a
//! late outcome may no longer change.

use super::fixtures::*;
use super::*;

/// Sends `chat`'s head chunk (the only chat with one due) and records `outcome` for it.
async fn settle_head(store: &Store, chat: &str, outcome: ChunkOutcome) -> ClaimedChunk {
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    let chunk = claimed
        .into_iter()
        .find(|c| c.route.chat_id == chat)
        .unwrap_or_else(|| panic!("nothing due in {chat}"));
    store
        .record_outcome(chunk.outbox_id, chunk.index, outcome)
        .await
        .unwrap();
    chunk
}

fn dead(error: &str) -> ChunkOutcome {
    ChunkOutcome::Permanent {
        error: error.into(),
    }
}

#[tokio::test]
async fn a_retried_dead_letter_goes_behind_its_chat_with_fresh_attempts_and_its_key() {
    let (_dir, store) = open();
    store
        .enqueue_outbox(vec![reply("a", &["d1", "d2"])])
        .await
        .unwrap();
    let first = settle_head(&store, "a", ChunkOutcome::Delivered { platform_id: None }).await;
    settle_head(&store, "a", dead("HTTP 410")).await;
    // Behind it, a message whose first chunk is out: the revived one must not cut in.
    store
        .enqueue_outbox(vec![reply("a", &["n1", "n2"])])
        .await
        .unwrap();
    settle_head(&store, "a", ChunkOutcome::Delivered { platform_id: None }).await;

    let revived = store.retry_dead(first.outbox_id).await.unwrap();
    assert_eq!(revived.was, first.outbox_id);
    assert!(revived.id > first.outbox_id + 1, "{revived:?}");
    assert_eq!(revived.channel, "webhook");
    let texts =
        |claimed: &[ClaimedChunk]| claimed.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    let next = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(
        texts(&next),
        ["n2"],
        "the message in progress finishes first"
    );
    mark_sent(&store, &next[0]).await;
    let next = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(
        texts(&next),
        ["d2"],
        "only the dead chunk goes again, due now"
    );
    assert_eq!(next[0].key, first.key, "the same key: platforms dedupe it");
    assert_eq!(next[0].attempts, 1, "fresh attempts");
    assert_eq!((next[0].index, next[0].count), (1, 2));
    mark_sent(&store, &next[0]).await;
    assert!(store.list_outbox(10).await.unwrap().is_empty());

    assert!(matches!(
        store.retry_dead(revived.id).await,
        Err(StoreError::Conflict(_))
    ));
    match store.retry_dead(4242).await {
        Err(StoreError::NotFound(why)) => assert!(why.contains("4242"), "{why}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // A new message still draws a key no row had.
    store
        .enqueue_outbox(vec![reply("b", &["later"])])
        .await
        .unwrap();
    let keys: std::collections::HashSet<String> = store
        .claim_due("webhook", 10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert!(!keys.contains(&first.key), "a key was reused: {keys:?}");
}

#[tokio::test]
async fn dead_letters_a_missing_setting_caused_are_retried_apart_from_the_rest() {
    let (_dir, store) = open();
    store
        .enqueue_outbox(vec![reply("a", &["unconfigured"]), reply("b", &["gone"])])
        .await
        .unwrap();
    for chunk in store.claim_due("webhook", 10, 60_000).await.unwrap() {
        let outcome = match chunk.route.chat_id.as_str() {
            "a" => ChunkOutcome::Unconfigured {
                error: "no callback_url".into(),
            },
            _ => dead("HTTP 410"),
        };
        store
            .record_outcome(chunk.outbox_id, chunk.index, outcome)
            .await
            .unwrap();
    }
    let listed = store.list_outbox(10).await.unwrap();
    let causes: Vec<_> = listed.iter().map(|e| e.dead_cause.as_deref()).collect();
    assert_eq!(causes, [Some("config"), None]);

    assert!(
        store
            .retry_unconfigured("telegram")
            .await
            .unwrap()
            .is_empty()
    );
    let revived = store.retry_unconfigured("webhook").await.unwrap();
    assert_eq!(revived.len(), 1);
    let due = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].text, "unconfigured");

    // `--all` takes the rest, oldest first.
    let all = store.retry_all_dead().await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(store.retry_all_dead().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dropped_message_is_never_sent_and_its_chat_moves_on() {
    let (_dir, store) = open();
    store
        .enqueue_outbox(vec![reply("a", &["first"]), reply("a", &["second"])])
        .await
        .unwrap();
    let head = store.claim_due("webhook", 10, 60_000).await.unwrap();
    let head = &head[0];
    assert!(
        matches!(
            store.drop_outbox(head.outbox_id).await,
            Err(StoreError::Conflict(_))
        ),
        "a chunk in flight refuses the drop"
    );
    store
        .record_outcome(
            head.outbox_id,
            head.index,
            ChunkOutcome::Retry {
                at: now_ms() + 60_000,
                error: "503".into(),
                channel_wide: true,
            },
        )
        .await
        .unwrap();
    store.drop_outbox(head.outbox_id).await.unwrap();
    let next = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].text, "second",
        "the chat's next message is its head now"
    );
    mark_sent(&store, &next[0]).await;
    assert!(matches!(
        store.drop_outbox(next[0].outbox_id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.drop_outbox(77).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.list_outbox(10).await.unwrap().is_empty());

    // Retention forgets dropped rows like delivered ones (the newest too: keys come from a
    // sequence, so none is drawn again).
    let forgotten = store
        .forget_history(Vec::new(), now_ms() + 1, 10)
        .await
        .unwrap();
    assert_eq!(
        forgotten, 4,
        "the dropped row and the delivered one, each with its chunk"
    );
    store
        .enqueue_outbox(vec![reply("a", &["third"])])
        .await
        .unwrap();
    let third = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_ne!(third[0].key, next[0].key, "a key was reused");
}

/// A send whose outcome is recorded only after its lease ran out (the disk was full) for a
/// message an operator dropped meanwhile: the late outcome changes nothing, and the chat's next
/// message goes out.
#[tokio::test]
async fn a_late_outcome_for_a_dropped_message_neither_revives_it_nor_stalls_its_chat() {
    let (_dir, store) = open();
    store
        .enqueue_outbox(vec![reply("a", &["x1", "x2"])])
        .await
        .unwrap();
    // A lease already over: the drop is allowed while the outcome is still unrecorded.
    let head = store.claim_due("webhook", 10, -1).await.unwrap();
    let head = head[0].clone();
    store.drop_outbox(head.outbox_id).await.unwrap();
    store
        .record_outcome(head.outbox_id, head.index, dead("HTTP 410"))
        .await
        .unwrap();
    assert!(
        store.list_outbox(10).await.unwrap().is_empty(),
        "the dropped message came back: {:?}",
        store.list_outbox(10).await.unwrap()
    );
    assert!(store.retry_all_dead().await.unwrap().is_empty());
    store
        .enqueue_outbox(vec![reply("a", &["next"])])
        .await
        .unwrap();
    let next = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(next.len(), 1, "the chat is stalled");
    assert_eq!(next[0].text, "next");
}

#[tokio::test]
async fn a_dropped_event_leaves_the_queue_on_record_and_never_comes_back() {
    let (_dir, store) = open();
    stored_job(&store, "dddddd", "user:webhook:alice").await;
    store
        .finish_job("dddddd", exit_ok(), Some(completion("dddddd")), 100)
        .await
        .unwrap();
    let event = store.queued_events("user:webhook:alice").await.unwrap()[0].clone();
    store.drop_event(event.id).await.unwrap();
    assert!(
        store
            .queued_events("user:webhook:alice")
            .await
            .unwrap()
            .is_empty()
    );
    let status = store.completion_status("dddddd").await.unwrap().unwrap();
    assert_eq!(status.event_state, "dropped");
    // Its key stays: the completion cannot be queued a second time.
    store
        .enqueue_event(completion("dddddd"), 100)
        .await
        .unwrap();
    assert!(
        store
            .queued_events("user:webhook:alice")
            .await
            .unwrap()
            .is_empty()
    );
    // Nor consumed: it left the queue.
    assert!(matches!(
        store
            .consume_events(vec![(event.id, event.coalesced)], reply("a", &["x"]))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.drop_event(event.id).await,
        Err(StoreError::Conflict(_))
    ));
    match store.drop_event(999).await {
        Err(StoreError::NotFound(why)) => assert!(why.contains("999"), "{why}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Nothing is owed for the job any more: retention may forget it, event and all.
    assert_eq!(forgettable(&store, now_ms() + 1).await, ["dddddd"]);
}
