//! Deliver: completions and replies reach their chat. `heartbeat` turns queued events into
//! messages at the right moment, `target` says where, `outbox` writes them durably (chunked by
//! `chunk`), `delivery` sends them per channel and chat, in order, `channel_health` says
//! which channels fail as a whole, and `progress` edits running jobs' acknowledgements, a lane
//! beside the outbox that never holds it back.

pub mod channel_health;
pub mod chunk;
pub mod delivery;
pub mod heartbeat;
pub mod outbox;
pub mod progress;
pub mod target;
