//! The web console (issue 17) in a real browser: headless Chromium over WebDriver
//! (`browser.rs`) against the running relay. The page loads with no console error; with the
//! token typed in it shows a job started through the webhook, its tail as it grows, [Kill],
//! the completion and where it went, a dead letter retried with [Retry], and the routes;
//! a screenshot of each view goes to `target/console-screenshots/`. A page from another
//! origin can neither read nor act on the API.

use std::io::{Read, Write};
use std::net::TcpListener;

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::fakes::receiver::Receiver;
use crate::harness::*;

/// A job that prints a line, waits for `gate1`, prints another, waits for `gate2`, and ends:
/// each step of its tail happens when the test says.
fn two_step_exec(gate1: &str, gate2: &str) -> String {
    format!(
        "/exec sh -c 'echo first-line; for i in $(seq 1 400); do [ -f {gate1} ] && break; \
         sleep 0.05; done; echo second-line; for i in $(seq 1 400); do [ -f {gate2} ] && \
         break; sleep 0.05; done; echo last-line'"
    )
}

/// Serves `body` as an HTML page to every request on a port of its own: another origin.
fn other_origin(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[track_caller]
fn assert_no_console_errors(browser: &Browser) {
    let errors: Vec<String> = browser
        .console_log()
        .into_iter()
        .filter(|line| line.starts_with("SEVERE") || line.starts_with("WARNING"))
        .collect();
    assert!(errors.is_empty(), "the console logged errors: {errors:#?}");
}

#[test]
fn console_shows_jobs_tail_completion_and_retries_a_dead_letter_in_chromium() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let origin = format!("http://{}", relay.addr);
    let browser = Browser::start();

    browser.goto(&format!("{origin}/"));
    assert_eq!(browser.text("h1"), "execrelay");
    browser.screenshot("console-login", None);

    let job = relay.start_job(
        &rx,
        &dm("console-room", "alice", &two_step_exec("g1", "g2")),
    );
    browser.type_into("#token", &relay.api_token());
    browser.click("#connect");
    let row = format!("#running-rows tr[data-job=\"{}\"]", job.id);
    browser.wait_text("the running job", &row, |t| {
        t.contains("first-line") || t.contains("alice")
    });
    browser.wait_text("the first line of the tail", "#tail-text", |t| {
        t.contains("first-line")
    });
    browser.screenshot("console-running", Some("#running"));
    browser.screenshot("console-tail-1", Some("#tail"));
    relay.open_gate("g1");
    browser.wait_text("the tail growing", "#tail-text", |t| {
        t.contains("second-line")
    });
    browser.screenshot("console-tail-2", Some("#tail"));

    // [Kill] on a second job; it ends killed and its completion goes out.
    let doomed = relay.start_job(&rx, &dm("console-room", "alice", &gated_exec("never", "x")));
    let kill = format!("#running-rows tr[data-job=\"{}\"] button", doomed.id);
    browser.wait_text("the second job's [Kill]", &kill, |t| t == "Kill");
    browser.click(&kill);
    let doomed_row = format!("#finished-rows tr[data-job=\"{}\"]", doomed.id);
    browser.wait_text("the killed job finished", &doomed_row, |t| {
        t.contains("killed")
    });

    relay.open_gate("g2");
    let done_row = format!("#finished-rows tr[data-job=\"{}\"]", job.id);
    browser.wait_text("the job's completion delivered", &done_row, |t| {
        t.contains("exit 0") && t.contains("delivered via webhook at ")
    });
    rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    rx.wait_for_message("the killed job's completion", SOON, |d| {
        is_completion_of(&d.text, &doomed.id)
    });
    browser.screenshot("console-finished", Some("#finished"));

    // A completion the receiver refuses for good: dead, then retried from the page.
    let refused = relay.start_job(
        &rx,
        &dm("console-room", "alice", &gated_exec("g3", "refused")),
    );
    rx.respond_next(1, 403, &[]);
    relay.open_gate("g3");
    browser.wait_text("the dead letter", "#dead-rows", |t| t.contains("403"));
    browser.wait_text("the channel's dead count", "#channel-rows", |t| {
        t.contains("webhook")
    });
    browser.screenshot("console-dead-letter", Some("#dead"));
    browser.screenshot("console-channels", Some("#channels"));
    // The whole page with a job running too (the README's picture, docs/console.png).
    let running = relay.start_job(
        &rx,
        &dm("console-room", "alice", &gated_exec("g4", "later")),
    );
    let running_row = format!("#running-rows tr[data-job=\"{}\"]", running.id);
    browser.wait_text("the third running job", &running_row, |t| {
        t.contains("Kill")
    });
    browser.screenshot("console-overview", None);
    browser.click("#dead-rows button");
    rx.wait_for_message("the retried completion", SOON, |d| {
        is_completion_of(&d.text, &refused.id)
    });
    browser.wait_text("no dead letter left", "#dead-rows", str::is_empty);
    browser.wait_text("the route", "#route-rows", |t| t.contains("console-room"));
    browser.screenshot("console-routes", Some("#routes"));
    relay.open_gate("g4");
    browser.wait_text("the third job finished", "#running-rows", str::is_empty);
    browser.screenshot("console", None);
    assert_no_console_errors(&browser);
    let status = browser.text("#status");
    assert!(status.starts_with("Connected"), "{status}");
}

