//! YAML loading with source positions.
//!
//! serde-saphyr reports positions for syntax and type errors itself. Semantic checks run on
//! the typed policy afterwards, so they need another way back to `line:col`: we walk the
//! YAML event stream once and remember where each key path (`tiers.red.enter.p95_latency`)
//! starts. Validation reports errors by path; this index turns the path into a position.

use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser};
use std::collections::HashMap;
use std::fmt;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One problem in a YAML file: where, which field, what is wrong and what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    pub file: String,
    pub pos: Pos,
    pub field: String,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.col)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// A list of problems found in one file, printed one per line.
#[derive(Debug, Clone, PartialEq)]
pub struct FileErrors(pub Vec<FileError>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileErrors {}

/// Where each key path of a YAML document starts. Paths use `.` between keys and `[i]` for
/// sequence items, e.g. `services[0].min_replicas`.
#[derive(Debug, Default, Clone)]
pub struct PositionIndex {
    positions: HashMap<String, Pos>,
    /// The path of the key or value that starts at a position, to name the field of an
    /// error the parser reports by position only.
    values: HashMap<(usize, usize), String>,
}

impl PositionIndex {
    /// Builds the index. A document that does not parse gives an empty index; the typed
    /// parse reports the syntax error with its own position.
    pub fn build(text: &str) -> Self {
        enum Frame {
            Map { path: String, key: Option<String> },
            Seq { path: String, next: usize },
        }
        let mut positions = HashMap::new();
        let mut values = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        // Path of the node the next event describes, computed from the enclosing frame.
        fn child_path(stack: &mut [Frame]) -> Option<String> {
            match stack.last_mut() {
                None => Some(String::new()),
                Some(Frame::Map { path, key }) => key.take().map(|k| join(path, &k)),
                Some(Frame::Seq { path, next }) => {
                    let p = format!("{path}[{next}]");
                    *next += 1;
                    Some(p)
                }
            }
        }
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            match event {
                Event::Scalar(value, ..) => {
                    // A scalar is a key when the enclosing map waits for one.
                    if let Some(Frame::Map { path, key }) = stack.last_mut() {
                        if key.is_none() {
                            let p = join(path, &value);
                            values.insert((pos.line, pos.col), p.clone());
                            positions.entry(p).or_insert(pos);
                            *key = Some(value.into_owned());
                            continue;
                        }
                    }
                    if let Some(p) = child_path(&mut stack) {
                        values.insert((pos.line, pos.col), p.clone());
                        positions.entry(p).or_insert(pos);
                    }
                }
                Event::MappingStart(..) => {
                    let path = child_path(&mut stack).unwrap_or_default();
                    values.insert((pos.line, pos.col), path.clone());
                    positions.entry(path.clone()).or_insert(pos);
                    stack.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = child_path(&mut stack).unwrap_or_default();
                    values.insert((pos.line, pos.col), path.clone());
                    positions.entry(path.clone()).or_insert(pos);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Alias(..) => {
                    let _ = child_path(&mut stack);
                }
                _ => {}
            }
        }
        PositionIndex { positions, values }
    }

    /// The path of the key or value that starts at `pos`, if any.
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        self.values.get(&(pos.line, pos.col)).map(String::as_str)
    }

    /// The path of the last key or value that starts on `pos`'s line at or before it: the
    /// field an error in the middle of a line belongs to.
    pub fn path_near(&self, pos: Pos) -> Option<&str> {
        self.path_at(pos).or_else(|| {
            (1..pos.col)
                .rev()
                .find_map(|col| self.values.get(&(pos.line, col)))
                .map(String::as_str)
        })
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .positions
                        .get("")
                        .copied()
                        .unwrap_or(Pos { line: 1, col: 1 })
                }
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The largest policy or scenario file andon reads: they are kilobytes, and the position
/// index of a much larger file would cost memory out of proportion.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;

fn error_at(file: &str, pos: Pos, field: &str, message: String) -> FileError {
    FileError {
        file: file.to_string(),
        pos,
        field: field.to_string(),
        message,
    }
}

/// Reads a file to check: at most [`MAX_FILE_BYTES`], UTF-8. Each problem is one error
/// saying what it was and where (a bad byte at its own line and column).
pub fn read(path: &str, what: &str) -> Result<String, FileErrors> {
    use std::io::Read;
    let one = |pos: Pos, message: String| FileErrors(vec![error_at(path, pos, "", message)]);
    let start = Pos { line: 1, col: 1 };
    let f = std::fs::File::open(path)
        .map_err(|e| one(start, format!("cannot read the {what} file: {e}")))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| one(start, format!("cannot read the {what} file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(one(
            start,
            format!(
                "the {what} file is larger than {} KiB; allowed: at most {} KiB (a {what} is a few kilobytes)",
                MAX_FILE_BYTES / 1024,
                MAX_FILE_BYTES / 1024
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let good = &e.as_bytes()[..at];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        let pos = Pos { line, col };
        let lossy = String::from_utf8_lossy(e.as_bytes());
        let field = PositionIndex::build(&lossy)
            .path_near(pos)
            .unwrap_or_default()
            .to_string();
        FileErrors(vec![error_at(
            path,
            pos,
            &field,
            format!(
                "byte 0x{:02x} is not UTF-8; allowed: a UTF-8 text file",
                e.as_bytes()[at]
            ),
        )])
    })
}

/// Parses `text` as `T`, mapping serde-saphyr's error to a positioned [`FileError`].
/// `required` names the fields a document must have, for an empty file's message.
pub fn parse<T: DeserializeOwned>(file: &str, text: &str, required: &str) -> Result<T, FileError> {
    if let Some(e) = document_problem(file, text, required) {
        return Err(e);
    }
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options::<T>(text, options).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line() as usize,
                col: l.column() as usize,
            })
            .unwrap_or(Pos { line: 1, col: 1 });
        let mut message = clean_message(&e.to_string());
        let index = PositionIndex::build(text);
        let mut pos = pos;
        let mut field = index.path_near(pos).unwrap_or_default().to_string();
        // A missing field is reported at the map's end: point at the map, name the field.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            .map(str::to_string)
        {
            let parent = parent_path(&field).to_string();
            pos = if parent.is_empty() {
                Pos { line: 1, col: 1 }
            } else {
                index.find(&parent)
            };
            field = join(&parent, &name);
            message =
                format!("missing field `{name}`; allowed: add it (README.md has the reference)");
        }
        // A tab in indentation is reported where the scanner gave up: point at the tab.
        if message.contains("found a tab") {
            if let Some((p, key)) = tab_after(text, pos) {
                let parent = parent_path(&field).to_string();
                field = join(&parent, &key);
                pos = p;
            }
            message = "a tab in the indentation; allowed: spaces (YAML forbids tabs there)".into();
        }
        error_at(file, pos, &field, message)
    })
}

