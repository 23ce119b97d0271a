//! A fake generic-webhook receiver: the `callback_url` the relay delivers to.
//!
//! It verifies the signature headers exactly as a real receiver would (HMAC-SHA256 over
//! `timestamp + "." + body`, timestamp within 300 s), records every verified request with its
//! arrival time and the status it was answered with, and answers from a script: an "answer N to
//! everything" switch, then queued rules (`respond_next`), else 200. Requests that fail
//! verification are answered 401 and counted, never recorded as messages.
//!
//! Edits (a body with `"edit_of"`: the idempotency key of the message they replace, with
//! `"actions"` always) are recorded beside the sends but never counted as messages: `messages`,
//! `attempts`, `count` and the [`Platform`] views of sends see sends only, and `respond_next` /
//! `fail_next` script sends only; edits have `respond_next_edits` / `fail_next_edits`. An edit
//! of a message the receiver never accepted is answered 404, as a receiver that keeps its
//! messages would. A verified probe (`{"probe": true}`, what `execrelay doctor` sends) is
//! answered 200 and counted ([`Receiver::probes`]), never recorded as a message. Presses go
//! the other way: a signed POST of `{"action": <button id>, …}` to
//! the relay's `/webhook`, whose answer (`{"ok": true, "answer": …}`) is what the presser sees.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::{
    Attempt, Chat, EditAttempt, Failure, Person, Platform, Posted, PressRef, SECRET, Server,
    Setting, TextLimit, TextUnit, assert_holds, enable, next_message_id, post_to_relay, toml_str,
    unix_now, wait_for,
};

/// One verified callback request: a send, or an edit (`edit_of` set).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub conversation_id: String,
    pub text: String,
    /// A send's key; empty on an edit.
    pub idempotency_key: String,
    pub thread_id: Option<String>,
    pub reply_to: Option<Value>,
    /// The buttons under the message (a send's, or what an edit leaves): (label, id).
    pub actions: Vec<(String, String)>,
    /// An edit: the idempotency key of the message it replaces.
    pub edit_of: Option<String>,
    pub at: Instant,
    /// The status the fake answered with (2xx = the relay may consider it delivered).
    pub status: u16,
}

impl Delivery {
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn is_edit(&self) -> bool {
        self.edit_of.is_some()
    }
}

type Filter = Box<dyn Fn(&Delivery) -> bool + Send + Sync>;

struct Rule {
    remaining: usize,
    status: u16,
    headers: Vec<(String, String)>,
    filter: Option<Filter>,
}

#[derive(Default)]
struct Inner {
    attempts: Vec<Delivery>,
    rejected: Vec<String>,
    answer_all: Option<u16>,
    script: Vec<Rule>,
    /// How long every request waits before it is answered (a slow platform).
    answer_delay: Duration,
    /// Requests that have arrived, answered or not.
    arrived: usize,
    /// What each press's presser was shown, by press id: one entry per answered delivery.
    answers: HashMap<String, Vec<String>>,
    /// Verified probes answered.
    probes: usize,
}

struct Shared {
    secret: String,
    inner: Mutex<Inner>,
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Last field: dropped after everything else, stopping the server.
    _server: Server,
}

