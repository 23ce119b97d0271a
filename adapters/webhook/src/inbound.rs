//! Inbound requests: the signature scheme (shared with outbound) and the JSON body, which is
//! either a message (`"text"`) or a button press (`"action"`).

use std::time::Duration;

use execrelay_channel::{
    ChatType, InboundMessage, InboundSink, MAX_BUTTON_ID_BYTES, Press, Route, Secret,
};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::errors::WebhookError;

/// Header carrying the request's unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Execrelay-Timestamp";
/// Header carrying `sha256=<hex HMAC>` of `timestamp + "." + body`.
pub const SIGNATURE_HEADER: &str = "X-Execrelay-Signature";

const SIGNATURE_PREFIX: &str = "sha256=";

type HmacSha256 = Hmac<Sha256>;

/// The MAC over `timestamp + "." + body`, before finalisation.
fn mac(secret: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("{SIGNATURE_PREFIX}{}", hex::encode(tag))
}

/// Checks an inbound request's timestamp and signature headers.
///
/// The timestamp bounds replays to `max_skew` either side of `now_unix`; the signature is
/// compared in constant time. An empty secret rejects everything, so a missing secret can
/// never mean "open to anyone".
pub fn verify_request(
    secret: &Secret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
    max_skew: Duration,
) -> Result<(), WebhookError> {
    let unauthorized = |reason: &str| Err(WebhookError::Unauthorized(reason.to_string()));
    if secret.is_empty() {
        return unauthorized("no webhook secret is configured");
    }
    let Some(timestamp) = timestamp else {
        return unauthorized("missing X-Execrelay-Timestamp header");
    };
    let Some(signature) = signature else {
        return unauthorized("missing X-Execrelay-Signature header");
    };
    check_timestamp(TIMESTAMP_HEADER, timestamp, now_unix, max_skew)?;
    let Some(tag) = signature
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(|hex_tag| hex::decode(hex_tag).ok())
    else {
        return unauthorized("X-Execrelay-Signature is not sha256=<hex>");
    };
    mac(secret.expose(), timestamp, body)
        .verify_slice(&tag)
        .or_else(|_| unauthorized("signature mismatch"))
}

/// Refuses a request whose `header` (unix seconds) is unparseable or more than `max_skew` from
/// `now_unix`: a captured request cannot be replayed later.
pub(crate) fn check_timestamp(
    header: &str,
    timestamp: &str,
    now_unix: i64,
    max_skew: Duration,
) -> Result<(), WebhookError> {
    let Ok(sent_at) = timestamp.trim().parse::<i64>() else {
        return Err(WebhookError::Unauthorized(format!(
            "{header} is not unix seconds"
        )));
    };
    // i128 so that absurd timestamps cannot overflow the subtraction.
    let skew = |at: i64| (i128::from(now_unix) - i128::from(at)).unsigned_abs();
    let within = |at: i64| skew(at) <= u128::from(max_skew.as_secs());
    if !within(sent_at) && within(sent_at / 1000) {
        return Err(WebhookError::Unauthorized(format!(
            "{header} is in milliseconds; send unix seconds ({})",
            sent_at / 1000
        )));
    }
    if !within(sent_at) {
        return Err(WebhookError::Unauthorized(format!(
            "{header} is too far from the current time"
        )));
    }
    Ok(())
}

/// The smallest `sent_at_ms` taken for milliseconds (2001-09-09): unix seconds are far below.
const PLAUSIBLE_MILLIS: i64 = 1_000_000_000_000;

/// What one authentic `POST /webhook` asks of the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookInbound {
    /// A message (`"text"`): stored like any inbound message.
    Message(InboundMessage),
    /// A button press (`"action"`, a [`Button::id`](execrelay_channel::Button) the relay sent
    /// in `"actions"`): answered with the sink's [`PressAnswer`](execrelay_channel::PressAnswer).
    Press(Press),
}

/// Parses an inbound request body: a press when it has an `"action"` key, else a message
/// ([`parse_inbound`]). A press's `message_id` is the press's own id (its dedupe key,
/// required); `on_message_id` names the message the button sat on (the `edit_of` of our
/// edits, i.e. the send's idempotency key).
pub fn parse_request(body: &[u8]) -> Result<WebhookInbound, WebhookError> {
    let fields = json_object(body)?;
    if fields.get("action").is_some_and(|action| !action.is_null()) {
        parse_press(&fields).map(WebhookInbound::Press)
    } else {
        parse_message(&fields).map(WebhookInbound::Message)
    }
}