/// `services[0].x` → `services[0]`; `tiers.red.x` → `tiers.red`; `x` → ``.
fn parent_path(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) if path[i..].starts_with('[') && !path.ends_with(']') => {
            &path[..path[i..].find(']').map_or(i, |j| i + j + 1)]
        }
        Some(i) => &path[..i],
        None => "",
    }
}

/// The first tab at or after `pos`, and the key written after it on its line.
fn tab_after(text: &str, pos: Pos) -> Option<(Pos, String)> {
    for (i, line) in text.lines().enumerate().skip(pos.line.saturating_sub(1)) {
        if let Some(c) = line.find('\t') {
            if i + 1 == pos.line && c + 1 < pos.col {
                continue;
            }
            let key: String = line[c..]
                .trim_start()
                .chars()
                .take_while(|ch| *ch != ':' && !ch.is_whitespace())
                .collect();
            return Some((
                Pos {
                    line: i + 1,
                    col: c + 1,
                },
                key,
            ));
        }
    }
    None
}

/// An empty document, or more than one, said in words before serde's own message.
fn document_problem(file: &str, text: &str, required: &str) -> Option<FileError> {
    let mut documents = 0;
    let mut content = false;
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents == 2 && content {
                    let pos = Pos {
                        line: span.start.line(),
                        col: span.start.col() + 1,
                    };
                    return Some(error_at(
                        file,
                        pos,
                        "",
                        "a second YAML document starts here; allowed: one document per file".into(),
                    ));
                }
            }
            // An empty document is one null scalar.
            Event::Scalar(ref v, ..) if v.is_empty() || v == "~" => {}
            Event::Scalar(..) | Event::MappingStart(..) | Event::SequenceStart(..) => {
                content = true
            }
            _ => {}
        }
    }
    (!content).then(|| {
        error_at(
            file,
            Pos { line: 1, col: 1 },
            required.split(',').next().unwrap_or("").trim(),
            format!("the file holds no YAML document; allowed: a document with {required}"),
        )
    })
}

