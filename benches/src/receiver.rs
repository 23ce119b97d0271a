//! An in-process webhook receiver: records every delivered text with its arrival time, and
//! every edit (a body with `"edit_of"`: the idempotency key of the message it replaces) apart
//! from them, so the figures that count messages never see an edit.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub struct Arrival {
    pub text: String,
    pub at: SystemTime,
    pub conversation: String,
    pub key: String,
}

/// An edit of a delivered message: its new text and when it arrived.
#[derive(Clone, Debug)]
pub struct EditArrival {
    pub text: String,
    pub at: SystemTime,
    pub conversation: String,
    /// The idempotency key of the message it replaces.
    pub edit_of: String,
}

/// How the receiver answers while it is down: a status, and a `Retry-After` (seconds).
#[derive(Clone, Copy, Debug)]
pub struct Down {
    pub status: u16,
    pub retry_after: Option<u64>,
}

#[derive(Default)]
struct Shared {
    arrivals: Mutex<Vec<Arrival>>,
    edits: Mutex<Vec<EditArrival>>,
    news: Notify,
    down: Mutex<Option<Down>>,
    refused: Mutex<usize>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

async fn callback(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let at = SystemTime::now();
    if let Some(down) = shared.down.lock().ok().and_then(|d| *d) {
        if let Ok(mut refused) = shared.refused.lock() {
            *refused += 1;
        }
        let status = StatusCode::from_u16(down.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return match down.retry_after {
            Some(secs) => (status, [("Retry-After", secs.to_string())], "down").into_response(),
            None => (status, "down").into_response(),
        };
    }
    let value = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let field = |name: &str| value[name].as_str().unwrap_or_default().to_string();
    if value.get("edit_of").is_some() {
        if let Ok(mut edits) = shared.edits.lock() {
            edits.push(EditArrival {
                text: field("text"),
                at,
                conversation: field("conversation_id"),
                edit_of: field("edit_of"),
            });
        }
    } else if let Ok(mut arrivals) = shared.arrivals.lock() {
        arrivals.push(Arrival {
            text: field("text"),
            at,
            conversation: field("conversation_id"),
            key: field("idempotency_key"),
        });
    }
    shared.news.notify_waiters();
    "ok".into_response()
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/callback", post(callback))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { addr, shared })
    }

    pub fn url(&self) -> String {
        format!("http://{}/callback", self.addr)
    }

    /// Answers every callback so (not recording it) until `None`.
    pub fn set_down(&self, down: Option<Down>) {
        if let Ok(mut now) = self.shared.down.lock() {
            *now = down;
        }
    }

    /// Callbacks answered while down.
    pub fn refused(&self) -> usize {
        self.shared.refused.lock().map(|r| *r).unwrap_or(0)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Edits, in the order they arrived.
    pub fn edits(&self) -> Vec<EditArrival> {
        self.shared
            .edits
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    pub fn count(&self, pred: impl Fn(&Arrival) -> bool) -> usize {
        self.shared
            .arrivals
            .lock()
            .map(|a| a.iter().filter(|x| pred(x)).count())
            .unwrap_or(0)
    }

    /// Waits until `pred` holds over the arrivals, at most `timeout`; returns whether it did.
    pub async fn wait(&self, timeout: Duration, pred: impl Fn(&[Arrival]) -> bool) -> bool {
        self.wait_on(&self.shared.arrivals, timeout, pred).await
    }

    /// The same over the edits.
    pub async fn wait_edits(
        &self,
        timeout: Duration,
        pred: impl Fn(&[EditArrival]) -> bool,
    ) -> bool {
        self.wait_on(&self.shared.edits, timeout, pred).await
    }

    async fn wait_on<T>(
        &self,
        list: &Mutex<Vec<T>>,
        timeout: Duration,
        pred: impl Fn(&[T]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let news = self.shared.news.notified();
            if list.lock().map(|a| pred(&a)).unwrap_or(false) {
                return true;
            }
            if tokio::time::timeout_at(deadline, news).await.is_err() {
                return list.lock().map(|a| pred(&a)).unwrap_or(false);
            }
        }
    }
}
