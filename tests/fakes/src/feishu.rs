//! A fake Feishu open platform: the tenant-token endpoint, `im/v1/messages` and a custom
//! group bot's hook; and the tests' side of Feishu's event callbacks (encrypted and signed as
//! Feishu does).
//!
//! The token endpoint issues `t-1`, `t-2`, … for the right app id and secret; `expire_tokens`
//! makes every issued token stale, after which `im/v1/messages` answers HTTP 400 with code
//! 99991663 as Feishu does. Messages are recorded with chat id, text, `uuid` and token; a
//! `uuid` seen before returns the first message again without posting (Feishu's dedupe); sends
//! fail on cue (`Platform::fail_next`: 429 with code 99991400 and `x-ogw-ratelimit-reset`, a
//! gateway's 503, code 230002 for a bot out of the chat). The bot hook checks `sign` against its secret (code 19021 on a mismatch).
//!
//! Cards: a send with `msg_type: "interactive"` is recorded with the card's text (its `div`s)
//! and buttons (label, `value.execrelay`), and the 30 KB body limit of cards (code 230025).
//! `PATCH /open-apis/im/v1/messages/{id}` updates a card, with the token check of sends and a
//! failure script of its own (`Platform::fail_next_edits`); like Feishu it refuses an unknown
//! message, a text message, and a card that is not shared (`update_multi`) before or after
//! (code 230001 for all three: the real codes are not documented), and records every attempt
//! apart from the sends (`sent`, `sent_to` and `attempts` keep the first post). A press is a
//! `card.action.trigger` callback, encrypted and signed like events, posted to
//! [`EVENTS_PATH`]; the toast in the relay's answer is what the presser sees.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    Attempt, Chat, EditAttempt, Failure, Failures, Person, Platform, Posted, PressRef, Server,
    Setting, TextLimit, TextUnit, enable, next_message_id, post_to_relay, toml_str, unix_now,
};

pub const APP_ID: &str = "cli_e2e_app";
pub const APP_SECRET: &str = "e2e-feishu-app-secret-77";
pub const VERIFICATION_TOKEN: &str = "e2e-verification-token";
pub const ENCRYPT_KEY: &str = "e2e-encrypt-key";
pub const BOT_SECRET: &str = "e2e-bot-secret";
pub const EVENTS_PATH: &str = "/feishu/events";

/// The request body limit of cards (sends and updates); text messages take 150 KB.
pub const MAX_CARD_BODY: usize = 30 * 1024;

/// What kind of message a send posted: only a card can be updated (`PATCH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Card,
}

/// One message posted through `im/v1/messages`, as first posted.
#[derive(Clone, Debug)]
pub struct Sent {
    pub chat_id: String,
    /// A text message's text, or a card's (its `div`s, one a line).
    pub text: String,
    pub uuid: String,
    pub token: String,
    /// The `om_` id Feishu gave it.
    pub message_id: String,
    pub kind: Kind,
    /// A card's buttons: (label, `value.execrelay`).
    pub buttons: Vec<(String, String)>,
    /// A card that declared `"update_multi": true` (a shared card, which may be updated).
    pub shared: bool,
}

/// What a card says: its text, its buttons, whether it is shared.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CardView {
    text: String,
    buttons: Vec<(String, String)>,
    shared: bool,
}

/// One `PATCH` of a message, whatever it was answered.
#[derive(Clone, Debug)]
struct EditRecord {
    chat_id: String,
    attempt: EditAttempt,
}

#[derive(Default)]
struct Inner {
    issued: usize,
    valid: HashSet<String>,
    sent: Vec<Sent>,
    by_uuid: HashMap<String, String>,
    token_refusals: usize,
    refused_uuids: Vec<String>,
    bot_posts: Vec<String>,
    bot_refusals: usize,
    /// How the next `im/v1/messages` posts fail.
    failures: Failures,
    /// Every `im/v1/messages` post, by chat id.
    attempts: Vec<(String, Attempt)>,
    /// Requests with wrong credentials: app id and secret, or a token never issued.
    unauthorized: usize,
    /// Every token issued, valid or expired.
    issued_tokens: HashSet<String>,
    /// Every `PATCH`, in order.
    edits: Vec<EditRecord>,
    /// How the next `PATCH`es fail.
    edit_failures: Failures,
    /// Each card's text and buttons now, by message id.
    current: HashMap<String, CardView>,
    /// Recalled messages: an update answers 230011.
    recalled: HashSet<String>,
    /// Each press's callback, by press (event) id, to deliver again.
    presses: HashMap<String, Value>,
    /// What each press's presser was shown (the toasts), by press id.
    answers: HashMap<String, Vec<String>>,
}

