//! In-process fakes of what the relay talks to, for the e2e tests (`tests/e2e`) and the bench
//! (`benches`): a signed webhook receiver, a Telegram Bot API, a Discord REST API and gateway,
//! and a Feishu open platform. Each records every request and follows a script of failures.
//!
//! Every fake listens on 127.0.0.1 only and runs on a small private runtime of its own, so it
//! can be started and dropped from plain threads and from inside another runtime's tasks alike.
//! A platform fake says how to point the relay at it ([`Platform::settings`]): its own base URL
//! and the credentials it accepts, so no request of the relay under test is bound for the real
//! service (`tests/e2e/discord.rs` checks that none goes anywhere else).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod discord;
pub mod feishu;
pub mod receiver;
pub mod telegram;

/// The webhook secret shared by the relay under test and the fake receiver.
pub const SECRET: &str = "e2e-webhook-secret-3f9a1c";

const POLL: Duration = Duration::from_millis(15);

// ---------------------------------------------------------------------------------------------
// Configuring the relay under test

/// One config entry a fake asks of the relay under test: `key = value` in `[table]`, where
/// `value` is raw TOML (strings through [`toml_str`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub table: &'static str,
    pub key: &'static str,
    pub value: String,
}

impl Setting {
    pub fn new(table: &'static str, key: &'static str, value: impl Into<String>) -> Setting {
        Setting {
            table,
            key,
            value: value.into(),
        }
    }
}

/// `enabled = true` and `entries` (raw TOML values) in the channel table `table`.
pub fn enable(
    table: &'static str,
    entries: impl IntoIterator<Item = (&'static str, String)>,
) -> Vec<Setting> {
    std::iter::once(Setting::new(table, "enabled", "true"))
        .chain(
            entries
                .into_iter()
                .map(|(key, value)| Setting::new(table, key, value)),
        )
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What every platform fake offers the shared tests (`tests/e2e/conformance.rs`)

/// Who speaks in a shared scenario; each fake gives them its own ids ([`Platform::identity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Person {
    Alice,
    Bob,
}

/// A conversation on a platform. `id` is what the relay calls it: the `chat_id` of its routes
/// and outbox rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chat {
    pub id: String,
    pub group: bool,
}

/// How a platform fails the relay's next message sends, each in the platform's own wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A 429 naming its wait: Telegram's `parameters.retry_after`, Discord's `retry_after` and
    /// `Retry-After`, Feishu's code 99991400 with `x-ogw-ratelimit-reset`, the webhook's
    /// `Retry-After`.
    RateLimited { retry_after_secs: u64 },
    /// The platform is down: a 5xx.
    Unavailable,
    /// A refusal for good: the bot was blocked, lost access to the channel, left the chat (the
    /// words of it: [`Platform::refusal_words`]).
    Forbidden,
}

pub use execrelay_channel::{TextLimit, TextUnit};

/// The outbox row id inside one of the relay's idempotency keys (`<install id, 4 letters><hex
/// row id>.<chunk>`): rows are numbered in the order their messages were queued.
pub fn outbox_row_of(key: &str) -> Option<u64> {
    let row = key.get(4..)?.split('.').next()?;
    u64::from_str_radix(row, 16).ok()
}

/// One message send the relay attempted, whatever the platform answered.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub text: String,
    /// The send's idempotency key as the platform sees it (the webhook's `idempotency_key`,
    /// Discord's `nonce`, Feishu's `uuid`); Telegram has none.
    pub key: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
    pub at: Instant,
}

/// A message the relay posted, as the platform shows it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// The platform's id of the message: what an edit or a press names.
    pub message_id: String,
    /// The text it was sent with.
    pub sent_text: String,
    /// Its text now, after any edits.
    pub text: String,
    /// Its buttons now, in order: (label, button id).
    pub buttons: Vec<(String, String)>,
}

/// One edit of a message the relay attempted, whatever the platform answered.
#[derive(Clone, Debug)]
pub struct EditAttempt {
    pub message_id: String,
    pub text: String,
    /// The buttons the edit leaves: (label, button id).
    pub buttons: Vec<(String, String)>,
    /// The HTTP status it was answered with.
    pub status: u16,
    pub at: Instant,
}

/// A button press a fake delivered to the relay: to deliver it again, or to read what its
/// presser was shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PressRef {
    /// The platform's id of the press (callback query, interaction, event, message id).
    pub id: String,
    pub chat: Chat,
    pub who: Person,
    pub message_id: String,
    pub button_id: String,
}

