//! The routes an operator (or the console) uses on one job beyond reading it: its output's
//! tail (`GET /v1/jobs/{id}/tail?lines=N`, read and redacted as `/tail` in chat reads it) and
//! [Kill] (`POST /v1/jobs/{id}/kill`: SIGTERM to its supervisor, as `/kill` in chat; 409 once
//! the job has ended). The API is its owner's, so any job may be killed here; a chat user
//! kills only the jobs of their own conversation. Behind the `/v1` token, like every route
//! of `api`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::serve::api::{ApiState, error, store_error};

/// As `/tail` in chat: 40 lines unless asked, at most 2,000, at most 20,000 characters.
const DEFAULT_LINES: usize = 40;
const MAX_LINES: usize = 2000;
const MAX_CHARS: usize = 20_000;

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
    let lines = query.lines.unwrap_or(DEFAULT_LINES).clamp(1, MAX_LINES);
    let tail = state.exec.tail(&job.id, lines, MAX_CHARS).await;
    Json(json!({
        "id": job.id,
        "state": job.state.as_str(),
        "text": tail.text,
        "omitted_lines": tail.omitted_lines,
        "truncated": tail.truncated,
    }))
    .into_response()
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
