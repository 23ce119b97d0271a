//! The routes an operator (or the console) uses on one job beyond reading it: its output's
//! tail (`GET /v1/jobs/{id}/tail?lines=N`, read and redacted as `/tail` in chat reads it), the
//! live tail (`GET /v1/jobs/{id}/tail/stream?lines=N`: newline-delimited JSON, a line each
//! time it changes, until the job has ended) and
//! [Kill] (`POST /v1/jobs/{id}/kill`: SIGTERM to its supervisor, as `/kill` in chat; 409 once
//! the job has ended). The API is its owner's, so any job may be killed here; a chat user
//! kills only the jobs of their own conversation. Behind the `/v1` token, like every route
//! of `api`.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::JobRecord;

use crate::serve::api::{ApiState, error, store_error};

/// As `/tail` in chat: 40 lines unless asked, at most 2,000, at most 20,000 characters.
const DEFAULT_LINES: usize = 40;
const MAX_LINES: usize = 2000;
const MAX_CHARS: usize = 20_000;
/// How often a live tail looks at the job's log, and for how long at most (a client that
/// wants more connects again).
const STREAM_EVERY: Duration = Duration::from_millis(500);
const STREAM_FOR: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
pub struct TailQuery {
    lines: Option<usize>,
}

/// `{"id", "state", "text", "omitted_lines", "truncated"}`: the end of the job's output,
/// without terminal escapes, secrets redacted.
pub async fn tail(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<TailQuery>,
) -> Response {
    let job = match state.store.job(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(err) => return store_error(err),
    };
    Json(tail_of(&state, &job, query.lines).await).into_response()
}

async fn tail_of(state: &ApiState, job: &JobRecord, lines: Option<usize>) -> Value {
    let lines = lines.unwrap_or(DEFAULT_LINES).clamp(1, MAX_LINES);
    let tail = state.exec.tail(&job.id, lines, MAX_CHARS).await;
    json!({
        "id": job.id,
        "state": job.state.as_str(),
        "text": tail.text,
        "omitted_lines": tail.omitted_lines,
        "truncated": tail.truncated,
    })
}

/// The live tail: newline-delimited JSON, one object as [`tail`] answers each time the job's
/// state or tail changes (the first at once), ending after the one that shows the job ended,
/// at shutdown, or after [`STREAM_FOR`]. A client that goes away ends it.
pub async fn tail_stream(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<TailQuery>,
) -> Response {
    match state.store.job(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(err) => return store_error(err),
    }
    let deadline = tokio::time::Instant::now() + STREAM_FOR;
    let stop = state.stop.clone();
    // (the state, the last line sent, whether the job has ended)
    let lines = futures_util::stream::unfold(
        (state, None::<Value>, false),
        move |(state, last, ended)| {
            let (id, stop) = (id.clone(), stop.clone());
            async move {
                if ended {
                    return None;
                }
                loop {
                    if last.is_some() {
                        tokio::select! {
                            () = stop.cancelled() => return None,
                            () = tokio::time::sleep(STREAM_EVERY) => {}
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    let job = state.store.job(&id).await.ok().flatten()?;
                    let now = tail_of(&state, &job, query.lines).await;
                    if last.as_ref() != Some(&now) {
                        let line = Bytes::from(format!("{now}\n"));
                        let ended = job.state.is_final();
                        return Some((
                            Ok::<_, std::convert::Infallible>(line),
                            (state, Some(now), ended),
                        ));
                    }
                }
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "stream"))
}

/// Stops a running job (its supervisor records `killed` and the completion goes out as
/// usual); 409 when it has already ended, 503 when it cannot be signalled yet.
pub async fn kill(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let job = match state.store.job(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(err) => return store_error(err),
    };
    if job.state.is_final() {
        return error(
            StatusCode::CONFLICT,
            format!("job {} has already ended ({})", job.id, job.state.as_str()),
        );
    }
    match state.exec.kill(&job).await {
        Ok(()) => Json(json!({"stopping": job.id})).into_response(),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}