/// A fake platform the relay can be pointed at, and the shared tests' view of it: a test that
/// speaks only through this reads the same for every platform.
pub trait Platform {
    /// The entries that enable the platform's channel against this fake (its base URL and the
    /// credentials it accepts).
    fn settings(&self) -> Vec<Setting>;

    /// The relay's name for the channel: `[channels.<name>]`, a route's `channel`.
    fn channel(&self) -> &'static str;

    /// The longest message the platform takes (for the webhook: `max_chars`' default).
    fn text_limit(&self) -> TextLimit;

    /// How `[access] allow` and `[identities]` name `who` here: `<channel>:<user id>`.
    fn identity(&self, who: Person) -> String;

    /// The direct conversation between `who` and the bot.
    fn direct(&self, who: Person) -> Chat;

    /// A group conversation the bot is in.
    fn group(&self) -> Chat;

    /// Waits (at most `timeout`) until a relay started against this fake hears what is said
    /// (Discord: its gateway session is up); panics otherwise. Most platforms need no wait.
    fn wait_listening(&self, timeout: Duration) {
        let _ = timeout;
    }

    /// `who` writes `text` in `chat`, handed to the relay as the platform hands it over: a
    /// signed webhook POST or an encrypted Feishu event to the relay at `relay` (which must
    /// accept it), a Telegram update to poll, a Discord MESSAGE_CREATE. In a group, the bot is
    /// addressed as the platform needs (a mention on Discord and Feishu).
    fn say(&self, relay: SocketAddr, chat: &Chat, who: Person, text: &str);

    /// The texts the relay posted in `chat` that the platform accepted, in order.
    fn sent_to(&self, chat: &Chat) -> Vec<String>;

    /// Every send to `chat` the relay attempted, in order, whatever it was answered.
    fn attempts(&self, chat: &Chat) -> Vec<Attempt>;

    /// The next `n` message sends (to any chat) fail with `failure`.
    fn fail_next(&self, n: usize, failure: Failure);

    /// Words of the platform's answer to [`Failure::Forbidden`], which a dead letter's error
    /// shows.
    fn refusal_words(&self) -> &'static str;

    /// Requests of the relay the fake refused for their credentials (a bad signature, a wrong
    /// token).
    fn unauthorized(&self) -> usize;

    /// The messages the relay posted in `chat` that the platform accepted, in order, as they
    /// show now (edits applied).
    fn posted(&self, chat: &Chat) -> Vec<Posted>;

    /// Every edit the relay attempted in `chat`, in order, whatever it was answered.
    fn edit_attempts(&self, chat: &Chat) -> Vec<EditAttempt>;

    /// The next `n` edits (in any chat) fail with `failure`; sends are not affected.
    fn fail_next_edits(&self, n: usize, failure: Failure);

    /// `who` presses the button `button_id` under message `message_id` in `chat`, handed to
    /// the relay at `relay` as the platform hands it over (a `callback_query` update, an
    /// INTERACTION_CREATE, a `card.action.trigger` callback, a signed webhook POST).
    fn press(
        &self,
        relay: SocketAddr,
        chat: &Chat,
        who: Person,
        message_id: &str,
        button_id: &str,
    ) -> PressRef;

    /// The platform hands `press` over again, with the same id (a retry, a replay).
    fn press_again(&self, relay: SocketAddr, press: &PressRef);

    /// What the relay answered `press`'s presser, one answer per delivery of it, in order,
    /// whether or not the platform showed it (Discord refuses a second answer to one
    /// interaction); waits at most `timeout` until every delivery is answered.
    fn answers(&self, press: &PressRef, timeout: Duration) -> Vec<String>;
}

/// A failure script: the next sends fail, in order.
#[derive(Default)]
pub(crate) struct Failures(Vec<(usize, Failure)>);

impl Failures {
    pub(crate) fn push(&mut self, n: usize, failure: Failure) {
        if n > 0 {
            self.0.push((n, failure));
        }
    }

    /// The failure the next send meets, if any (counted as met).
    pub(crate) fn next(&mut self) -> Option<Failure> {
        let (remaining, failure) = self.0.first_mut()?;
        let failure = *failure;
        *remaining -= 1;
        if *remaining == 0 {
            self.0.remove(0);
        }
        Some(failure)
    }
}

