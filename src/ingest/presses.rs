//! Button presses: each is answered at once, to its presser alone, and what it asks for is
//! stored as the command it stands for (`/kill 7f3a9c`, `/tail 7f3a9c`, `/exec <the same
//! command line>`), by that person in that conversation. So a press is authorized exactly
//! like the command, acted on by the command processor after it is stored, and deduped on the
//! platform's id of the press: a redelivered press never kills or reruns twice.
//!
//! [Rerun] asks for a second press within [`RERUN_CONFIRM_WINDOW`], not a double click; the
//! first is only remembered (in memory: a restart asks again), and a burst of presses reruns
//! once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use execrelay_channel::{ChatType, Press, PressAnswer, Route, SinkError};
use tokio::sync::Notify;

use super::inbound::{Access, group_session};
use crate::deliver::heartbeat::{Heartbeat, Reason};
use crate::run::controls::{self, Control};
use crate::run::jobs::Redactor;
use crate::store::{InboundRecord, InboundResult, JobRecord, Store};
use crate::util::log_throttle::LogThrottle;

pub const RERUN_CONFIRM_WINDOW: Duration = Duration::from_secs(30);
/// A second press sooner than this is a double click, not a confirmation.
const RERUN_MIN_GAP: Duration = Duration::from_millis(700);
/// Unconfirmed [Rerun] presses remembered at most; the oldest go first.
const MAX_PENDING_RERUNS: usize = 1_000;

pub struct Presses {
    store: Store,
    access: Access,
    commands: Arc<Notify>,
    heartbeat: Heartbeat,
    redactor: Redactor,
    refusals_logged: LogThrottle,
    /// (presser, job) → the [Rerun] press waiting for its confirmation.
    reruns: Mutex<HashMap<(String, String), PendingRerun>>,
}

impl Presses {
    pub fn new(
        store: Store,
        access: Access,
        commands: Arc<Notify>,
        heartbeat: Heartbeat,
        redactor: Redactor,
    ) -> Self {
        Presses {
            store,
            access,
            commands,
            heartbeat,
            redactor,
            refusals_logged: LogThrottle::new(Duration::from_secs(1)),
            reruns: Mutex::default(),
        }
    }

