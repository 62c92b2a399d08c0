//! Class histograms and their diff, with the exact semantics and layout of Rubinius heap_dump's
//! `bin/histo.rb` (FORMATS.md §1.5), so the seed's tables come out byte-identical.
//!
//! Readers build a [`Histogram`] (one row per class, in the order each class was first seen);
//! this module sorts, diffs and prints it. Ties in count keep first-seen order, which makes the
//! output deterministic where histo.rb's unstable sort was not.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, Write};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassRow {
    pub name: String,
    pub count: i64,
    pub bytes: i64,
}

/// Rows in first-seen order. A name may appear twice when two distinct class objects share it
/// (Rubinius histograms are keyed by class object, like histo.rb's single-file mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    pub rows: Vec<ClassRow>,
}

/// How a row of a two-dump histogram came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffStatus {
    /// In both dumps with a different count: the row holds after − before.
    Changed,
    /// Only in AFTER: the row holds AFTER's own numbers (histo.rb prints these too).
    New,
    /// Only in BEFORE: the row holds −BEFORE (histo.rb never printed these).
    Vanished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffRow {
    pub name: String,
    pub count: i64,
    pub bytes: i64,
    pub status: DiffStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistogramDiff {
    /// Sorted: descending by count delta, ties in AFTER's first-seen order (vanished rows after
    /// every other row of equal delta).
    pub rows: Vec<DiffRow>,
}

impl Histogram {
    /// Adds `count`/`bytes` to the row of `name`, creating it at the end if new.
    /// For readers that key by name; `index` caches positions between calls. Sums saturate:
    /// a dump's `memsize` is whatever the file says.
    pub fn add(&mut self, index: &mut HashMap<String, usize>, name: &str, count: i64, bytes: i64) {
        match index.get(name) {
            Some(&i) => {
                self.rows[i].count = self.rows[i].count.saturating_add(count);
                self.rows[i].bytes = self.rows[i].bytes.saturating_add(bytes);
            }
            None => {
                index.insert(name.to_owned(), self.rows.len());
                self.rows.push(ClassRow {
                    name: name.to_owned(),
                    count,
                    bytes,
                });
            }
        }
    }

    /// Rows merged by name, keeping the first-seen order of each name.
    pub fn by_name(&self) -> Histogram {
        let mut out = Histogram::default();
        let mut index = HashMap::with_capacity(self.rows.len());
        for r in &self.rows {
            out.add(&mut index, &r.name, r.count, r.bytes);
        }
        out
    }

    /// Rows by descending count; equal counts keep first-seen order.
    pub fn sorted(&self) -> Vec<&ClassRow> {
        let mut rows: Vec<&ClassRow> = self.rows.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.count));
        rows
    }

    pub fn total_count(&self) -> i64 {
        self.rows
            .iter()
            .fold(0i64, |t, r| t.saturating_add(r.count))
    }

    pub fn total_bytes(&self) -> i64 {
        self.rows
            .iter()
            .fold(0i64, |t, r| t.saturating_add(r.bytes))
    }

    pub fn get(&self, name: &str) -> Option<&ClassRow> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// histo.rb's table: `%10d %30s %d` per row, sorted by count.
    pub fn write_histo_rb(&self, out: &mut dyn Write) -> io::Result<()> {
        for r in self.sorted() {
            write_histo_line(out, r.count, &r.name, r.bytes)?;
        }
        Ok(())
    }

    /// histo.rb's two-file semantics, by class name, plus classes that vanished from AFTER.
    pub fn diff(before: &Histogram, after: &Histogram) -> HistogramDiff {
        let before = before.by_name();
        let after = after.by_name();
        let before_index: HashMap<&str, &ClassRow> =
            before.rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let after_names: std::collections::HashSet<&str> =
            after.rows.iter().map(|r| r.name.as_str()).collect();
        let mut rows = Vec::new();
        for a in &after.rows {
            match before_index.get(a.name.as_str()) {
                Some(b) => {
                    let count = a.count.saturating_sub(b.count);
                    if count != 0 {
                        rows.push(DiffRow {
                            name: a.name.clone(),
                            count,
                            bytes: a.bytes.saturating_sub(b.bytes),
                            status: DiffStatus::Changed,
                        });
                    }
                }
                None => rows.push(DiffRow {
                    name: a.name.clone(),
                    count: a.count,
                    bytes: a.bytes,
                    status: DiffStatus::New,
                }),
            }
        }
        for b in &before.rows {
            if !after_names.contains(b.name.as_str()) && b.count != 0 {
                rows.push(DiffRow {
                    name: b.name.clone(),
                    count: b.count.saturating_neg(),
                    bytes: b.bytes.saturating_neg(),
                    status: DiffStatus::Vanished,
                });
            }
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.count));
        HistogramDiff { rows }
    }
}

