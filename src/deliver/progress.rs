//! Progress: while a job runs, its acknowledgement is edited in place with how long it has run
//! and its last lines of output; when it ends, a last time with its outcome and no buttons.
//!
//! A lane of its own beside the outbox, which it never waits on, reorders or replaces: an edit
//! may be dropped, a completion never (it is always a new message, sent by the outbox). So:
//! - a chat with a message waiting in the outbox gets no edit until that message is out;
//! - at most one edit of a message every `[progress] every`, and one per chat every
//!   `per_chat`, across its jobs; none when the text is unchanged;
//! - a 429 on an edit pauses that chat's edits for the whole wait: an edit must not earn a
//!   flood wait that delays a completion; a `SlowDown` halves a message's pace;
//! - one edit of a message in flight at a time, so an old one cannot land after a newer one;
//! - none while the channel's sends fail as a whole; attempts, not successes, are paced.
//!
//! The store says which jobs to edit (`progress_targets`: delivered acknowledgements sent with
//! buttons, jobs not yet done), so after a restart progress resumes where it was; the pacing
//! is in memory and starts afresh. A wake is not needed: the lane looks every [`TICK`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use execrelay_channel::{CancellationToken, Edit, EditOutcome};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::deliver::chunk;
use crate::deliver::outbox::Outbox;
use crate::run::controls;
use crate::run::exec::ExecRuntime;
use crate::run::jobs::signal_name;
use crate::store::{JobRecord, JobState, ProgressTarget, Store, now_ms};
use crate::util::duration::format_duration;

const TICK: Duration = Duration::from_secs(1);
/// An edit that has not answered by then is given up (Telegram sleeps 10 s on a 5xx).
const EDIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Failed tries of a job's last edit before it is given up.
const MAX_FINAL_TRIES: u32 = 5;
/// The command as the first line shows it.
const COMMAND_CHARS: usize = 200;
/// How often jobs that ended long ago are let go, and how long ago.
const SETTLE_STALE_EVERY: Duration = Duration::from_secs(60);
const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Pacing kept for a chat no edit has touched for this long is forgotten.
const CHAT_MEMORY: Duration = Duration::from_secs(600);

pub struct ProgressLane {
    store: Store,
    outbox: Outbox,
    exec: ExecRuntime,
    config: Config,
}

#[derive(Default)]
struct MessageState {
    shown: Option<String>,
    last_edit: Option<Instant>,
    in_flight: bool,
    slow: bool,
    final_tries: u32,
}

#[derive(Clone, Copy)]
struct ChatState {
    last_edit: Instant,
    paused_until: Instant,
}

struct Finished {
    job_id: String,
    chat: String,
    text: String,
    is_final: bool,
    outcome: EditOutcome,
}

