//! A fake Discord: the REST API and the gateway that serenity (and our own REST calls) talk
//! to in the tests.
//!
//! REST (`/api/v10`): `GET /gateway` names the fake gateway; `GET /users/@me` the bot user and
//! `GET /applications/@me` its application, whose `flags` carry the Message Content intent
//! unless a test sets them otherwise ([`FakeDiscord::set_application_flags`]); `GET /channels/{id}` says whether
//! a channel is a thread (and its parent); `POST /channels/{id}/messages` records content,
//! nonce, reference and buttons (components), refuses over 2000 characters or bad components
//! (400, code 50035), dedupes on `nonce` when `enforce_nonce` is set (as Discord does), and
//! fails on cue (`Platform::fail_next`: 429 with `retry_after`, 502, 403 Missing Access; and
//! 403 for a forbidden channel). `GET /channels/{id}/messages?after=&limit=` answers from the
//! channel's history (every message pushed or posted, connected or not, edits applied) as
//! Discord does: the `limit` (1-100, default 50) messages right after `after`, newest first,
//! without `guild_id`. `PATCH /channels/{id}/messages/{id}` edits a message and
//! `POST /interactions/{id}/{token}/callback` answers a press (both in `live.rs`, with their
//! own failure scripts and records). Every request is recorded, whatever its path; all but
//! interaction callbacks (which Discord authorizes by the token in the path) need the bot token.
//!
//! Gateway (WebSocket, JSON text frames): Hello, READY on IDENTIFY (or held back until
//! `release_ready`, dispatches flowing meanwhile), heartbeat ACKs, RESUME (replaying what the
//! client missed, then RESUMED), `push_message` to post a message (dispatched as
//! `MESSAGE_CREATE` to a connected session; a new session is not sent what it missed, as on
//! Discord), `press_button` to dispatch an `INTERACTION_CREATE` (a button press, kept for
//! RESUME replays like every dispatch), and `drop_connection` to cut the TCP connection
//! mid-session.

mod live;

pub use live::{Callback, Edit, PressAt, bot_message, buttons_of, interaction_payload};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::{
    Attempt, Chat, Failure, Failures, Person, Platform, Server, Setting, TextLimit, TextUnit,
    enable, toml_str,
};

/// The bot token the relay under test is given.
pub const TOKEN: &str = "MTAxNTQ2OTAw.e2e-fake.DiscordTokenSecretPart42";
pub const BOT_ID: u64 = 900;
pub const GUILD_ID: u64 = 300;
pub const TEXT_LIMIT: usize = 2000;
/// The application flag of the Message Content intent (`GATEWAY_MESSAGE_CONTENT`, 1 << 18).
pub const MESSAGE_CONTENT_FLAG: u64 = 1 << 18;
const TIMESTAMP: &str = "2026-12-03T07:00:00.000000+00:00";
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// A message id as Discord makes them: milliseconds since its epoch in the top 42 bits, so ids
/// order by time; `sequence` (low 22 bits) keeps ids made in one millisecond apart.
fn snowflake(unix_ms: u64, sequence: u64) -> u64 {
    (unix_ms.saturating_sub(DISCORD_EPOCH_MS) << 22) | (sequence & 0x3f_ffff)
}

fn now_ms() -> u64 {
    crate::unix_now_ms() as u64
}

/// One message the fake posted (a retried send with a known nonce is not posted again).
#[derive(Clone, Debug)]
pub struct Posted {
    pub channel_id: u64,
    /// The message's id (what edits and presses name).
    pub id: u64,
    /// The text as posted; edits do not change it (see [`FakeDiscord::message`]).
    pub content: String,
    pub nonce: Option<String>,
    pub enforce_nonce: bool,
    pub reference: Option<String>,
    pub at: Instant,
}

/// One REST request of any kind, with the status it got.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query string, without `?` (empty if none).
    pub query: String,
    pub status: u16,
    pub nonce: Option<String>,
    /// A message post's `content`.
    pub content: Option<String>,
    pub user_agent: String,
    pub at: Instant,
}

