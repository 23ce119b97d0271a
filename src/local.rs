//! The local channel: a conversation with the relay from the same machine (`execrelay chat`),
//! carried over the HTTP API (`POST /v1/chat`, `GET /v1/chat/stream`).
//!
//! Sending succeeds only while a chat client is connected; otherwise the outbox keeps the
//! message and retries, and a client that connects makes everything waiting due at once.
//! Each chunk carries its message's key and place, so a client can tell which message (a
//! reply, a job's completion) it has seen whole.

use execrelay_channel::{
    Channel, ChatType, OutboundChunk, Route, SendOutcome, TextLimit, TextUnit,
};
use tokio::sync::broadcast;

use crate::inbound::{LOCAL_CHANNEL, LOCAL_USER};

const LOCAL_LIMIT: usize = 16_000;

/// One chunk as the chat stream hands it to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChunk {
    pub text: String,
    /// The outbox row's key (`DeliveryRef::key`), without the chunk's index.
    pub key: String,
    pub index: u32,
    pub count: u32,
}

pub struct LocalChannel {
    messages: broadcast::Sender<LocalChunk>,
}

impl Default for LocalChannel {
    fn default() -> Self {
        LocalChannel {
            messages: broadcast::channel(1024).0,
        }
    }
}

impl LocalChannel {
    pub fn subscribe(&self) -> broadcast::Receiver<LocalChunk> {
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
        let suffix = format!(".{}", chunk.index);
        let key = chunk.idempotency_key.strip_suffix(&suffix);
        let message = LocalChunk {
            text: chunk.text.to_string(),
            key: key.unwrap_or(chunk.idempotency_key).to_string(),
            index: chunk.index,
            count: chunk.count,
        };
        match self.messages.send(message) {
            Ok(_) => SendOutcome::Delivered { platform_id: None },
            Err(_) => SendOutcome::NoReceiver("no local chat client is connected".into()),
        }
    }
}
