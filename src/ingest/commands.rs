//! Chat commands: `/exec` (alias `/run`), `/jobs`, `/tail`, `/kill`, `/status`, `/help`.
//!
//! The processor takes stored inbox messages in order and marks each processed in the same
//! transaction as what it produced (a new job and its acknowledgement, or a reply), so a
//! restart neither loses a command nor runs it twice. Text that is not a command only moved
//! the session's last route (done at accept time) and gets no reply.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use execrelay_channel::CancellationToken;
use tokio::sync::Notify;

use crate::data_dir::FreeSpace;
use crate::deliver::outbox::Outbox;
use crate::run::controls;
use crate::run::exec::ExecRuntime;
use crate::run::jobs::{self, Redactor, new_job_id};
use crate::store::{InboxRecord, JobRecord, NewJob, NewOutbox, Store, StoreError, now_ms};
use crate::util::duration::format_duration;
use crate::util::log_throttle::LogThrottle;
use crate::util::once_per_key::OncePerKey;
use crate::util::size::format_size;

const BATCH: usize = 64;
const POLL: Duration = Duration::from_secs(5);
const DEFAULT_TAIL_LINES: usize = 40;
const MAX_TAIL_LINES: usize = 2000;
const MAX_TAIL_CHARS: usize = 20_000;
/// Well under the kernel's argument limit, so a long command fails here with a clear reply.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

const HELP: &str = "commands:
/exec <command line>  run it (alias /run); you get `exec finished: ...` when it ends
/jobs                 your recent jobs
/tail <id> [lines]    the end of a job's output
/kill <id>            stop a running job
/status               the relay's state
/help                 this list";

/// For a command stored before the disk filled: it stays queued (across restarts too), so it
/// is delayed, not refused.
const DISK_FULL_DELAY: &str = "not started yet: the relay's disk is full. This command starts by itself once space is freed; no need to send it again.";

/// An `/exec` that reaches the relay more than this after it was sent is answered, not run:
/// its sender has likely moved on (a Discord message fetched after the relay was down for a
/// day, a platform's late redelivery). Measured from the platform's send time
/// (`InboundMessage::sent_at_ms`) to when the relay stored the message, so a command stored in
/// time still starts after a delay of the relay's own (a full disk).
pub const EXEC_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How late `message` reached the relay, when that is past [`EXEC_WINDOW`].
fn too_old(message: &InboxRecord) -> Option<Duration> {
    let late = message.received_at_ms.checked_sub(message.sent_at_ms?)?;
    let late = Duration::from_millis(u64::try_from(late).ok()?);
    (late > EXEC_WINDOW).then_some(late)
}

/// For plain chat in a direct conversation: someone new may not know what the bot does.
const PLAIN_TEXT_HINT: &str = "I run commands: /exec <command line>, /help";
/// A person chatting gets the hint once in a while, not at every line.
const PLAIN_TEXT_HINT_EVERY: Duration = Duration::from_secs(3600);

const TEXT_ONLY: &str =
    "execrelay reads text messages only: send a command such as /exec ls, or /help";

