//! `execrelay doctor`: is this relay set up to work, checked the way it would find out by
//! running? Each check has a name, a status (`ok`, `info`, `warn`, `fail`), what it found and,
//! when something is wrong, what to do; `--json` prints the same as one document. The exit code
//! is 1 when a check fails, else 0 (warnings and information included).
//!
//! The checks, in order, each reusing what the relay itself runs, never a copy of it:
//! - `config`: the file loads (`Config::load`, what `config check` and `run` run) and the
//!   channels accept their settings (`channels::preflight`); its warnings are a warning here.
//! - `http listener`: the API is not reachable beyond loopback without an API token (the rule
//!   the relay enforces, `HttpConfig::exposed_without_token`).
//! - `data directory`: what the relay makes private at every start is this user's and private
//!   (`data_dir::not_private`, the same list and owner rule as `data_dir::make_private`).
//! - `relay`: whether a relay runs on this store (its lock, `data_dir::relay_running`);
//!   information either way.
//! - `store`: the database opens and takes a write (the adapter state key
//!   `doctor:checked_at`, set and read back through `Store`), with its backlog
//!   (`Store::counts`) and how long the oldest pending delivery has waited.
//! - `supervisor`: `execrelay supervise` runs `true` in a temporary job directory with the
//!   job's shell, workdir, account and environment (`run::job_env`), and records exit 0.
//! - `channel <name>`: each enabled channel asks its platform whether its credentials work
//!   (`Channel::check`: Telegram `getMe` and no webhook, Discord `/users/@me` and the Message
//!   Content intent, Feishu a tenant token, the webhook a signed probe to its receiver).
//!
//! Nothing is created or repaired: with no data directory or database yet (no relay ever
//! started), those checks say so as a warning. Every text passes the relay's redactor, so no
//! configured secret is shown.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use execrelay_channel::CheckOutcome;
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::run::jobs::Redactor;
use crate::store::{Store, now_ms};

/// How long one channel's check may take (its own HTTP timeouts are shorter).
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `true` under its supervisor may take.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(15);
/// A pending delivery older than this is worth a look.
const OLD_PENDING: Duration = Duration::from_secs(600);
/// The adapter state key the store check writes and reads back.
const PROBE_KEY: &str = "doctor:checked_at";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Neither good nor bad: a fact (whether a relay is running).
    Info,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do (warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Ok, detail)
    }

    fn info(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Info, detail)
    }

    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            fix: Some(fix.into()),
            ..Check::new(name, Status::Warn, detail)
        }
    }

    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            fix: Some(fix.into()),
            ..Check::new(name, Status::Fail, detail)
        }
    }
}

/// Runs every check and prints them (`json`: as one JSON document); the process's exit code:
/// 1 when a check failed, else 0.
pub fn run(config_path: Option<&Path>, json: bool) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            crate::logging::say(format_args!(
                "execrelay: cannot start the async runtime: {error}"
            ));
            return 1;
        }
    };
    let checks = runtime.block_on(checks(config_path));
    let failed = checks.iter().any(|check| check.status == Status::Fail);
    if let Err(error) = super::quietly(print(&checks, json)) {
        crate::logging::say(format_args!("execrelay: {error:#}"));
        return 1;
    }
    u8::from(failed)
}

fn print(checks: &[Check], json: bool) -> anyhow::Result<()> {
    if json {
        let failed = checks.iter().any(|check| check.status == Status::Fail);
        let document = serde_json::json!({ "ok": !failed, "checks": checks });
        return super::out(serde_json::to_string_pretty(&document)?);
    }
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in checks {
        super::out(format_args!(
            "{:<4}  {:<width$}  {}",
            check.status.label(),
            check.name,
            check.detail
        ))?;
        if let Some(fix) = &check.fix {
            super::out(format_args!("      {:<width$}  fix: {fix}", ""))?;
        }
    }
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    let (failed, warned) = (count(Status::Fail), count(Status::Warn));
    super::out(match (failed, warned) {
        (0, 0) => "all is well".to_string(),
        (0, w) => format!("no check failed; {w} warning(s)"),
        (f, w) => format!("{f} check(s) failed, {w} warning(s)"),
    })
}