enum Command {
    Send(String),
    Drop,
}

#[derive(Default)]
struct Inner {
    posted: Vec<Posted>,
    requests: Vec<Request>,
    /// How the next message posts fail.
    failures: Failures,
    lose_responses: usize,
    forbidden: HashSet<u64>,
    threads: HashMap<u64, u64>,
    fail_channel_lookups: bool,
    /// A message post's nonce → the message's id (answered again as it is now).
    by_nonce: HashMap<(u64, String), u64>,
    next_id: u64,
    /// Channel id → its messages by id, as `GET /channels/{id}/messages` returns them.
    history: HashMap<u64, BTreeMap<u64, Value>>,
    history_rate_limits: usize,
    /// Edits, presses and their answers.
    live: live::Live,
    // The gateway.
    seq: u64,
    dispatched: Vec<(u64, String)>,
    connection: Option<mpsc::UnboundedSender<Command>>,
    identifies: usize,
    resumes: usize,
    replay_last_on_resume: bool,
    hold_ready: bool,
    held_ready: Option<Value>,
    /// `GET /applications/@me`'s `flags`.
    application_flags: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    gateway_url: String,
}

pub struct FakeDiscord {
    rest: SocketAddr,
    shared: Arc<Shared>,
    // Last field: dropped after everything else, stopping both servers.
    _server: Server,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    shared.inner.lock().expect("fake discord lock")
}

fn user(id: u64, bot: bool) -> Value {
    json!({"id": id.to_string(), "username": format!("user{id}"), "bot": bot})
}

