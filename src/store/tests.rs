//! The store's domain tests: each operation and transaction against a real SQLite file.

use super::fixtures::*;
use super::*;
use execrelay_channel::Route;

#[tokio::test]
async fn inbound_is_deduped_and_records_the_last_route() {
    let (_dir, store) = open();
    let first = store
        .accept_inbound(inbound("a", Some("m1")))
        .await
        .unwrap();
    assert!(matches!(first, InboundResult::Stored { .. }));
    store.accept_inbound(inbound("b", None)).await.unwrap();
    let again = store
        .accept_inbound(inbound("a", Some("m1")))
        .await
        .unwrap();
    let InboundResult::Stored { inbox_id, .. } = first else {
        panic!("not stored: {first:?}")
    };
    assert_eq!(
        again,
        InboundResult::Duplicate {
            inbox_id: Some(inbox_id)
        },
        "a duplicate names the row of its first copy"
    );
    let last = store
        .last_route("user:webhook:alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.chat_id, "b", "a duplicate must not move the route");
    // The same id in another chat is another message (ids may be per chat).
    let other_chat = store
        .accept_inbound(inbound("c", Some("m1")))
        .await
        .unwrap();
    assert!(matches!(other_chat, InboundResult::Stored { .. }));
    let last = store
        .last_route("user:webhook:alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.chat_id, "c");
    assert_eq!(store.pending_inbox(10).await.unwrap().len(), 3);
    assert_eq!(store.prune_seen(now_ms() + 1).await.unwrap(), 2);
}

#[tokio::test]
async fn an_inbox_row_keeps_when_its_message_was_sent() {
    let (_dir, store) = open();
    let mut old = inbound("a", Some("m1"));
    old.sent_at_ms = Some(1_000);
    store.accept_inbound(old).await.unwrap();
    store.accept_inbound(inbound("a", None)).await.unwrap();
    let before = now_ms();
    let rows = store.pending_inbox(10).await.unwrap();
    assert_eq!(rows[0].sent_at_ms, Some(1_000));
    assert_eq!(rows[1].sent_at_ms, None);
    assert!(
        rows.iter()
            .all(|row| row.received_at_ms <= before && row.received_at_ms > 1_000)
    );
}

#[tokio::test]
async fn a_message_that_comes_late_does_not_move_the_route_back() {
    let (_dir, store) = open();
    let sent = |channel: &str, chat: &str, at: Option<i64>| InboundRecord {
        route: Route {
            channel: channel.into(),
            ..route(chat)
        },
        sent_at_ms: at,
        ..inbound(chat, None)
    };
    let last = || async {
        store
            .last_route("user:webhook:alice")
            .await
            .unwrap()
            .unwrap()
    };
    let t = now_ms();

    // Sent at t in dm-b, but handed over after the one sent at t - 5 in dm-a... and the other
    // way round: the later message wins either way.
    store
        .accept_inbound(sent("discord", "dm-b", Some(t)))
        .await
        .unwrap();
    store
        .accept_inbound(sent("discord", "dm-a", Some(t - 5)))
        .await
        .unwrap();
    assert_eq!(
        last().await.chat_id,
        "dm-b",
        "a late, older message moved the route"
    );
    store
        .accept_inbound(sent("discord", "dm-a", Some(t + 1)))
        .await
        .unwrap();
    assert_eq!(last().await.chat_id, "dm-a");
    // The same millisecond: arrival order.
    store
        .accept_inbound(sent("discord", "dm-b", Some(t + 1)))
        .await
        .unwrap();
    assert_eq!(last().await.chat_id, "dm-b");

    // Another channel's clock is not comparable: arrival order decides.
    store
        .accept_inbound(sent("feishu", "oc-1", Some(t - 60_000)))
        .await
        .unwrap();
    assert_eq!(last().await.chat_id, "oc-1");
    // A message without a platform time always moves it.
    store
        .accept_inbound(sent("discord", "dm-c", Some(t + 10)))
        .await
        .unwrap();
    store
        .accept_inbound(sent("discord", "dm-d", None))
        .await
        .unwrap();
    assert_eq!(last().await.chat_id, "dm-d");
    // A timestamp far ahead of this clock is believed only a few seconds ahead, so it cannot
    // pin the route for long.
    let accept = |channel: &'static str, chat: &'static str, at: Option<i64>| {
        store.accept_inbound(sent(channel, chat, at))
    };
    accept("discord", "dm-e", Some(t + 86_400_000))
        .await
        .unwrap();
    accept("discord", "dm-f", Some(now_ms() + 6_000))
        .await
        .unwrap();
    assert_eq!(last().await.chat_id, "dm-f");
    // A redelivery of a message sent long before the route was set, from any channel, is late.
    accept("webhook", "wh-1", None).await.unwrap();
    accept("feishu", "oc-2", Some(now_ms() - 3_600_000))
        .await
        .unwrap();
    assert_eq!(
        last().await.chat_id,
        "wh-1",
        "an hour-old redelivery moved the route"
    );
    accept("feishu", "oc-3", Some(now_ms() - 1_000))
        .await
        .unwrap();
    assert_eq!(last().await.chat_id, "oc-3");
    // Every one of them was stored to run, late or not.
    assert_eq!(store.pending_inbox(20).await.unwrap().len(), 12);
}

#[tokio::test]
async fn a_job_finishes_once_with_one_event() {
    let (_dir, store) = open();
    let InboundResult::Stored { inbox_id, .. } =
        store.accept_inbound(inbound("a", None)).await.unwrap()
    else {
        panic!("not stored")
    };
    store
        .finish_inbox(
            inbox_id,
            Some(new_job("abc123")),
            vec![reply("a", &["started"])],
        )
        .await
        .unwrap();
    assert!(store.finish_inbox(inbox_id, None, vec![]).await.is_err());
    assert!(
        store
            .finish_job("abc123", exit_ok(), Some(completion("abc123")), 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_job("abc123", exit_ok(), Some(completion("abc123")), 100)
            .await
            .unwrap()
    );
    let events = store.queued_events("user:webhook:alice").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        store.job("abc123").await.unwrap().unwrap().state,
        JobState::Exited
    );
}

#[tokio::test]
async fn consuming_events_is_all_or_nothing() {
    let (_dir, store) = open();
    let id = store.enqueue_event(completion("j1"), 100).await.unwrap();
    let stale = store
        .consume_events(vec![(id, 1)], reply("a", &["x"]))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict(_))),
        "an event folded into since it was read must not be consumed"
    );
    let outbox = store
        .consume_events(vec![(id, 0)], reply("a", &["x"]))
        .await
        .unwrap();
    assert!(outbox > 0);
    let again = store
        .consume_events(vec![(id, 0)], reply("a", &["x"]))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    // The failed attempt wrote no outbox row.
    assert_eq!(store.list_outbox(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn past_the_bound_events_fold_into_the_newest() {
    let (_dir, store) = open();
    for n in 0..5 {
        let mut event = completion(&format!("j{n}"));
        event.text = format!("event {n}");
        store.enqueue_event(event, 3).await.unwrap();
    }
    let events = store.queued_events("user:webhook:alice").await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].coalesced, 2);
    assert!(events[2].text.contains("event 4"));
}

