//! Delivery workers: one per channel, sending what the outbox holds.
//!
//! A worker leases the head chunk of every chat whose turn it is (`Store::claim_due`), sends
//! each outside any transaction, and records how it ended (`Store::record_outcome`): delivered;
//! rate-limited (due again after the platform's `retry_after`); transient (exponential backoff
//! with jitter, capped); permanent (dead-lettered, shown by `execrelay outbox`). Chats proceed
//! in parallel up to `[outbox] concurrency`; within a chat, one chunk at a time, in order.
//! The worker wakes on a hint from `Outbox::wake` or when the next retry falls due, and also
//! polls, so a lost hint only delays.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use execrelay_channel::{CancellationToken, Channel, OutboundChunk, Route, SendOutcome};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::OutboxConfig;
use crate::deliver::channel_health::ChannelHealth;
use crate::store::{ChunkOutcome, ClaimedChunk, Millis, Store, now_ms};
use crate::util::log_throttle::FailStreak;

/// Longer than any send may take (adapters time out well before), so a live send keeps it.
const LEASE_MS: i64 = 120_000;
const POLL: Duration = Duration::from_secs(5);
const MIN_IDLE_WAIT: Duration = Duration::from_millis(20);
/// Longer than one adapter request's timeout (20 s at most), so a send in flight at SIGTERM
/// ends and is recorded; cut short, a send the platform took would be made again (a send that
/// retries inside itself may still be cut: Discord and Feishu dedupe its resend).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Recording a send's outcome is retried this often while the store refuses writes (a full
/// disk).
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// How often a worker whose claims fail (the store refuses writes) tries again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// A backoff's random factor: ±20 %, so that many chats failing together do not retry in
/// lockstep.
pub fn jitter() -> f64 {
    rand::random_range(0.8..1.2)
}

/// The wait before try `attempts + 1`: `backoff_base` doubled per try, capped, times `jitter`
/// (never past the cap).
pub fn backoff(config: &OutboxConfig, attempts: u32, jitter: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let raw = config.backoff_base.saturating_mul(1u32 << exponent);
    let capped = raw.min(config.backoff_cap);
    capped.mul_f64(jitter).min(config.backoff_cap)
}

/// A chat that keeps moving (or "moves" to itself) is a platform bug, not a reason to resend
/// in a tight loop.
const MAX_MOVES: u32 = 5;

/// What becomes of a chunk whose send ended with `outcome` at `now`. `attempts` counts every
/// try (for the backoff, drawn with `jitter`), `moves` only the chat's moves so far.
fn settle(
    outcome: SendOutcome,
    (attempts, moves): (u32, u32),
    current_chat: &str,
    config: &OutboxConfig,
    (now, jitter): (Millis, f64),
) -> ChunkOutcome {
    let after = |wait: Duration| now + wait.as_millis() as i64;
    match outcome {
        SendOutcome::ChatMigrated { chat_id } if chat_id == current_chat || moves >= MAX_MOVES => {
            ChunkOutcome::Permanent {
                error: format!("the platform keeps moving chat {current_chat} (now to {chat_id})"),
            }
        }
        SendOutcome::Delivered { platform_id } => ChunkOutcome::Delivered { platform_id },
        SendOutcome::RetryAfter(wait) => ChunkOutcome::Retry {
            at: after(wait),
            error: format!("rate limited: retry after {}ms", wait.as_millis()),
            channel_wide: false,
        },
        SendOutcome::Transient(error) => ChunkOutcome::Retry {
            at: after(backoff(config, attempts, jitter)),
            error,
            channel_wide: true,
        },
        SendOutcome::NoReceiver(error) => ChunkOutcome::Retry {
            at: after(backoff(config, attempts, jitter)),
            error,
            channel_wide: false,
        },
        SendOutcome::Permanent(error) => ChunkOutcome::Permanent { error },
        SendOutcome::Unconfigured(error) => ChunkOutcome::Unconfigured { error },
        SendOutcome::ChatMigrated { chat_id } => ChunkOutcome::ChatMigrated { chat_id },
    }
}

