//! The exec runtime: starts jobs under their supervisor, watches them, and turns an exit into
//! the job's final state plus its completion event, then asks for an `exec-event` heartbeat.
//!
//! It does not parse commands (`commands`) or render messages (`jobs`). The job directory is
//! the claim that a spawn was attempted: it is created right before the supervisor starts, so a
//! restart that finds a `starting` job without one knows the command never ran and starts it,
//! and one that finds the directory re-attaches to a live supervisor, reads the recorded exit,
//! or, when neither is there after a short grace (a supervisor started just before the relay
//! died may not have written its pid file yet), reports the job `lost`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;

use crate::config::ExecConfig;
use crate::deliver::heartbeat::{Heartbeat, Reason};
use crate::run::jobs::{self, Completion, Outcome, Redactor, Tail};
use crate::run::supervisor::{self, LOG_FILE};
use crate::store::{JobFinal, JobRecord, JobState, NewEvent, Store, now_ms};
use crate::util::log_throttle::FailStreak;

const REATTACH_POLL: Duration = Duration::from_millis(100);
/// A supervisor writes its pid file within milliseconds of starting; `/kill` and a restart
/// wait this long for it before concluding that the job is not running.
const PID_FILE_WAIT: Duration = Duration::from_secs(2);
const PID_FILE_POLL: Duration = Duration::from_millis(10);
const FINISH_RETRY: Duration = Duration::from_secs(1);

/// How a job ended, as its completion tells it.
struct Ended {
    outcome: Outcome,
    started: Option<i64>,
    finished: i64,
    stopped_background: u32,
    /// (bytes written, bytes dropped) of its output.
    output: (u64, u64),
}

impl Ended {
    /// An outcome the relay decided itself (never started, lost): no supervisor's record.
    fn without_record(outcome: Outcome) -> Ended {
        Ended {
            outcome,
            started: None,
            finished: now_ms(),
            stopped_background: 0,
            output: (0, 0),
        }
    }
}

#[derive(Clone)]
pub struct ExecRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: ExecConfig,
    jobs_dir: PathBuf,
    heartbeat: Heartbeat,
    redactor: Redactor,
    max_queued: usize,
    running: AtomicUsize,
    executable: PathBuf,
    /// What a supervisor and its job get instead of the relay's environment.
    job_env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    /// The uid and gid jobs run as (`[exec] run_as`).
    run_as: Option<(u32, u32)>,
    /// Jobs whose supervisor this relay has asked to start (or is giving a moment to show up
    /// after a restart) and has not seen exit: until its pid file is there, such a job is
    /// starting, not gone.
    supervisors: Mutex<HashMap<String, Supervisor>>,
}

#[derive(Clone, Copy)]
enum Supervisor {
    Starting,
    /// This relay's own child (pid, start time): the start time tells it from a later process
    /// given the same pid once it is reaped.
    Child(u32, u64),
}

