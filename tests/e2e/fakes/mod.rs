//! The in-process fakes of the platforms the relay talks to live in the `execrelay-fakes` crate
//! (`tests/fakes`, shared with the bench); this is where the tests find them, with the parts
//! that need the harness's `Relay`.

pub use execrelay_fakes::{discord, receiver, telegram};

pub mod feishu {
    pub use execrelay_fakes::feishu::*;
    use serde_json::Value;

    use crate::harness::Relay;

    /// Posts `event` to the relay as Feishu would: encrypted and signed.
    pub fn deliver(relay: &Relay, event: &Value, tamper: Tamper) -> (u16, Value) {
        let (headers, body) = signed_event(event, tamper);
        relay.post_raw(EVENTS_PATH, &headers, body)
    }
}
