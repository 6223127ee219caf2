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

/// Reads a file to check; an unreadable file is one error at 1:1 saying what it was.
pub fn read(path: &str, what: &str) -> Result<String, FileErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        FileErrors(vec![FileError {
            file: path.to_string(),
            pos: Pos { line: 1, col: 1 },
            field: String::new(),
            message: format!("cannot read the {what} file: {e}"),
        }])
    })
}

/// Parses `text` as `T`, mapping serde-saphyr's error to a positioned [`FileError`].
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, FileError> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options::<T>(text, options).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line() as usize,
                col: l.column() as usize,
            })
            .unwrap_or(Pos { line: 1, col: 1 });
        let message = clean_message(&e.to_string());
        let mut field = PositionIndex::build(text)
            .path_at(pos)
            .unwrap_or_default()
            .to_string();
        // A missing field is reported at the map's last key: name the map instead.
        if message.starts_with("missing field") {
            field.truncate(field.rfind(['.', '[']).unwrap_or(0));
        }
        FileError {
            file: file.to_string(),
            pos,
            field,
            message,
        }
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
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
