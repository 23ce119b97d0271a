//! The web console at `GET /`: one page, its script and its style, embedded in the binary
//! (`src/serve/console/`; no CDN, no build step), so it works offline and is the version of
//! the relay that serves it. The page holds no data and needs no token to load; every data
//! call it makes is a same-origin `fetch` to `/v1/*` with the bearer token the operator typed
//! (kept in the tab's `sessionStorage`, never in a URL). Each asset goes out with a strict CSP
//! (only this origin's script, style and API; no inline code, no frames, no forms),
//! `nosniff`, and no CORS header: another origin's page can neither read nor act on the API
//! (`api::require_token` refuses a foreign `Origin`).

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");
const FAVICON_SVG: &str = include_str!("console/favicon.svg");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// `/`, `/console.js`, `/console.css`, `/favicon.svg`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
