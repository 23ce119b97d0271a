//! Backfill: the messages the gateway never delivered.
//!
//! Discord does not replay a channel's messages to a new gateway session (only a resumed one
//! gets what it missed), so whatever was sent while the relay was down, or while its session
//! was being replaced, would never be seen. For the channels and DMs where a message for the
//! relay was received, [`Marks`] remembers the newest message that needs nothing more (stored
//! by the relay, or not for it); at every READY the handler fetches what came after it
//! (`GET /channels/{id}/messages?after=`) and feeds it through the same path as a gateway
//! `MESSAGE_CREATE`, where the relay's dedupe (by message id) drops what it already has.
//!
//! The marks live in memory and are kept across restarts through
//! [`InboundSink::save_state`], written at most every [`SAVE_EVERY`] when they changed and at
//! shutdown: after a crash the backfill fetches a few messages again and dedupe drops them. A
//! message for the relay that is not stored yet (waiting for READY, retrying a failing store, or
//! given up on) holds its channel's point before it, so a restart fetches it again.
//!
//! A channel whose backfill has not reached its end (the fetch gave up after 429s, errors or a
//! 403; the per-session page cap; a stop; or no backfill yet since its point was read back from
//! the store) keeps a floor, the newest message fetched: live traffic in the channel moves its
//! settled message on, but its point stays at the floor until a backfill gets a page shorter
//! than the limit, so the next READY fetches what was never fetched.
//!
//! Not covered: a channel where nothing for the relay was received before the session began
//! (a new DM sent while the relay was down), nor a message there dropped before READY (past
//! the handler's bound) or still waiting for READY at stop; and beyond [`MAX_CHANNELS`]
//! channels, the least recently active.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use execrelay_channel::InboundSink;
use serde::{Deserialize, Serialize};

/// The key of the marks in the relay's adapter state.
pub(crate) const STATE_KEY: &str = "discord.backfill";
/// How many channels are remembered: the most recently active.
pub(crate) const MAX_CHANNELS: usize = 100;
/// Messages of one channel not stored yet that are remembered one by one; past this the newest
/// are forgotten (the oldest still holds the channel's point, which covers them until it is
/// stored).
const MAX_UNSETTLED_PER_CHANNEL: usize = 1000;
/// How often changed marks are written (and once more at shutdown).
pub(crate) const SAVE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
struct Mark {
    /// The newest message that needs nothing more here: stored, or not for the relay.
    settled: u64,
    /// The channel's guild: messages fetched over REST do not name it.
    guild: Option<u64>,
    /// The channel's parent when it is a thread, as looked up once: a message fetched again in a
    /// later run maps to the same chat (the relay's dedupe is per chat) even if the lookup fails
    /// then.
    parent: Option<u64>,
    /// While a backfill has not reached the channel's end: the newest message it fetched (or
    /// where it started). The point never passes it.
    gap_after: Option<u64>,
    /// Messages seen here but not stored yet.
    unsettled: BTreeSet<u64>,
    /// Orders channels by activity: the least recent is forgotten first.
    active: u64,
}

impl Mark {
    /// The id to fetch after: the newest settled message, but before any that is not stored,
    /// and not past what a backfill that stopped early has not fetched.
    fn after(&self) -> u64 {
        let mut after = self.settled;
        if let Some(oldest) = self.unsettled.first() {
            after = after.min(oldest.saturating_sub(1));
        }
        if let Some(gap) = self.gap_after {
            after = after.min(gap);
        }
        after
    }

    /// Whether it holds something not fetched or not stored yet.
    fn holding(&self) -> bool {
        !self.unsettled.is_empty() || self.gap_after.is_some()
    }
}

/// A channel to backfill: its id, its guild (`None`: a DM), and the message id to fetch after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Point {
    pub channel: u64,
    pub guild: Option<u64>,
    pub after: u64,
}

/// Per channel, where its backfill starts. Snowflakes order by time, so "after" is one id.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    channels: HashMap<u64, Mark>,
    clock: u64,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    /// Most recently active first. Ids as strings, as Discord writes them.
    channels: Vec<SavedChannel>,
}

/// One channel as kept across restarts. `after` is also its floor: a channel read back counts
/// as not fetched past it until a backfill reaches its end.
#[derive(Serialize, Deserialize)]
struct SavedChannel {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guild: Option<String>,
    /// The parent channel, when this one is a thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    after: String,
}

impl Marks {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub(crate) fn known(&self, channel: u64) -> bool {
        self.channels.contains_key(&channel)
    }

