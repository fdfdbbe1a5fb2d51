//! The config's errors, located: each problem names the file, the line and
//! column (from toml's own spans) and the dotted key, and every problem
//! found is reported at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Config;

/// A config file that could not be used, with every problem found.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key path, like `shutdown.grace_period`, when known.
    pub key: Option<String>,
    pub message: String,
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.path.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
                if let Some(col) = p.column {
                    write!(f, ":{col}")?;
                }
            }
            write!(f, ": ")?;
            if let Some(key) = &p.key {
                write!(f, "{key}: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl Error {
    /// A parse or type error from toml: its span gives the line and column,
    /// and `nodes` the key it is in.
    pub(super) fn from_toml(path: &Path, text: &str, nodes: &Nodes, e: &toml::de::Error) -> Error {
        let (line, column, key) = match e.span() {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                let key = nodes.key_at(span.start);
                (Some(line), Some(column), key)
            }
            None => (None, None, None),
        };
        Error {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line,
                column,
                key,
                message: e.message().trim().to_string(),
            }],
        }
    }
}

/// The steps' default names from the text before `${VAR}` expansion
/// ([`super::steps::written_name`]), per list, taken from the document
/// before serde consumes it.
pub(super) struct WrittenNames([Vec<Option<String>>; 4]);

impl WrittenNames {
    const LISTS: [&'static str; 4] = ["poststart", "drain", "on_exit", "keepalive"];

    pub(super) fn of(doc: &toml::de::DeTable<'_>) -> WrittenNames {
        WrittenNames(Self::LISTS.map(|list| {
            doc.get(list)
                .and_then(|v| v.get_ref().as_array())
                .map(|items| {
                    items
                        .iter()
                        .map(|t| t.get_ref().as_table().and_then(super::steps::written_name))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    pub(super) fn apply(self, config: &mut Config) {
        let [poststart, drain, on_exit, keepalive] = self.0;
        for (steps, names) in [
            (&mut config.poststart, poststart),
            (&mut config.drain, drain),
            (&mut config.on_exit, on_exit),
            (&mut config.keepalive, keepalive),
        ] {
            for (step, name) in steps.iter_mut().zip(names) {
                step.written.0 = name;
            }
        }
    }
}

/// One step of a path into the document: a key, or a position in an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A key or an array item of a parsed document, with toml's spans.
pub(super) struct Node {
    path: Vec<Seg>,
    /// Where the key is written; none for an array item.
    key: Option<Range<usize>>,
    /// The value; for a `[table]` or `[[array]]` item, its header.
    value: Range<usize>,
}

impl Node {
    /// Where the node starts: its key, else its value.
    fn start(&self) -> usize {
        self.key.as_ref().map_or(self.value.start, |k| k.start)
    }
}

/// Every node of a parsed document, in the order of the text's tables.
pub(super) struct Nodes(Vec<Node>);

impl Nodes {
    /// The nodes of `text`, as far as it parses.
    pub(super) fn parse(text: &str) -> Nodes {
        Nodes::of(&toml::de::DeTable::parse_recoverable(text).0)
    }

    pub(super) fn of(doc: &toml::Spanned<toml::de::DeTable<'_>>) -> Nodes {
        fn walk(table: &toml::de::DeTable<'_>, path: &mut Vec<Seg>, out: &mut Vec<Node>) {
            for (k, v) in table.iter() {
                path.push(Seg::Key(k.get_ref().to_string()));
                out.push(Node {
                    path: path.clone(),
                    key: Some(k.span()),
                    value: v.span(),
                });
                walk_value(v, path, out);
                path.pop();
            }
        }
        fn walk_value(
            v: &toml::Spanned<toml::de::DeValue<'_>>,
            path: &mut Vec<Seg>,
            out: &mut Vec<Node>,
        ) {
            if let Some(table) = v.get_ref().as_table() {
                walk(table, path, out);
            } else if let Some(array) = v.get_ref().as_array() {
                for (i, item) in array.iter().enumerate() {
                    path.push(Seg::Index(i));
                    out.push(Node {
                        path: path.clone(),
                        key: None,
                        value: item.span(),
                    });
                    walk_value(item, path, out);
                    path.pop();
                }
            }
        }
        let mut out = Vec::new();
        walk(doc.get_ref(), &mut Vec::new(), &mut out);
        Nodes(out)
    }

    /// The key at byte offset `pos`: the deepest node whose key or value
    /// holds it, else the last node that starts before it (a key in the
    /// body of a `[table]`, whose span is only its header).
    fn key_at(&self, pos: usize) -> Option<String> {
        let holds = |r: &Range<usize>| r.start <= pos && pos < r.end.max(r.start + 1);
        self.0
            .iter()
            .filter(|n| n.key.as_ref().is_some_and(holds) || holds(&n.value))
            .max_by_key(|n| n.path.len())
            .or_else(|| {
                self.0
                    .iter()
                    .filter(|n| n.start() <= pos)
                    .max_by_key(|n| n.start())
            })
            .map(|n| show_path(&n.path))
    }

    /// A validation problem at `section` and `key` (see
    /// [`Config::validate`]), pointed at the deepest part of that path the
    /// text has: the key, the array item, or the section's header.
    pub(super) fn locate(&self, text: &str, section: &str, key: &str, message: String) -> Problem {
        let mut want = vec![Seg::Key(section.to_string())];
        want.extend(
            key.split('.')
                .filter(|k| !k.is_empty())
                .map(|k| match k.parse() {
                    Ok(i) => Seg::Index(i),
                    Err(_) => Seg::Key(k.to_string()),
                }),
        );
        let found = (1..=want.len())
            .rev()
            .find_map(|n| self.0.iter().find(|node| node.path[..] == want[..n]));
        let (line, column) = match found {
            Some(node) => {
                let (line, column) = line_col(text, node.start());
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Problem {
            line,
            column,
            key: Some(show_path(&want)),
            message,
        }
    }
}

/// `drain[2].http.url`: keys dotted, positions 1-based in brackets.
pub(super) fn show_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{}]", i + 1)),
        }
    }
    out
}

/// 1-based line and column of byte offset `pos`.
pub(super) fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
