//! What the tests against the fakes share: a sink that records presses and answers them, and
//! a runtime for the channel and the stand-in relay while the fakes are driven from the test's
//! own thread (their `Platform` calls block).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use execrelay_channel::{Accepted, InboundMessage, InboundSink, Press, PressAnswer, SinkError};

/// Records every press; answers `pressed <action>`, or refuses while `refuse` is set.
#[derive(Default)]
pub struct RecordingSink {
    pub presses: Mutex<Vec<Press>>,
    pub refuse: AtomicBool,
}

impl RecordingSink {
    pub fn presses(&self) -> Vec<Press> {
        self.presses.lock().expect("sink lock").clone()
    }

    pub fn set_refusing(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl InboundSink for RecordingSink {
    async fn accept(&self, _message: InboundMessage) -> Result<Accepted, SinkError> {
        Ok(Accepted::Stored)
    }

    async fn load_state(&self, _key: &str) -> Result<Option<String>, SinkError> {
        Ok(None)
    }

    async fn save_state(&self, _key: &str, _value: &str) -> Result<(), SinkError> {
        Ok(())
    }

    async fn press(&self, press: Press) -> Result<PressAnswer, SinkError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(SinkError::Unavailable("the store is busy".into()));
        }
        let text = format!("pressed {}", press.action);
        self.presses.lock().expect("sink lock").push(press);
        Ok(PressAnswer { text })
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Serves `app` on 127.0.0.1:0 on `rt`: the stand-in relay's address.
pub fn serve(rt: &tokio::runtime::Runtime, app: axum::Router) -> std::net::SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the stand-in relay");
    let addr = listener.local_addr().expect("its address");
    rt.spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}
