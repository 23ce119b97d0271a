//! The relay's side of inbound hand-off: who may talk to the bot, which session a message
//! belongs to, and storing it (with its last route) before anything acts on it.
//!
//! Deny by default: a sender is allowed only if `[access] allow` names its account or an
//! identity that includes it. The local channel's user is allowed because reaching it already
//! required the API's bearer token (or a loopback-only API). A refused sender records nothing;
//! a command it sends the bot directly gets one short "not authorized" reply, at most once an
//! hour (in a group, nothing: the command may be for another bot).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use execrelay_channel::{
    Accepted, ChatType, InboundMessage, InboundSink, Press, PressAnswer, Route, SinkError,
};
use tokio::sync::Notify;

use crate::config::Config;
use crate::deliver::heartbeat::{Heartbeat, Reason};
use crate::deliver::outbox::Outbox;
use crate::ingest::presses::Presses;
use crate::run::jobs::Redactor;
use crate::store::{InboundRecord, InboundResult, Store, StoreError};
use crate::util::log_throttle::LogThrottle;
use crate::util::once_per_key::OncePerKey;

pub const LOCAL_CHANNEL: &str = "local";
pub const LOCAL_USER: &str = "local";
/// Sent without storing it: the store is what is full.
const DISK_FULL_REFUSAL: &str = "refused: the relay's disk is full, so it takes no new commands. Jobs already running still report back here; try again once space is freed.";
/// Whether `text` is a command addressed to a bot by name (`/cmd@name ...`).
fn addressed_to_another_bot(text: &str) -> bool {
    let Some(rest) = text.trim_start().strip_prefix('/') else {
        return false;
    };
    let word = rest.split(char::is_whitespace).next().unwrap_or("");
    word.split_once('@').is_some_and(|(_, bot)| !bot.is_empty())
}

const FORWARD_REFUSAL: &str =
    "forwarded messages are not run: send the command yourself if you mean it";
const REFUSAL_INTERVAL: Duration = Duration::from_secs(3600);
const REFUSAL_MEMORY: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct Access {
    allowed: HashSet<String>,
    /// Account (`telegram:111`) → identity name (`alice`).
    identity_of: HashMap<String, String>,
}

impl Access {
    pub fn from_config(config: &Config) -> Access {
        let mut identity_of = HashMap::new();
        for (name, accounts) in &config.identities {
            for account in accounts {
                identity_of.insert(account.clone(), name.clone());
            }
        }
        let mut allowed = HashSet::new();
        for entry in &config.access.allow {
            match config.identities.get(entry) {
                Some(accounts) => allowed.extend(accounts.iter().cloned()),
                None => {
                    allowed.insert(entry.clone());
                }
            }
        }
        Access {
            allowed,
            identity_of,
        }
    }

    pub fn is_allowed(&self, channel: &str, user_id: &str) -> bool {
        (channel == LOCAL_CHANNEL && user_id == LOCAL_USER)
            || self.allowed.contains(&format!("{channel}:{user_id}"))
    }

    /// `user:<identity>` for a direct chat, `chat:<channel>:<chat_id>` for a group.
    pub fn session_key(&self, route: &Route, user_id: &str) -> String {
        match route.chat_type {
            ChatType::Direct => {
                let account = format!("{}:{user_id}", route.channel);
                match self.identity_of.get(&account) {
                    Some(name) => format!("user:{name}"),
                    None => format!("user:{account}"),
                }
            }
            ChatType::Group => group_session(&route.channel, &route.chat_id),
        }
    }
}

/// The session of a group chat: everyone in it shares it.
pub(super) fn group_session(channel: &str, chat_id: &str) -> String {
    format!("chat:{channel}:{chat_id}")
}

pub struct InboundHandler {
    store: Store,
    access: Access,
    outbox: Outbox,
    heartbeat: Heartbeat,
    commands: Arc<Notify>,
    refused_recently: OncePerKey,
    refusals_logged: LogThrottle,
    presses: Presses,
}