/// serde-saphyr's messages may end with its own " at line X column Y"; we print the
/// position in front, compiler style, so drop the duplicate.
fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    // The parser names Rust types; say what a person may write instead.
    match first {
        "invalid i64" | "invalid u64" | "invalid u32" | "invalid i32" => {
            "not a whole number; allowed: an integer such as 8".to_string()
        }
        "invalid f64" | "invalid f32" => "not a number; allowed: a number such as 0.8".to_string(),
        m if m.contains("invalid floating point") => {
            "not a number; allowed: a plain number such as 0.8 (no unit or % here)".into()
        }
        m if m.contains("duplicate mapping key") || m.contains("DuplicateKeyPolicy") => {
            "this key is given twice; allowed: each key once".into()
        }
        m if m.contains("expected mapping start") || m.contains("expected a map") => {
            "a list or a single value where a map belongs; allowed: `key: value` entries".into()
        }
        m if m.contains("expected sequence start") || m.contains("expected a sequence") => {
            "a map or a single value where a list belongs; allowed: `- item` entries or [a, b]"
                .into()
        }
        m if m.starts_with("unknown field") || m.starts_with("unknown variant") => {
            // "unknown field `flor`, expected one of headroom, floor, shed"
            match m.split_once(", expected ") {
                Some((what, names)) => {
                    let names = names.strip_prefix("one of ").unwrap_or(names);
                    format!("{what}; allowed: {names}")
                }
                None => match m.split_once(", there are no ") {
                    Some((what, _)) => format!("{what}; allowed: no keys here"),
                    None => m.to_string(),
                },
            }
        }
        m if m.contains("expected string scalar") || m.contains("expected a scalar") => {
            "a list or a map where one value belongs; allowed: a single value".into()
        }
        m if m.starts_with("invalid type: ") => match m.split_once(", expected ") {
            // "invalid type: boolean `true`, expected a number or a string with a unit"
            Some((what, wanted)) => format!(
                "{}; allowed: {wanted}",
                what.strip_prefix("invalid type: ").unwrap_or(what)
            ),
            None => m.to_string(),
        },
        m if m.contains("cannot deserialize null") || m.contains("unit value") => {
            "no value; allowed: a value after the key (or no key where it may be left out)".into()
        }
        m if m.contains("invalid boolean") => "not a boolean; allowed: true or false".into(),
        m if m.contains("non-finite float") => {
            let v = m.split('`').nth(1).unwrap_or("it");
            format!("`{v}` is not a finite number; allowed: a finite number")
        }
        m if m.contains("expected scalar or mapping") => {
            "a list where a name or a map belongs; allowed: one name, or a map".into()
        }
        m if m.contains("mapping values are not allowed")
            || m.contains("while parsing")
            || m.contains("did not find expected")
            || m.contains("unexpected EOF")
            || m.contains("unexpected character")
            || m.contains("simple key expected")
            || m.contains("misplaced bracket") =>
        {
            format!("YAML syntax: {m}; allowed: `key: value`, quoting a value that holds `: `, `#`, `@` or a bracket")
        }
        m if m.contains("unknown anchor") || m.contains("wasn't declared") => format!(
            "{m}; allowed: an alias (*name) to an anchor (&name) defined above it, and no tags"
        ),
        m if m.contains("unclosed quote") => {
            "unclosed quote; allowed: a value closed by the quote it opens with (' or \")".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde-saphyr's own words, as they came through before (a review found each
    /// without the `; allowed:` every refusal gives).
    #[test]
    fn every_parser_message_says_what_is_allowed() {
        for m in [
            "unknown field `flor`, expected one of headroom, floor, shed",
            "unknown variant `sse`, expected one of http, ws, tcp",
            "invalid type: boolean `true`, expected a number or a string with a unit",
            "cannot deserialize null into string; use Option<String>",
            "invalid boolean",
            "non-finite float `.nan` rejected by the configured policy",
            "externally tagged enum expected scalar or mapping",
            "mapping values are not allowed in this context",
            "simple key expected ':'",
            "alias references unknown anchor",
            "unclosed quote",
            "expected string scalar",
        ] {
            let c = clean_message(m);
            assert!(c.contains("; allowed: "), "{m} -> {c}");
            assert!(!c.contains("Option<"), "{m} -> {c}");
        }
    }

    #[test]
    fn index_finds_nested_keys_and_sequence_items() {
        let text = "a:\n  b: 1\n  list:\n    - x: 2\n    - y: 3\nc: [1, 2]\n";
        let idx = PositionIndex::build(text);
        assert_eq!(idx.find("a.b"), Pos { line: 2, col: 3 });
        assert_eq!(idx.find("a.list[1].y"), Pos { line: 5, col: 7 });
        assert_eq!(idx.find("c[1]").line, 6);
        // Unknown paths fall back to the nearest known ancestor.
        assert_eq!(idx.find("a.list[1].zzz"), Pos { line: 5, col: 7 });
    }
}
