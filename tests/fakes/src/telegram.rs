//! A fake Telegram Bot API: what teloxide talks to in the tests.
//!
//! `POST /bot<token>/<Method>` with JSON bodies, method names matched case-insensitively
//! (teloxide sends `GetMe`, `SendMessage`). It answers `getMe`, `getWebhookInfo`,
//! `deleteWebhook` (a webhook is set on cue, [`FakeTelegram::set_webhook`], as another
//! deployment of the bot would leave it), `setMyCommands`, `getUpdates` (a long poll that honours `offset`: an update
//! stays queued until a later call's offset confirms it, as on the real API) and `sendMessage`
//! (recorded with chat id, thread id, text and inline keyboard; over 4096 UTF-16 units is a 400
//! "message is too long"). Failures on cue: the next sends fail (`Platform::fail_next`: a 429
//! with `retry_after`, a 502, a 403 "bot was blocked"), a blocked user (403), a group that
//! migrated to a supergroup (400 with `migrate_to_chat_id`), and 409 Conflicts on `getUpdates`.
//!
//! Live jobs (issue 16): every message the bot sent is kept as Telegram shows it now, so that
//! `editMessageText` can change it (answered with the whole edited Message; an edit that changes
//! nothing is the real 400 "message is not modified: …"; an unknown message is "message to edit
//! not found"), with a failure script of its own (`Platform::fail_next_edits`) that sends never
//! consume. A press ([`FakeTelegram::press_button`]) is a `callback_query` update built from the
//! stored message, as Telegram builds it; `answerCallbackQuery` is recorded per query id and
//! refused ("query is too old …") for a query not delivered or already answered. `getUpdates`
//! honours `allowed_updates`: Telegram keeps the last list a call gave, and an update of a kind
//! not on it is never queued, so a bot that does not ask for presses gets none.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

mod live;

pub use live::NOT_MODIFIED;
use live::{buttons_of, keyboard_refused, shown_keyboard};

use crate::{
    Attempt, Chat, EditAttempt, Failure, Failures, POLL, Person, Platform, Posted, PressRef,
    Server, Setting, TextLimit, TextUnit, enable, toml_str, unix_now,
};

/// The bot token the relay under test is given. Shaped like a real one (id, colon, 35
/// characters), so that a leak of it or of its secret half is easy to grep for.
pub const TOKEN: &str = "4242:AAF7-e2eFakeTokenSecretPart0123456";
pub const BOT_ID: i64 = 4242;
pub const BOT_USERNAME: &str = "execrelay_test_bot";
/// The longest a `getUpdates` call is held open when nothing is queued.
const MAX_HOLD: Duration = Duration::from_secs(2);
pub const TEXT_LIMIT: usize = 4096;

/// One `sendMessage` the fake accepted.
#[derive(Clone, Debug)]
pub struct Sent {
    pub chat_id: i64,
    pub thread_id: Option<i64>,
    /// The text it was sent with (never an edit's).
    pub text: String,
    /// The id Telegram gave it: what an edit or a press names.
    pub message_id: i64,
    /// Its inline keyboard as sent, one row after another: (label, callback_data).
    pub buttons: Vec<(String, String)>,
    pub at: Instant,
}

/// One `answerCallbackQuery` the fake accepted.
#[derive(Clone, Debug)]
pub struct Answer {
    pub query_id: String,
    /// What the presser was shown; empty when the answer had no text.
    pub text: String,
    pub at: Instant,
}

/// A press delivered as a `callback_query` update.
struct Query {
    /// The `callback_query` object, redelivered as it was by [`Platform::press_again`].
    body: Value,
    /// Deliveries not answered yet: each delivery may be answered once.
    unanswered: usize,
}