/// POSTs `body` with `headers` to `path` on the relay at `addr` (HTTP/1.1, bounded): the status
/// and the body. For the platforms that call the relay (the webhook, Feishu's events).
pub fn post_to_relay(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(10);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .unwrap_or_else(|e| panic!("connect to the relay at {addr}: {e}"));
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(timeout))
        .expect("write timeout");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut raw = request.into_bytes();
    raw.extend_from_slice(body);
    stream
        .write_all(&raw)
        .unwrap_or_else(|e| panic!("POST {path} to the relay: {e}"));
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("read the relay's answer to POST {path}: {e}"));
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = answer.get(split + 4..).unwrap_or_default();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in the relay's answer {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A chunked HTTP/1.1 body, whole.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let rest = &raw[line_end + 2..];
        match size {
            Some(size) if size > 0 && rest.len() >= size => {
                out.extend_from_slice(&rest[..size]);
                raw = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
            }
            _ => break,
        }
    }
    out
}

/// A message id no other message of this process has.
pub(crate) fn next_message_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A TOML basic string literal (JSON string escaping is valid TOML).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// `settings` as TOML tables, in the order their tables first appear (to append to a config
/// that does not set those tables yet).
pub fn to_toml(settings: &[Setting]) -> String {
    let mut tables: Vec<&str> = Vec::new();
    for setting in settings {
        if !tables.contains(&setting.table) {
            tables.push(setting.table);
        }
    }
    let mut out = String::new();
    for table in tables {
        out.push_str(&format!("\n[{table}]\n"));
        for setting in settings.iter().filter(|s| s.table == table) {
            out.push_str(&format!("{} = {}\n", setting.key, setting.value));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Time and bounded waits

pub fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Polls `f` every ~15 ms until it returns `Some`, panicking with `what` after `timeout`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Asserts `f` holds at every poll for the whole `window` (bounded negative check).
#[track_caller]
pub fn assert_holds(what: &str, window: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        assert!(
            f(),
            "expected {what} for {window:?}, but it failed after {:?}",
            start.elapsed()
        );
        if start.elapsed() >= window {
            return;
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// The fakes' runtime

/// A fake's private runtime: one worker thread. Nothing here blocks on the runtime, and dropping
/// it shuts it down in the background, so a fake may live inside another runtime's task too.
pub(crate) struct Server {
    rt: Option<tokio::runtime::Runtime>,
    name: &'static str,
}

impl Server {
    pub(crate) fn start(name: &'static str) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("build the {name} runtime: {e}"));
        Server { rt: Some(rt), name }
    }

    /// A listener on 127.0.0.1:0, bound now: connections queue until [`Server::run`] serves it.
    pub(crate) fn bind(&self) -> (std::net::TcpListener, SocketAddr) {
        let name = self.name;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind the {name}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{name} listener: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{name} address: {e}"));
        (listener, addr)
    }

    /// Runs `serve` on `listener` (from [`Server::bind`]).
    pub(crate) fn run<F>(
        &self,
        listener: std::net::TcpListener,
        serve: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = self.name;
        self.rt().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .unwrap_or_else(|e| panic!("{name} listener: {e}"));
            serve(listener).await;
        });
    }

    /// Serves `app` over HTTP/1 on a new listener.
    pub(crate) fn serve(&self, app: axum::Router) -> SocketAddr {
        let name = self.name;
        let (listener, addr) = self.bind();
        self.run(listener, move |listener| async move {
            axum::serve(listener, app)
                .await
                .unwrap_or_else(|e| panic!("{name} serve: {e}"));
        });
        addr
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime runs until dropped")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_render_as_tables_in_first_seen_order() {
        let mut settings = enable("channels.b", [("token", toml_str("t\"1"))]);
        settings.extend(enable("channels.a", []));
        settings.push(Setting::new("channels.b", "poll", "2"));
        assert_eq!(
            to_toml(&settings),
            "\n[channels.b]\nenabled = true\ntoken = \"t\\\"1\"\npoll = 2\n\n[channels.a]\nenabled = true\n"
        );
    }

    /// The bench starts and drops the fakes inside its own runtime's tasks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn fakes_start_serve_and_drop_inside_a_runtime() {
        let telegram = telegram::FakeTelegram::start();
        let discord = discord::FakeDiscord::start();
        let feishu = feishu::FakeFeishu::start();
        let receiver = receiver::Receiver::start();
        let urls = [
            telegram.api_url(),
            discord.api_base(),
            feishu.base_url(),
            receiver.callback_url(),
        ];
        for url in urls {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = url.trim_start_matches("http://").split('/').next().unwrap();
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 "), "{url} answered {answer:?}");
        }
        drop((telegram, discord, feishu, receiver));
    }
}
