//! Where each key of a config file is: its dotted path (`exec.max_concurrent`,
//! `access.allow[1]`), its line, and the text to blank out to read the file without it.
//!
//! serde stops at the first wrong value; blanking that key and reading again finds the next
//! one, so a file with three mistakes gets three errors, each with its key and line.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

use super::problems::Problem;

#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    entries: Vec<Entry>,
    line_starts: Vec<usize>,
}

#[derive(Debug)]
struct Entry {
    path: String,
    /// From the key (or table header) to the end of its value (or of the table).
    span: Range<usize>,
    /// Blanking this leaves valid TOML without the key: the whole `key = value` that holds it.
    removal: Range<usize>,
}

impl KeyIndex {
    /// Indexes `text`; a syntax error is the one problem such a file has.
    pub(crate) fn parse(text: &str) -> Result<KeyIndex, Problem> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let mut index = KeyIndex {
            entries: Vec::new(),
            line_starts,
        };
        let document = ImDocument::parse(text).map_err(|error| Problem {
            key: String::new(),
            line: error.span().map(|span| index.line_at(span.start)),
            message: format!("not valid TOML: {}", error.message().trim()),
        })?;
        index.walk_table(document.as_table(), "", None);
        Ok(index)
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The line where `path` is written, or its nearest written parent.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(entry) = self.entries.iter().find(|e| e.path == path) {
                return Some(self.line_at(entry.span.start));
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }

    /// Whether the file sets `path` (else its value is the default).
    pub(crate) fn is_written(&self, path: &str) -> bool {
        self.entries.iter().any(|e| e.path == path)
    }

    /// The innermost key whose text holds byte `offset`: where a serde error points.
    pub(crate) fn key_at(&self, offset: usize) -> Option<(&str, Range<usize>)> {
        self.entries
            .iter()
            .filter(|e| e.span.contains(&offset) || e.span.start == offset)
            .min_by_key(|e| e.span.len())
            .map(|e| (e.path.as_str(), e.removal.clone()))
    }

    fn push(&mut self, path: String, span: Range<usize>, removal: Option<&Range<usize>>) {
        let removal = removal.cloned().unwrap_or_else(|| span.clone());
        self.entries.push(Entry {
            path,
            span,
            removal,
        });
    }

    fn walk_table(&mut self, table: &Table, prefix: &str, removal: Option<&Range<usize>>) {
        for (name, item) in table.iter() {
            let path = join(prefix, name);
            let key_span = table.key(name).and_then(|key| key.span());
            match item {
                Item::Value(value) => {
                    let Some(span) = cover(key_span, value.span()) else {
                        continue;
                    };
                    let removal = removal.cloned().unwrap_or_else(|| span.clone());
                    self.push(path.clone(), span, Some(&removal));
                    self.walk_value(value, &path, &removal);
                }
                Item::Table(child) => {
                    // A `[header]` table: its span runs from the header to its last value.
                    if let Some(span) = child.span().or(key_span) {
                        self.push(path.clone(), span, removal);
                    }
                    self.walk_table(child, &path, removal);
                }
                Item::ArrayOfTables(tables) => {
                    for (i, child) in tables.iter().enumerate() {
                        let path = format!("{path}[{i}]");
                        if let Some(span) = child.span() {
                            self.push(path.clone(), span, removal);
                        }
                        self.walk_table(child, &path, removal);
                    }
                }
                Item::None => {}
            }
        }
    }

    fn walk_value(&mut self, value: &Value, path: &str, removal: &Range<usize>) {
        match value {
            Value::Array(array) => {
                for (i, element) in array.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    if let Some(span) = element.span() {
                        self.push(path.clone(), span, Some(removal));
                    }
                    self.walk_value(element, &path, removal);
                }
            }
            Value::InlineTable(table) => {
                for (name, element) in table.iter() {
                    let path = join(path, name);
                    let key_span = table.key(name).and_then(|key| key.span());
                    if let Some(span) = cover(key_span, element.span()) {
                        self.push(path.clone(), span, Some(removal));
                    }
                    self.walk_value(element, &path, removal);
                }
            }
            _ => {}
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn cover(key: Option<Range<usize>>, value: Option<Range<usize>>) -> Option<Range<usize>> {
    match (key, value) {
        (Some(key), Some(value)) => Some(key.start.min(value.start)..key.end.max(value.end)),
        (one, other) => one.or(other),
    }
}

/// `text` with `range` turned to spaces, newlines kept: every other key keeps its offset and
/// its line.
pub(crate) fn blank(text: &mut String, range: Range<usize>) {
    let end = range.end.min(text.len());
    let mut blanked = String::with_capacity(end - range.start);
    for c in text[range.start..end].chars() {
        // A multi-byte character becomes as many spaces as it had bytes.
        let fill = if c == '\n' { 1 } else { c.len_utf8() };
        blanked.extend(std::iter::repeat_n(
            if c == '\n' { '\n' } else { ' ' },
            fill,
        ));
    }
    text.replace_range(range.start..end, &blanked);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[exec]\nmax_concurrent = \"64\"\ntimeout = \"5m\"\n\n[access]\nallow = [\n  \"a:1\",\n  \"b:2\",\n]\n[channels.webhook]\nenabled = true\n";

    #[test]
    fn keys_have_lines() {
        let index = KeyIndex::parse(TEXT).unwrap();
        assert_eq!(index.line_of("exec.max_concurrent"), Some(2));
        assert_eq!(index.line_of("exec.timeout"), Some(3));
        assert_eq!(index.line_of("access.allow[1]"), Some(8));
        assert_eq!(index.line_of("channels.webhook.enabled"), Some(11));
        assert_eq!(index.line_of("channels.webhook.callback_url"), Some(10));
        assert!(index.is_written("access.allow"));
        assert!(!index.is_written("exec.shell"));
    }

    #[test]
    fn the_innermost_key_is_found_and_blanking_keeps_lines() {
        let index = KeyIndex::parse(TEXT).unwrap();
        let offset = TEXT.find("\"b:2\"").unwrap();
        let (path, removal) = index.key_at(offset).unwrap();
        assert_eq!(path, "access.allow[1]");
        let mut text = TEXT.to_string();
        blank(&mut text, removal);
        assert_eq!(text.lines().count(), TEXT.lines().count());
        let again = KeyIndex::parse(&text).unwrap();
        assert!(!again.is_written("access.allow"));
        assert_eq!(again.line_of("channels.webhook.enabled"), Some(11));
    }

    #[test]
    fn blanking_multibyte_text_keeps_offsets() {
        let mut text = "a = \"é\"\nb = 1\n".to_string();
        let before = text.find("b =").unwrap();
        blank(&mut text, 0..7);
        assert_eq!(text.find("b =").unwrap(), before);
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let problem = KeyIndex::parse("[exec]\ntimeout = \n").unwrap_err();
        assert_eq!(problem.line, Some(2));
    }
}