impl ProgressLane {
    pub fn new(store: Store, outbox: Outbox, exec: ExecRuntime, config: Config) -> ProgressLane {
        ProgressLane {
            store,
            outbox,
            exec,
            config,
        }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut settle_stale = tokio::time::interval(SETTLE_STALE_EVERY);
        settle_stale.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if !self.config.progress.enabled {
            // Nothing to edit; jobs still leave the lane's index.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = settle_stale.tick() => self.settle_stale().await,
                }
            }
        }
        let mut messages: HashMap<String, MessageState> = HashMap::new();
        let mut chats: HashMap<String, ChatState> = HashMap::new();
        let mut edits: JoinSet<Finished> = JoinSet::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(done) = edits.join_next(), if !edits.is_empty() => {
                    if let Ok(done) = done {
                        self.settle(done, &mut messages, &mut chats).await;
                    }
                }
                _ = settle_stale.tick() => self.settle_stale().await,
                _ = tick.tick() => {
                    self.look(&mut messages, &mut chats, &mut edits).await;
                    let now = Instant::now();
                    chats.retain(|_, chat| {
                        now.duration_since(chat.last_edit) < CHAT_MEMORY || chat.paused_until > now
                    });
                }
            }
        }
    }

    /// One look at every job that may be edited: starts the edits their pacing allows.
    async fn look(
        &self,
        messages: &mut HashMap<String, MessageState>,
        chats: &mut HashMap<String, ChatState>,
        edits: &mut JoinSet<Finished>,
    ) {
        let after = self.config.progress.after;
        let targets = match self
            .store
            .progress_targets(now_ms() - after.as_millis() as i64)
            .await
        {
            Ok(targets) => targets,
            Err(error) => {
                tracing::debug!(error = %error, "progress: cannot read the jobs to edit");
                return;
            }
        };
        let now = Instant::now();
        for target in targets {
            let job = &target.job;
            let is_final = job.state.is_final();
            if !self.config.progress_on(&target.route.channel) || (is_final && ran_for(job) < after)
            {
                // Nothing to show there, or a short job: quiet.
                self.done(&job.id, messages).await;
                continue;
            }
            let chat = format!("{}|{}", target.route.channel, target.route.chat_id);
            let message = messages.entry(job.id.clone()).or_default();
            // The outbox goes first: a message waiting for this chat, or a channel whose sends
            // fail (an edit would only add to what the platform refuses).
            if target.chat_busy
                || message.in_flight
                || self.outbox.health().is_failing(&target.route.channel)
            {
                continue;
            }
            if let Some(state) = chats.get(&chat)
                && (state.paused_until > now
                    || now.duration_since(state.last_edit) < self.config.progress.per_chat)
            {
                continue;
            }
            let every = self.config.progress.every * if message.slow { 2 } else { 1 };
            if !is_final
                && message
                    .last_edit
                    .is_some_and(|at| now.duration_since(at) < every)
            {
                continue;
            }
            let text = self.render(&target, now_ms()).await;
            if message.shown.as_deref() == Some(text.as_str()) {
                if is_final {
                    self.done(&job.id, messages).await;
                }
                continue;
            }
            let Some(channel) = self.outbox.channel(&target.route.channel).cloned() else {
                self.done(&job.id, messages).await;
                continue;
            };
            message.in_flight = true;
            // Paced by attempts, not successes: a failing edit is not tried faster.
            message.last_edit = Some(now);
            let paused_until = chats.get(&chat).map_or(now, |state| state.paused_until);
            chats.insert(
                chat.clone(),
                ChatState {
                    last_edit: now,
                    paused_until,
                },
            );
            let buttons = if is_final {
                Vec::new()
            } else {
                controls::ack_buttons(&job.id)
            };
            let job_id = job.id.clone();
            let span =
                tracing::debug_span!("progress", job_id = %job_id, channel = %target.route.channel);
            edits.spawn(tracing::Instrument::instrument(
                async move {
                    let edit = Edit {
                        route: &target.route,
                        message_id: &target.message_id,
                        text: &text,
                        buttons: &buttons,
                    };
                    let outcome = tokio::time::timeout(EDIT_TIMEOUT, channel.edit(edit))
                        .await
                        .unwrap_or_else(|_| EditOutcome::Transient("the edit timed out".into()));
                    crate::metrics::progress_edit(&target.route.channel, &outcome);
                    Finished {
                        job_id,
                        chat,
                        text,
                        is_final,
                        outcome,
                    }
                },
                span,
            ));
        }
    }

    async fn settle(
        &self,
        done: Finished,
        messages: &mut HashMap<String, MessageState>,
        chats: &mut HashMap<String, ChatState>,
    ) {
        let Some(message) = messages.get_mut(&done.job_id) else {
            return;
        };
        message.in_flight = false;
        match done.outcome {
            EditOutcome::Edited => {
                message.shown = Some(done.text);
                if done.is_final {
                    self.done(&done.job_id, messages).await;
                }
            }
            EditOutcome::RetryAfter(wait) => {
                tracing::info!(job_id = %done.job_id, wait_ms = wait.as_millis() as u64, "progress: the chat's edits pause for the platform's wait");
                if let Some(chat) = chats.get_mut(&done.chat) {
                    chat.paused_until = Instant::now() + wait;
                }
            }
            EditOutcome::SlowDown => message.slow = true,
            EditOutcome::Transient(error) => {
                tracing::debug!(job_id = %done.job_id, error = %error, "progress: an edit failed; the next one may work");
                if done.is_final {
                    message.final_tries += 1;
                    if message.final_tries >= MAX_FINAL_TRIES {
                        self.done(&done.job_id, messages).await;
                    }
                }
            }
            EditOutcome::Gone(why) | EditOutcome::Failed(why) => {
                tracing::info!(job_id = %done.job_id, error = %why, "progress: the acknowledgement cannot be edited; no more edits of it");
                self.done(&done.job_id, messages).await;
            }
            EditOutcome::Unsupported => self.done(&done.job_id, messages).await,
        }
    }

    /// Jobs that ended long ago and whose acknowledgement could never be edited (it went
    /// nowhere editable, or was dead-lettered) stop being looked at.
    async fn settle_stale(&self) {
        let before = now_ms() - STALE_AFTER.as_millis() as i64;
        match self.store.settle_stale_progress(before).await {
            Ok(0) => {}
            Ok(settled) => tracing::debug!(settled, "progress: jobs ended long ago left the lane"),
            Err(error) => tracing::debug!(error = %error, "progress: cannot settle old jobs"),
        }
    }

    /// No more edits for this job (kept in the store: a restart does not start again).
    async fn done(&self, job_id: &str, messages: &mut HashMap<String, MessageState>) {
        match self.store.finish_progress(job_id).await {
            Ok(()) => {
                messages.remove(job_id);
            }
            // Looked at again next tick.
            Err(error) => {
                tracing::debug!(job_id, error = %error, "progress: cannot record the last edit")
            }
        }
    }

    /// `running 2m 13s · job 7f3a9c: make` and the last lines of output; once ended,
    /// `exit 0 after 20m 4s · job 7f3a9c: make`. Within the channel's limit.
    async fn render(&self, target: &ProgressTarget, now: i64) -> String {
        let job = &target.job;
        let command = if self.config.exec.hide_command {
            "command".to_string()
        } else {
            self.exec.redactor().one_line(&job.command, COMMAND_CHARS)
        };
        let text = if job.state.is_final() {
            format!(
                "{} after {} · job {}: {command}",
                outcome_of(job),
                whole_seconds(ran_for(job)),
                job.id
            )
        } else {
            let started = job.started_at.unwrap_or(now);
            let running = Duration::from_millis((now - started).max(0) as u64);
            let head = format!(
                "running {} · job {}: {command}",
                whole_seconds(running),
                job.id
            );
            let progress = &self.config.progress;
            let tail = self
                .exec
                .tail(&job.id, progress.lines, progress.max_chars)
                .await;
            if tail.text.is_empty() {
                head
            } else {
                format!("{head}\n{}", tail.text)
            }
        };
        let limit = self
            .outbox
            .channel(&target.route.channel)
            .map(|channel| channel.limit());
        match limit {
            // An edit is never split: its first part, which starts with the status line.
            Some(limit) => chunk::split(&text, limit)
                .into_iter()
                .next()
                .unwrap_or(text),
            None => text,
        }
    }
}

/// How long an ended job ran.
fn ran_for(job: &JobRecord) -> Duration {
    match (job.started_at, job.finished_at) {
        (Some(start), Some(end)) => Duration::from_millis((end - start).max(0) as u64),
        _ => Duration::ZERO,
    }
}

fn outcome_of(job: &JobRecord) -> String {
    match (job.state, job.exit_code, job.signal) {
        (JobState::Exited, Some(code), _) => format!("exit {code}"),
        (JobState::Exited, None, Some(signal)) => format!("signal {}", signal_name(signal as i32)),
        (JobState::TimedOut, ..) => "timed out".into(),
        (JobState::Killed, ..) => "killed".into(),
        (JobState::FailedToStart, ..) => "failed to start".into(),
        (state, ..) => state.as_str().into(),
    }
}

/// `13s`, `2m 13s`, `1h 4m`: a running clock needs no tenths.
fn whole_seconds(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format_duration(Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_clock_shows_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(13_900)), "13s");
        assert_eq!(whole_seconds(Duration::from_secs(133)), "2m 13s");
        assert_eq!(whole_seconds(Duration::from_secs(3840)), "1h 4m");
    }
}
