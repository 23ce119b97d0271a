//! Runs the real `execrelay` binary: temp dir, port 0, webhook callbacks pointed at a fake.
//!
//! Tests are plain `#[test]` functions. The relay is a `std::process::Child`; the fake receiver
//! and the HTTP client each own a small private tokio runtime, so nothing here blocks a runtime
//! thread and every test can run in parallel with the others.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use execrelay_fakes::{Platform, Setting};
pub use execrelay_fakes::{SECRET, assert_holds, toml_str, unix_now, unix_now_ms, wait_for};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::fakes::receiver::{Delivery, Receiver};

/// The binary under test: cargo's build of `execrelay`, or `$EXECRELAY_E2E_BIN` (to run the
/// suite against another build).
pub fn bin() -> PathBuf {
    std::env::var_os("EXECRELAY_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_execrelay")))
}
const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// Default bound for "the relay should do this promptly" waits. Generous on purpose: the tests
/// that are about latency assert it explicitly.
pub const SOON: Duration = Duration::from_secs(10);

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---------------------------------------------------------------------------------------------
// Signing and messages

/// `sha256=<lowercase hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

static MESSAGE_SEQ: AtomicU64 = AtomicU64::new(1);

fn next_message_id() -> String {
    format!(
        "e2e-{}-{}",
        std::process::id(),
        MESSAGE_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// `body` as the signed webhook expects it: its headers (signed with a current timestamp)
/// and the raw bytes.
pub fn signed_webhook(body: &Value) -> ([(&'static str, String); 3], Vec<u8>) {
    let raw = serde_json::to_vec(body).unwrap();
    let ts = unix_now().to_string();
    let sig = sign(SECRET, &ts, &raw);
    let headers = [
        ("Content-Type", "application/json".to_string()),
        ("X-Execrelay-Timestamp", ts),
        ("X-Execrelay-Signature", sig),
    ];
    (headers, raw)
}

/// An `/exec` whose job waits (at most 20 s) for the file `gate` in the relay's workdir, then
/// prints `out`: the test opens the gate ([`Relay::open_gate`]) when the job may end, so no
/// step races the job's own clock on a slow machine.
pub fn gated_exec(gate: &str, out: &str) -> String {
    format!(
        "/exec sh -c 'for i in $(seq 1 400); do [ -f {gate} ] && break; sleep 0.05; done; echo {out}'"
    )
}

/// An inbound direct message with a fresh `message_id`.
pub fn dm(conversation_id: &str, user_id: &str, text: &str) -> Value {
    json!({
        "conversation_id": conversation_id,
        "user_id": user_id,
        "text": text,
        "message_id": next_message_id(),
        "chat_type": "direct",
    })
}

/// An inbound group message with a fresh `message_id`.
pub fn group_msg(conversation_id: &str, user_id: &str, text: &str) -> Value {
    json!({
        "conversation_id": conversation_id,
        "user_id": user_id,
        "text": text,
        "message_id": next_message_id(),
        "chat_type": "group",
    })
}

/// `started job <id>: <command>` → `<id>`.
pub fn ack_job_id(text: &str) -> Option<String> {
    let rest = text.strip_prefix("started job ")?;
    let id = rest.split(':').next()?.trim();
    (!id.is_empty()).then(|| id.to_string())
}

pub fn is_ack(d: &Delivery) -> bool {
    d.text.starts_with("started job ")
}

pub fn is_completion(d: &Delivery) -> bool {
    d.text.starts_with("exec finished: ")
}

/// Whether `text` is a completion whose first line names job `id` (as a whole token, so job
/// `1` does not match job `12`).
pub fn is_completion_of(text: &str, id: &str) -> bool {
    text.starts_with("exec finished: ") && first_line_has_token(text, id)
}

/// Whether `text` carries a completion of job `id` on any line: the heartbeat puts the
/// completions that are due together into one message.
pub fn carries_completion_of(text: &str, id: &str) -> bool {
    text.lines()
        .any(|line| line.starts_with("exec finished: ") && first_line_has_token(line, id))
}

pub fn first_line_has_token(text: &str, token: &str) -> bool {
    let first = text.lines().next().unwrap_or("");
    first
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .any(|t| t == token)
}

/// The output part of a completion: its lines after the first, trimmed.
pub fn output_lines(text: &str) -> Vec<&str> {
    text.lines().skip(1).map(str::trim).collect()
}

pub use crate::cli_process::*;

// ---------------------------------------------------------------------------------------------
// The relay

/// Builds a relay config. Values are raw TOML (use [`toml_str`] for strings).
pub struct RelayBuilder {
    dir: tempfile::TempDir,
    tables: BTreeMap<String, BTreeMap<String, String>>,
    env: Vec<(String, String)>,
    file_size_limit: Option<u64>,
    stderr: StderrTo,
}

/// Where a relay's stdout and stderr go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StderrTo {
    /// The relay's log file (`relay.log`).
    Log,
    /// A pipe whose reader is gone: every write fails with EPIPE.
    Closed,
    /// A pipe the test holds open and never reads: once its buffer is full, writes block.
    Stalled,
}

impl RelayBuilder {
    /// `[access] allow`.
    pub fn allow(self, who: &[&str]) -> Self {
        let list = who
            .iter()
            .map(|w| toml_str(w))
            .collect::<Vec<_>>()
            .join(", ");
        self.set("access", "allow", &format!("[{list}]"))
    }

    /// Sets `key = raw_value` in `[table]` (e.g. `"channels.webhook"`), replacing a default.
    pub fn set(mut self, table: &str, key: &str, raw_value: &str) -> Self {
        self.tables
            .entry(table.to_string())
            .or_default()
            .insert(key.to_string(), raw_value.to_string());
        self
    }

    /// Sets every entry of `settings` (what a fake asks of the relay).
    pub fn apply(self, settings: Vec<Setting>) -> Self {
        settings
            .into_iter()
            .fold(self, |builder, s| builder.set(s.table, s.key, &s.value))
    }

    /// An environment variable for the relay's first start (e.g. a crash point).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the relay with `RLIMIT_FSIZE` at `bytes` and `SIGXFSZ` ignored: a write that would
    /// grow a file past it fails with `EFBIG`, as on a full disk (inherited by its jobs).
    pub fn file_size_limit(mut self, bytes: u64) -> Self {
        self.file_size_limit = Some(bytes);
        self
    }

    /// Starts the relay with stdout and stderr a pipe whose reader is gone (`run 2>&1 | head`
    /// after `head` exited): every log write fails with EPIPE. Its log is then empty.
    pub fn stderr_closed(mut self) -> Self {
        self.stderr = StderrTo::Closed;
        self
    }

    /// Starts the relay with stdout and stderr a pipe nobody reads (`run | less`, paused):
    /// once its buffer is full, a write waits for a reader that never comes.
    pub fn stderr_stalled(mut self) -> Self {
        self.stderr = StderrTo::Stalled;
        self
    }

    /// Removes `key` from `[table]` (a default the test wants absent).
    pub fn unset(mut self, table: &str, key: &str) -> Self {
        if let Some(entries) = self.tables.get_mut(table) {
            entries.remove(key);
        }
        self
    }

    /// HTTP on a port of its own that a restart keeps, so that clients can reconnect (the
    /// default, port 0, draws a new one at every start).
    pub fn fixed_port(self) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("find a free port")
            .port();
        self.set("http", "listen", &toml_str(&format!("127.0.0.1:{port}")))
    }

    /// The relay's temp dir (exists already, so tests can put files there before `start`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn render(&self) -> String {
        let order = [
            "store",
            "http",
            "access",
            "identities",
            "exec",
            "heartbeat",
            "outbox",
        ];
        let mut names: Vec<&String> = self.tables.keys().collect();
        names.sort_by_key(|n| (order.iter().position(|o| o == n).unwrap_or(order.len()), *n));
        let mut out = String::new();
        for name in names {
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in &self.tables[name] {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        out
    }

    pub fn start(self) -> Relay {
        // Where a relay without `http.api_token` writes the token its API asks for.
        let store = self.tables["store"]["path"].clone();
        let store: toml::Table = toml::from_str(&format!("path = {store}")).expect("store.path");
        let store = PathBuf::from(store["path"].as_str().expect("store.path is text"));
        let api_token = store.with_file_name("api.token");
        let cfg = self.dir.path().join("execrelay.toml");
        fs::write(&cfg, self.render()).expect("write relay config");
        let log = self.dir.path().join("relay.log");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let mut relay = Relay {
            dir: self.dir,
            cfg,
            log,
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            starts: 0,
            env: self.env,
            file_size_limit: self.file_size_limit,
            stderr: self.stderr,
            stalled: None,
            api_token,
            client,
            rt,
        };
        relay.spawn();
        relay
    }
}

/// `fake.configure(builder)`: the builder with the fake's channel enabled against the fake.
pub trait Configure {
    fn configure(&self, builder: RelayBuilder) -> RelayBuilder;
}

impl<P: Platform> Configure for P {
    fn configure(&self, builder: RelayBuilder) -> RelayBuilder {
        builder.apply(self.settings())
    }
}

pub struct Relay {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub addr: SocketAddr,
    starts: u32,
    env: Vec<(String, String)>,
    file_size_limit: Option<u64>,
    stderr: StderrTo,
    /// The unread ends of a stalled stdout and stderr, held open.
    stalled: Option<(std::process::ChildStdout, std::process::ChildStderr)>,
    /// The generated API token's file: requests carry what it holds, as the CLI's do.
    api_token: PathBuf,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// A job started through a chat message, with its acknowledgement.
pub struct Started {
    pub id: String,
    pub ack: Delivery,
}

impl Relay {
    /// A config with: the store and workdir in a fresh temp dir, HTTP on 127.0.0.1:0, the
    /// webhook channel enabled with [`SECRET`] and callbacks to `rx`, and scheduled heartbeats
    /// every 30 min (so within a test only a wake delivers). `[access] allow` is empty until
    /// [`RelayBuilder::allow`].
    pub fn builder(rx: &Receiver) -> RelayBuilder {
        Self::builder_with_callback(&rx.callback_url())
    }

    pub fn builder_with_callback(callback_url: &str) -> RelayBuilder {
        let dir = tempfile::Builder::new()
            .prefix("execrelay-e2e-")
            .tempdir()
            .expect("tempdir");
        let db = toml_str(&dir.path().join("execrelay.db").to_string_lossy());
        let workdir = toml_str(&dir.path().to_string_lossy());
        RelayBuilder {
            dir,
            tables: BTreeMap::new(),
            env: Vec::new(),
            file_size_limit: None,
            stderr: StderrTo::Log,
        }
        .set("store", "path", &db)
        .set("http", "listen", &toml_str("127.0.0.1:0"))
        .set("access", "allow", "[]")
        .set("exec", "workdir", &workdir)
        .set("heartbeat", "every", &toml_str("30m"))
        .set("channels.webhook", "enabled", "true")
        .set("channels.webhook", "secret", &toml_str(SECRET))
        .set("channels.webhook", "callback_url", &toml_str(callback_url))
    }

    /// Shorthand: default config, `allow` as given.
    pub fn start(rx: &Receiver, allow: &[&str]) -> Relay {
        Self::builder(rx).allow(allow).start()
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Lets the jobs of [`gated_exec`]`(gate, ..)` end.
    #[track_caller]
    pub fn open_gate(&self, gate: &str) {
        std::fs::write(self.path(gate), "").expect("write the gate file");
    }

    #[allow(dead_code)]
    pub fn config_path(&self) -> &Path {
        &self.cfg
    }

    /// Rewrites the config file (for the next start) with `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = fs::read_to_string(&self.cfg).expect("read relay config");
        fs::write(&self.cfg, edit(text)).expect("write relay config");
    }

    fn spawn(&mut self) {
        if let Err(status) = self.try_spawn() {
            panic!(
                "relay exited before writing its ready file ({status}); log tail:\n{}",
                self.log_tail(6000)
            );
        }
    }

    /// Starts the relay and waits for readiness; `Err` if it exited first (e.g. at an armed
    /// crash point during recovery).
    fn try_spawn(&mut self) -> Result<(), std::process::ExitStatus> {
        self.starts += 1;
        let ready = self.dir.path().join(format!("ready-{}", self.starts));
        let _ = fs::remove_file(&ready);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open relay log");
        writeln!(log, "=== e2e harness: start #{} ===", self.starts).unwrap();
        let mut command = without_relay_settings(Command::new(bin()));
        if let Some(limit) = self.file_size_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        command
            .arg("--config")
            .arg(&self.cfg)
            .arg("run")
            .arg("--ready-file")
            .arg(&ready)
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,execrelay=debug".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        if self.stderr == StderrTo::Log {
            command.stdout(log.try_clone().unwrap()).stderr(log);
        } else {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let mut child = command.spawn().expect("spawn execrelay run");
        if let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take())
            && self.stderr == StderrTo::Stalled
        {
            use std::os::fd::AsRawFd;
            // The smallest pipe (a page): a few lines fill it.
            // SAFETY: fcntl(2) on a pipe descriptor this process owns.
            unsafe { libc::fcntl(err.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
            self.stalled = Some((out, err));
        }
        // Otherwise dropping the read ends closed them: the next write fails with EPIPE.
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(s) = fs::read_to_string(&ready)
                && let Ok(addr) = s.trim().parse::<SocketAddr>()
            {
                self.addr = addr;
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                return Err(status);
            }
            if start.elapsed() >= READY_TIMEOUT {
                panic!(
                    "timed out after {READY_TIMEOUT:?} waiting for the relay's ready file {}; log tail:\n{}",
                    ready.display(),
                    self.log_tail(6000)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `max` bytes of the relay's stderr log (all starts).
    pub fn log_tail(&self, max: u64) -> String {
        let Ok(mut f) = File::open(&self.log) else {
            return "<no log>".into();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// SIGKILL the relay (only the relay's own pid; its jobs live in their own process groups).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the relay and wait (bounded) for it to exit; returns its exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the relay is running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        wait_for("the relay to exit after SIGTERM", within, || {
            child.try_wait().expect("try_wait")
        })
    }

    /// "Space returns": lifts the running relay's `RLIMIT_FSIZE` (and that of later starts).
    /// Jobs started under the limit keep it, as processes on a full disk would.
    pub fn lift_file_size_limit(&mut self) {
        self.file_size_limit = None;
        let pid = self.child.as_ref().expect("the relay is running").id();
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: prlimit(2) on our own child, with a valid new limit and no old-limit output.
        let rc = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_FSIZE,
                &unlimited,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the relay to exit by itself, e.g. at a crash point.
    pub fn wait_exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the relay is running");
        wait_for("the relay to exit by itself", within, || {
            child.try_wait().expect("try_wait")
        })
    }

    /// The environment of later starts: `env` replaces what [`RelayBuilder::env`] set.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Everything the relay logged, all starts.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Start again on the same dir, config and database (a new port; waits for readiness).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// [`Relay::restart`], but a relay that dies before it is ready is an answer, not a panic.
    pub fn try_restart(&mut self) -> Result<(), std::process::ExitStatus> {
        self.kill9();
        self.try_spawn()
    }

    // --- HTTP ---------------------------------------------------------------------------

    /// The bearer token the API asks for (the one the relay generated), as the CLI sends it.
    pub fn api_token(&self) -> String {
        fs::read_to_string(&self.api_token)
            .map(|token| token.trim().to_string())
            .unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    #[track_caller]
    fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let req = match fs::read_to_string(&self.api_token) {
            Ok(token) => req.bearer_auth(token.trim()),
            Err(_) => req,
        };
        self.rt.block_on(async move {
            let resp = req.send().await.expect("HTTP request to the relay");
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.expect("read relay response");
            let v = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (status, v)
        })
    }

    /// Posts `body` to `/webhook`, signed with a current timestamp.
    pub fn post_webhook(&self, body: &Value) -> (u16, Value) {
        let (headers, raw) = signed_webhook(body);
        self.post_webhook_raw(&headers, raw)
    }

    /// Posts `body` to `/webhook`, signed; `None` when the relay did not answer (it died).
    pub fn try_post_webhook(&self, body: &Value) -> Option<(u16, Value)> {
        let (headers, raw) = signed_webhook(body);
        let mut req = self.client.post(self.url("/webhook")).body(raw);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        self.rt.block_on(async move {
            let resp = req.send().await.ok()?;
            let status = resp.status().as_u16();
            let body = resp.json().await.unwrap_or(Value::Null);
            Some((status, body))
        })
    }

    /// Posts `body` to `/webhook` with exactly `headers` (for bad signatures and the like).
    pub fn post_webhook_raw(
        &self,
        headers: &[(&str, String)],
        body: impl Into<Vec<u8>>,
    ) -> (u16, Value) {
        self.post_raw("/webhook", headers, body)
    }

    /// Posts `body` to `path` with exactly `headers`.
    pub fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<Vec<u8>>,
    ) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).body(body.into());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        self.send(req)
    }

    /// Posts a message that must be accepted as new (`200 {"ok":true,"duplicate":false}`).
    #[track_caller]
    pub fn say(&self, msg: &Value) {
        let (status, body) = self.post_webhook(msg);
        assert_eq!(status, 200, "webhook POST of {msg} answered {body}");
        assert_eq!(
            body["ok"],
            json!(true),
            "webhook POST of {msg} answered {body}"
        );
        assert_eq!(
            body["duplicate"],
            json!(false),
            "webhook POST of {msg} answered {body}"
        );
    }

    /// Sends `msg` (an `/exec ...` message) and waits for the acknowledgement in its
    /// conversation; returns the job id parsed from `started job <id>: ...`.
    #[track_caller]
    pub fn start_job(&self, rx: &Receiver, msg: &Value) -> Started {
        let conv = msg["conversation_id"]
            .as_str()
            .expect("conversation_id")
            .to_string();
        let before = rx.count(|d| d.conversation_id == conv && is_ack(d));
        self.say(msg);
        let ack = wait_for(
            &format!("an acknowledgement of {} in {conv}", msg["text"]),
            SOON,
            || {
                rx.messages()
                    .into_iter()
                    .filter(|d| d.conversation_id == conv && is_ack(d))
                    .nth(before)
            },
        );
        let id = ack_job_id(&ack.text).unwrap_or_else(|| panic!("no job id in ack {:?}", ack.text));
        Started { id, ack }
    }

    /// [`Relay::start_job`], then waits for its completion: the job and the completion.
    #[track_caller]
    pub fn run_job(&self, rx: &Receiver, msg: &Value) -> (Started, Delivery) {
        let job = self.start_job(rx, msg);
        let done = rx.wait_for_message("the completion", SOON, |d| {
            is_completion_of(&d.text, &job.id)
        });
        (job, done)
    }

    /// GET `path`; panics unless 200.
    #[track_caller]
    pub fn api_get(&self, path: &str) -> Value {
        let (status, body) = self.send(self.client.get(self.url(path)));
        assert_eq!(status, 200, "GET {path} answered {status} {body}");
        body
    }

    /// POST `json` to `path`; panics unless 2xx.
    #[track_caller]
    pub fn api_post(&self, path: &str, json: &Value) -> Value {
        let (status, body) = self.send(self.client.post(self.url(path)).json(json));
        assert!(
            (200..300).contains(&status),
            "POST {path} {json} answered {status} {body}"
        );
        body
    }

    pub fn jobs(&self) -> Vec<Value> {
        array(&self.api_get("/v1/jobs"), "jobs")
    }

    pub fn job(&self, id: &str) -> Option<Value> {
        self.jobs().into_iter().find(|j| json_id(&j["id"]) == id)
    }

    pub fn deliveries(&self) -> Vec<Value> {
        array(&self.api_get("/v1/outbox"), "deliveries")
    }

    pub fn routes(&self) -> Vec<Value> {
        array(&self.api_get("/v1/routes"), "routes")
    }

    pub fn events(&self) -> Vec<Value> {
        array(&self.api_get("/v1/events"), "events")
    }

    /// Waits until GET /v1/outbox lists nothing `pending`.
    #[track_caller]
    pub fn wait_outbox_drained(&self) {
        wait_for("GET /v1/outbox to show nothing pending", SOON, || {
            self.deliveries()
                .iter()
                .all(|d| d["state"] != "pending")
                .then_some(())
        });
    }

    /// `execrelay run` once more on this relay's config, while it runs.
    pub fn run_second_instance(&self) -> Output {
        let args: [&std::ffi::OsStr; 3] =
            ["--config".as_ref(), self.cfg.as_os_str(), "run".as_ref()];
        run_cli(&args, self.dir.path())
    }

    /// Runs a client subcommand: `execrelay --config <cfg> <args...> --addr <addr>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_process(args, Stdio::null(), Stdio::piped())
            .wait(CLI_TIMEOUT)
    }

    /// [`Relay::cli`], started with this stdin and stdout, for the test to talk to.
    pub fn cli_process(&self, args: &[&str], stdin: Stdio, stdout: Stdio) -> CliProcess {
        let mut all: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), self.cfg.as_os_str()];
        all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        let addr = self.addr.to_string();
        all.push("--addr".as_ref());
        all.push(addr.as_ref());
        CliProcess::spawn(&all, self.dir.path(), stdin, stdout)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- relay dir {} ; log tail:\n{}\n---",
                self.dir.path().display(),
                self.log_tail(8000)
            );
        }
        self.kill9();
    }
}

/// `v[key]` as an array; panics naming the body otherwise.
pub fn array(v: &Value, key: &str) -> Vec<Value> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("expected an array {key:?} in {v}"))
        .clone()
}

/// An id field that may be a JSON string or number, as text.
pub fn json_id(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