/// Chunks that were sent but whose outcome is not recorded yet (the store refuses writes):
/// `(outbox id, chunk index)`. The worker does not send them again meanwhile.
type Unrecorded = Arc<Mutex<HashSet<(i64, u32)>>>;

/// What one send said about its channel as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Signal {
    /// The platform answered (took the message, refused this chat, or named when this chat
    /// may send again): it is up.
    Answered,
    /// The platform failed (a 5xx, a network error): the channel fails, not just this chat.
    Down(String),
    /// Nothing about the platform (no local client yet; a missing setting).
    Silent,
}

/// A rate limit is the platform naming when one chat may send again: honoured for that chat
/// alone (Telegram limits each group; Discord each route), and proof the platform is up.
fn signal_of(outcome: &SendOutcome) -> Signal {
    match outcome {
        SendOutcome::Delivered { .. }
        | SendOutcome::Permanent(_)
        | SendOutcome::ChatMigrated { .. }
        | SendOutcome::RetryAfter(_) => Signal::Answered,
        SendOutcome::Transient(error) => Signal::Down(error.clone()),
        SendOutcome::NoReceiver(_) | SendOutcome::Unconfigured(_) => Signal::Silent,
    }
}

/// A finished send, as its worker learns of it.
struct Report {
    signal: Signal,
    /// The chat the send was for.
    chat: String,
}

async fn deliver(
    channel: Arc<dyn Channel>,
    store: Store,
    config: OutboxConfig,
    chunk: ClaimedChunk,
    unrecorded: Unrecorded,
    probe: bool,
) -> Report {
    let delivery_id = format!("{}.{}", chunk.key, chunk.index);
    let outcome = channel
        .send(OutboundChunk {
            route: &chunk.route,
            text: &chunk.text,
            idempotency_key: &delivery_id,
            index: chunk.index,
            count: chunk.count,
            buttons: &chunk.buttons,
        })
        .await;
    match &outcome {
        SendOutcome::Delivered { .. } => tracing::debug!("delivered"),
        SendOutcome::RetryAfter(wait) => {
            tracing::warn!(retry_after_ms = wait.as_millis() as u64, "rate limited")
        }
        // The worker says once that the channel fails, and when it recovers; each probe is
        // not news.
        SendOutcome::Transient(error) if probe => {
            tracing::debug!(error = %error, "probe failed; the channel still fails")
        }
        SendOutcome::Transient(error) => tracing::warn!(error = %error, "send failed; will retry"),
        SendOutcome::NoReceiver(why) => tracing::debug!(why = %why, "kept until someone listens"),
        SendOutcome::Permanent(error) | SendOutcome::Unconfigured(error) => {
            tracing::error!(error = %error, "send failed permanently; dead-lettered")
        }
        SendOutcome::ChatMigrated { chat_id } => {
            tracing::info!(new_chat_id = %chat_id, "the chat moved; sending to its new id")
        }
    }
    crate::metrics::delivery(&chunk.route.channel, &outcome);
    let delivered = matches!(outcome, SendOutcome::Delivered { .. });
    if delivered {
        crate::util::failpoint::hit(crate::util::failpoint::CHUNK_SENT);
        if chunk.index + 1 < chunk.count {
            crate::util::failpoint::hit(crate::util::failpoint::MID_MESSAGE);
        }
    }
    let signal = signal_of(&outcome);
    let tries = (chunk.attempts, chunk.moves);
    let settled = settle(
        outcome,
        tries,
        &chunk.route.chat_id,
        &config,
        (now_ms(), jitter()),
    );
    record_outcome(&store, &chunk, settled, &unrecorded).await;
    if let Some(exited) = chunk.completion_of_exit.filter(|_| delivered) {
        crate::metrics::exit_to_message(Duration::from_millis((now_ms() - exited).max(0) as u64));
    }
    Report {
        signal,
        chat: chunk.route.chat_id,
    }
}