pub struct FakeFeishu {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    // Last field: dropped after everything else, stopping the server.
    _server: Server,
}

impl FakeFeishu {
    pub fn start() -> FakeFeishu {
        let server = Server::start("fake-feishu");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        FakeFeishu {
            addr: server.serve(app),
            inner,
            _server: server,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake feishu lock")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hook_url(&self) -> String {
        format!("{}/open-apis/bot/v2/hook/e2e-hook-token", self.base_url())
    }

    /// The relay's custom group bot channel (`feishu_bot`), posting to this fake's hook.
    pub fn bot_settings(&self) -> Vec<Setting> {
        enable(
            "channels.feishu_bot",
            [
                ("hook_url", toml_str(&self.hook_url())),
                ("secret", toml_str(BOT_SECRET)),
            ],
        )
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    pub fn sent_to(&self, chat_id: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.chat_id == chat_id)
            .collect()
    }

    pub fn tokens_issued(&self) -> usize {
        self.lock().issued
    }

    pub fn token_refusals(&self) -> usize {
        self.lock().token_refusals
    }

    /// The `uuid`s of sends refused for their token.
    pub fn refused_uuids(&self) -> Vec<String> {
        self.lock().refused_uuids.clone()
    }

    /// Every token issued so far stops working (as at its expiry).
    pub fn expire_tokens(&self) {
        self.lock().valid.clear();
    }

    /// Texts the custom bot accepted (signature checked).
    pub fn bot_posts(&self) -> Vec<String> {
        self.lock().bot_posts.clone()
    }

    pub fn bot_refusals(&self) -> usize {
        self.lock().bot_refusals
    }

    /// The message is recalled (by someone in the chat): updates of it answer 230011.
    pub fn recall(&self, message_id: &str) {
        self.lock().recalled.insert(message_id.to_string());
    }

    /// A card's text and buttons now, after updates; `None` for a text or unknown message.
    pub fn current(&self, message_id: &str) -> Option<(String, Vec<(String, String)>)> {
        let inner = self.lock();
        let card = inner.current.get(message_id)?;
        Some((card.text.clone(), card.buttons.clone()))
    }
}

impl Platform for FakeFeishu {
    /// The relay's feishu channel against this fake, with encryption; events arrive at
    /// [`EVENTS_PATH`] (see [`signed_event`]).
    fn settings(&self) -> Vec<Setting> {
        enable(
            "channels.feishu",
            [
                ("app_id", toml_str(APP_ID)),
                ("app_secret", toml_str(APP_SECRET)),
                ("verification_token", toml_str(VERIFICATION_TOKEN)),
                ("encrypt_key", toml_str(ENCRYPT_KEY)),
                ("base_url", toml_str(&self.base_url())),
            ],
        )
    }

    fn channel(&self) -> &'static str {
        "feishu"
    }

    /// What the relay's channel takes per message; `im/v1` itself takes text up to 150 KB.
    fn text_limit(&self) -> TextLimit {
        TextLimit {
            unit: TextUnit::Chars,
            max: 4000,
        }
    }

    fn identity(&self, who: Person) -> String {
        format!("feishu:{}", open_id(who))
    }

    fn direct(&self, who: Person) -> Chat {
        let chat = match who {
            Person::Alice => "oc_alice_dm",
            Person::Bob => "oc_bob_dm",
        };
        Chat {
            id: chat.into(),
            group: false,
        }
    }

    fn group(&self) -> Chat {
        Chat {
            id: "oc_team_room".into(),
            group: true,
        }
    }

    /// An `im.message.receive_v1` event, encrypted and signed, posted to the relay's
    /// [`EVENTS_PATH`]; in a group the text starts with the bot's mention placeholder.
    fn say(&self, relay: SocketAddr, chat: &Chat, who: Person, text: &str) {
        let (chat_type, text) = if chat.group {
            ("group", format!("@_user_1 {text}"))
        } else {
            ("p2p", text.to_string())
        };
        let event_id = next_message_id("ev");
        let event = message_event(&event_id, open_id(who), &chat.id, chat_type, &text);
        let (headers, body) = signed_event(&event, Tamper::None);
        let (status, answer) = post_to_relay(relay, EVENTS_PATH, &headers, body.as_bytes());
        let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
        assert!(
            status == 200 && answer["duplicate"] == false,
            "the event {event_id} answered {status} {answer}"
        );
    }