impl ExecRuntime {
    pub fn new(
        store: Store,
        config: ExecConfig,
        jobs_dir: PathBuf,
        heartbeat: Heartbeat,
        redactor: Redactor,
        max_queued: usize,
    ) -> std::io::Result<ExecRuntime> {
        std::fs::create_dir_all(&jobs_dir)?;
        // Absolute, so that a supervisor's command line (which names its job directory) is
        // recognised after a restart from another working directory.
        let jobs_dir = std::fs::canonicalize(&jobs_dir)?;
        // Checked by the config already; resolved again here, as it is now.
        let run_as = match &config.run_as {
            Some(user) => Some(
                crate::util::accounts::resolve(user, config.run_as_group.as_deref())
                    .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let mut job_env = crate::run::job_env::job_environment(&config.env, std::env::vars_os());
        if let Some(account) = &run_as {
            // The job's account's own, not the relay's.
            for (name, value) in [
                ("HOME", &account.home),
                ("USER", &account.name),
                ("LOGNAME", &account.name),
            ] {
                job_env.retain(|(n, _)| n != name);
                job_env.push((name.into(), value.into()));
            }
        }
        // The supervisor's own test points (it drops every EXECRELAY_* before the job).
        if let Some(failpoint) = std::env::var_os(crate::util::failpoint::VARIABLE) {
            job_env.push((crate::util::failpoint::VARIABLE.into(), failpoint));
        }
        Ok(ExecRuntime {
            inner: Arc::new(Inner {
                store,
                job_env,
                run_as: run_as.map(|account| (account.uid, account.gid)),
                config,
                jobs_dir,
                heartbeat,
                redactor,
                max_queued,
                running: AtomicUsize::new(0),
                executable: std::env::current_exe()?,
                supervisors: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::SeqCst)
    }

    pub fn max_concurrent(&self) -> usize {
        self.inner.config.max_concurrent
    }

    pub fn per_session_limit(&self) -> usize {
        self.inner.config.per_session_limit()
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.inner.jobs_dir.join(id)
    }

    /// Starts a job whose ledger row is committed; returns at once, the job runs on.
    pub fn start(&self, job: JobRecord) {
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        crate::metrics::job_started();
        self.track(&job.id, Some(Supervisor::Starting));
        let runtime = self.clone();
        let span = tracing::info_span!("job", job_id = %job.id);
        tokio::spawn(async move { runtime.spawn_and_watch(job).await }.instrument(span));
    }

    async fn spawn_and_watch(&self, job: JobRecord) {
        let ran = self.spawn_and_wait(&job).await;
        self.track(&job.id, None);
        match ran {
            Ok(()) => {
                crate::util::failpoint::hit(crate::util::failpoint::JOB_EXITED);
                self.complete_from_dir(&job).await;
            }
            Err(outcome) => self.finish(&job, Ended::without_record(outcome)).await,
        }
    }

    /// Records what is known of a job's supervisor (`None`: it has exited, or never will).
    fn track(&self, job_id: &str, supervisor: Option<Supervisor>) {
        let mut supervisors = self
            .inner
            .supervisors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match supervisor {
            Some(supervisor) => supervisors.insert(job_id.to_string(), supervisor),
            None => supervisors.remove(job_id),
        };
    }

    fn supervisor_of(&self, job_id: &str) -> Option<Supervisor> {
        self.inner
            .supervisors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(job_id)
            .copied()
    }

    /// Starts the supervisor and waits for it to exit; the error is the outcome of a job that
    /// could not start.
    async fn spawn_and_wait(&self, job: &JobRecord) -> Result<(), Outcome> {
        let dir = self.job_dir(&job.id);
        // On a busy filesystem creating a directory takes a while: not on a runtime thread.
        if let Err(error) = tokio::fs::create_dir(&dir).await {
            return Err(Outcome::FailedToStart(format!(
                "cannot create the job directory: {error}"
            )));
        }
        // The command goes by file: in the supervisor's argv every local user would see it.
        let (command_dir, line) = (dir.clone(), job.command.clone());
        let written =
            tokio::task::spawn_blocking(move || supervisor::write_command(&command_dir, &line))
                .await
                .unwrap_or_else(|error| Err(std::io::Error::other(error)));
        if let Err(error) = written {
            return Err(Outcome::FailedToStart(format!(
                "cannot write the job's command: {error}"
            )));
        }
        let config = &self.inner.config;
        let launch = supervisor::SuperviseArgs {
            job_dir: dir.clone(),
            shell: config.shell.clone(),
            workdir: job.cwd.clone().into(),
            command: String::new(),
            timeout: config.timeout,
            grace: config.kill_grace,
            job_id: job.id.clone(),
            keep_background: config.keep_background,
            max_output: config.max_output,
            run_as: self.inner.run_as,
        };
        let mut command = tokio::process::Command::new(&self.inner.executable);
        command
            .args(launch.to_argv())
            // Not the relay's environment: its tokens stay with it.
            .env_clear()
            .envs(self.inner.job_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            // A process group of its own: a terminal's Ctrl-C (sent to the foreground group)
            // stops the relay, not its jobs; the supervisor also ignores SIGHUP. No pre_exec
            // hook, so the spawn is a posix_spawn: the relay's memory is not forked per job.
            .process_group(0);
        let started_at = now_ms();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                return Err(Outcome::FailedToStart(format!(
                    "cannot start the supervisor: {error}"
                )));
            }
        };
        let pid = child.id().unwrap_or(0);
        // Read while the child is unreaped, so this is its start time.
        if let Some(start_time) = supervisor::start_time_of(pid) {
            self.track(&job.id, Some(Supervisor::Child(pid, start_time)));
        }
        let shown = self.inner.redactor.one_line(&job.command, 200);
        tracing::info!(pid, command = %shown, "job started");
        if let Err(error) = self
            .inner
            .store
            .mark_job_running(&job.id, pid, started_at)
            .await
        {
            // The supervisor runs regardless; its status file will tell the outcome.
            tracing::error!(error = %error, "cannot record the job as running");
        }
        if let Err(error) = child.wait().await {
            tracing::error!(error = %error, "waiting for the supervisor failed");
        }
        Ok(())
    }

    /// Reads what the supervisor recorded and finishes the job with it.
    async fn complete_from_dir(&self, job: &JobRecord) {
        let dir = self.job_dir(&job.id);
        let mut stopped_background = 0;
        let mut output = (0, 0);
        let (outcome, started, finished) = match read_status(&dir).await {
            Some(Ok(record)) => {
                stopped_background = record.stopped_background;
                output = (record.output_bytes, record.dropped_bytes);
                (
                    Outcome::from_record(&record, self.inner.config.timeout),
                    Some(record.started_at),
                    record.finished_at,
                )
            }
            Some(Err(error)) => (
                Outcome::Lost(format!("its exit status could not be read: {error}")),
                job.started_at,
                now_ms(),
            ),
            None => (
                Outcome::Lost("its supervisor ended without recording an exit status".into()),
                job.started_at,
                now_ms(),
            ),
        };
        let ended = Ended {
            outcome,
            started,
            finished,
            stopped_background,
            output,
        };
        self.finish(job, ended).await;
    }

    /// Final state + completion event in one transaction, then the `exec-event` wake.
    async fn finish(&self, job: &JobRecord, ended: Ended) {
        let Ended {
            outcome,
            started,
            finished,
            stopped_background,
            output,
        } = ended;
        let inner = &self.inner;
        let log = self.job_dir(&job.id).join(LOG_FILE);
        let (lines, chars) = (inner.config.tail_lines, inner.config.tail_chars);
        let redactor = inner.redactor.clone();
        let tail =
            tokio::task::spawn_blocking(move || jobs::read_tail(&log, lines, chars, &redactor))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_else(|| Tail {
                    text: "[output unavailable]".into(),
                    omitted_lines: None,
                    truncated: false,
                });
        let duration = started
            .filter(|_| !matches!(outcome, Outcome::Lost(_)))
            .map(|s| Duration::from_millis((finished - s).max(0) as u64));
        let text = jobs::render_completion(
            &Completion {
                job_id: &job.id,
                command: &job.command,
                hide_command: inner.config.hide_command,
                outcome: &outcome,
                duration,
                stopped_background,
                output,
                tail: &tail,
            },
            &inner.redactor,
        );
        let event = (!outcome.is_success() || inner.config.notify_success).then(|| NewEvent {
            session: job.session.clone(),
            context_key: Some(format!("exec:{}", job.id)),
            text,
            origin: Some(job.origin.clone()),
            wake: Some(Reason::ExecEvent.as_string()),
        });
        let record = JobFinal {
            state: outcome.state(),
            exit_code: match outcome {
                Outcome::Exit(code) => Some(code as i64),
                _ => None,
            },
            signal: match outcome {
                Outcome::Signal(signal) => Some(signal as i64),
                _ => None,
            },
            started_at: started,
            finished_at: finished,
            detail: match &outcome {
                Outcome::Lost(why) | Outcome::FailedToStart(why) => Some(why.clone()),
                _ => None,
            },
        };
        // The outcome is on disk (status.json), so retrying until the store takes it is safe;
        // a restart in the meantime re-reads it.
        let mut streak = FailStreak::default();
        loop {
            match inner
                .store
                .finish_job(&job.id, record.clone(), event.clone(), inner.max_queued)
                .await
            {
                Ok(_) => {
                    crate::util::failpoint::hit(crate::util::failpoint::EVENT_QUEUED);
                    break;
                }
                Err(error) => {
                    if streak.failed() {
                        tracing::error!(error = %error, "cannot record the job's end; retrying");
                    }
                    tokio::time::sleep(FINISH_RETRY).await;
                }
            }
        }
        inner.running.fetch_sub(1, Ordering::SeqCst);
        crate::metrics::job_finished(outcome.state().as_str(), duration);
        tracing::info!(state = outcome.state().as_str(), "job finished");
        // Even when this call found the job already final (an earlier attempt committed but
        // reported an error), the event may still wait: the wake is only a hint, ask anyway.
        if event.is_some() {
            inner
                .heartbeat
                .request(Reason::ExecEvent, Some(job.session.clone()));
        }
    }

    /// Replaces configured secrets and credential shapes, for anything that quotes a command
    /// or its output.
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// After a restart: no job stays `starting` or `running` without someone watching it.
    pub async fn reconcile(&self) -> Result<(), crate::store::StoreError> {
        for job in self.inner.store.unfinished_jobs().await? {
            let dir = self.job_dir(&job.id);
            let span = tracing::info_span!("job", job_id = %job.id);
            let _entered = span.enter();
            if job.state == JobState::Starting && !dir.exists() {
                tracing::info!("starting a job accepted before the restart");
                self.start(job);
            } else if supervisor::read_status(&dir).is_some() {
                tracing::info!("collecting the exit recorded while the relay was down");
                self.inner.running.fetch_add(1, Ordering::SeqCst);
                let runtime = self.clone();
                tokio::spawn(
                    async move { runtime.complete_from_dir(&job).await }.instrument(span.clone()),
                );
            } else {
                self.inner.running.fetch_add(1, Ordering::SeqCst);
                let runtime = self.clone();
                tokio::spawn(async move { runtime.reattach(&job).await }.instrument(span.clone()));
            }
        }
        Ok(())
    }

    /// Follows a job whose supervisor outlived the relay to its end. A supervisor started just
    /// before the relay died may not have written its pid file yet: it gets a moment to.
    async fn reattach(&self, job: &JobRecord) {
        let dir = self.job_dir(&job.id);
        let deadline = tokio::time::Instant::now() + PID_FILE_WAIT;
        self.track(&job.id, Some(Supervisor::Starting));
        let pid = loop {
            let probe = dir.clone();
            let (live, settled) = off_runtime(move || {
                // Looked at before the liveness check: the file is written whole (renamed
                // into place), so one that was there names a supervisor gone if not live now.
                let had_pid_file = probe.join(supervisor::PID_FILE).exists();
                let live = supervisor::live_supervisor(&probe);
                let settled = had_pid_file || probe.join(supervisor::STATUS_FILE).exists();
                (live, settled)
            })
            .await;
            if live.is_some() {
                break live;
            }
            if settled || tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(PID_FILE_POLL).await;
        };
        self.track(&job.id, None);
        if let Some(pid) = pid {
            tracing::info!(pid, "re-attaching to a job that outlived the relay");
            while live_supervisor(&dir).await.is_some() {
                tokio::time::sleep(REATTACH_POLL).await;
            }
        }
        if pid.is_some() || read_status(&dir).await.is_some() {
            self.complete_from_dir(job).await;
        } else {
            tracing::warn!("the job's supervisor is gone and recorded nothing: lost");
            let outcome = Outcome::Lost("the relay restarted while it ran".into());
            self.finish(job, Ended::without_record(outcome)).await;
        }
    }

    /// Asks the job's supervisor to stop it (TERM to the group, KILL after the grace period).
    pub async fn kill(&self, job: &JobRecord) -> Result<(), String> {
        if job.state.is_final() {
            return Err(format!(
                "job {} has already ended ({})",
                job.id,
                job.state.as_str()
            ));
        }
        let dir = self.job_dir(&job.id);
        let deadline = tokio::time::Instant::now() + PID_FILE_WAIT;
        let pid = loop {
            if let Some(pid) = live_supervisor(&dir).await {
                break pid;
            }
            // Signalled before its handler is in place, a supervisor would die without
            // stopping its command or recording anything: wait until it catches SIGTERM.
            match self.supervisor_of(&job.id) {
                None => return Err(format!("job {} is not running any more", job.id)),
                Some(Supervisor::Child(pid, start_time))
                    if supervisor::handles_sigterm(pid, start_time) =>
                {
                    break pid;
                }
                Some(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "job {} is still starting; try /kill again in a moment",
                    job.id
                ));
            }
            tokio::time::sleep(PID_FILE_POLL).await;
        };
        // SAFETY: a plain kill(2) on a pid verified to be this job's supervisor.
        let result = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        if result == 0 {
            Ok(())
        } else {
            Err(format!(
                "cannot signal job {}: {}",
                job.id,
                std::io::Error::last_os_error()
            ))
        }
    }

    /// The last `lines` lines of a job's output (at most `max_chars` characters).
    pub async fn tail(&self, job_id: &str, lines: usize, max_chars: usize) -> Tail {
        let log = self.job_dir(job_id).join(LOG_FILE);
        let redactor = self.inner.redactor.clone();
        tokio::task::spawn_blocking(move || jobs::read_tail(&log, lines, max_chars, &redactor))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }
}

/// Runs a small file or `/proc` read off the runtime threads: a busy or remote disk under the
/// jobs directory must not stall every channel's sends. A panic in it is this task's panic,
/// as if it had run here: never mistaken for "nothing there", which could call a job lost.
async fn off_runtime<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(read).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

async fn read_status(dir: &Path) -> Option<Result<supervisor::ExitRecord, String>> {
    let dir = dir.to_path_buf();
    off_runtime(move || supervisor::read_status(&dir)).await
}

async fn live_supervisor(dir: &Path) -> Option<u32> {
    let dir = dir.to_path_buf();
    off_runtime(move || supervisor::live_supervisor(&dir)).await
}

/// Where a job runs: the configured workdir, made absolute so a restart resolves it the same.
pub fn resolve_workdir(workdir: &Path) -> PathBuf {
    std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf())
}