#[tokio::test]
async fn chunks_go_out_in_order_per_chat() {
    let (_dir, store) = open();
    store
        .enqueue_outbox(vec![
            reply("a", &["a1", "a2"]),
            reply("a", &["a3"]),
            reply("b", &["b1"]),
        ])
        .await
        .unwrap();
    let first = store.claim_due("webhook", 10, 60_000).await.unwrap();
    let texts: Vec<_> = first.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["a1", "b1"], "one head per chat");
    // While a1 is leased, chat a waits.
    assert!(
        store
            .claim_due("webhook", 10, 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    let a1 = &first[0];
    mark_sent(&store, a1).await;
    let next = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(next[0].text, "a2");
    assert_eq!((next[0].index, next[0].count), (1, 2));
    store
        .record_outcome(
            next[0].outbox_id,
            1,
            ChunkOutcome::Permanent {
                error: "HTTP 410".into(),
            },
        )
        .await
        .unwrap();
    let next = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(next[0].text, "a3", "a dead message does not block the chat");
    let listed = store.list_outbox(10).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e.state == "dead" && e.last_error.as_deref() == Some("HTTP 410"))
    );
}

fn retry(in_ms: Millis, channel_wide: bool) -> ChunkOutcome {
    ChunkOutcome::Retry {
        at: now_ms() + in_ms,
        error: if channel_wide { "503" } else { "429" }.into(),
        channel_wide,
    }
}

