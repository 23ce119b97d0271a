//! The signed probe `execrelay doctor` sends the receiver
//! ([`Channel::check`](execrelay_channel::Channel::check)): one POST to `callback_url` with the
//! body `{"probe": true}`, signed like every message (`X-Execrelay-Timestamp`,
//! `X-Execrelay-Signature`). A receiver should check the signature as for a message, then
//! answer a probe 2xx without showing anything to anyone (and 401 to a bad signature).
//!
//! What its answer means: 2xx, the receiver is there and took the signature; 401 or 403, it
//! refused the signature (another secret, or a clock more than 5 minutes off); 404, 405, 410 or
//! a redirect, nothing takes messages at that URL (redirects are not followed, so sends would
//! fail too); 5xx, 408 or no answer, the receiver is down. Any other 4xx (400, 422, ...) and
//! 429 only show the receiver is there: one that does not know probes may refuse the body
//! after it accepted the signature, or before checking it, so this is a warning.

use execrelay_channel::CheckOutcome;

use crate::config::redact_url;
use crate::outbound::WebhookChannel;

/// The probe's body.
pub const PROBE_BODY: &[u8] = br#"{"probe":true}"#;

/// Sends the probe once and says what its answer means.
pub(crate) async fn probe(channel: &WebhookChannel) -> CheckOutcome {
    let Some(url) = channel.config().callback_url.as_deref() else {
        return CheckOutcome::Warn {
            problem: "no callback_url: commands sent to the webhook run, but their replies and \
                      completions are dead-lettered"
                .into(),
            fix: "set channels.webhook.callback_url to the receiver's URL".into(),
        };
    };
    let shown = redact_url(url);
    let failed = |problem: String, fix: &str| CheckOutcome::Failed {
        problem,
        fix: fix.to_string(),
    };
    let response = match channel.post_signed(url, PROBE_BODY.to_vec()).await {
        Ok(response) => response,
        Err(why) => {
            return failed(
                format!("cannot reach the receiver: {why}"),
                "start the receiver, or set channels.webhook.callback_url to where it listens",
            );
        }
    };
    let status = response.status().as_u16();
    match status {
        200..=299 => CheckOutcome::Ok(format!(
            "the receiver at {shown} answered the signed probe with HTTP {status}"
        )),
        401 | 403 => failed(
            format!("the receiver at {shown} refused the probe's signature (HTTP {status})"),
            "give the receiver the relay's webhook secret (channels.webhook.secret, or the \
             generated one in the data directory's webhook.secret), and keep both clocks within \
             5 minutes",
        ),
        300..=399 | 404 | 405 | 410 => failed(
            format!(
                "nothing at {shown} takes messages (HTTP {status}; redirects are not followed)"
            ),
            "set channels.webhook.callback_url to the receiver's exact URL",
        ),
        408 | 500..=599 => failed(
            format!("the receiver at {shown} failed (HTTP {status})"),
            "look at the receiver's logs; the relay keeps messages and retries meanwhile",
        ),
        _ => CheckOutcome::Warn {
            problem: format!(
                "the receiver at {shown} is there but answered the probe HTTP {status}, so \
                 whether it takes the relay's signature is unknown"
            ),
            fix: "make the receiver answer a signed {\"probe\": true} with 2xx once it checked \
                  the signature"
                .into(),
        },
    }
}