    fn sent_to(&self, chat: &Chat) -> Vec<String> {
        self.sent_to(&chat.id).into_iter().map(|s| s.text).collect()
    }

    fn attempts(&self, chat: &Chat) -> Vec<Attempt> {
        let inner = self.lock();
        let to_chat = inner.attempts.iter().filter(|(id, _)| *id == chat.id);
        to_chat.map(|(_, attempt)| attempt.clone()).collect()
    }

    fn fail_next(&self, n: usize, failure: Failure) {
        self.lock().failures.push(n, failure);
    }

    fn refusal_words(&self) -> &'static str {
        "out of the chat"
    }

    /// Tenant tokens asked for with the wrong app credentials, and sends with a token never
    /// issued (an expired one is not counted).
    fn unauthorized(&self) -> usize {
        self.lock().unauthorized
    }

    /// Messages by the `om_` id Feishu gave them; a card's text and buttons after updates.
    fn posted(&self, chat: &Chat) -> Vec<Posted> {
        let inner = self.lock();
        let in_chat = inner.sent.iter().filter(|s| s.chat_id == chat.id);
        in_chat
            .map(|sent| {
                let now = inner.current.get(&sent.message_id);
                Posted {
                    message_id: sent.message_id.clone(),
                    sent_text: sent.text.clone(),
                    text: now.map_or(&sent.text, |card| &card.text).clone(),
                    buttons: now.map_or(&sent.buttons, |card| &card.buttons).clone(),
                }
            })
            .collect()
    }

    fn edit_attempts(&self, chat: &Chat) -> Vec<EditAttempt> {
        let inner = self.lock();
        let in_chat = inner.edits.iter().filter(|e| e.chat_id == chat.id);
        in_chat.map(|e| e.attempt.clone()).collect()
    }

    fn fail_next_edits(&self, n: usize, failure: Failure) {
        self.lock().edit_failures.push(n, failure);
    }

    /// A `card.action.trigger` callback for the card `message_id` (which must be a card this
    /// fake shows in `chat`: Feishu calls back for nothing else). The button need not be on
    /// the card now: a client that has not caught up with an update still shows it.
    fn press(
        &self,
        relay: SocketAddr,
        chat: &Chat,
        who: Person,
        message_id: &str,
        button_id: &str,
    ) -> PressRef {
        {
            let inner = self.lock();
            let card = inner
                .sent
                .iter()
                .find(|s| s.message_id == message_id && s.kind == Kind::Card);
            assert!(
                card.is_some_and(|card| card.chat_id == chat.id),
                "no card {message_id} in {} to press",
                chat.id
            );
        }
        let event_id = next_message_id("ev-press");
        let event = card_action_event(&event_id, open_id(who), &chat.id, message_id, button_id);
        let press = PressRef {
            id: event_id.clone(),
            chat: chat.clone(),
            who,
            message_id: message_id.to_string(),
            button_id: button_id.to_string(),
        };
        self.lock().presses.insert(event_id, event);
        self.press_again(relay, &press);
        press
    }

    /// The same callback (same `event_id`), signed anew, as when Feishu tries again.
    fn press_again(&self, relay: SocketAddr, press: &PressRef) {
        let event = self.lock().presses.get(&press.id).cloned();
        let event = event.unwrap_or_else(|| panic!("no press {} was delivered", press.id));
        let (headers, body) = signed_event(&event, Tamper::None);
        let (status, answer) = post_to_relay(relay, EVENTS_PATH, &headers, body.as_bytes());
        let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        // Feishu shows a toast only from a 200 that has one.
        let toast = answer["toast"]["content"]
            .as_str()
            .filter(|_| status == 200);
        let mut inner = self.lock();
        let answers = inner.answers.entry(press.id.clone()).or_default();
        answers.extend(toast.map(str::to_string));
    }

    fn answers(&self, press: &PressRef, timeout: std::time::Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let answers = self.lock().answers.get(&press.id).cloned();
            if let Some(answers) = answers.filter(|a| !a.is_empty()) {
                return answers;
            }
            if start.elapsed() >= timeout {
                return Vec::new();
            }
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
    }
}

fn open_id(who: Person) -> &'static str {
    match who {
        Person::Alice => "ou_alice",
        Person::Bob => "ou_bob",
    }
}