#[tokio::test]
async fn chats_that_waited_for_their_channel_are_due_when_it_recovers_and_a_chats_own_limit_holds()
{
    let (_dir, store) = open();
    store
        .enqueue_outbox(vec![
            reply("a", &["a1"]),
            reply("b", &["b1"]),
            reply("c", &["c1"]),
        ])
        .await
        .unwrap();
    // a and b failed with the platform (long backoffs); c hit its own rate limit.
    let hour = 3_600_000;
    for chunk in store.claim_due("webhook", 10, 60_000).await.unwrap() {
        let outcome = match chunk.route.chat_id.as_str() {
            "a" => retry(hour, true),
            "b" => retry(2 * hour, true),
            _ => retry(hour, false),
        };
        store
            .record_outcome(chunk.outbox_id, chunk.index, outcome)
            .await
            .unwrap();
    }
    assert!(
        store
            .claim_due("webhook", 10, 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    // A probe ignores a channel-wide backoff, never a chat's own limit; the oldest turn first.
    let probe = store.claim_probe("webhook", 60_000).await.unwrap().unwrap();
    assert_eq!(probe.text, "a1");
    assert!(
        store
            .claim_probe("webhook", 60_000)
            .await
            .unwrap()
            .map(|c| c.text)
            == Some("b1".into()),
        "a's probe holds its chat; b is next"
    );
    assert!(
        store
            .claim_probe("webhook", 60_000)
            .await
            .unwrap()
            .is_none()
    );
    store.release_own_leases().await.unwrap();
    // Recovery: a and b are due now, c still waits for its own retry_after.
    assert_eq!(store.recover_channel("webhook").await.unwrap(), 2);
    let due: Vec<_> = store
        .claim_due("webhook", 10, 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(due, ["a1", "b1"]);
    assert_eq!(store.recover_channel("webhook").await.unwrap(), 0, "once");
}

#[tokio::test]
async fn a_restart_releases_this_nodes_leases() {
    let (dir, store) = open();
    store
        .enqueue_outbox(vec![reply("a", &["a1"])])
        .await
        .unwrap();
    assert_eq!(
        store.claim_due("webhook", 10, 60_000).await.unwrap().len(),
        1
    );
    drop(store);
    let store = open_in(dir.path(), "test");
    assert_eq!(store.release_own_leases().await.unwrap(), 1);
    let again = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
}

#[tokio::test]
async fn a_moved_chat_rewrites_its_routes_and_keeps_its_order() {
    let (_dir, store) = open();
    store.accept_inbound(inbound("old", None)).await.unwrap();
    store
        .enqueue_outbox(vec![
            reply("old", &["o1"]),
            reply("old", &["o2"]),
            reply("other", &["x"]),
        ])
        .await
        .unwrap();
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    let head = claimed.iter().find(|c| c.text == "o1").unwrap();
    store
        .record_outcome(
            head.outbox_id,
            head.index,
            ChunkOutcome::ChatMigrated {
                chat_id: "new".into(),
            },
        )
        .await
        .unwrap();
    let last = store
        .last_route("user:webhook:alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.chat_id, "new");
    // Due again at once, at the new id, still ahead of the message after it.
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    let moved: Vec<_> = claimed
        .iter()
        .filter(|c| c.route.chat_id == "new")
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(moved, ["o1"]);
    let again = claimed.iter().find(|c| c.text == "o1").unwrap();
    assert_eq!(
        (again.attempts, again.moves),
        (2, 1),
        "tries and moves are counted apart"
    );
    assert_eq!(
        claimed.iter().filter(|c| c.route.chat_id == "old").count(),
        0
    );
}

/// A route named in the config has no account; a reply's route names the bot. One chat all the
/// same, and one queue: the completion must not overtake the acknowledgement.
#[tokio::test]
async fn routes_to_one_chat_share_its_queue_whatever_account_they_name() {
    let (_dir, store) = open();
    let mut with_account = reply("grp", &["ack"]);
    with_account.route.account = "bot-1".into();
    store
        .enqueue_outbox(vec![with_account, reply("grp", &["completion"])])
        .await
        .unwrap();
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    let texts: Vec<_> = claimed.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["ack"], "one send at a time per chat, in order");
}

/// A group that moved may already have a message in flight at its new id; the rows moved in
/// from the old id sort ahead of it, but must wait for it: one send in flight per chat.
#[tokio::test]
async fn rows_moved_into_a_chat_wait_for_its_send_in_flight() {
    let (_dir, store) = open();
    store
        .enqueue_outbox(vec![reply("old", &["o1"]), reply("new", &["n1"])])
        .await
        .unwrap();
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 2, "both chats' heads are due");
    let old_head = claimed.iter().find(|c| c.text == "o1").unwrap();
    let new_head = claimed.iter().find(|c| c.text == "n1").unwrap();
    // "n1" stays leased (in flight) while the old chat turns out to have moved to "new".
    store
        .record_outcome(
            old_head.outbox_id,
            old_head.index,
            ChunkOutcome::ChatMigrated {
                chat_id: "new".into(),
            },
        )
        .await
        .unwrap();
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert!(
        claimed.is_empty(),
        "a second send to a chat with one in flight: {claimed:?}"
    );
    mark_sent(&store, new_head).await;
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    let texts: Vec<_> = claimed.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["o1"]);
}

#[tokio::test]
async fn adapter_state_survives_a_reopen() {
    let (dir, store) = open();
    assert_eq!(
        store.adapter_state("telegram:1:commands").await.unwrap(),
        None
    );
    store
        .set_adapter_state("telegram:1:commands", "a")
        .await
        .unwrap();
    store
        .set_adapter_state("telegram:1:commands", "b")
        .await
        .unwrap();
    drop(store);
    let store = open_in(dir.path(), "test");
    let kept = store.adapter_state("telegram:1:commands").await.unwrap();
    assert_eq!(kept.as_deref(), Some("b"));
}

#[tokio::test]
async fn jobs_are_found_by_id_prefix_in_any_case_and_only_in_their_session() {
    let (_dir, store) = open();
    stored_job(&store, "ab12cd", "user:alice").await;
    stored_job(&store, "ab99ee", "user:alice").await;
    stored_job(&store, "ab12ff", "user:bob").await;
    let ids = |jobs: Vec<JobRecord>| {
        let mut ids: Vec<String> = jobs.into_iter().map(|j| j.id).collect();
        ids.sort();
        ids
    };
    let alice = Some("user:alice");
    assert_eq!(
        ids(store.jobs_by_prefix(alice, "ab").await.unwrap()),
        ["ab12cd", "ab99ee"]
    );
    assert_eq!(
        ids(store.jobs_by_prefix(alice, "AB12").await.unwrap()),
        ["ab12cd"]
    );
    assert_eq!(
        ids(store.jobs_by_prefix(None, "ab12").await.unwrap()),
        ["ab12cd", "ab12ff"]
    );
    assert!(
        store
            .jobs_by_prefix(alice, "ab12cd0")
            .await
            .unwrap()
            .is_empty()
    );
    // Wildcards in user input are just characters.
    assert!(store.jobs_by_prefix(alice, "a%").await.unwrap().is_empty());
    assert!(store.jobs_by_prefix(alice, "a_").await.unwrap().is_empty());

    let recent = store.recent_jobs(Some("user:bob"), 10).await.unwrap();
    assert_eq!(ids(recent), ["ab12ff"]);
    let all = store.recent_jobs(None, 2).await.unwrap();
    assert_eq!(all.len(), 2, "the limit holds");
    assert_eq!(all[0].id, "ab12ff", "newest first");
}

#[tokio::test]
async fn retention_forgets_only_jobs_nothing_is_owed_for() {
    let (_dir, store) = open();
    let session = "user:webhook:alice";
    for id in ["aaaaaa", "bbbbbb", "cccccc"] {
        stored_job(&store, id, session).await;
    }
    for id in ["aaaaaa", "bbbbbb"] {
        store
            .finish_job(id, exit_ok(), Some(completion(id)), 100)
            .await
            .unwrap();
    }
    let later = now_ms() + 1;
    assert!(
        forgettable(&store, later).await.is_empty(),
        "completions still queued: nothing may go"
    );
    let queued = store.queued_events(session).await.unwrap();
    let a = queued
        .iter()
        .find(|e| e.context_key.as_deref() == Some("exec:aaaaaa"))
        .unwrap();
    store
        .consume_events(vec![(a.id, a.coalesced)], reply("a", &["done a"]))
        .await
        .unwrap();
    assert_eq!(forgettable(&store, later).await, ["aaaaaa"]);
    assert!(
        forgettable(&store, 1).await.is_empty(),
        "not yet past keep_jobs"
    );

    let forgotten = store
        .forget_history(vec!["aaaaaa".into()], later, 10)
        .await
        .unwrap();
    // The job, its event and key, and the three processed inbox rows.
    assert_eq!(forgotten, 6);
    assert!(store.job("aaaaaa").await.unwrap().is_none());
    assert!(
        store.job("bbbbbb").await.unwrap().is_some(),
        "its completion is queued"
    );
    assert!(
        store.job("cccccc").await.unwrap().is_some(),
        "still running"
    );
    assert_eq!(
        store.list_outbox(10).await.unwrap().len(),
        1,
        "the message carrying the completion is pending: kept"
    );
    // The key went with the job, and the job cannot finish again to use it.
    let _ = store
        .finish_job("aaaaaa", exit_ok(), Some(completion("aaaaaa")), 100)
        .await;
    let queued = store.queued_events(session).await.unwrap();
    assert!(
        !queued
            .iter()
            .any(|e| e.context_key.as_deref() == Some("exec:aaaaaa")),
        "a forgotten job got a second completion: {queued:?}"
    );
}

#[tokio::test]
async fn retention_keeps_dead_letters_and_never_lets_a_key_be_drawn_again() {
    let (_dir, store) = open();
    store
        .enqueue_outbox(vec![
            reply("x", &["one"]),
            reply("y", &["two"]),
            reply("z", &["three"]),
        ])
        .await
        .unwrap();
    let claimed = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let outcome = |chunk: &ClaimedChunk| match chunk.route.chat_id.as_str() {
        "y" => ChunkOutcome::Permanent {
            error: "gone".into(),
        },
        _ => ChunkOutcome::Delivered { platform_id: None },
    };
    for chunk in &claimed {
        store
            .record_outcome(chunk.outbox_id, chunk.index, outcome(chunk))
            .await
            .unwrap();
    }
    let newest_key = claimed
        .iter()
        .max_by_key(|c| c.outbox_id)
        .map(|c| c.key.clone())
        .unwrap();

    let forgotten = store
        .forget_history(Vec::new(), now_ms() + 1, 10)
        .await
        .unwrap();
    assert_eq!(
        forgotten, 4,
        "both delivered messages, the newest too (each its row and chunk)"
    );
    let listed = store.list_outbox(10).await.unwrap();
    assert!(
        listed.iter().any(|e| e.state == "dead" && e.chat_id == "y"),
        "a dead letter stays visible: {listed:?}"
    );
    store
        .enqueue_outbox(vec![reply("x", &["four"])])
        .await
        .unwrap();
    let fresh = store.list_outbox(10).await.unwrap();
    let new = fresh.iter().find(|e| e.state == "pending").unwrap();
    assert_ne!(
        new.key, newest_key,
        "the newest row was forgotten, and its key drawn again"
    );
}

#[tokio::test]
async fn an_inbox_message_names_its_job_and_reply_and_the_job_its_completion() {
    let (_dir, store) = open();
    let InboundResult::Stored { inbox_id, .. } =
        store.accept_inbound(inbound("a", None)).await.unwrap()
    else {
        panic!("not stored")
    };
    let unprocessed = store.inbox_status(inbox_id).await.unwrap().unwrap();
    assert!(!unprocessed.processed && unprocessed.job_id.is_none());
    store
        .finish_inbox(
            inbox_id,
            Some(new_job("eeeeee")),
            vec![reply("a", &["ack"])],
        )
        .await
        .unwrap();
    let status = store.inbox_status(inbox_id).await.unwrap().unwrap();
    assert!(status.processed);
    assert_eq!(status.job_id.as_deref(), Some("eeeeee"));
    let ack = status.last_reply.unwrap();
    assert_eq!((ack.channel.as_str(), ack.chunks), ("webhook", 1));
    assert!(store.inbox_status(inbox_id + 100).await.unwrap().is_none());

    assert!(store.completion_status("eeeeee").await.unwrap().is_none());
    store
        .finish_job("eeeeee", exit_ok(), Some(completion("eeeeee")), 100)
        .await
        .unwrap();
    let queued = store.completion_status("eeeeee").await.unwrap().unwrap();
    assert_eq!(queued.event_state, "queued");
    assert!(queued.delivery.is_none());
    let outbox_id = store
        .consume_events(vec![(queued.event_id, 0)], reply("a", &["done", "!"]))
        .await
        .unwrap();
    let consumed = store.completion_status("eeeeee").await.unwrap().unwrap();
    let delivery = consumed.delivery.unwrap();
    assert_eq!((delivery.id, delivery.chunks), (outbox_id, 2));
    assert_ne!(delivery.key, ack.key);
}

/// Every time the store writes comes from its clock: with a test's clock, times are exact.
#[tokio::test]
async fn the_store_reads_the_time_from_its_clock() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let now = std::sync::Arc::new(AtomicI64::new(1_000_000));
    let clock: Clock = {
        let now = now.clone();
        std::sync::Arc::new(move || now.load(Ordering::SeqCst))
    };
    let store = Store::open_with_clock(&dir.path().join("db.sqlite"), "test", clock).unwrap();
    store
        .enqueue_outbox(vec![reply("a", &["one"])])
        .await
        .unwrap();
    let listed = store.list_outbox(10).await.unwrap();
    assert_eq!(listed[0].next_attempt_at, Some(1_000_000));
    assert_eq!(
        store.claim_due("webhook", 10, 60_000).await.unwrap().len(),
        1
    );
    now.store(1_060_000, Ordering::SeqCst);
    assert!(
        store
            .claim_due("webhook", 10, 60_000)
            .await
            .unwrap()
            .is_empty(),
        "leased until 1,060,000 exactly"
    );
    now.store(1_060_001, Ordering::SeqCst);
    assert_eq!(
        store.claim_due("webhook", 10, 60_000).await.unwrap().len(),
        1,
        "the lease ran out"
    );
}