/// One call of any method, whatever it was answered.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    queued: Vec<Value>,
    next_update_id: i64,
    next_message_id: i64,
    sent: Vec<Sent>,
    calls: Vec<Call>,
    /// How the next sendMessage calls fail.
    failures: Failures,
    blocked: HashSet<i64>,
    migrated: HashMap<i64, i64>,
    conflicts: usize,
    commands: Option<Value>,
    /// The bot's messages as they show now, by (chat id, message id).
    messages: HashMap<(i64, i64), Value>,
    /// How the next editMessageText calls fail: a script of its own, never touched by sends.
    edit_failures: Failures,
    /// Presses delivered, by callback query id.
    queries: HashMap<String, Query>,
    answers: Vec<Answer>,
    /// The update kinds the bot asked for last (`allowed_updates`); `None`: every kind.
    allowed: Option<Vec<String>>,
    /// The webhook set on the token (`getWebhookInfo`'s `url`), until `deleteWebhook`.
    webhook: Option<String>,
}

impl Inner {
    /// Queues a `callback_query` update for the press `query_id` and lets it be answered once
    /// more; the update's id, if queued.
    fn deliver(&mut self, query_id: &str, body: Value) -> Option<i64> {
        let update_id = self.queue(json!({"callback_query": body.clone()}))?;
        self.queries
            .entry(query_id.to_string())
            .or_insert(Query {
                body,
                unanswered: 0,
            })
            .unanswered += 1;
        Some(update_id)
    }

    /// Queues `update` (with its `update_id` set here), unless its kind is one the bot did not
    /// ask for: Telegram never creates those. The update's id, if queued.
    fn queue(&mut self, mut update: Value) -> Option<i64> {
        let update_id = self.next_update_id;
        self.next_update_id += 1;
        let kind = update
            .as_object()
            .and_then(|fields| fields.keys().next().cloned())
            .unwrap_or_default();
        if let Some(allowed) = &self.allowed
            && !allowed.contains(&kind)
        {
            return None;
        }
        update["update_id"] = json!(update_id);
        self.queued.push(update);
        Some(update_id)
    }
}

struct Shared {
    inner: Mutex<Inner>,
    news: tokio::sync::Notify,
}

pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Last field: dropped after everything else, stopping the server.
    _server: Server,
}

fn ok(result: Value) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"ok": true, "result": result})),
    )
        .into_response()
}

/// What Telegram answers a send or an edit to `chat_id` before it looks at the message: the
/// chat moved, the bot was blocked, or the next failure of `script` (sends' or edits').
fn refusal(
    inner: &mut Inner,
    chat_id: i64,
    script: impl FnOnce(&mut Inner) -> Option<Failure>,
) -> Option<Response> {
    if let Some(new) = inner.migrated.get(&chat_id) {
        let parameters = json!({"migrate_to_chat_id": new});
        return Some(error(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            Some(parameters),
        ));
    }
    if inner.blocked.contains(&chat_id) {
        return Some(error(403, "Forbidden: bot was blocked by the user", None));
    }
    match script(inner)? {
        Failure::RateLimited { retry_after_secs } => Some(error(
            429,
            &format!("Too Many Requests: retry after {retry_after_secs}"),
            Some(json!({"retry_after": retry_after_secs})),
        )),
        // teloxide waits 10 s before it reads a 5xx answer, as it would from Telegram.
        Failure::Unavailable => Some(error(502, "Bad Gateway", None)),
        Failure::Forbidden => Some(error(403, "Forbidden: bot was blocked by the user", None)),
    }
}

fn error(status: u16, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({"ok": false, "error_code": status, "description": description});
    if let Some(parameters) = parameters {
        body["parameters"] = parameters;
    }
    let status = StatusCode::from_u16(status).expect("a valid status");
    (status, axum::Json(body)).into_response()
}

fn user(id: i64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": format!("user{id}")})
}

/// Supergroup ids are `-100` followed by ten or more digits; other negative ids are basic groups.
pub const SUPERGROUP_BASE: i64 = -1_000_000_000_000;

fn chat(id: i64) -> Value {
    if id > 0 {
        json!({"id": id, "type": "private", "first_name": format!("user{id}")})
    } else if id <= SUPERGROUP_BASE {
        json!({"id": id, "type": "supergroup", "title": format!("group{id}"), "is_forum": true})
    } else {
        json!({"id": id, "type": "group", "title": format!("group{id}")})
    }
}

