//! Acceptance 6: a completion longer than `max_chars` arrives as ordered chunks, none longer
//! than the limit, none splitting a character.

use crate::fakes::receiver::Receiver;
use crate::harness::*;

#[test]
fn long_completion_is_split_into_ordered_chunks_within_max_chars() {
    let rx = Receiver::start();
    let b = Relay::builder(&rx)
        .allow(&["webhook:alice"])
        .set("channels.webhook", "max_chars", "200")
        .set("exec", "tail_chars", "3500");
    // ~1,000 chars of mixed ASCII, emoji (4-byte UTF-8) and CJK (3-byte) over 10 lines.
    let lines: Vec<String> = (0..10)
        .map(|i| format!("line-{i:02} ascii text 🦀🎉🚀 漢字かなカナ한국어 more-ascii-{i:02} ✓→€ 終わり{i:02} 🦀🦀🦀🦀 lorem ipsum 日本語テキスト end-{i:02}"))
        .collect();
    let total: usize = lines.iter().map(|l| l.chars().count() + 1).sum();
    assert!((800..1300).contains(&total), "fixture is {total} chars");
    let file = b.dir().join("long-output.txt");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let relay = b.start();

    let job = relay.start_job(
        &rx,
        &dm("dm-long", "alice", &format!("/exec cat {}", file.display())),
    );
    rx.wait_for_message("the first completion chunk", SOON, |d| {
        is_completion_of(&d.text, &job.id)
    });
    relay.wait_outbox_drained();

    let msgs = rx.messages();
    let start = msgs
        .iter()
        .position(|d| is_completion_of(&d.text, &job.id))
        .unwrap();
    let chunks: Vec<_> = msgs[start..]
        .iter()
        .filter(|d| d.conversation_id == "dm-long")
        .collect();
    assert!(
        chunks.len() >= 5,
        "~1,000 chars at 200 per chunk needs several chunks, got {}",
        chunks.len()
    );
    for c in &chunks {
        let n = c.text.chars().count();
        assert!(n <= 200, "chunk of {n} chars > max_chars 200: {:?}", c.text);
        assert!(
            !c.text.contains('\u{FFFD}'),
            "replacement char introduced: {:?}",
            c.text
        );
    }
    let mut keys: Vec<_> = chunks.iter().map(|c| c.idempotency_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys.len(),
        chunks.len(),
        "each chunk needs its own idempotency key"
    );
    assert_eq!(
        rx.rejected_count(),
        0,
        "every chunk must carry a valid signature"
    );

    // Chunk boundaries may fall on whitespace that the splitter drops, so compare without it;
    // each output line must appear, in order, in the concatenation.
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let joined = squash(&chunks.iter().map(|c| c.text.as_str()).collect::<String>());
    let mut from = 0;
    for l in &lines {
        let l = squash(l);
        let at = joined[from..].find(&l).unwrap_or_else(|| {
            panic!("output line {l:?} missing (or out of order) in the chunks:\n{joined}")
        });
        from += at + l.len();
    }
}