impl FakeDiscord {
    pub fn start() -> FakeDiscord {
        let server = Server::start("fake-discord");
        let (gateway, gateway_addr) = server.bind();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                next_id: 5000,
                application_flags: MESSAGE_CONTENT_FLAG,
                ..Inner::default()
            }),
            gateway_url: format!("ws://{gateway_addr}"),
        });
        let accepting = shared.clone();
        server.run(gateway, move |gateway| async move {
            while let Ok((stream, _)) = gateway.accept().await {
                tokio::spawn(serve_gateway(stream, accepting.clone()));
            }
        });
        let app = Router::new()
            .fallback(handle_rest)
            .with_state(shared.clone());
        FakeDiscord {
            rest: server.serve(app),
            shared,
            _server: server,
        }
    }

    /// `GET /applications/@me` answers these `flags` (0: no privileged intent is on).
    pub fn set_application_flags(&self, flags: u64) {
        lock(&self.shared).application_flags = flags;
    }

    pub fn api_base(&self) -> String {
        format!("http://{}", self.rest)
    }

    /// Dispatches a MESSAGE_CREATE from `author` in `channel_id` (`guild`: a guild channel or
    /// thread, else a DM); returns the message id. A `<@900>` in `content` mentions the bot.
    pub fn push_message(&self, channel_id: u64, author: u64, content: &str, guild: bool) -> u64 {
        let id = snowflake(now_ms(), lock(&self.shared).next_id);
        self.push_message_with_id(channel_id, author, content, guild, id)
    }

    /// [`FakeDiscord::push_message`] for a message whose snowflake says it was sent at
    /// `unix_ms` (hours ago, say).
    pub fn push_message_at(
        &self,
        unix_ms: u64,
        (channel_id, author, content, guild): (u64, u64, &str, bool),
    ) -> u64 {
        let id = snowflake(unix_ms, lock(&self.shared).next_id);
        self.push_message_with_id(channel_id, author, content, guild, id)
    }

    /// [`FakeDiscord::push_message`] for a message sent `by_ms` before message `later` (its
    /// snowflake says so), dispatched now: what the client sees when two dispatches are
    /// handled swapped.
    pub fn push_message_sent_before(
        &self,
        later: u64,
        by_ms: u64,
        (channel_id, author, content, guild): (u64, u64, &str, bool),
    ) -> u64 {
        let sent = (later >> 22) + DISCORD_EPOCH_MS - by_ms;
        let id = snowflake(sent, lock(&self.shared).next_id);
        self.push_message_with_id(channel_id, author, content, guild, id)
    }

    fn push_message_with_id(
        &self,
        channel_id: u64,
        author: u64,
        content: &str,
        guild: bool,
        id: u64,
    ) -> u64 {
        let mut inner = lock(&self.shared);
        inner.next_id += 1;
        let mentions: Vec<Value> = if content.contains(&format!("<@{BOT_ID}>")) {
            vec![user(BOT_ID, true)]
        } else {
            vec![]
        };
        let mut d = json!({
            "id": id.to_string(), "channel_id": channel_id.to_string(),
            "author": user(author, false), "content": content, "timestamp": TIMESTAMP,
            "tts": false, "mention_everyone": false, "mentions": mentions, "mention_roles": [],
            "attachments": [], "embeds": [], "pinned": false, "type": 0,
        });
        // Discord's REST answers do not name the guild; the gateway's dispatch does.
        remember(&mut inner, channel_id, id, d.clone());
        if guild {
            d["guild_id"] = json!(GUILD_ID.to_string());
        }
        dispatch(&mut inner, "MESSAGE_CREATE", d);
        id
    }

    /// The next IDENTIFY gets no READY until [`FakeDiscord::release_ready`]; dispatches reach
    /// the connection meanwhile (what a client sees when a message overtakes READY).
    pub fn hold_ready(&self) {
        lock(&self.shared).hold_ready = true;
    }

    /// Whether a session has identified and waits for its held READY.
    pub fn ready_held(&self) -> bool {
        lock(&self.shared).held_ready.is_some()
    }

    /// Sends the held READY.
    pub fn release_ready(&self) {
        let mut inner = lock(&self.shared);
        if let Some(ready) = inner.held_ready.take() {
            dispatch(&mut inner, "READY", ready);
        }
    }

    /// The next `n` history requests (`GET /channels/{id}/messages`) get 429 with
    /// `retry_after: 1`.
    pub fn rate_limit_history_next(&self, n: usize) {
        lock(&self.shared).history_rate_limits = n;
    }

    /// Cuts the gateway connection (TCP closed, no close frame): serenity must resume.
    pub fn drop_connection(&self) {
        if let Some(connection) = lock(&self.shared).connection.take() {
            let _ = connection.send(Command::Drop);
        }
    }

    /// On the next RESUME, replay the last dispatch too, as Discord may when the client's
    /// sequence number raced the cut: the client must not act on it twice.
    pub fn replay_last_on_resume(&self) {
        lock(&self.shared).replay_last_on_resume = true;
    }

    pub fn connected(&self) -> bool {
        lock(&self.shared).connection.is_some()
    }

    pub fn identifies(&self) -> usize {
        lock(&self.shared).identifies
    }

    pub fn resumes(&self) -> usize {
        lock(&self.shared).resumes
    }

    /// `channel_id` is a thread of `parent`.
    pub fn add_thread(&self, channel_id: u64, parent: u64) {
        lock(&self.shared).threads.insert(channel_id, parent);
    }

    /// From now on, channel lookups (`GET /channels/{id}`) answer 500.
    pub fn fail_channel_lookups(&self) {
        lock(&self.shared).fail_channel_lookups = true;
    }

    /// The next `n` message posts get 429 with `retry_after: 1`.
    pub fn rate_limit_next(&self, n: usize) {
        self.fail_next(
            n,
            Failure::RateLimited {
                retry_after_secs: 1,
            },
        );
    }

    /// The next message post is made, but answered 500, as if the response was lost on the
    /// way: only the nonce keeps the retry from posting twice.
    pub fn lose_next_response(&self) {
        lock(&self.shared).lose_responses += 1;
    }

    /// Posts to `channel_id` get 403 Missing Access.
    pub fn forbid(&self, channel_id: u64) {
        lock(&self.shared).forbidden.insert(channel_id);
    }

    pub fn posted(&self) -> Vec<Posted> {
        lock(&self.shared).posted.clone()
    }

    pub fn posted_to(&self, channel_id: u64) -> Vec<Posted> {
        self.posted()
            .into_iter()
            .filter(|p| p.channel_id == channel_id)
            .collect()
    }

    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared).requests.clone()
    }
}