#[test]
fn console_assets_have_a_strict_csp_and_no_page_of_another_origin_reads_or_acts_on_the_api() {
    let rx = Receiver::start();
    let relay = Relay::start(&rx, &["webhook:alice"]);
    let origin = format!("http://{}", relay.addr);
    let job = relay.start_job(&rx, &dm("room", "alice", &gated_exec("gate", "late")));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    let get = |path: &str, headers: &[(&str, String)]| {
        let mut req = client.get(format!("{origin}{path}"));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        rt.block_on(async move {
            let resp = req.send().await.expect("GET");
            let headers = resp.headers().clone();
            (resp.status().as_u16(), headers)
        })
    };
    for path in ["/", "/console.js", "/console.css", "/favicon.svg"] {
        let (status, headers) = get(path, &[]);
        assert_eq!(status, 200, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    // No CORS, ever: not on a preflight, not on a page's request.
    let token = relay.api_token();
    let foreign = [
        ("Origin", "http://127.0.0.1:1".to_string()),
        ("Authorization", format!("Bearer {token}")),
    ];
    for path in ["/v1/jobs", "/", "/metrics"] {
        let (_, headers) = get(path, &foreign);
        assert!(
            headers
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")),
            "{path}: {headers:?}"
        );
    }
    assert_eq!(
        get("/v1/jobs", &foreign).0,
        403,
        "a foreign origin with the token"
    );
    let own = [
        ("Origin", origin.clone()),
        ("Authorization", format!("Bearer {token}")),
    ];
    assert_eq!(get("/v1/jobs", &own).0, 200, "the console's own origin");

    // In a real browser, from a page on another port of this machine.
    let other = other_origin("<!doctype html><title>other</title><p>another origin</p>");
    let browser = Browser::start();
    browser.goto(&format!("{other}/"));
    let tried: Value = browser.run_async(
        "const [api, token, id, done] = arguments;
         (async () => {
           const out = {};
           try {
             const r = await fetch(api + '/v1/jobs', {headers: {Authorization: 'Bearer ' + token}});
             out.read = 'answered ' + r.status + ' ' + (await r.text());
           } catch (e) { out.read = 'refused: ' + e.name; }
           try {
             const r = await fetch(api + '/v1/jobs', {mode: 'no-cors'});
             out.opaque = r.type;
           } catch (e) { out.opaque = 'refused: ' + e.name; }
           try {
             await fetch(api + '/v1/jobs/' + id + '/kill', {method: 'POST', mode: 'no-cors'});
             out.act = 'sent';
           } catch (e) { out.act = 'refused: ' + e.name; }
           return out;
         })().then(done, (e) => done({error: String(e)}));",
        json!([origin, token, job.id]),
    );
    assert!(
        tried["read"]
            .as_str()
            .unwrap_or("")
            .starts_with("refused: TypeError"),
        "another origin read the API: {tried}"
    );
    assert_eq!(tried["opaque"], "opaque", "{tried}");
    // The browser said why (which also shows that the console test reads its log for real).
    let log = browser.console_log();
    assert!(
        log.iter()
            .any(|line| line.starts_with("SEVERE") && line.contains("CORS")),
        "no CORS refusal in the browser's log: {log:#?}"
    );
    assert_holds(
        "the job still running after the foreign [Kill]",
        secs(1.0),
        || relay.job(&job.id).is_some_and(|j| j["state"] == "running"),
    );
    relay.open_gate("gate");
    rx.wait_for_message("the completion", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
}

/// With a configured `http.api_token` the API answers any client that presents it (no
/// loopback rule), the console's own origin included, and still no other web page.
#[test]
fn with_a_configured_token_the_console_is_answered_and_other_pages_are_not() {
    let rx = Receiver::start();
    let token = "console-configured-token-5b1e7c";
    let relay = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("http", "api_token", &toml_str(token))
        .start();
    let origin = format!("http://{}", relay.addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    let status = |headers: &[(&str, &str)]| {
        let mut req = client.get(format!("{origin}/v1/jobs")).bearer_auth(token);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        rt.block_on(async move { req.send().await.expect("GET").status().as_u16() })
    };
    assert_eq!(status(&[]), 200, "a client that is no web page");
    assert_eq!(
        status(&[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")]),
        200
    );
    assert_eq!(status(&[("Origin", "http://127.0.0.1:1")]), 403);
    assert_eq!(status(&[("Sec-Fetch-Site", "cross-site")]), 403);
    assert_eq!(status(&[("Origin", "null")]), 403);
}

/// The live tail the console reads: a line at once, one each time the tail changes, and the
/// stream ends after the line that shows the job ended; a stranger without the token gets none.
#[test]
fn the_live_tail_streams_each_change_until_the_job_ends() {
    use futures_util::StreamExt;

    let rx = Receiver::start();
    let relay = Relay::builder(&rx).allow(&["webhook:alice"]).start();
    let job = relay.start_job(&rx, &dm("dm-a", "alice", &two_step_exec("g1", "g2")));
    let url = format!(
        "http://{}/v1/jobs/{}/tail/stream?lines=10",
        relay.addr, job.id
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let lines: Vec<Value> = runtime.block_on(async {
        let client = reqwest::Client::new();
        let refused = client.get(&url).send().await.expect("GET");
        assert_eq!(refused.status(), 401, "no token, no tail");
        let response = client
            .get(&url)
            .bearer_auth(relay.api_token())
            .send()
            .await
            .expect("GET the stream");
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let mut buffered = String::new();
        let mut lines = Vec::new();
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let next = tokio::time::timeout_at(deadline, body.next())
                .await
                .expect("the stream to end once the job ends");
            let Some(chunk) = next else { break };
            buffered.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
            while let Some(at) = buffered.find('\n') {
                let line: Value = serde_json::from_str(&buffered[..at]).expect("a JSON line");
                buffered.drain(..=at);
                // Each step of the job when the previous one has been seen.
                let text = line["text"].as_str().unwrap_or_default().to_string();
                if text.ends_with("first-line") {
                    relay.open_gate("g1");
                } else if text.ends_with("second-line") {
                    relay.open_gate("g2");
                }
                lines.push(line);
            }
        }
        lines
    });
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
    assert!(texts.contains(&"first-line"), "{lines:#?}");
    assert!(texts.contains(&"first-line\nsecond-line"), "{lines:#?}");
    let last = lines.last().expect("lines");
    assert_eq!(last["state"], "exited", "{lines:#?}");
    assert_eq!(last["text"], "first-line\nsecond-line\nlast-line");
    for pair in lines.windows(2) {
        assert_ne!(pair[0], pair[1], "a line that changed nothing");
    }
}

/// The console never sends the token: each call carries a proof of it for that one call
/// (`serve::token_proof`). A proof taken off the wire works once, for its own request only,
/// and the token still works for the CLI's bearer header.
#[test]
fn a_console_proof_is_good_for_its_one_request_once() {
    use execrelay::serve::token_proof::sign;

    let rx = Receiver::start();
    let relay = Relay::builder(&rx).start();
    let token = relay.api_token();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let proof = |path: &str, nonce: &str| {
        format!(
            "Execrelay-Proof t={now},n={nonce},mac={}",
            sign(&token, now, nonce, "GET", path)
        )
    };
    let get = |path: &str, authorization: &str| {
        runtime.block_on(async {
            client
                .get(format!("http://{}{path}", relay.addr))
                .header("Authorization", authorization)
                .send()
                .await
                .expect("GET")
                .status()
                .as_u16()
        })
    };
    let jobs = proof("/v1/jobs", "aaaa1111");
    assert_eq!(get("/v1/jobs", &jobs), 200);
    assert_eq!(get("/v1/jobs", &jobs), 401, "a proof replayed");
    let routes_proof = proof("/v1/jobs?limit=1", "bbbb2222");
    assert_eq!(
        get("/v1/routes", &routes_proof),
        401,
        "a proof for another request"
    );
    let old = format!(
        "Execrelay-Proof t={},n=cccc3333,mac={}",
        now - 120,
        sign(&token, now - 120, "cccc3333", "GET", "/v1/jobs")
    );
    assert_eq!(get("/v1/jobs", &old), 401, "a proof from two minutes ago");
    assert_eq!(get("/v1/jobs", &format!("Bearer {token}")), 200);
}
