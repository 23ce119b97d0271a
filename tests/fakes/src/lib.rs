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

/// A fake platform the relay can be pointed at.
pub trait Platform {
    /// The entries that enable the platform's channel against this fake (its base URL and the
    /// credentials it accepts).
    fn settings(&self) -> Vec<Setting>;
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
