//! The local HTTP API and the generic webhook's inbound endpoint.
//!
//! `/healthz` is open; `/v1/*` and `/metrics` require `Authorization: Bearer <token>`: `http.api_token`, or
//! the token generated into the data directory, which only the relay's user (and root) can
//! read (and then only local clients are answered); no web page but the relay's own console
//! (`serve::console`, same origin) is ever answered; `/webhook` is authenticated
//! by its HMAC signature instead. Handlers translate HTTP to calls on the store,
//! the inbound sink and the heartbeat; they hold no state of their own. A button press (a
//! webhook body with `"action"`, a Feishu `card.action.trigger`) goes to
//! [`InboundSink::press`](execrelay_channel::InboundSink::press), and its answer becomes the
//! HTTP response in the shape the adapter gives (`answer_press` of each).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use execrelay_channel::{Accepted, InboundMessage, Secret};
use execrelay_webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, WebhookInbound};
use serde::Deserialize;
use serde_json::json;

use crate::deliver::heartbeat::{Heartbeat, Reason};
use crate::deliver::outbox::Outbox;
use crate::ingest::inbound::{InboundHandler, LOCAL_USER};
use crate::ingest::local::LocalChannel;
use crate::run::exec::ExecRuntime;
use crate::serve::origin::{is_local_client, is_own_page_or_no_page};
use crate::store::{DeliveryRef, JobRecord, NewEvent, Revived, Store, StoreError};
use crate::util::log_throttle::LogThrottle;

pub const LOCAL_SESSION: &str = "user:local:local";
const MAX_EVENT_TEXT: usize = 64 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub inbound: Arc<InboundHandler>,
    pub heartbeat: Heartbeat,
    pub outbox: Outbox,
    pub local: Option<Arc<LocalChannel>>,
    /// For a job's tail and [Kill] (`serve::job_actions`).
    pub exec: ExecRuntime,
    pub webhook: Option<Arc<WebhookChannel>>,
    /// The path Feishu posts events to, and the channel that verifies them.
    pub feishu: Option<FeishuEndpoint>,
    /// Every `/v1` request presents it: configured, or generated into the data directory.
    pub api_token: Secret,
    /// The token is the generated one: the API also answers only clients on this machine.
    pub local_only: bool,
    pub max_queued: usize,
    /// Ends long-lived responses (the chat stream) so that shutdown is not held open.
    pub stop: execrelay_channel::CancellationToken,
    /// Rejected webhook and Feishu requests: at most a line a second, whatever the flood.
    pub rejections: Arc<LogThrottle>,
    /// Requests that fail authentication are answered at a bounded pace.
    pub tarpit: Arc<crate::serve::tarpit::Tarpit>,
    /// The console's signed calls taken so far (`serve::token_proof`).
    pub proofs: Arc<crate::serve::token_proof::Proofs>,
}

#[cfg(feature = "feishu")]
pub type FeishuEndpoint = (String, Arc<execrelay_webhook::feishu::FeishuChannel>);
/// Without the feature there is no Feishu endpoint to have.
#[cfg(not(feature = "feishu"))]
pub type FeishuEndpoint = (String, std::convert::Infallible);

/// A platform's request body, up to [`PLATFORM_BODY_LIMIT`]; past it, a JSON 413 like every
/// other refusal.
async fn platform_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, PLATFORM_BODY_LIMIT)
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {PLATFORM_BODY_LIMIT} bytes"),
            )
        })
}

/// What a platform may post: a message (commands stop at 64 KiB) with its envelope, encrypted
/// and base64'd for Feishu. Anything larger is refused (413) before it is read whole.
const PLATFORM_BODY_LIMIT: usize = 512 * 1024;

pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/tail", get(crate::serve::job_actions::tail))
        .route(
            "/jobs/{id}/tail/stream",
            get(crate::serve::job_actions::tail_stream),
        )
        .route("/jobs/{id}/kill", post(crate::serve::job_actions::kill))
        .route("/inbox/{id}", get(get_inbox))
        .route("/events", get(list_events).post(post_event))
        .route("/events/{id}", delete(drop_event))
        .route("/outbox", get(list_outbox))
        .route("/outbox/retry", post(retry_all_dead))
        .route("/outbox/{id}/retry", post(retry_dead))
        .route("/outbox/{id}", delete(drop_outbox))
        .route("/routes", get(list_routes))
        .route("/chat", post(post_chat))
        .route("/chat/stream", get(chat_stream))
        .route("/chat/ack", post(chat_ack))
        // The token first: no body is read for a client that has none.
        .layer(middleware::from_fn(read_body_within))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    let mut signed = Router::new().route("/webhook", post(webhook));
    if let Some((path, _)) = &state.feishu {
        signed = signed.route(path, post(feishu_events));
    }
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .merge(signed.layer(middleware::from_fn(read_body_within)))
        .nest("/v1", v1)
        .merge(metrics)
        .merge(crate::serve::console::routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), pace_refusals))
        .with_state(state)
}

/// The Prometheus text format (`serve::metrics`), with the same token as `/v1/*`.
async fn metrics(State(state): State<ApiState>) -> Response {
    match crate::serve::metrics::render(&state.store).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => store_error(err),
    }
}

/// Nothing here: as cheap to ask again as a forged webhook, so paced like one.
async fn unknown_route(State(state): State<ApiState>) -> Response {
    state.tarpit.hold().await;
    error(StatusCode::NOT_FOUND, "no such route")
}

async fn wrong_method(State(state): State<ApiState>) -> Response {
    state.tarpit.hold().await;
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method",
    )
}

/// A request body must arrive whole within this: a client that sends one slowly (or stops
/// half-way) holds a connection no longer.
const BODY_READ: Duration = Duration::from_secs(10);
/// No route takes more; platforms' own bound is smaller ([`PLATFORM_BODY_LIMIT`]).
const ANY_BODY_LIMIT: usize = 1024 * 1024;

/// Reads every request's body (all are small) within [`BODY_READ`] before its handler runs;
/// one announced larger than [`ANY_BODY_LIMIT`] is refused unread.
async fn read_body_within(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > ANY_BODY_LIMIT as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {ANY_BODY_LIMIT} bytes"),
        );
    }
    let (parts, body) = request.into_parts();
    let bytes =
        match tokio::time::timeout(BODY_READ, axum::body::to_bytes(body, ANY_BODY_LIMIT)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is over {ANY_BODY_LIMIT} bytes"),
                );
            }
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {}s",
                        BODY_READ.as_secs()
                    ),
                );
            }
        };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Feishu's event callbacks: verified and decrypted by the channel, then stored like any