/// What `GET /metrics` reads: each channel's oldest pending message, and a completion's last
/// chunk carrying its job's exit (an acknowledgement's, or an earlier chunk, none).
#[tokio::test]
async fn a_completion_s_last_chunk_carries_its_job_s_exit() {
    let (_dir, store) = open();
    stored_job(&store, "j1", "user:webhook:alice").await;
    store.finish_job("j1", exit_ok(), None, 100).await.unwrap();
    let ack = NewOutbox {
        kind: "ack",
        job_id: Some("j1".into()),
        ..reply("b", &["started job j1"])
    };
    let completion = NewOutbox {
        kind: "events",
        job_id: Some("j1".into()),
        ..reply("a", &["exec finished: 1/2", "2/2"])
    };
    store.enqueue_outbox(vec![ack, completion]).await.unwrap();
    let oldest = store.oldest_pending().await.unwrap();
    assert_eq!(oldest.len(), 1, "{oldest:?}");
    assert_eq!(oldest[0].0, "webhook");

    let heads = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(heads.len(), 2, "each chat's head");
    assert!(heads.iter().all(|c| c.completion_of_exit.is_none()));
    for chunk in &heads {
        mark_sent(&store, chunk).await;
    }
    let last = store.claim_due("webhook", 10, 60_000).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].index, 1);
    assert_eq!(last[0].completion_of_exit, Some(exit_ok().finished_at));
    mark_sent(&store, &last[0]).await;
    assert!(store.oldest_pending().await.unwrap().is_empty());
}
