//! The local channel: a conversation with the relay from the same machine (`execrelay chat`),
//! carried over the HTTP API (`POST /v1/chat`, `GET /v1/chat/stream`, `POST /v1/chat/ack`).
//!
//! A chunk is delivered only when a connected chat client says it has it: `send` hands the
//! chunk to every connected client's stream and waits (at most [`ACK_WAIT`]) for one of them to
//! acknowledge it (`POST /v1/chat/ack` with its key and index, which `execrelay chat` sends
//! once it has printed it). With several clients, the first acknowledgement delivers it. No
//! client connected, none acknowledging in time (stopped, slow), or all that had it gone:
//! `NoReceiver`, so the outbox keeps the message (pending, shown by `execrelay outbox`) and
//! retries it, and a client that connects makes everything waiting due at once. Handing a
//! chunk to a stream is not delivering it: bytes in a socket nobody reads are lost with it.
//!
//! An acknowledgement that comes after its send gave up is remembered: the next send of that
//! chunk (the same key and index, so the same message) counts as delivered without handing it
//! out again, and the API makes it due at once. A client may still receive a chunk twice (a
//! resend while it was stopped); it prints each key and index once and acknowledges every
//! copy. Each chunk carries its message's key and place, so a client can also tell which
//! message (a reply, a job's completion) it has seen whole.
//!
//! What is remembered lives in memory only: after a restart, a chunk handed out but not
//! acknowledged goes out again (at least once, as the outbox promises).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use execrelay_channel::{
    Channel, ChatType, OutboundChunk, Route, SendOutcome, TextLimit, TextUnit,
};
use tokio::sync::{mpsc, oneshot};

use crate::ingest::inbound::{LOCAL_CHANNEL, LOCAL_USER};

const LOCAL_LIMIT: usize = 16_000;

/// How long a send waits for a client to acknowledge a chunk: a client that takes longer is
/// stopped or stuck, and the outbox tries again later (the wait holds only the local chat's
/// queue, never another channel's, and ends early when the clients go).
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// Chunks queued for one client's stream; a client this far behind is not reading, and gets
/// nothing more until it catches up (its chunks stay pending meanwhile).
const CLIENT_QUEUE: usize = 64;
/// Chunks handed out whose acknowledgement is remembered (see the module doc): far more than
/// one chat's queue moves through in an [`ACK_WAIT`]; the oldest settled ones go first.
const REMEMBERED: usize = 1024;

/// One chunk as the chat stream hands it to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalChunk {
    pub text: String,
    /// The outbox row's key (`DeliveryRef::key`), without the chunk's index.
    pub key: String,
    pub index: u32,
    pub count: u32,
}

/// A chunk's identity: its message's key and its index.
type ChunkId = (String, u32);

/// Where a chunk handed to clients stands.
enum Handed {
    /// A send waits for its acknowledgement from one of the clients it was handed to.
    Waiting {
        chunk: LocalChunk,
        ack: oneshot::Sender<()>,
        holders: Vec<mpsc::Sender<LocalChunk>>,
    },
    /// Its send gave up before any client acknowledged it.
    Unacked,
    /// Acknowledged after its send gave up: its next send is delivered at once.
    AckedLate,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// A send was waiting for it: the chunk is delivered.
    Delivered,
    /// Its send had given up: the chunk is delivered at its next send, which the caller should
    /// make due now.
    Late,
    /// Not a chunk this relay handed out (or long forgotten): nothing to do.
    Unknown,
}

#[derive(Default)]
struct Clients {
    /// Each connected client's stream.
    streams: Vec<mpsc::Sender<LocalChunk>>,
    /// Chunks handed out, oldest first, at most [`REMEMBERED`] settled ones.
    handed: VecDeque<(ChunkId, Handed)>,
}

impl Clients {
    fn position(&self, id: &ChunkId) -> Option<usize> {
        self.handed.iter().position(|(known, _)| known == id)
    }

    fn set(&mut self, id: ChunkId, state: Handed) {
        match self.position(&id) {
            Some(at) => self.handed[at].1 = state,
            None => self.handed.push_back((id, state)),
        }
        // Never a waiting one: its send would take the dropped sender for a lost client.
        while self.handed.len() > REMEMBERED {
            let Some(at) = self
                .handed
                .iter()
                .position(|(_, state)| !matches!(state, Handed::Waiting { .. }))
            else {
                break;
            };
            self.handed.remove(at);
        }
    }

    fn forget(&mut self, id: &ChunkId) {
        if let Some(at) = self.position(id) {
            self.handed.remove(at);
        }
    }
}

#[derive(Default)]
pub struct LocalChannel {
    clients: Mutex<Clients>,
}

