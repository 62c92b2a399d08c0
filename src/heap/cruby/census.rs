//! Counting a CRuby dump by class: the histogram, the allocation sites and the version
//! fingerprints, in one streaming pass per chunk, merged and named at the end.
//!
//! Stage: parser. [`CensusVisitor`] runs on every chunk in parallel (see `reader`);
//! [`Census::merge`] folds the chunks in file order; [`Census::histogram`] and
//! [`Census::alloc_sites`] resolve names (FORMATS.md §2.5) and produce the public types.

use super::classes::{ClassRecord, ClassTable, LabelKey};
use super::reader::{LineAt, LineRef, LineVisitor, ReadOutcome};
use super::scan::{RecordKind, parse_line};
use super::tables::{FastMap, Interner, fast_map};
use super::version::VersionEvidence;
use crate::diag::{Diagnostics, Position, ProblemKind};
use crate::heap::AllocSite;
use crate::heap::histogram::Histogram;
use std::collections::HashMap;

/// Allocation sites kept per class in a summary (largest counts first).
pub const SITES_PER_CLASS: usize = 20;

/// Count, bytes and the first line of one group of objects.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
    pub first: LineAt,
}

impl Tally {
    fn add(&mut self, bytes: u64, at: LineAt) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.first = self.first.min(at);
    }

    fn absorb(&mut self, o: &Tally) {
        self.count += o.count;
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.first = self.first.min(o.first);
    }
}

/// Objects of one label allocated at one site (`file` 0: no allocation info).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteKey {
    pub label: LabelKey,
    /// Interned file name, 0 when the object was not traced.
    pub file: u32,
    pub line: u32,
}

impl SiteKey {
    /// The same key with a chunk's interner ids translated to the merged ones.
    pub fn remapped(self, details: &[u32], files: &[u32]) -> SiteKey {
        SiteKey {
            label: self.label.remapped(details),
            file: files.get(self.file as usize).copied().unwrap_or(0),
            line: self.line,
        }
    }
}

/// Adds `count` objects and `bytes` to a (count, bytes) entry of `map`.
pub fn add_to<K: std::hash::Hash + Eq>(
    map: &mut FastMap<K, (u64, u64)>,
    key: K,
    count: u64,
    bytes: u64,
) {
    let e = map.entry(key).or_insert((0, 0));
    e.0 += count;
    e.1 = e.1.saturating_add(bytes);
}

/// Reports an unreadable line: "truncated lines" for an unterminated last line, else
/// "invalid lines".
pub fn report_bad_line(diag: &mut Diagnostics, line: &LineRef<'_>, err: impl std::fmt::Display) {
    let what = if line.unterminated {
        "truncated lines"
    } else {
        "invalid lines"
    };
    diag.report(what, line.at.position(), || err.to_string());
}

/// The per-chunk counting state; also the merged state of a whole dump.
#[derive(Debug)]
pub struct Census {
    want_sites: bool,
    tallies: FastMap<LabelKey, Tally>,
    details: Interner,
    classes: Vec<ClassRecord>,
    sites: FastMap<SiteKey, (u64, u64)>,
    files: Interner,
    pub version: VersionEvidence,
    pub objects: u64,
    /// Objects whose line gave their `slot_size` (3.2+), and the sum of those sizes.
    slotted: u64,
    slot_bytes: u64,
    pub roots: u64,
    pub shapes: u64,
}

/// A [`Census`] as a chunk visitor.
pub struct CensusVisitor(pub Census);

impl Census {
    pub fn new(want_sites: bool) -> Self {
        Census {
            want_sites,
            tallies: fast_map(),
            details: Interner::new(),
            classes: Vec::new(),
            sites: fast_map(),
            files: Interner::new(),
            version: VersionEvidence::default(),
            objects: 0,
            slotted: 0,
            slot_bytes: 0,
            roots: 0,
            shapes: 0,
        }
    }

