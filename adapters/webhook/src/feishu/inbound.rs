//! Inbound Feishu events: verification, decryption, and `im.message.receive_v1` parsing.

use execrelay_channel::{ChatType, InboundMessage, Route, constant_time_eq};
use serde_json::Value;

use super::config::FeishuConfig;
use super::crypto::{decrypt, event_signature};
use crate::WebhookError;
use crate::inbound::check_timestamp;

pub const TIMESTAMP_HEADER: &str = "X-Lark-Request-Timestamp";
pub const NONCE_HEADER: &str = "X-Lark-Request-Nonce";
pub const SIGNATURE_HEADER: &str = "X-Lark-Signature";

/// The signature headers of one request, as received.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeishuHeaders<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// What one verified callback asks of the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeishuEvent {
    /// `url_verification`: answer 200 `{"challenge": ...}`.
    Challenge(String),
    /// A message for the relay. Its text is empty when the message carried none (an image, a
    /// file): the relay answers that it reads text only.
    Message(InboundMessage),
    /// A genuine event the relay does not act on (its type is given); acknowledged.
    Ignored(String),
}

fn unauthorized(reason: &str) -> WebhookError {
    WebhookError::Unauthorized(reason.to_string())
}

fn bad(reason: impl Into<String>) -> WebhookError {
    WebhookError::BadRequest(reason.into())
}