impl HistogramDiff {
    /// The same `%10d %30s %d` layout; with `histo_rb_only`, vanished classes are left out,
    /// exactly as histo.rb does.
    pub fn write_histo_rb(&self, out: &mut dyn Write, histo_rb_only: bool) -> io::Result<()> {
        for r in &self.rows {
            if histo_rb_only && r.status == DiffStatus::Vanished {
                continue;
            }
            write_histo_line(out, r.count, &r.name, r.bytes)?;
        }
        Ok(())
    }
}

/// One line in histo.rb's printf layout: `%10d %30s %d`.
pub fn write_histo_line(out: &mut dyn Write, count: i64, name: &str, bytes: i64) -> io::Result<()> {
    writeln!(out, "{count:>10} {name:>30} {bytes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(rows: &[(&str, i64, i64)]) -> Histogram {
        Histogram {
            rows: rows
                .iter()
                .map(|&(n, c, b)| ClassRow {
                    name: n.into(),
                    count: c,
                    bytes: b,
                })
                .collect(),
        }
    }

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn prints_histo_rb_layout() {
        let hist = h(&[("ZMQ::Socket", 2, 96), ("ZMQ::Message", 168978, 8110944)]);
        let out = text(|v| hist.write_histo_rb(v).unwrap());
        assert_eq!(
            out,
            "    168978                   ZMQ::Message 8110944\n         2                    ZMQ::Socket 96\n"
        );
    }

    #[test]
    fn long_names_are_not_truncated() {
        let out = text(|v| write_histo_line(v, -184, "Rubinius::Tuple", -29192).unwrap());
        assert_eq!(out, "      -184                Rubinius::Tuple -29192\n");
        let long = "A".repeat(40);
        let out = text(|v| write_histo_line(v, 1, &long, 2).unwrap());
        assert_eq!(out, format!("         1 {long} 2\n"));
    }

    #[test]
    fn diff_follows_histo_rb_and_adds_vanished() {
        let before = h(&[("Array", 10, 100), ("Gone", 3, 30), ("Same", 5, 50)]);
        let after = h(&[("New", 7, 70), ("Array", 6, 60), ("Same", 5, 99)]);
        let d = Histogram::diff(&before, &after);
        let got: Vec<(&str, i64, i64, DiffStatus)> = d
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.count, r.bytes, r.status))
            .collect();
        assert_eq!(
            got,
            vec![
                ("New", 7, 70, DiffStatus::New),
                ("Gone", -3, -30, DiffStatus::Vanished),
                ("Array", -4, -40, DiffStatus::Changed),
            ]
        );
        let rb = text(|v| d.write_histo_rb(v, true).unwrap());
        assert!(!rb.contains("Gone"));
    }

    #[test]
    fn same_name_classes_merge_for_diff_but_not_for_histogram() {
        let before = h(&[("Dup", 1, 10), ("Dup", 2, 20)]);
        assert_eq!(before.sorted().len(), 2);
        let after = h(&[("Dup", 4, 40)]);
        let d = Histogram::diff(&before, &after);
        assert_eq!(d.rows.len(), 1);
        assert_eq!((d.rows[0].count, d.rows[0].bytes), (1, 10));
    }

    #[test]
    fn ties_keep_first_seen_order() {
        let hist = h(&[("B", 5, 1), ("A", 5, 2), ("C", 9, 3)]);
        let names: Vec<&str> = hist.sorted().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["C", "B", "A"]);
    }
}
