//! The fake Telegram's side of live jobs (issue 16): the bot's messages edited in place
//! (`editMessageText`), presses answered (`answerCallbackQuery`), and inline keyboards read and
//! checked as Telegram checks them. Its parent owns the state, the routing and the presses'
//! delivery.

use std::time::Instant;

use axum::response::Response;
use serde_json::{Value, json};

use super::{Answer, Shared, TEXT_LIMIT, error, ok, refusal};
use crate::unix_now;

/// The buttons of an inline keyboard (a `reply_markup`), row after row: (label, data). None
/// for no keyboard.
pub(super) fn buttons_of(markup: &Value) -> Vec<(String, String)> {
    let rows = markup["inline_keyboard"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .map(|button| {
            (
                button["text"].as_str().unwrap_or("").to_string(),
                button["callback_data"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Telegram's refusal of a keyboard, if it refuses this one: `callback_data` must be 1 to 64
/// bytes.
pub(super) fn keyboard_refused(markup: &Value) -> Option<Response> {
    let rows = markup["inline_keyboard"].as_array()?;
    let bad = rows
        .iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .any(|button| {
            let data = button["callback_data"].as_str().unwrap_or("");
            data.is_empty() || data.len() > 64
        });
    bad.then(|| error(400, "Bad Request: BUTTON_DATA_INVALID", None))
}

/// A keyboard with at least one button, or `None`: an absent and an empty keyboard show alike.
pub(super) fn shown_keyboard(markup: &Value) -> Option<Value> {
    (!buttons_of(markup).is_empty()).then(|| markup.clone())
}

/// The exact words teloxide knows as `ApiError::MessageNotModified`.
pub const NOT_MODIFIED: &str = "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";

/// An edit of a message the bot sent (by chat and message id; inline messages are not ours).
/// An edit without a keyboard leaves the message with none, as third-party sources say
/// Telegram does (unverified); the adapter always sends one.
pub(super) fn edit_message_text(shared: &Shared, body: &Value) -> Response {
    let Some(chat_id) = body["chat_id"].as_i64() else {
        return error(400, "Bad Request: chat not found", None);
    };
    let Some(message_id) = body["message_id"].as_i64() else {
        return error(
            400,
            "Bad Request: message identifier is not specified",
            None,
        );
    };
    let text = body["text"].as_str().unwrap_or("");
    if text.trim().is_empty() {
        return error(400, "Bad Request: message text is empty", None);
    }
    if text.encode_utf16().count() > TEXT_LIMIT {
        return error(400, "Bad Request: MESSAGE_TOO_LONG", None);
    }
    if let Some(refused) = keyboard_refused(&body["reply_markup"]) {
        return refused;
    }
    let mut inner = shared.inner.lock().expect("lock");
    if let Some(refused) = refusal(&mut inner, chat_id, |inner| inner.edit_failures.next()) {
        return refused;
    }
    let Some(message) = inner.messages.get_mut(&(chat_id, message_id)) else {
        return error(400, "Bad Request: message to edit not found", None);
    };
    let keyboard = shown_keyboard(&body["reply_markup"]);
    if message["text"].as_str() == Some(text)
        && shown_keyboard(&message["reply_markup"]) == keyboard
    {
        return error(400, NOT_MODIFIED, None);
    }
    message["text"] = json!(text);
    message["edit_date"] = json!(unix_now());
    match keyboard {
        Some(keyboard) => message["reply_markup"] = keyboard,
        None => {
            if let Some(fields) = message.as_object_mut() {
                fields.remove("reply_markup");
            }
        }
    }
    ok(message.clone())
}

/// An answer to a press: each delivery of a press may be answered once (the real API's
/// behaviour on a second answer is not known; this is the fake's policy). Telegram shows up to
/// 200 characters; the fake refuses more (the real API's words for it are a guess).
pub(super) fn answer_callback_query(shared: &Shared, body: &Value) -> Response {
    let query_id = body["callback_query_id"].as_str().unwrap_or("");
    let text = body["text"].as_str().unwrap_or("");
    if text.chars().count() > 200 {
        return error(400, "Bad Request: MESSAGE_TOO_LONG", None);
    }
    let mut inner = shared.inner.lock().expect("lock");
    match inner.queries.get_mut(query_id) {
        Some(query) if query.unanswered > 0 => query.unanswered -= 1,
        _ => {
            return error(
                400,
                "Bad Request: query is too old and response timeout expired or query id is invalid",
                None,
            );
        }
    }
    inner.answers.push(Answer {
        query_id: query_id.to_string(),
        text: text.to_string(),
        at: Instant::now(),
    });
    ok(json!(true))
}