/// Keeps trying until the store takes it (a full disk can last for hours): a sent chunk whose
/// outcome is never recorded would be sent again, a duplicate in the chat. Only shutdown
/// abandons it, and then the next start sends it again with the same key.
async fn record_outcome(
    store: &Store,
    chunk: &ClaimedChunk,
    settled: ChunkOutcome,
    unrecorded: &Unrecorded,
) {
    let id = (chunk.outbox_id, chunk.index);
    let mut streak = FailStreak::default();
    loop {
        match store
            .record_outcome(chunk.outbox_id, chunk.index, settled.clone())
            .await
        {
            Ok(()) => break,
            Err(error) => {
                if streak.failed() {
                    tracing::error!(error = %error, "cannot record the send outcome; retrying");
                    if let Ok(mut unrecorded) = unrecorded.lock() {
                        unrecorded.insert(id);
                    }
                }
            }
        }
        tokio::time::sleep(RECORD_RETRY).await;
    }
    if streak.recovered() {
        tracing::info!("send outcome recorded after the store recovered");
        if let Ok(mut unrecorded) = unrecorded.lock() {
            unrecorded.remove(&id);
        }
    }
}

/// Sends `text` at once, outside the outbox: only for a notice that cannot be stored (the
/// disk is full). Best effort; nothing retries it.
pub async fn send_unstored(channel: Arc<dyn Channel>, route: Route, text: String) {
    let chunks = crate::deliver::chunk::split(&text, channel.limit());
    let key = format!("unstored-{}-{:08x}", now_ms(), rand::random::<u32>());
    let count = chunks.len() as u32;
    for (index, text) in chunks.iter().enumerate() {
        let idempotency_key = format!("{key}.{index}");
        let outcome = channel
            .send(OutboundChunk {
                route: &route,
                text,
                idempotency_key: &idempotency_key,
                index: index as u32,
                count,
                buttons: &[],
            })
            .await;
        if !matches!(outcome, SendOutcome::Delivered { .. }) {
            tracing::warn!(?outcome, "an unstored notice was not delivered");
            return;
        }
    }
}

/// While a channel fails, one send at a time probes it, at most this far apart, so that its
/// recovery is seen within about a second however long the outage was.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A channel failing as a whole: other chats wait without spending tries while one send at a
/// time probes.
#[derive(Debug)]
struct Outage {
    since: Instant,
    probe_at: Instant,
    failed_probes: u32,
    /// The probe in flight, if any.
    probe: Option<tokio::task::Id>,
    /// The chat whose failure began it, and whether any other chat failed since.
    began_with: String,
    others_failed: bool,
}

/// What a report changed for the channel.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    Began(String),
    Recovered(Duration),
    Same,
}