    pub async fn take(&self, mut press: Press) -> Result<PressAnswer, SinkError> {
        let channel = press.route.channel.clone();
        let presser = format!("{channel}:{}", press.sender_id);
        if !self.access.is_allowed(&channel, &press.sender_id) {
            // A group full of strangers pressing must not flood the log.
            if let Some(held_back) = self.refusals_logged.admit() {
                tracing::info!(sender = %presser, held_back, "refused a button press from a sender not in [access] allow");
            }
            return Ok(answer(format!(
                "not authorized: {presser} is not allowed to use this relay"
            )));
        }
        let Some((control, job_id)) = controls::parse(&press.action) else {
            return Ok(answer("this button is not one of this relay's".into()));
        };
        let job_id = job_id.to_string();
        // As for messages: a conversation seen as a group stays one.
        if press.route.chat_type == ChatType::Direct
            && self
                .store
                .has_route(&group_session(&channel, &press.route.chat_id))
                .await
                .map_err(unavailable)?
        {
            press.route.chat_type = ChatType::Group;
        }
        let Some((job, session)) = self.find_job(&mut press, &job_id).await? else {
            return Ok(answer(format!("no job {job_id} in this conversation")));
        };
        let command_line = self.redactor.one_line(&job.command, 100);
        let stored_id = format!("press:{}", press.press_id);
        let (command, done) = match control {
            Control::Kill if job.state.is_final() => {
                return Ok(answer(format!(
                    "job {} has already finished ({})",
                    job.id,
                    job.state.as_str()
                )));
            }
            Control::Kill => (
                format!("/kill {}", job.id),
                format!("stopping job {}", job.id),
            ),
            Control::Tail => (
                format!("/tail {}", job.id),
                format!("sending the last lines of job {}", job.id),
            ),
            Control::Rerun => {
                let done = format!("running `{command_line}` again");
                // A confirming press delivered again (after a restart too) is known by the
                // store, before it could count as a first press.
                if self
                    .store
                    .was_seen(&press.route, &stored_id)
                    .await
                    .map_err(unavailable)?
                {
                    return Ok(answer(format!("already pressed: {done}")));
                }
                match self.rerun_step(&presser, &job, &press.press_id) {
                    RerunStep::Ask => {
                        return Ok(answer(format!(
                            "press Rerun again within {}s to run `{command_line}` again",
                            RERUN_CONFIRM_WINDOW.as_secs()
                        )));
                    }
                    RerunStep::AlreadyRan => {
                        return Ok(answer(format!(
                            "`{command_line}` was just run again: see its acknowledgement"
                        )));
                    }
                    RerunStep::Go => (format!("/exec {}", job.command), done),
                }
            }
        };
        // A press on a message the platform no longer shows in full (Telegram's inaccessible
        // ones) names no topic: the job's own, when it is the same chat.
        if press.route.thread_id.is_none()
            && job.origin.channel == press.route.channel
            && job.origin.chat_id == press.route.chat_id
        {
            press.route.thread_id = job.origin.thread_id.clone();
        }
        // Answers in the chat reply to the pressed message, where the platform threads them.
        let route = Route {
            reply_to_message_id: press.on_message_id.clone(),
            ..press.route
        };
        let record = InboundRecord {
            session: session.clone(),
            route,
            sender: presser,
            text: command,
            platform_message_id: Some(stored_id),
            sent_at_ms: None,
        };
        match self.store.accept_inbound(record).await {
            Ok(InboundResult::Stored {
                has_queued_events, ..
            }) => {
                tracing::info!(job_id = %job.id, control = control.label(), "a button press stored");
                self.commands.notify_one();
                if has_queued_events {
                    // Events waiting for a route (or for this person) go out now.
                    self.heartbeat.request(Reason::Wake, Some(session));
                }
                Ok(answer(done))
            }
            Ok(InboundResult::Duplicate { .. }) => Ok(answer(format!("already pressed: {done}"))),
            Err(error) if error.is_disk_full() => Ok(answer(
                "refused: the relay's disk is full, so it takes no new commands".into(),
            )),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// The job `job_id` of the presser's session in this conversation, and that session.
    /// Feishu's callbacks do not say whether a chat is direct: one the adapter has not seen
    /// since it started comes as a group; a job started in this very chat, when it was the
    /// presser's direct chat, is theirs all the same.
    async fn find_job(
        &self,
        press: &mut Press,
        job_id: &str,
    ) -> Result<Option<(JobRecord, String)>, SinkError> {
        let session = self.access.session_key(&press.route, &press.sender_id);
        if let Some(job) = self.job_of(&session, job_id).await? {
            return Ok(Some((job, session)));
        }
        if press.route.chat_type == ChatType::Group {
            let direct = Route {
                chat_type: ChatType::Direct,
                ..press.route.clone()
            };
            let session = self.access.session_key(&direct, &press.sender_id);
            if let Some(job) = self.job_of(&session, job_id).await?
                && job.origin.chat_type == ChatType::Direct
                && job.origin.channel == press.route.channel
                && job.origin.chat_id == press.route.chat_id
            {
                press.route.chat_type = ChatType::Direct;
                return Ok(Some((job, session)));
            }
        }
        Ok(None)
    }

    /// The job by its whole id (buttons carry it), if it is `session`'s.
    async fn job_of(&self, session: &str, job_id: &str) -> Result<Option<JobRecord>, SinkError> {
        Ok(self
            .store
            .job(job_id)
            .await
            .map_err(unavailable)?
            .filter(|job| job.session == session))
    }

    /// Where this [Rerun] press stands: the first of a pair (or a second too soon after it to
    /// be more than a double click), the confirming one, or one after a rerun the window
    /// still covers (a burst of clicks runs it once).
    fn rerun_step(&self, presser: &str, job: &JobRecord, press_id: &str) -> RerunStep {
        let Ok(mut reruns) = self.reruns.lock() else {
            return RerunStep::Ask;
        };
        let now = Instant::now();
        reruns.retain(|_, pending| {
            let last = pending.confirmed_at.unwrap_or(pending.first_at);
            now.duration_since(last) < RERUN_CONFIRM_WINDOW
        });
        let key = (presser.to_string(), job.id.clone());
        if let Some(pending) = reruns.get_mut(&key) {
            if pending.confirmed_at.is_some() {
                return RerunStep::AlreadyRan;
            }
            if pending.first == press_id || now.duration_since(pending.first_at) < RERUN_MIN_GAP {
                return RerunStep::Ask;
            }
            pending.confirmed_at = Some(now);
            return RerunStep::Go;
        }
        if reruns.len() >= MAX_PENDING_RERUNS
            && let Some(oldest) = reruns
                .iter()
                .min_by_key(|(_, pending)| pending.first_at)
                .map(|(key, _)| key.clone())
        {
            reruns.remove(&oldest);
        }
        reruns.insert(
            key,
            PendingRerun {
                first_at: now,
                first: press_id.to_string(),
                confirmed_at: None,
            },
        );
        RerunStep::Ask
    }
}

enum RerunStep {
    Ask,
    Go,
    AlreadyRan,
}

/// A [Rerun] pressed once, waiting for its confirming press, or confirmed.
struct PendingRerun {
    first_at: Instant,
    first: String,
    confirmed_at: Option<Instant>,
}

fn answer(text: String) -> PressAnswer {
    PressAnswer { text }
}

fn unavailable(error: crate::store::StoreError) -> SinkError {
    SinkError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{exit_ok, open, route, stored_job};
    use crate::store::{InboxRecord, JobFinal};

    const ALICE_SESSION: &str = "user:webhook:alice";

    fn presses(store: &Store) -> Presses {
        let config = crate::config::Config::parse(
            "[access]\nallow = [\"webhook:alice\", \"webhook:bob\"]\n",
            "test",
        )
        .unwrap();
        let outbox = crate::deliver::outbox::Outbox::new(store.clone(), Vec::new());
        let (heartbeat, _loop) =
            crate::deliver::heartbeat::new(Default::default(), store.clone(), outbox);
        Presses::new(
            store.clone(),
            Access::from_config(&config),
            Arc::new(Notify::new()),
            heartbeat,
            Redactor::default(),
        )
    }

    fn press(who: &str, action: &str, id: &str) -> Press {
        Press {
            route: route("a"),
            sender_id: who.into(),
            action: action.into(),
            press_id: id.into(),
            on_message_id: Some("m-ack".into()),
        }
    }

    async fn stored_commands(store: &Store) -> Vec<InboxRecord> {
        store.pending_inbox(100).await.unwrap()
    }

    #[tokio::test]
    async fn a_kill_press_is_stored_as_the_owners_kill_and_acts_once() {
        let (_dir, store) = open();
        stored_job(&store, "7f3a9c", ALICE_SESSION).await;
        let presses = presses(&store);

        let answer = presses
            .take(press("alice", "k:7f3a9c", "cq-1"))
            .await
            .unwrap();
        assert_eq!(answer.text, "stopping job 7f3a9c");
        let stored = stored_commands(&store).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].text, "/kill 7f3a9c");
        assert_eq!(stored[0].sender, "webhook:alice");
        assert_eq!(stored[0].session, ALICE_SESSION);
        assert_eq!(
            stored[0].route.reply_to_message_id.as_deref(),
            Some("m-ack")
        );

        // The platform hands the same press over again: nothing more is stored.
        let again = presses
            .take(press("alice", "k:7f3a9c", "cq-1"))
            .await
            .unwrap();
        assert!(again.text.starts_with("already pressed"), "{again:?}");
        assert_eq!(stored_commands(&store).await.len(), 1);
    }

