//! Outbound delivery: one signed POST per chunk to the configured callback URL, and one per
//! edit of a message sent with buttons (`"edit_of"`: the message's idempotency key, which
//! [`Channel::send`] returns as its platform id). Also the channel's entry point for inbound
//! requests ([`WebhookChannel::authenticate`]).

use std::error::Error as _;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use execrelay_channel::{
    Button, Channel, CheckOutcome, Edit, EditOutcome, OutboundChunk, SendOutcome, TextLimit,
    TextUnit,
};
use serde::Serialize;

use crate::config::{WebhookConfig, redact_url};
use crate::errors::WebhookError;
use crate::inbound::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookInbound, parse_request, sign, verify_request,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Used when a 429 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// A misbehaving receiver must not park a chat's queue for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How much of an error response's body goes into the delivery's last error.
const ERROR_BODY_CHARS: usize = 200;

/// The generic webhook as a [`Channel`]. `Debug` prints no secret and no URL tokens.
pub struct WebhookChannel {
    config: WebhookConfig,
    client: reqwest::Client,
}

impl fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The JSON body of an outbound POST.
#[derive(Serialize)]
struct OutboundBody<'a> {
    conversation_id: &'a str,
    text: &'a str,
    idempotency_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    /// `[{"id", "label"}]`; left out when empty, so a body without buttons reads as before.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    actions: &'a [Button],
}

/// The JSON body of an edit: the message named by `edit_of` (its send's idempotency key) now
/// reads `text` with `actions` under it; an empty list removes them, so it is always sent.
#[derive(Serialize)]
struct EditBody<'a> {
    conversation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<&'a str>,
    text: &'a str,
    edit_of: &'a str,
    actions: &'a [Button],
}

impl WebhookChannel {
    /// Builds the channel. Fails on an empty secret (nothing could be verified), a zero
    /// `max_chars`, or a callback URL that is not absolute http(s).
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        if config.secret.is_empty() {
            return Err(WebhookError::Config("the webhook secret is empty".into()));
        }
        if config.max_chars == 0 {
            return Err(WebhookError::Config("max_chars must be at least 1".into()));
        }
        if let Some(url) = &config.callback_url {
            crate::config::require_http_url(url, "callback_url")?;
        }
        let client = reqwest::Client::builder()
            // The callback is usually local or on a private network; an ambient proxy
            // variable must not reroute signed traffic.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirected POST may be replayed as GET or leak the signature elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("execrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| WebhookError::Config(format!("HTTP client: {err}")))?;
        Ok(WebhookChannel { config, client })
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Verifies and parses one inbound request (a message or a press), for the relay's
    /// `POST /webhook` handler.
    pub fn authenticate(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<WebhookInbound, WebhookError> {
        verify_request(
            &self.config.secret,
            timestamp,
            signature,
            body,
            now_unix,
            self.config.max_skew,
        )?;
        // Without a message id, a captured request could be replayed inside the timestamp
        // window: its signature (unique per timestamp and body) serves as the id instead, in
        // lowercase, since hex in either case verifies and a replay must not pass as new. A
        // press always names its own id (a bridge's retry is signed anew).
        let signature_id = || signature.map(|sig| format!("sig:{}", sig.to_ascii_lowercase()));
        Ok(match parse_request(body)? {
            WebhookInbound::Message(mut message) => {
                if message.platform_message_id.is_none() {
                    message.platform_message_id = signature_id();
                }
                WebhookInbound::Message(message)
            }
            press @ WebhookInbound::Press(_) => press,
        })
    }

    /// POSTs `body` to `url`, signed; the HTTP response, or why none came (redacted).
    pub(crate) async fn post_signed(
        &self,
        url: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, String> {
        let timestamp = now_unix().to_string();
        let signature = sign(self.config.secret.expose(), &timestamp, &body);
        self.client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|err| describe_network_error(err, url))
    }
}

fn retry_after_of(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
}

fn describe_status(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason());
    match reason {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

/// Maps an edit's HTTP status (and `Retry-After`) to what the relay does next: 2xx edited;
/// 429 pause the chat's edits for the header's seconds (as [`classify`]); 404 and 410 the
/// message is gone; 408 and 5xx transient; other statuses (3xx included) refused.
pub fn classify_edit(status: u16, retry_after_header: Option<&str>) -> EditOutcome {
    match status {
        200..=299 => EditOutcome::Edited,
        429 => EditOutcome::RetryAfter(parse_retry_after(retry_after_header)),
        404 | 410 => EditOutcome::Gone(describe_status(status)),
        408 | 500..=599 => EditOutcome::Transient(describe_status(status)),
        _ => EditOutcome::Failed(describe_status(status)),
    }
}

/// Maps a callback's HTTP status (and `Retry-After` header) to what the outbox does next.
///
/// 2xx delivered; 429 retry after the header's seconds (integer or decimal; 5 s when missing or
/// unparseable, at most 1 h); 408 and 5xx transient; other statuses permanent, including 3xx
/// since redirects are not followed.
pub fn classify(status: u16, retry_after_header: Option<&str>) -> SendOutcome {
    let describe = || describe_status(status);
    match status {
        200..=299 => SendOutcome::Delivered { platform_id: None },
        429 => SendOutcome::RetryAfter(parse_retry_after(retry_after_header)),
        408 | 500..=599 => SendOutcome::Transient(describe()),
        _ => SendOutcome::Permanent(describe()),
    }
}

fn parse_retry_after(header: Option<&str>) -> Duration {
    // HTTP-date forms are rare from webhooks; they fall back to the default.
    header
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map_or(DEFAULT_RETRY_AFTER, |secs| {
            Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
        })
}

/// Seconds since the epoch; a clock before 1970 signs as 0 rather than failing the send.
fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// A network error with its causes, without the URL (reqwest's Display would include it).
fn describe_network_error(err: reqwest::Error, url: &str) -> String {
    let err = err.without_url();
    let mut text = format!("POST to {} failed: {err}", redact_url(url));
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The start of an error response's body, to explain a failure; read errors are ignored.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    // Bounded read: an error page may be large and we keep only a snippet.
    while bytes.len() < ERROR_BODY_CHARS * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.chars().take(ERROR_BODY_CHARS).collect()
}

#[async_trait::async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        "webhook"
    }

