//! Which clients the API answers, by the request's `Host` and `Origin`: with a configured
//! token, any client but a web page of another origin; with the generated one, only clients
//! on this machine (a loopback `Host`). The one web page answered is the relay's own console
//! (`serve::console`): the very origin the request is addressed to. A browser also keeps
//! another origin's page from reading any answer, since the API never sends a CORS header.

use axum::http::{HeaderMap, header};

/// Without a configured token, only requests addressed to a loopback name: a page from
/// another name that resolves here (DNS rebinding) is refused before its token is looked at.
fn is_loopback_host(headers: &HeaderMap) -> bool {
    let name = name_of(host(headers));
    // An address, not a name that merely starts like one (`127.0.0.1.evil.example` resolves
    // wherever its owner likes).
    name == "localhost"
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A page at `localhost` may not be the relay's: browsers try `::1` first, where another
/// local user can listen while the relay holds 127.0.0.1. The console is opened at the
/// address the relay listens on.
fn names_localhost(authority: &str) -> bool {
    name_of(authority).eq_ignore_ascii_case("localhost")
}

/// The name in a `Host` or an origin's authority, without its port.
fn name_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => authority,
    }
}

fn host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Sent by no web page (no `Origin`, as the CLI and scripts), or by the console this listener
/// serves: an `Origin` that is the very origin the request is addressed to (`http://` and its
/// `Host`), and no `Sec-Fetch-Site` other than `same-origin`. Every other page is refused
/// (CSRF, a page reading the API); with no CORS header ever sent, a browser keeps another
/// origin from reading an answer anyway.
pub fn is_own_page_or_no_page(headers: &HeaderMap) -> bool {
    let origin_ok = match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => origin
            .to_str()
            .ok()
            .and_then(|origin| origin.strip_prefix("http://"))
            .is_some_and(|authority| {
                !authority.is_empty() && authority == host(headers) && !names_localhost(authority)
            }),
    };
    let site_ok = headers
        .get("sec-fetch-site")
        .is_none_or(|site| site == "same-origin" || site == "none");
    origin_ok && site_ok
}

/// Without a configured token, only local clients: addressed to a loopback name, and no other
/// web page than the console.
pub fn is_local_client(headers: &HeaderMap) -> bool {
    is_loopback_host(headers) && is_own_page_or_no_page(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn tokenless_api_answers_only_local_clients_and_the_console() {
        assert!(is_local_client(&headers(&[(
            header::HOST,
            "127.0.0.1:8787"
        )])));
        assert!(is_local_client(&headers(&[(
            header::HOST,
            "localhost:8787"
        )])));
        assert!(is_local_client(&headers(&[(header::HOST, "[::1]:8787")])));
        assert!(!is_local_client(&headers(&[(
            header::HOST,
            "evil.example:8787"
        )])));
        assert!(!is_local_client(&headers(&[(
            header::HOST,
            "localhost.evil.example"
        )])));
        assert!(!is_local_client(&headers(&[(
            header::HOST,
            "127.0.0.1.evil.example:8787"
        )])));
        assert!(is_local_client(&headers(&[(header::HOST, "127.0.0.2")])));
        assert!(!is_local_client(&headers(&[
            (header::HOST, "127.0.0.1:8787"),
            (header::ORIGIN, "http://evil.example"),
        ])));
        assert!(!is_local_client(&HeaderMap::new()));
        // The console: its own origin, and no other (another port is another origin).
        assert!(is_local_client(&headers(&[
            (header::HOST, "127.0.0.1:8787"),
            (header::ORIGIN, "http://127.0.0.1:8787"),
            (
                header::HeaderName::from_static("sec-fetch-site"),
                "same-origin"
            ),
        ])));
        for (origin, site) in [
            ("http://127.0.0.1:9999", "same-site"),
            ("http://localhost:8787", "cross-site"),
            ("https://127.0.0.1:8787", "cross-site"),
            ("null", "cross-site"),
            ("http://127.0.0.1:8787.evil.example", "cross-site"),
        ] {
            assert!(
                !is_local_client(&headers(&[
                    (header::HOST, "127.0.0.1:8787"),
                    (header::ORIGIN, origin),
                ])),
                "{origin}"
            );
            assert!(
                !is_own_page_or_no_page(&headers(&[
                    (header::HOST, "127.0.0.1:8787"),
                    (header::HeaderName::from_static("sec-fetch-site"), site),
                ])),
                "{site}"
            );
        }
        // Rebinding: a foreign name that resolves here, asked from its own page.
        assert!(!is_local_client(&headers(&[
            (header::HOST, "evil.example:8787"),
            (header::ORIGIN, "http://evil.example:8787"),
        ])));
        // A page at `localhost` may be another user's on ::1: the console is at 127.0.0.1.
        assert!(!is_own_page_or_no_page(&headers(&[
            (header::HOST, "localhost:8787"),
            (header::ORIGIN, "http://localhost:8787"),
        ])));
        assert!(is_own_page_or_no_page(&headers(&[
            (header::HOST, "127.0.0.1:8787"),
            (header::ORIGIN, "http://127.0.0.1:8787"),
        ])));
    }
}
