//! An in-process webhook receiver: records every delivered text with its arrival time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub struct Arrival {
    pub text: String,
    pub at: SystemTime,
}

#[derive(Default)]
struct Shared {
    arrivals: Mutex<Vec<Arrival>>,
    news: Notify,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

async fn callback(State(shared): State<Arc<Shared>>, body: Bytes) -> &'static str {
    let at = SystemTime::now();
    let text = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["text"].as_str().map(str::to_string))
        .unwrap_or_default();
    if let Ok(mut arrivals) = shared.arrivals.lock() {
        arrivals.push(Arrival { text, at });
    }
    shared.news.notify_waiters();
    "ok"
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

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared
            .arrivals
            .lock()
            .map(|a| a.clone())
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
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let news = self.shared.news.notified();
            if self
                .shared
                .arrivals
                .lock()
                .map(|a| pred(&a))
                .unwrap_or(false)
            {
                return true;
            }
            if tokio::time::timeout_at(deadline, news).await.is_err() {
                return self
                    .shared
                    .arrivals
                    .lock()
                    .map(|a| pred(&a))
                    .unwrap_or(false);
            }
        }
    }
}
