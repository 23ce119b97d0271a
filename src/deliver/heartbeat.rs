//! The heartbeat: wake requests, their coalescing, scheduled runs, the guards, and a run's
//! delivery of a session's queued events.
//!
//! `Heartbeat::request(reason, session)` is a hint: requests for one session coalesce over a
//! short window and keep the highest-priority reason (`retry` < `interval` < others < action
//! reasons). A run checks, in order: heartbeats enabled; active hours (scheduled runs only);
//! session busy (retry in 1 s, never dropped); the HEARTBEAT.md guard (an effectively empty
//! file skips the run unless its reason is `exec-event`, `wake`, `hook:*` or `cron:*`). A run
//! that proceeds drains the session's queued events in order, resolves each one's target
//! (`target`), renders one message per target and, in one transaction per target, writes the
//! outbox row and marks those events consumed. A skipped run changes nothing but the events'
//! visible `blocked` note: no event is ever dropped here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use execrelay_channel::CancellationToken;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::HeartbeatConfig;
use crate::deliver::outbox::{Outbox, OutboxError};
use crate::deliver::target::{self, Resolution};
use crate::run::controls;
use crate::store::{EventRecord, NewOutbox, Store, StoreError};
use crate::util::log_throttle::LogThrottle;
use crate::util::once_per_key::OncePerKey;

const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Why a heartbeat runs. Priority decides which reason a coalesced request keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    Retry,
    Interval,
    Other(String),
    ExecEvent,
    Wake,
    Manual,
    Hook(String),
    Cron(String),
}

impl Reason {
    pub fn parse(text: &str) -> Reason {
        match text {
            "retry" => Reason::Retry,
            "interval" => Reason::Interval,
            "exec-event" => Reason::ExecEvent,
            "wake" => Reason::Wake,
            "manual" => Reason::Manual,
            other => match other.split_once(':') {
                Some(("hook", name)) => Reason::Hook(name.into()),
                Some(("cron", name)) => Reason::Cron(name.into()),
                _ => Reason::Other(other.into()),
            },
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Reason::Retry => "retry".into(),
            Reason::Interval => "interval".into(),
            Reason::Other(text) => text.clone(),
            Reason::ExecEvent => "exec-event".into(),
            Reason::Wake => "wake".into(),
            Reason::Manual => "manual".into(),
            Reason::Hook(name) => format!("hook:{name}"),
            Reason::Cron(name) => format!("cron:{name}"),
        }
    }

    fn priority(&self) -> u8 {
        match self {
            Reason::Retry => 0,
            Reason::Interval => 1,
            Reason::Other(_) => 2,
            Reason::ExecEvent
            | Reason::Wake
            | Reason::Manual
            | Reason::Hook(_)
            | Reason::Cron(_) => 3,
        }
    }

    /// The seed bug: a reason outside this list was skipped by an empty HEARTBEAT.md.
    /// The reason without its name (`hook`, not `hook:deploy`): a label with few values.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Retry => "retry",
            Reason::Interval => "interval",
            Reason::Other(_) => "other",
            Reason::ExecEvent => "exec-event",
            Reason::Wake => "wake",
            Reason::Manual => "manual",
            Reason::Hook(_) => "hook",
            Reason::Cron(_) => "cron",
        }
    }

    pub fn bypasses_empty_file_guard(&self) -> bool {
        matches!(
            self,
            Reason::ExecEvent | Reason::Wake | Reason::Hook(_) | Reason::Cron(_)
        )
    }
}

/// Whether HEARTBEAT.md holds nothing to act on: blank lines, `#` headings, empty list items.
pub fn is_effectively_empty(content: &str) -> bool {
    content.lines().all(|line| {
        let line = line.trim();
        // `# Title` is a heading; `#hashtag` is content.
        let heading = line.starts_with('#') && {
            let rest = line.trim_start_matches('#');
            rest.is_empty() || rest.starts_with(char::is_whitespace)
        };
        let empty_item = matches!(line, "-" | "*" | "+" | "- [ ]" | "* [ ]");
        line.is_empty() || heading || empty_item
    })
}