impl Platform for FakeDiscord {
    /// The relay's discord channel: REST at this fake, which names its own gateway.
    fn settings(&self) -> Vec<Setting> {
        enable(
            "channels.discord",
            [
                ("token", toml_str(TOKEN)),
                ("api_base", toml_str(&self.api_base())),
            ],
        )
    }

    fn channel(&self) -> &'static str {
        "discord"
    }

    fn text_limit(&self) -> TextLimit {
        TextLimit {
            unit: TextUnit::Chars,
            max: TEXT_LIMIT,
        }
    }

    fn identity(&self, who: Person) -> String {
        format!("discord:{}", user_id(who))
    }

    fn direct(&self, who: Person) -> Chat {
        let channel = match who {
            Person::Alice => DM,
            Person::Bob => DM + 1,
        };
        Chat {
            id: channel.to_string(),
            group: false,
        }
    }

    /// A guild text channel.
    fn group(&self) -> Chat {
        Chat {
            id: GUILD_CHANNEL.to_string(),
            group: true,
        }
    }

    /// The gateway session is up: a message dispatched before it would be missed (until a
    /// backfill).
    fn wait_listening(&self, timeout: Duration) {
        crate::wait_for("the relay to connect to the fake gateway", timeout, || {
            (self.identifies() >= 1 && self.connected()).then_some(())
        });
    }

    /// In a guild channel the message mentions the bot, as the relay needs there.
    fn say(&self, _relay: SocketAddr, chat: &Chat, who: Person, text: &str) {
        let channel: u64 = chat.id.parse().expect("a discord channel id");
        if chat.group {
            let text = format!("<@{BOT_ID}> {text}");
            self.push_message(channel, user_id(who), &text, true);
        } else {
            self.push_message(channel, user_id(who), text, false);
        }
    }

    fn sent_to(&self, chat: &Chat) -> Vec<String> {
        let channel: u64 = chat.id.parse().expect("a discord channel id");
        self.posted_to(channel)
            .into_iter()
            .map(|p| p.content)
            .collect()
    }

    fn attempts(&self, chat: &Chat) -> Vec<Attempt> {
        let path = format!("/api/v10/channels/{}/messages", chat.id);
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .map(|r| Attempt {
                text: r.content.unwrap_or_default(),
                key: r.nonce,
                status: r.status,
                at: r.at,
            })
            .collect()
    }

    fn fail_next(&self, n: usize, failure: Failure) {
        lock(&self.shared).failures.push(n, failure);
    }

    fn refusal_words(&self) -> &'static str {
        "Missing Access"
    }

    fn unauthorized(&self) -> usize {
        let requests = lock(&self.shared);
        requests.requests.iter().filter(|r| r.status == 401).count()
    }

    /// What the relay posted in `chat`, as it shows now: edits applied (a deleted message
    /// keeps how it was posted).
    fn posted(&self, chat: &Chat) -> Vec<crate::Posted> {
        let channel: u64 = chat.id.parse().expect("a discord channel id");
        self.posted_to(channel)
            .into_iter()
            .map(|post| {
                let now = self.message(channel, post.id);
                let text = now.as_ref().and_then(|m| m["content"].as_str());
                crate::Posted {
                    message_id: post.id.to_string(),
                    text: text.unwrap_or(&post.content).to_string(),
                    buttons: now.as_ref().map(buttons_of).unwrap_or_default(),
                    sent_text: post.content,
                }
            })
            .collect()
    }

    fn edit_attempts(&self, chat: &Chat) -> Vec<crate::EditAttempt> {
        let channel: u64 = chat.id.parse().expect("a discord channel id");
        self.edits()
            .into_iter()
            .filter(|edit| edit.channel_id == channel)
            .map(|edit| crate::EditAttempt {
                message_id: edit.message_id.to_string(),
                text: edit.text_after,
                buttons: edit.buttons_after,
                status: edit.status,
                at: edit.at,
            })
            .collect()
    }

    fn fail_next_edits(&self, n: usize, failure: Failure) {
        lock(&self.shared).live.fail_next_edits(n, failure);
    }

    /// An INTERACTION_CREATE over the gateway (`relay` is not needed).
    fn press(
        &self,
        _relay: SocketAddr,
        chat: &Chat,
        who: Person,
        message_id: &str,
        button_id: &str,
    ) -> crate::PressRef {
        let channel: u64 = chat.id.parse().expect("a discord channel id");
        let message: u64 = message_id.parse().expect("a discord message id");
        let id = self.press_button(channel, user_id(who), message, button_id, chat.group);
        crate::PressRef {
            id: id.to_string(),
            chat: chat.clone(),
            who,
            message_id: message_id.to_string(),
            button_id: button_id.to_string(),
        }
    }

    fn press_again(&self, _relay: SocketAddr, press: &crate::PressRef) {
        self.redeliver_press(press.id.parse().expect("a discord interaction id"));
    }

    fn answers(&self, press: &crate::PressRef, timeout: Duration) -> Vec<String> {
        self.answered_for(press.id.parse().expect("a discord interaction id"), timeout)
    }
}

