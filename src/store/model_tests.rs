//! A model check of the durable path: completions → events → outbox → sends, with crashes.
//!
//! Random sequences drive the real store (a real SQLite file, reopened on every "crash")
//! through: a job's completion (sometimes recorded twice), a heartbeat run consuming a
//! session's events, a worker claiming chunks, and each send ending as delivered, rate-limited,
//! permanently failed, or cut short by a crash after the platform already accepted it; and an
//! operator retrying dead letters and dropping messages, also one whose send is still out and
//! whose outcome comes late. Invariants at the end: every completion is delivered whole,
//! dead-lettered or dropped by the operator, never lost; nothing is left pending; a chunk
//! reaches the platform more than once only after a crash cut its send short.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use execrelay_channel::ChatType;

use super::fixtures::open_in;
use super::*;
use crate::util::test_rng::Rng;
use execrelay_channel::Route;

fn route(session: usize) -> Route {
    Route {
        channel: "webhook".into(),
        account: String::new(),
        chat_id: format!("chat-{session}"),
        thread_id: None,
        reply_to_message_id: None,
        chat_type: ChatType::Direct,
    }
}

const SESSIONS: usize = 3;

/// One heartbeat run: drain a session's queued events into one outbox row of 1–3 chunks.
async fn consume(store: &Store, session: usize, rng: &mut Rng) {
    let events = store
        .queued_events(&format!("user:s{session}"))
        .await
        .unwrap();
    consume_read(store, session, events, rng).await;
}

