//! The outbox's writing side: turning text for a route into a durable, chunked outbox row, and
//! waking the channel's delivery worker.
//!
//! Only this module composes outbox rows (`NewOutbox`); `store` writes them, `delivery` sends
//! them. Chunking happens here, once, in the channel's own unit, so every retry resends exactly
//! the same chunks with the same idempotency keys.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use execrelay_channel::{Channel, Route};
use tokio::sync::Notify;

use crate::deliver::channel_health::ChannelHealth;
use crate::deliver::chunk;
use crate::store::{NewOutbox, Store, StoreError};
use crate::util::once_per_key::OncePerKey;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("channel `{0}` is not enabled")]
    UnknownChannel(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An unstored notice goes to a chat at most this often: a full disk must not turn every
/// message (or every platform redelivery) into a send.
const UNSTORED_NOTICE_INTERVAL: Duration = Duration::from_secs(5);
const UNSTORED_NOTICE_MEMORY: usize = 10_000;

#[derive(Clone)]
pub struct Outbox {
    store: Store,
    channels: Arc<BTreeMap<String, Arc<dyn Channel>>>,
    wakers: Arc<BTreeMap<String, Arc<Notify>>>,
    unstored_notice_sent: Arc<OncePerKey>,
    health: ChannelHealth,
}

impl Outbox {
    pub fn new(store: Store, channels: Vec<Arc<dyn Channel>>) -> Outbox {
        let wakers = channels
            .iter()
            .map(|c| (c.name().to_string(), Arc::new(Notify::new())))
            .collect();
        let channels = channels
            .into_iter()
            .map(|c| (c.name().to_string(), c))
            .collect();
        Outbox {
            store,
            channels: Arc::new(channels),
            wakers: Arc::new(wakers),
            unstored_notice_sent: Arc::new(OncePerKey::new(
                UNSTORED_NOTICE_INTERVAL,
                UNSTORED_NOTICE_MEMORY,
            )),
            health: ChannelHealth::default(),
        }
    }

    pub fn channel(&self, name: &str) -> Option<&Arc<dyn Channel>> {
        self.channels.get(name)
    }

    /// Which channels fail as a whole; their delivery workers keep it.
    pub fn health(&self) -> &ChannelHealth {
        &self.health
    }

    pub(crate) fn waker(&self, channel: &str) -> Option<Arc<Notify>> {
        self.wakers.get(channel).cloned()
    }

    /// Splits `text` for the route's channel. Fails only for a channel that is not enabled.
    pub fn compose(
        &self,
        route: &Route,
        session: Option<&str>,
        kind: &'static str,
        text: &str,
    ) -> Result<NewOutbox, OutboxError> {
        let channel = self
            .channels
            .get(&route.channel)
            .ok_or_else(|| OutboxError::UnknownChannel(route.channel.clone()))?;
        let mut chunks = chunk::split(text, channel.limit());
        if chunks.is_empty() {
            chunks.push("(no text)".into());
        }
        Ok(NewOutbox {
            route: route.clone(),
            session: session.map(str::to_string),
            kind,
            chunks,
            job_id: None,
            buttons: Vec::new(),
        })
    }

    /// Tells the channel's worker that something may be due (a hint; the tables are the truth).
    pub fn wake(&self, channel: &str) {
        if let Some(waker) = self.wakers.get(channel) {
            waker.notify_one();
        }
    }

    /// Sends `text` to the route's chat without storing it, in the background: for telling the
    /// sender that the relay's disk is full. Best effort, and at most once in [`UNSTORED_NOTICE_INTERVAL`] per chat.
    pub fn notify_unstored(&self, route: &Route, text: &str) {
        let Some(channel) = self.channels.get(&route.channel).cloned() else {
            return;
        };
        if !self
            .unstored_notice_sent
            .admit(&format!("{}:{}", route.channel, route.chat_id))
        {
            return;
        }
        tokio::spawn(crate::deliver::delivery::send_unstored(
            channel,
            route.clone(),
            text.to_string(),
        ));
    }

    /// Writes one reply outside any other transaction (refusals, notices) and wakes its worker.
    pub async fn send_reply(&self, route: &Route, text: &str) -> Result<(), OutboxError> {
        let message = self.compose(route, None, "reply", text)?;
        self.store.enqueue_outbox(vec![message]).await?;
        self.wake(&route.channel);
        Ok(())
    }
}
