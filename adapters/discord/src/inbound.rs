//! Inbound: serenity's gateway events (and the backfill's fetched messages) turned into
//! [`InboundMessage`]s and handed to the relay; button presses (`INTERACTION_CREATE`) are routed
//! here the same way and handed to `press.rs`, which takes and answers them.
//!
//! Nothing that reaches the handler is given up while the relay runs: a message that comes
//! before READY waits for it, and one the relay cannot store yet is retried with capped backoff
//! until it is stored or the relay stops. Memory stays bounded: at most [`MAX_HELD`] messages
//! wait at once; past that one is dropped with a warning, and since it is not marked settled,
//! the next READY's backfill fetches it again if its channel is one the relay knows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use execrelay_channel::{CancellationToken, ChatType, InboundMessage, InboundSink, Route};
use serenity::all::{
    ComponentInteraction, Context, EventHandler, GuildId, Interaction, Message, MessageType, Ready,
    ResumedEvent, UserId,
};
use tokio::sync::watch;

use crate::CHANNEL;
use crate::backfill::{Point, Tracker};
use crate::outbound::classify;
use crate::press;
use crate::rest::Rest;

/// Messages held in memory at once, waiting for READY or for the store.
const MAX_HELD: usize = 1000;
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(10);
/// Messages per history request (Discord's maximum), and requests per channel per READY.
const PAGE: u8 = 100;
const MAX_PAGES: usize = 10;
const FETCH_ATTEMPTS: u32 = 5;
const FIRST_FETCH_PAUSE: Duration = Duration::from_secs(1);
/// The longest 429 the backfill sits out; past it, the channel waits for the next READY.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);
/// The longest a press waits for its channel's lookup (when the interaction does not say
/// whether it came from a thread): the whole answer must be back within 3 s.
const PRESS_LOOKUP_WAIT: Duration = Duration::from_millis(700);

/// `content` without mentions of the bot (`<@id>`, `<@!id>`), trimmed; and whether there were
/// any.
pub fn strip_mentions(content: &str, bot: u64) -> (String, bool) {
    let mut text = content.to_string();
    let mut mentioned = false;
    for form in [format!("<@{bot}>"), format!("<@!{bot}>")] {
        if text.contains(&form) {
            mentioned = true;
            text = text.replace(&form, " ");
        }
    }
    (text.trim().to_string(), mentioned)
}

/// When a snowflake was made: its top 42 bits count milliseconds since Discord's epoch (2015).
fn snowflake_millis(id: u64) -> i64 {
    const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;
    (id >> 22) as i64 + DISCORD_EPOCH_MS
}

/// The message a `MESSAGE_CREATE` carries for the relay, if any. `parent` is the channel a
/// thread belongs to (the thread shares its chat, and replies go to the thread). Bots, the bot
/// itself, empty messages and, with `require_mention`, guild chatter that neither mentions the
/// bot nor starts with a command are not for us.
pub fn to_inbound(
    message: &Message,
    bot: UserId,
    parent: Option<u64>,
    require_mention: bool,
) -> Option<InboundMessage> {
    if message.author.bot || message.author.id == bot {
        return None;
    }
    // System messages (a thread created, a channel renamed, a member joined) carry a name or
    // nothing in `content`; a thread named "/exec …" is not a command.
    if !matches!(
        message.kind,
        MessageType::Regular | MessageType::InlineReply
    ) {
        return None;
    }
    let (text, mentioned) = strip_mentions(&message.content, bot.get());
    let mentioned = mentioned || message.mentions.iter().any(|user| user.id == bot);
    let in_guild = message.guild_id.is_some();
    // A file sent to the bot directly is passed on with no text, so that the relay can say it
    // reads text only; anything else without text is not for us.
    if text.is_empty() && (in_guild || message.attachments.is_empty()) {
        return None;
    }
    if in_guild && require_mention && !mentioned && !text.starts_with('/') {
        return None;
    }
    let channel_id = message.channel_id.get().to_string();
    let (chat_id, thread_id) = match parent {
        Some(parent) => (parent.to_string(), Some(channel_id)),
        None => (channel_id, None),
    };
    Some(InboundMessage {
        route: Route {
            channel: CHANNEL.to_string(),
            account: bot.get().to_string(),
            chat_id,
            thread_id,
            reply_to_message_id: Some(message.id.get().to_string()),
            chat_type: if in_guild {
                ChatType::Group
            } else {
                ChatType::Direct
            },
        },
        sender_id: message.author.id.get().to_string(),
        text,
        // Snowflakes are unique across Discord; a resumed session may dispatch one twice.
        platform_message_id: Some(message.id.get().to_string()),
        // serenity dispatches each event on its own task: two messages may arrive swapped.
        sent_at_ms: Some(snowflake_millis(message.id.get())),
        forwarded: false,
    })
}

