//! Inbound Feishu callbacks: verification, decryption, `im.message.receive_v1` parsing, and
//! card presses (`card.action.trigger`, which arrive at the same path, verified alike) with
//! the toast that answers them ([`answer_press`]).

use std::sync::Arc;
use std::time::Duration;

use execrelay_channel::{ChatType, InboundMessage, InboundSink, Press, Route, constant_time_eq};
use serde_json::{Value, json};

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
    /// A press of one of our card's buttons: answer 200 with [`answer_press`]'s toast. Its
    /// route's chat type is `Group` unless the chat is known to be direct (the callback does
    /// not say; [`FeishuChannel::receive`](super::FeishuChannel::receive) knows the direct
    /// chats it has seen).
    Press(Press),
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
    if event_type == "card.action.trigger" {
        return card_press(config, header, payload.get("event").unwrap_or(&Value::Null));
    }
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

/// A verified `card.action.trigger`: who pressed which of our buttons on which card in which
/// chat. `event.token` is the delayed-update token, not the verification one, and is not read.
fn card_press(
    config: &FeishuConfig,
    header: &Value,
    event: &Value,
) -> Result<FeishuEvent, WebhookError> {
    let value = field(event, &["action", "value"]);
    // Ours are `{"execrelay": id}`; a bare string is tolerated. Other values belong to cards
    // the relay did not send.
    let action = value
        .and_then(|value| value.get(super::card::VALUE_KEY).or(Some(value)))
        .and_then(Value::as_str)
        .filter(|action| !action.is_empty());
    let Some(action) = action else {
        return Ok(FeishuEvent::Ignored(
            "card.action.trigger without an execrelay button".into(),
        ));
    };
    let event_id =
        text_field(header, &["event_id"]).ok_or_else(|| bad("missing header.event_id"))?;
    let open_id = text_field(event, &["operator", "open_id"])
        .ok_or_else(|| bad("missing event.operator.open_id"))?;
    let chat_id = text_field(event, &["context", "open_chat_id"])
        .ok_or_else(|| bad("missing event.context.open_chat_id"))?;
    Ok(FeishuEvent::Press(Press {
        route: Route {
            channel: super::CHANNEL.to_string(),
            account: config.app_id.clone(),
            chat_id: chat_id.to_string(),
            thread_id: None,
            reply_to_message_id: None,
            chat_type: ChatType::Group,
        },
        sender_id: open_id.to_string(),
        action: action.to_string(),
        press_id: event_id.to_string(),
        on_message_id: text_field(event, &["context", "open_message_id"]).map(str::to_string),
    }))
}

/// Feishu shows an error when a press is not answered within 3 s: the sink gets the rest,
/// less the way there and back.
pub const PRESS_ANSWER_WITHIN: Duration = Duration::from_millis(2500);

/// Also when the relay answered too late, having perhaps acted: not "try again".
const CANNOT_TAKE: &str =
    "The relay did not answer in time; check the chat before you press again.";
const TOO_SLOW: &str = "The relay is slow to answer; check the chat before you press again.";

/// Hands a verified press to `sink` and returns the body of the 200 that answers it: a toast
/// only the presser sees, `{"toast": {"type": "info", "content": <answer>}}`, or an error
/// toast when the relay cannot take it or takes longer than [`PRESS_ANSWER_WITHIN`] (the
/// press goes on in the background then: it may still act). Never an HTTP error: a 4xx or
/// 5xx only shows the presser a generic failure.
pub async fn answer_press(sink: Arc<dyn InboundSink>, press: Press) -> Value {
    answer_press_within(sink, press, PRESS_ANSWER_WITHIN).await
}