/// A channel's state as its sends report it: working, or in an outage (and when to probe).
struct Watch {
    outage: Option<Outage>,
    /// A chat whose failure began an outage that another chat's send then ended at once: its
    /// failures are its own (a receiver that fails one conversation), so they no longer stop
    /// the channel, until it gets through or another chat fails.
    suspect: Option<String>,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            outage: None,
            suspect: None,
        }
    }

    fn probe_delay(config: &OutboxConfig, failed_probes: u32) -> Duration {
        backoff(config, failed_probes.max(1), jitter()).min(PROBE_EVERY)
    }

    /// Whether a probe may be sent now (only in an outage, one at a time).
    fn probe_due(&self, now: Instant) -> bool {
        self.outage
            .as_ref()
            .is_some_and(|o| o.probe.is_none() && now >= o.probe_at)
    }

    /// A probe went out as task `task`.
    fn probing(&mut self, task: tokio::task::Id) {
        if let Some(outage) = &mut self.outage {
            outage.probe = Some(task);
        }
    }

    /// A probe was due but there was nothing to probe with: look again after a pause.
    fn nothing_to_probe(&mut self, now: Instant) {
        if let Some(outage) = &mut self.outage {
            outage.probe_at = now + PROBE_EVERY;
        }
    }

    /// How long until the worker must look again for the outage's sake.
    fn until_probe(&self, now: Instant) -> Option<Duration> {
        let outage = self.outage.as_ref()?;
        Some(match outage.probe {
            Some(_) => POLL,
            None => outage.probe_at.saturating_duration_since(now),
        })
    }

    /// Task `task` ended: with its report, or without one (it panicked).
    fn observe(
        &mut self,
        task: tokio::task::Id,
        report: Option<Report>,
        config: &OutboxConfig,
        now: Instant,
    ) -> Turn {
        let mut probe = false;
        if let Some(outage) = &mut self.outage
            && outage.probe == Some(task)
        {
            outage.probe = None;
            probe = true;
        }
        let Some(Report { signal, chat }) = report else {
            return Turn::Same;
        };
        match signal {
            Signal::Answered => {
                if self.suspect.as_ref() == Some(&chat) {
                    self.suspect = None;
                }
                match self.outage.take() {
                    Some(outage) => {
                        if !outage.others_failed && outage.began_with != chat {
                            self.suspect = Some(outage.began_with);
                        }
                        Turn::Recovered(now.duration_since(outage.since))
                    }
                    None => Turn::Same,
                }
            }
            Signal::Down(error) => match &mut self.outage {
                Some(outage) => {
                    outage.others_failed |= outage.began_with != chat;
                    if probe {
                        outage.failed_probes += 1;
                        outage.probe_at = now + Self::probe_delay(config, outage.failed_probes);
                    }
                    Turn::Same
                }
                None if self.suspect.as_ref() == Some(&chat) => Turn::Same,
                None => {
                    self.outage = Some(Outage {
                        since: now,
                        probe_at: now + Self::probe_delay(config, 1),
                        failed_probes: 1,
                        probe: None,
                        began_with: chat,
                        others_failed: false,
                    });
                    Turn::Began(error)
                }
            },
            Signal::Silent => Turn::Same,
        }
    }

    /// Nothing is owed on the channel any more: there is nothing to probe with, and so no
    /// outage to speak of.
    fn forget_outage(&mut self) -> bool {
        let idle = self.outage.as_ref().is_some_and(|o| o.probe.is_none());
        if idle {
            self.outage = None;
        }
        idle
    }
}