/// The DM channel of [`Person::Alice`] (Bob's is the next).
pub const DM: u64 = 200;
/// The guild text channel of [`Platform::group`].
pub const GUILD_CHANNEL: u64 = 210;

fn user_id(who: Person) -> u64 {
    match who {
        Person::Alice => 400,
        Person::Bob => 401,
    }
}

fn rate_limited(retry_after_secs: u64) -> Response {
    let body = json!({"message": "You are being rate limited.",
                      "retry_after": retry_after_secs as f64, "global": false});
    let header = retry_after_secs.to_string();
    (
        StatusCode::TOO_MANY_REQUESTS,
        [("retry-after", header)],
        axum::Json(body),
    )
        .into_response()
}

/// Keeps message `d` (as REST returns it) in `channel_id`'s history.
fn remember(inner: &mut Inner, channel_id: u64, id: u64, d: Value) {
    inner.history.entry(channel_id).or_default().insert(id, d);
}

/// Sends `t` with the next sequence number to the connected client (if any) and keeps it for
/// RESUME replays.
fn dispatch(inner: &mut Inner, t: &str, d: Value) {
    inner.seq += 1;
    let frame = json!({"op": 0, "s": inner.seq, "t": t, "d": d}).to_string();
    inner.dispatched.push((inner.seq, frame.clone()));
    if let Some(connection) = &inner.connection {
        let _ = connection.send(Command::Send(frame));
    }
}

