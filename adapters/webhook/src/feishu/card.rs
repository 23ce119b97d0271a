//! The interactive card (Card JSON 1.0) that a chunk with buttons is sent as, and that its
//! edits replace whole: a `plain_text` div with the text, then an action block of buttons
//! whose `value` is `{"execrelay": <button id>}`. `update_multi` makes it a shared card, which
//! Feishu lets the app update for everyone (both the sent and every new version must say so).

use execrelay_channel::Button;
use serde_json::{Value, json};

/// The key of a button's `value` that carries our [`Button::id`]; presses read it back.
pub(crate) const VALUE_KEY: &str = "execrelay";

/// The request body limit of cards, on sends and on updates (`PATCH`).
#[cfg(test)]
pub(crate) const MAX_CARD_BODY: usize = 30 * 1024;

/// The card showing `text` with `buttons` under it (none: no action block). `plain_text`, not
/// `lark_md`: job output is not markdown, and a markdown `<at id=all>` would ping a group.
pub(crate) fn card(text: &str, buttons: &[Button]) -> Value {
    let mut elements = vec![json!({
        "tag": "div",
        "text": {"tag": "plain_text", "content": super::defuse_mentions(text)},
    })];
    if !buttons.is_empty() {
        let actions: Vec<Value> = buttons
            .iter()
            .map(|button| {
                json!({
                    "tag": "button",
                    "text": {"tag": "plain_text", "content": button.label},
                    "type": "default",
                    "value": {VALUE_KEY: button.id},
                })
            })
            .collect();
        elements.push(json!({"tag": "action", "actions": actions}));
    }
    json!({
        "config": {"update_multi": true, "wide_screen_mode": true},
        "elements": elements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buttons() -> Vec<Button> {
        ["Tail", "Kill", "Rerun"]
            .iter()
            .map(|label| Button {
                // The longest id the contract allows.
                id: format!("{}:{}", &label[..1], "f".repeat(62)),
                label: label.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_card_has_the_text_then_the_buttons_with_our_ids() {
        let buttons = buttons();
        let card = card("started job 7f3a9c: make", &buttons[..2]);
        assert_eq!(card["config"]["update_multi"], true);
        assert_eq!(
            card["elements"][0],
            json!({"tag": "div", "text": {"tag": "plain_text", "content": "started job 7f3a9c: make"}})
        );
        let actions = card["elements"][1]["actions"].as_array().unwrap();
        assert_eq!(card["elements"][1]["tag"], "action");
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[1]["text"]["content"], "Kill");
        assert_eq!(actions[1]["value"], json!({"execrelay": buttons[1].id}));
        let bare = super::card("done", &[]);
        assert_eq!(bare["elements"].as_array().unwrap().len(), 1, "{bare}");
        assert_eq!(
            bare["config"]["update_multi"], true,
            "updates keep it shared"
        );
        let pinged = super::card("<at user_id=\"all\"></at>", &[]);
        assert!(!pinged.to_string().contains("<at"), "{pinged}");
    }

    /// JSON in JSON: a control character becomes `\u0001`, then `\\u0001` in the request, 7
    /// bytes for one character. The channel's 4000 characters still fit the 30 KB limit.
    #[test]
    fn the_worst_text_within_the_limit_fits_a_card_body() {
        let text: String = "\u{1}".repeat(super::super::FEISHU_LIMIT.max);
        let content = card(&text, &buttons()).to_string();
        let body = json!({
            "receive_id": "oc_".to_string() + &"x".repeat(40),
            "msg_type": "interactive",
            "content": content,
            "uuid": "u".repeat(50),
        });
        let size = serde_json::to_vec(&body).unwrap().len();
        assert!(size < MAX_CARD_BODY, "{size} bytes");
        let patch = serde_json::to_vec(&json!({ "content": content }))
            .unwrap()
            .len();
        assert!(patch < MAX_CARD_BODY, "{patch} bytes");
    }
}
