//! Splitting outbound text into chunks that fit a platform's [`TextLimit`].
//!
//! Chunks are cut on character boundaries, preferably after a newline, else after whitespace,
//! else wherever the budget ends. A cut inside a ```` ``` ```` code fence closes the fence at the
//! end of the chunk (`"\n```"`) and reopens it, with its language, at the start of the next
//! (`"```lang\n"`), so each chunk renders on its own; room for those markers is reserved so the
//! limit still holds. Removing the markers gives back the input exactly.
//!
//! A fence line is a line starting with ```` ``` ````; each one toggles between outside and
//! inside a fence. Limits under [`MIN_FENCE_REPAIR_LIMIT`] leave no room for markers, so
//! fences are ignored there and the text is only cut.

use execrelay_channel::{TextLimit, TextUnit};

/// The smallest limit at which fences are repaired: the markers take up to 8 units.
pub const MIN_FENCE_REPAIR_LIMIT: usize = 16;

const FENCE: &str = "```";
/// Appended to a chunk cut inside a fence. Always 4 units: it is ASCII.
const CLOSE_MARKER: &str = "\n```";

/// Splits `text` into chunks that each measure at most `limit.max` in `limit.unit`.
///
/// Empty text yields no chunks (there is nothing to send). A single character wider than
/// the whole limit (an emoji under a `Bytes` limit below 4, say) cannot be honoured: it goes
/// into a chunk of its own.
pub fn split(text: &str, limit: TextLimit) -> Vec<String> {
    split_parts(text, limit)
        .into_iter()
        .map(|part| part.render())
        .collect()
}

/// One chunk before rendering: `open` + `body` + (`CLOSE_MARKER` if `close`).
#[derive(Debug, PartialEq, Eq)]
struct Part<'a> {
    /// Reopens the fence the previous chunk was cut inside.
    open: Option<String>,
    /// A slice of the input; the bodies concatenate to the input.
    body: &'a str,
    /// Whether the chunk ends inside a fence and must close it.
    close: bool,
}

impl Part<'_> {
    fn render(&self) -> String {
        let mut out = self.open.clone().unwrap_or_default();
        out.push_str(self.body);
        if self.close {
            out.push_str(CLOSE_MARKER);
        }
        out
    }
}

fn split_parts(text: &str, limit: TextLimit) -> Vec<Part<'_>> {
    let repair = limit.max >= MIN_FENCE_REPAIR_LIMIT;
    let fences = if repair {
        Fences::scan(text)
    } else {
        Fences::default()
    };
    let close_len = limit.measure(CLOSE_MARKER);
    let mut parts = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let open = fences.open_at(pos).map(|lang| reopen_marker(lang, limit));
        let room = limit
            .max
            .saturating_sub(open.as_deref().map_or(0, |o| limit.measure(o)));
        let rest = &text[pos..];
        if fits(rest, room, limit) {
            // The end of the text: an unclosed fence here was unclosed in the input too.
            parts.push(Part {
                open,
                body: rest,
                close: false,
            });
            break;
        }
        // Try the whole room first; only a cut inside a fence needs room for the close marker.
        let mut cut = choose_cut(text, pos, room, limit, repair);
        let mut close = fences.open_at(cut).is_some();
        if close {
            cut = choose_cut(text, pos, room.saturating_sub(close_len), limit, repair);
            close = fences.open_at(cut).is_some();
        }
        parts.push(Part {
            open,
            body: &text[pos..cut],
            close,
        });
        pos = cut;
    }
    parts
}

/// Whether `text` measures at most `room`, without measuring all of a long text.
fn fits(text: &str, room: usize, limit: TextLimit) -> bool {
    if limit.unit == TextUnit::Bytes {
        return text.len() <= room;
    }
    let mut used = 0;
    text.chars().all(|c| {
        used += limit.char_len(c);
        used <= room
    })
}