impl LocalChannel {
    fn clients(&self) -> MutexGuard<'_, Clients> {
        // Nothing panics while holding it; a poisoned lock still holds consistent data.
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new client's stream of chunks, starting with those whose sends wait for an
    /// acknowledgement now (handed to a client that is stopped, say): otherwise the newcomer
    /// would get them only after that wait and the retry's backoff. The client counts as
    /// connected until the receiver is dropped.
    pub fn connect(&self) -> mpsc::Receiver<LocalChunk> {
        let (sender, receiver) = mpsc::channel(CLIENT_QUEUE);
        let mut clients = self.clients();
        clients.streams.retain(|stream| !stream.is_closed());
        for (_, state) in clients.handed.iter_mut() {
            if let Handed::Waiting { chunk, holders, .. } = state
                && sender.try_send(chunk.clone()).is_ok()
            {
                holders.push(sender.clone());
            }
        }
        clients.streams.push(sender);
        receiver
    }

    /// A client has the chunk `index` of message `key` (it printed it).
    pub fn ack(&self, key: &str, index: u32) -> Ack {
        let id = (key.to_string(), index);
        let mut clients = self.clients();
        let Some(at) = clients.position(&id) else {
            return Ack::Unknown;
        };
        let delivered = match std::mem::replace(&mut clients.handed[at].1, Handed::AckedLate) {
            // The send takes it from here (and forgets the chunk); an error means the send
            // itself was given up (at shutdown), so this is late too.
            Handed::Waiting { ack, .. } => ack.send(()).is_ok(),
            Handed::Unacked | Handed::AckedLate => false,
        };
        if delivered { Ack::Delivered } else { Ack::Late }
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

    /// Hands `chunk` to every client that keeps up and waits for one to acknowledge it.
    async fn deliver(&self, chunk: LocalChunk) -> SendOutcome {
        let id = (chunk.key.clone(), chunk.index);
        let mut acked = {
            let mut clients = self.clients();
            if let Some(at) = clients.position(&id)
                && matches!(clients.handed[at].1, Handed::AckedLate)
            {
                clients.forget(&id);
                return SendOutcome::Delivered { platform_id: None };
            }
            clients.streams.retain(|stream| !stream.is_closed());
            if clients.streams.is_empty() {
                return SendOutcome::NoReceiver("no local chat client is connected".into());
            }
            let holders: Vec<_> = clients
                .streams
                .iter()
                .filter(|stream| stream.try_send(chunk.clone()).is_ok())
                .cloned()
                .collect();
            if holders.is_empty() {
                return SendOutcome::NoReceiver(
                    "no connected chat client is reading (each is too far behind)".into(),
                );
            }
            tracing::debug!(
                key = %id.0,
                index = id.1,
                clients = holders.len(),
                "local chunk handed out; waiting for an acknowledgement"
            );
            let (ack, acked) = oneshot::channel();
            let waiting = Handed::Waiting {
                chunk,
                ack,
                holders,
            };
            clients.set(id.clone(), waiting);
            acked
        };
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        // Bounded by the deadline: each turn ends with an acknowledgement, the deadline, or
        // every client that had the chunk gone (the newcomers `connect` hands it to count).
        let why = loop {
            let holders = self.holders(&id);
            let gone = async {
                for holder in &holders {
                    holder.closed().await;
                }
            };
            tokio::select! {
                acked = &mut acked => break match acked {
                    Ok(()) => None,
                    Err(_) => Some("its acknowledgement was lost"),
                },
                () = tokio::time::sleep_until(deadline) => {
                    break Some("no chat client acknowledged it in time");
                }
                () = gone => {
                    if self.holders_gone(&id) {
                        break Some("every chat client it was handed to went away first");
                    }
                }
            }
        };
        let mut clients = self.clients();
        // An acknowledgement that came as the wait ended still counts: `ack` sends under the
        // same lock, so it is either here already or finds the chunk unacknowledged.
        if why.is_none() || acked.try_recv().is_ok() {
            clients.forget(&id);
            return SendOutcome::Delivered { platform_id: None };
        }
        let mut handed_to = 0;
        if let Some(at) = clients.position(&id)
            && let Handed::Waiting { holders, .. } = &clients.handed[at].1
        {
            handed_to = holders.len();
            clients.handed[at].1 = Handed::Unacked;
        }
        let why = why.unwrap_or_default();
        tracing::debug!(key = %id.0, index = id.1, why, "local chunk not acknowledged");
        SendOutcome::NoReceiver(format!(
            "handed to {handed_to} chat client(s); not acknowledged: {why} (waits up to {}s)",
            ACK_WAIT.as_secs()
        ))
    }

    /// The clients the waiting chunk `id` was handed to (none once it is settled).
    fn holders(&self, id: &ChunkId) -> Vec<mpsc::Sender<LocalChunk>> {
        let clients = self.clients();
        match clients.position(id).map(|at| &clients.handed[at].1) {
            Some(Handed::Waiting { holders, .. }) => holders.clone(),
            _ => Vec::new(),
        }
    }

    /// Whether every client the waiting chunk `id` was handed to has gone.
    fn holders_gone(&self, id: &ChunkId) -> bool {
        self.holders(id).iter().all(|holder| holder.is_closed())
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
        self.deliver(LocalChunk {
            text: chunk.text.to_string(),
            key: key.unwrap_or(chunk.idempotency_key).to_string(),
            index: chunk.index,
            count: chunk.count,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn chunk(key: &str, index: u32) -> LocalChunk {
        LocalChunk {
            text: format!("text of {key}.{index}"),
            key: key.into(),
            index,
            count: index + 1,
        }
    }

    fn sending(local: &Arc<LocalChannel>, key: &str) -> tokio::task::JoinHandle<SendOutcome> {
        let (local, chunk) = (local.clone(), chunk(key, 0));
        tokio::spawn(async move { local.deliver(chunk).await })
    }

    fn is_delivered(outcome: &SendOutcome) -> bool {
        matches!(outcome, SendOutcome::Delivered { .. })
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_client_nothing_is_delivered() {
        let local = Arc::new(LocalChannel::default());
        let outcome = local.deliver(chunk("m1", 0)).await;
        assert!(matches!(outcome, SendOutcome::NoReceiver(_)), "{outcome:?}");
        // A client that connected and left is no client.
        drop(local.connect());
        let outcome = local.deliver(chunk("m1", 0)).await;
        assert!(matches!(outcome, SendOutcome::NoReceiver(_)), "{outcome:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_is_delivered_when_a_client_acknowledges_it() {
        let local = Arc::new(LocalChannel::default());
        let mut client = local.connect();
        let send = sending(&local, "m1");
        let got = client.recv().await.expect("the chunk");
        assert_eq!(got, chunk("m1", 0));
        assert!(!send.is_finished(), "delivered before the client had it");
        assert_eq!(local.ack("m1", 0), Ack::Delivered);
        assert!(is_delivered(&send.await.unwrap()));
        assert_eq!(local.ack("m1", 0), Ack::Unknown, "settled and forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_acknowledge_leaves_it_pending_and_a_late_ack_counts() {
        let local = Arc::new(LocalChannel::default());
        let mut client = local.connect();
        let started = tokio::time::Instant::now();
        let outcome = sending(&local, "m1").await.unwrap();
        assert!(matches!(outcome, SendOutcome::NoReceiver(_)), "{outcome:?}");
        assert!(started.elapsed() >= ACK_WAIT);
        // It read the chunk after all, and says so: the retry is delivered without a resend.
        assert_eq!(client.recv().await, Some(chunk("m1", 0)));
        assert_eq!(local.ack("m1", 0), Ack::Late);
        assert!(is_delivered(&local.deliver(chunk("m1", 0)).await));
        assert!(client.try_recv().is_err(), "handed out again");
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_when_its_clients_go() {
        let local = Arc::new(LocalChannel::default());
        let mut client = local.connect();
        let started = tokio::time::Instant::now();
        let send = sending(&local, "m1");
        assert_eq!(client.recv().await, Some(chunk("m1", 0)));
        drop(client);
        let outcome = send.await.unwrap();
        assert!(matches!(outcome, SendOutcome::NoReceiver(_)), "{outcome:?}");
        assert!(started.elapsed() < ACK_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_connects_during_a_wait_gets_the_chunk_and_its_ack_counts() {
        let local = Arc::new(LocalChannel::default());
        let mut stopped = local.connect();
        let send = sending(&local, "m1");
        assert_eq!(stopped.recv().await, Some(chunk("m1", 0)));
        let mut newcomer = local.connect();
        assert_eq!(newcomer.recv().await, Some(chunk("m1", 0)));
        // The first client goes; the newcomer still has it.
        drop(stopped);
        tokio::task::yield_now().await;
        assert!(!send.is_finished());
        assert_eq!(local.ack("m1", 0), Ack::Delivered);
        assert!(is_delivered(&send.await.unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn with_several_clients_one_acknowledgement_delivers() {
        let local = Arc::new(LocalChannel::default());
        let (mut a, mut b) = (local.connect(), local.connect());
        let send = sending(&local, "m1");
        assert_eq!(a.recv().await, Some(chunk("m1", 0)));
        assert_eq!(b.recv().await, Some(chunk("m1", 0)));
        assert_eq!(local.ack("m1", 0), Ack::Delivered);
        assert!(is_delivered(&send.await.unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_too_far_behind_is_not_waited_for() {
        let local = Arc::new(LocalChannel::default());
        let _stuck = local.connect();
        for i in 0..CLIENT_QUEUE {
            let outcome = sending(&local, &format!("m{i}")).await.unwrap();
            assert!(matches!(outcome, SendOutcome::NoReceiver(_)));
        }
        let started = tokio::time::Instant::now();
        let outcome = local.deliver(chunk("one-more", 0)).await;
        assert!(matches!(outcome, SendOutcome::NoReceiver(_)), "{outcome:?}");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let local = LocalChannel::default();
        let mut clients = local.clients();
        for i in 0..REMEMBERED * 2 {
            clients.set((format!("m{i}"), 0), Handed::Unacked);
        }
        assert_eq!(clients.handed.len(), REMEMBERED);
    }
}