    fn visit(&mut self, line: &LineRef<'_>, diag: &mut Diagnostics) {
        let rec = match parse_line(line.bytes) {
            Ok(r) => r,
            Err(e) => return report_bad_line(diag, line, e),
        };
        self.version.observe(&rec);
        match rec.kind() {
            RecordKind::Root => {
                self.roots += 1;
                return;
            }
            RecordKind::Shape => {
                self.shapes += 1;
                return;
            }
            RecordKind::Object => {}
        }
        self.objects += 1;
        if let Some(size) = rec.slot_size {
            self.slotted += 1;
            self.slot_bytes = self.slot_bytes.saturating_add(size);
        }
        let key = LabelKey::of(&rec, &mut self.details);
        let bytes = rec.memsize.unwrap_or(0);
        self.tallies
            .entry(key)
            .or_insert(Tally {
                count: 0,
                bytes: 0,
                first: line.at,
            })
            .add(bytes, line.at);
        if rec.obj_type().is_class_like()
            && let Some(c) = ClassRecord::of(&rec)
        {
            self.classes.push(c);
        }
        if self.want_sites
            && let (Some(file), Some(l)) = (rec.file, rec.line)
        {
            let site = SiteKey {
                label: key,
                file: self.files.intern(file),
                line: u32::try_from(l).unwrap_or(u32::MAX),
            };
            add_to(&mut self.sites, site, 1, bytes);
        }
    }

    /// The bytes of the heap slots the objects occupy, when every object's line gave its
    /// `slot_size` (Ruby 3.2+ dumps); `None` for older dumps, whose slots are all one size.
    pub fn slot_bytes(&self) -> Option<u64> {
        (self.objects > 0 && self.slotted == self.objects).then_some(self.slot_bytes)
    }

    /// Folds another chunk's census into this one.
    pub fn merge(&mut self, other: Census) {
        let detail_map = other.details.remap_into(&mut self.details);
        let file_map = other.files.remap_into(&mut self.files);
        for (key, t) in other.tallies {
            let key = key.remapped(&detail_map);
            match self.tallies.get_mut(&key) {
                Some(mine) => mine.absorb(&t),
                None => {
                    self.tallies.insert(key, t);
                }
            }
        }
        self.classes.extend(other.classes);
        for (site, (count, bytes)) in other.sites {
            add_to(
                &mut self.sites,
                site.remapped(&detail_map, &file_map),
                count,
                bytes,
            );
        }
        self.version.merge(&other.version);
        self.objects += other.objects;
        self.slotted += other.slotted;
        self.slot_bytes = self.slot_bytes.saturating_add(other.slot_bytes);
        self.roots += other.roots;
        self.shapes += other.shapes;
    }

    /// Merges the chunks of a read, in file order.
    pub fn from_outcome(outcome: ReadOutcome<CensusVisitor>, want_sites: bool) -> Named {
        let mut all = Census::new(want_sites);
        let mut firsts = Vec::with_capacity(outcome.chunks.len());
        for c in outcome.chunks {
            firsts.push(c.first_line);
            all.merge(c.visitor.0);
        }
        Named::new(all, firsts, outcome.diagnostics)
    }
}

impl LineVisitor for CensusVisitor {
    fn visit(&mut self, line: LineRef<'_>, diag: &mut Diagnostics) {
        self.0.visit(&line, diag);
    }
}

/// A merged census with its names resolved.
pub struct Named {
    pub census: Census,
    pub classes: ClassTable,
    /// Label of every key.
    labels: HashMap<LabelKey, String>,
    /// File line of each chunk's first line, to turn [`LineAt`] into file lines.
    chunk_first_lines: Vec<u64>,
    pub diagnostics: Diagnostics,
}

