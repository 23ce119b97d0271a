//! Ingest: what people say reaches the relay and becomes work. `inbound` checks access,
//! derives the session and stores each message once; `commands` turns stored messages into
//! jobs and replies; `presses` turns a button press into the command it stands for; `local`
//! is the conversation of `execrelay chat`.

pub mod commands;
pub mod inbound;
pub mod local;
pub mod presses;
