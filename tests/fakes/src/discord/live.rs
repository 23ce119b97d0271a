//! The fake Discord's live messages: buttons (message components), edits
//! (`PATCH /channels/{id}/messages/{id}`), presses (`INTERACTION_CREATE` over the fake gateway)
//! and their answers (`POST /interactions/{id}/{token}/callback`).
//!
//! What Discord refuses, the fake refuses: components that are not action rows of at most five
//! buttons with a style, a `custom_id` of 1-100 characters unique in the message and a label of
//! at most 80 (400, code 50035); an edit of an unknown message (404, 10008) or of someone
//! else's (403, 50005); content over 2000 characters (400, 50035) or a message left with
//! nothing (400, 50006). Edits fail on their own script ([`Platform::fail_next_edits`]: 429 with
//! `retry_after` and `Retry-After`, 502, 403 Missing Access), never the sends' one, and
//! [`FakeDiscord::slow_down_next_edits`] answers 429 with code 30046 as Discord does for too
//! many edits to an old message. An edit to the same text is answered 200, as on Discord.
//!
//! A callback answers 204 once per interaction; an unknown interaction, a wrong token or one
//! past the deadline (3 s after the first dispatch, [`FakeDiscord::set_callback_deadline`]) gets
//! 404 code 10062, a second answer 400 code 40060. Callbacks need no `Authorization`.
//!
//! [`Platform::fail_next_edits`]: crate::Platform::fail_next_edits

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{
    BOT_ID, FakeDiscord, GUILD_ID, Inner, Shared, TEXT_LIMIT, TIMESTAMP, discord_error, dispatch,
    lock, rate_limited, snowflake, user,
};
use crate::{Failure, Failures};

/// Discord's first answer to a press must come within this.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(3);
const MAX_ROWS: usize = 5;
const BUTTONS_PER_ROW: usize = 5;
const MAX_CUSTOM_ID_CHARS: usize = 100;
const MAX_LABEL_CHARS: usize = 80;

/// One edit the relay attempted, whatever it was answered.
#[derive(Clone, Debug)]
pub struct Edit {
    pub channel_id: u64,
    pub message_id: u64,
    /// The body's `content`; `None` when the edit left the text alone.
    pub content: Option<String>,
    /// The body's buttons as (label, custom_id); `None` when not in the body, `Some([])` when
    /// the edit removed them.
    pub buttons: Option<Vec<(String, String)>>,
    /// The message's text and buttons had the edit been applied (what it asked for).
    pub text_after: String,
    pub buttons_after: Vec<(String, String)>,
    pub status: u16,
    pub at: Instant,
}

/// One answer to a press the relay attempted, whatever it was answered.
#[derive(Clone, Debug)]
pub struct Callback {
    pub interaction_id: u64,
    /// The callback's body: `type`, and `data` (`content`, `flags`, …).
    pub body: Value,
    /// 204 when accepted.
    pub status: u16,
    pub at: Instant,
}

impl Callback {
    /// What the presser sees: the content of an accepted message answer.
    pub fn shown(&self) -> Option<&str> {
        (self.status == 204)
            .then(|| self.body["data"]["content"].as_str())
            .flatten()
    }

    /// Whether only the presser sees it (flag 64).
    pub fn ephemeral(&self) -> bool {
        self.body["data"]["flags"]
            .as_u64()
            .is_some_and(|f| f & 64 != 0)
    }
}

/// Where a press happens: a DM, a guild channel, or a thread of `thread_of`.
#[derive(Clone, Copy, Debug)]
pub struct PressAt {
    pub channel_id: u64,
    pub guild: bool,
    pub thread_of: Option<u64>,
}

struct Interaction {
    token: String,
    first_dispatched: Instant,
    payload: Value,
    answered: bool,
    /// How often it was dispatched (a resume or a test delivers it again).
    deliveries: usize,
}

