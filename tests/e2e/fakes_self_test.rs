//! The fake receiver itself, without a relay: it must verify signatures exactly as specified
//! and follow its script, or every other test proves nothing.

use serde_json::json;

use crate::fakes::receiver::Receiver;
use crate::harness::*;

fn post(rx: &Receiver, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .post(rx.callback_url())
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, retry_after)
    })
}

fn signed(body: &[u8], ts: i64) -> Vec<(&'static str, String)> {
    let ts = ts.to_string();
    vec![
        ("X-Execrelay-Signature", sign(SECRET, &ts, body)),
        ("X-Execrelay-Timestamp", ts),
    ]
}

#[test]
fn fake_receiver_verifies_signatures_and_follows_its_script() {
    let rx = Receiver::start();
    let body = |text: &str| {
        serde_json::to_vec(
            &json!({"conversation_id": "c1", "text": text, "idempotency_key": format!("k-{text}")}),
        )
        .unwrap()
    };

    assert_eq!(
        post(&rx, &signed(&body("a"), unix_now()), &body("a")).0,
        200
    );
    let mut bad = signed(&body("b"), unix_now());
    bad[0].1 = sign("wrong", &bad[1].1, &body("b"));
    assert_eq!(post(&rx, &bad, &body("b")).0, 401);
    assert_eq!(
        post(&rx, &signed(&body("c"), unix_now() - 301), &body("c")).0,
        401
    );
    assert_eq!(post(&rx, &[], &body("d")).0, 401);
    assert_eq!(rx.rejected_count(), 3);

    rx.respond_next_where(1, 429, &[("Retry-After", "1")], |d| d.text == "e");
    rx.respond_next(1, 500, &[]);
    assert_eq!(
        post(&rx, &signed(&body("f"), unix_now()), &body("f")).0,
        500
    );
    assert_eq!(
        post(&rx, &signed(&body("e"), unix_now()), &body("e")),
        (429, "1".to_string())
    );
    assert_eq!(
        post(&rx, &signed(&body("e"), unix_now()), &body("e")).0,
        200
    );
    rx.set_unavailable(true);
    assert_eq!(
        post(&rx, &signed(&body("g"), unix_now()), &body("g")).0,
        503
    );
    rx.set_unavailable(false);

    let texts: Vec<_> = rx.messages().into_iter().map(|d| d.text).collect();
    assert_eq!(texts, ["a", "e"]);
    let statuses: Vec<_> = rx.attempts().into_iter().map(|d| d.status).collect();
    assert_eq!(statuses, [200, 500, 429, 200, 503]);
    assert_eq!(
        rx.wait_for_message("text a", secs(1.0), |d| d.text == "a")
            .idempotency_key,
        "k-a"
    );
}

#[test]
fn completion_and_ack_helpers_parse_the_specified_texts() {
    assert_eq!(
        ack_job_id("started job 7f3a9c: sh -c 'echo hi'").as_deref(),
        Some("7f3a9c")
    );
    let done = "exec finished: sh -c 'echo hi' (exit 0 after 0.3s, job 7f3a9c)\nhi";
    assert!(is_completion_of(done, "7f3a9c"));
    assert!(!is_completion_of(done, "7f3a9"));
    assert!(!is_completion_of(
        "exec finished: x (exit 0 after 1s, job 12)",
        "1"
    ));
    assert_eq!(output_lines(done), ["hi"]);
}