impl Receiver {
    /// Binds 127.0.0.1:0 and serves `POST /callback` on a private runtime.
    pub fn start() -> Receiver {
        let server = Server::start("fake-receiver");
        let shared = Arc::new(Shared {
            secret: SECRET.to_string(),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new()
            .route("/callback", post(callback))
            .with_state(shared.clone());
        Receiver {
            addr: server.serve(app),
            shared,
            _server: server,
        }
    }

    pub fn callback_url(&self) -> String {
        format!("http://{}/callback", self.addr)
    }

    /// Verified probes (`{"probe": true}`) answered so far.
    pub fn probes(&self) -> usize {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .probes
    }

    /// [`Platform::settings`] with `progress = true`: the relay edits its messages here.
    pub fn settings_with_progress(&self) -> Vec<Setting> {
        let mut settings = self.settings();
        settings.push(Setting::new("channels.webhook", "progress", "true"));
        settings
    }

    /// The next `n` sends are answered `status` with `headers` (edits are not affected).
    pub fn respond_next(&self, n: usize, status: u16, headers: &[(&str, &str)]) {
        self.push_rule(n, status, headers, Some(Box::new(|d| !d.is_edit())));
    }

    /// The next `n` edits are answered `status` with `headers` (sends are not affected).
    pub fn respond_next_edits(&self, n: usize, status: u16, headers: &[(&str, &str)]) {
        self.push_rule(n, status, headers, Some(Box::new(Delivery::is_edit)));
    }

    /// The next `n` requests (sends and edits) matching `pred` are answered `status` with
    /// `headers`; others are unaffected. `usize::MAX` makes it permanent.
    pub fn respond_next_where(
        &self,
        n: usize,
        status: u16,
        headers: &[(&str, &str)],
        pred: impl Fn(&Delivery) -> bool + Send + Sync + 'static,
    ) {
        self.push_rule(n, status, headers, Some(Box::new(pred)));
    }

    fn push_rule(&self, n: usize, status: u16, headers: &[(&str, &str)], filter: Option<Filter>) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.lock().script.push(Rule {
            remaining: n,
            status,
            headers,
            filter,
        });
    }

    /// `true`: answer 503 to everything (before any script rule) until switched off.
    pub fn set_unavailable(&self, on: bool) {
        self.lock().answer_all = on.then_some(503);
    }

    /// Every request waits `delay` before it is verified and answered, so a send can be caught
    /// in flight.
    pub fn set_answer_delay(&self, delay: Duration) {
        self.lock().answer_delay = delay;
    }

    /// Requests that have arrived but not been answered yet.
    pub fn in_flight(&self) -> usize {
        let inner = self.lock();
        inner.arrived - inner.attempts.len() - inner.rejected.len()
    }

    /// Every verified send, in arrival order, whatever it was answered (no edits).
    pub fn attempts(&self) -> Vec<Delivery> {
        let inner = self.lock();
        inner
            .attempts
            .iter()
            .filter(|d| !d.is_edit())
            .cloned()
            .collect()
    }

    /// Every verified edit, in arrival order, whatever it was answered.
    pub fn edits(&self) -> Vec<Delivery> {
        let inner = self.lock();
        inner
            .attempts
            .iter()
            .filter(|d| d.is_edit())
            .cloned()
            .collect()
    }

    /// Sends answered 2xx, in arrival order: the messages the chat would show (edits change
    /// them, [`Platform::posted`], but are none).
    pub fn messages(&self) -> Vec<Delivery> {
        self.lock()
            .attempts
            .iter()
            .filter(|d| d.accepted() && !d.is_edit())
            .cloned()
            .collect()
    }

    /// Accepted sends matching `pred`.
    pub fn count(&self, pred: impl Fn(&Delivery) -> bool) -> usize {
        self.lock()
            .attempts
            .iter()
            .filter(|d| d.accepted() && !d.is_edit() && pred(d))
            .count()
    }

    /// Requests that failed signature/timestamp/body verification.
    pub fn rejected_count(&self) -> usize {
        self.lock().rejected.len()
    }

    /// The first accepted message (a send) matching `pred` (waiting for it, bounded).
    #[track_caller]
    pub fn wait_for_message(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Delivery) -> bool,
    ) -> Delivery {
        wait_for(&format!("the receiver to get {what}"), timeout, || {
            self.lock()
                .attempts
                .iter()
                .find(|d| d.accepted() && !d.is_edit() && pred(d))
                .cloned()
        })
    }

