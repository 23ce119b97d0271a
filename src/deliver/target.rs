//! Target resolution: where a session's queued event goes (§6 of the relay semantics).
//!
//! `last` (default) is the session's last route at delivery time; `origin` the route that
//! started the job; `none` delivers nothing (events stay queued, visibly); `<channel>:<chat_id>`
//! an explicit chat. No route is a visible `no-route` state, retried when the session speaks;
//! never a placeholder address.

use execrelay_channel::{ChatType, Route};

use crate::config::TargetPolicy;

/// Why an event waits when its session has spoken nowhere yet.
pub const NO_ROUTE: &str = "no-route";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Route(Route),
    /// Why the event waits; shown by the API and CLI.
    Blocked(String),
}

pub fn resolve(policy: &TargetPolicy, last: Option<&Route>, origin: Option<&Route>) -> Resolution {
    let found = match policy {
        TargetPolicy::Last => last.cloned(),
        // An event with no origin (a CLI notice) falls back to the last route.
        TargetPolicy::Origin => origin.or(last).cloned(),
        TargetPolicy::None => return Resolution::Blocked("target none".into()),
        TargetPolicy::Explicit { channel, chat_id } => Some(Route {
            channel: channel.clone(),
            account: String::new(),
            chat_id: chat_id.clone(),
            thread_id: None,
            reply_to_message_id: None,
            chat_type: ChatType::Group,
        }),
    };
    match found {
        // A completion is not a reply to the message that happened to come last.
        Some(route) => Resolution::Route(Route {
            reply_to_message_id: None,
            ..route
        }),
        None => Resolution::Blocked(NO_ROUTE.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(chat: &str) -> Route {
        Route {
            channel: "webhook".into(),
            account: String::new(),
            chat_id: chat.into(),
            thread_id: Some("t".into()),
            reply_to_message_id: Some("m".into()),
            chat_type: ChatType::Direct,
        }
    }

    #[test]
    fn last_uses_the_last_route_without_reply() {
        let resolved = resolve(&TargetPolicy::Last, Some(&route("b")), Some(&route("a")));
        let Resolution::Route(r) = resolved else {
            panic!()
        };
        assert_eq!(r.chat_id, "b");
        assert_eq!(r.thread_id.as_deref(), Some("t"));
        assert_eq!(r.reply_to_message_id, None);
    }

    #[test]
    fn origin_and_fallbacks() {
        let Resolution::Route(r) =
            resolve(&TargetPolicy::Origin, Some(&route("b")), Some(&route("a")))
        else {
            panic!()
        };
        assert_eq!(r.chat_id, "a");
        assert_eq!(
            resolve(&TargetPolicy::Last, None, Some(&route("a"))),
            Resolution::Blocked("no-route".into())
        );
        assert_eq!(
            resolve(&TargetPolicy::None, Some(&route("b")), None),
            Resolution::Blocked("target none".into())
        );
    }
}
