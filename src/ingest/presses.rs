//! Button presses: each is answered at once, to its presser alone, and what it asks for is
//! stored as the command it stands for (`/kill 7f3a9c`, `/tail 7f3a9c`, `/exec <the same
//! command line>`), by that person in that conversation. So a press is authorized exactly
//! like the command, acted on by the command processor after it is stored, and deduped on the
//! platform's id of the press: a redelivered press never kills or reruns twice.
//!
//! [Rerun] asks for a second press within [`RERUN_CONFIRM_WINDOW`]; the first is only
//! remembered (in memory: a restart asks again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use execrelay_channel::{ChatType, Press, PressAnswer, Route, SinkError};
use tokio::sync::Notify;

use super::inbound::{Access, group_session};
use crate::run::controls::{self, Control};
use crate::run::jobs::Redactor;
use crate::store::{InboundRecord, InboundResult, JobRecord, Store};

pub const RERUN_CONFIRM_WINDOW: Duration = Duration::from_secs(30);
/// Unconfirmed [Rerun] presses remembered at most; the oldest go first.
const MAX_PENDING_RERUNS: usize = 1_000;

pub struct Presses {
    store: Store,
    access: Access,
    commands: Arc<Notify>,
    redactor: Redactor,
    /// (presser, job) → the [Rerun] press waiting for its confirmation.
    reruns: Mutex<HashMap<(String, String), PendingRerun>>,
}

impl Presses {
    pub fn new(store: Store, access: Access, commands: Arc<Notify>, redactor: Redactor) -> Self {
        Presses {
            store,
            access,
            commands,
            redactor,
            reruns: Mutex::default(),
        }
    }

    pub async fn take(&self, mut press: Press) -> Result<PressAnswer, SinkError> {
        let channel = press.route.channel.clone();
        let presser = format!("{channel}:{}", press.sender_id);
        if !self.access.is_allowed(&channel, &press.sender_id) {
            tracing::info!(sender = %presser, "refused a button press from a sender not in [access] allow");
            return Ok(answer(format!(
                "not authorized: {presser} is not allowed to use this relay"
            )));
        }
        let Some((control, job_id)) = controls::parse(&press.action) else {
            return Ok(answer("this button is not one of this relay's".into()));
        };
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
        let session = self.access.session_key(&press.route, &press.sender_id);
        let job = self
            .store
            .jobs_by_prefix(Some(&session), job_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|job| job.id == job_id);
        let Some(job) = job else {
            return Ok(answer(format!("no job {job_id} in this conversation")));
        };
        let command = match control {
            Control::Kill if job.state.is_final() => {
                return Ok(answer(format!(
                    "job {} has already finished ({})",
                    job.id,
                    job.state.as_str()
                )));
            }
            Control::Kill => format!("/kill {}", job.id),
            Control::Tail => format!("/tail {}", job.id),
            Control::Rerun => {
                if !self.confirmed(&presser, &job, &press.press_id) {
                    return Ok(answer(format!(
                        "press Rerun again within {}s to run `{}` again",
                        RERUN_CONFIRM_WINDOW.as_secs(),
                        self.redactor.one_line(&job.command, 100)
                    )));
                }
                format!("/exec {}", job.command)
            }
        };
        let done = match control {
            Control::Kill => format!("stopping job {}", job.id),
            Control::Tail => format!("sending the last lines of job {}", job.id),
            Control::Rerun => format!(
                "running `{}` again",
                self.redactor.one_line(&job.command, 100)
            ),
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
            session,
            route,
            sender: presser,
            text: command,
            platform_message_id: Some(format!("press:{}", press.press_id)),
            sent_at_ms: None,
        };
        match self.store.accept_inbound(record).await {
            Ok(InboundResult::Stored { .. }) => {
                tracing::info!(job_id = %job.id, control = control.label(), "a button press stored");
                self.commands.notify_one();
                Ok(answer(done))
            }
            Ok(InboundResult::Duplicate { .. }) => Ok(answer(format!("already pressed: {done}"))),
            Err(error) if error.is_disk_full() => Ok(answer(
                "refused: the relay's disk is full, so it takes no new commands".into(),
            )),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Whether this [Rerun] press goes ahead: it confirms one pressed within the window, or
    /// it is the confirming press delivered again (then the store's dedupe answers it). The
    /// first press delivered again confirms nothing; otherwise a press becomes the one waiting.
    fn confirmed(&self, presser: &str, job: &JobRecord, press_id: &str) -> bool {
        let Ok(mut reruns) = self.reruns.lock() else {
            return false;
        };
        let now = Instant::now();
        reruns.retain(|_, pending| now.duration_since(pending.first_at) < RERUN_CONFIRM_WINDOW);
        let key = (presser.to_string(), job.id.clone());
        if let Some(pending) = reruns.get_mut(&key) {
            match &pending.confirmed_by {
                Some(confirming) if confirming == press_id => return true,
                None if pending.first != press_id => {
                    pending.confirmed_by = Some(press_id.to_string());
                    return true;
                }
                None => return false,
                // A new press after a rerun: it starts over.
                Some(_) => {}
            }
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
                confirmed_by: None,
            },
        );
        false
    }
}

/// A [Rerun] pressed once, waiting for its confirming press.
struct PendingRerun {
    first_at: Instant,
    first: String,
    confirmed_by: Option<String>,
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
        Presses::new(
            store.clone(),
            Access::from_config(&config),
            Arc::new(Notify::new()),
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

    #[tokio::test]
    async fn rerun_runs_the_same_command_line_after_a_second_press() {
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
        // The first press delivered again confirms nothing.
        presses
            .take(press("alice", "r:7f3a9c", "cq-1"))
            .await
            .unwrap();
        assert!(stored_commands(&store).await.is_empty());

        let second = presses
            .take(press("alice", "r:7f3a9c", "cq-2"))
            .await
            .unwrap();
        assert_eq!(second.text, "running `true` again");
        let stored = stored_commands(&store).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].text, "/exec true");
        // The confirming press delivered again runs nothing more.
        let replay = presses
            .take(press("alice", "r:7f3a9c", "cq-2"))
            .await
            .unwrap();
        assert_eq!(replay.text, "already pressed: running `true` again");
        assert_eq!(stored_commands(&store).await.len(), 1);
        // A new press after the rerun starts over.
        let later = presses
            .take(press("alice", "r:7f3a9c", "cq-3"))
            .await
            .unwrap();
        assert!(later.text.starts_with("press Rerun again"), "{later:?}");
        assert_eq!(stored_commands(&store).await.len(), 1);
    }
}