    /// Asserts that for `window` no accepted message matches `pred` (a negative check over a
    /// bounded window; not a synchronisation point).
    #[track_caller]
    pub fn assert_none_for(&self, what: &str, window: Duration, pred: impl Fn(&Delivery) -> bool) {
        assert_holds(&format!("no {what} reaches the receiver"), window, || {
            self.count(&pred) == 0
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dump(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let t0 = inner.attempts.first().map(|d| d.at);
        for d in &inner.attempts {
            let dt = t0.map(|t| d.at.duration_since(t)).unwrap_or_default();
            let what = match &d.edit_of {
                Some(key) => format!("edit_of={key}"),
                None => format!("key={}", d.idempotency_key),
            };
            out.push_str(&format!(
                "  +{:>7.3}s {} conv={} thread={:?} reply_to={:?} {what} actions={:?} text={:?}\n",
                dt.as_secs_f64(),
                d.status,
                d.conversation_id,
                d.thread_id,
                d.reply_to,
                d.actions,
                d.text
            ));
        }
        for r in &inner.rejected {
            out.push_str(&format!("  rejected: {r}\n"));
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- fake receiver saw:\n{}---", self.dump());
        }
    }
}

impl Platform for Receiver {
    /// The relay's webhook channel, calling back to this receiver.
    fn settings(&self) -> Vec<Setting> {
        enable(
            "channels.webhook",
            [
                ("secret", toml_str(SECRET)),
                ("callback_url", toml_str(&self.callback_url())),
            ],
        )
    }

    fn channel(&self) -> &'static str {
        "webhook"
    }

    fn text_limit(&self) -> TextLimit {
        TextLimit {
            unit: TextUnit::Chars,
            max: 4000,
        }
    }

    fn identity(&self, who: Person) -> String {
        format!("webhook:{}", user_id(who))
    }

    fn direct(&self, who: Person) -> Chat {
        Chat {
            id: format!("dm-{}", user_id(who)),
            group: false,
        }
    }

    fn group(&self) -> Chat {
        Chat {
            id: "grp-team".into(),
            group: true,
        }
    }

    fn say(&self, relay: SocketAddr, chat: &Chat, who: Person, text: &str) {
        let body = serde_json::json!({
            "conversation_id": chat.id,
            "user_id": user_id(who),
            "text": text,
            "message_id": next_message_id("wh"),
            "chat_type": if chat.group { "group" } else { "direct" },
        });
        let (status, answer) = self.post_signed(relay, &body);
        assert!(
            status == 200 && answer["ok"] == true && answer["duplicate"] == false,
            "webhook POST of {body} answered {status} {answer}"
        );
    }

    fn sent_to(&self, chat: &Chat) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|d| d.conversation_id == chat.id)
            .map(|d| d.text)
            .collect()
    }