/// Every check, in order; those that need the config only when it loads.
async fn checks(config_path: Option<&Path>) -> Vec<Check> {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(error) => return config_refused(&error),
    };
    let mut secrets = config.secrets();
    let (webhook_secret, _) = crate::data_dir::webhook_secret(&config);
    secrets.push(webhook_secret.clone());
    let redactor = Redactor::new(secrets);
    let mut checks = vec![
        config_loaded(&config),
        listener(&config),
        data_directory(&config),
        relay(&config),
        store(&config).await,
        supervisor(&config).await,
    ];
    checks.extend(channels(&config, webhook_secret).await);
    for check in &mut checks {
        check.detail = redactor.redact(&check.detail);
        check.fix = check.fix.as_deref().map(|fix| redactor.redact(fix));
    }
    checks
}

/// The config does not load: that failure, and the listener's if it is among the problems.
fn config_refused(error: &ConfigError) -> Vec<Check> {
    let mut checks = vec![Check::fail(
        "config",
        error.to_string(),
        "correct each problem above (`execrelay config check` shows the same); the other \
         checks need a config that loads",
    )];
    if let ConfigError::Invalid { problems, .. } = error
        && let Some(problem) = problems.iter().find(|p| p.key == "http.listen")
    {
        checks.push(Check::fail(
            "http listener",
            problem.message.clone(),
            "set http.api_token (or api_token_file, or EXECRELAY_API_TOKEN), or listen on \
             127.0.0.1",
        ));
    }
    checks
}

fn origin(config: &Config) -> String {
    config.source.as_ref().map_or_else(
        || "built-in defaults".to_string(),
        |path| path.display().to_string(),
    )
}

fn config_loaded(config: &Config) -> Check {
    let origin = origin(config);
    if let Err(error) = crate::channels::preflight(config) {
        return Check::fail(
            "config",
            format!("{origin}: {error:#}"),
            "correct the channel's settings (`execrelay config check` says the same)",
        );
    }
    if config.warnings.is_empty() {
        return Check::ok("config", format!("{origin}: valid"));
    }
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    Check::warn(
        "config",
        format!("{origin}: valid, but {}", warnings.join("; ")),
        "see each warning; `execrelay config check` lists them with their lines",
    )
}

fn listener(config: &Config) -> Check {
    let http = &config.http;
    if http.exposed_without_token() {
        // The config refuses this already; kept so the rule reads in one place.
        return Check::fail(
            "http listener",
            format!(
                "{} is reachable from other machines without an API token",
                http.listen
            ),
            "set http.api_token, or listen on 127.0.0.1",
        );
    }
    if http.listen.ip().is_loopback() {
        Check::ok("http listener", format!("{}: loopback only", http.listen))
    } else {
        Check::ok(
            "http listener",
            format!(
                "{}: reachable from other machines; the API asks for http.api_token",
                http.listen
            ),
        )
    }
}

fn data_directory(config: &Config) -> Check {
    let dir = config.store.data_dir();
    if !dir.exists() {
        return Check::warn(
            "data directory",
            format!("{} does not exist yet", dir.display()),
            "start the relay once (`execrelay run`): it creates it, private to its user",
        );
    }
    let found = crate::data_dir::not_private(&config.store.path);
    if found.is_empty() {
        return Check::ok(
            "data directory",
            format!(
                "{}: this user's alone (folders 0700, files 0600)",
                dir.display()
            ),
        );
    }
    let (problems, fixes): (Vec<String>, Vec<String>) = found.into_iter().unzip();
    Check::fail("data directory", problems.join("; "), fixes.join("; "))
}

fn relay(config: &Config) -> Check {
    match crate::data_dir::relay_running(&config.store.path) {
        Ok(true) => Check::info("relay", "a relay is running on this store"),
        Ok(false) => Check::info(
            "relay",
            "no relay is running on this store (`execrelay run`, or its service, starts one)",
        ),
        Err(error) => Check::warn(
            "relay",
            format!("cannot tell whether a relay is running on this store: {error}"),
            "check that this user may read the store's .lock file",
        ),
    }
}