/// Parses an inbound request body into a message on the `webhook` channel.
///
/// Ids may be JSON strings or integers, since some senders emit numbers. Unknown fields are
/// ignored and `null` counts as absent.
pub fn parse_inbound(body: &[u8]) -> Result<InboundMessage, WebhookError> {
    parse_message(&json_object(body)?)
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, WebhookError> {
    let bad = |reason: String| WebhookError::BadRequest(reason);
    let text = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8".into()))?;
    let value: Value =
        serde_json::from_str(text).map_err(|err| bad(format!("invalid JSON: {err}")))?;
    let Value::Object(fields) = value else {
        return Err(bad("body must be a JSON object".into()));
    };
    Ok(fields)
}

/// A press: `action` (a non-empty string of at most [`MAX_BUTTON_ID_BYTES`]),
/// `conversation_id`, `user_id`, `message_id` (the press's own id, its dedupe key); optional
/// `on_message_id`, `thread_id` and `chat_type` as for messages.
fn parse_press(fields: &Map<String, Value>) -> Result<Press, WebhookError> {
    let bad = |reason: &str| WebhookError::BadRequest(reason.to_string());
    let action = match fields.get("action") {
        Some(Value::String(action)) if action.is_empty() => {
            return Err(bad("field `action` is empty"));
        }
        Some(Value::String(action)) if action.len() > MAX_BUTTON_ID_BYTES => {
            return Err(WebhookError::BadRequest(format!(
                "field `action` is over {MAX_BUTTON_ID_BYTES} bytes"
            )));
        }
        Some(Value::String(action)) => action.clone(),
        _ => return Err(bad("field `action` must be a string")),
    };
    Ok(Press {
        route: Route {
            channel: "webhook".into(),
            account: String::new(),
            chat_id: required_id(fields, "conversation_id")?,
            thread_id: optional_id(fields, "thread_id")?,
            reply_to_message_id: None,
            chat_type: chat_type(fields)?,
        },
        sender_id: required_id(fields, "user_id")?,
        action,
        press_id: optional_id(fields, "message_id")?.ok_or_else(|| {
            bad("missing or empty field `message_id`: a press names its own id, so that a retried press is not a second one")
        })?,
        on_message_id: optional_id(fields, "on_message_id")?,
    })
}

fn parse_message(fields: &Map<String, Value>) -> Result<InboundMessage, WebhookError> {
    let bad = |reason: String| WebhookError::BadRequest(reason);
    let conversation_id = required_id(fields, "conversation_id")?;
    let user_id = required_id(fields, "user_id")?;
    let message_id = optional_id(fields, "message_id")?;
    let thread_id = optional_id(fields, "thread_id")?;
    let sent_at_ms = match fields.get("sent_at_ms") {
        None | Some(Value::Null) => None,
        // Seconds (or a count from another epoch) would compare as long ago: refuse them.
        Some(Value::Number(n)) if n.as_i64().is_some_and(|ms| ms >= PLAUSIBLE_MILLIS) => n.as_i64(),
        Some(_) => {
            return Err(bad(
                "field `sent_at_ms` must be unix milliseconds, an integer".into(),
            ));
        }
    };
    let text = match fields.get("text") {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => return Err(bad("missing field `text`".into())),
        Some(_) => return Err(bad("field `text` must be a string".into())),
    };
    let chat_type = chat_type(fields)?;

    Ok(InboundMessage {
        route: Route {
            channel: "webhook".into(),
            account: String::new(),
            chat_id: conversation_id,
            thread_id,
            reply_to_message_id: message_id.clone(),
            chat_type,
        },
        sender_id: user_id,
        text,
        platform_message_id: message_id,
        sent_at_ms,
        forwarded: false,
    })
}

/// `chat_type`: `"direct"` (also when absent) or `"group"`.
fn chat_type(fields: &Map<String, Value>) -> Result<ChatType, WebhookError> {
    match fields.get("chat_type") {
        None | Some(Value::Null) => Ok(ChatType::Direct),
        Some(Value::String(kind)) if kind == "direct" => Ok(ChatType::Direct),
        Some(Value::String(kind)) if kind == "group" => Ok(ChatType::Group),
        Some(_) => Err(WebhookError::BadRequest(
            "field `chat_type` must be \"direct\" or \"group\"".into(),
        )),
    }
}

/// Hands an authentic press to `sink` and says what to answer the bridge: 200
/// `{"ok": true, "answer": <text for the presser>}`, or 503 `{"error": …}` when the relay
/// cannot take it now (as for messages: the bridge may post it again, and the press's id
/// dedupes it).
pub async fn answer_press(sink: &dyn InboundSink, press: Press) -> (u16, Value) {
    match sink.press(press).await {
        Ok(answer) => (200, serde_json::json!({"ok": true, "answer": answer.text})),
        Err(err) => (503, serde_json::json!({"error": err.to_string()})),
    }
}

/// An id field that must be present and non-empty.
fn required_id(fields: &Map<String, Value>, name: &str) -> Result<String, WebhookError> {
    match optional_id(fields, name)? {
        Some(id) => Ok(id),
        None => Err(WebhookError::BadRequest(format!(
            "missing or empty field `{name}`"
        ))),
    }
}

/// An id given as a string or an integer; absent, `null` and `""` all mean none.
fn optional_id(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, WebhookError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.is_empty() => Ok(None),
        Some(Value::String(id)) => Ok(Some(id.clone())),
        // Integers only: a float id would not round-trip as the sender wrote it.
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(WebhookError::BadRequest(format!(
            "field `{name}` must be a string or an integer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_secs(300);
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"conversation_id":"c1","user_id":"alice","text":"hi"}"#;

    fn secret() -> Secret {
        Secret::new("s3cret")
    }

    fn check(ts: Option<&str>, sig: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
        verify_request(&secret(), ts, sig, body, NOW, SKEW)
    }

    #[test]
    fn sign_matches_known_vector() {
        // Independently computed with Python's hmac module over b"123.body".
        assert_eq!(
            sign("key", "123", b"body"),
            "sha256=6db85a64c3a5ac19dfbd3de4208b151bb6de9ae6375ea71af20ab32b463df8d2"
        );
        let sig = sign("key", "123", b"body");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_eq!(sig, sig.to_lowercase());
    }

    #[test]
    fn accepts_good_signature() {
        let ts = NOW.to_string();
        let sig = sign("s3cret", &ts, BODY);
        check(Some(&ts), Some(&sig), BODY).unwrap();
        // Within the window either side.
        for ts in [NOW - 300, NOW + 300] {
            let ts = ts.to_string();
            check(Some(&ts), Some(&sign("s3cret", &ts, BODY)), BODY).unwrap();
        }
    }

    fn assert_unauthorized(result: Result<(), WebhookError>, needle: &str) {
        match result {
            Err(err @ WebhookError::Unauthorized(_)) => {
                assert_eq!(err.http_status(), 401);
                assert!(err.to_string().contains(needle), "{err} lacks {needle}");
            }
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_signatures() {
        let ts = NOW.to_string();
        let good = sign("s3cret", &ts, BODY);
        let other_key = sign("other", &ts, BODY);
        let other_body = sign("s3cret", &ts, b"{}");
        let other_ts = sign("s3cret", &(NOW + 1).to_string(), BODY);
        for sig in [&other_key, &other_body, &other_ts] {
            assert_unauthorized(check(Some(&ts), Some(sig), BODY), "mismatch");
        }
        let truncated = &good[..good.len() - 2];
        assert_unauthorized(check(Some(&ts), Some(truncated), BODY), "mismatch");
        let no_prefix = good.trim_start_matches("sha256=");
        assert_unauthorized(check(Some(&ts), Some(no_prefix), BODY), "sha256=");
        assert_unauthorized(check(Some(&ts), Some("sha256=zz"), BODY), "sha256=");
        assert_unauthorized(check(Some(&ts), Some(""), BODY), "sha256=");
    }

    #[test]
    fn a_timestamp_in_milliseconds_says_so() {
        let now = 1_700_000_000;
        let error = check_timestamp(
            TIMESTAMP_HEADER,
            "1700000000123",
            now,
            Duration::from_secs(300),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("in milliseconds"), "{error}");
        assert!(error.contains("1700000000"), "{error}");
        let stale = check_timestamp(
            TIMESTAMP_HEADER,
            "1600000000",
            now,
            Duration::from_secs(300),
        )
        .unwrap_err()
        .to_string();
        assert!(stale.contains("too far"), "{stale}");
    }

    #[test]
    fn rejects_stale_or_bad_timestamps() {
        for ts in [NOW - 301, NOW + 301, 0, i64::MIN, i64::MAX] {
            let ts = ts.to_string();
            let sig = sign("s3cret", &ts, BODY);
            assert_unauthorized(check(Some(&ts), Some(&sig), BODY), "too far");
        }
        for ts in ["", "abc", "1.5", "99999999999999999999"] {
            let sig = sign("s3cret", ts, BODY);
            assert_unauthorized(check(Some(ts), Some(&sig), BODY), "unix seconds");
        }
    }

    #[test]
    fn rejects_missing_headers() {
        let ts = NOW.to_string();
        let sig = sign("s3cret", &ts, BODY);
        assert_unauthorized(check(None, Some(&sig), BODY), "Timestamp");
        assert_unauthorized(check(Some(&ts), None, BODY), "Signature");
        assert_unauthorized(check(None, None, BODY), "missing");
    }

    #[test]
    fn empty_secret_rejects_everything() {
        let ts = NOW.to_string();
        let sig = sign("", &ts, BODY);
        let result = verify_request(&Secret::default(), Some(&ts), Some(&sig), BODY, NOW, SKEW);
        assert_unauthorized(result, "secret");
    }

    #[test]
    fn parses_full_message() {
        let body = br#"{"conversation_id":"c1","user_id":"alice","text":"/exec ls",
            "message_id":"m9","chat_type":"group","thread_id":"t2","extra":true,
            "sent_at_ms":1700000000123}"#;
        let msg = parse_inbound(body).unwrap();
        assert_eq!(
            msg,
            InboundMessage {
                route: Route {
                    channel: "webhook".into(),
                    account: String::new(),
                    chat_id: "c1".into(),
                    thread_id: Some("t2".into()),
                    reply_to_message_id: Some("m9".into()),
                    chat_type: ChatType::Group,
                },
                sender_id: "alice".into(),
                text: "/exec ls".into(),
                platform_message_id: Some("m9".into()),
                sent_at_ms: Some(1_700_000_000_123),
                forwarded: false,
            }
        );
    }

    #[test]
    fn parses_minimal_message_as_direct() {
        let msg = parse_inbound(BODY).unwrap();
        assert_eq!(msg.route.chat_type, ChatType::Direct);
        assert_eq!(msg.route.thread_id, None);
        assert_eq!(msg.route.reply_to_message_id, None);
        assert_eq!(msg.platform_message_id, None);
        assert_eq!(msg.sent_at_ms, None);
        assert_eq!(
            (msg.route.chat_id.as_str(), msg.sender_id.as_str()),
            ("c1", "alice")
        );
    }

    #[test]
    fn accepts_numeric_ids() {
        let body = br#"{"conversation_id":-100123,"user_id":42,"text":"","message_id":18446744073709551615,"thread_id":7,"chat_type":null}"#;
        let msg = parse_inbound(body).unwrap();
        assert_eq!(msg.route.chat_id, "-100123");
        assert_eq!(msg.sender_id, "42");
        assert_eq!(
            msg.platform_message_id.as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(msg.route.thread_id.as_deref(), Some("7"));
        assert_eq!(msg.text, "");
    }

    fn assert_bad_request(body: &[u8], needle: &str) {
        match parse_inbound(body) {
            Err(err @ WebhookError::BadRequest(_)) => {
                assert_eq!(err.http_status(), 400);
                assert!(err.to_string().contains(needle), "{err} lacks {needle}");
            }
            other => panic!("expected BadRequest for {body:?}, got {other:?}"),
        }
    }

    #[test]
    fn rejects_malformed_bodies() {
        assert_bad_request(b"", "invalid JSON");
        assert_bad_request(b"{\"conversation_id\":", "invalid JSON: EOF");
        assert_bad_request(b"[1,2]", "JSON object");
        assert_bad_request(b"\xff\xfe{}", "UTF-8");
    }

    #[test]
    fn rejects_missing_or_bad_fields() {
        assert_bad_request(br#"{"user_id":"a","text":"x"}"#, "`conversation_id`");
        assert_bad_request(
            br#"{"conversation_id":"","user_id":"a","text":"x"}"#,
            "`conversation_id`",
        );
        assert_bad_request(br#"{"conversation_id":"c","text":"x"}"#, "`user_id`");
        assert_bad_request(br#"{"conversation_id":"c","user_id":"a"}"#, "`text`");
        assert_bad_request(
            br#"{"conversation_id":"c","user_id":"a","text":5}"#,
            "`text` must be a string",
        );
        assert_bad_request(
            br#"{"conversation_id":1.5,"user_id":"a","text":"x"}"#,
            "`conversation_id` must be",
        );
        assert_bad_request(
            br#"{"conversation_id":"c","user_id":["a"],"text":"x"}"#,
            "`user_id` must be",
        );
        assert_bad_request(
            br#"{"conversation_id":"c","user_id":"a","text":"x","message_id":{}}"#,
            "`message_id` must be",
        );
        assert_bad_request(
            br#"{"conversation_id":"c","user_id":"a","text":"x","sent_at_ms":"soon"}"#,
            "`sent_at_ms` must be unix milliseconds",
        );
        assert_bad_request(
            br#"{"conversation_id":"c","user_id":"a","text":"x","sent_at_ms":1700000000}"#,
            "`sent_at_ms` must be unix milliseconds",
        );
    }

    #[test]
    fn rejects_bad_chat_type() {
        for kind in [r#""channel""#, r#""Direct""#, "1", "true"] {
            let body =
                format!(r#"{{"conversation_id":"c","user_id":"a","text":"x","chat_type":{kind}}}"#);
            assert_bad_request(body.as_bytes(), "`chat_type`");
        }
    }

    #[test]
    fn a_body_with_an_action_is_a_press() {
        let body = br#"{"conversation_id":"c1","user_id":"alice","action":"k:7f3a9c",
            "message_id":"p9","on_message_id":"abcd12.0","thread_id":7,"chat_type":"group"}"#;
        let Ok(WebhookInbound::Press(press)) = parse_request(body) else {
            panic!("not a press: {:?}", parse_request(body))
        };
        assert_eq!(
            press,
            Press {
                route: Route {
                    channel: "webhook".into(),
                    account: String::new(),
                    chat_id: "c1".into(),
                    thread_id: Some("7".into()),
                    reply_to_message_id: None,
                    chat_type: ChatType::Group,
                },
                sender_id: "alice".into(),
                action: "k:7f3a9c".into(),
                press_id: "p9".into(),
                on_message_id: Some("abcd12.0".into()),
            }
        );
        let minimal =
            br#"{"conversation_id":"c1","user_id":"alice","action":"t:1","message_id":"p1"}"#;
        let Ok(WebhookInbound::Press(press)) = parse_request(minimal) else {
            panic!("not a press")
        };
        assert_eq!(press.route.chat_type, ChatType::Direct);
        assert_eq!((press.press_id.as_str(), press.on_message_id), ("p1", None));
        // `"action": null` is no action: a message, which then needs its text.
        assert!(matches!(
            parse_request(BODY),
            Ok(WebhookInbound::Message(message)) if message.text == "hi"
        ));
        let null_action = br#"{"conversation_id":"c","user_id":"a","action":null,"text":"x"}"#;
        assert!(matches!(
            parse_request(null_action),
            Ok(WebhookInbound::Message(_))
        ));
    }

    #[test]
    fn a_bad_press_names_its_field() {
        let refused = |body: &str, needle: &str| match parse_request(body.as_bytes()) {
            Err(err @ WebhookError::BadRequest(_)) => {
                assert!(err.to_string().contains(needle), "{err} lacks {needle}")
            }
            other => panic!("expected BadRequest for {body}, got {other:?}"),
        };
        refused(
            r#"{"conversation_id":"c","user_id":"a","action":""}"#,
            "`action` is empty",
        );
        refused(
            r#"{"conversation_id":"c","user_id":"a","action":5}"#,
            "`action` must be a string",
        );
        let long = format!(
            r#"{{"conversation_id":"c","user_id":"a","action":"{}"}}"#,
            "k".repeat(65)
        );
        refused(&long, "`action` is over 64 bytes");
        refused(r#"{"user_id":"a","action":"k"}"#, "`conversation_id`");
        refused(r#"{"conversation_id":"c","action":"k"}"#, "`user_id`");
        refused(
            r#"{"conversation_id":"c","user_id":"a","action":"k","message_id":[1]}"#,
            "`message_id` must be",
        );
        refused(
            r#"{"conversation_id":"c","user_id":"a","action":"k","message_id":"p","on_message_id":{}}"#,
            "`on_message_id` must be",
        );
        refused(
            r#"{"conversation_id":"c","user_id":"a","action":"k","chat_type":"channel"}"#,
            "`chat_type`",
        );
        refused(
            r#"{"conversation_id":"c","user_id":"a","action":"k"}"#,
            "`message_id`: a press names its own id",
        );
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_parsed_or_refused_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_inbound(&body);
        }

        #[test]
        fn well_formed_messages_keep_their_fields(
            conversation in "[a-zA-Z0-9_-]{1,40}",
            user in "[a-zA-Z0-9_.@-]{1,40}",
            text in "(?s).{0,200}",
        ) {
            let body = serde_json::json!({"conversation_id": conversation, "user_id": user, "text": text});
            let message = parse_inbound(body.to_string().as_bytes()).unwrap();
            proptest::prop_assert_eq!(message.route.chat_id, conversation);
            proptest::prop_assert_eq!(message.sender_id, user);
            proptest::prop_assert_eq!(message.text, text);
        }
    }
}