fn feishu_error(status: u16, code: i64, msg: &str) -> Response {
    let status = StatusCode::from_u16(status).expect("a valid status");
    (status, axum::Json(json!({"code": code, "msg": msg}))).into_response()
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let size = body.len();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = inner.lock().expect("fake feishu lock");
    if method == Method::PATCH
        && let Some(message_id) = uri.path().strip_prefix("/open-apis/im/v1/messages/")
    {
        return update_card(&mut inner, message_id, &headers, &body, size);
    }
    if method != Method::POST {
        return feishu_error(404, 404, "not found");
    }
    match uri.path() {
        "/open-apis/auth/v3/tenant_access_token/internal" => {
            if body["app_id"] != APP_ID || body["app_secret"] != APP_SECRET {
                inner.unauthorized += 1;
                return feishu_error(200, 10014, "app secret invalid");
            }
            inner.issued += 1;
            let token = format!("t-{}", inner.issued);
            inner.valid.insert(token.clone());
            inner.issued_tokens.insert(token.clone());
            axum::Json(json!({"code": 0, "msg": "ok", "tenant_access_token": token,
                              "expire": 7200}))
            .into_response()
        }
        "/open-apis/im/v1/messages" => {
            let response = im_message(&mut inner, uri.query(), &headers, &body, size);
            let content: Value = body["content"]
                .as_str()
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or(Value::Null);
            let text = match body["msg_type"].as_str() {
                Some("interactive") => read_card(&content).map(|card| card.text),
                _ => content["text"].as_str().map(str::to_string),
            };
            let attempt = Attempt {
                text: text.unwrap_or_default(),
                key: body["uuid"].as_str().map(str::to_string),
                status: response.status().as_u16(),
                at: Instant::now(),
            };
            let chat_id = body["receive_id"].as_str().unwrap_or("").to_string();
            inner.attempts.push((chat_id, attempt));
            response
        }
        path if path.starts_with("/open-apis/bot/v2/hook/") => {
            let timestamp = body["timestamp"]
                .as_str()
                .and_then(|t| t.parse::<i64>().ok());
            let signed = timestamp.is_some_and(|t| {
                (unix_now() - t).abs() < 3600 && body["sign"] == bot_sign(t, BOT_SECRET)
            });
            if !signed {
                inner.bot_refusals += 1;
                return feishu_error(
                    200,
                    19021,
                    "sign match fail or timestamp is not within one hour from current time",
                );
            }
            let text = body["content"]["text"].as_str().unwrap_or("").to_string();
            inner.bot_posts.push(text);
            axum::Json(json!({"code": 0, "msg": "success", "data": {}})).into_response()
        }
        _ => feishu_error(404, 404, "not found"),
    }
}

/// The bearer token of a request, if it is one Feishu takes now; `None` (counted) when not:
/// answer [`token_refused`] then.
fn check_token(inner: &mut Inner, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    if inner.valid.contains(&token) {
        return Some(token);
    }
    if !inner.issued_tokens.contains(&token) {
        inner.unauthorized += 1;
    }
    inner.token_refusals += 1;
    None
}

fn token_refused() -> Response {
    feishu_error(400, 99991663, "Invalid access token for authorization.")
}

/// A scripted failure in Feishu's wire format.
fn failure_response(failure: Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => {
            let body = json!({"code": 99991400, "msg": "request trigger frequency limit"});
            let headers = [
                ("x-ogw-ratelimit-limit", "5".to_string()),
                ("x-ogw-ratelimit-reset", retry_after_secs.to_string()),
            ];
            (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response()
        }
        // The gateway's own answer: not JSON.
        Failure::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
        }
        Failure::Forbidden => feishu_error(400, 230002, "Bot/User can NOT be out of the chat."),
    }
}