/// `@_user_1`-style mention placeholders (and `@_all`) removed, whitespace collapsed at the ends.
pub(crate) fn strip_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("@_") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let skip = if let Some(digits) = tail.strip_prefix("user_") {
            let n = digits.chars().take_while(char::is_ascii_digit).count();
            (n > 0).then_some(2 + 5 + n)
        } else if tail.starts_with("all") {
            Some(2 + 3)
        } else {
            None
        };
        match skip {
            Some(len) => rest = &rest[at + len..],
            None => {
                out.push_str("@_");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// The value at `path` (object keys, outermost first).
fn field<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

fn text_field<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    field(value, path)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

/// Milliseconds as Feishu writes them: a string of digits (or, tolerated, a number).
fn millis_field(value: &Value, path: &[&str]) -> Option<i64> {
    match field(value, path)? {
        Value::String(text) => text.trim().parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// An encrypted url_verification challenge is a couple of hundred bytes.
const MAX_UNSIGNED_BODY: usize = 4096;

const UNSIGNED: &str = "an event without a valid X-Lark-Signature";

/// With an encrypt key, Feishu signs every event: `Ok(true)` for a valid signature on a fresh
/// timestamp, `Ok(false)` when the headers are absent (only `url_verification` may be), an
/// error for a wrong or stale one.
fn verify_signature(
    key: &str,
    headers: FeishuHeaders<'_>,
    body: &[u8],
    now_unix: i64,
    config: &FeishuConfig,
) -> Result<bool, WebhookError> {
    let (Some(timestamp), Some(nonce), Some(signature)) =
        (headers.timestamp, headers.nonce, headers.signature)
    else {
        return Ok(false);
    };
    check_timestamp(TIMESTAMP_HEADER, timestamp, now_unix, config.max_skew)?;
    let expected = event_signature(timestamp, nonce, key, body);
    let given = signature.trim().to_ascii_lowercase();
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(unauthorized("X-Lark-Signature mismatch"));
    }
    Ok(true)
}

/// Verifies and parses one callback body.
pub(crate) fn receive(
    config: &FeishuConfig,
    headers: FeishuHeaders<'_>,
    body: &[u8],
    now_unix: i64,
) -> Result<FeishuEvent, WebhookError> {
    // The signature covers the raw body: checked before anything is parsed or decrypted.
    let signed = match &config.encrypt_key {
        Some(key) => verify_signature(key.expose(), headers, body, now_unix, config)?,
        None => {
            if let Some(timestamp) = headers.timestamp {
                check_timestamp(TIMESTAMP_HEADER, timestamp, now_unix, config.max_skew)?;
            }
            false
        }
    };
    // With a key, only the small url_verification challenge comes unsigned: any other
    // unsigned body gets the one answer, unparsed (no work, and no parser's words, for it).
    let unsigned_with_key = config.encrypt_key.is_some() && !signed;
    if unsigned_with_key && body.len() > MAX_UNSIGNED_BODY {
        return Err(unauthorized(UNSIGNED));
    }
    let outer: Value = match serde_json::from_slice(body) {
        Ok(outer) => outer,
        Err(_) if unsigned_with_key => return Err(unauthorized(UNSIGNED)),
        Err(error) => return Err(bad(format!("invalid JSON: {error}"))),
    };
    let payload = match outer.get("encrypt").and_then(Value::as_str) {
        Some(encrypted) => {
            let Some(key) = &config.encrypt_key else {
                return Err(bad("an encrypted event, but no encrypt_key is configured"));
            };
            let opened = decrypt(key.expose(), encrypted)
                .ok()
                .and_then(|plain| serde_json::from_slice::<Value>(&plain).ok());
            match opened {
                Some(payload) => payload,
                None if signed => return Err(bad("cannot decrypt the event")),
                // Unsigned, every failure answers alike: no padding oracle.
                None => return Err(unauthorized(UNSIGNED)),
            }
        }
        None => outer,
    };
    let token_matches = |token: Option<&str>| {
        token.is_some_and(|t| config.verification_token.matches(t.as_bytes()))
    };
    // Feishu sends the challenge unsigned; its token is what proves the sender.
    if payload.get("type").and_then(Value::as_str) == Some("url_verification") {
        if !token_matches(payload.get("token").and_then(Value::as_str)) {
            return Err(unauthorized(if unsigned_with_key {
                UNSIGNED
            } else {
                "url_verification with a wrong verification token"
            }));
        }
        let challenge = text_field(&payload, &["challenge"])
            .ok_or_else(|| bad("url_verification without a challenge"))?;
        return Ok(FeishuEvent::Challenge(challenge.to_string()));
    }
    if unsigned_with_key {
        return Err(unauthorized(UNSIGNED));
    }
    let header = payload.get("header").unwrap_or(&Value::Null);
    if !token_matches(text_field(header, &["token"]).or(text_field(&payload, &["token"]))) {
        return Err(unauthorized("wrong verification token"));
    }
    let event_type = text_field(header, &["event_type"]).unwrap_or("unknown");
    if event_type != "im.message.receive_v1" {
        return Ok(FeishuEvent::Ignored(event_type.to_string()));
    }
    let event = payload.get("event").unwrap_or(&Value::Null);
    if text_field(event, &["sender", "sender_type"]).is_some_and(|kind| kind != "user") {
        return Ok(FeishuEvent::Ignored(format!("{event_type} from an app")));
    }
    let event_id =
        text_field(header, &["event_id"]).ok_or_else(|| bad("missing header.event_id"))?;
    let open_id = text_field(event, &["sender", "sender_id", "open_id"])
        .ok_or_else(|| bad("missing event.sender.sender_id.open_id"))?;
    let message = event.get("message").unwrap_or(&Value::Null);
    let chat_id =
        text_field(message, &["chat_id"]).ok_or_else(|| bad("missing event.message.chat_id"))?;
    let message_id = text_field(message, &["message_id"]);
    let chat_type = match text_field(message, &["chat_type"]) {
        Some("p2p") => ChatType::Direct,
        _ => ChatType::Group,
    };
    let text = match text_field(message, &["message_type"]) {
        Some("text") => {
            let content = text_field(message, &["content"]).unwrap_or("{}");
            let content: Value = serde_json::from_str(content)
                .map_err(|error| bad(format!("event.message.content is not JSON: {error}")))?;
            strip_placeholders(content.get("text").and_then(Value::as_str).unwrap_or(""))
        }
        _ => String::new(),
    };
    Ok(FeishuEvent::Message(InboundMessage {
        route: Route {
            channel: super::CHANNEL.to_string(),
            account: config.app_id.clone(),
            chat_id: chat_id.to_string(),
            thread_id: None,
            reply_to_message_id: message_id.map(str::to_string),
            chat_type,
        },
        sender_id: open_id.to_string(),
        text,
        platform_message_id: Some(event_id.to_string()),
        // Feishu posts events concurrently, so they may be handled out of order.
        sent_at_ms: millis_field(message, &["create_time"])
            .or_else(|| millis_field(header, &["create_time"])),
        forwarded: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use execrelay_channel::Secret;
    use serde_json::json;

    const NOW: i64 = 1_760_000_000;

    fn config(encrypt_key: Option<&str>) -> FeishuConfig {
        let mut config = FeishuConfig::new("cli_app", Secret::new("s"), Secret::new("vtoken"));
        config.encrypt_key = encrypt_key.map(Secret::new);
        config
    }

    fn message_event(text_content: Value, chat_type: &str, token: &str) -> Value {
        json!({
            "schema": "2.0",
            "header": {"event_id": "ev-1", "event_type": "im.message.receive_v1",
                       "create_time": "1760000000000", "token": token, "app_id": "cli_app",
                       "tenant_key": "t"},
            "event": {
                "sender": {"sender_id": {"open_id": "ou_alice", "user_id": "u1"},
                           "sender_type": "user"},
                "message": {"message_id": "om_1", "chat_id": "oc_room", "chat_type": chat_type,
                            "message_type": "text", "content": text_content.to_string(),
                            "create_time": 1760000000000u64},
            },
        })
    }

    #[test]
    fn placeholders_are_stripped() {
        assert_eq!(strip_placeholders("@_user_1 /exec ls"), "/exec ls");
        assert_eq!(strip_placeholders("@_user_12  @_all hi"), "hi");
        assert_eq!(strip_placeholders("mail a@_b.c"), "mail a@_b.c");
        assert_eq!(strip_placeholders("@_user_ x"), "@_user_ x");
    }

    #[test]
    fn a_plain_text_message_becomes_an_inbound_message() {
        let body = message_event(json!({"text": "@_user_1 /exec ls"}), "group", "vtoken");
        let headers = FeishuHeaders {
            timestamp: Some("1760000001"),
            ..FeishuHeaders::default()
        };
        let event = receive(&config(None), headers, body.to_string().as_bytes(), NOW).unwrap();
        let FeishuEvent::Message(message) = event else {
            panic!("not a message: {event:?}")
        };
        assert_eq!(message.text, "/exec ls");
        assert_eq!(message.sender_id, "ou_alice");
        assert_eq!(message.route.chat_id, "oc_room");
        assert_eq!(message.route.chat_type, ChatType::Group);
        assert_eq!(message.platform_message_id.as_deref(), Some("ev-1"));
        assert_eq!(message.sent_at_ms, Some(1_760_000_000_000));
    }

    #[test]
    fn wrong_tokens_stale_timestamps_and_missing_signatures_are_refused() {
        let body = message_event(json!({"text": "/jobs"}), "p2p", "nope").to_string();
        let plain = config(None);
        let err = receive(&plain, FeishuHeaders::default(), body.as_bytes(), NOW).unwrap_err();
        assert_eq!(err.http_status(), 401);
        let good = message_event(json!({"text": "/jobs"}), "p2p", "vtoken").to_string();
        let stale = FeishuHeaders {
            timestamp: Some("1759800000"),
            ..FeishuHeaders::default()
        };
        assert_eq!(
            receive(&plain, stale, good.as_bytes(), NOW)
                .unwrap_err()
                .http_status(),
            401
        );
        let signed = config(Some("ekey"));
        let unsigned = receive(&signed, FeishuHeaders::default(), good.as_bytes(), NOW);
        assert_eq!(unsigned.unwrap_err().http_status(), 401);
        let signature = event_signature("1760000000", "n", "ekey", good.as_bytes());
        let headers = FeishuHeaders {
            timestamp: Some("1760000000"),
            nonce: Some("n"),
            signature: Some(&signature),
        };
        assert!(receive(&signed, headers, good.as_bytes(), NOW).is_ok());
        let forged = FeishuHeaders {
            nonce: Some("other"),
            ..headers
        };
        assert_eq!(
            receive(&signed, forged, good.as_bytes(), NOW)
                .unwrap_err()
                .http_status(),
            401
        );
    }

    #[test]
    fn url_verification_answers_the_challenge_after_the_token() {
        let body = json!({"challenge": "c-123", "token": "vtoken", "type": "url_verification"});
        let event = receive(
            &config(None),
            FeishuHeaders::default(),
            body.to_string().as_bytes(),
            NOW,
        );
        assert_eq!(event.unwrap(), FeishuEvent::Challenge("c-123".into()));
        let wrong = json!({"challenge": "c", "token": "x", "type": "url_verification"});
        let refused = receive(
            &config(None),
            FeishuHeaders::default(),
            wrong.to_string().as_bytes(),
            NOW,
        );
        assert_eq!(refused.unwrap_err().http_status(), 401);
    }

    #[test]
    fn non_text_messages_have_empty_text_and_other_events_are_ignored() {
        let mut body = message_event(json!({"image_key": "img"}), "p2p", "vtoken");
        body["event"]["message"]["message_type"] = json!("image");
        let event = receive(
            &config(None),
            FeishuHeaders::default(),
            body.to_string().as_bytes(),
            NOW,
        );
        let Ok(FeishuEvent::Message(message)) = event else {
            panic!("{event:?}")
        };
        assert_eq!(message.text, "");
        assert_eq!(message.route.chat_type, ChatType::Direct);
        body["header"]["event_type"] = json!("im.chat.member.bot.added_v1");
        let event = receive(
            &config(None),
            FeishuHeaders::default(),
            body.to_string().as_bytes(),
            NOW,
        );
        assert!(matches!(event, Ok(FeishuEvent::Ignored(_))));
        assert_eq!(
            receive(&config(None), FeishuHeaders::default(), b"{not json", NOW)
                .unwrap_err()
                .http_status(),
            400
        );
    }

    proptest::proptest! {
        #[test]
        fn any_callback_is_handled_without_panicking(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            timestamp in proptest::option::of("[0-9]{0,12}"),
            signature in proptest::option::of("[0-9a-f]{0,64}"),
        ) {
            let headers = FeishuHeaders {
                timestamp: timestamp.as_deref(),
                nonce: Some("n"),
                signature: signature.as_deref(),
            };
            let _ = receive(&config(Some("ekey")), headers, &body, NOW);
            let _ = receive(&config(None), headers, &body, NOW);
        }

        #[test]
        fn any_message_text_survives_the_json_in_json(text in "(?s).{0,200}") {
            let body = message_event(serde_json::json!({"text": text}), "p2p", "vtoken");
            let event = receive(&config(None), FeishuHeaders::default(), body.to_string().as_bytes(), NOW);
            let Ok(FeishuEvent::Message(message)) = event else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("{event:?}")));
            };
            proptest::prop_assert_eq!(message.text, strip_placeholders(&text));
        }
    }
}