    fn attempts(&self, chat: &Chat) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|d| d.conversation_id == chat.id)
            .map(|d| Attempt {
                text: d.text,
                key: Some(d.idempotency_key),
                status: d.status,
                at: d.at,
            })
            .collect()
    }

    fn fail_next(&self, n: usize, failure: Failure) {
        match failure {
            Failure::RateLimited { retry_after_secs } => {
                let wait = retry_after_secs.to_string();
                self.respond_next(n, 429, &[("Retry-After", &wait)]);
            }
            Failure::Unavailable => self.respond_next(n, 503, &[]),
            Failure::Forbidden => self.respond_next(n, 403, &[]),
        }
    }

    fn refusal_words(&self) -> &'static str {
        "403"
    }

    fn unauthorized(&self) -> usize {
        self.rejected_count()
    }

    /// A message's id is its send's idempotency key (what edits name in `edit_of`); its text
    /// and buttons are the last accepted edit's.
    fn posted(&self, chat: &Chat) -> Vec<Posted> {
        let inner = self.lock();
        let accepted = || inner.attempts.iter().filter(|d| d.accepted());
        accepted()
            .filter(|d| !d.is_edit() && d.conversation_id == chat.id)
            .map(|sent| {
                let key = &sent.idempotency_key;
                let now = accepted()
                    .rfind(|d| d.edit_of.as_ref() == Some(key))
                    .unwrap_or(sent);
                Posted {
                    message_id: key.clone(),
                    sent_text: sent.text.clone(),
                    text: now.text.clone(),
                    buttons: now.actions.clone(),
                }
            })
            .collect()
    }

    fn edit_attempts(&self, chat: &Chat) -> Vec<EditAttempt> {
        self.edits()
            .into_iter()
            .filter(|d| d.conversation_id == chat.id)
            .map(|d| EditAttempt {
                message_id: d.edit_of.unwrap_or_default(),
                text: d.text,
                buttons: d.actions,
                status: d.status,
                at: d.at,
            })
            .collect()
    }

    fn fail_next_edits(&self, n: usize, failure: Failure) {
        match failure {
            Failure::RateLimited { retry_after_secs } => {
                let wait = retry_after_secs.to_string();
                self.respond_next_edits(n, 429, &[("Retry-After", &wait)]);
            }
            Failure::Unavailable => self.respond_next_edits(n, 503, &[]),
            Failure::Forbidden => self.respond_next_edits(n, 403, &[]),
        }
    }

    /// A signed POST of `{"action": button_id, "message_id": <a new press id>,
    /// "on_message_id": message_id, …}` to the relay's `/webhook`; the answer's `"answer"` is
    /// recorded for [`Platform::answers`].
    fn press(
        &self,
        relay: SocketAddr,
        chat: &Chat,
        who: Person,
        message_id: &str,
        button_id: &str,
    ) -> PressRef {
        let press = PressRef {
            id: next_message_id("whp"),
            chat: chat.clone(),
            who,
            message_id: message_id.to_string(),
            button_id: button_id.to_string(),
        };
        self.press_again(relay, &press);
        press
    }

    fn press_again(&self, relay: SocketAddr, press: &PressRef) {
        let body = serde_json::json!({
            "conversation_id": press.chat.id,
            "user_id": user_id(press.who),
            "action": press.button_id,
            "message_id": press.id,
            "on_message_id": press.message_id,
            "chat_type": if press.chat.group { "group" } else { "direct" },
        });
        let (status, answer) = self.post_signed(relay, &body);
        let shown = answer["answer"].as_str().filter(|_| status == 200);
        let mut inner = self.lock();
        let answers = inner.answers.entry(press.id.clone()).or_default();
        answers.extend(shown.map(str::to_string));
    }

    fn answers(&self, press: &PressRef, timeout: Duration) -> Vec<String> {
        let answered = || {
            let inner = self.lock();
            let answers = inner.answers.get(&press.id).filter(|a| !a.is_empty());
            answers.cloned()
        };
        let start = Instant::now();
        loop {
            if let Some(answers) = answered() {
                return answers;
            }
            if start.elapsed() >= timeout {
                return Vec::new();
            }
            std::thread::sleep(Duration::from_millis(15));
        }
    }
}

impl Receiver {
    /// POSTs `body` to the relay's `/webhook`, signed as a bridge does: the status and the
    /// answer (as JSON, or a JSON string when it is none).
    fn post_signed(&self, relay: SocketAddr, body: &Value) -> (u16, Value) {
        let raw = serde_json::to_vec(body).expect("a JSON body");
        let ts = unix_now().to_string();
        let headers = [
            ("Content-Type", "application/json".to_string()),
            ("X-Execrelay-Timestamp", ts.clone()),
            (
                "X-Execrelay-Signature",
                sign(&self.shared.secret, &ts, &raw),
            ),
        ];
        let (status, answer) = post_to_relay(relay, "/webhook", &headers, &raw);
        let answer = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
        (status, answer)
    }
}

