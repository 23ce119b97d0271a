//! How the console proves it holds the API token without sending it. A tab left open keeps
//! calling the API; if the relay stops and another local user takes its port, a bearer token
//! would go to them with the next call. The console instead signs each call:
//!
//! ```text
//! Authorization: Execrelay-Proof t=<unix seconds>,n=<nonce>,mac=<hex HMAC-SHA256(token,
//!     "<t>\n<nonce>\n<METHOD>\n<path and query>")>
//! ```
//!
//! A proof names one request (method, path and query) at one moment: the relay takes it
//! within [`WINDOW_SECS`] of its own clock and once only, so whoever receives one can neither
//! learn the token from it nor turn it into another request.

use std::collections::HashMap;
use std::sync::Mutex;

use execrelay_channel::{Secret, constant_time_eq};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SCHEME: &str = "Execrelay-Proof ";
/// How far a proof's time may be from the relay's, either way.
pub const WINDOW_SECS: i64 = 30;
/// Proofs remembered against replay at most (a console makes a few a second).
const MAX_REMEMBERED: usize = 20_000;

#[derive(Default)]
pub struct Proofs {
    /// Each proof taken, with its time: refused again until it is out of the window.
    taken: Mutex<HashMap<String, i64>>,
}

impl Proofs {
    /// Whether `presented` (after [`SCHEME`]) proves `token` for this request, now, for the
    /// first time.
    pub fn admit(
        &self,
        token: &Secret,
        presented: &str,
        method: &str,
        path_and_query: &str,
        now_secs: i64,
    ) -> bool {
        let Some((time, nonce, mac)) = parse(presented) else {
            return false;
        };
        if token.is_empty() || (now_secs - time).abs() > WINDOW_SECS {
            return false;
        }
        let expected = sign(token.expose(), time, nonce, method, path_and_query);
        if !constant_time_eq(expected.as_bytes(), mac.to_ascii_lowercase().as_bytes()) {
            return false;
        }
        let Ok(mut taken) = self.taken.lock() else {
            return false;
        };
        taken.retain(|_, at| (now_secs - *at).abs() <= WINDOW_SECS);
        if taken.len() >= MAX_REMEMBERED || taken.contains_key(&expected) {
            return false;
        }
        taken.insert(expected, time);
        true
    }
}

/// `t=<seconds>,n=<nonce: 8 to 64 letters or digits>,mac=<64 hex>`.
fn parse(presented: &str) -> Option<(i64, &str, &str)> {
    let mut parts = presented.trim().split(',').map(str::trim);
    let time = parts.next()?.strip_prefix("t=")?.parse().ok()?;
    let nonce = parts.next()?.strip_prefix("n=")?;
    let mac = parts.next()?.strip_prefix("mac=")?;
    let nonce_ok =
        (8..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric());
    (parts.next().is_none() && nonce_ok && mac.len() == 64).then_some((time, nonce, mac))
}

/// The proof of `token` for one request at `time`, as the console computes it (the nonce
/// tells two like requests in one second apart).
pub fn sign(token: &str, time: i64, nonce: &str, method: &str, path_and_query: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(format!("{time}\n{nonce}\n{method}\n{path_and_query}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_admits_its_one_request_once_within_the_window() {
        let token = Secret::new("tok-123");
        let proofs = Proofs::default();
        let mac = sign("tok-123", 1000, "abcd1234", "GET", "/v1/jobs");
        let header = format!("t=1000,n=abcd1234,mac={mac}");
        assert!(
            !proofs.admit(&token, &header, "POST", "/v1/jobs", 1000),
            "another method"
        );
        assert!(
            !proofs.admit(&token, &header, "GET", "/v1/routes", 1000),
            "another path"
        );
        assert!(
            !proofs.admit(&token, &header, "GET", "/v1/jobs", 1031),
            "too late"
        );
        assert!(!proofs.admit(&Secret::new("other"), &header, "GET", "/v1/jobs", 1000));
        assert!(proofs.admit(&token, &header, "GET", "/v1/jobs", 1010));
        assert!(
            !proofs.admit(&token, &header, "GET", "/v1/jobs", 1010),
            "replayed"
        );
        assert!(!proofs.admit(&token, "t=1000,n=abcd1234,mac=zz", "GET", "/v1/jobs", 1000));
        let no_nonce = format!("t=1000,mac={mac}");
        assert!(!proofs.admit(&token, &no_nonce, "GET", "/v1/jobs", 1000));
        assert!(!proofs.admit(&Secret::default(), &header, "GET", "/v1/jobs", 1000));
        // The console's hex may come in either case.
        let upper = format!(
            "t=1001,n=abcd1234,mac={}",
            sign("tok-123", 1001, "abcd1234", "GET", "/v1/jobs").to_uppercase()
        );
        assert!(proofs.admit(&token, &upper, "GET", "/v1/jobs", 1001));
    }
}