impl FakeTelegram {
    pub fn start() -> FakeTelegram {
        let server = Server::start("fake-telegram");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                next_update_id: 1000,
                next_message_id: 1,
                ..Inner::default()
            }),
            news: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", post(handle))
            .with_state(shared.clone());
        FakeTelegram {
            addr: server.serve(app),
            shared,
            _server: server,
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A webhook is set on the bot token (by another deployment of the bot): `getWebhookInfo`
    /// names `url` until `deleteWebhook`.
    pub fn set_webhook(&self, url: &str) {
        self.lock().webhook = Some(url.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("fake telegram lock")
    }

    /// Queues an update carrying `message` (from [`dm`] or [`group`]); returns its update_id.
    pub fn push(&self, mut message: Value) -> i64 {
        let update_id = {
            let mut inner = self.lock();
            message["message_id"] = json!(inner.next_message_id);
            inner.next_message_id += 1;
            message["date"] = json!(unix_now());
            inner
                .queue(json!({"message": message}))
                .expect("the bot asks for messages")
        };
        self.shared.news.notify_waiters();
        update_id
    }

    /// `user_id` presses the button carrying `data` under the bot's message `message_id` in
    /// `chat_id`: a `callback_query` update whose `message` is that message as it shows now.
    /// An empty `data` leaves `data` out, as for a game's button. Returns (update id, callback
    /// query id); the update id is `None` when the bot did not ask for callback queries, so none
    /// was queued. Panics if the bot sent no such message.
    pub fn press_button(
        &self,
        chat_id: i64,
        message_id: i64,
        user_id: i64,
        data: &str,
    ) -> (Option<i64>, String) {
        let (update_id, query_id) = {
            let mut inner = self.lock();
            let message = inner
                .messages
                .get(&(chat_id, message_id))
                .unwrap_or_else(|| panic!("the bot sent no message {message_id} in {chat_id}"))
                .clone();
            let query_id = format!("cq-{}", inner.next_update_id);
            let mut body = json!({
                "id": query_id, "from": user(user_id), "message": message,
                "chat_instance": chat_id.to_string(),
            });
            // Telegram's callback_data is 1 to 64 bytes; a press with none (a game's button)
            // carries no `data` at all.
            if !data.is_empty() {
                body["data"] = json!(data);
            }
            (inner.deliver(&query_id, body), query_id)
        };
        self.shared.news.notify_waiters();
        (update_id, query_id)
    }

    /// Delivers the press `query_id` again, in a new update with the same callback query (as
    /// after a bot restart that never confirmed it); the new update's id, if queued.
    pub fn press_button_again(&self, query_id: &str) -> Option<i64> {
        let update_id = {
            let mut inner = self.lock();
            let body = inner
                .queries
                .get(query_id)
                .unwrap_or_else(|| panic!("no press {query_id} was delivered"))
                .body
                .clone();
            inner.deliver(query_id, body)
        };
        self.shared.news.notify_waiters();
        update_id
    }

    /// Every answerCallbackQuery accepted so far, in order (by press: [`Platform::answers`]).
    pub fn answered(&self) -> Vec<Answer> {
        self.lock().answers.clone()
    }

    /// The bot's message `message_id` in `chat_id` as it shows now, if it sent one.
    pub fn message(&self, chat_id: i64, message_id: i64) -> Option<Value> {
        self.lock().messages.get(&(chat_id, message_id)).cloned()
    }

    /// The next `n` editMessageText calls get a 429 with `retry_after`; sends are not affected.
    pub fn rate_limit_next_edits(&self, n: usize, retry_after_secs: u64) {
        assert!(n > 0, "rate_limit_next_edits needs n >= 1");
        self.fail_next_edits(n, Failure::RateLimited { retry_after_secs });
    }

    /// Every sendMessage accepted so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    pub fn sent_to(&self, chat_id: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.chat_id == chat_id)
            .collect()
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        let method = method.to_ascii_lowercase();
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Updates not yet confirmed by an offset.
    pub fn unconfirmed(&self) -> usize {
        self.lock().queued.len()
    }

    /// The next `n` sendMessage calls get a 429 with `retry_after`.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        assert!(n > 0, "rate_limit_next needs n >= 1");
        self.fail_next(n, Failure::RateLimited { retry_after_secs });
    }

    /// The user blocked the bot: sends to `chat_id` get 403.
    pub fn block(&self, chat_id: i64) {
        self.lock().blocked.insert(chat_id);
    }

    /// The group `old` became the supergroup `new`: sends to `old` get 400 with
    /// `migrate_to_chat_id`.
    pub fn migrate(&self, old: i64, new: i64) {
        self.lock().migrated.insert(old, new);
    }

    /// The next `n` getUpdates calls get 409 Conflict (another poller on the token).
    pub fn conflict_next(&self, n: usize) {
        self.lock().conflicts = n;
    }

    /// The command list registered last, if any.
    pub fn commands(&self) -> Option<Value> {
        self.lock().commands.clone()
    }
}