    #[tokio::test]
    async fn a_stranger_or_another_conversation_cannot_press_a_jobs_buttons() {
        let (_dir, store) = open();
        stored_job(&store, "7f3a9c", ALICE_SESSION).await;
        let presses = presses(&store);

        let stranger = presses
            .take(press("mallory", "k:7f3a9c", "cq-1"))
            .await
            .unwrap();
        assert!(stranger.text.starts_with("not authorized"), "{stranger:?}");
        // Bob is allowed, but the job is not of his conversation (his direct chat).
        let bob = presses
            .take(press("bob", "k:7f3a9c", "cq-2"))
            .await
            .unwrap();
        assert_eq!(bob.text, "no job 7f3a9c in this conversation");
        let forged = presses
            .take(press("alice", "k:7f3a9c; reboot", "cq-3"))
            .await
            .unwrap();
        assert_eq!(forged.text, "this button is not one of this relay's");
        assert!(stored_commands(&store).await.is_empty());
    }

    #[tokio::test]
    async fn a_kill_after_the_job_ended_says_so() {
        let (_dir, store) = open();
        stored_job(&store, "7f3a9c", ALICE_SESSION).await;
        let ended: JobFinal = exit_ok();
        assert!(store.finish_job("7f3a9c", ended, None, 10).await.unwrap());
        let presses = presses(&store);
        let answer = presses
            .take(press("alice", "k:7f3a9c", "cq-1"))
            .await
            .unwrap();
        assert_eq!(answer.text, "job 7f3a9c has already finished (exited)");
        assert!(stored_commands(&store).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rerun_runs_the_same_command_line_once_after_a_second_press() {
        let (_dir, store) = open();
        stored_job(&store, "7f3a9c", ALICE_SESSION).await;
        let presses = presses(&store);

        let first = presses
            .take(press("alice", "r:7f3a9c", "cq-1"))
            .await
            .unwrap();
        assert!(
            first.text.starts_with("press Rerun again within 30s"),
            "{first:?}"
        );
        // The first press delivered again, or a double click, confirms nothing.
        presses
            .take(press("alice", "r:7f3a9c", "cq-1"))
            .await
            .unwrap();
        let double = presses
            .take(press("alice", "r:7f3a9c", "cq-2"))
            .await
            .unwrap();
        assert!(double.text.starts_with("press Rerun again"), "{double:?}");
        assert!(stored_commands(&store).await.is_empty());

        tokio::time::advance(Duration::from_secs(2)).await;
        let second = presses
            .take(press("alice", "r:7f3a9c", "cq-3"))
            .await
            .unwrap();
        assert_eq!(second.text, "running `true` again");
        let stored = stored_commands(&store).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].text, "/exec true");
        // The confirming press delivered again runs nothing more, nor do more clicks.
        let replay = presses
            .take(press("alice", "r:7f3a9c", "cq-3"))
            .await
            .unwrap();
        assert_eq!(replay.text, "already pressed: running `true` again");
        tokio::time::advance(Duration::from_secs(2)).await;
        for id in ["cq-4", "cq-5"] {
            let more = presses.take(press("alice", "r:7f3a9c", id)).await.unwrap();
            assert!(more.text.contains("was just run again"), "{more:?}");
        }
        assert_eq!(stored_commands(&store).await.len(), 1);
    }