/// A message's channel and id, and the guild it belongs to (`None`: a DM).
#[derive(Debug, Clone, Copy)]
struct Place {
    channel: u64,
    guild: Option<u64>,
    id: u64,
}

impl Place {
    fn of(message: &Message) -> Place {
        Place {
            channel: message.channel_id.get(),
            guild: message.guild_id.map(GuildId::get),
            id: message.id.get(),
        }
    }
}

/// Whether handling went to its end, or the relay is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    Done,
    Stopped,
}

/// One history page: each message's id (for paging on) and the message, if it decodes.
type Page = Vec<(u64, Option<Message>)>;

enum Fetched {
    Page(Page),
    GaveUp,
    Stopped,
}

/// A place among the [`MAX_HELD`] messages held in memory, given back on drop.
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) struct Handler {
    sink: Arc<dyn InboundSink>,
    rest: Arc<Rest>,
    bot: watch::Sender<Option<UserId>>,
    require_mention: bool,
    /// Set at shutdown: serenity may still dispatch while its shard winds down.
    stop: CancellationToken,
    tracker: Arc<Tracker>,
    /// Messages waiting for READY or for the store.
    held: AtomicUsize,
    /// One backfill at a time (two READYs close together).
    backfilling: tokio::sync::Mutex<()>,
}

impl Handler {
    pub(crate) fn new(
        sink: Arc<dyn InboundSink>,
        rest: Arc<Rest>,
        require_mention: bool,
        stop: CancellationToken,
        tracker: Arc<Tracker>,
    ) -> Handler {
        Handler {
            sink,
            rest,
            bot: watch::channel(None).0,
            require_mention,
            stop,
            tracker,
            held: AtomicUsize::new(0),
            backfilling: tokio::sync::Mutex::new(()),
        }
    }

