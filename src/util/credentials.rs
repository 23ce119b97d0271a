//! Common credential shapes found in command output, replaced before any of it leaves the
//! relay: private key blocks, GitHub tokens (`ghp_…`, `github_pat_…`), AWS access key ids
//! (`AKIA…`, `ASIA…`), Slack tokens (`xoxb-…`), and `Bearer` credentials. Configured secrets
//! are handled by `jobs::Redactor`, which calls this for everything else.
//!
//! A scanner, not regexes: the shapes are simple, and this runs on every completion's tail.

use std::borrow::Cow;

pub const REDACTED: &str = "[redacted]";

/// Token prefixes and the shortest body that makes a match credible.
const TOKEN_PREFIXES: &[(&str, usize)] = &[
    ("github_pat_", 20),
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("xoxb-", 10),
    ("xoxa-", 10),
    ("xoxp-", 10),
    ("xoxr-", 10),
    ("xoxs-", 10),
];
const PEM_BEGIN: &str = "-----BEGIN ";
const PEM_END: &str = "-----END ";
const PRIVATE_KEY: &str = "PRIVATE KEY-----";
const BEARER: &str = "Bearer ";
/// `-----BEGIN ENCRYPTED PRIVATE KEY-----` and friends fit easily.
const HEADER_MAX: usize = 64;
const MIN_BEARER: usize = 16;

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_bearer_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
}

/// Length of the run of `accept` characters at the start of `text`.
fn run_len(text: &str, accept: fn(char) -> bool) -> usize {
    text.find(|c: char| !accept(c)).unwrap_or(text.len())
}

/// The byte offset where the line holding byte `from` ends (its newline, or the text's end).
fn line_end(text: &str, from: usize) -> usize {
    text[from..].find('\n').map_or(text.len(), |n| from + n)
}