impl InboundHandler {
    pub fn new(
        store: Store,
        access: Access,
        outbox: Outbox,
        heartbeat: Heartbeat,
        commands: Arc<Notify>,
        redactor: Redactor,
    ) -> InboundHandler {
        InboundHandler {
            presses: Presses::new(
                store.clone(),
                access.clone(),
                commands.clone(),
                heartbeat.clone(),
                redactor,
            ),
            store,
            access,
            outbox,
            heartbeat,
            commands,
            refused_recently: OncePerKey::new(REFUSAL_INTERVAL, REFUSAL_MEMORY),
            refusals_logged: LogThrottle::new(Duration::from_secs(1)),
        }
    }
}

#[async_trait::async_trait]
impl InboundSink for InboundHandler {
    async fn accept(&self, message: InboundMessage) -> Result<Accepted, SinkError> {
        self.accept_with_id(message)
            .await
            .map(|(accepted, _)| accepted)
    }

    async fn load_state(&self, key: &str) -> Result<Option<String>, SinkError> {
        self.store
            .adapter_state(key)
            .await
            .map_err(|error| SinkError::Unavailable(error.to_string()))
    }

    async fn save_state(&self, key: &str, value: &str) -> Result<(), SinkError> {
        self.store
            .set_adapter_state(key, value)
            .await
            .map_err(|error| SinkError::Unavailable(error.to_string()))
    }

    async fn press(&self, press: Press) -> Result<PressAnswer, SinkError> {
        self.presses.take(press).await
    }
}

impl InboundHandler {
    /// [`InboundSink::accept`], and the inbox id of a stored message: the local chat client
    /// follows what its message produced by it (`GET /v1/inbox/{id}`).
    pub async fn accept_with_id(
        &self,
        mut message: InboundMessage,
    ) -> Result<(Accepted, Option<i64>), SinkError> {
        // A bridge that leaves out the webhook's `chat_type` makes a group message look
        // direct; a conversation seen as a group stays one (its session, its refusals). No
        // platform gives a direct chat the id of a group, so the rule holds for every channel.
        if message.route.chat_type == ChatType::Direct
            && message.route.channel != LOCAL_CHANNEL
            && self
                .store
                .has_route(&group_session(
                    &message.route.channel,
                    &message.route.chat_id,
                ))
                .await
                .map_err(|error| SinkError::Unavailable(error.to_string()))?
        {
            message.route.chat_type = ChatType::Group;
        }
        let channel = message.route.channel.clone();
        let sender = format!("{channel}:{}", message.sender_id);
        let is_command = message.text.trim_start().starts_with('/');
        if addressed_to_another_bot(&message.text) {
            // `/cmd@otherbot`: another bot's business, on every channel (an adapter that knows
            // our own name passes `/cmd@us` on as `/cmd`).
            crate::metrics::inbound(&channel, "ignored");
            return Ok((Accepted::Stored, None));
        }
        if !self.access.is_allowed(&channel, &message.sender_id) {
            crate::metrics::inbound(&channel, "unauthorized");
            // A busy group full of strangers (or bots) must not flood the log.
            if let Some(held_back) = self.refusals_logged.admit() {
                tracing::warn!(sender = %sender, held_back, "refused a message from a sender not in [access] allow");
            }
            // Only a command sent to the bot directly gets an answer: in a group, members'
            // commands for other bots, or chatter, must not draw a "not authorized" for all
            // to see (nor store a reply for them).
            if is_command
                && message.route.chat_type == ChatType::Direct
                && self.refused_recently.admit(&sender)
                && let Err(error) = self
                    .outbox
                    .send_reply(
                        &message.route,
                        &format!("not authorized: {sender} is not allowed to use this relay"),
                    )
                    .await
            {
                tracing::error!(error = %error, "cannot queue the refusal");
            }
            return Ok((Accepted::Stored, None));
        }
        if message.forwarded {
            crate::metrics::inbound(&channel, "forwarded");
            // Someone else's words: run as the forwarder's, anyone who gets a message
            // forwarded to the bot by an allowed user would run commands. Nothing is stored;
            // a direct chat is told why.
            if is_command
                && message.route.chat_type == ChatType::Direct
                && self.refused_recently.admit(&format!("forward:{sender}"))
                && let Err(error) = self
                    .outbox
                    .send_reply(&message.route, FORWARD_REFUSAL)
                    .await
            {
                tracing::error!(error = %error, "cannot queue the forward refusal");
            }
            return Ok((Accepted::Stored, None));
        }
        let session = self.access.session_key(&message.route, &message.sender_id);
        let route = message.route.clone();
        let record_sender = sender.clone();
        let record = InboundRecord {
            session: session.clone(),
            route: message.route,
            sender,
            text: message.text,
            platform_message_id: message.platform_message_id,
            sent_at_ms: message.sent_at_ms,
        };
        let stored = self.store.accept_inbound(record).await;
        crate::metrics::inbound(&channel, inbound_result(&stored));
        match stored {
            Ok(InboundResult::Duplicate { inbox_id }) => Ok((Accepted::Duplicate, inbox_id)),
            Ok(InboundResult::Stored {
                inbox_id,
                has_queued_events,
            }) => {
                crate::util::failpoint::hit(crate::util::failpoint::INBOUND_STORED);
                self.commands.notify_one();
                if has_queued_events {
                    // Events waiting for a route (or for this person) go out now.
                    self.heartbeat.request(Reason::Wake, Some(session));
                }
                Ok((Accepted::Stored, Some(inbox_id)))
            }
            Err(error) if error.is_disk_full() => {
                // Storing nothing means running nothing: say so now rather than let the
                // platform redeliver it into a relay that may start it hours later.
                tracing::warn!(sender = %record_sender, error = %error, "refused a message: the disk is full");
                if is_command {
                    self.outbox.notify_unstored(&route, DISK_FULL_REFUSAL);
                }
                Ok((Accepted::Refused, None))
            }
            Err(error) => Err(SinkError::Unavailable(error.to_string())),
        }
    }
}

