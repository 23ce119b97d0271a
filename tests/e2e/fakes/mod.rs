//! In-process fakes of the platforms the relay talks to. Each records every request and follows
//! a script of failures.

pub mod discord;
pub mod feishu;
pub mod receiver;
pub mod telegram;