#[derive(Debug)]
struct WakeRequest {
    reason: Reason,
    /// `None`: every session with queued events.
    session: Option<String>,
}

/// The handle producers hold. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct Heartbeat {
    requests: mpsc::UnboundedSender<WakeRequest>,
}

impl Heartbeat {
    pub fn request(&self, reason: Reason, session: Option<String>) {
        // Fails only after shutdown; the events are durable and the next start delivers them.
        let _ = self.requests.send(WakeRequest { reason, session });
    }
}

/// Pending wakes per session, coalesced: a pure structure, tested with explicit instants.
#[derive(Debug, Default)]
pub struct WakeQueue {
    pending: BTreeMap<Option<String>, (Reason, Instant)>,
}

impl WakeQueue {
    pub fn add(&mut self, session: Option<String>, reason: Reason, due: Instant) {
        match self.pending.get_mut(&session) {
            Some((kept, kept_due)) => {
                if reason.priority() > kept.priority() {
                    *kept = reason;
                }
                *kept_due = (*kept_due).min(due);
            }
            None => {
                self.pending.insert(session, (reason, due));
            }
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|(_, due)| *due).min()
    }

    /// Removes and returns every wake due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<(Option<String>, Reason)> {
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(session, _)| session.clone())
            .collect();
        due.into_iter()
            .filter_map(|session| {
                self.pending
                    .remove(&session)
                    .map(|(reason, _)| (session, reason))
            })
            .collect()
    }
}

/// What a run came to, as `execrelay_heartbeat_runs_total` labels it.
fn run_label(ran: &Result<RunResult, StoreError>) -> &'static str {
    match ran {
        Ok(RunResult::Delivered { .. }) => "delivered",
        Ok(RunResult::Skipped(_)) => "skipped",
        Ok(RunResult::Nothing) => "nothing",
        Ok(RunResult::Raced) => "raced",
        Err(_) => "failed",
    }
}

/// What one run did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    Delivered {
        events: usize,
        messages: usize,
    },
    Skipped(String),
    Nothing,
    /// Events changed under the run (folded, or consumed elsewhere): run again.
    Raced,
}

#[derive(Clone)]
pub struct HeartbeatRunner {
    config: HeartbeatConfig,
    store: Store,
    outbox: Outbox,
    /// Sessions whose completions were logged as undeliverable, by why: once a day each, not
    /// at every run that finds them still blocked.
    told_blocked: Arc<OncePerKey>,
}

/// How often the same session is logged as undeliverable for the same reason.
const BLOCKED_LOG_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The heartbeat's loop, built and not yet running: [`HeartbeatLoop::run`] until `stop`.
pub struct HeartbeatLoop {
    runner: HeartbeatRunner,
    requests: mpsc::UnboundedReceiver<WakeRequest>,
}

impl HeartbeatLoop {
    pub async fn run(self, stop: CancellationToken) {
        self.runner.run(self.requests, stop).await
    }
}

/// The heartbeat: the handle that asks for runs, and the loop that makes them.
pub fn new(config: HeartbeatConfig, store: Store, outbox: Outbox) -> (Heartbeat, HeartbeatLoop) {
    let (requests, receiver) = mpsc::unbounded_channel();
    let runner = HeartbeatRunner {
        config,
        store,
        outbox,
        told_blocked: Arc::new(OncePerKey::new(BLOCKED_LOG_EVERY, 10_000)),
    };
    (
        Heartbeat { requests },
        HeartbeatLoop {
            runner,
            requests: receiver,
        },
    )
}

impl HeartbeatRunner {
    fn window(&self, reason: &Reason) -> Duration {
        match reason {
            Reason::ExecEvent => self.config.exec_coalesce,
            _ => self.config.coalesce,
        }
    }

