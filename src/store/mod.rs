//! The store: every SQL statement in execrelay lives under this module, in `sqlite/` (the
//! only place that names `rusqlite`); `types.rs` holds the domain types it speaks in.
//!
//! The rest of the relay sees domain operations ("accept this inbound message", "finish this job
//! and queue its completion", "consume these events into this outbox row"), never SQL, so that a
//! PostgreSQL backend can replace SQLite behind the same methods.
//!
//! Tables (see `schema.rs`): `routes` (last route per session), `inbound_seen` (dedupe),
//! `inbox` (accepted messages not yet processed), `jobs` (the ledger), `events` (the system-event
//! queue), `outbox` + `outbox_chunks` (deliveries with per-chunk progress).
//!
//! Which transaction does what (each method is one transaction; see `engine.rs` for batching):
//! - `accept_inbound`: dedupe row + inbox row + last-route upsert. Crash before: the platform
//!   redelivers. Crash after: the command runs on restart, once.
//! - `finish_inbox`: inbox row processed + new job (`starting`) + its replies in the outbox.
//!   Crash after it but before the spawn: restart finds the job `starting` with no job directory
//!   and spawns it; with a directory, it re-attaches or reports `lost`.
//! - `finish_job`: final job state + its `exec:<id>` event (unique: at most one per job).
//! - `consume_events`: events still queued → consumed + their outbox rows; conditional, so a
//!   concurrent consumer makes it fail instead of sending twice.
//! - `claim_due` (or `claim_probe`, one chunk while the channel fails) / `record_outcome`: a
//!   lease on the head chunk of each chat, then the send's result. No send happens inside a
//!   transaction. Crash mid-send: the lease is released at start-up (same node) or expires,
//!   and the chunk is sent again with the same key. `recover_channel`: the chunks that waited
//!   for their channel are due again.
//! - Operators (`retry_dead`, `retry_all_dead`, `retry_unconfigured`, `drop_outbox`,
//!   `drop_event`): a retried dead letter moves to the back of its chat's queue (a new row id,
//!   the same key) with fresh attempts, due now; a dropped message or event becomes `dropped`,
//!   never deleted here: the newest message row's id is the next key, and an event leaves the
//!   queue only into the outbox or by such a recorded drop (its `event_keys` entry stays, so a
//!   completion is never queued twice).

mod sqlite;
mod types;

pub use sqlite::{Store, backup};
pub use types::*;

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model_tests;
