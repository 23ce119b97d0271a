//! Live messages: the relay's buttons as Discord message components, and the edits that keep a
//! message current (`PATCH /channels/{id}/messages/{id}`), classified for the relay's edit lane.
//!
//! Not owned here: when to edit, how often, or what to do about an outcome (the relay's
//! progress lane); the request itself goes through `rest.rs` like every other call of ours.

use execrelay_channel::{Button, EditOutcome};
use serde_json::{Value, json};

use crate::outbound::Answer;

/// Discord's limits on buttons: five to an action row, five rows to a message, a label of at
/// most 80 characters.
const BUTTONS_PER_ROW: usize = 5;
const MAX_ROWS: usize = 5;
const MAX_LABEL_CHARS: usize = 80;
/// A button's style: secondary (grey). The adapter cannot tell a dangerous button from another
/// (ids are opaque to it), so every button looks the same.
const NEUTRAL_STYLE: u8 = 2;

/// Too many edits to a message older than an hour. Discord answers it with HTTP 429, so it is
/// recognised by its code before the plain 429.
const SLOW_DOWN: i64 = 30046;
const UNKNOWN_CHANNEL: i64 = 10003;
const UNKNOWN_MESSAGE: i64 = 10008;

/// `buttons` as a message's `components`: action rows of buttons (type 1 holding type 2), each
/// button's `custom_id` its [`Button::id`] (which comes back in a press) and its label the
/// [`Button::label`]. An empty slice gives `[]`, which in an edit removes the buttons. Past 25
/// buttons the rest are left out (Discord would refuse the whole message).
pub(crate) fn components(buttons: &[Button]) -> Value {
    let rows: Vec<Value> = buttons
        .chunks(BUTTONS_PER_ROW)
        .take(MAX_ROWS)
        .map(|row| {
            let row: Vec<Value> = row
                .iter()
                .map(|button| {
                    let label: String = button.label.chars().take(MAX_LABEL_CHARS).collect();
                    json!({"type": 2, "style": NEUTRAL_STYLE, "label": label,
                           "custom_id": button.id})
                })
                .collect();
            json!({"type": 1, "components": row})
        })
        .collect();
    Value::Array(rows)
}

/// The body of an edit: the new text and the buttons the message keeps (always sent, so that
/// an empty list removes them), with mentions off as in sends (command output is arbitrary).
pub(crate) fn edit_body(text: &str, buttons: &[Button]) -> Value {
    json!({
        "content": text,
        "allowed_mentions": {"parse": []},
        "components": components(buttons),
    })
}

/// What the relay's edit lane should do after a `PATCH /channels/{id}/messages/{id}` answered
/// `status`. Discord answers an edit to the same text with 200, so "not modified" is
/// [`EditOutcome::Edited`] with no special case.
pub fn classify_edit(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> EditOutcome {
    let answer = Answer::new(status, retry_after_header, body);
    let code = answer.code();
    match status {
        200..=299 => EditOutcome::Edited,
        // First: it comes as a 429, but waiting does not help this message much.
        _ if code == Some(SLOW_DOWN) => EditOutcome::SlowDown,
        429 => EditOutcome::RetryAfter(answer.retry_after()),
        404 if matches!(code, Some(UNKNOWN_MESSAGE | UNKNOWN_CHANNEL)) => {
            EditOutcome::Gone(answer.describe())
        }
        // Lost access to the channel, or not ours to edit: no later edit can succeed.
        403 => EditOutcome::Gone(answer.describe()),
        408 | 500..=599 => EditOutcome::Transient(answer.describe()),
        401 => EditOutcome::Failed(format!(
            "{}; check channels.discord.token",
            answer.describe()
        )),
        _ => EditOutcome::Failed(answer.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn button(id: &str, label: &str) -> Button {
        Button {
            id: id.into(),
            label: label.into(),
        }
    }

    #[test]
    fn buttons_become_one_row_of_neutral_buttons() {
        let rendered = components(&[button("t:7f3a9c", "Tail"), button("k:7f3a9c", "Kill")]);
        assert_eq!(
            rendered,
            json!([{"type": 1, "components": [
                {"type": 2, "style": 2, "label": "Tail", "custom_id": "t:7f3a9c"},
                {"type": 2, "style": 2, "label": "Kill", "custom_id": "k:7f3a9c"}]}])
        );
        assert_eq!(components(&[]), json!([]));
    }

    #[test]
    fn many_buttons_fill_rows_of_five_and_long_labels_are_cut() {
        let many: Vec<Button> = (0..30)
            .map(|n| button(&format!("b:{n}"), &"x".repeat(100)))
            .collect();
        let rendered = components(&many);
        let rows = rendered.as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert!(
            rows.iter()
                .all(|row| row["components"].as_array().unwrap().len() == 5)
        );
        let label = rows[0]["components"][0]["label"].as_str().unwrap();
        assert_eq!(label.chars().count(), 80);
    }

    #[test]
    fn an_edit_always_says_which_buttons_stay() {
        let body = edit_body("done", &[]);
        assert_eq!(body["content"], "done");
        assert_eq!(body["components"], json!([]));
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));
    }

    #[test]
    fn edit_answers_map_to_the_contract() {
        assert_eq!(
            classify_edit(200, None, br#"{"id":"77"}"#),
            EditOutcome::Edited
        );
        // 30046 comes as a 429 with a wait: still SlowDown, not RetryAfter.
        let slow = br#"{"message":"Maximum number of edits to messages older than 1 hour reached. Try again later.","code":30046,"retry_after":1.0,"global":false}"#;
        assert_eq!(classify_edit(429, Some("1"), slow), EditOutcome::SlowDown);
        assert_eq!(
            classify_edit(400, None, br#"{"code":30046}"#),
            EditOutcome::SlowDown
        );
        assert_eq!(
            classify_edit(429, None, br#"{"retry_after":1.5,"global":false}"#),
            EditOutcome::RetryAfter(Duration::from_millis(1500))
        );
        assert_eq!(
            classify_edit(429, Some("2"), b""),
            EditOutcome::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            classify_edit(429, None, br#"{"retry_after":1e9}"#),
            EditOutcome::RetryAfter(Duration::from_secs(3600))
        );
        for gone in [
            (404, &br#"{"message":"Unknown Message","code":10008}"#[..]),
            (404, br#"{"message":"Unknown Channel","code":10003}"#),
            (403, br#"{"message":"Missing Access","code":50001}"#),
        ] {
            assert!(
                matches!(classify_edit(gone.0, None, gone.1), EditOutcome::Gone(_)),
                "{gone:?}"
            );
        }
        assert_eq!(
            classify_edit(404, None, br#"{"message":"Unknown Message","code":10008}"#),
            EditOutcome::Gone("HTTP 404: Unknown Message (code 10008)".into())
        );
        for status in [500, 502, 503, 408] {
            assert!(
                matches!(classify_edit(status, None, b""), EditOutcome::Transient(_)),
                "{status}"
            );
        }
        // A route Discord does not know is not a deleted message.
        assert!(matches!(
            classify_edit(404, None, br#"{"message":"404: Not Found","code":0}"#),
            EditOutcome::Failed(_)
        ));
        assert!(matches!(
            classify_edit(
                400,
                None,
                br#"{"message":"Invalid Form Body","code":50035}"#
            ),
            EditOutcome::Failed(_)
        ));
        assert!(
            matches!(classify_edit(401, None, b""), EditOutcome::Failed(e) if e.contains("token"))
        );
    }
}
