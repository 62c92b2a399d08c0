//! Soft errors with a position: every parser collects them here instead of failing.
//!
//! A parser that meets a line it cannot read counts it, remembers where the first one of each
//! kind was, and carries on. The command then prints one line per kind, e.g.
//! `heap2.json: 3 invalid lines, first at line 812 (expected ':' after a key)`.
//! Only a missing or unreadable header is fatal, and that is an [`crate::error::Error`].

use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where in an input a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// 1-based line number (text inputs).
    Line(u64),
    /// 0-based byte offset (binary inputs, or text where lines do not apply).
    Offset(u64),
    /// The input as a whole (e.g. "file ends early").
    Whole,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Offset(n) => write!(f, "byte offset {n}"),
            Position::Whole => f.write_str("end of input"),
        }
    }
}

/// One kind of problem, counted: how many times it happened and where it happened first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemKind {
    /// Short plural noun phrase, fixed per call site: "invalid lines", "lines not understood".
    pub what: &'static str,
    pub count: u64,
    pub first: Position,
    /// What was wrong with the first occurrence (may be empty).
    pub detail: String,
}

/// All soft problems met while reading one input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diagnostics {
    pub file: PathBuf,
    pub kinds: Vec<ProblemKind>,
}

impl Diagnostics {
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Diagnostics {
            file: file.into(),
            kinds: Vec::new(),
        }
    }

    /// Counts one problem. `what` is a plural phrase constant; `detail` is built lazily so the
    /// hot path allocates only for the first occurrence of each kind.
    pub fn report(&mut self, what: &'static str, at: Position, detail: impl FnOnce() -> String) {
        if let Some(kind) = self.kinds.iter_mut().find(|k| k.what == what) {
            kind.count += 1;
            if position_before(at, kind.first) {
                kind.first = at;
                kind.detail = detail();
            }
            return;
        }
        self.kinds.push(ProblemKind {
            what,
            count: 1,
            first: at,
            detail: detail(),
        });
    }

    /// Adds the problems of another part of the same input (parallel chunks).
    pub fn merge(&mut self, other: Diagnostics) {
        for k in other.kinds {
            if let Some(mine) = self.kinds.iter_mut().find(|m| m.what == k.what) {
                mine.count += k.count;
                if position_before(k.first, mine.first) {
                    mine.first = k.first;
                    mine.detail = k.detail;
                }
            } else {
                self.kinds.push(k);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    pub fn total(&self) -> u64 {
        self.kinds.iter().map(|k| k.count).sum()
    }

    pub fn count_of(&self, what: &str) -> u64 {
        self.kinds
            .iter()
            .filter(|k| k.what == what)
            .map(|k| k.count)
            .sum()
    }

    /// One human line per kind: `heap2.json: 3 invalid lines, first at line 812 (reason)`.
    pub fn lines(&self) -> Vec<String> {
        let name = display_name(&self.file);
        self.kinds
            .iter()
            .map(|k| {
                let mut s = format!("{name}: {} {}, first at {}", k.count, k.what, k.first);
                if k.count == 1 {
                    s = format!(
                        "{name}: 1 {} at {}",
                        crate::format::singular(k.what),
                        k.first
                    );
                }
                if !k.detail.is_empty() {
                    s.push_str(&format!(" ({})", k.detail));
                }
                s
            })
            .collect()
    }
}

fn position_before(a: Position, b: Position) -> bool {
    match (a, b) {
        (Position::Line(x), Position::Line(y)) | (Position::Offset(x), Position::Offset(y)) => {
            x < y
        }
        (Position::Whole, _) => false,
        (_, Position::Whole) => true,
        _ => false,
    }
}

/// The path as the user typed it, for messages.
pub fn display_name(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_keeps_first_position() {
        let mut d = Diagnostics::new("heap2.json");
        d.report("invalid lines", Position::Line(900), || "late".into());
        d.report("invalid lines", Position::Line(812), || "early".into());
        d.report("invalid lines", Position::Line(1000), || unreachable!());
        assert_eq!(d.total(), 3);
        assert_eq!(
            d.lines(),
            vec!["heap2.json: 3 invalid lines, first at line 812 (early)".to_string()]
        );
    }

    #[test]
    fn single_problem_reads_naturally() {
        let mut d = Diagnostics::new("r.txt");
        d.report("lines not understood", Position::Line(7), String::new);
        assert_eq!(d.lines(), vec!["r.txt: 1 line not understood at line 7"]);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Diagnostics::new("x");
        a.report("invalid lines", Position::Line(50), || "a".into());
        let mut b = Diagnostics::new("x");
        b.report("invalid lines", Position::Line(3), || "b".into());
        b.report("truncated lines", Position::Line(99), String::new);
        a.merge(b);
        assert_eq!(a.count_of("invalid lines"), 2);
        assert_eq!(a.kinds[0].first, Position::Line(3));
        assert_eq!(a.kinds[0].detail, "b");
        assert_eq!(a.count_of("truncated lines"), 1);
    }
}