impl Platform for FakeTelegram {
    /// The relay's telegram channel, polling this fake.
    fn settings(&self) -> Vec<Setting> {
        enable(
            "channels.telegram",
            [
                ("token", toml_str(TOKEN)),
                ("api_url", toml_str(&self.api_url())),
                ("poll_timeout", toml_str("10s")),
            ],
        )
    }

    fn channel(&self) -> &'static str {
        "telegram"
    }

    fn text_limit(&self) -> TextLimit {
        TextLimit {
            unit: TextUnit::Utf16,
            max: TEXT_LIMIT,
        }
    }

    fn identity(&self, who: Person) -> String {
        format!("telegram:{}", user_id(who))
    }

    /// A private chat's id is its user's.
    fn direct(&self, who: Person) -> Chat {
        Chat {
            id: user_id(who).to_string(),
            group: false,
        }
    }

    /// A basic group (not a supergroup).
    fn group(&self) -> Chat {
        Chat {
            id: GROUP.to_string(),
            group: true,
        }
    }

    /// A plain `/command` reaches a bot in a group too, so nothing is added.
    fn say(&self, _relay: SocketAddr, chat: &Chat, who: Person, text: &str) {
        let chat_id: i64 = chat.id.parse().expect("a telegram chat id");
        let message = if chat.group {
            group(chat_id, user_id(who), text, None)
        } else {
            assert_eq!(chat_id, user_id(who), "a private chat is its user's");
            dm(chat_id, text)
        };
        self.push(message);
    }

    fn sent_to(&self, chat: &Chat) -> Vec<String> {
        self.attempts(chat)
            .into_iter()
            .filter(|a| a.status == 200)
            .map(|a| a.text)
            .collect()
    }

    fn attempts(&self, chat: &Chat) -> Vec<Attempt> {
        let chat_id: i64 = chat.id.parse().expect("a telegram chat id");
        self.calls("sendMessage")
            .into_iter()
            .filter(|c| c.body["chat_id"].as_i64() == Some(chat_id))
            .map(|c| Attempt {
                text: c.body["text"].as_str().unwrap_or("").to_string(),
                key: None,
                status: c.status,
                at: c.at,
            })
            .collect()
    }

    fn fail_next(&self, n: usize, failure: Failure) {
        self.lock().failures.push(n, failure);
    }

    fn refusal_words(&self) -> &'static str {
        "blocked"
    }

    fn unauthorized(&self) -> usize {
        self.lock().calls.iter().filter(|c| c.status == 401).count()
    }

    /// Message ids as the relay names them: the Message's `message_id`, in decimal.
    fn posted(&self, chat: &Chat) -> Vec<Posted> {
        let chat_id: i64 = chat.id.parse().expect("a telegram chat id");
        let inner = self.lock();
        inner
            .sent
            .iter()
            .filter(|sent| sent.chat_id == chat_id)
            .map(|sent| {
                let now = inner.messages.get(&(chat_id, sent.message_id));
                Posted {
                    message_id: sent.message_id.to_string(),
                    sent_text: sent.text.clone(),
                    text: now
                        .and_then(|m| m["text"].as_str())
                        .unwrap_or(&sent.text)
                        .to_string(),
                    buttons: now
                        .map(|m| buttons_of(&m["reply_markup"]))
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    fn edit_attempts(&self, chat: &Chat) -> Vec<EditAttempt> {
        let chat_id: i64 = chat.id.parse().expect("a telegram chat id");
        self.calls("editMessageText")
            .into_iter()
            .filter(|c| c.body["chat_id"].as_i64() == Some(chat_id))
            .map(|c| EditAttempt {
                message_id: c.body["message_id"].to_string(),
                text: c.body["text"].as_str().unwrap_or("").to_string(),
                // No keyboard in an edit leaves none (see `edit_message_text`).
                buttons: buttons_of(&c.body["reply_markup"]),
                status: c.status,
                at: c.at,
            })
            .collect()
    }

    fn fail_next_edits(&self, n: usize, failure: Failure) {
        self.lock().edit_failures.push(n, failure);
    }

    /// A `callback_query` update to poll; the relay's address is not needed.
    fn press(
        &self,
        _relay: SocketAddr,
        chat: &Chat,
        who: Person,
        message_id: &str,
        button_id: &str,
    ) -> PressRef {
        let chat_id: i64 = chat.id.parse().expect("a telegram chat id");
        if !chat.group {
            assert_eq!(chat_id, user_id(who), "a private chat is its user's");
        }
        let message: i64 = message_id.parse().expect("a telegram message id");
        let (update_id, id) = self.press_button(chat_id, message, user_id(who), button_id);
        assert!(
            update_id.is_some(),
            "the bot did not ask for callback_query updates: Telegram would not deliver the press"
        );
        PressRef {
            id,
            chat: chat.clone(),
            who,
            message_id: message_id.to_string(),
            button_id: button_id.to_string(),
        }
    }

    fn press_again(&self, _relay: SocketAddr, press: &PressRef) {
        let update_id = self.press_button_again(&press.id);
        assert!(
            update_id.is_some(),
            "the bot did not ask for callback_query updates: Telegram would not deliver the press"
        );
    }

    /// Waits until every delivery of the press is answered, or `timeout` passes.
    fn answers(&self, press: &PressRef, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let (answers, unanswered) = {
                let inner = self.lock();
                let answers: Vec<String> = inner
                    .answers
                    .iter()
                    .filter(|a| a.query_id == press.id)
                    .map(|a| a.text.clone())
                    .collect();
                let unanswered = inner.queries.get(&press.id).map_or(0, |q| q.unanswered);
                (answers, unanswered)
            };
            if (!answers.is_empty() && unanswered == 0) || start.elapsed() >= timeout {
                return answers;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The basic group of [`Platform::group`].
pub const GROUP: i64 = -4242;

fn user_id(who: Person) -> i64 {
    match who {
        Person::Alice => 5,
        Person::Bob => 6,
    }
}

/// A private-chat text message from `user_id`.
pub fn dm(user_id: i64, text: &str) -> Value {
    json!({"chat": chat(user_id), "from": user(user_id), "text": text})
}

/// A message in the group `chat_id` (negative; a forum supergroup at or below
/// [`SUPERGROUP_BASE`]) from `user_id`, in `topic` if given.
pub fn group(chat_id: i64, user_id: i64, text: &str, topic: Option<i64>) -> Value {
    let mut message = json!({"chat": chat(chat_id), "from": user(user_id), "text": text});
    if let Some(topic) = topic {
        message["message_thread_id"] = json!(topic);
        message["is_topic_message"] = json!(true);
    }
    message
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let method = method.to_ascii_lowercase();
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(_) => return error(400, "Bad Request: invalid JSON", None),
        }
    };
    let response = if bot != format!("bot{TOKEN}") {
        error(401, "Unauthorized", None)
    } else {
        answer(&shared, &method, &body).await
    };
    shared
        .inner
        .lock()
        .expect("fake telegram lock")
        .calls
        .push(Call {
            method,
            body,
            status: response.status().as_u16(),
            at: Instant::now(),
        });
    response
}

async fn answer(shared: &Shared, method: &str, body: &Value) -> Response {
    match method {
        "getme" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "execrelay", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "getwebhookinfo" => {
            let url = shared.inner.lock().expect("lock").webhook.clone();
            ok(
                json!({"url": url.unwrap_or_default(), "has_custom_certificate": false,
                      "pending_update_count": 0}),
            )
        }
        "deletewebhook" => {
            shared.inner.lock().expect("lock").webhook = None;
            ok(json!(true))
        }
        "setmycommands" => {
            shared.inner.lock().expect("lock").commands = Some(body["commands"].clone());
            ok(json!(true))
        }
        "getupdates" => get_updates(shared, body).await,
        "sendmessage" => send_message(shared, body),
        "editmessagetext" => live::edit_message_text(shared, body),
        "answercallbackquery" => live::answer_callback_query(shared, body),
        _ => error(404, "Not Found: method not found", None),
    }
}

async fn get_updates(shared: &Shared, body: &Value) -> Response {
    // Kept until a later call names another list; an empty list is the default, every kind
    // we use.
    if let Some(kinds) = body["allowed_updates"].as_array() {
        let kinds: Vec<String> = kinds
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        shared.inner.lock().expect("lock").allowed = (!kinds.is_empty()).then_some(kinds);
    }
    let offset = body["offset"].as_i64();
    let limit = body["limit"].as_u64().unwrap_or(100) as usize;
    let hold = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0)).min(MAX_HOLD);
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let news = shared.news.notified();
        {
            let mut inner = shared.inner.lock().expect("lock");
            if inner.conflicts > 0 {
                inner.conflicts -= 1;
                return error(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                    None,
                );
            }
            // An offset confirms every update before it: they are gone for good.
            if let Some(offset) = offset {
                inner
                    .queued
                    .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            }
            if !inner.queued.is_empty() || tokio::time::Instant::now() >= deadline {
                let batch: Vec<Value> = inner.queued.iter().take(limit).cloned().collect();
                return ok(Value::Array(batch));
            }
        }
        let _ = tokio::time::timeout_at(deadline, news).await;
    }
}

fn send_message(shared: &Shared, body: &Value) -> Response {
    let Some(chat_id) = body["chat_id"].as_i64() else {
        return error(400, "Bad Request: chat not found", None);
    };
    let text = body["text"].as_str().unwrap_or("");
    if text.encode_utf16().count() > TEXT_LIMIT {
        return error(400, "Bad Request: message is too long", None);
    }
    if text.trim().is_empty() {
        return error(400, "Bad Request: message text is empty", None);
    }
    if let Some(refused) = keyboard_refused(&body["reply_markup"]) {
        return refused;
    }
    let mut inner = shared.inner.lock().expect("lock");
    if let Some(refused) = refusal(&mut inner, chat_id, |inner| inner.failures.next()) {
        return refused;
    }
    let thread_id = body["message_thread_id"].as_i64();
    let message_id = inner.next_message_id;
    inner.next_message_id += 1;
    inner.sent.push(Sent {
        chat_id,
        thread_id,
        text: text.to_string(),
        message_id,
        buttons: buttons_of(&body["reply_markup"]),
        at: Instant::now(),
    });
    let mut message = json!({
        "message_id": message_id, "date": unix_now(), "chat": chat(chat_id),
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "execrelay", "username": BOT_USERNAME},
        "text": text,
    });
    if let Some(thread_id) = thread_id {
        message["message_thread_id"] = json!(thread_id);
        message["is_topic_message"] = json!(true);
    }
    if let Some(keyboard) = shown_keyboard(&body["reply_markup"]) {
        message["reply_markup"] = keyboard;
    }
    inner
        .messages
        .insert((chat_id, message_id), message.clone());
    ok(message)
}