/// `"```lang\n"`, or a bare `"```\n"` when the language would crowd out the content.
fn reopen_marker(lang: &str, limit: TextLimit) -> String {
    let with_lang = format!("{FENCE}{lang}\n");
    // Markers take at most half the limit, so every chunk keeps real room for content.
    if !lang.is_empty() && limit.measure(&with_lang) + limit.measure(CLOSE_MARKER) <= limit.max / 2
    {
        with_lang
    } else {
        format!("{FENCE}\n")
    }
}

/// Picks the end (a byte offset > `pos`) of the chunk starting at `pos`, given `room` units.
fn choose_cut(text: &str, pos: usize, room: usize, limit: TextLimit, fence_aware: bool) -> usize {
    let mut used = 0;
    // The furthest end within budget, and the furthest one that is also a safe cut.
    let mut fit = pos;
    let mut hard = pos;
    let mut after_newline = None;
    let mut after_space = None;
    for (offset, c) in text[pos..].char_indices() {
        let width = limit.char_len(c);
        if used + width > room {
            break;
        }
        used += width;
        let end = pos + offset + c.len_utf8();
        fit = end;
        if fence_aware && !safe_cut(text, end) {
            continue;
        }
        hard = end;
        if c == '\n' {
            after_newline = Some((end, used));
        }
        if c.is_whitespace() {
            after_space = Some((end, used));
        }
    }
    if hard == pos {
        // No safe cut within budget (a long run of backticks) or not even one character fits:
        // progress matters more than either rule.
        return if fit > pos {
            fit
        } else {
            pos + text[pos..].chars().next().map_or(0, char::len_utf8)
        };
    }
    // A natural break is worth it only if it keeps the chunk at least half full.
    let worth = |candidate: Option<(usize, usize)>| {
        candidate.and_then(|(end, used)| (used >= room / 2).then_some(end))
    };
    worth(after_newline).or(worth(after_space)).unwrap_or(hard)
}

fn at_line_start(text: &str, at: usize) -> bool {
    at == 0 || text.as_bytes()[at - 1] == b'\n'
}

fn is_fence_line(text: &str, start: usize) -> bool {
    at_line_start(text, start) && text.as_bytes()[start..].starts_with(FENCE.as_bytes())
}

/// Whether the text may be cut at `at` without the chunks disagreeing with the input about
/// which lines are fence lines.
fn safe_cut(text: &str, at: usize) -> bool {
    // The next chunk would start with a "```" that is not a fence line in the input.
    if !at_line_start(text, at) && text.as_bytes()[at..].starts_with(FENCE.as_bytes()) {
        return false;
    }
    // Splitting a fence line's own "```" would unmake it.
    !(1..FENCE.len()).any(|back| at >= back && is_fence_line(text, at - back))
}

/// The fence lines of a text, in order.
#[derive(Default)]
struct Fences {
    /// Byte offset of each fence line.
    starts: Vec<usize>,
    /// The language after each fence line's "```" (meaningful on opening lines).
    langs: Vec<String>,
}