/// The second half of a run, on events read earlier (possibly stale by now: another run may
/// have consumed them, or new events folded into them).
async fn consume_read(store: &Store, session: usize, events: Vec<EventRecord>, rng: &mut Rng) {
    let key = format!("user:s{session}");
    if events.is_empty() {
        return;
    }
    let text = events
        .iter()
        .map(|e| e.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let pieces = 1 + rng.below(3);
    let step = text.len().div_ceil(pieces);
    let chunks: Vec<String> = text
        .as_bytes()
        .chunks(step.max(1))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let read = events.iter().map(|e| (e.id, e.coalesced)).collect();
    let message = NewOutbox {
        route: route(session),
        session: Some(key),
        kind: "events",
        chunks,
        job_id: None,
        buttons: Vec::new(),
    };
    match store.consume_events(read, message).await {
        Ok(_) | Err(StoreError::Conflict(_)) => {}
        Err(other) => panic!("consume failed: {other}"),
    }
}

#[derive(Default)]
struct Platform {
    /// (outbox key, chunk index) → texts accepted, in order.
    accepted: BTreeMap<(String, u32), Vec<String>>,
    chunk_counts: HashMap<String, u32>,
    /// Chunks whose send was cut short by a crash after the platform accepted them.
    cut_short: BTreeMap<(String, u32), usize>,
}

async fn run_seed(seed: u64) {
    let mut rng = Rng::seeded(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_in(dir.path(), "model");
    let mut platform = Platform::default();
    let mut completions: BTreeMap<String, String> = BTreeMap::new();
    let mut held: Option<(usize, Vec<EventRecord>)> = None;
    // Texts of messages the operator dropped.
    let mut dropped: Vec<String> = Vec::new();

    for step in 0..160 {
        match rng.below(16) {
            12 => {
                store.retry_all_dead().await.unwrap();
            }
            13 => {
                let listed = store.list_outbox(100).await.unwrap();
                if !listed.is_empty() {
                    let entry = &listed[rng.below(listed.len())];
                    match store.drop_outbox(entry.id).await {
                        Ok(()) => dropped.push(entry.text.clone()),
                        Err(StoreError::Conflict(_)) => {}
                        Err(other) => panic!("drop failed: {other}"),
                    }
                }
            }
            14 => {
                // A send still out when its lease ran out; the operator drops its message;
                // then its outcome is recorded, late.
                let Some(chunk) = store.claim_due("webhook", 1, -1).await.unwrap().pop() else {
                    continue;
                };
                let listed = store.list_outbox(100).await.unwrap();
                let text = listed
                    .iter()
                    .find(|e| e.id == chunk.outbox_id)
                    .map(|e| e.text.clone());
                if store.drop_outbox(chunk.outbox_id).await.is_ok() {
                    dropped.extend(text);
                }
                platform.chunk_counts.insert(chunk.key.clone(), chunk.count);
                let outcome = if rng.below(2) == 0 {
                    platform
                        .accepted
                        .entry((chunk.key.clone(), chunk.index))
                        .or_default()
                        .push(chunk.text.clone());
                    ChunkOutcome::Delivered { platform_id: None }
                } else {
                    ChunkOutcome::Permanent {
                        error: "410".into(),
                    }
                };
                store
                    .record_outcome(chunk.outbox_id, chunk.index, outcome)
                    .await
                    .unwrap();
            }
            10 => {
                let session = rng.below(SESSIONS);
                let events = store
                    .queued_events(&format!("user:s{session}"))
                    .await
                    .unwrap();
                held = Some((session, events));
            }
            11 => {
                if let Some((session, events)) = held.take() {
                    consume_read(&store, session, events, &mut rng).await;
                }
            }
            0..=2 => {
                let job = format!("j{}", rng.below(40));
                let session = rng.below(SESSIONS);
                let text = format!("exec finished: {job} (exit 0, job {job}) #{seed}");
                // A job finishes once; a second report of it (a replay) must change nothing.
                let expected = completions
                    .entry(job.clone())
                    .or_insert(text.clone())
                    .clone();
                let event = NewEvent {
                    session: format!("user:s{session}"),
                    context_key: Some(format!("exec:{job}")),
                    text: expected,
                    origin: Some(route(session)),
                    wake: Some("exec-event".into()),
                };
                // A small bound, so that events also fold into each other.
                store.enqueue_event(event, 3).await.unwrap();
            }
            3..=4 => consume(&store, rng.below(SESSIONS), &mut rng).await,
            5..=8 => {
                let mut crashed = false;
                // A worker in an outage probes with one chunk; otherwise it claims what is due.
                let claimed = if rng.below(4) == 0 {
                    store.recover_channel("webhook").await.unwrap();
                    store
                        .claim_probe("webhook", 60_000)
                        .await
                        .unwrap()
                        .into_iter()
                        .collect()
                } else {
                    store.claim_due("webhook", 4, 60_000).await.unwrap()
                };
                for chunk in claimed {
                    platform.chunk_counts.insert(chunk.key.clone(), chunk.count);
                    let id = (chunk.key.clone(), chunk.index);
                    let outcome = match rng.below(10) {
                        // A chat's own limit, due at once; or the platform down, due when the
                        // channel recovers (an hour of backoff, cut short by the recovery).
                        0 => {
                            let channel_wide = rng.below(2) == 0;
                            ChunkOutcome::Retry {
                                at: now_ms() + if channel_wide { 3_600_000 } else { 0 },
                                error: if channel_wide { "503" } else { "429" }.into(),
                                channel_wide,
                            }
                        }
                        1 => ChunkOutcome::Permanent {
                            error: "410".into(),
                        },
                        2 => {
                            // Accepted by the platform, then the relay dies before recording.
                            platform
                                .accepted
                                .entry(id.clone())
                                .or_default()
                                .push(chunk.text);
                            *platform.cut_short.entry(id).or_default() += 1;
                            crashed = true;
                            break;
                        }
                        _ => {
                            platform.accepted.entry(id).or_default().push(chunk.text);
                            ChunkOutcome::Delivered { platform_id: None }
                        }
                    };
                    store
                        .record_outcome(chunk.outbox_id, chunk.index, outcome)
                        .await
                        .unwrap();
                }
                if crashed {
                    drop(store);
                    store = open_in(dir.path(), "model");
                    store.release_own_leases().await.unwrap();
                }
            }
            _ => {
                // Crash and restart: a fresh connection; this node's leases are released.
                drop(store);
                store = open_in(dir.path(), "model");
                store.release_own_leases().await.unwrap();
                assert!(step < 1000);
            }
        }
    }

    // Recovery: heartbeats and workers run until nothing is left, every send succeeding.
    for _ in 0..200 {
        for session in 0..SESSIONS {
            consume(&store, session, &mut rng).await;
        }
        store.recover_channel("webhook").await.unwrap();
        let claimed = store.claim_due("webhook", 64, 60_000).await.unwrap();
        if claimed.is_empty() && store.all_queued_events().await.unwrap().is_empty() {
            break;
        }
        for chunk in claimed {
            platform.chunk_counts.insert(chunk.key.clone(), chunk.count);
            platform
                .accepted
                .entry((chunk.key.clone(), chunk.index))
                .or_default()
                .push(chunk.text.clone());
            super::fixtures::mark_sent(&store, &chunk).await;
        }
    }
    assert!(
        store.all_queued_events().await.unwrap().is_empty(),
        "seed {seed}: events left queued"
    );

    // Whole messages the platform received, by outbox key.
    let mut received: BTreeMap<String, String> = BTreeMap::new();
    for (key, count) in &platform.chunk_counts {
        let whole: Option<String> = (0..*count)
            .map(|i| {
                platform
                    .accepted
                    .get(&(key.clone(), i))
                    .map(|t| t[0].clone())
            })
            .collect();
        if let Some(text) = whole {
            received.insert(key.clone(), text);
        }
    }
    let dead: Vec<String> = store
        .list_outbox(10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(e.state, "dead", "seed {seed}: delivery left pending: {e:?}");
            e.text
        })
        .collect();
    for (job, text) in &completions {
        let delivered = received
            .values()
            .filter(|m| m.contains(text.as_str()))
            .count();
        let dead_lettered = dead.iter().any(|m| m.contains(text.as_str()));
        let was_dropped = dropped.iter().any(|m| m.contains(text.as_str()));
        assert!(
            delivered + usize::from(dead_lettered) + usize::from(was_dropped) >= 1,
            "seed {seed}: the completion of {job} was lost"
        );
        assert!(
            delivered <= 1,
            "seed {seed}: {job} went out in {delivered} messages"
        );
    }
    let mut keys = BTreeSet::new();
    for ((key, index), texts) in &platform.accepted {
        keys.insert(key.clone());
        let allowed = 1 + platform
            .cut_short
            .get(&(key.clone(), *index))
            .copied()
            .unwrap_or(0);
        assert!(
            texts.len() <= allowed,
            "seed {seed}: chunk {key}.{index} sent {} times, {} crashes cut it short",
            texts.len(),
            allowed - 1
        );
        assert!(
            texts.windows(2).all(|w| w[0] == w[1]),
            "a resend must be the same chunk"
        );
    }
}

#[tokio::test]
async fn completions_are_never_lost_across_crashes_and_failures() {
    for seed in 1..=40 {
        run_seed(seed).await;
    }
}