    fn limit(&self) -> TextLimit {
        TextLimit {
            unit: TextUnit::Chars,
            max: self.config.max_chars,
        }
    }

    /// A signed `{"probe": true}` to the callback URL (`check.rs`).
    async fn check(&self) -> CheckOutcome {
        crate::check::probe(self).await
    }

    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome {
        let Some(url) = self.config.callback_url.as_deref() else {
            return SendOutcome::Unconfigured(
                "no callback_url configured for the webhook channel".into(),
            );
        };
        let body = OutboundBody {
            conversation_id: &chunk.route.chat_id,
            text: chunk.text,
            idempotency_key: chunk.idempotency_key,
            thread_id: chunk.route.thread_id.as_deref(),
            reply_to: chunk.route.reply_to_message_id.as_deref(),
            actions: chunk.buttons,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(err) => return SendOutcome::Permanent(format!("encoding the body: {err}")),
        };
        let response = match self.post_signed(url, body).await {
            Ok(response) => response,
            Err(why) => return SendOutcome::Transient(why),
        };
        match classify(response.status().as_u16(), retry_after_of(&response)) {
            // The receiver names the message by its key, and so do our edits (`edit_of`).
            SendOutcome::Delivered { .. } => SendOutcome::Delivered {
                platform_id: Some(chunk.idempotency_key.to_string()),
            },
            SendOutcome::Transient(why) => {
                SendOutcome::Transient(with_excerpt(why, body_excerpt(response).await))
            }
            SendOutcome::Permanent(why) => {
                SendOutcome::Permanent(with_excerpt(why, body_excerpt(response).await))
            }
            outcome => outcome,
        }
    }