fn user_id(who: Person) -> &'static str {
    match who {
        Person::Alice => "alice",
        Person::Bob => "bob",
    }
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, timestamp + "." + body)>`.
fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn callback(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let delay = {
        let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.arrived += 1;
        inner.answer_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    handle(&shared, &headers, &body)
}

fn handle(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> (StatusCode, HeaderMap, String) {
    let verified = verify(&shared.secret, headers, body);
    let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
    if verified.is_ok()
        && serde_json::from_slice::<Value>(body).is_ok_and(|v| v["probe"] == Value::Bool(true))
    {
        inner.probes += 1;
        return (
            StatusCode::OK,
            HeaderMap::new(),
            r#"{"ok":true}"#.to_string(),
        );
    }
    let parsed = verified.and_then(|()| parse(body));
    let mut delivery = match parsed {
        Ok(d) => d,
        Err(why) => {
            let status = if why.starts_with("body:") { 400 } else { 401 };
            inner.rejected.push(why.clone());
            return (
                StatusCode::from_u16(status).unwrap(),
                HeaderMap::new(),
                serde_json::json!({ "error": why }).to_string(),
            );
        }
    };
    let (status, extra) = if let Some(s) = inner.answer_all {
        (s, Vec::new())
    } else if let Some(rule) = inner
        .script
        .iter_mut()
        .find(|r| r.remaining > 0 && r.filter.as_ref().is_none_or(|f| f(&delivery)))
    {
        rule.remaining -= 1;
        (rule.status, rule.headers.clone())
    } else if delivery.edit_of.as_ref().is_some_and(|key| {
        !inner
            .attempts
            .iter()
            .any(|d| d.accepted() && !d.is_edit() && d.idempotency_key == *key)
    }) {
        // No such message here: an edit cannot bring one into being.
        (404, Vec::new())
    } else {
        (200, Vec::new())
    };
    delivery.status = status;
    inner.attempts.push(delivery);
    let mut out = HeaderMap::new();
    for (k, v) in extra {
        out.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("scripted header name"),
            HeaderValue::from_str(&v).expect("scripted header value"),
        );
    }
    let body = if (200..300).contains(&status) {
        r#"{"ok":true}"#.to_string()
    } else {
        format!(r#"{{"ok":false,"error":"scripted {status}"}}"#)
    };
    (
        StatusCode::from_u16(status).expect("scripted status"),
        out,
        body,
    )
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .ok_or_else(|| format!("missing {name}"))?
            .to_str()
            .map_err(|_| format!("{name} is not ASCII"))
    };
    let ts = header("x-execrelay-timestamp")?;
    let sig = header("x-execrelay-signature")?;
    let ts_num: i64 = ts
        .parse()
        .map_err(|_| format!("timestamp {ts:?} is not a number"))?;
    let skew = (unix_now() - ts_num).abs();
    if skew > 300 {
        return Err(format!("timestamp {ts} is {skew}s off"));
    }
    let hex_sig = sig
        .strip_prefix("sha256=")
        .ok_or_else(|| format!("signature {sig:?} lacks sha256="))?;
    if hex_sig.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("signature {sig:?} is not lowercase hex"));
    }
    let raw = hex::decode(hex_sig).map_err(|_| format!("signature {sig:?} is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&raw)
        .map_err(|_| "signature mismatch".to_string())
}

fn parse(body: &[u8]) -> Result<Delivery, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body: not JSON: {e}"))?;
    let s = |k: &str| -> Result<String, String> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("body: missing string field {k:?} in {v}"))
    };
    let opt = |k: &str| v.get(k).filter(|x| !x.is_null()).cloned();
    // An edit names the message it replaces instead of carrying a key of its own, and always
    // says which buttons remain.
    let edit_of = opt("edit_of")
        .map(|key| {
            key.as_str()
                .map(str::to_string)
                .ok_or("body: `edit_of` is no string")
        })
        .transpose()?;
    let idempotency_key = match edit_of {
        Some(_) => String::new(),
        None => s("idempotency_key")?,
    };
    let actions = match v.get("actions") {
        None if edit_of.is_none() => Vec::new(),
        Some(Value::Array(actions)) => actions
            .iter()
            .map(
                |action| match (action["label"].as_str(), action["id"].as_str()) {
                    (Some(label), Some(id)) => Ok((label.to_string(), id.to_string())),
                    _ => Err(format!(
                        "body: an action is not {{\"id\", \"label\"}}: {action}"
                    )),
                },
            )
            .collect::<Result<_, _>>()?,
        _ => return Err(format!("body: `actions` must be a list of actions in {v}")),
    };
    Ok(Delivery {
        conversation_id: s("conversation_id")?,
        text: s("text")?,
        idempotency_key,
        actions,
        edit_of,
        thread_id: opt("thread_id")
            .map(|t| t.as_str().map(str::to_string).unwrap_or(t.to_string())),
        reply_to: opt("reply_to"),
        at: Instant::now(),
        status: 0,
    })
}