    fn hold(&self) -> Option<Held<'_>> {
        if self.held.fetch_add(1, Ordering::AcqRel) >= MAX_HELD {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Held(&self.held))
    }

    /// Who the bot is, once READY said; `None` if the relay stops first.
    async fn bot_id(&self) -> Option<UserId> {
        let mut known = self.bot.subscribe();
        tokio::select! {
            _ = self.stop.cancelled() => None,
            bot = known.wait_for(|bot| bot.is_some()) => bot.ok().and_then(|bot| *bot),
        }
    }

    /// A gateway message or a fetched one: to the relay if it is for it, until it is stored.
    async fn handle(&self, message: Message) -> Handled {
        if self.stop.is_cancelled() {
            return Handled::Stopped;
        }
        let place = Place::of(&message);
        let known = *self.bot.borrow();
        let bot = match known {
            Some(bot) => bot,
            None => {
                // serenity handles each dispatch on its own task, so a message can overtake
                // READY's handler. Who it is for is unknown until READY: it holds its channel's
                // backfill point (if the channel is known) while it waits.
                let backfilled = {
                    let mut marks = self.tracker.marks();
                    marks.unsettled(place.channel, place.guild, place.id, false);
                    marks.known(place.channel)
                };
                let Some(_held) = self.hold() else {
                    tracing::warn!(
                        message_id = place.id,
                        channel_id = place.channel,
                        backfilled,
                        "discord message before READY, and too many wait; dropped (fetched again at the next READY if backfilled)"
                    );
                    return Handled::Done;
                };
                tracing::info!(
                    message_id = place.id,
                    "discord message before READY; waits for READY"
                );
                match self.bot_id().await {
                    Some(bot) => bot,
                    None => return Handled::Stopped,
                }
            }
        };
        // A cheap check first: chatter not for us costs no channel lookup.
        if to_inbound(&message, bot, None, self.require_mention).is_none() {
            self.tracker.marks().passed(place.channel, place.id);
            tracing::debug!(message_id = place.id, "discord message not for the relay");
            return Handled::Done;
        }
        // For the relay: its channel counts from now on, and its point stays before this
        // message until it is stored, also while the lookup below waits.
        self.tracker
            .marks()
            .unsettled(place.channel, place.guild, place.id, true);
        let parent = match message.guild_id {
            Some(_) => self.thread_parent(place.channel).await,
            None => None,
        };
        let Some(inbound) = to_inbound(&message, bot, parent, self.require_mention) else {
            self.tracker.marks().passed(place.channel, place.id);
            return Handled::Done;
        };
        self.store(inbound, place).await
    }

    /// The parent of guild channel `channel` if it is a thread: as remembered with its point
    /// (kept across restarts), else looked up. A message fetched again after a restart then
    /// maps to the chat it was stored under even when the lookup fails this time (it would
    /// guess "not a thread", and the relay's dedupe, keyed by chat, would not recognise it).
    async fn thread_parent(&self, channel: u64) -> Option<u64> {
        let remembered = self.tracker.marks().parent(channel);
        if remembered.is_some() {
            return remembered;
        }
        let parent = self.rest.thread_parent(channel).await;
        if let Some(parent) = parent {
            self.tracker.marks().thread_of(channel, parent);
        }
        parent
    }

    /// A button press: routed like a message in its channel, taken by the relay, answered.
    /// Before READY the bot's id is the application's (the same on Discord): a press must not
    /// wait for READY, its answer has 3 s.
    async fn take_press(&self, interaction: ComponentInteraction) {
        let received = Instant::now();
        let press = if self.stop.is_cancelled() {
            None
        } else {
            let parent = match (interaction.guild_id, press::known_parent(&interaction)) {
                (None, _) => None,
                (Some(_), Some(parent)) => parent,
                (Some(_), None) => {
                    let channel = interaction.channel_id.get();
                    tokio::time::timeout(PRESS_LOOKUP_WAIT, self.thread_parent(channel))
                        .await
                        .unwrap_or(None)
                }
            };
            let known = *self.bot.borrow();
            let bot = known.map_or(interaction.application_id.get(), UserId::get);
            press::to_press(&interaction, bot, parent)
        };
        press::take(self.sink.clone(), &self.rest, press, &interaction, received).await;
    }

    /// Hands `inbound` to the relay until it is stored (or refused, or known), or the relay
    /// stops. The gateway does not redeliver, so a failing store is waited out.
    async fn store(&self, inbound: InboundMessage, place: Place) -> Handled {
        let mut held = None;
        let mut backoff = FIRST_ACCEPT_BACKOFF;
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            match self.sink.accept(inbound.clone()).await {
                Ok(accepted) => {
                    self.tracker
                        .marks()
                        .stored(place.channel, place.guild, place.id);
                    tracing::debug!(message_id = place.id, ?accepted, "discord message stored");
                    return Handled::Done;
                }
                Err(error) => {
                    if held.is_none() {
                        held = self.hold();
                        if held.is_none() {
                            // Not marked stored: its channel's point stays before it.
                            tracing::warn!(message_id = place.id, channel_id = place.channel, error = %error, "cannot store a discord message, and too many wait; dropped (fetched again at the next READY)");
                            return Handled::Done;
                        }
                    }
                    // A store that stays down would repeat this every 10 s: a few lines suffice.
                    if attempt == 1 || attempt.is_multiple_of(30) {
                        tracing::warn!(message_id = place.id, attempt, error = %error, "cannot store a discord message; retrying until it is stored");
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => return Handled::Stopped,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// A new session: Discord replays nothing sent before it. Fetches what came after each
    /// known channel's point and hands it over like a gateway message.
    async fn backfill(&self) {
        let _one = self.backfilling.lock().await;
        if !self.tracker.ensure_loaded().await {
            tracing::warn!(
                "cannot read where the discord backfill starts; no backfill in this session"
            );
            return;
        }
        // Until a channel's fetch reaches its end, its point does not pass what was fetched.
        let points = self.tracker.marks().begin_backfill();
        if points.is_empty() {
            return;
        }
        tracing::info!(channels = points.len(), "discord backfill started");
        let mut fetched = 0;
        for point in points {
            match self.backfill_channel(point).await {
                Some(count) => fetched += count,
                None => return,
            }
        }
        tracing::info!(messages = fetched, "discord backfill finished");
    }

    /// Feeds what came after `point`, oldest first; how many messages, or `None` on stop. The
    /// channel's floor follows what was handed over, and goes once a page comes back short (the
    /// end); on any earlier exit it stays, and the next READY fetches from it.
    async fn backfill_channel(&self, point: Point) -> Option<usize> {
        let mut after = point.after;
        let mut fetched = 0;
        for _ in 0..MAX_PAGES {
            let mut page = match self.fetch_page(point.channel, after).await {
                Fetched::Page(page) => page,
                Fetched::GaveUp => return Some(fetched),
                Fetched::Stopped => return None,
            };
            let full = page.len() >= usize::from(PAGE);
            // Discord answers newest first; the relay takes a chat's messages in order.
            page.sort_by_key(|(id, _)| *id);
            let newest = page.last().map_or(after, |(id, _)| *id);
            for (id, message) in page {
                if id <= after {
                    continue;
                }
                let Some(mut message) = message else {
                    tracing::warn!(
                        channel_id = point.channel,
                        message_id = id,
                        "a fetched discord message does not decode; skipped"
                    );
                    self.tracker.marks().fetched(point.channel, id);
                    continue;
                };
                // Messages fetched over REST do not name their guild; the channel's first did.
                if message.guild_id.is_none() {
                    message.guild_id = point.guild.map(GuildId::new);
                }
                fetched += 1;
                if self.handle(message).await == Handled::Stopped {
                    return None;
                }
                // Stored, or not for the relay, or still held before its point: done with.
                self.tracker.marks().fetched(point.channel, id);
            }
            if !full {
                self.tracker.marks().fetched_all(point.channel);
                return Some(fetched);
            }
            if newest <= after {
                // A full page of nothing new: not the end as Discord tells it; the floor stays.
                return Some(fetched);
            }
            after = newest;
        }
        tracing::warn!(
            channel_id = point.channel,
            "more discord messages to backfill than one session fetches; the rest at the next READY"
        );
        Some(fetched)
    }

    /// One page of `channel`'s messages after `after`, retried a few times.
    async fn fetch_page(&self, channel: u64, after: u64) -> Fetched {
        let mut pause = FIRST_FETCH_PAUSE;
        for attempt in 1..=FETCH_ATTEMPTS {
            let wait = match self.rest.messages_after(channel, after, PAGE).await {
                Ok(reply) if (200..300).contains(&reply.status) => {
                    return match parse_page(&reply.body) {
                        Ok(page) => Fetched::Page(page),
                        Err(error) => {
                            tracing::warn!(channel_id = channel, error = %error, "cannot read a discord message history page");
                            Fetched::GaveUp
                        }
                    };
                }
                Ok(reply) if reply.status == 429 => {
                    let wait = match classify(429, reply.retry_after_header.as_deref(), &reply.body)
                    {
                        execrelay_channel::SendOutcome::RetryAfter(wait) => wait,
                        _ => pause,
                    };
                    if wait > MAX_FETCH_WAIT {
                        tracing::warn!(
                            channel_id = channel,
                            retry_after_ms = wait.as_millis() as u64,
                            "discord history rate-limited for long; this channel waits for the next READY"
                        );
                        return Fetched::GaveUp;
                    }
                    tracing::info!(
                        channel_id = channel,
                        retry_after_ms = wait.as_millis() as u64,
                        "discord history rate-limited"
                    );
                    wait
                }
                Ok(reply) if reply.status == 404 => {
                    tracing::info!(
                        channel_id = channel,
                        "discord channel gone; no more backfill for it"
                    );
                    self.tracker.marks().forget(channel);
                    return Fetched::GaveUp;
                }
                Ok(reply) if reply.status == 408 || reply.status >= 500 => {
                    tracing::warn!(
                        channel_id = channel,
                        status = reply.status,
                        attempt,
                        "cannot fetch discord message history"
                    );
                    pause
                }
                Ok(reply) => {
                    tracing::warn!(
                        channel_id = channel,
                        status = reply.status,
                        "discord refused its message history; skipped until the next READY"
                    );
                    return Fetched::GaveUp;
                }
                Err(error) => {
                    tracing::warn!(channel_id = channel, error = %error, attempt, "cannot fetch discord message history");
                    pause
                }
            };
            if attempt == FETCH_ATTEMPTS {
                break;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Fetched::Stopped,
                _ = tokio::time::sleep(wait) => {}
            }
            pause *= 2;
        }
        tracing::warn!(
            channel_id = channel,
            "discord message history unavailable; this channel waits for the next READY"
        );
        Fetched::GaveUp
    }
}

/// A history page as Discord sends it (a JSON array of messages). A message that does not
/// decode still gives its id, so that paging goes on past it.
fn parse_page(body: &[u8]) -> Result<Page, serde_json::Error> {
    let values: Vec<serde_json::Value> = serde_json::from_slice(body)?;
    Ok(values
        .into_iter()
        .filter_map(|value| {
            let id = value.get("id")?.as_str()?.parse::<u64>().ok()?;
            Some((id, serde_json::from_value::<Message>(value).ok()))
        })
        .collect())
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _context: Context, ready: Ready) {
        tracing::info!(bot = %ready.user.name, "discord gateway ready");
        self.bot.send_replace(Some(ready.user.id));
        // A new session (a resumed one gets its missed dispatches replayed instead).
        self.backfill().await;
    }

    async fn resume(&self, _context: Context, _event: ResumedEvent) {
        tracing::info!("discord gateway session resumed");
    }

    async fn message(&self, _context: Context, message: Message) {
        self.handle(message).await;
    }

    async fn interaction_create(&self, _context: Context, interaction: Interaction) {
        match interaction {
            Interaction::Component(interaction) => self.take_press(interaction).await,
            // Commands, modals, autocomplete: the relay registers none.
            _ => tracing::debug!("discord interaction that is no button press; ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: u64 = 900;

    #[test]
    fn a_snowflake_tells_when_it_was_made() {
        // The example in Discord's reference: 2016-04-30 11:18:25.796 UTC.
        assert_eq!(snowflake_millis(175_928_847_299_117_063), 1_462_015_105_796);
    }

    fn message(content: &str, guild: bool) -> Message {
        let mut d = json!({
            "id": "1001", "channel_id": "200",
            "author": {"id": "400", "username": "alice"}, "content": content,
            "timestamp": "2026-05-01T12:00:00.000000+00:00", "tts": false,
            "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
            "embeds": [], "pinned": false, "type": 0,
        });
        if guild {
            d["guild_id"] = json!("300");
        }
        serde_json::from_value(d).unwrap()
    }

    fn bot() -> UserId {
        UserId::new(BOT)
    }

    #[test]
    fn dms_are_direct_and_reply_to_the_message() {
        let inbound = to_inbound(&message("/exec ls", false), bot(), None, true).unwrap();
        assert_eq!(inbound.route.chat_type, ChatType::Direct);
        assert_eq!(inbound.route.chat_id, "200");
        assert_eq!(inbound.route.account, "900");
        assert_eq!(inbound.route.reply_to_message_id.as_deref(), Some("1001"));
        assert_eq!(inbound.sender_id, "400");
        assert_eq!(inbound.platform_message_id.as_deref(), Some("1001"));
        // Plain DM text is passed on: it records where the person last spoke.
        assert!(to_inbound(&message("hello", false), bot(), None, true).is_some());
    }

    #[test]
    fn guild_chatter_needs_a_mention_or_a_command() {
        assert!(to_inbound(&message("hello all", true), bot(), None, true).is_none());
        assert!(to_inbound(&message("hello all", true), bot(), None, false).is_some());
        let command = to_inbound(&message("/jobs", true), bot(), None, true).unwrap();
        assert_eq!(command.route.chat_type, ChatType::Group);
        let mentioned = to_inbound(&message("<@900> /exec ls", true), bot(), None, true).unwrap();
        assert_eq!(mentioned.text, "/exec ls");
        let nick = to_inbound(&message("<@!900>  /status", true), bot(), None, true).unwrap();
        assert_eq!(nick.text, "/status");
        assert!(to_inbound(&message("<@901> hi", true), bot(), None, true).is_none());
        assert!(to_inbound(&message("<@900>", true), bot(), None, true).is_none());
    }

    #[test]
    fn system_messages_are_not_commands() {
        // A thread created with the name "/exec …": Discord puts the name in `content`.
        let mut created = message("/exec rm -rf ~", true);
        created.kind = MessageType::ThreadCreated;
        assert!(to_inbound(&created, bot(), None, true).is_none());
        let mut reply = message("/jobs", true);
        reply.kind = MessageType::InlineReply;
        assert!(to_inbound(&reply, bot(), None, true).is_some());
    }

    #[test]
    fn threads_share_their_parents_chat() {
        let inbound = to_inbound(&message("/exec ls", true), bot(), Some(150), true).unwrap();
        assert_eq!(inbound.route.chat_id, "150");
        assert_eq!(inbound.route.thread_id.as_deref(), Some("200"));
    }

    #[test]
    fn a_file_sent_directly_has_no_text_and_elsewhere_is_skipped() {
        let attach = |guild| {
            let mut m = message("", guild);
            let file = json!({"id": "1", "filename": "a.png", "size": 1,
                              "url": "https://x/a.png", "proxy_url": "https://x/a.png"});
            m.attachments = vec![serde_json::from_value(file).unwrap()];
            m
        };
        let dm = to_inbound(&attach(false), bot(), None, true).unwrap();
        assert_eq!(dm.text, "");
        assert!(to_inbound(&attach(true), bot(), None, false).is_none());
        assert!(to_inbound(&message("", false), bot(), None, true).is_none());
    }

    #[test]
    fn bots_and_the_bot_itself_are_ignored() {
        let mut from_bot = message("/exec ls", false);
        from_bot.author.bot = true;
        assert!(to_inbound(&from_bot, bot(), None, true).is_none());
        let mut itself = message("/exec ls", false);
        itself.author.id = bot();
        assert!(to_inbound(&itself, bot(), None, true).is_none());
    }

    /// A relay that fails to store the first `failures` messages it is given.
    #[derive(Default)]
    struct Sink {
        failures: AtomicUsize,
        accepted: std::sync::Mutex<Vec<InboundMessage>>,
    }

    #[async_trait::async_trait]
    impl InboundSink for Sink {
        async fn accept(
            &self,
            message: InboundMessage,
        ) -> Result<execrelay_channel::Accepted, execrelay_channel::SinkError> {
            let failing = self
                .failures
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(execrelay_channel::SinkError::Unavailable("disk I/O".into()));
            }
            self.accepted.lock().unwrap().push(message);
            Ok(execrelay_channel::Accepted::Stored)
        }

        async fn load_state(
            &self,
            _key: &str,
        ) -> Result<Option<String>, execrelay_channel::SinkError> {
            Ok(None)
        }

        async fn save_state(
            &self,
            _key: &str,
            _value: &str,
        ) -> Result<(), execrelay_channel::SinkError> {
            Ok(())
        }
    }

    fn handler(failures: usize) -> (Arc<Handler>, Arc<Sink>) {
        let sink = Arc::new(Sink {
            failures: AtomicUsize::new(failures),
            ..Sink::default()
        });
        let token = execrelay_channel::Secret::new("test-token-value");
        // DMs need no REST call; nothing listens there.
        let rest = Arc::new(Rest::new(
            reqwest::Client::new(),
            "http://127.0.0.1:9",
            &token,
        ));
        let tracker = Arc::new(Tracker::new(sink.clone()));
        let handler = Handler::new(sink.clone(), rest, true, CancellationToken::new(), tracker);
        (Arc::new(handler), sink)
    }

    fn after(handler: &Handler, channel: u64) -> Option<u64> {
        let points = handler.tracker.marks().points();
        points
            .iter()
            .find(|p| p.channel == channel)
            .map(|p| p.after)
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_before_ready_waits_for_it() {
        let (handler, sink) = handler(0);
        let waiting = tokio::spawn({
            let handler = handler.clone();
            async move { handler.handle(message("/exec ls", false)).await }
        });
        // Far past the 10 s after which it used to be dropped.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(sink.accepted.lock().unwrap().is_empty());
        handler.bot.send_replace(Some(bot()));
        assert_eq!(waiting.await.unwrap(), Handled::Done);
        assert_eq!(sink.accepted.lock().unwrap().len(), 1);
        assert_eq!(after(&handler, 200), Some(1001));
        assert_eq!(handler.held.load(Ordering::Acquire), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_the_relay_cannot_store_is_retried_until_it_is() {
        let (handler, sink) = handler(50);
        handler.bot.send_replace(Some(bot()));
        assert_eq!(
            handler.handle(message("/exec ls", false)).await,
            Handled::Done
        );
        assert_eq!(
            sink.accepted.lock().unwrap().len(),
            1,
            "stored after 50 failures"
        );
        assert_eq!(after(&handler, 200), Some(1001));
        assert_eq!(handler.held.load(Ordering::Acquire), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_not_stored_at_stop_holds_its_channel_point() {
        let (handler, sink) = handler(usize::MAX);
        handler.bot.send_replace(Some(bot()));
        // A newer message of the same channel was stored meanwhile.
        handler.tracker.marks().stored(200, None, 1005);
        let retrying = tokio::spawn({
            let handler = handler.clone();
            async move { handler.handle(message("/exec ls", false)).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        handler.stop.cancel();
        assert_eq!(retrying.await.unwrap(), Handled::Stopped);
        assert!(sink.accepted.lock().unwrap().is_empty());
        assert_eq!(
            after(&handler, 200),
            Some(1000),
            "the next start fetches it again"
        );
    }

    /// While a guild message waits for its channel lookup (up to ~60 s when Discord is slow), a
    /// newer message in the channel (the bot's own reply, chatter) does not move the point past
    /// it: a save then followed by a crash would lose it.
    #[tokio::test]
    async fn a_message_waiting_for_its_thread_lookup_holds_its_point() {
        // A REST server that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                held.push(socket);
            }
        });
        let sink = Arc::new(Sink::default());
        let token = execrelay_channel::Secret::new("test-token-value");
        let rest = Arc::new(Rest::new(
            reqwest::Client::new(),
            &format!("http://{addr}"),
            &token,
        ));
        let tracker = Arc::new(Tracker::new(sink.clone()));
        let handler = Arc::new(Handler::new(
            sink.clone(),
            rest,
            true,
            CancellationToken::new(),
            tracker,
        ));
        handler.bot.send_replace(Some(bot()));
        // The channel is known: a message was stored there before.
        handler.tracker.marks().stored(200, Some(300), 1000);
        let handling = tokio::spawn({
            let handler = handler.clone();
            async move { handler.handle(message("/exec ls", true)).await } // id 1001, guild
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The bot's reply to an earlier command (not for the relay) arrives meanwhile.
        handler.tracker.marks().passed(200, 1005);
        let point = after(&handler, 200).unwrap();
        handling.abort();
        assert!(sink.accepted.lock().unwrap().is_empty());
        assert!(
            point < 1001,
            "the point ({point}) passed message 1001, not stored yet"
        );
    }

    #[test]
    fn a_history_page_decodes_and_keeps_ids_of_what_does_not() {
        let mut fetched = serde_json::to_value(message("/exec ls", false)).unwrap();
        fetched["id"] = json!("1002");
        let body = json!([fetched, {"id": "1001", "content": "half a message"}, {"no": "id"}]);
        let page = parse_page(body.to_string().as_bytes()).unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].0, 1002);
        assert_eq!(
            page[0].1.as_ref().map(|m| m.content.as_str()),
            Some("/exec ls")
        );
        assert_eq!(page[1].0, 1001);
        assert!(page[1].1.is_none());
        assert!(parse_page(b"{\"message\":\"Unknown Channel\"}").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_content_is_handled_without_panicking(content in "(?s).{0,200}", guild in proptest::bool::ANY) {
            let (stripped, _) = strip_mentions(&content, BOT);
            proptest::prop_assert!(!stripped.contains("<@900>"));
            if let Some(inbound) = to_inbound(&message(&content, guild), bot(), None, true) {
                proptest::prop_assert!(!inbound.text.is_empty());
                proptest::prop_assert_eq!(inbound.route.chat_type == ChatType::Group, guild);
            }
        }
    }
}