/// The commands as a platform's command menu shows them (Telegram's `setMyCommands`).
pub const COMMAND_MENU: &[(&str, &str)] = &[
    ("exec", "Run a shell command; you are told when it finishes"),
    ("run", "Same as /exec"),
    ("jobs", "Your recent jobs"),
    ("tail", "The end of a job's output: /tail <id> [lines]"),
    ("kill", "Stop a running job: /kill <id>"),
    ("status", "The relay's state"),
    ("help", "The list of commands"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(String),
    Jobs,
    Tail {
        job: String,
        lines: Option<String>,
    },
    Kill(String),
    Status,
    Help,
    Unknown(String),
    /// Not a command: plain chat.
    Text,
}

/// Parses a chat line. `/cmd@botname` is accepted (platforms add the bot's name in groups).
pub fn parse(text: &str) -> Command {
    let text = text.trim();
    let Some(rest) = text.strip_prefix('/') else {
        return Command::Text;
    };
    let (word, args) = match rest.find(char::is_whitespace) {
        Some(at) => (&rest[..at], rest[at..].trim()),
        None => (rest, ""),
    };
    let name = word.split('@').next().unwrap_or(word).to_ascii_lowercase();
    let mut parts = args.split_whitespace();
    match name.as_str() {
        "exec" | "run" => Command::Exec(args.to_string()),
        "jobs" => Command::Jobs,
        "tail" => Command::Tail {
            job: parts.next().unwrap_or("").to_string(),
            lines: parts.next().map(str::to_string),
        },
        "kill" => Command::Kill(parts.next().unwrap_or("").to_string()),
        "status" => Command::Status,
        "help" | "start" => Command::Help,
        "" => Command::Text,
        other => Command::Unknown(other.to_string()),
    }
}

pub struct CommandProcessor {
    store: Store,
    outbox: Outbox,
    exec: ExecRuntime,
    workdir: String,
    /// Room the data directory keeps for the store: new jobs wait for it.
    space: FreeSpace,
    started: Instant,
    wake: Arc<Notify>,
    /// Inbox rows whose sender was told that the disk is full, so that a row retried every
    /// poll is announced once (once more after a restart).
    delayed_while_full: Mutex<HashSet<i64>>,
    failures: LogThrottle,
    /// Direct chats that were given [`PLAIN_TEXT_HINT`] within the hour.
    hinted: OncePerKey,
}

impl CommandProcessor {
    pub fn new(
        store: Store,
        outbox: Outbox,
        exec: ExecRuntime,
        workdir: String,
        wake: Arc<Notify>,
        space: FreeSpace,
    ) -> CommandProcessor {
        CommandProcessor {
            store,
            outbox,
            exec,
            workdir,
            space,
            started: Instant::now(),
            wake,
            delayed_while_full: Mutex::default(),
            failures: LogThrottle::new(Duration::from_secs(10)),
            hinted: OncePerKey::new(PLAIN_TEXT_HINT_EVERY, 10_000),
        }
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.store.pending_inbox(BATCH).await {
                Ok(messages) => {
                    let full = messages.len() == BATCH;
                    let mut progressed = false;
                    for message in messages {
                        if stop.is_cancelled() {
                            return;
                        }
                        let id = message.id;
                        match self.process(message).await {
                            Ok(()) => progressed = true,
                            Err(error) => {
                                // Retried every poll while the store fails: log a few.
                                if let Some(held_back) = self.failures.admit() {
                                    tracing::error!(inbox_id = id, error = %error, held_back, "command failed; it stays pending");
                                }
                            }
                        }
                    }
                    // More waiting, and the store is taking writes: go on without a pause.
                    if full && progressed {
                        continue;
                    }
                }
                Err(error) => tracing::error!(error = %error, "cannot read the inbox"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    fn reply(&self, message: &InboxRecord, text: &str) -> Result<Vec<NewOutbox>, StoreError> {
        match self
            .outbox
            .compose(&message.route, Some(&message.session), "reply", text)
        {
            Ok(reply) => Ok(vec![reply]),
            Err(error) => {
                // The channel went away (disabled in config since): nobody to answer.
                tracing::warn!(error = %error, "cannot reply");
                Ok(Vec::new())
            }
        }
    }

    async fn answer(&self, message: &InboxRecord, text: &str) -> Result<(), StoreError> {
        let replies = self.reply(message, text)?;
        self.store.finish_inbox(message.id, None, replies).await?;
        self.outbox.wake(&message.route.channel);
        Ok(())
    }

    async fn process(&self, message: InboxRecord) -> Result<(), StoreError> {
        match parse(&message.text) {
            // An empty text is a message that carried none (an image, a file): say so, in a
            // direct chat (in a group, pictures are usually for the people there).
            Command::Text
                if message.text.trim().is_empty()
                    && message.route.chat_type == execrelay_channel::ChatType::Direct =>
            {
                self.answer(&message, TEXT_ONLY).await
            }
            Command::Text
                if message.route.chat_type == execrelay_channel::ChatType::Direct
                    && self.hinted.admit(&format!(
                        "{}:{}",
                        message.route.channel, message.route.chat_id
                    )) =>
            {
                self.answer(&message, PLAIN_TEXT_HINT).await
            }
            Command::Text => self.store.finish_inbox(message.id, None, Vec::new()).await,
            Command::Exec(command) => self.exec(&message, command).await,
            Command::Help => self.answer(&message, HELP).await,
            Command::Unknown(name) => {
                let text = format!("unknown command /{name}; /help lists the commands");
                self.answer(&message, &text).await
            }
            Command::Jobs => {
                let jobs = self.store.recent_jobs(Some(&message.session), 10).await?;
                let listing = render_jobs(&jobs, self.exec.redactor());
                self.answer(&message, &listing).await
            }
            Command::Status => {
                let counts = self.store.counts().await?;
                let mut text = format!(
                    "execrelay {}: up {}, {} running jobs (max {}), {} queued events, {} deliveries pending, {} dead-lettered",
                    env!("CARGO_PKG_VERSION"),
                    format_duration(self.started.elapsed()),
                    counts.running_jobs,
                    self.exec.max_concurrent(),
                    counts.queued_events,
                    counts.pending_deliveries,
                    counts.dead_deliveries
                );
                for (channel, failing) in self.outbox.health().failing() {
                    let since = Duration::from_millis((now_ms() - failing.since_ms).max(0) as u64);
                    text.push_str(&format!(
                        "\nchannel {channel} failing for {}: {}",
                        format_duration(since),
                        failing.last_error
                    ));
                }
                for (why, count) in &counts.blocked_events {
                    text.push_str(&format!("\n{count} queued events blocked: {why}"));
                }
                self.answer(&message, &text).await
            }
            Command::Tail { job, lines } => {
                let text = match self.find_job(&message, &job).await? {
                    Err(why) => why,
                    Ok(found) => match lines.as_deref().map(str::parse::<usize>) {
                        Some(Err(_)) => "usage: /tail <id> [lines]".to_string(),
                        Some(Ok(n)) => self.render_tail(&found, n.min(MAX_TAIL_LINES)).await,
                        None => self.render_tail(&found, DEFAULT_TAIL_LINES).await,
                    },
                };
                self.answer(&message, &text).await
            }
            Command::Kill(job) => {
                let text = match self.find_job(&message, &job).await? {
                    Err(why) => why,
                    Ok(found) => match self.exec.kill(&found).await {
                        Ok(()) => format!("stopping job {}", found.id),
                        Err(why) => why,
                    },
                };
                self.answer(&message, &text).await
            }
        }
    }

    async fn exec(&self, message: &InboxRecord, command: String) -> Result<(), StoreError> {
        if command.is_empty() {
            return self.answer(message, "usage: /exec <command line>").await;
        }
        if let Some(late) = too_old(message) {
            tracing::info!(
                inbox_id = message.id,
                late_ms = late.as_millis() as u64,
                "an /exec past the window; not run"
            );
            let text = format!(
                "too old, not run: `{}` was sent {} before the relay received it (the relay was \
                 not running, or not connected, then); an /exec that arrives more than {} after \
                 it was sent is not run. Send it again if you still want it.",
                self.exec.redactor().one_line(&command, 300),
                format_duration(late),
                format_duration(EXEC_WINDOW)
            );
            return self.answer(message, &text).await;
        }
        if command.len() > MAX_COMMAND_BYTES {
            let text = format!(
                "not started: the command is {} bytes, the limit is {MAX_COMMAND_BYTES}; put it in a script",
                command.len()
            );
            return self.answer(message, &text).await;
        }
        if self.exec.running() >= self.exec.max_concurrent() {
            let text = format!(
                "not started: {} jobs are running, the limit is {}; try again when one ends",
                self.exec.running(),
                self.exec.max_concurrent()
            );
            return self.answer(message, &text).await;
        }
        if let Some(free) = self.space.short() {
            let text = format!(
                "not started: the relay's disk has {} free, and it keeps {} (store.min_free) \
                 for what it owes; running jobs still report back here. Try again once space \
                 is freed.",
                format_size(free),
                format_size(self.space.min_free)
            );
            return self.answer(message, &text).await;
        }
        let limit = self.exec.per_session_limit();
        let mine = self.store.unfinished_jobs_of(&message.session).await?;
        if mine >= limit {
            let text = format!(
                "not started: you have {mine} jobs running, the limit per person is {limit} \
                 ([exec] max_per_session); try again when one ends"
            );
            return self.answer(message, &text).await;
        }
        for _ in 0..5 {
            let job = NewJob {
                id: new_job_id(),
                session: message.session.clone(),
                origin: message.route.clone(),
                command: command.clone(),
                cwd: self.workdir.clone(),
                requester: message.sender.clone(),
            };
            let ack = format!(
                "started job {}: {}",
                job.id,
                self.exec.redactor().one_line(&command, 300)
            );
            let replies = self
                .reply(message, &ack)?
                .into_iter()
                .map(|reply| NewOutbox {
                    kind: "ack",
                    job_id: Some(job.id.clone()),
                    buttons: controls::ack_buttons(&job.id),
                    ..reply
                })
                .collect();
            match self
                .store
                .finish_inbox(message.id, Some(job.clone()), replies)
                .await
            {
                Ok(()) => {
                    crate::util::failpoint::hit(crate::util::failpoint::JOB_RECORDED);
                    if let Ok(mut delayed) = self.delayed_while_full.lock() {
                        delayed.remove(&message.id);
                    }
                    self.outbox.wake(&message.route.channel);
                    self.exec.start(JobRecord {
                        id: job.id,
                        session: job.session,
                        origin: job.origin,
                        command: job.command,
                        cwd: job.cwd,
                        requester: job.requester,
                        state: crate::store::JobState::Starting,
                        created_at: now_ms(),
                        started_at: None,
                        finished_at: None,
                        supervisor_pid: None,
                        exit_code: None,
                        signal: None,
                        detail: None,
                    });
                    return Ok(());
                }
                Err(StoreError::Conflict(why)) if why.contains("is taken") => continue,
                Err(error) if error.is_disk_full() => {
                    let first = self
                        .delayed_while_full
                        .lock()
                        .is_ok_and(|mut delayed| delayed.insert(message.id));
                    if first {
                        tracing::warn!(inbox_id = message.id, error = %error, "a job waits: the disk is full");
                        self.outbox.notify_unstored(&message.route, DISK_FULL_DELAY);
                    }
                    // It stays pending and starts once the store takes writes again.
                    return Err(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict("no free job id after 5 tries".into()))
    }

    /// A job of this session by unique id prefix; `Err` carries the reply explaining why not.
    async fn find_job(
        &self,
        message: &InboxRecord,
        prefix: &str,
    ) -> Result<Result<JobRecord, String>, StoreError> {
        if prefix.is_empty() {
            return Ok(Err("which job? give its id (or a unique prefix)".into()));
        }
        let mut found = self
            .store
            .jobs_by_prefix(Some(&message.session), prefix)
            .await?;
        Ok(match found.len() {
            0 => Err(format!("no job {prefix} in this conversation")),
            1 => Ok(found.remove(0)),
            n => Err(format!("{n} jobs start with {prefix}; give more of the id")),
        })
    }

    async fn render_tail(&self, job: &JobRecord, lines: usize) -> String {
        let tail = self.exec.tail(&job.id, lines, MAX_TAIL_CHARS).await;
        if tail.text.is_empty() {
            format!(
                "job {} ({}) has printed nothing",
                job.id,
                job.state.as_str()
            )
        } else {
            format!("job {} ({}):\n{}", job.id, job.state.as_str(), tail.text)
        }
    }
}

pub fn render_jobs(jobs: &[JobRecord], redactor: &Redactor) -> String {
    if jobs.is_empty() {
        return "no jobs yet; start one with /exec <command>".into();
    }
    let mut lines = vec!["recent jobs:".to_string()];
    for job in jobs {
        let outcome = match (job.exit_code, job.signal) {
            (Some(code), _) => format!("{} {code}", job.state.as_str()),
            (None, Some(signal)) => format!(
                "{} {}",
                job.state.as_str(),
                jobs::signal_name(signal as i32)
            ),
            _ => job.state.as_str().to_string(),
        };
        lines.push(format!(
            "{}  {:<16} {}",
            job.id,
            outcome,
            redactor.one_line(&job.command, 80)
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in "(?s).{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn exec_keeps_its_command_line(command in "[^\\s][^\n]{0,120}") {
            let parsed = parse(&format!("/exec {command}"));
            proptest::prop_assert_eq!(parsed, Command::Exec(command.trim().to_string()));
        }
    }

    #[test]
    fn the_command_menu_matches_the_parser_and_help() {
        for (name, description) in COMMAND_MENU {
            assert!(
                !matches!(
                    parse(&format!("/{name}")),
                    Command::Unknown(_) | Command::Text
                ),
                "/{name} is not a command"
            );
            assert!(
                HELP.contains(&format!("/{name}")),
                "/{name} missing from /help"
            );
            // Telegram: 1-32 lowercase letters, digits, underscores; 3-256 character descriptions.
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
            assert!((3..=256).contains(&description.chars().count()));
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse("/exec sleep 3; echo hi"),
            Command::Exec("sleep 3; echo hi".into())
        );
        assert_eq!(
            parse("  /run@execrelay_bot  ls -la "),
            Command::Exec("ls -la".into())
        );
        assert_eq!(parse("/EXEC"), Command::Exec(String::new()));
        assert_eq!(parse("/jobs"), Command::Jobs);
        assert_eq!(
            parse("/tail 7f3 100"),
            Command::Tail {
                job: "7f3".into(),
                lines: Some("100".into())
            }
        );
        assert_eq!(parse("/kill abc"), Command::Kill("abc".into()));
        assert_eq!(parse("/frobnicate"), Command::Unknown("frobnicate".into()));
        assert_eq!(parse("hello there"), Command::Text);
        assert_eq!(parse("/"), Command::Text);
    }

    #[test]
    fn an_exec_past_the_window_is_too_old() {
        let message = |sent_at_ms: Option<i64>, received_at_ms: i64| InboxRecord {
            id: 1,
            session: "user:discord:400".into(),
            route: execrelay_channel::Route {
                channel: "discord".into(),
                account: "900".into(),
                chat_id: "200".into(),
                thread_id: None,
                reply_to_message_id: None,
                chat_type: execrelay_channel::ChatType::Direct,
            },
            sender: "discord:400".into(),
            text: "/exec true".into(),
            sent_at_ms,
            received_at_ms,
        };
        let day = EXEC_WINDOW.as_millis() as i64;
        let now = 1_800_000_000_000;
        assert_eq!(too_old(&message(None, now)), None, "no send time: in time");
        assert_eq!(too_old(&message(Some(now - day), now)), None);
        assert_eq!(
            too_old(&message(Some(now - day - 1), now)),
            Some(EXEC_WINDOW + Duration::from_millis(1))
        );
        assert_eq!(
            too_old(&message(Some(now + 60_000), now)),
            None,
            "a clock ahead of ours"
        );
        assert_eq!(too_old(&message(Some(i64::MIN), now)), None, "no overflow");
    }

    #[test]
    fn multi_line_exec_keeps_every_line() {
        assert_eq!(
            parse("/exec echo a\necho b"),
            Command::Exec("echo a\necho b".into())
        );
    }
}