async fn store(config: &Config) -> Check {
    let path = config.store.path.clone();
    if !path.exists() {
        return Check::warn(
            "store",
            format!("no database at {} yet", path.display()),
            "start the relay once (`execrelay run`): it creates and migrates it",
        );
    }
    let node = config.store.node.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&path, &node)).await;
    let store = match opened {
        Ok(Ok(store)) => store,
        Ok(Err(error)) => {
            return Check::fail(
                "store",
                format!("cannot open {}: {error}", config.store.path.display()),
                "check that this user owns the database and that its disk has room",
            );
        }
        Err(error) => return Check::fail("store", error.to_string(), "run doctor again"),
    };
    let written = now_ms().to_string();
    let wrote = match store.set_adapter_state(PROBE_KEY, &written).await {
        Ok(()) => store.adapter_state(PROBE_KEY).await,
        Err(error) => Err(error),
    };
    match wrote {
        Ok(Some(read)) if read == written => {}
        Ok(_) => {
            return Check::fail(
                "store",
                "a value written to the store did not read back",
                "look for another program writing the database; restore it from a backup",
            );
        }
        Err(error) => {
            return Check::fail(
                "store",
                format!("opens, but takes no write: {error}"),
                "free disk space, and check that this user may write the database and its \
                 folder",
            );
        }
    }
    let counts = match store.counts().await {
        Ok(counts) => counts,
        Err(error) => {
            return Check::fail(
                "store",
                format!("takes writes, but cannot be read: {error}"),
                "run doctor again; if it persists, restore the database from a backup",
            );
        }
    };
    // Per channel, as `/metrics` shows it; the oldest of all here.
    let oldest = store
        .oldest_pending()
        .await
        .ok()
        .and_then(|per_channel| per_channel.into_iter().map(|(_, at)| at).min());
    let waited = oldest.map(|at| Duration::from_millis(now_ms().saturating_sub(at).max(0) as u64));
    let blocked: i64 = counts.blocked_events.iter().map(|(_, n)| n).sum();
    let detail = format!(
        "writable; {} pending deliveries{}, {} dead letters, {} running jobs, {} queued events \
         ({blocked} with nowhere to go)",
        counts.pending_deliveries,
        waited.map_or_else(String::new, |w| format!(
            " (the oldest queued {} ago)",
            crate::util::duration::format_duration(w)
        )),
        counts.dead_deliveries,
        counts.running_jobs,
        counts.queued_events,
    );
    let mut advice = Vec::new();
    if counts.dead_deliveries > 0 {
        advice.push(
            "`execrelay outbox` shows why each dead letter failed; `execrelay outbox retry \
             --all` sends them again once that is fixed",
        );
    }
    if waited.is_some_and(|w| w > OLD_PENDING) {
        advice.push("`execrelay outbox` shows what holds the oldest pending delivery back");
    }
    if blocked > 0 {
        advice.push("`execrelay events` shows why events wait");
    }
    if advice.is_empty() {
        Check::ok("store", detail)
    } else {
        Check::warn("store", detail, advice.join("; "))
    }
}

async fn supervisor(config: &Config) -> Check {
    let exec = config.exec.clone();
    match tokio::task::spawn_blocking(move || try_supervisor(&exec)).await {
        Ok(Ok(detail)) => Check::ok("supervisor", detail),
        Ok(Err((problem, fix))) => Check::fail("supervisor", problem, fix),
        Err(error) => Check::fail("supervisor", error.to_string(), "run doctor again"),
    }
}

/// A fresh private folder for one job, removed when dropped.
struct TempJobDir(PathBuf);