/// Whether the character before byte `at` would make a match there part of a longer word.
fn glued_before(text: &str, at: usize) -> bool {
    text[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The byte length of a private key block whose BEGIN marker is at byte `at`, if it is one.
///
/// A block starts its line (after any indentation, as in YAML) and runs to its end marker's
/// line end; a tail cut before that loses everything after. A block inside a JSON string (a
/// cloud service account's `"private_key": "-----BEGIN PRIVATE KEY-----\nMIIE…"`) is one line
/// with escaped newlines, and runs to its end marker. A marker quoted in a command line
/// (`grep -- '-----BEGIN …'`) is neither, and is left alone.
fn key_block_at(text: &str, at: usize) -> Option<usize> {
    let after = &text[at + PEM_BEGIN.len()..];
    // A header is one short line: look no further, so a long line costs nothing (cut on a
    // character boundary, or a multi-byte character there would mean the whole rest).
    let mut cut = HEADER_MAX.min(after.len());
    while !after.is_char_boundary(cut) {
        cut -= 1;
    }
    let header = &after[..cut];
    let header = header.split('\n').next().unwrap_or("");
    let header_len = header.find(PRIVATE_KEY)? + PRIVATE_KEY.len();
    let rest = &text[at..];
    // Only indentation before it on its line (looked at backwards, so a long line of
    // markers costs no more than their count).
    let before = text[..at].trim_end_matches([' ', '\t']);
    if before.is_empty() || before.ends_with('\n') {
        return Some(match rest.find(PEM_END) {
            Some(end) => line_end(rest, end),
            None => rest.len(),
        });
    }
    if !after[header_len..].starts_with("\\n") {
        return None;
    }
    let line = &rest[..line_end(rest, 0)];
    Some(match line.find(PEM_END) {
        Some(end) => line[end..]
            .find(PRIVATE_KEY)
            .map_or(line.len(), |k| end + k + PRIVATE_KEY.len()),
        None => line.len(),
    })
}

/// The byte length of a credential starting exactly at the start of `rest`, if one does.
fn credential_at(rest: &str) -> Option<usize> {
    for (prefix, min) in TOKEN_PREFIXES {
        if let Some(after) = rest.strip_prefix(prefix) {
            let body = run_len(after, is_token_char);
            return (body >= *min).then_some(prefix.len() + body);
        }
    }
    for prefix in ["AKIA", "ASIA"] {
        if let Some(after) = rest.strip_prefix(prefix) {
            let body = run_len(after, |c| c.is_ascii_uppercase() || c.is_ascii_digit());
            return (body == 16).then_some(prefix.len() + body);
        }
    }
    if let Some(after) = rest.strip_prefix(BEARER) {
        let body = run_len(after, is_bearer_char);
        return (body >= MIN_BEARER).then_some(BEARER.len() + body);
    }
    None
}

/// A key block whose start fell before `text` begins (an output tail cut mid-key): the byte
/// length from the start of `text` through its end marker's line.
fn orphan_key_end(text: &str) -> Option<usize> {
    let end = text.find(PEM_END)?;
    let through = line_end(text, end);
    let orphan = text[end..through].contains(PRIVATE_KEY) && !text[..end].contains(PEM_BEGIN);
    orphan.then_some(through)
}

/// `text` with every credential shape replaced by [`REDACTED`] (`Bearer` keeps its word).
pub fn redact_credentials(text: &str) -> Cow<'_, str> {
    match orphan_key_end(text) {
        Some(end) => Cow::Owned(format!("{REDACTED}{}", redact_shapes(&text[end..]))),
        None => redact_shapes(text),
    }
}

fn redact_shapes(text: &str) -> Cow<'_, str> {
    let starts = ['-', 'g', 'x', 'A', 'B'];
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find(starts) {
        let at = search + found;
        let found = if text[at..].starts_with(PEM_BEGIN) {
            key_block_at(text, at)
        } else if glued_before(text, at) {
            // The cheap check first: most candidates sit inside a longer word.
            None
        } else {
            credential_at(&text[at..])
        };
        match found {
            Some(len) => {
                out.push_str(&text[copied..at]);
                if text[at..].starts_with(BEARER) {
                    out.push_str(BEARER);
                }
                out.push_str(REDACTED);
                copied = at + len;
                search = copied;
            }
            None => search = at + 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_shapes_are_redacted() {
        let cases = [
            (
                "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 ok",
                "token [redacted] ok",
            ),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
                "[redacted]",
            ),
            ("key=AKIAIOSFODNN7EXAMPLE;", "key=[redacted];"),
            ("ASIAIOSFODNN7EXAMPLE", "[redacted]"),
            (
                "slack xoxb-1234567890-abcdefghij done",
                "slack [redacted] done",
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig\n",
                "Authorization: Bearer [redacted]\n",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_credentials(input), expected, "{input}");
        }
    }

    #[test]
    fn private_key_blocks_go_whole_even_when_cut() {
        let block = "before\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\nafter";
        assert_eq!(redact_credentials(block), "before\n[redacted]\nafter");
        let cut = "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA";
        assert_eq!(redact_credentials(cut), "x\n[redacted]");
        let public = "-----BEGIN CERTIFICATE-----\nMIIB";
        assert_eq!(redact_credentials(public), public);
        let tail = "AAAAB3NzaC1yc2E\n-----END RSA PRIVATE KEY-----\nnext line";
        assert_eq!(redact_credentials(tail), "[redacted]\nnext line");
        let quoted = "exec finished: grep -rl -- '-----BEGIN OPENSSH PRIVATE KEY-----' ~ (exit 0)";
        assert_eq!(
            redact_credentials(quoted),
            quoted,
            "a quoted marker is not a key"
        );
        let double = "grep -rl \"-----BEGIN RSA PRIVATE KEY-----\" ~\nfound: a.pem";
        assert_eq!(redact_credentials(double), double, "nor in double quotes");
        let yaml = "tls:\n  key: |\n    -----BEGIN EC PRIVATE KEY-----\n    MHcCAQEE\n    -----END EC PRIVATE KEY-----\n  port: 443";
        assert_eq!(
            redact_credentials(yaml),
            "tls:\n  key: |\n    [redacted]\n  port: 443"
        );
        let json = r#"{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n", "client_email": "a@b.c"}"#;
        assert_eq!(
            redact_credentials(json),
            r#"{"type": "service_account", "private_key": "[redacted]\n", "client_email": "a@b.c"}"#
        );
        let env = "KEY=-----BEGIN PRIVATE KEY-----\\nMIIEvQ\\n-----END PRIVATE KEY-----\\n\nnext";
        assert_eq!(redact_credentials(env), "KEY=[redacted]\\n\nnext");
    }

    #[test]
    fn long_runs_of_near_misses_are_left_alone() {
        for unit in ["AKIA", "-----BEGIN ", "xghp_"] {
            let text = unit.repeat(20_000);
            assert!(
                matches!(redact_credentials(&text), Cow::Borrowed(_)),
                "{unit}"
            );
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "ghp_short",
            "AKIA123",
            "Bearer me",
            "xghp_abcdefghijklmnopqrstuvwxyz0123",
            "exec finished: cargo test (exit 0 after 2s, job 7f3a9c)",
            "日本語 ✓ -----",
        ] {
            assert!(
                matches!(redact_credentials(text), Cow::Borrowed(_)),
                "{text}"
            );
        }
    }
}