/// The fake's state for live messages (inside the fake's one lock).
#[derive(Default)]
pub(super) struct Live {
    edits: Vec<Edit>,
    edit_failures: Failures,
    slow_downs: usize,
    interactions: HashMap<u64, Interaction>,
    callbacks: Vec<Callback>,
    deadline: Option<Duration>,
}

impl Live {
    pub(super) fn fail_next_edits(&mut self, n: usize, failure: Failure) {
        self.edit_failures.push(n, failure);
    }
}

/// A message the bot posted, as Discord's REST answers show it (no `guild_id`).
pub fn bot_message(id: u64, channel_id: u64, content: &str, components: Option<Value>) -> Value {
    let mut message = json!({
        "id": id.to_string(), "channel_id": channel_id.to_string(),
        "author": user(BOT_ID, true), "content": content, "timestamp": TIMESTAMP,
        "edited_timestamp": null, "tts": false, "mention_everyone": false, "mentions": [],
        "mention_roles": [], "attachments": [], "embeds": [], "pinned": false, "type": 0,
        "flags": 0,
    });
    if let Some(components) = components {
        message["components"] = components;
    }
    message
}

/// An `INTERACTION_CREATE`'s `d` for `who` pressing `custom_id` under `message` at `at`, with
/// every field serenity 0.12 requires (`locale`, `entitlements`, `attachment_size_limit`, …).
/// In a guild the presser comes as `member`, in a DM as `user`, as on Discord. The token is
/// `fake-itok-{id}`.
pub fn interaction_payload(
    id: u64,
    at: PressAt,
    who: u64,
    custom_id: &str,
    message: &Value,
) -> Value {
    let channel = match at.thread_of {
        Some(parent) => json!({"id": at.channel_id.to_string(), "type": 11,
                               "parent_id": parent.to_string()}),
        None if at.guild => json!({"id": at.channel_id.to_string(), "type": 0}),
        None => json!({"id": at.channel_id.to_string(), "type": 1}),
    };
    let mut d = json!({
        "id": id.to_string(), "application_id": BOT_ID.to_string(), "type": 3,
        "token": format!("fake-itok-{id}"), "version": 1,
        "channel_id": at.channel_id.to_string(), "channel": channel,
        "locale": "en-US", "entitlements": [], "attachment_size_limit": 10_485_760,
        "data": {"custom_id": custom_id, "component_type": 2},
        "message": message,
    });
    if at.guild {
        d["guild_id"] = json!(GUILD_ID.to_string());
        d["guild_locale"] = json!("en-US");
        d["context"] = json!(0);
        d["member"] = json!({
            "user": {"id": who.to_string(), "username": format!("user{who}")},
            "roles": [], "joined_at": TIMESTAMP, "deaf": false, "mute": false, "flags": 0,
        });
    } else {
        d["context"] = json!(1);
        d["user"] = user(who, false);
    }
    d
}