impl Named {
    fn new(mut census: Census, chunk_first_lines: Vec<u64>, mut diagnostics: Diagnostics) -> Self {
        let mut classes = ClassTable::new();
        for c in std::mem::take(&mut census.classes) {
            classes.insert(c);
        }
        let mut labels = HashMap::with_capacity(census.tallies.len());
        let mut missing: Option<(LineAt, u64)> = None;
        let mut missing_objects = 0u64;
        for (key, t) in &census.tallies {
            labels.insert(*key, classes.label(*key, &census.details));
            if classes.class_missing(*key) {
                missing_objects += t.count;
                if missing.is_none_or(|(at, _)| t.first < at) {
                    missing = Some((t.first, key.class));
                }
            }
        }
        let mut named = Named {
            census,
            classes,
            labels,
            chunk_first_lines,
            diagnostics: Diagnostics::default(),
        };
        if let Some((at, class)) = missing {
            diagnostics.kinds.push(ProblemKind {
                what: "objects whose class is not in the dump",
                count: missing_objects,
                first: Position::Line(named.file_line(at)),
                detail: format!(
                    "class 0x{class:x}; labelled #<Class:0x…>; a partial `since:` dump has no class records"
                ),
            });
        }
        named.diagnostics = diagnostics;
        named
    }

    pub fn file_line(&self, at: LineAt) -> u64 {
        let first = self
            .chunk_first_lines
            .get(at.chunk as usize)
            .copied()
            .unwrap_or(1);
        first + at.line.saturating_sub(1)
    }

    pub fn label(&self, key: &LabelKey) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }

    /// The histogram by class name, rows in the order each name was first seen in the file.
    pub fn histogram(&self) -> Histogram {
        let mut keys: Vec<(&LabelKey, &Tally)> = self.census.tallies.iter().collect();
        keys.sort_by_key(|(k, t)| (t.first, **k));
        let mut h = Histogram::default();
        let mut index = HashMap::with_capacity(keys.len());
        for (k, t) in keys {
            h.add(
                &mut index,
                self.label(k),
                clamp_i64(t.count),
                clamp_i64(t.bytes),
            );
        }
        h
    }

    /// Named classes whose instances are typed DATA objects, with the struct name of each
    /// (`RingBuf` / `ringbuf`), by class then struct name.
    pub fn data_types(&self) -> Vec<crate::heap::DataType> {
        let mut merged: std::collections::BTreeMap<(&str, &[u8]), (u64, u64)> =
            std::collections::BTreeMap::new();
        for (key, t) in &self.census.tallies {
            if key.obj_type != super::scan::ObjType::Data || key.detail == 0 {
                continue;
            }
            let class = self.label(key);
            // Objects without a class of their own are labelled by the struct already.
            if class.ends_with(" (DATA)") {
                continue;
            }
            let e = merged
                .entry((class, self.census.details.get(key.detail)))
                .or_insert((0, 0));
            e.0 += t.count;
            e.1 = e.1.saturating_add(t.bytes);
        }
        merged
            .into_iter()
            .map(|((class, name), (count, bytes))| crate::heap::DataType {
                class: class.to_owned(),
                struct_name: String::from_utf8_lossy(name).into_owned(),
                count,
                bytes,
            })
            .collect()
    }

    /// Allocation sites by (class name, file, line), at most [`SITES_PER_CLASS`] per class,
    /// largest count first.
    pub fn alloc_sites(&self) -> Vec<AllocSite> {
        let mut merged: HashMap<(&str, u32, u32), (u64, u64)> = HashMap::new();
        for (site, &(count, bytes)) in &self.census.sites {
            let e = merged
                .entry((self.label(&site.label), site.file, site.line))
                .or_insert((0, 0));
            e.0 += count;
            e.1 = e.1.saturating_add(bytes);
        }
        let mut all: Vec<AllocSite> = merged
            .into_iter()
            .map(|((class, file, line), (count, bytes))| AllocSite {
                class: class.to_owned(),
                file: String::from_utf8_lossy(self.census.files.get(file)).into_owned(),
                line,
                count,
                bytes,
            })
            .collect();
        all.sort_by(|a, b| {
            (b.count, b.bytes)
                .cmp(&(a.count, a.bytes))
                .then_with(|| (&a.class, &a.file, a.line).cmp(&(&b.class, &b.file, b.line)))
        });
        let mut per_class: HashMap<String, usize> = HashMap::new();
        all.retain(|s| {
            let n = per_class.entry(s.class.clone()).or_insert(0);
            *n += 1;
            *n <= SITES_PER_CLASS
        });
        all
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