    /// The mark of `channel`, made (as if everything before `id` were settled) when
    /// `create` is set, forgetting the least recently active channel when full.
    fn mark(
        &mut self,
        channel: u64,
        guild: Option<u64>,
        id: u64,
        create: bool,
    ) -> Option<&mut Mark> {
        if !self.channels.contains_key(&channel) {
            if !create {
                return None;
            }
            if self.channels.len() >= MAX_CHANNELS {
                // Channels still waiting for a message to be fetched or stored go last.
                let oldest = self
                    .channels
                    .iter()
                    .min_by_key(|(_, mark)| (mark.holding(), mark.active))
                    .map(|(id, _)| *id);
                if let Some(oldest) = oldest {
                    self.channels.remove(&oldest);
                }
            }
            let active = self.tick();
            self.channels.insert(
                channel,
                Mark {
                    settled: id.saturating_sub(1),
                    guild,
                    parent: None,
                    gap_after: None,
                    unsettled: BTreeSet::new(),
                    active,
                },
            );
        }
        let mark = self.channels.get_mut(&channel)?;
        if mark.guild.is_none() {
            mark.guild = guild;
        }
        Some(mark)
    }

    /// Message `id` in `channel` is not stored yet: the channel's point stays before it.
    /// `create`: it is for the relay, so its channel is remembered from now on; otherwise only
    /// a channel already remembered holds (a message before READY, not known to be for us).
    pub(crate) fn unsettled(&mut self, channel: u64, guild: Option<u64>, id: u64, create: bool) {
        // Also when older than the settled point: serenity handles dispatches concurrently, so
        // a newer message may be stored before an older one is seen, and the older one must
        // still be fetched again if it never gets stored.
        if let Some(mark) = self.mark(channel, guild, id, create) {
            mark.unsettled.insert(id);
            if mark.unsettled.len() > MAX_UNSETTLED_PER_CHANNEL {
                mark.unsettled.pop_last();
            }
        }
    }

    /// The relay stored message `id` (or had it already): its channel counts from now on.
    pub(crate) fn stored(&mut self, channel: u64, guild: Option<u64>, id: u64) {
        let active = self.tick();
        if let Some(mark) = self.mark(channel, guild, id, true) {
            mark.unsettled.remove(&id);
            // Never backwards: ids order by time, and a message handled late is older.
            mark.settled = mark.settled.max(id);
            mark.active = active;
        }
    }

    /// Message `id` is not for the relay: nothing to fetch again in a channel we remember.
    pub(crate) fn passed(&mut self, channel: u64, id: u64) {
        if let Some(mark) = self.channels.get_mut(&channel) {
            mark.unsettled.remove(&id);
            mark.settled = mark.settled.max(id);
        }
    }

    /// A channel that is gone (404 Unknown Channel).
    pub(crate) fn forget(&mut self, channel: u64) {
        self.channels.remove(&channel);
    }

    /// `channel` (remembered) is a thread of `parent`.
    pub(crate) fn thread_of(&mut self, channel: u64, parent: u64) {
        if let Some(mark) = self.channels.get_mut(&channel) {
            mark.parent = Some(parent);
        }
    }

    /// The parent of `channel` if it is remembered as a thread.
    pub(crate) fn parent(&self, channel: u64) -> Option<u64> {
        self.channels.get(&channel).and_then(|mark| mark.parent)
    }

    /// A backfill starts: every channel's point becomes its floor until the fetch reaches its
    /// end ([`Marks::fetched_all`]). Returns the points, as [`Marks::points`].
    pub(crate) fn begin_backfill(&mut self) -> Vec<Point> {
        for mark in self.channels.values_mut() {
            let after = mark.after();
            mark.gap_after = Some(mark.gap_after.map_or(after, |gap| gap.min(after)));
        }
        self.points()
    }

    /// The backfill fetched (and handed over) message `id` of `channel`: its floor moves up to
    /// it.
    pub(crate) fn fetched(&mut self, channel: u64, id: u64) {
        if let Some(mark) = self.channels.get_mut(&channel)
            && let Some(gap) = mark.gap_after.as_mut()
        {
            *gap = (*gap).max(id);
        }
    }

    /// The backfill reached the end of `channel` (a page shorter than the limit): no floor.
    pub(crate) fn fetched_all(&mut self, channel: u64) {
        if let Some(mark) = self.channels.get_mut(&channel) {
            mark.gap_after = None;
        }
    }