/// A message's buttons as (label, custom_id), in order.
pub fn buttons_of(message: &Value) -> Vec<(String, String)> {
    message["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().into_iter().flatten())
        .filter(|component| component["type"] == 2)
        .map(|button| {
            let text = |key: &str| button[key].as_str().unwrap_or("").to_string();
            (text("label"), text("custom_id"))
        })
        .collect()
}

/// Whether `components` is what Discord takes for a message: at most five action rows of at
/// most five buttons, each with a style (1-4 with a `custom_id`), a label of at most 80
/// characters and a `custom_id` of 1-100 characters unique in the message.
pub(super) fn check_components(components: &Value) -> Result<(), String> {
    let rows = components.as_array().ok_or("components is not a list")?;
    if rows.len() > MAX_ROWS {
        return Err(format!("{} action rows (at most {MAX_ROWS})", rows.len()));
    }
    let mut ids = Vec::new();
    for row in rows {
        if row["type"] != 1 {
            return Err(format!("a top-level component of type {}", row["type"]));
        }
        let buttons = row["components"]
            .as_array()
            .ok_or("an action row without components")?;
        if buttons.is_empty() || buttons.len() > BUTTONS_PER_ROW {
            return Err(format!("an action row of {} buttons", buttons.len()));
        }
        for button in buttons {
            if button["type"] != 2 {
                return Err(format!("a component of type {} in a row", button["type"]));
            }
            if !matches!(button["style"].as_u64(), Some(1..=4)) {
                return Err(format!("a button of style {}", button["style"]));
            }
            let id = button["custom_id"].as_str().unwrap_or("");
            if id.is_empty() || id.chars().count() > MAX_CUSTOM_ID_CHARS {
                return Err(format!("custom_id {id:?}"));
            }
            if ids.contains(&id) {
                return Err(format!("custom_id {id:?} twice in one message"));
            }
            ids.push(id);
            let label = button["label"].as_str().unwrap_or("");
            if label.is_empty() || label.chars().count() > MAX_LABEL_CHARS {
                return Err(format!("label {label:?}"));
            }
        }
    }
    Ok(())
}

fn invalid_form(why: &str) -> Response {
    discord_error(400, 50035, &format!("Invalid Form Body ({why})"))
}

/// `PATCH /channels/{channel}/messages/{message}`.
pub(super) fn edit_message(
    shared: &Shared,
    channel: &str,
    message: &str,
    body: &Value,
) -> Response {
    let (Ok(channel_id), Ok(message_id)) = (channel.parse::<u64>(), message.parse::<u64>()) else {
        return discord_error(404, 10008, "Unknown Message");
    };
    let mut inner = lock(shared);
    let current = inner
        .history
        .get(&channel_id)
        .and_then(|messages| messages.get(&message_id))
        .cloned();
    let content = body["content"].as_str().map(str::to_string);
    let buttons = body.get("components").map(|_| buttons_of(body));
    let (text_after, buttons_after) = match &current {
        Some(message) => (
            content
                .clone()
                .unwrap_or_else(|| message["content"].as_str().unwrap_or("").to_string()),
            buttons.clone().unwrap_or_else(|| buttons_of(message)),
        ),
        None => (
            content.clone().unwrap_or_default(),
            buttons.clone().unwrap_or_default(),
        ),
    };
    let response = match current {
        None => discord_error(404, 10008, "Unknown Message"),
        Some(message) => apply_edit(&mut inner, channel_id, message_id, message, body),
    };
    inner.live.edits.push(Edit {
        channel_id,
        message_id,
        content,
        buttons,
        text_after,
        buttons_after,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

fn apply_edit(
    inner: &mut Inner,
    channel_id: u64,
    message_id: u64,
    mut message: Value,
    body: &Value,
) -> Response {
    let author = message["author"]["id"]
        .as_str()
        .and_then(|id| id.parse::<u64>().ok());
    if author != Some(BOT_ID) {
        return discord_error(403, 50005, "Cannot edit a message authored by another user");
    }
    if let Some(content) = body.get("content").filter(|c| !c.is_null()) {
        let Some(content) = content.as_str() else {
            return invalid_form("content is not a string");
        };
        if content.chars().count() > TEXT_LIMIT {
            return invalid_form("content longer than 2000");
        }
        message["content"] = json!(content);
    }
    if let Some(components) = body.get("components").filter(|c| !c.is_null()) {
        if let Err(why) = check_components(components) {
            return invalid_form(&why);
        }
        message["components"] = components.clone();
    }
    if message["content"].as_str().unwrap_or("").is_empty() && buttons_of(&message).is_empty() {
        return discord_error(400, 50006, "Cannot send an empty message");
    }
    match inner.live.edit_failures.next() {
        Some(Failure::RateLimited { retry_after_secs }) => return rate_limited(retry_after_secs),
        Some(Failure::Unavailable) => return discord_error(502, 0, "502: Bad Gateway"),
        Some(Failure::Forbidden) => return discord_error(403, 50001, "Missing Access"),
        None => {}
    }
    if inner.live.slow_downs > 0 {
        inner.live.slow_downs -= 1;
        let body = json!({"message": "Maximum number of edits to messages older than 1 hour reached. Try again later.",
                          "code": 30046, "retry_after": 1.0, "global": false});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            axum::Json(body),
        )
            .into_response();
    }
    message["edited_timestamp"] = json!(TIMESTAMP);
    if let Some(messages) = inner.history.get_mut(&channel_id) {
        messages.insert(message_id, message.clone());
    }
    axum::Json(message).into_response()
}

/// `POST /interactions/{id}/{token}/callback`.
pub(super) fn interaction_callback(
    shared: &Shared,
    interaction: &str,
    token: &str,
    body: &Value,
) -> Response {
    let unknown = || discord_error(404, 10062, "Unknown interaction");
    let Ok(interaction_id) = interaction.parse::<u64>() else {
        return unknown();
    };
    let mut inner = lock(shared);
    let deadline = inner.live.deadline.unwrap_or(CALLBACK_DEADLINE);
    let response = match inner.live.interactions.get_mut(&interaction_id) {
        None => unknown(),
        Some(pressed) if pressed.token != token => unknown(),
        Some(pressed) if pressed.first_dispatched.elapsed() > deadline => unknown(),
        Some(pressed) if pressed.answered => {
            discord_error(400, 40060, "Interaction has already been acknowledged.")
        }
        Some(pressed) => match refuse_callback(body) {
            None => {
                pressed.answered = true;
                StatusCode::NO_CONTENT.into_response()
            }
            Some(refused) => refused,
        },
    };
    inner.live.callbacks.push(Callback {
        interaction_id,
        body: body.clone(),
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

/// Discord's refusal of `body` as a first answer, if it refuses it. It takes a message (4), a
/// deferred message (5), a deferred update (6) or a message update (7), with what each needs.
fn refuse_callback(body: &Value) -> Option<Response> {
    let data = &body["data"];
    let content = data["content"].as_str().unwrap_or("");
    if content.chars().count() > TEXT_LIMIT {
        return Some(invalid_form("content longer than 2000"));
    }
    if let Some(components) = data.get("components").filter(|c| !c.is_null())
        && let Err(why) = check_components(components)
    {
        return Some(invalid_form(&why));
    }
    match body["type"].as_u64() {
        Some(4) if content.is_empty() => {
            Some(discord_error(400, 50006, "Cannot send an empty message"))
        }
        Some(4..=7) => None,
        _ => Some(invalid_form("type")),
    }
}

impl FakeDiscord {
    /// Every edit attempted, in order.
    pub fn edits(&self) -> Vec<Edit> {
        lock(&self.shared).live.edits.clone()
    }

    /// The edits attempted of message `message_id`, in order.
    pub fn edits_of(&self, message_id: u64) -> Vec<Edit> {
        let mut edits = self.edits();
        edits.retain(|e| e.message_id == message_id);
        edits
    }

    /// Message `message_id` of `channel_id` as it is now, as REST shows it.
    pub fn message(&self, channel_id: u64, message_id: u64) -> Option<Value> {
        let inner = lock(&self.shared);
        inner.history.get(&channel_id)?.get(&message_id).cloned()
    }

    /// Deletes message `message_id`: edits of it get 404 Unknown Message from now on.
    pub fn delete_message(&self, channel_id: u64, message_id: u64) {
        if let Some(messages) = lock(&self.shared).history.get_mut(&channel_id) {
            messages.remove(&message_id);
        }
    }

    /// The next `n` edits that would succeed get 429 with code 30046 (and `retry_after: 1`), as
    /// Discord answers too many edits to a message older than an hour.
    pub fn slow_down_next_edits(&self, n: usize) {
        lock(&self.shared).live.slow_downs += n;
    }

    /// How long after its first dispatch a press may be answered (Discord: 3 s).
    pub fn set_callback_deadline(&self, deadline: Duration) {
        lock(&self.shared).live.deadline = Some(deadline);
    }

    /// Every press answer attempted, in order.
    pub fn callbacks(&self) -> Vec<Callback> {
        lock(&self.shared).live.callbacks.clone()
    }

    /// The answers attempted to press `interaction_id`, in order.
    pub fn callbacks_of(&self, interaction_id: u64) -> Vec<Callback> {
        let mut callbacks = self.callbacks();
        callbacks.retain(|c| c.interaction_id == interaction_id);
        callbacks
    }

    /// User `who` presses `custom_id` under message `message_id` in `channel_id` (`guild`: a
    /// guild channel or thread, else a DM): an `INTERACTION_CREATE` to the connected session
    /// (kept for RESUME replays). Returns the interaction id. Panics unless the message exists
    /// and has that button: Discord offers nothing else to press.
    pub fn press_button(
        &self,
        channel_id: u64,
        who: u64,
        message_id: u64,
        custom_id: &str,
        guild: bool,
    ) -> u64 {
        let mut inner = lock(&self.shared);
        let Some(message) = inner
            .history
            .get(&channel_id)
            .and_then(|messages| messages.get(&message_id))
            .cloned()
        else {
            panic!("no message {message_id} in channel {channel_id} to press a button of");
        };
        let buttons = buttons_of(&message);
        assert!(
            buttons.iter().any(|(_, id)| id == custom_id),
            "message {message_id} has no button {custom_id:?} to press (its buttons: {buttons:?})"
        );
        let id = snowflake(super::now_ms(), inner.next_id);
        inner.next_id += 1;
        let at = PressAt {
            channel_id,
            guild,
            thread_of: inner.threads.get(&channel_id).copied(),
        };
        let payload = interaction_payload(id, at, who, custom_id, &message);
        inner.live.interactions.insert(
            id,
            Interaction {
                token: format!("fake-itok-{id}"),
                first_dispatched: Instant::now(),
                payload: payload.clone(),
                answered: false,
                deliveries: 1,
            },
        );
        dispatch(&mut inner, "INTERACTION_CREATE", payload);
        id
    }

    /// Dispatches press `interaction_id` again, the same interaction (as a resumed session may).
    pub fn redeliver_press(&self, interaction_id: u64) {
        let mut inner = lock(&self.shared);
        let payload = match inner.live.interactions.get_mut(&interaction_id) {
            Some(pressed) => {
                pressed.deliveries += 1;
                pressed.payload.clone()
            }
            None => panic!("no press {interaction_id} to deliver again"),
        };
        dispatch(&mut inner, "INTERACTION_CREATE", payload);
    }

    /// What the relay answered to each delivery of `interaction_id`, accepted or not (Discord
    /// refuses a second answer to one interaction: 40060); waits at most `timeout` until every
    /// delivery is answered.
    pub fn answered_for(&self, interaction_id: u64, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let deliveries = lock(&self.shared)
                .live
                .interactions
                .get(&interaction_id)
                .map_or(0, |pressed| pressed.deliveries);
            let answered: Vec<String> = self
                .callbacks_of(interaction_id)
                .iter()
                .map(|c| c.body["data"]["content"].as_str().unwrap_or("").to_string())
                .collect();
            if answered.len() >= deliveries || start.elapsed() >= timeout {
                return answered;
            }
            std::thread::sleep(crate::POLL);
        }
    }

    /// What the presser of `interaction_id` was shown, one entry per accepted answer; waits at
    /// most `timeout` for the first.
    pub fn shown_for(&self, interaction_id: u64, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let shown: Vec<String> = self
                .callbacks_of(interaction_id)
                .iter()
                .filter_map(|c| c.shown().map(str::to_string))
                .collect();
            if !shown.is_empty() || start.elapsed() >= timeout {
                return shown;
            }
            std::thread::sleep(crate::POLL);
        }
    }
}