async fn serve_gateway(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (commands, mut queued) = mpsc::unbounded_channel();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 41250}}).to_string();
    if ws.send(Frame::text(hello)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Frame::Text(text))) => {
                    for reply in answer(&shared, &text, &commands) {
                        if ws.send(Frame::text(reply)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Frame::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            command = queued.recv() => match command {
                Some(Command::Send(text)) => {
                    if ws.send(Frame::text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Command::Drop) | None => break,
            },
        }
    }
    let mut inner = lock(&shared);
    if inner
        .connection
        .as_ref()
        .is_some_and(|c| c.same_channel(&commands))
    {
        inner.connection = None;
    }
}

/// The frames the fake answers one client frame with.
/// Dispatches reach a connection only once its session is ready or resumed, as on Discord.
fn answer(shared: &Shared, text: &str, commands: &mpsc::UnboundedSender<Command>) -> Vec<String> {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return vec![];
    };
    let mut inner = lock(shared);
    match frame["op"].as_u64() {
        Some(1) => vec![json!({"op": 11}).to_string()],
        Some(2) => {
            inner.identifies += 1;
            if frame["d"]["token"].as_str() != Some(&format!("Bot {TOKEN}")) {
                return vec![];
            }
            let ready = json!({
                "v": 10, "user": user(BOT_ID, true), "guilds": [],
                "session_id": "e2e-session", "resume_gateway_url": shared.gateway_url,
                "application": {"id": BOT_ID.to_string(), "flags": 0},
            });
            if std::mem::take(&mut inner.hold_ready) {
                inner.connection = Some(commands.clone());
                inner.held_ready = Some(ready);
                return vec![];
            }
            // READY goes out as this answer; later dispatches through the connection.
            inner.connection = None;
            dispatch(&mut inner, "READY", ready);
            inner.connection = Some(commands.clone());
            let frame = inner.dispatched.last().map(|(_, f)| f.clone());
            frame.into_iter().collect()
        }
        Some(6) => {
            inner.resumes += 1;
            let after = frame["d"]["seq"].as_u64().unwrap_or(0);
            let from = if std::mem::take(&mut inner.replay_last_on_resume) {
                after.saturating_sub(1)
            } else {
                after
            };
            let mut frames: Vec<String> = inner
                .dispatched
                .iter()
                .filter(|(seq, _)| *seq > from)
                .map(|(_, f)| f.clone())
                .collect();
            inner.seq += 1;
            frames.push(json!({"op": 0, "s": inner.seq, "t": "RESUMED", "d": {}}).to_string());
            inner.connection = Some(commands.clone());
            frames
        }
        _ => vec![],
    }
}

fn discord_error(status: u16, code: i64, message: &str) -> Response {
    let status = StatusCode::from_u16(status).expect("a valid status");
    (
        status,
        axum::Json(json!({"message": message, "code": code})),
    )
        .into_response()
}

async fn handle_rest(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bot {TOKEN}"));
    let query = uri.query().unwrap_or("").to_string();
    // The interaction token in the path authorizes a callback, with or without the bot's.
    let callback = path.starts_with("/api/v10/interactions/");
    let response = if !authorized && !callback {
        discord_error(401, 0, "401: Unauthorized")
    } else {
        route(&shared, &method, &path, &query, &body)
    };
    lock(&shared).requests.push(Request {
        method: method.to_string(),
        path,
        query,
        status: response.status().as_u16(),
        nonce: body["nonce"].as_str().map(str::to_string),
        content: body["content"].as_str().map(str::to_string),
        user_agent: headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        at: Instant::now(),
    });
    response
}

fn route(shared: &Shared, method: &Method, path: &str, query: &str, body: &Value) -> Response {
    let parts: Vec<&str> = path.trim_start_matches("/api/v10/").split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["gateway"]) => axum::Json(json!({"url": shared.gateway_url})).into_response(),
        ("GET", ["users", "@me"]) => axum::Json(json!({"id": BOT_ID.to_string(),
            "username": "execrelay-test", "discriminator": "0", "bot": true}))
        .into_response(),
        ("GET", ["applications", "@me"]) => axum::Json(json!({"id": BOT_ID.to_string(),
            "name": "execrelay-test", "flags": lock(shared).application_flags}))
        .into_response(),
        ("GET", ["channels", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return discord_error(404, 10003, "Unknown Channel");
            };
            let inner = lock(shared);
            if inner.fail_channel_lookups {
                return discord_error(500, 0, "500: Internal Server Error");
            }
            let channel = match inner.threads.get(&id) {
                Some(parent) => json!({"id": id.to_string(), "type": 11,
                    "guild_id": GUILD_ID.to_string(), "parent_id": parent.to_string()}),
                None => json!({"id": id.to_string(), "type": 0, "guild_id": GUILD_ID.to_string()}),
            };
            axum::Json(channel).into_response()
        }
        ("GET", ["channels", id, "messages"]) => match id.parse::<u64>() {
            Ok(id) => history(shared, id, query),
            Err(_) => discord_error(404, 10003, "Unknown Channel"),
        },
        ("POST", ["channels", id, "messages"]) => match id.parse::<u64>() {
            Ok(id) => post_message(shared, id, body),
            Err(_) => discord_error(404, 10003, "Unknown Channel"),
        },
        ("PATCH", ["channels", channel, "messages", message]) => {
            live::edit_message(shared, channel, message, body)
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            live::interaction_callback(shared, id, token, body)
        }
        _ => discord_error(404, 0, "404: Not Found"),
    }
}