    /// The marks, most recently active first.
    fn by_activity(&self) -> Vec<(u64, &Mark)> {
        let mut marks: Vec<(u64, &Mark)> = self
            .channels
            .iter()
            .map(|(channel, mark)| (*channel, mark))
            .collect();
        marks.sort_by_key(|(_, mark)| std::cmp::Reverse(mark.active));
        marks
    }

    /// Every channel to backfill, most recently active first.
    pub(crate) fn points(&self) -> Vec<Point> {
        self.by_activity()
            .into_iter()
            .map(|(channel, mark)| Point {
                channel,
                guild: mark.guild,
                after: mark.after(),
            })
            .collect()
    }

    /// The marks as kept across restarts.
    pub(crate) fn encode(&self) -> String {
        let saved = Saved {
            channels: self
                .by_activity()
                .into_iter()
                .map(|(channel, mark)| SavedChannel {
                    id: channel.to_string(),
                    guild: mark.guild.map(|guild| guild.to_string()),
                    parent: mark.parent.map(|parent| parent.to_string()),
                    after: mark.after().to_string(),
                })
                .collect(),
        };
        serde_json::to_string(&saved).unwrap_or_default()
    }

    /// Adds marks kept by an earlier run. A channel known to both starts at the earlier point
    /// (fetching a few again is harmless; skipping some is not); channels of this run count as
    /// more recent. Every point read back is a floor until a backfill reaches the channel's
    /// end: what was sent after it while the relay was down is not fetched yet.
    pub(crate) fn merge(&mut self, encoded: &str) -> Result<(), serde_json::Error> {
        let saved: Saved = serde_json::from_str(encoded)?;
        let parse = |text: &str| text.parse::<u64>().ok();
        let loaded: Vec<(u64, Option<u64>, Option<u64>, u64)> = saved
            .channels
            .iter()
            .filter_map(|c| {
                Some((
                    parse(&c.id)?,
                    c.guild.as_deref().and_then(parse),
                    c.parent.as_deref().and_then(parse),
                    parse(&c.after)?,
                ))
            })
            .take(MAX_CHANNELS)
            .collect();
        let shift = loaded.len() as u64;
        for mark in self.channels.values_mut() {
            mark.active += shift;
        }
        self.clock += shift;
        // Oldest first, so that when full the least recent are the ones forgotten.
        for (rank, (channel, guild, parent, after)) in loaded.into_iter().rev().enumerate() {
            let room = self.channels.len() < MAX_CHANNELS;
            match self.channels.get_mut(&channel) {
                Some(mark) => {
                    mark.settled = mark.settled.min(after);
                    mark.gap_after = Some(mark.gap_after.map_or(after, |gap| gap.min(after)));
                    if mark.guild.is_none() {
                        mark.guild = guild;
                    }
                    if mark.parent.is_none() {
                        mark.parent = parent;
                    }
                }
                None if room => {
                    self.channels.insert(
                        channel,
                        Mark {
                            settled: after,
                            guild,
                            parent,
                            gap_after: Some(after),
                            unsettled: BTreeSet::new(),
                            active: rank as u64 + 1,
                        },
                    );
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// The marks, loaded from and written to the relay's adapter state.
pub(crate) struct Tracker {
    marks: Mutex<Marks>,
    sink: Arc<dyn InboundSink>,
    /// Whether the earlier run's marks were read: until then nothing is written, so that a
    /// store that failed at start cannot make the relay forget them.
    loaded: tokio::sync::Mutex<bool>,
    /// The text written last; also keeps two writes from racing.
    written: tokio::sync::Mutex<Option<String>>,
    /// Whether the last read or write failed: a store that stays down is said once, not at
    /// every tick.
    failing: AtomicBool,
}

impl Tracker {
    pub(crate) fn new(sink: Arc<dyn InboundSink>) -> Tracker {
        Tracker {
            marks: Mutex::new(Marks::default()),
            sink,
            loaded: tokio::sync::Mutex::new(false),
            written: tokio::sync::Mutex::new(None),
            failing: AtomicBool::new(false),
        }
    }

    /// The marks, for a short synchronous update (never held across an await).
    pub(crate) fn marks(&self) -> MutexGuard<'_, Marks> {
        // A panic elsewhere while updating leaves marks that are still usable.
        self.marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the earlier run's marks once; `false` while the store cannot be read.
    pub(crate) async fn ensure_loaded(&self) -> bool {
        let mut loaded = self.loaded.lock().await;
        if *loaded {
            return true;
        }
        match self.sink.load_state(STATE_KEY).await {
            Ok(Some(text)) => {
                if let Err(error) = self.marks().merge(&text) {
                    // Written by us; unreadable means damaged: start over rather than never
                    // write again.
                    tracing::warn!(error = %error, "discord backfill points unreadable; starting without them");
                }
                *self.written.lock().await = Some(text);
            }
            Ok(None) => {}
            Err(error) => {
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %error, "cannot read the discord backfill points yet");
                }
                return false;
            }
        }
        self.failing.store(false, Ordering::Release);
        *loaded = true;
        true
    }

    /// Writes the marks if they changed since the last write.
    pub(crate) async fn save(&self) {
        if !self.ensure_loaded().await {
            return;
        }
        let mut written = self.written.lock().await;
        let text = self.marks().encode();
        if written.as_deref() == Some(text.as_str()) {
            return;
        }
        match self.sink.save_state(STATE_KEY, &text).await {
            Ok(()) => {
                *written = Some(text);
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("discord backfill points saved again");
                }
            }
            // Kept in memory; the next tick tries again.
            Err(error) => {
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %error, "cannot save the discord backfill points; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(marks: &Marks, channel: u64) -> Option<u64> {
        marks
            .points()
            .into_iter()
            .find(|p| p.channel == channel)
            .map(|p| p.after)
    }

    #[test]
    fn only_channels_with_a_message_for_the_relay_count() {
        let mut marks = Marks::default();
        marks.passed(10, 500);
        marks.unsettled(10, None, 501, false);
        assert!(marks.points().is_empty(), "chatter in an unknown channel");
        marks.stored(10, Some(3), 502);
        assert_eq!(
            marks.points(),
            vec![Point {
                channel: 10,
                guild: Some(3),
                after: 502
            }]
        );
        // The bot's own replies and chatter move it on.
        marks.passed(10, 600);
        assert_eq!(point(&marks, 10), Some(600));
    }

    #[test]
    fn the_point_never_passes_a_message_not_stored_and_never_goes_back() {
        let mut marks = Marks::default();
        marks.stored(10, None, 100);
        marks.unsettled(10, None, 110, true);
        marks.stored(10, None, 120);
        assert_eq!(point(&marks, 10), Some(109), "110 is not stored yet");
        marks.stored(10, None, 110);
        assert_eq!(point(&marks, 10), Some(120));
        // A message handled late (older) does not move it back.
        marks.stored(10, None, 105);
        assert_eq!(point(&marks, 10), Some(120));
        // One handled after a newer one was stored, and not stored yet: back before it.
        marks.unsettled(10, None, 90, true);
        assert_eq!(point(&marks, 10), Some(89));
        marks.stored(10, None, 90);
        assert_eq!(point(&marks, 10), Some(120));
        // A first message that fails to store makes its channel count, before it.
        marks.unsettled(20, None, 300, true);
        assert_eq!(point(&marks, 20), Some(299));
    }

    #[test]
    fn a_backfill_that_stops_early_keeps_its_floor_until_one_reaches_the_end() {
        let mut marks = Marks::default();
        marks.stored(10, None, 100);
        marks.stored(20, None, 200);
        let points = marks.begin_backfill();
        assert_eq!(points.len(), 2);
        // Channel 10: two messages fetched, then the fetch gave up.
        marks.fetched(10, 120);
        marks.fetched(10, 130);
        // Live traffic there (stored, and the bot's own reply) does not move the point past
        // what was never fetched.
        marks.stored(10, None, 400);
        marks.passed(10, 401);
        assert_eq!(point(&marks, 10), Some(130));
        // Nor does it after a restart.
        let mut later = Marks::default();
        later.merge(&marks.encode()).unwrap();
        later.stored(10, None, 500);
        assert_eq!(point(&later, 10), Some(130));
        // Channel 20 reached its end: live traffic moves it on.
        marks.fetched(20, 210);
        marks.fetched_all(20);
        marks.stored(20, None, 300);
        assert_eq!(point(&marks, 20), Some(300));
        // The next backfill of channel 10 reaches its end: the floor goes.
        marks.begin_backfill();
        marks.fetched(10, 300);
        marks.fetched_all(10);
        assert_eq!(point(&marks, 10), Some(401));
        // A forgotten channel is not made again.
        marks.forget(10);
        marks.fetched(10, 600);
        marks.fetched_all(10);
        assert!(!marks.known(10));
    }

    #[test]
    fn points_read_back_hold_until_a_backfill_reaches_the_end() {
        let mut marks = Marks::default();
        marks.stored(10, None, 100);
        let text = marks.encode();
        // The store could not be read at READY: no backfill; a live message is stored first.
        let mut later = Marks::default();
        later.stored(10, None, 300);
        later.stored(20, None, 400);
        later.merge(&text).unwrap();
        later.stored(10, None, 310);
        assert_eq!(
            point(&later, 10),
            Some(100),
            "a later READY fetches from here"
        );
        assert_eq!(point(&later, 20), Some(400), "a channel of this run only");
        later.begin_backfill();
        later.fetched_all(10);
        assert_eq!(point(&later, 10), Some(310));
    }

    /// A store whose reads fail the first `unreadable` times; keeps what is written.
    struct Store {
        unreadable: std::sync::atomic::AtomicUsize,
        value: Mutex<Option<String>>,
        writes: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl InboundSink for Store {
        async fn accept(
            &self,
            _message: execrelay_channel::InboundMessage,
        ) -> Result<execrelay_channel::Accepted, execrelay_channel::SinkError> {
            Ok(execrelay_channel::Accepted::Stored)
        }

        async fn load_state(
            &self,
            _key: &str,
        ) -> Result<Option<String>, execrelay_channel::SinkError> {
            let failing = self
                .unreadable
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(execrelay_channel::SinkError::Unavailable("disk I/O".into()));
            }
            Ok(self.value.lock().unwrap().clone())
        }

        async fn save_state(
            &self,
            _key: &str,
            value: &str,
        ) -> Result<(), execrelay_channel::SinkError> {
            self.writes.fetch_add(1, Ordering::AcqRel);
            *self.value.lock().unwrap() = Some(value.to_string());
            Ok(())
        }
    }

    #[tokio::test]
    async fn points_that_cannot_be_read_are_never_overwritten_and_hold_once_read() {
        let mut earlier = Marks::default();
        earlier.stored(10, None, 100);
        let store = Arc::new(Store {
            unreadable: 3.into(),
            value: Mutex::new(Some(earlier.encode())),
            writes: 0.into(),
        });
        let tracker = Tracker::new(store.clone());
        // No backfill this session (the READY found them unreadable); live traffic goes on.
        assert!(!tracker.ensure_loaded().await);
        tracker.marks().stored(10, None, 300);
        tracker.marks().stored(20, None, 400);
        tracker.save().await;
        tracker.save().await;
        assert_eq!(store.writes.load(Ordering::Acquire), 0, "nothing written");
        // Readable again: the earlier point holds against this session's traffic.
        tracker.save().await;
        tracker.marks().stored(10, None, 310);
        tracker.save().await;
        let mut next = Marks::default();
        next.merge(store.value.lock().unwrap().as_deref().unwrap())
            .unwrap();
        assert_eq!(
            point(&next, 10),
            Some(100),
            "the next READY fetches from here"
        );
        assert_eq!(point(&next, 20), Some(400));
    }

    #[test]
    fn the_least_recently_active_channel_is_forgotten() {
        let mut marks = Marks::default();
        for channel in 0..MAX_CHANNELS as u64 {
            marks.stored(channel, None, 1000 + channel);
        }
        marks.stored(0, None, 5000);
        marks.stored(999, None, 6000);
        assert_eq!(marks.points().len(), MAX_CHANNELS);
        assert!(marks.known(0) && !marks.known(1) && marks.known(999));
        assert_eq!(marks.points()[0].channel, 999, "most recent first");
    }

    #[test]
    fn marks_survive_a_restart_and_merge_to_the_earlier_point() {
        let mut marks = Marks::default();
        marks.stored(10, Some(3), 100);
        marks.stored(20, None, 220);
        marks.unsettled(20, None, 210, true);
        marks.stored(30, Some(3), 300);
        marks.thread_of(30, 15);
        marks.thread_of(40, 15);
        assert!(!marks.known(40), "only a remembered channel");
        let text = marks.encode();

        let mut later = Marks::default();
        // This run already saw a newer message in channel 10 before it read the old marks.
        later.stored(10, None, 150);
        later.merge(&text).unwrap();
        assert_eq!(point(&later, 10), Some(100), "the earlier point wins");
        assert_eq!(later.points()[0].guild, Some(3));
        assert_eq!(point(&later, 20), Some(209));
        assert_eq!(later.parent(30), Some(15), "a thread's parent survives");
        assert_eq!(later.parent(10), None);
        assert_eq!(
            later.points()[0].channel,
            10,
            "this run's channel is the most recent"
        );
        assert!(later.merge("not json").is_err());
        assert!(
            later
                .merge(r#"{"channels":[{"id":"x","after":"1"}]}"#)
                .is_ok()
        );
    }
}