impl Fences {
    fn scan(text: &str) -> Self {
        let mut fences = Fences::default();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            if let Some(info) = line.strip_prefix(FENCE) {
                fences.starts.push(start);
                let lang = info.split_whitespace().next().unwrap_or("");
                // A run of more backticks is not a language.
                let lang = if lang.contains('`') { "" } else { lang };
                fences.langs.push(lang.to_string());
            }
            start += line.len();
        }
        fences
    }

    /// The language of the fence open at byte `at`, or `None` outside fences. A fence line
    /// counts once its "```" lies before `at`.
    fn open_at(&self, at: usize) -> Option<&str> {
        let passed = self
            .starts
            .partition_point(|&start| start + FENCE.len() <= at);
        (passed % 2 == 1).then(|| self.langs[passed - 1].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_rng::Rng;

    fn limit(unit: TextUnit, max: usize) -> TextLimit {
        TextLimit { unit, max }
    }

    fn fence_lines(chunk: &str) -> usize {
        chunk.split('\n').filter(|l| l.starts_with(FENCE)).count()
    }

    /// Every property the module promises, for one input and limit.
    fn check(text: &str, limit: TextLimit) -> Vec<String> {
        let parts = split_parts(text, limit);
        let chunks = split(text, limit);
        assert_eq!(chunks.len(), parts.len());
        assert_eq!(
            parts.iter().map(|p| p.body).collect::<String>(),
            text,
            "bodies must rebuild the input ({limit:?})"
        );
        let repair = limit.max >= MIN_FENCE_REPAIR_LIMIT;
        let input_balanced = fence_lines(text).is_multiple_of(2);
        for (i, (chunk, part)) in chunks.iter().zip(&parts).enumerate() {
            assert_eq!(*chunk, part.render());
            assert!(!part.body.is_empty(), "empty chunk {i} of {text:?}");
            assert!(
                limit.measure(chunk) <= limit.max,
                "chunk {i} {chunk:?} over {limit:?} for {text:?}"
            );
            if !repair {
                assert!(part.open.is_none() && !part.close);
            } else if i + 1 < chunks.len() || input_balanced {
                assert_eq!(
                    fence_lines(chunk) % 2,
                    0,
                    "unbalanced chunk {i} {chunk:?} of {text:?} ({limit:?})"
                );
            }
        }
        if repair {
            for pair in parts.windows(2) {
                assert_eq!(pair[0].close, pair[1].open.is_some(), "{text:?}");
            }
        }
        chunks
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(split("", limit(TextUnit::Chars, 10)).is_empty());
    }

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(split("hello", limit(TextUnit::Chars, 5)), ["hello"]);
        assert_eq!(split("```\nx\n", limit(TextUnit::Chars, 100)), ["```\nx\n"]);
    }

    #[test]
    fn prefers_newlines_then_spaces() {
        let text = "first line\nsecond line here\nthird";
        assert_eq!(
            check(text, limit(TextUnit::Chars, 20)),
            ["first line\n", "second line here\n", "third"]
        );
        let text = "alpha beta gamma delta epsilon";
        assert_eq!(
            check(text, limit(TextUnit::Chars, 12)),
            ["alpha beta ", "gamma delta ", "epsilon"]
        );
        // A newline that would leave the chunk under half full is passed over.
        let text = "a\nbcdefghijklmnopqrstuvwxyz";
        assert_eq!(check(text, limit(TextUnit::Chars, 10))[0], "a\nbcdefghi");
    }

    #[test]
    fn hard_splits_without_whitespace() {
        let text = "x".repeat(25);
        assert_eq!(
            check(&text, limit(TextUnit::Chars, 10)),
            ["x".repeat(10), "x".repeat(10), "x".repeat(5)]
        );
    }

    #[test]
    fn concatenation_rebuilds_input_without_fences() {
        let text = "Lorem ipsum dolor sit amet,\nconsectetur adipiscing elit. ".repeat(40);
        for max in [1, 7, 16, 50, 333] {
            let chunks = check(&text, limit(TextUnit::Chars, max));
            assert_eq!(chunks.concat(), text);
        }
    }

    #[test]
    fn wide_characters_stay_within_each_unit() {
        // Emoji (2 UTF-16 units, 4 bytes), CJK (1 unit, 3 bytes), combining marks (2 bytes).
        let text = "😀😃 漢字かな e\u{301}a\u{308} 🇫🇷👩‍💻\n".repeat(30);
        for unit in [TextUnit::Chars, TextUnit::Utf16, TextUnit::Bytes] {
            for max in [4, 5, 7, 16, 31, 100] {
                let chunks = check(&text, limit(unit, max));
                assert!(chunks.len() > 1);
                assert_eq!(chunks.concat(), text);
            }
        }
    }

    #[test]
    fn too_small_limit_puts_a_wide_char_alone() {
        let chunks = split("a😀b", limit(TextUnit::Bytes, 2));
        assert_eq!(chunks, ["a", "😀", "b"]);
    }

    #[test]
    fn repairs_fences_with_language() {
        let code: String = (0..30).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("Output:\n```rust\n{code}```\ndone\n");
        let max = 60;
        let chunks = check(&text, limit(TextUnit::Chars, max));
        assert!(chunks.len() > 3);
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 && i + 1 < chunks.len() {
                assert!(chunk.starts_with("```rust\n"), "{chunk:?}");
            }
            if i + 1 < chunks.len() {
                assert!(chunk.ends_with("\n```"), "{chunk:?}");
            }
        }
        assert!(chunks.last().unwrap().ends_with("```\ndone\n"));
    }

    #[test]
    fn long_language_reopens_bare() {
        let text = format!("```{}\n{}\n```\n", "l".repeat(20), "code ".repeat(20));
        let chunks = check(&text, limit(TextUnit::Chars, 30));
        assert!(chunks[1].starts_with("```\n"), "{chunks:?}");
    }

    #[test]
    fn never_cuts_inside_a_fence_marker_or_before_inline_backticks() {
        // A preceding newline normally wins anyway; the rule is the safety net.
        let text = "ab\n```sh\nx";
        let unsafe_cuts: Vec<usize> = (1..text.len()).filter(|&at| !safe_cut(text, at)).collect();
        assert_eq!(unsafe_cuts, [4, 5]);
        assert!(!safe_cut("ab ```x", 3) && safe_cut("ab ```x", 4));
        // Inline ``` must not start a chunk, where it would read as a fence line.
        let text = format!("{} ```inline``` {}", "b".repeat(10), "c".repeat(20));
        for max in 16..30 {
            for chunk in check(&text, limit(TextUnit::Chars, max)) {
                assert_eq!(fence_lines(&chunk), 0, "{chunk:?}");
            }
        }
    }

    #[test]
    fn small_limits_ignore_fences() {
        let text = "```\nabcdefghij\n```\n";
        let chunks = check(text, limit(TextUnit::Chars, 8));
        assert_eq!(chunks.concat(), text);
    }

    fn generate(rng: &mut Rng) -> String {
        const PIECES: &[&str] = &[
            "word",
            "a",
            "longerwordwithoutspaces",
            " ",
            "  ",
            "\n",
            "\n\n",
            "\t",
            "😀",
            "👩‍💻",
            "漢字",
            "かな",
            "e\u{301}",
            "`",
            "``",
            "x",
            "\r\n",
        ];
        let mut text = String::new();
        for _ in 0..rng.below(120) {
            if rng.below(12) == 0 {
                // Fence lines start a line, as in real output.
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                let lang = ["", "rust", "sh", "python3", " with spaces", "`x"][rng.below(6)];
                text.push_str(FENCE);
                text.push_str(lang);
                text.push('\n');
            } else {
                text.push_str(PIECES[rng.below(PIECES.len())]);
            }
        }
        text
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_keeps_every_property(
            text in "(?s).{0,300}",
            unit in 0usize..3,
            max in 4usize..80,
        ) {
            let unit = [TextUnit::Chars, TextUnit::Utf16, TextUnit::Bytes][unit];
            let chunks = check(&text, limit(unit, max));
            proptest::prop_assert_eq!(chunks.is_empty(), text.is_empty());
            if max < MIN_FENCE_REPAIR_LIMIT || fence_lines(&text) == 0 {
                proptest::prop_assert_eq!(chunks.concat(), text);
            }
        }
    }

    #[test]
    fn random_inputs_keep_every_property() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let units = [TextUnit::Chars, TextUnit::Utf16, TextUnit::Bytes];
        let mut repaired = 0;
        for _ in 0..2000 {
            let text = generate(&mut rng);
            let unit = units[rng.below(units.len())];
            // From the smallest limit every character fits in up to well past the fence cutoff.
            let max = 4 + rng.below(60);
            let chunks = check(&text, limit(unit, max));
            assert_eq!(chunks.is_empty(), text.is_empty());
            repaired += usize::from(split_parts(&text, limit(unit, max)).iter().any(|p| p.close));
            if max < MIN_FENCE_REPAIR_LIMIT || fence_lines(&text) == 0 {
                assert_eq!(chunks.concat(), text);
            }
        }
        // The generator must actually exercise fence repair.
        assert!(repaired > 300, "only {repaired} inputs needed fence repair");
    }
}