/// A card's text (its `div`s' contents, one a line), buttons (label, our `value.execrelay`
/// or a bare string value) and `update_multi`; `None` when it is no card.
fn read_card(card: &Value) -> Option<CardView> {
    let elements = card["elements"].as_array()?;
    let mut lines = Vec::new();
    let mut buttons = Vec::new();
    for element in elements {
        match element["tag"].as_str() {
            Some("div") => lines.extend(element["text"]["content"].as_str()),
            Some("action") => {
                for action in element["actions"].as_array().into_iter().flatten() {
                    let value = &action["value"];
                    let id = value["execrelay"].as_str().or(value.as_str());
                    let label = action["text"]["content"].as_str();
                    if let (Some(label), Some(id)) = (label, id) {
                        buttons.push((label.to_string(), id.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    Some(CardView {
        text: lines.join("\n"),
        buttons,
        shared: card["config"]["update_multi"] == true,
    })
}

/// `PATCH /open-apis/im/v1/messages/{id}`: a card's update, recorded whatever the answer.
fn update_card(
    inner: &mut Inner,
    message_id: &str,
    headers: &HeaderMap,
    body: &Value,
    size: usize,
) -> Response {
    let new = body["content"]
        .as_str()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|card| read_card(&card));
    let response = update_answer(inner, message_id, headers, new.as_ref(), size);
    let status = response.status().as_u16();
    if status == 200
        && let Some(card) = &new
    {
        inner.current.insert(message_id.to_string(), card.clone());
    }
    let chat_id = inner
        .sent
        .iter()
        .find(|s| s.message_id == message_id)
        .map(|s| s.chat_id.clone())
        .unwrap_or_default();
    let (text, buttons) = new
        .map(|card| (card.text, card.buttons))
        .unwrap_or_default();
    inner.edits.push(EditRecord {
        chat_id,
        attempt: EditAttempt {
            message_id: message_id.to_string(),
            text,
            buttons,
            status,
            at: Instant::now(),
        },
    });
    response
}

fn update_answer(
    inner: &mut Inner,
    message_id: &str,
    headers: &HeaderMap,
    new: Option<&CardView>,
    size: usize,
) -> Response {
    if check_token(inner, headers).is_none() {
        return token_refused();
    }
    if let Some(failure) = inner.edit_failures.next() {
        return failure_response(failure);
    }
    if size > MAX_CARD_BODY {
        return feishu_error(400, 230025, "The message content exceeds the length limit.");
    }
    let Some(sent) = inner.sent.iter().find(|s| s.message_id == message_id) else {
        return feishu_error(400, 230001, "invalid message_id: no such message");
    };
    if sent.kind != Kind::Card {
        return feishu_error(400, 230001, "only cards (interactive) can be updated");
    }
    if inner.recalled.contains(message_id) {
        return feishu_error(400, 230011, "The message was recalled.");
    }
    let Some(new) = new else {
        return feishu_error(400, 230099, "Failed to create card content");
    };
    let was_shared = inner
        .current
        .get(message_id)
        .map_or(sent.shared, |card| card.shared);
    if !was_shared || !new.shared {
        return feishu_error(400, 230001, "the card must be shared: config.update_multi");
    }
    axum::Json(json!({"code": 0, "msg": "success", "data": {}})).into_response()
}

/// `POST /open-apis/im/v1/messages`.
fn im_message(
    inner: &mut Inner,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Value,
    size: usize,
) -> Response {
    if query != Some("receive_id_type=chat_id") {
        return feishu_error(400, 99992402, "field validation failed: receive_id_type");
    }
    let Some(token) = check_token(inner, headers) else {
        let uuid = body["uuid"].as_str().unwrap_or("").to_string();
        inner.refused_uuids.push(uuid);
        return token_refused();
    };
    if let Some(failure) = inner.failures.next() {
        return failure_response(failure);
    }
    let content: Value = body["content"]
        .as_str()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(Value::Null);
    let (kind, view) = match body["msg_type"].as_str() {
        Some("text") => (
            Kind::Text,
            content["text"].as_str().map(|text| CardView {
                text: text.to_string(),
                buttons: Vec::new(),
                shared: false,
            }),
        ),
        Some("interactive") => (Kind::Card, read_card(&content)),
        _ => (Kind::Text, None),
    };
    let (Some(chat_id), Some(view)) = (body["receive_id"].as_str(), view) else {
        return feishu_error(400, 230001, "invalid message content");
    };
    if kind == Kind::Card && size > MAX_CARD_BODY {
        return feishu_error(400, 230025, "The message content exceeds the length limit.");
    }
    let uuid = body["uuid"].as_str().unwrap_or("").to_string();
    if uuid.chars().count() > 50 {
        return feishu_error(400, 99992402, "uuid too long");
    }
    if let Some(existing) = inner.by_uuid.get(&uuid) {
        let existing = existing.clone();
        return axum::Json(json!({"code": 0, "msg": "success",
                                         "data": {"message_id": existing}}))
        .into_response();
    }
    let message_id = format!("om_{}", inner.sent.len() + 1);
    if !uuid.is_empty() {
        inner.by_uuid.insert(uuid.clone(), message_id.clone());
    }
    inner.sent.push(Sent {
        chat_id: chat_id.to_string(),
        text: view.text,
        uuid,
        token,
        message_id: message_id.clone(),
        kind,
        buttons: view.buttons,
        shared: view.shared,
    });
    axum::Json(json!({"code": 0, "msg": "success", "data": {"message_id": message_id}}))
        .into_response()
}

/// The documented custom-bot signature, written here independently of the relay's.
fn bot_sign(timestamp: i64, secret: &str) -> String {
    let key = format!("{timestamp}\n{secret}");
    let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Feishu's side of event callbacks

/// AES-256-CBC with key SHA-256(`key`), a random IV in front, base64: Feishu's `encrypt`.
pub fn encrypt(key: &str, plain: &[u8]) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let iv: [u8; 16] = rand::random();
    let cipher = cbc::Encryptor::<aes::Aes256>::new_from_slices(&digest, &iv)
        .expect("key and iv lengths")
        .encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mut data = iv.to_vec();
    data.extend_from_slice(&cipher);
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An `im.message.receive_v1` event (schema 2.0) with a text message.
pub fn message_event(
    event_id: &str,
    open_id: &str,
    chat_id: &str,
    chat_type: &str,
    text: &str,
) -> Value {
    json!({
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "im.message.receive_v1",
                   "create_time": (unix_now() * 1000).to_string(), "token": VERIFICATION_TOKEN,
                   "app_id": APP_ID, "tenant_key": "tenant-e2e"},
        "event": {
            "sender": {"sender_id": {"open_id": open_id, "user_id": "u-e2e", "union_id": "on_e2e"},
                       "sender_type": "user", "tenant_key": "tenant-e2e"},
            "message": {"message_id": format!("om_in_{event_id}"), "chat_id": chat_id,
                        "chat_type": chat_type, "message_type": "text",
                        "content": json!({"text": text}).to_string(),
                        "create_time": (unix_now() * 1000).to_string()},
        },
    })
}

/// A `card.action.trigger` callback (schema 2.0): `open_id` pressed the button valued
/// `{"execrelay": value}` on the card `open_message_id` in `chat_id`. `event.token` is the
/// delayed-update token, which is no credential.
pub fn card_action_event(
    event_id: &str,
    open_id: &str,
    chat_id: &str,
    open_message_id: &str,
    value: &str,
) -> Value {
    json!({
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "card.action.trigger",
                   "create_time": (unix_now() * 1000).to_string(), "token": VERIFICATION_TOKEN,
                   "app_id": APP_ID, "tenant_key": "tenant-e2e"},
        "event": {
            "operator": {"open_id": open_id, "user_id": "u-e2e", "union_id": "on_e2e",
                         "tenant_key": "tenant-e2e"},
            "token": format!("c-{}", rand::random::<u64>()),
            "host": "im_message",
            "action": {"tag": "button", "value": {"execrelay": value}},
            "context": {"open_message_id": open_message_id, "open_chat_id": chat_id},
        },
    })
}

/// How a test tampers with a callback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tamper {
    #[default]
    None,
    BadSignature,
    StaleTimestamp,
}

/// `event` as Feishu posts it to [`EVENTS_PATH`], encrypted and signed: the headers and the body.
pub fn signed_event(event: &Value, tamper: Tamper) -> (Vec<(&'static str, String)>, String) {
    let body = json!({"encrypt": encrypt(ENCRYPT_KEY, event.to_string().as_bytes())}).to_string();
    let timestamp = match tamper {
        // Past the 12 h window that admits Feishu's whole retry schedule.
        Tamper::StaleTimestamp => unix_now() - 13 * 3600,
        _ => unix_now(),
    }
    .to_string();
    let nonce = format!("nonce-{}", rand::random::<u32>());
    let mut digest = Sha256::new();
    digest.update(timestamp.as_bytes());
    digest.update(nonce.as_bytes());
    digest.update(ENCRYPT_KEY.as_bytes());
    digest.update(body.as_bytes());
    let mut signature = hex::encode(digest.finalize());
    if tamper == Tamper::BadSignature {
        let forged = if signature.starts_with("0000") {
            "ffff"
        } else {
            "0000"
        };
        signature.replace_range(0..4, forged);
    }
    let headers = vec![
        ("Content-Type", "application/json".into()),
        ("X-Lark-Request-Timestamp", timestamp),
        ("X-Lark-Request-Nonce", nonce),
        ("X-Lark-Signature", signature),
    ];
    (headers, body)
}