    /// After a restart (nothing in memory), the confirming press delivered again is known by
    /// the store: it runs nothing and arms nothing.
    #[tokio::test]
    async fn a_confirming_press_replayed_after_a_restart_reruns_nothing() {
        let (_dir, store) = open();
        stored_job(&store, "7f3a9c", ALICE_SESSION).await;
        let before = presses(&store);
        before
            .take(press("alice", "r:7f3a9c", "cq-1"))
            .await
            .unwrap();
        // A confirmation a moment later than a double click.
        if let Ok(mut reruns) = before.reruns.lock() {
            for pending in reruns.values_mut() {
                pending.first_at -= RERUN_MIN_GAP;
            }
        }
        before
            .take(press("alice", "r:7f3a9c", "cq-2"))
            .await
            .unwrap();
        assert_eq!(stored_commands(&store).await.len(), 1);

        let after = presses(&store);
        let replay = after
            .take(press("alice", "r:7f3a9c", "cq-2"))
            .await
            .unwrap();
        assert!(replay.text.starts_with("already pressed"), "{replay:?}");
        let next = after
            .take(press("alice", "r:7f3a9c", "cq-3"))
            .await
            .unwrap();
        assert!(next.text.starts_with("press Rerun again"), "{next:?}");
        assert_eq!(stored_commands(&store).await.len(), 1);
    }

    /// Feishu does not say a chat is direct: a press in the presser's own direct chat, on a job
    /// started there, finds it; the same job from a group chat is not found.
    #[tokio::test]
    async fn a_press_in_a_direct_chat_taken_for_a_group_finds_the_job_started_there() {
        let (_dir, store) = open();
        stored_job(&store, "7f3a9c", ALICE_SESSION).await;
        let presses = presses(&store);
        let mut in_dm = press("alice", "k:7f3a9c", "ev-1");
        in_dm.route.chat_type = ChatType::Group;
        assert_eq!(
            presses.take(in_dm).await.unwrap().text,
            "stopping job 7f3a9c"
        );
        let mut elsewhere = press("alice", "k:7f3a9c", "ev-2");
        elsewhere.route = Route {
            chat_id: "group-b".into(),
            chat_type: ChatType::Group,
            ..route("a")
        };
        let answer = presses.take(elsewhere).await.unwrap();
        assert_eq!(answer.text, "no job 7f3a9c in this conversation");
    }
}
