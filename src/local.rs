//! The local channel: a conversation with the relay from the same machine (`execrelay chat`),
//! carried over the HTTP API (`POST /v1/chat`, `GET /v1/chat/stream`).
//!
//! Sending succeeds only while a chat client is connected; otherwise the outbox keeps the
//! message and retries, and a client that connects makes everything waiting due at once.

use execrelay_channel::{
    Channel, ChatType, OutboundChunk, Route, SendOutcome, TextLimit, TextUnit,
};
use tokio::sync::broadcast;

use crate::inbound::{LOCAL_CHANNEL, LOCAL_USER};

const LOCAL_LIMIT: usize = 16_000;

pub struct LocalChannel {
    messages: broadcast::Sender<String>,
}

impl Default for LocalChannel {
    fn default() -> Self {
        LocalChannel {
            messages: broadcast::channel(1024).0,
        }
    }
}

impl LocalChannel {
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.messages.subscribe()
    }

    /// The one local conversation.
    pub fn route() -> Route {
        Route {
            channel: LOCAL_CHANNEL.into(),
            account: String::new(),
            chat_id: LOCAL_USER.into(),
            thread_id: None,
            reply_to_message_id: None,
            chat_type: ChatType::Direct,
        }
    }
}

#[async_trait::async_trait]
impl Channel for LocalChannel {
    fn name(&self) -> &str {
        LOCAL_CHANNEL
    }

    fn limit(&self) -> TextLimit {
        TextLimit {
            unit: TextUnit::Chars,
            max: LOCAL_LIMIT,
        }
    }

    async fn send(&self, chunk: OutboundChunk<'_>) -> SendOutcome {
        match self.messages.send(chunk.text.to_string()) {
            Ok(_) => SendOutcome::Delivered { platform_id: None },
            Err(_) => SendOutcome::NoReceiver("no local chat client is connected".into()),
        }
    }
}