    async fn run(
        self,
        mut requests: mpsc::UnboundedReceiver<WakeRequest>,
        stop: CancellationToken,
    ) {
        let mut queue = WakeQueue::default();
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut runs: JoinSet<Option<Reason>> = JoinSet::new();
        let failures = Arc::new(LogThrottle::new(Duration::from_secs(10)));
        let every = self.config.every;
        let mut schedule = (!every.is_zero()).then(|| {
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        loop {
            let next_due = queue.next_due();
            tokio::select! {
                _ = stop.cancelled() => break,
                request = requests.recv() => match request {
                    Some(request) => {
                        let due = Instant::now() + self.window(&request.reason);
                        queue.add(request.session, request.reason, due);
                    }
                    None => break,
                },
                _ = next_tick(&mut schedule) => {
                    queue.add(None, Reason::Interval, Instant::now());
                }
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
                Some(done) = runs.join_next_with_id(), if !runs.is_empty() => {
                    let (id, again) = match done {
                        Ok((id, again)) => (id, again),
                        // A panicked run must not leave its session "busy" forever.
                        Err(error) => (error.id(), Some(Reason::Retry)),
                    };
                    if let Some(session) = running.remove(&id)
                        && let Some(reason) = again
                    {
                        queue.add(Some(session), reason, Instant::now() + BUSY_RETRY);
                    }
                }
            }
            let now = Instant::now();
            for (session, reason) in queue.take_due(now) {
                let sessions = match session {
                    Some(session) => vec![session],
                    None => match self.sessions_with_queued_events().await {
                        Ok(sessions) => sessions,
                        Err(error) => {
                            tracing::error!(error = %error, "heartbeat: cannot list sessions");
                            queue.add(None, reason, now + BUSY_RETRY);
                            continue;
                        }
                    },
                };
                for session in sessions {
                    if running.values().any(|s| *s == session) {
                        // Busy: keep the reason, try again shortly.
                        queue.add(Some(session), reason.clone(), now + BUSY_RETRY);
                        continue;
                    }
                    let runner = self.clone();
                    let failures = failures.clone();
                    let reason = reason.clone();
                    let span = tracing::info_span!(
                        "heartbeat",
                        session_key = %session,
                        reason = %reason.as_string()
                    );
                    let key = session.clone();
                    let handle = runs.spawn(
                        async move {
                            // A failed or raced run asks again with its own reason, so an
                            // exec-event is never left to a guarded scheduled run.
                            let ran = runner.run_once(&key, &reason).await;
                            crate::metrics::heartbeat_run(reason.kind(), run_label(&ran));
                            match ran {
                                Ok(RunResult::Raced) => Some(reason),
                                Ok(result) => {
                                    tracing::debug!(?result, "heartbeat run");
                                    None
                                }
                                Err(error) => {
                                    // Retried every second while the store fails: log a few.
                                    if let Some(held_back) = failures.admit() {
                                        tracing::error!(error = %error, held_back, "heartbeat run failed; events stay queued, retrying");
                                    }
                                    Some(reason)
                                }
                            }
                        }
                        .instrument(span),
                    );
                    running.insert(handle.id(), session);
                }
            }
        }
        // Let a run in progress finish its transaction; nothing half-done is possible anyway.
        while runs.join_next().await.is_some() {}
    }

    async fn sessions_with_queued_events(&self) -> Result<Vec<String>, StoreError> {
        let events = self.store.all_queued_events().await?;
        let mut seen = HashSet::new();
        Ok(events
            .into_iter()
            .filter(|e| seen.insert(e.session.clone()))
            .map(|e| e.session)
            .collect())
    }

    async fn skip(&self, events: &[EventRecord], why: &str) -> Result<RunResult, StoreError> {
        let ids = events.iter().map(|e| e.id).collect();
        self.store.mark_events_blocked(ids, why.to_string()).await?;
        Ok(RunResult::Skipped(why.to_string()))
    }

    /// One heartbeat run for one session.
    pub async fn run_once(&self, session: &str, reason: &Reason) -> Result<RunResult, StoreError> {
        let events = self.store.queued_events(session).await?;
        if events.is_empty() {
            return Ok(RunResult::Nothing);
        }
        if !self.config.enabled {
            return self.skip(&events, "heartbeats disabled").await;
        }
        if *reason == Reason::Interval
            && let Some(hours) = self.config.active_hours
        {
            let now = chrono::Local::now();
            let minute = chrono::Timelike::hour(&now) * 60 + chrono::Timelike::minute(&now);
            if !hours.contains(minute) {
                return self.skip(&events, "outside active hours").await;
            }
        }
        // An event may ask for a bypassing wake itself (a completion whose exec-event run
        // failed or raced): a scheduled run must not skip it.
        let bypass = reason.bypasses_empty_file_guard()
            || events.iter().any(|e| {
                e.wake
                    .as_deref()
                    .is_some_and(|w| Reason::parse(w).bypasses_empty_file_guard())
            });
        if let Some(file) = &self.config.file
            && !bypass
            && file_is_effectively_empty(file).await
        {
            return self.skip(&events, "heartbeat file empty").await;
        }
        let mut groups: Vec<(execrelay_channel::Route, Vec<&EventRecord>)> = Vec::new();
        let mut blocked: HashMap<String, Vec<i64>> = HashMap::new();
        // Besides `no-route`, reasons that are no one's choice (unlike `target none`): worth a
        // warning.
        let mut undeliverable: HashSet<String> = HashSet::new();
        let last = self.store.last_route(session).await?;
        for event in &events {
            match target::resolve(&self.config.target, last.as_ref(), event.origin.as_ref()) {
                // Consecutive events for one route share a message; merging across others
                // would reorder them (topics of one group share that group's order). A job's
                // completion is a message of its own, so that its buttons name one job.
                Resolution::Route(route) => match groups.last_mut() {
                    // A completion's group holds it alone: its first member says.
                    Some((r, members))
                        if *r == route
                            && completion_of(event).is_none()
                            && completion_of(members[0]).is_none() =>
                    {
                        members.push(event)
                    }
                    _ => groups.push((route, vec![event])),
                },
                Resolution::Blocked(why) => blocked.entry(why).or_default().push(event.id),
            }
        }
        let mut delivered = 0;
        let mut messages = 0;
        let mut raced = false;
        for (route, members) in groups {
            let text = render_events(&members);
            let message = match self.outbox.compose(&route, Some(session), "events", &text) {
                Ok(message) => match members.as_slice() {
                    [only] => match completion_of(only) {
                        Some(job_id) => NewOutbox {
                            job_id: Some(job_id.to_string()),
                            buttons: controls::completion_buttons(job_id),
                            ..message
                        },
                        None => message,
                    },
                    _ => message,
                },
                Err(OutboxError::UnknownChannel(channel)) => {
                    let why = format!("channel {channel} is not enabled");
                    undeliverable.insert(why.clone());
                    blocked
                        .entry(why)
                        .or_default()
                        .extend(members.iter().map(|e| e.id));
                    continue;
                }
                Err(OutboxError::Store(error)) => return Err(error),
            };
            let read: Vec<(i64, i64)> = members.iter().map(|e| (e.id, e.coalesced)).collect();
            match self.store.consume_events(read, message).await {
                Ok(outbox_id) => {
                    crate::util::failpoint::hit(crate::util::failpoint::OUTBOX_WRITTEN);
                    tracing::info!(
                        outbox_id,
                        events = members.len(),
                        channel = %route.channel,
                        "events handed to the outbox"
                    );
                    delivered += members.len();
                    messages += 1;
                    self.outbox.wake(&route.channel);
                }
                // Consumed elsewhere, or folded into since read: nothing written; look again.
                Err(StoreError::Conflict(_)) => raced = true,
                Err(error) => return Err(error),
            }
        }
        for (why, ids) in blocked {
            if (why == target::NO_ROUTE || undeliverable.contains(&why))
                && self.told_blocked.admit(&format!("{session}\n{why}"))
            {
                tracing::warn!(session = %session, reason = %why, events = ids.len(), "completions cannot be delivered: they wait, listed by `execrelay outbox`");
            }
            self.store.mark_events_blocked(ids, why).await?;
        }
        if raced {
            return Ok(RunResult::Raced);
        }
        Ok(RunResult::Delivered {
            events: delivered,
            messages,
        })
    }
}

/// The next scheduled tick; never, when scheduled runs are off (`every = "0m"`).
async fn next_tick(schedule: &mut Option<tokio::time::Interval>) {
    match schedule {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn file_is_effectively_empty(path: &Path) -> bool {
    match tokio::fs::read_to_string(path).await {
        Ok(content) => is_effectively_empty(&content),
        // A missing file does not skip; an unreadable one is treated the same way, so that a
        // permissions mistake cannot silence completions.
        Err(_) => false,
    }
}

/// The job whose completion `event` is alone: not one that other events were folded into.
fn completion_of(event: &EventRecord) -> Option<&str> {
    event
        .context_key
        .as_deref()
        .and_then(|key| key.strip_prefix("exec:"))
        .filter(|_| event.coalesced == 0)
}

/// Several events that arrived together become one message, oldest first.
pub fn render_events(events: &[&EventRecord]) -> String {
    let mut parts = Vec::with_capacity(events.len());
    for event in events {
        if event.coalesced > 0 {
            parts.push(format!(
                "{}\n[{} more events were folded into this one]",
                event.text, event.coalesced
            ));
        } else {
            parts.push(event.text.clone());
        }
    }
    parts.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_sees_headings_and_blank_lines_as_empty() {
        assert!(is_effectively_empty("# Heartbeat\n\n\n"));
        assert!(is_effectively_empty("## Tasks\n- \n* [ ]\n"));
        assert!(is_effectively_empty(""));
        assert!(!is_effectively_empty("# Heartbeat\ncheck the deploy\n"));
        assert!(!is_effectively_empty("#hashtag-without-space is content"));
    }

    #[test]
    fn the_seed_reasons_bypass_the_guard() {
        for reason in ["exec-event", "wake", "hook:deploy", "cron:nightly"] {
            assert!(
                Reason::parse(reason).bypasses_empty_file_guard(),
                "{reason}"
            );
        }
        // The seed bug's reason string is not special: it is just another reason.
        for reason in ["exec:abc:exit", "interval", "retry", "manual"] {
            assert!(
                !Reason::parse(reason).bypasses_empty_file_guard(),
                "{reason}"
            );
        }
        assert_eq!(Reason::parse("hook:x").as_string(), "hook:x");
    }

    #[test]
    fn coalescing_keeps_the_highest_reason_and_the_earliest_due() {
        let t0 = Instant::now();
        let mut queue = WakeQueue::default();
        let session = Some("s".to_string());
        queue.add(
            session.clone(),
            Reason::Interval,
            t0 + Duration::from_millis(250),
        );
        queue.add(
            session.clone(),
            Reason::ExecEvent,
            t0 + Duration::from_millis(5),
        );
        queue.add(
            session.clone(),
            Reason::Retry,
            t0 + Duration::from_millis(900),
        );
        assert_eq!(queue.next_due(), Some(t0 + Duration::from_millis(5)));
        assert!(queue.take_due(t0).is_empty());
        let due = queue.take_due(t0 + Duration::from_millis(5));
        assert_eq!(due, vec![(session, Reason::ExecEvent)]);
        assert_eq!(queue.next_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_coalesce_over_the_window() {
        // Paused time: the queue is driven by tokio's clock, not by sleeping.
        let t0 = Instant::now();
        let mut queue = WakeQueue::default();
        for _ in 0..10 {
            queue.add(
                Some("s".into()),
                Reason::Wake,
                Instant::now() + Duration::from_millis(250),
            );
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert_eq!(queue.next_due(), Some(t0 + Duration::from_millis(250)));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(queue.take_due(Instant::now()).len(), 1);
    }
}