/// `GET /channels/{id}/messages`: with `after`, the `limit` messages right after it; without,
/// the latest `limit`; newest first either way, as Discord answers.
fn history(shared: &Shared, channel_id: u64, query: &str) -> Response {
    let mut after = None;
    let mut limit = 50;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value.parse::<u64>()) {
            ("after", Ok(id)) => after = Some(id),
            ("limit", Ok(n)) if (1..=100).contains(&n) => limit = n as usize,
            _ => return discord_error(400, 50035, &format!("Invalid Form Body ({pair})")),
        }
    }
    let mut inner = lock(shared);
    if inner.history_rate_limits > 0 {
        inner.history_rate_limits -= 1;
        return rate_limited(1);
    }
    let Some(messages) = inner.history.get(&channel_id) else {
        return axum::Json(json!([])).into_response();
    };
    let mut page: Vec<Value> = match after {
        Some(after) => messages
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect(),
        None => {
            let mut latest: Vec<Value> = messages.values().rev().take(limit).cloned().collect();
            latest.reverse();
            latest
        }
    };
    page.reverse();
    axum::Json(Value::Array(page)).into_response()
}

fn post_message(shared: &Shared, channel_id: u64, body: &Value) -> Response {
    let content = body["content"].as_str().unwrap_or("");
    if content.chars().count() > TEXT_LIMIT {
        return discord_error(400, 50035, "Invalid Form Body");
    }
    if content.trim().is_empty() {
        return discord_error(400, 50006, "Cannot send an empty message");
    }
    let components = body.get("components").filter(|c| !c.is_null());
    if let Some(components) = components
        && let Err(why) = live::check_components(components)
    {
        return discord_error(400, 50035, &format!("Invalid Form Body ({why})"));
    }
    let mut inner = lock(shared);
    if inner.forbidden.contains(&channel_id) {
        return discord_error(403, 50001, "Missing Access");
    }
    match inner.failures.next() {
        Some(Failure::RateLimited { retry_after_secs }) => return rate_limited(retry_after_secs),
        Some(Failure::Unavailable) => return discord_error(502, 0, "502: Bad Gateway"),
        Some(Failure::Forbidden) => return discord_error(403, 50001, "Missing Access"),
        None => {}
    }
    let nonce = body["nonce"].as_str().map(str::to_string);
    let enforce_nonce = body["enforce_nonce"].as_bool().unwrap_or(false);
    if let Some(nonce) = &nonce {
        if nonce.chars().count() > 25 {
            return discord_error(400, 50035, "Invalid Form Body (nonce too long)");
        }
        if enforce_nonce && let Some(existing) = inner.by_nonce.get(&(channel_id, nonce.clone())) {
            let existing = inner
                .history
                .get(&channel_id)
                .and_then(|messages| messages.get(existing));
            if let Some(existing) = existing {
                return axum::Json(existing.clone()).into_response();
            }
        }
    }
    let id = snowflake(now_ms(), inner.next_id);
    inner.next_id += 1;
    let reference = body["message_reference"]["message_id"]
        .as_str()
        .map(str::to_string);
    inner.posted.push(Posted {
        channel_id,
        id,
        content: content.to_string(),
        nonce: nonce.clone(),
        enforce_nonce,
        reference,
        at: Instant::now(),
    });
    let message = bot_message(id, channel_id, content, components.cloned());
    if let (Some(nonce), true) = (nonce, enforce_nonce) {
        inner.by_nonce.insert((channel_id, nonce), id);
    }
    remember(&mut inner, channel_id, id, message.clone());
    if inner.lose_responses > 0 {
        inner.lose_responses -= 1;
        return discord_error(500, 0, "500: Internal Server Error");
    }
    axum::Json(message).into_response()
}