/// What storing a message came to, as `execrelay_inbound_total` labels it.
fn inbound_result(stored: &Result<InboundResult, StoreError>) -> &'static str {
    match stored {
        Ok(InboundResult::Duplicate { .. }) => "duplicate",
        Ok(InboundResult::Stored { .. }) => "stored",
        Err(error) if error.is_disk_full() => "refused",
        Err(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test").unwrap()
    }

    fn route(channel: &str, chat: &str, chat_type: ChatType) -> Route {
        Route {
            channel: channel.into(),
            account: String::new(),
            chat_id: chat.into(),
            thread_id: None,
            reply_to_message_id: None,
            chat_type,
        }
    }

    #[test]
    fn deny_by_default_and_identities_expand() {
        let access = Access::from_config(&config(
            "[access]\nallow = [\"alice\", \"webhook:bob\"]\n[identities]\nalice = [\"telegram:5\", \"webhook:alice\"]\n",
        ));
        assert!(access.is_allowed("telegram", "5"));
        assert!(access.is_allowed("webhook", "alice"));
        assert!(access.is_allowed("webhook", "bob"));
        assert!(!access.is_allowed("webhook", "mallory"));
        assert!(!access.is_allowed("telegram", "bob"));
        assert!(access.is_allowed(LOCAL_CHANNEL, LOCAL_USER));
        assert!(!Access::default().is_allowed("webhook", "alice"));
    }

    #[test]
    fn sessions_follow_the_contract() {
        let access = Access::from_config(&config(
            "[identities]\nalice = [\"telegram:5\", \"webhook:alice\"]\n",
        ));
        let dm_tg = route("telegram", "5", ChatType::Direct);
        let dm_wh = route("webhook", "conv-9", ChatType::Direct);
        assert_eq!(access.session_key(&dm_tg, "5"), "user:alice");
        assert_eq!(access.session_key(&dm_wh, "alice"), "user:alice");
        assert_eq!(access.session_key(&dm_wh, "carol"), "user:webhook:carol");
        let group = route("webhook", "room", ChatType::Group);
        assert_eq!(access.session_key(&group, "alice"), "chat:webhook:room");
    }
}
