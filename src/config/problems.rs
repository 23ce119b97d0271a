//! What is wrong with a config, said plainly: the key, its line, and what to write instead.

use std::fmt;

use super::keys::KeyIndex;

/// One mistake (or, among warnings, one doubtful setting) in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key (`exec.max_concurrent`, `access.allow[1]`); empty for the file as a whole.
    pub key: String,
    /// 1-based; `None` when the key is not written in the file (a default, an env variable).
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects problems and warnings, each placed on its key's line.
pub(crate) struct Findings<'a> {
    index: &'a KeyIndex,
    pub(crate) errors: Vec<Problem>,
    pub(crate) warnings: Vec<Problem>,
}

impl<'a> Findings<'a> {
    pub(crate) fn new(index: &'a KeyIndex) -> Findings<'a> {
        Findings {
            index,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn index(&self) -> &'a KeyIndex {
        self.index
    }

    fn at(&self, key: &str, message: String) -> Problem {
        Problem {
            key: key.to_string(),
            line: self.index.line_of(key),
            message,
        }
    }

    pub(crate) fn error(&mut self, key: &str, message: impl Into<String>) {
        let problem = self.at(key, message.into());
        self.errors.push(problem);
    }

    pub(crate) fn warn(&mut self, key: &str, message: impl Into<String>) {
        let problem = self.at(key, message.into());
        self.warnings.push(problem);
    }
}

/// serde's and our deserializers' words, for a person: "invalid type: string \"64\", expected
/// usize" becomes "expected a whole number, found the text \"64\" (write it without quotes)".
pub(crate) fn plain(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return unknown_key(rest);
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let expected = expected_plainly(expected);
            let found = found_plainly(found);
            let hint = if found.starts_with("the text") && expected.contains("number") {
                " (write the number without quotes)"
            } else if found.starts_with("the text") && expected.contains("true or false") {
                " (write true or false without quotes)"
            } else if !found.starts_with("the text") && expected.contains("in quotes") {
                " (put it in quotes)"
            } else {
                ""
            };
            return format!("expected {expected}, found {found}{hint}");
        }
    }
    if message == "invalid socket address syntax" {
        return "expected an address and port like \"127.0.0.1:8787\"".into();
    }
    message.to_string()
}

/// "`timout`, expected one of `shell`, `timeout`" → a suggestion and the keys there are.
fn unknown_key(rest: &str) -> String {
    let names: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let Some((typo, known)) = names.split_first() else {
        return format!("unknown key {rest}");
    };
    let listed = known.join(", ");
    match closest(typo, known) {
        Some(suggestion) => {
            format!("unknown key `{typo}`; did you mean `{suggestion}`? (known here: {listed})")
        }
        None if known.is_empty() => format!("unknown key `{typo}`"),
        None => format!("unknown key `{typo}` (known here: {listed})"),
    }
}

fn expected_plainly(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number".into(),
        "i64" | "i32" => "a whole number".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" => "text in quotes".into(),
        "a sequence" => "a list like [\"a\", \"b\"]".into(),
        "a map" => "a table".into(),
        "socket address" => "an address and port like \"127.0.0.1:8787\"".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.to_string(),
    }
}

fn found_plainly(found: &str) -> String {
    if let Some(text) = found.strip_prefix("string ") {
        return format!("the text {text}");
    }
    for (prefix, what) in [
        ("integer ", "the number"),
        ("floating point ", "the number"),
        ("boolean ", ""),
    ] {
        if let Some(value) = found.strip_prefix(prefix) {
            let value = value.trim_matches('`');
            return if what.is_empty() {
                value.to_string()
            } else {
                format!("{what} {value}")
            };
        }
    }
    match found {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        other => other.to_string(),
    }
}

/// The known name nearest to a typo, if one is near.
pub(crate) fn closest<'a>(typo: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_words_become_plain_ones() {
        assert_eq!(
            plain("invalid type: string \"64\", expected usize"),
            "expected a whole number, found the text \"64\" (write the number without quotes)"
        );
        assert_eq!(
            plain("invalid type: integer `5`, expected a string"),
            "expected text in quotes, found the number 5 (put it in quotes)"
        );
        assert_eq!(
            plain("invalid value: integer `-1`, expected usize"),
            "expected a whole number, found the number -1"
        );
        assert_eq!(
            plain("invalid type: string \"yes\", expected a boolean"),
            "expected true or false, found the text \"yes\" (write true or false without quotes)"
        );
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let text = plain("unknown field `timout`, expected one of `shell`, `timeout`, `workdir`");
        assert!(
            text.starts_with("unknown key `timout`; did you mean `timeout`?"),
            "{text}"
        );
        let text = plain("unknown field `zzz`, expected `enabled`");
        assert_eq!(text, "unknown key `zzz` (known here: enabled)");
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("timout", "timeout"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
