//! The HTTP server under the API, the webhook and Feishu's events, with limits of its own: a
//! client that sends its headers slowly (or never) is cut off, and so is a keep-alive
//! connection left idle; a body must arrive within a bound; connections past a cap are
//! refused at once, not queued; and a stop waits for clients only so long.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use execrelay_channel::CancellationToken;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::util::log_throttle::LogThrottle;

/// From a connection's first byte (or its last response) to a whole request head.
pub const HEADER_READ: Duration = Duration::from_secs(10);
/// Connections served at once, at most; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 128;
/// [`MAX_CONNECTIONS`], or a quarter of the descriptors this process may open if that is
/// fewer: clients must never take the descriptors that jobs, the store and sends need.
fn connection_cap() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !known {
        return MAX_CONNECTIONS;
    }
    usize::try_from(limit.rlim_cur / 4)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(4, MAX_CONNECTIONS)
}

/// A response that cannot be written for this long (a client that sends requests and never
/// reads the answers) ends its connection.
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// How long a stop waits for requests in flight before it closes what is left.
pub const DRAIN: Duration = Duration::from_secs(3);

/// Serves `app` on `listener` until `stop`, then gives requests in flight [`DRAIN`].
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let cap = connection_cap();
    let permits = Arc::new(Semaphore::new(cap));
    let connections = TaskTracker::new();
    let refused = LogThrottle::new(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: let some close before trying again.
                if let Some(held_back) = refused.admit() {
                    tracing::warn!(error = %error, held_back, "http: cannot accept a connection");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(held_back) = refused.admit() {
                tracing::warn!(%peer, held_back, "http: {cap} connections open; refused one");
            }
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let mut app = app.clone();
                async move { app.call(request.map(Body::new)).await }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ)
                .keep_alive(true);
            let io = TokioIo::new(WriteDeadline::new(stream, WRITE_STALL));
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::info!("http: closed the connections still open at shutdown");
    }
}

/// An I/O stream whose writes fail once they have made no progress for `limit`: hyper has
/// no write timeout of its own, and a client that never reads would hold its slot for ever.
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Armed while a write is waiting for room.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `Pending` from the inner write: time it; past the limit, an error.
    fn waited(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => self.waited(cx).map(Err),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Pending => self.waited(cx).map(Err),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_limit() {
        let (near, _far) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(near, Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let error = io.write_all(&[b'x'; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_no_stall() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut total = 0;
            while total < 4096 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                total += far.read(&mut buf).await.unwrap();
            }
        });
        let mut io = WriteDeadline::new(near, Duration::from_secs(10));
        io.write_all(&[b'x'; 4096]).await.unwrap();
        reader.await.unwrap();
    }
}