/// inbound message before the 200 (Feishu retries what is not acknowledged within 3 s, and
/// the relay dedupes on `event_id`). A card press is answered 200 with a toast within Feishu's
/// 3 s, whatever the relay made of it.
#[cfg(feature = "feishu")]
async fn feishu_events(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    let body = match platform_body(body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    use execrelay_webhook::feishu::{
        FeishuEvent, FeishuHeaders, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
    };
    let Some((_, channel)) = &state.feishu else {
        return error(StatusCode::NOT_FOUND, "the feishu channel is not enabled");
    };
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let received = FeishuHeaders {
        timestamp: header_text(TIMESTAMP_HEADER),
        nonce: header_text(NONCE_HEADER),
        signature: header_text(SIGNATURE_HEADER),
    };
    match channel.receive(received, &body, chrono::Utc::now().timestamp()) {
        Ok(FeishuEvent::Challenge(challenge)) => {
            Json(json!({ "challenge": challenge })).into_response()
        }
        Ok(FeishuEvent::Ignored(kind)) => {
            tracing::debug!(event_type = %kind, "feishu: an event the relay does not act on");
            Json(json!({"ok": true})).into_response()
        }
        Ok(FeishuEvent::Message(message)) => accept(&state, message, Caller::Platform).await,
        Ok(FeishuEvent::Press(press)) => {
            let sink: Arc<dyn execrelay_channel::InboundSink> = state.inbound.clone();
            Json(execrelay_webhook::feishu::answer_press(sink, press).await).into_response()
        }
        Err(err) => {
            if let Some(held_back) = state.rejections.admit() {
                tracing::warn!(error = %err, held_back, "feishu: rejected a request");
            }
            if err.http_status() == 401 {
                crate::metrics::signature_failure("feishu");
            }
            let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            error(status, err.to_string())
        }
    }
}

#[cfg(not(feature = "feishu"))]
async fn feishu_events() -> Response {
    error(StatusCode::NOT_FOUND, "built without the feishu channel")
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

pub(crate) fn store_error(err: StoreError) -> Response {
    if err.is_disk_full() {
        return error(StatusCode::INSUFFICIENT_STORAGE, err.to_string());
    }
    match err {
        StoreError::NotFound(what) => return error(StatusCode::NOT_FOUND, what),
        StoreError::Conflict(what) => return error(StatusCode::CONFLICT, what),
        _ => {}
    }
    tracing::error!(error = %err, "api: store error");
    error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
}

/// Every answer that refuses a request (4xx: a bad signature or token, a body too large, no
/// such route), and every health check, waits its turn in the tarpit: each costs an attacker
/// nothing to ask for again, so none may be had faster than the tarpit's pace.
async fn pace_refusals(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let health_check = request.uri().path() == "/healthz";
    let response = next.run(request).await;
    if health_check || response.status().is_client_error() {
        state.tarpit.hold().await;
    }
    response
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if !is_own_page_or_no_page(request.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            "the API answers no web page but the relay's own console",
        );
    }
    if state.local_only && !is_local_client(request.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            "without http.api_token the API only answers local clients",
        );
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The CLI and scripts present the token; the console a proof of it for this request.
    let authorized = match authorization.strip_prefix(crate::serve::token_proof::SCHEME) {
        Some(proof) => {
            // As the page asked for it: a nested router sees its path without `/v1`.
            let uri = request
                .extensions()
                .get::<axum::extract::OriginalUri>()
                .map_or(request.uri(), |original| &original.0);
            let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            state.proofs.admit(
                &state.api_token,
                proof,
                request.method().as_str(),
                target,
                chrono::Utc::now().timestamp(),
            )
        }
        None => authorization
            .strip_prefix("Bearer ")
            .is_some_and(|token| state.api_token.matches(token.as_bytes())),
    };
    if !authorized {
        let hint = if state.local_only {
            "missing or wrong bearer token: the API is its user's alone (the token is in the \
             data directory's api.token, which execrelay's own commands read)"
        } else {
            "missing or wrong bearer token"
        };
        return error(StatusCode::UNAUTHORIZED, hint);
    }
    next.run(request).await
}

async fn webhook(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    let body = match platform_body(body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let Some(channel) = &state.webhook else {
        return error(StatusCode::NOT_FOUND, "the webhook channel is not enabled");
    };
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let inbound = match channel.authenticate(
        header_text(TIMESTAMP_HEADER),
        header_text(SIGNATURE_HEADER),
        &body,
        now,
    ) {
        Ok(inbound) => inbound,
        Err(err) => {
            if let Some(held_back) = state.rejections.admit() {
                tracing::warn!(error = %err, held_back, "webhook: rejected a request");
            }
            if err.http_status() == 401 {
                crate::metrics::signature_failure("webhook");
            }
            let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return error(status, err.to_string());
        }
    };
    match inbound {
        WebhookInbound::Message(message) => accept(&state, message, Caller::Platform).await,
        WebhookInbound::Press(press) => {
            let (status, body) =
                execrelay_webhook::answer_press(state.inbound.as_ref(), press).await;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (status, Json(body)).into_response()
        }
    }
}

/// Who handed a message over, which decides how the answer reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Platform,
    LocalChat,
}

/// A message the relay declined to store (its disk is full) and told its chat so: a platform
/// must get a 2xx, or it would redeliver the message into a relay that could then run it after
/// all; only the local chat client hears 507. Only the local chat client hears the inbox id
/// (`inbox_id`), by which it follows what its message produced (`GET /v1/inbox/{id}`).
async fn accept(state: &ApiState, message: InboundMessage, caller: Caller) -> Response {
    let refused_status = match caller {
        Caller::Platform => StatusCode::OK,
        Caller::LocalChat => StatusCode::INSUFFICIENT_STORAGE,
    };
    match state.inbound.accept_with_id(message).await {
        Ok((Accepted::Refused, _)) => (
            refused_status,
            Json(json!({
                "ok": false,
                "refused": true,
                "error": "not stored: the relay's disk is full; nothing was run",
            })),
        )
            .into_response(),
        Ok((accepted, inbox_id)) => {
            let mut body = json!({
                "ok": true,
                "duplicate": accepted == Accepted::Duplicate,
            });
            if caller == Caller::LocalChat {
                body["inbox_id"] = json!(inbox_id);
            }
            Json(body).into_response()
        }
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

fn job_json(job: &JobRecord) -> serde_json::Value {
    json!({
        "id": job.id,
        "session": job.session,
        "requester": job.requester,
        "command": job.command,
        "state": job.state.as_str(),
        "exit_code": job.exit_code,
        "signal": job.signal,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "detail": job.detail,
    })
}

fn delivery_json(delivery: &Option<DeliveryRef>) -> serde_json::Value {
    match delivery {
        Some(d) => json!({
            "id": d.id,
            "key": d.key,
            "channel": d.channel,
            "state": d.state,
            "chunks": d.chunks,
            "finished_at": d.finished_at,
        }),
        None => serde_json::Value::Null,
    }
}

async fn list_jobs(State(state): State<ApiState>) -> Response {
    match state.store.recent_jobs(None, 200).await {
        Ok(jobs) => {
            let jobs: Vec<_> = jobs.iter().map(job_json).collect();
            Json(json!({"jobs": jobs})).into_response()
        }
        Err(err) => store_error(err),
    }
}

/// One job, and where its completion is: `null` while it runs, then its event and, once
/// consumed, the message carrying it (a chat client waits for that message's key).
async fn get_job(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let job = match state.store.job(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(err) => return store_error(err),
    };
    let completion = match state.store.completion_status(&id).await {
        Ok(completion) => completion,
        Err(err) => return store_error(err),
    };
    let mut body = job_json(&job);
    body["completion"] = match completion {
        Some(c) => json!({
            "event_id": c.event_id,
            "event_state": c.event_state,
            "blocked": c.blocked,
            "delivery": delivery_json(&c.delivery),
        }),
        None => serde_json::Value::Null,
    };
    Json(body).into_response()
}

/// What an inbox message (`POST /v1/chat` answers its id) produced once processed.
async fn get_inbox(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    match state.store.inbox_status(id).await {
        Ok(Some(status)) => Json(json!({
            "id": id,
            "processed": status.processed,
            "job_id": status.job_id,
            "last_reply": delivery_json(&status.last_reply),
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no inbox message {id}")),
        Err(err) => store_error(err),
    }
}

fn revived_json(revived: &[Revived]) -> serde_json::Value {
    let rows: Vec<_> = revived
        .iter()
        .map(|r| json!({"id": r.id, "was": r.was, "channel": r.channel}))
        .collect();
    json!({"retried": rows})
}

/// Wakes the workers of the channels whose dead letters are due again.
fn wake_revived(state: &ApiState, revived: &[Revived]) {
    for r in revived {
        state.outbox.wake(&r.channel);
    }
}

async fn retry_dead(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    match state.store.retry_dead(id).await {
        Ok(revived) => {
            let revived = [revived];
            wake_revived(&state, &revived);
            Json(revived_json(&revived)).into_response()
        }
        Err(err) => store_error(err),
    }
}

async fn retry_all_dead(State(state): State<ApiState>) -> Response {
    match state.store.retry_all_dead().await {
        Ok(revived) => {
            wake_revived(&state, &revived);
            Json(revived_json(&revived)).into_response()
        }
        Err(err) => store_error(err),
    }
}

async fn drop_outbox(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    match state.store.drop_outbox(id).await {
        Ok(()) => Json(json!({"dropped": id})).into_response(),
        Err(err) => store_error(err),
    }
}

async fn drop_event(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    match state.store.drop_event(id).await {
        Ok(()) => Json(json!({"dropped": id})).into_response(),
        Err(err) => store_error(err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventRequest {
    session: Option<String>,
    text: String,
    #[serde(default)]
    mode: EventMode,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum EventMode {
    #[default]
    Now,
    NextHeartbeat,
}

async fn post_event(
    State(state): State<ApiState>,
    body: Result<Json<EventRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if request.text.trim().is_empty() || request.text.len() > MAX_EVENT_TEXT {
        return error(StatusCode::BAD_REQUEST, "text must be 1 to 65536 bytes");
    }
    let session = request.session.unwrap_or_else(|| LOCAL_SESSION.into());
    let wake = (request.mode == EventMode::Now).then_some(Reason::Wake);
    let event = NewEvent {
        session: session.clone(),
        context_key: None,
        text: request.text,
        origin: None,
        wake: wake.as_ref().map(Reason::as_string),
    };
    match state.store.enqueue_event(event, state.max_queued).await {
        Ok(id) => {
            if let Some(reason) = wake {
                state.heartbeat.request(reason, Some(session));
            }
            Json(json!({"event_id": id})).into_response()
        }
        Err(err) => store_error(err),
    }
}

async fn list_events(State(state): State<ApiState>) -> Response {
    match state.store.all_queued_events().await {
        Ok(events) => {
            let events: Vec<_> = events
                .iter()
                .map(|e| {
                    json!({
                        "id": e.id,
                        "session": e.session,
                        "text": e.text,
                        "state": "queued",
                        "blocked": e.blocked,
                        "wake": e.wake,
                        "created_at": e.created_at,
                    })
                })
                .collect();
            Json(json!({"events": events})).into_response()
        }
        Err(err) => store_error(err),
    }
}

#[derive(Deserialize)]
struct OutboxQuery {
    limit: Option<usize>,
}

/// What waits to be delivered: the outbox's pending and dead rows, the channels failing as a
/// whole, and the queued events that cannot go anywhere yet (and why).
async fn list_outbox(State(state): State<ApiState>, Query(query): Query<OutboxQuery>) -> Response {
    let limit = query.limit.unwrap_or(500).min(5000);
    let (entries, events) = match (
        state.store.list_outbox(limit).await,
        state.store.all_queued_events().await,
    ) {
        (Ok(entries), Ok(events)) => (entries, events),
        (Err(err), _) | (_, Err(err)) => return store_error(err),
    };
    let deliveries: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "key": e.key,
                "channel": e.channel,
                "channel_enabled": state.outbox.channel(&e.channel).is_some(),
                "chat_id": e.chat_id,
                "state": e.state,
                "attempts": e.attempts,
                "last_error": e.last_error,
                "next_attempt_at": e.next_attempt_at,
                "dead_cause": e.dead_cause,
                "text": e.text,
            })
        })
        .collect();
    let channels: Vec<_> = state
        .outbox
        .health()
        .failing()
        .into_iter()
        .map(|(channel, failing)| {
            json!({
                "channel": channel,
                "failing_since": failing.since_ms,
                "last_error": failing.last_error,
                "tries": failing.tries,
            })
        })
        .collect();
    let blocked: Vec<_> = events
        .iter()
        .filter_map(|e| {
            let why = e.blocked.as_ref()?;
            Some(json!({
                "event_id": e.id,
                "session": e.session,
                "blocked": why,
                "created_at": e.created_at,
                "text": e.text,
            }))
        })
        .take(limit)
        .collect();
    Json(json!({"deliveries": deliveries, "failing_channels": channels, "blocked_events": blocked}))
        .into_response()
}

async fn list_routes(State(state): State<ApiState>) -> Response {
    match state.store.list_routes().await {
        Ok(routes) => {
            let routes: Vec<_> = routes
                .iter()
                .map(|(session, route)| {
                    json!({
                        "session": session,
                        "channel": route.channel,
                        "chat_id": route.chat_id,
                        "chat_type": route.chat_type.as_str(),
                        "thread_id": route.thread_id,
                    })
                })
                .collect();
            Json(json!({"routes": routes})).into_response()
        }
        Err(err) => store_error(err),
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    text: String,
    /// The client's id for this message: a resend after a lost answer is a duplicate, not a
    /// second run.
    id: Option<String>,
}

async fn post_chat(
    State(state): State<ApiState>,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if state.local.is_none() {
        return error(StatusCode::NOT_FOUND, "the local channel is not enabled");
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let message = InboundMessage {
        route: LocalChannel::route(),
        sender_id: LOCAL_USER.into(),
        text: request.text,
        platform_message_id: request.id,
        sent_at_ms: None,
        forwarded: false,
    };
    accept(&state, message, Caller::LocalChat).await
}

/// Newline-delimited JSON, one `{"text", "key", "chunk", "chunks"}` per chunk of a bot message
/// (`key` is its message's, as `GET /v1/jobs/{id}` and `/v1/inbox/{id}` name it), for as long
/// as the client stays; the first line is `{"connected": true}`. A chunk counts as delivered
/// only once a client acknowledges it (`POST /v1/chat/ack`); until then it stays pending and
/// is sent again, so a client may see a chunk twice.
async fn chat_stream(State(state): State<ApiState>) -> Response {
    let Some(local) = &state.local else {
        return error(StatusCode::NOT_FOUND, "the local channel is not enabled");
    };
    let chunks = local.connect();
    // Whatever waited for a client goes out now.
    make_local_due(&state).await;
    let hello = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(Bytes::from("{\"connected\":true}\n"))
    });
    // At shutdown the stream ends and drops its receiver, which also ends a send waiting for
    // this client's acknowledgement.
    let stop = state.stop.clone();
    let messages = futures_util::stream::unfold(chunks, move |mut chunks| {
        let stop = stop.clone();
        async move {
            let chunk = tokio::select! {
                () = stop.cancelled() => return None,
                chunk = chunks.recv() => chunk?,
            };
            let line = format!(
                "{}\n",
                json!({
                    "text": chunk.text,
                    "key": chunk.key,
                    "chunk": chunk.index,
                    "chunks": chunk.count,
                })
            );
            Some((Ok(Bytes::from(line)), chunks))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(futures_util::StreamExt::chain(
            hello, messages,
        )))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "stream"))
}

/// Makes every local message waiting for a client due now, and wakes the local worker.
async fn make_local_due(state: &ApiState) {
    if let Err(err) = state
        .store
        .retry_now(crate::ingest::inbound::LOCAL_CHANNEL)
        .await
    {
        tracing::warn!(error = %err, "cannot reschedule local messages");
    }
    state.outbox.wake(crate::ingest::inbound::LOCAL_CHANNEL);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatAck {
    /// The message's key, as the stream gave it.
    key: String,
    /// The chunk's index, as the stream gave it.
    chunk: u32,
}

/// A chat client has printed a chunk of the stream: it is delivered. Answers `{"ok": true}`
/// whatever the relay knew of it (an acknowledgement is safe to repeat, and one for a chunk a
/// restarted relay never handed out changes nothing).
async fn chat_ack(
    State(state): State<ApiState>,
    body: Result<Json<ChatAck>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(local) = &state.local else {
        return error(StatusCode::NOT_FOUND, "the local channel is not enabled");
    };
    let Json(ack) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if local.ack(&ack.key, ack.chunk) == crate::ingest::local::Ack::Late {
        // Its send gave up and the chunk waits for a retry, maybe minutes away: now, and the
        // retry counts it delivered without sending it again.
        make_local_due(&state).await;
    }
    Json(json!({"ok": true})).into_response()
}