    /// One signed POST of an [`EditBody`] to the callback URL. The relay edits only where the
    /// operator said the receiver takes edits (`[channels.webhook] progress`).
    async fn edit(&self, edit: Edit<'_>) -> EditOutcome {
        let Some(url) = self.config.callback_url.as_deref() else {
            return EditOutcome::Unsupported;
        };
        let body = EditBody {
            conversation_id: &edit.route.chat_id,
            thread_id: edit.route.thread_id.as_deref(),
            text: edit.text,
            edit_of: edit.message_id,
            actions: edit.buttons,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(err) => return EditOutcome::Failed(format!("encoding the body: {err}")),
        };
        let response = match self.post_signed(url, body).await {
            Ok(response) => response,
            Err(why) => return EditOutcome::Transient(why),
        };
        match classify_edit(response.status().as_u16(), retry_after_of(&response)) {
            EditOutcome::Transient(why) => {
                EditOutcome::Transient(with_excerpt(why, body_excerpt(response).await))
            }
            EditOutcome::Gone(why) => {
                EditOutcome::Gone(with_excerpt(why, body_excerpt(response).await))
            }
            EditOutcome::Failed(why) => {
                EditOutcome::Failed(with_excerpt(why, body_excerpt(response).await))
            }
            outcome => outcome,
        }
    }
}