pub async fn run_worker(
    channel: Arc<dyn Channel>,
    store: Store,
    config: OutboxConfig,
    wake: Arc<Notify>,
    health: ChannelHealth,
    stop: CancellationToken,
) {
    let name = channel.name().to_string();
    let mut in_flight: JoinSet<Report> = JoinSet::new();
    let unrecorded = Unrecorded::default();
    let mut claims = FailStreak::default();
    let mut recovering = FailStreak::default();
    let mut watch = Watch::new();
    // What waited for this channel when the relay last stopped is due now: the platform may
    // have recovered meanwhile, and the first sends tell.
    let mut recover_due = true;
    loop {
        if stop.is_cancelled() {
            break;
        }
        if recover_due {
            match store.recover_channel(&name).await {
                Ok(count) => {
                    recover_due = false;
                    if recovering.recovered() {
                        tracing::info!(channel = %name, "waiting chats marked due after all");
                    }
                    if count > 0 {
                        tracing::info!(channel = %name, chunks = count, "waiting chats due again");
                    }
                }
                Err(error) => {
                    if recovering.failed() {
                        tracing::error!(channel = %name, error = %error, "cannot mark waiting chats due; retrying");
                    }
                }
            }
        }
        let now = Instant::now();
        // In an outage only a due probe is claimed; otherwise whatever is due, up to the cap.
        let probe = watch.outage.is_some();
        let claimed = if probe {
            if watch.probe_due(now) {
                store
                    .claim_probe(&name, LEASE_MS)
                    .await
                    .map(|probe| probe.into_iter().collect::<Vec<_>>())
            } else {
                Ok(Vec::new())
            }
        } else {
            let free = config.concurrency.saturating_sub(in_flight.len());
            if free > 0 {
                store.claim_due(&name, free, LEASE_MS).await
            } else {
                Ok(Vec::new())
            }
        };
        let mut claimed_any = false;
        match claimed {
            Ok(claimed) => {
                if claims.recovered() {
                    tracing::info!(channel = %name, "claims work again");
                }
                claimed_any = !claimed.is_empty();
                if probe && watch.probe_due(now) && !claimed_any {
                    if let Ok(None) = store.next_due(&name).await {
                        if watch.forget_outage() && health.recovered(&name).is_some() {
                            tracing::info!(channel = %name, "nothing is owed on the channel any more; no longer counted as failing");
                        }
                    } else {
                        watch.nothing_to_probe(now);
                    }
                }
                // Chunks whose lease ran out while their outcome waited for the store.
                let sent_already: Vec<(i64, u32)> = match unrecorded.lock() {
                    Ok(unrecorded) => claimed
                        .iter()
                        .map(|c| (c.outbox_id, c.index))
                        .filter(|id| unrecorded.contains(id))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                for chunk in claimed {
                    if sent_already.contains(&(chunk.outbox_id, chunk.index)) {
                        continue;
                    }
                    let span = tracing::info_span!(
                        "delivery",
                        delivery_id = %format!("{}.{}", chunk.key, chunk.index),
                        channel = %name,
                        attempt = chunk.attempts,
                    );
                    let task = in_flight.spawn(
                        deliver(
                            channel.clone(),
                            store.clone(),
                            config.clone(),
                            chunk,
                            unrecorded.clone(),
                            probe,
                        )
                        .instrument(span),
                    );
                    if probe {
                        watch.probing(task.id());
                    }
                }
            }
            Err(error) => {
                if claims.failed() {
                    tracing::error!(channel = %name, error = %error, "claim failed; retrying every second");
                }
            }
        }
        let until_due = match watch.until_probe(Instant::now()) {
            Some(wait) => wait.min(POLL),
            None => match store.next_due(&name).await {
                Ok(Some(at)) => {
                    Duration::from_millis((at - now_ms()).clamp(0, POLL.as_millis() as i64) as u64)
                }
                _ => POLL,
            },
        };
        // Something due that we could not claim (all slots busy, or a race): never spin.
        let until_due = if claims.is_failing() || recover_due {
            until_due.max(CLAIM_RETRY)
        } else if claimed_any {
            until_due
        } else {
            until_due.max(MIN_IDLE_WAIT)
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            Some(joined) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                let (task, report) = match joined {
                    Ok((task, report)) => (task, Some(report)),
                    // A send that panicked says nothing of the platform; if it was the
                    // probe, the next one goes out.
                    Err(error) => (error.id(), None),
                };
                let failed = match &report {
                    Some(Report { signal: Signal::Down(error), .. }) => Some(error.clone()),
                    _ => None,
                };
                match watch.observe(task, report, &config, Instant::now()) {
                    Turn::Began(error) => {
                        health.failed(&name, &error);
                        tracing::warn!(channel = %name, error = %error, "the channel is failing; one send at a time probes it until it works");
                    }
                    Turn::Recovered(after) => {
                        let tries = health.recovered(&name).map_or(0, |f| f.tries);
                        tracing::info!(channel = %name, after_ms = after.as_millis() as u64, tries, "the channel works again; every waiting chat is due");
                        recover_due = true;
                    }
                    // Another failure in an outage: its error is the latest word.
                    Turn::Same => if let Some(error) = failed && watch.outage.is_some() {
                        health.failed(&name, &error);
                    }
                }
            }
            _ = tokio::time::sleep(until_due) => {}
        }
    }
    // Finish what is in flight so its outcome is recorded; unsent rows wait for the next start.
    let finish = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finish).await.is_err() {
        tracing::warn!(channel = %name, "sends still in flight at shutdown; they will be retried");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = OutboxConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            concurrency: 1,
        };
        assert_eq!(backoff(&config, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(&config, 3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(&config, 3, 0.8), Duration::from_millis(320));
        assert_eq!(backoff(&config, 4, 1.2), Duration::from_millis(960));
        assert_eq!(
            backoff(&config, 5, 1.2),
            Duration::from_secs(1),
            "never past the cap"
        );
        assert_eq!(backoff(&config, 30, 1.0), Duration::from_secs(1));
        assert!((0..1000).map(|_| jitter()).all(|j| (0.8..1.2).contains(&j)));
    }

    #[test]
    fn outcomes_settle_as_the_contract_says() {
        let config = OutboxConfig::default();
        let now = 1_000_000;
        let settle = |outcome, tries| settle(outcome, tries, "c", &config, (now, 1.0));
        assert!(matches!(
            settle(SendOutcome::Permanent("410".into()), (1, 0)),
            ChunkOutcome::Permanent { .. }
        ));
        let retry_at = |outcome| match settle(outcome, (3, 0)) {
            ChunkOutcome::Retry {
                at, channel_wide, ..
            } => (at - now, channel_wide),
            other => panic!("not a retry: {other:?}"),
        };
        let limited = SendOutcome::RetryAfter(Duration::from_secs(2));
        assert_eq!(retry_at(limited), (2000, false), "a chat's own limit");
        assert_eq!(
            retry_at(SendOutcome::Transient("503".into())),
            (2000, true),
            "the platform down: the third try waits 500 ms × 4, and the channel with it"
        );
        assert_eq!(
            retry_at(SendOutcome::NoReceiver("no client".into())),
            (2000, false)
        );
        let moved = |to: &str, tries| {
            let outcome = SendOutcome::ChatMigrated { chat_id: to.into() };
            settle(outcome, tries)
        };
        assert!(matches!(
            moved("d", (1, 0)),
            ChunkOutcome::ChatMigrated { .. }
        ));
        assert!(
            matches!(moved("d", (40, 0)), ChunkOutcome::ChatMigrated { .. }),
            "a chunk retried through an outage still follows its chat's first move"
        );
        assert!(
            matches!(moved("c", (1, 0)), ChunkOutcome::Permanent { .. }),
            "moved to itself"
        );
        assert!(matches!(
            moved("d", (MAX_MOVES + 1, MAX_MOVES)),
            ChunkOutcome::Permanent { .. }
        ));
    }

    fn report(chat: &str, signal: Signal) -> Option<Report> {
        Some(Report {
            signal,
            chat: chat.into(),
        })
    }

    /// A task id for a send, as the worker's JoinSet would give it.
    fn send_id() -> tokio::task::Id {
        tokio::spawn(async {}).id()
    }

    #[tokio::test]
    async fn a_platform_failure_starts_an_outage_that_one_probe_at_a_time_ends() {
        let config = OutboxConfig::default();
        let mut watch = Watch::new();
        let t0 = Instant::now();
        let down = |chat| report(chat, Signal::Down("HTTP 503".into()));
        assert_eq!(
            watch.observe(send_id(), down("a"), &config, t0),
            Turn::Began("HTTP 503".into())
        );
        assert!(
            !watch.probe_due(t0),
            "the first probe waits the base backoff"
        );
        let later = t0 + Duration::from_secs(2);
        assert!(watch.probe_due(later));
        // Sends already in flight that fail change nothing.
        assert_eq!(
            watch.observe(send_id(), down("b"), &config, later),
            Turn::Same
        );
        // However long the outage, probes stay at most PROBE_EVERY apart, one at a time.
        let mut now = later;
        for _ in 0..40 {
            let probe = send_id();
            watch.probing(probe);
            assert!(
                !watch.probe_due(now + Duration::from_secs(60)),
                "one probe at a time"
            );
            // Another send ending (not the probe) does not free the probe's turn.
            assert_eq!(
                watch.observe(send_id(), down("c"), &config, now),
                Turn::Same
            );
            assert!(!watch.probe_due(now + Duration::from_secs(60)));
            assert_eq!(watch.observe(probe, down("b"), &config, now), Turn::Same);
            let outage = watch.outage.as_ref().unwrap();
            assert!(outage.probe_at <= now + PROBE_EVERY);
            now += PROBE_EVERY;
            assert!(watch.probe_due(now));
        }
        let probe = send_id();
        watch.probing(probe);
        let Turn::Recovered(after) =
            watch.observe(probe, report("b", Signal::Answered), &config, now)
        else {
            panic!("not recovered")
        };
        assert_eq!(after, now - t0);
        assert!(watch.outage.is_none() && !watch.probe_due(now));
    }

    #[tokio::test]
    async fn a_rate_limit_is_one_chats_and_shows_the_platform_is_up() {
        let outcome = SendOutcome::RetryAfter(Duration::from_secs(30));
        assert_eq!(signal_of(&outcome), Signal::Answered);
        let config = OutboxConfig::default();
        let mut watch = Watch::new();
        let now = Instant::now();
        watch.observe(
            send_id(),
            report("a", Signal::Down("503".into())),
            &config,
            now,
        );
        let probe = send_id();
        watch.probing(probe);
        assert!(matches!(
            watch.observe(probe, report("b", signal_of(&outcome)), &config, now),
            Turn::Recovered(_)
        ));
        // Neither a missing client nor a panicked probe ends an outage; the latter frees
        // the probe's turn. (a failed alone, so c's failure is the news now.)
        watch.observe(
            send_id(),
            report("c", Signal::Down("503".into())),
            &config,
            now,
        );
        assert_eq!(
            watch.observe(send_id(), report("c", Signal::Silent), &config, now),
            Turn::Same
        );
        let probe = send_id();
        watch.probing(probe);
        assert_eq!(watch.observe(probe, None, &config, now), Turn::Same);
        assert!(watch.outage.is_some());
        assert!(watch.probe_due(now + PROBE_EVERY));
    }

    #[tokio::test]
    async fn a_chat_that_fails_alone_stops_stopping_the_channel() {
        let config = OutboxConfig::default();
        let mut watch = Watch::new();
        let now = Instant::now();
        let down = |chat| report(chat, Signal::Down("HTTP 500".into()));
        let answered = |chat| report(chat, Signal::Answered);
        // Chat a fails; the probe, a send to chat b, gets through at once.
        assert!(matches!(
            watch.observe(send_id(), down("a"), &config, now),
            Turn::Began(_)
        ));
        assert!(matches!(
            watch.observe(send_id(), answered("b"), &config, now),
            Turn::Recovered(_)
        ));
        // a's failures are its own now: the channel keeps working for b.
        assert_eq!(
            watch.observe(send_id(), down("a"), &config, now),
            Turn::Same
        );
        assert!(watch.outage.is_none());
        // Another chat failing is news again; a's success clears a (and c, failing alone,
        // becomes the suspect).
        assert!(matches!(
            watch.observe(send_id(), down("c"), &config, now),
            Turn::Began(_)
        ));
        watch.observe(send_id(), answered("a"), &config, now);
        assert_eq!(watch.suspect.as_deref(), Some("c"));
        // An outage in which several chats failed makes nobody a suspect.
        watch.observe(send_id(), down("a"), &config, now);
        watch.observe(send_id(), down("b"), &config, now);
        watch.observe(send_id(), answered("c"), &config, now);
        assert!(watch.suspect.is_none());
    }

    #[tokio::test]
    async fn an_outage_with_nothing_owed_is_forgotten_but_not_while_a_probe_is_out() {
        let config = OutboxConfig::default();
        let mut watch = Watch::new();
        let now = Instant::now();
        watch.observe(
            send_id(),
            report("a", Signal::Down("503".into())),
            &config,
            now,
        );
        watch.probing(send_id());
        assert!(!watch.forget_outage());
        let mut idle = Watch::new();
        idle.observe(
            send_id(),
            report("a", Signal::Down("503".into())),
            &config,
            now,
        );
        assert!(idle.forget_outage() && idle.outage.is_none());
    }
}