impl Drop for TempJobDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `execrelay supervise` runs `true` as the relay would start a job, in a temporary job
/// directory: what it found, or (what went wrong, what to do).
fn try_supervisor(exec: &crate::config::ExecConfig) -> Result<String, (String, String)> {
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::process::CommandExt;
    let fail = |problem: String, fix: &str| (problem, fix.to_string());
    // Not recursive: the folder must be new, so no one else's (or a symlink) is used.
    let path = std::env::temp_dir().join(format!(
        "execrelay-doctor-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|error| {
            fail(
                format!("cannot make a job directory in {}: {error}", path.display()),
                "set TMPDIR to a folder this user may write",
            )
        })?;
    let dir = TempJobDir(path);
    crate::run::supervisor::write_command(&dir.0, "true").map_err(|error| {
        fail(
            format!("cannot write the job's command: {error}"),
            "set TMPDIR to a folder this user may write",
        )
    })?;
    let run_as = match &exec.run_as {
        Some(user) => Some(
            crate::util::accounts::resolve(user, exec.run_as_group.as_deref())
                .map_err(|why| fail(why, "correct exec.run_as"))?,
        ),
        None => None,
    };
    let workdir = crate::run::exec::resolve_workdir(&exec.workdir);
    let executable = std::env::current_exe().map_err(|error| {
        fail(
            format!("cannot find this program: {error}"),
            "run execrelay by its path",
        )
    })?;
    let launch = crate::run::supervisor::SuperviseArgs {
        job_dir: dir.0.clone(),
        shell: exec.shell.clone(),
        workdir: workdir.clone(),
        command: String::new(),
        timeout: SUPERVISOR_TIMEOUT,
        grace: Duration::from_secs(1),
        job_id: "doctor".into(),
        keep_background: false,
        max_output: exec.max_output,
        run_as: run_as.as_ref().map(|account| (account.uid, account.gid)),
    };
    let mut command = std::process::Command::new(executable);
    command.args(launch.to_argv());
    command
        .env_clear()
        .envs(crate::run::job_env::job_environment(
            &exec.env,
            std::env::vars_os(),
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|error| {
        fail(
            format!("cannot start `execrelay supervise`: {error}"),
            "check that the execrelay binary is executable by this user",
        )
    })?;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < SUPERVISOR_TIMEOUT + Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(
                    "`true` under `execrelay supervise` did not end in time".into(),
                    "look for a machine under heavy load or a hung filesystem",
                ));
            }
        }
    }
    let elapsed = started.elapsed();
    let shell_and_dir = format!("{} in {}", exec.shell.display(), workdir.display());
    let as_whom = exec
        .run_as
        .as_ref()
        .map_or_else(String::new, |user| format!(" as {user}"));
    match crate::run::supervisor::read_status(&dir.0) {
        Some(Ok(record)) => match (&record.spawn_error, record.exit_code) {
            (Some(why), _) => Err(fail(
                format!(
                    "the supervisor ran, but could not start the job ({shell_and_dir}{as_whom}): {why}"
                ),
                "correct exec.shell, exec.workdir or exec.run_as",
            )),
            (None, Some(0)) => Ok(format!(
                "`true` ran under `execrelay supervise` with {shell_and_dir}{as_whom}: exit 0 \
                 in {} ms",
                elapsed.as_millis()
            )),
            (None, code) => Err(fail(
                format!(
                    "`true` under `execrelay supervise` with {shell_and_dir}{as_whom} did not \
                     exit 0 (exit {code:?}, signal {:?})",
                    record.signal
                ),
                "check exec.shell and the job environment (exec.env)",
            )),
        },
        Some(Err(why)) => Err(fail(
            format!("the supervisor's exit status cannot be read: {why}"),
            "check the free space of the temporary folder (TMPDIR)",
        )),
        None => Err(fail(
            "the supervisor ended without recording an exit status".into(),
            "check the free space of the temporary folder (TMPDIR)",
        )),
    }
}

/// Each enabled channel's own check, all at once.
async fn channels(config: &Config, webhook_secret: execrelay_channel::Secret) -> Vec<Check> {
    let built = match crate::channels::build_channels(config, webhook_secret) {
        Ok(built) => built,
        // `config` has failed for the same reason.
        Err(_) => return Vec::new(),
    };
    let checks = built.all.iter().map(|channel| async move {
        let name = format!("channel {}", channel.name());
        match tokio::time::timeout(CHANNEL_TIMEOUT, channel.check()).await {
            Ok(CheckOutcome::Ok(detail)) => Check::ok(&name, detail),
            Ok(CheckOutcome::Warn { problem, fix }) => Check::warn(&name, problem, fix),
            Ok(CheckOutcome::Failed { problem, fix }) => Check::fail(&name, problem, fix),
            Err(_) => Check::fail(
                &name,
                format!(
                    "the platform did not answer within {} s",
                    CHANNEL_TIMEOUT.as_secs()
                ),
                "check the network path from this machine to the platform",
            ),
        }
    });
    futures_util::future::join_all(checks).await
}