async fn answer_press_within(sink: Arc<dyn InboundSink>, press: Press, within: Duration) -> Value {
    // On a task of its own: the wait may end first, and the press must not end with it.
    let task = tokio::spawn(async move { sink.press(press).await });
    let (kind, content) = match tokio::time::timeout(within, task).await {
        Ok(Ok(Ok(answer))) => ("info", answer.text),
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "feishu: the relay could not take a press");
            ("error", CANNOT_TAKE.to_string())
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "feishu: a press's task failed");
            ("error", CANNOT_TAKE.to_string())
        }
        Err(_) => {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "feishu: a press was not answered in time"
            );
            ("error", TOO_SLOW.to_string())
        }
    };
    json!({"toast": {"type": kind, "content": content}})
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

    fn press_event(value: Value) -> Value {
        json!({
            "schema": "2.0",
            "header": {"event_id": "ev-press-1", "event_type": "card.action.trigger",
                       "create_time": "1760000000000", "token": "vtoken", "app_id": "cli_app",
                       "tenant_key": "t"},
            "event": {
                "operator": {"open_id": "ou_alice", "user_id": "u1", "union_id": "on_1"},
                "token": "c-delayed-update-token",
                "host": "im_message",
                "action": {"tag": "button", "value": value},
                "context": {"open_message_id": "om_card", "open_chat_id": "oc_room"},
            },
        })
    }

    #[test]
    fn a_card_press_becomes_a_press() {
        let body = press_event(json!({"execrelay": "k:7f3a9c"})).to_string();
        let signature = event_signature("1760000000", "n", "ekey", body.as_bytes());
        let headers = FeishuHeaders {
            timestamp: Some("1760000000"),
            nonce: Some("n"),
            signature: Some(&signature),
        };
        let event = receive(&config(Some("ekey")), headers, body.as_bytes(), NOW).unwrap();
        assert_eq!(
            event,
            FeishuEvent::Press(Press {
                route: Route {
                    channel: "feishu".into(),
                    account: "cli_app".into(),
                    chat_id: "oc_room".into(),
                    thread_id: None,
                    reply_to_message_id: None,
                    chat_type: ChatType::Group,
                },
                sender_id: "ou_alice".into(),
                action: "k:7f3a9c".into(),
                press_id: "ev-press-1".into(),
                on_message_id: Some("om_card".into()),
            })
        );
        // Verified like every event: unsigned with a key, or with a wrong token, is refused.
        let unsigned = receive(
            &config(Some("ekey")),
            FeishuHeaders::default(),
            body.as_bytes(),
            NOW,
        );
        assert_eq!(unsigned.unwrap_err().http_status(), 401);
        let mut wrong = press_event(json!({"execrelay": "k:1"}));
        wrong["header"]["token"] = json!("c-delayed-update-token");
        let refused = receive(
            &config(None),
            FeishuHeaders::default(),
            wrong.to_string().as_bytes(),
            NOW,
        );
        assert_eq!(
            refused.unwrap_err().http_status(),
            401,
            "event.token is no credential"
        );
    }

    #[test]
    fn a_press_without_our_value_is_ignored_and_one_without_ids_refused() {
        let parse = |event: Value| {
            receive(
                &config(None),
                FeishuHeaders::default(),
                event.to_string().as_bytes(),
                NOW,
            )
        };
        let bare = parse(press_event(json!("t:1"))).unwrap();
        assert!(matches!(bare, FeishuEvent::Press(press) if press.action == "t:1"));
        for foreign in [
            json!({"other": "x"}),
            json!({"execrelay": ""}),
            json!(5),
            Value::Null,
        ] {
            assert!(
                matches!(
                    parse(press_event(foreign.clone())),
                    Ok(FeishuEvent::Ignored(_))
                ),
                "{foreign}"
            );
        }
        for (path, name) in [
            (&["header", "event_id"][..], "header.event_id"),
            (&["event", "operator"][..], "event.operator.open_id"),
            (&["event", "context"][..], "event.context.open_chat_id"),
        ] {
            let mut event = press_event(json!({"execrelay": "k:1"}));
            let (last, parents) = path.split_last().unwrap();
            let parent = parents.iter().fold(&mut event, |v, key| &mut v[*key]);
            parent.as_object_mut().unwrap().remove(*last);
            let err = parse(event).unwrap_err();
            assert_eq!(err.http_status(), 400);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    struct Answering(Result<&'static str, ()>);

    #[async_trait::async_trait]
    impl InboundSink for Answering {
        async fn accept(
            &self,
            _: InboundMessage,
        ) -> Result<execrelay_channel::Accepted, execrelay_channel::SinkError> {
            unreachable!("presses only")
        }
        async fn load_state(
            &self,
            _: &str,
        ) -> Result<Option<String>, execrelay_channel::SinkError> {
            Ok(None)
        }
        async fn save_state(&self, _: &str, _: &str) -> Result<(), execrelay_channel::SinkError> {
            Ok(())
        }
        async fn press(
            &self,
            _: Press,
        ) -> Result<execrelay_channel::PressAnswer, execrelay_channel::SinkError> {
            match self.0 {
                Ok(text) => Ok(execrelay_channel::PressAnswer { text: text.into() }),
                Err(()) => std::future::pending().await,
            }
        }
    }

    fn a_press() -> Press {
        let FeishuEvent::Press(press) = receive(
            &config(None),
            FeishuHeaders::default(),
            press_event(json!({"execrelay": "k:1"}))
                .to_string()
                .as_bytes(),
            NOW,
        )
        .unwrap() else {
            panic!("not a press")
        };
        press
    }

    #[tokio::test]
    async fn a_press_is_answered_with_a_toast_in_time_whatever_the_sink_does() {
        let answered = answer_press(Arc::new(Answering(Ok("Killing job 1"))), a_press()).await;
        assert_eq!(
            answered,
            json!({"toast": {"type": "info", "content": "Killing job 1"}})
        );
        // The contract's default `press`: the relay takes none.
        struct NoPresses;
        #[async_trait::async_trait]
        impl InboundSink for NoPresses {
            async fn accept(
                &self,
                _: InboundMessage,
            ) -> Result<execrelay_channel::Accepted, execrelay_channel::SinkError> {
                unreachable!()
            }
            async fn load_state(
                &self,
                _: &str,
            ) -> Result<Option<String>, execrelay_channel::SinkError> {
                Ok(None)
            }
            async fn save_state(
                &self,
                _: &str,
                _: &str,
            ) -> Result<(), execrelay_channel::SinkError> {
                Ok(())
            }
        }
        let refused = answer_press(Arc::new(NoPresses), a_press()).await;
        assert_eq!(
            refused,
            json!({"toast": {"type": "error", "content": CANNOT_TAKE}})
        );
        let stuck = answer_press_within(
            Arc::new(Answering(Err(()))),
            a_press(),
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(
            stuck,
            json!({"toast": {"type": "error", "content": TOO_SLOW}})
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