fn with_excerpt(why: String, excerpt: String) -> String {
    if excerpt.is_empty() {
        why
    } else {
        format!("{why}: {excerpt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use execrelay_channel::{ChatType, Route, Secret};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn is_transient(outcome: &SendOutcome, status: &str) -> bool {
        matches!(outcome, SendOutcome::Transient(why) if why.starts_with(status))
    }

    fn is_permanent(outcome: &SendOutcome, status: &str) -> bool {
        matches!(outcome, SendOutcome::Permanent(why) if why.starts_with(status))
    }

    #[test]
    fn classify_success() {
        for status in [200, 201, 204, 299] {
            assert_eq!(
                classify(status, None),
                SendOutcome::Delivered { platform_id: None }
            );
        }
    }

    #[test]
    fn classify_rate_limit() {
        let retry = |header| classify(429, header);
        assert_eq!(
            retry(Some("7")),
            SendOutcome::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(retry(Some(" 0 ")), SendOutcome::RetryAfter(Duration::ZERO));
        assert_eq!(
            retry(Some("1.5")),
            SendOutcome::RetryAfter(Duration::from_millis(1500))
        );
        assert_eq!(
            retry(Some("999999")),
            SendOutcome::RetryAfter(Duration::from_secs(3600))
        );
        for unusable in [
            None,
            Some(""),
            Some("soon"),
            Some("-3"),
            Some("NaN"),
            Some("inf"),
        ] {
            assert_eq!(
                retry(unusable),
                SendOutcome::RetryAfter(Duration::from_secs(5))
            );
        }
        let date = Some("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry(date), SendOutcome::RetryAfter(Duration::from_secs(5)));
    }

    #[test]
    fn classify_transient() {
        assert!(is_transient(
            &classify(500, None),
            "HTTP 500 Internal Server Error"
        ));
        assert!(is_transient(
            &classify(503, Some("9")),
            "HTTP 503 Service Unavailable"
        ));
        assert!(is_transient(
            &classify(408, None),
            "HTTP 408 Request Timeout"
        ));
        assert!(is_transient(&classify(599, None), "HTTP 599"));
    }

    #[test]
    fn classify_permanent() {
        for (status, text) in [
            (400, "HTTP 400 Bad Request"),
            (403, "HTTP 403 Forbidden"),
            (404, "HTTP 404 Not Found"),
            (410, "HTTP 410 Gone"),
            (301, "HTTP 301 Moved Permanently"),
        ] {
            assert!(is_permanent(&classify(status, None), text), "{status}");
        }
    }

    #[test]
    fn classify_edit_outcomes() {
        for status in [200, 204] {
            assert_eq!(classify_edit(status, None), EditOutcome::Edited);
        }
        assert_eq!(
            classify_edit(429, Some("3")),
            EditOutcome::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            classify_edit(429, None),
            EditOutcome::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(
            classify_edit(404, None),
            EditOutcome::Gone("HTTP 404 Not Found".into())
        );
        assert_eq!(
            classify_edit(410, None),
            EditOutcome::Gone("HTTP 410 Gone".into())
        );
        for status in [408, 500, 503] {
            assert!(matches!(
                classify_edit(status, None),
                EditOutcome::Transient(_)
            ));
        }
        for status in [301, 400, 401, 403, 409, 422] {
            assert!(
                matches!(classify_edit(status, None), EditOutcome::Failed(_)),
                "{status}"
            );
        }
    }

    #[test]
    fn a_press_without_an_id_is_named_by_its_signature_like_a_message() {
        let channel = channel(None);
        let now = now_unix();
        let ts = now.to_string();
        // A press without its own id is refused: a bridge's retry, signed anew, would be a
        // second press.
        let body = br#"{"conversation_id":"c1","user_id":"alice","action":"k:1"}"#;
        let signature = sign("s3cret", &ts, body);
        match channel.authenticate(Some(&ts), Some(&signature), body, now) {
            Err(WebhookError::BadRequest(why)) => assert!(why.contains("message_id"), "{why}"),
            other => panic!("{other:?}"),
        }
        let named =
            br#"{"conversation_id":"c1","user_id":"alice","action":"k:1","message_id":"p1"}"#;
        let signature = sign("s3cret", &ts, named);
        match channel.authenticate(Some(&ts), Some(&signature), named, now) {
            Ok(WebhookInbound::Press(press)) => assert_eq!(press.press_id, "p1"),
            other => panic!("{other:?}"),
        }
        // The signature of one body does not pass another.
        let forged = channel.authenticate(Some(&ts), Some(&signature), body, now);
        assert!(matches!(forged, Err(WebhookError::Unauthorized(_))));
    }

    #[test]
    fn new_validates_config() {
        let with = |secret: &str, url: Option<&str>, max_chars| WebhookConfig {
            callback_url: url.map(String::from),
            max_chars,
            ..WebhookConfig::new(Secret::new(secret))
        };
        assert!(WebhookChannel::new(with("k", None, 10)).is_ok());
        assert!(WebhookChannel::new(with("k", Some("https://x.example/h?t=1"), 10)).is_ok());
        for bad in [
            with("", None, 10),
            with("k", None, 0),
            with("k", Some("ftp://x.example/"), 10),
            with("k", Some("/relative?token=abc"), 10),
        ] {
            let err = WebhookChannel::new(bad).unwrap_err();
            assert!(matches!(err, WebhookError::Config(_)));
            assert!(!err.to_string().contains("abc"), "{err}");
        }
        let channel = WebhookChannel::new(with("hunter2", Some("http://h/?t=tok"), 10)).unwrap();
        let shown = format!("{channel:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok"),
            "{shown}"
        );
        assert_eq!(channel.name(), "webhook");
        assert_eq!(
            channel.limit(),
            TextLimit {
                unit: TextUnit::Chars,
                max: 10
            }
        );
    }

    fn route(thread: Option<&str>, reply: Option<&str>) -> Route {
        Route {
            channel: "webhook".into(),
            account: String::new(),
            chat_id: "c1".into(),
            thread_id: thread.map(String::from),
            reply_to_message_id: reply.map(String::from),
            chat_type: ChatType::Direct,
        }
    }

    fn channel(url: Option<String>) -> WebhookChannel {
        let config = WebhookConfig {
            callback_url: url,
            ..WebhookConfig::new(Secret::new("s3cret"))
        };
        WebhookChannel::new(config).unwrap()
    }

    /// Serves one HTTP request with `response`, handing back the raw request.
    async fn one_shot_server(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read headers, then as many body bytes as Content-Length says.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (format!("http://{addr}/callback?token=qs-secret"), task)
    }

    #[tokio::test]
    async fn send_posts_signed_json() {
        let (url, server) =
            one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        let channel = channel(Some(url));
        let route = route(Some("t1"), Some("m5"));
        let chunk = OutboundChunk {
            route: &route,
            text: "héllo 😀",
            idempotency_key: "msg-1/0",
            index: 0,
            count: 1,
            buttons: &[],
        };
        assert_eq!(
            channel.send(chunk).await,
            SendOutcome::Delivered {
                platform_id: Some("msg-1/0".into())
            }
        );

        let request = server.await.unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /callback?token=qs-secret HTTP/1.1"),
            "{head}"
        );
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    l.split_once(": ")
                        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                })
                .map(|(_, v)| v.to_string())
        };
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"conversation_id": "c1", "text": "héllo 😀",
                "idempotency_key": "msg-1/0", "thread_id": "t1", "reply_to": "m5"})
        );
        let ts = header(TIMESTAMP_HEADER).unwrap();
        let now = now_unix();
        verify_request(
            &Secret::new("s3cret"),
            Some(&ts),
            header(SIGNATURE_HEADER).as_deref(),
            body.as_bytes(),
            now,
            Duration::from_secs(300),
        )
        .unwrap();
    }

    fn header_of(head: &str, name: &str) -> Option<String> {
        head.lines()
            .find_map(|l| {
                l.split_once(": ")
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.to_string())
    }

    #[tokio::test]
    async fn buttons_ride_along_as_actions_and_edits_name_the_message() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let buttons = [
            Button {
                id: "t:7f3a9c".into(),
                label: "Tail".into(),
            },
            Button {
                id: "k:7f3a9c".into(),
                label: "Kill".into(),
            },
        ];
        let route = route(Some("t1"), Some("m5"));
        let (url, server) = one_shot_server(ok).await;
        let chunk = OutboundChunk {
            route: &route,
            text: "started job 7f3a9c: make",
            idempotency_key: "abcd1.0",
            index: 0,
            count: 1,
            buttons: &buttons,
        };
        let sent = channel(Some(url)).send(chunk).await;
        let SendOutcome::Delivered {
            platform_id: Some(message_id),
        } = sent
        else {
            panic!("{sent:?}")
        };
        let request = server.await.unwrap();
        let (_, body) = request.split_once("\r\n\r\n").unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            json["actions"],
            serde_json::json!([{"id": "t:7f3a9c", "label": "Tail"}, {"id": "k:7f3a9c", "label": "Kill"}])
        );

        let (url, server) = one_shot_server(ok).await;
        let edit = Edit {
            route: &route,
            message_id: &message_id,
            text: "started job 7f3a9c: make\nfinished",
            buttons: &[],
        };
        assert_eq!(
            channel(Some(url)).edit(edit.clone()).await,
            EditOutcome::Edited
        );
        let request = server.await.unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /callback?token=qs-secret HTTP/1.1"),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"conversation_id": "c1", "thread_id": "t1",
                "text": "started job 7f3a9c: make\nfinished", "edit_of": "abcd1.0",
                "actions": []})
        );
        verify_request(
            &Secret::new("s3cret"),
            header_of(head, TIMESTAMP_HEADER).as_deref(),
            header_of(head, SIGNATURE_HEADER).as_deref(),
            body.as_bytes(),
            now_unix(),
            Duration::from_secs(300),
        )
        .expect("edits are signed like sends");

        let (url, _server) = one_shot_server(
            "HTTP/1.1 410 Gone\r\ncontent-length: 11\r\nconnection: close\r\n\r\nno such one",
        )
        .await;
        assert_eq!(
            channel(Some(url)).edit(edit.clone()).await,
            EditOutcome::Gone("HTTP 410 Gone: no such one".into())
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/cb?token=qs-secret");
        match channel(Some(url)).edit(edit.clone()).await {
            EditOutcome::Transient(why) => assert!(!why.contains("qs-secret"), "{why}"),
            other => panic!("expected Transient, got {other:?}"),
        }
        assert_eq!(channel(None).edit(edit).await, EditOutcome::Unsupported);
    }

    #[tokio::test]
    async fn send_maps_errors() {
        let (url, server) = one_shot_server(
            "HTTP/1.1 410 Gone\r\ncontent-length: 9\r\nconnection: close\r\n\r\nchat gone",
        )
        .await;
        let route = route(None, None);
        let chunk = OutboundChunk {
            route: &route,
            text: "x",
            idempotency_key: "k",
            index: 0,
            count: 1,
            buttons: &[],
        };
        let outcome = channel(Some(url)).send(chunk.clone()).await;
        assert_eq!(
            outcome,
            SendOutcome::Permanent("HTTP 410 Gone: chat gone".into())
        );
        let request = server.await.unwrap();
        assert!(!request.contains("thread_id") && !request.contains("reply_to"));

        let (url, _server) = one_shot_server(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let outcome = channel(Some(url)).send(chunk.clone()).await;
        assert_eq!(outcome, SendOutcome::RetryAfter(Duration::from_secs(2)));

        // A port nobody listens on: bind, note the port, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/cb?token=qs-secret");
        match channel(Some(url)).send(chunk.clone()).await {
            SendOutcome::Transient(why) => {
                assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
                assert!(!why.contains("qs-secret") && !why.contains("/cb"), "{why}");
            }
            other => panic!("expected Transient, got {other:?}"),
        }

        assert_eq!(
            channel(None).send(chunk).await,
            SendOutcome::Unconfigured("no callback_url configured for the webhook channel".into())
        );
    }
}
