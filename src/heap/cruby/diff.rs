//! Address-set diff of two or three CRuby dumps, with heapy's semantics: objects (keyed by
//! address and type) present in B but not in A are *allocated*; with C, only those still present
//! in C are *retained*. They are grouped by type and allocation site, and by class.
//!
//! Stage: parser → computed evidence. A and C are read as sets of packed keys (a sorted
//! `Vec<u64>`, 8 bytes per object, reading only the first two keys of each line); B is
//! streamed in parallel chunks and each of its objects is looked up in those sets with a
//! galloping search from the previous hit (dumps list objects in address order, so lookups
//! move forward). Memory is about 16 bytes per object of the larger of A and C.
//!
//! An address diff is blurred by address reuse (a freed slot holds a new object of the same
//! type) and by `GC.compact` (objects move); [`CAVEAT`] says so for reports.

use crate::diag::Diagnostics;
use crate::error::Result;
use crate::heap::cruby::census::{SiteKey, add_to, report_bad_line};
use crate::heap::cruby::classes::{ClassRecord, ClassTable, LabelKey};
use crate::heap::cruby::reader::{
    LineRef, LineVisitor, ReadOptions, read_lines, read_lines_in_order,
};
use crate::heap::cruby::scan::{ObjType, RecordKind, parse_line, parse_prefix};
use crate::heap::cruby::tables::{FastMap, Interner, fast_map};
use crate::heap::cruby::{command_options, nothing_read};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What every diff report must say.
pub const CAVEAT: &str = "objects are matched by address and type: Ruby reuses the slot of a \
    freed object for a new one, and GC.compact moves objects, so an address diff can both miss \
    and invent objects";

/// Class names listed per site group.
const CLASSES_PER_GROUP: usize = 3;

/// Allocated (two dumps) or retained (three dumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// In B, not in A.
    Allocated,
    /// In B, not in A, still in C.
    Retained,
}

/// Objects of one class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassCount {
    pub class: String,
    pub count: u64,
    pub bytes: u64,
}

/// Objects of one type allocated at one site (`file: None` = no allocation info).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteGroup {
    /// Dump type name, e.g. `STRING`, `OBJECT`, `IMEMO`.
    pub obj_type: &'static str,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub count: u64,
    pub bytes: u64,
    /// The classes in the group, largest first (at most 3).
    pub classes: Vec<ClassCount>,
}

/// One input of a diff.
#[derive(Debug, Clone, Serialize)]
pub struct DiffInput {
    pub path: PathBuf,
    /// Objects read (ROOT and SHAPE lines excluded).
    pub objects: u64,
    #[serde(skip)]
    pub diagnostics: Diagnostics,
}

/// The result of `diff A B [C]`.
#[derive(Debug, Clone, Serialize)]
pub struct AddressDiff {
    pub kind: DiffKind,
    pub a: DiffInput,
    pub b: DiffInput,
    pub c: Option<DiffInput>,
    /// Objects of B that passed the filter, and their bytes (sum of `memsize`).
    pub objects: u64,
    pub bytes: u64,
    /// Every group, largest count first (ties: larger bytes, then type and site).
    pub groups: Vec<SiteGroup>,
    /// Per class, largest count first.
    pub classes: Vec<ClassCount>,
}

/// Diffs `a`, `b` and optionally `c` with default read options (progress bars on).
pub fn diff(a: &Path, b: &Path, c: Option<&Path>) -> Result<AddressDiff> {
    diff_with(a, b, c, &|p| command_options(p))
}

/// [`diff`] with the read options of each input chosen by `options`.
pub fn diff_with(
    a: &Path,
    b: &Path,
    c: Option<&Path>,
    options: &dyn Fn(&Path) -> ReadOptions,
) -> Result<AddressDiff> {
    let (a_keys, a_input) = read_keys(a, &options(a))?;
    let c_read = match c {
        Some(c) => Some(read_keys(c, &options(c))?),
        None => None,
    };
    let c_keys = c_read.as_ref().map(|(k, _)| k);
    let outcome = read_lines(b, &options(b), |_| StreamB::new(&a_keys, c_keys))?;
    let mut merged = StreamB::new(&a_keys, c_keys);
    for chunk in outcome.chunks {
        merged.merge(chunk.visitor);
    }
    if merged.objects == 0 {
        return Err(nothing_read(b, &outcome.diagnostics));
    }
    let b_input = DiffInput {
        path: b.to_path_buf(),
        objects: merged.objects,
        diagnostics: outcome.diagnostics,
    };
    let (groups, classes, objects, bytes) = merged.report();
    Ok(AddressDiff {
        kind: if c.is_some() {
            DiffKind::Retained
        } else {
            DiffKind::Allocated
        },
        a: a_input,
        b: b_input,
        c: c_read.map(|(_, i)| i),
        objects,
        bytes,
        groups,
        classes,
    })
}

/// `(address, type)` packed into one word: the address shifted left 5 bits, the type below.
/// User-space addresses fit in 57 bits on every 64-bit platform Ruby runs on.
pub fn pack_key(address: u64, obj_type: ObjType) -> u64 {
    (address << 5) | u64::from(obj_type as u8 & 0x1f)
}

/// A sorted, deduplicated set of packed keys.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<u64>,
}

impl KeySet {
    pub fn from_unsorted(mut keys: Vec<u64>) -> KeySet {
        keys.sort_unstable();
        keys.dedup();
        keys.shrink_to_fit();
        KeySet { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` is in the set, searching outward from `hint` (the index of the previous
    /// lookup), which is then updated. Sequential lookups cost O(1) each.
    pub fn contains_near(&self, key: u64, hint: &mut usize) -> bool {
        let keys = &self.keys;
        let n = keys.len();
        if n == 0 {
            return false;
        }
        let h = (*hint).min(n - 1);
        let (lo, hi) = if keys[h] < key {
            // The key can only be right of h: probe h+1, h+2, h+4, …
            let mut step = 1;
            let mut lo = h + 1;
            loop {
                let probe = h + step;
                if probe >= n {
                    break (lo, n);
                }
                if keys[probe] >= key {
                    break (lo, probe + 1);
                }
                lo = probe + 1;
                step *= 2;
            }
        } else {
            // keys[h] >= key: the key can only be at h or left of it.
            let mut step = 1;
            let mut hi = h + 1;
            loop {
                if step > h {
                    break (0, hi);
                }
                let probe = h - step;
                if keys[probe] < key {
                    break (probe + 1, hi);
                }
                hi = probe + 1;
                step *= 2;
            }
        };
        match keys[lo..hi].binary_search(&key) {
            Ok(i) => {
                *hint = lo + i;
                true
            }
            Err(i) => {
                *hint = (lo + i).min(n - 1);
                false
            }
        }
    }
}

/// Collects the keys of one chunk.
struct CollectKeys {
    keys: Vec<u64>,
}

impl LineVisitor for CollectKeys {
    fn visit(&mut self, line: LineRef<'_>, diag: &mut Diagnostics) {
        if !line.unterminated
            && let Some((address, ty)) = parse_prefix(line.bytes)
        {
            self.keys.push(pack_key(address, ty));
            return;
        }
        match parse_line(line.bytes) {
            Ok(rec) if rec.kind() == RecordKind::Object => {
                if let Some(address) = rec.address {
                    self.keys.push(pack_key(address, rec.obj_type()));
                }
            }
            Ok(_) => {}
            Err(e) => report_bad_line(diag, &line, e),
        }
    }
}

fn read_keys(path: &Path, opts: &ReadOptions) -> Result<(KeySet, DiffInput)> {
    // Chunks are appended (and freed) as they finish, so the keys are never held twice.
    let mut keys: Vec<u64> = Vec::new();
    let summary = read_lines_in_order(
        path,
        opts,
        |_| CollectKeys { keys: Vec::new() },
        |c| keys.extend_from_slice(&c.visitor.keys),
    )?;
    if keys.is_empty() {
        return Err(nothing_read(path, &summary.diagnostics));
    }
    let input = DiffInput {
        path: path.to_path_buf(),
        objects: keys.len() as u64,
        diagnostics: summary.diagnostics,
    };
    Ok((KeySet::from_unsorted(keys), input))
}

/// What tells two objects at one address apart when their type is the same: the class
/// address, and the GC generation of the allocation when the dump traced allocations. A slot
/// freed and reused for an object of the same class has a later generation, so with tracing a
/// reused slot reads as a new object; without it, reuse by the same class reads as the old
/// object (new objects are then undercounted, never invented).
pub fn object_stamp(class: Option<u64>, generation: Option<u64>) -> u64 {
    class
        .unwrap_or(0)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        ^ generation.map_or(u64::MAX, |g| g.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
}

/// The objects of a first dump, to tell which objects of a later dump of the same process are
/// new: keyed by address and type ([`pack_key`]) with their [`object_stamp`]. About 16 bytes
/// per object.
#[derive(Debug, Default)]
pub struct Baseline {
    entries: Vec<(u64, u64)>,
    /// Arrays' and Hashes' (key, stamp, length): whether a container grew since.
    lengths: Vec<(u64, u64, u64)>,
}

impl Baseline {
    pub fn from_unsorted(
        mut entries: Vec<(u64, u64)>,
        mut lengths: Vec<(u64, u64, u64)>,
    ) -> Baseline {
        entries.sort_unstable();
        entries.dedup();
        entries.shrink_to_fit();
        lengths.sort_unstable();
        lengths.shrink_to_fit();
        Baseline { entries, lengths }
    }

    /// The length the container (packed key, stamp) had in the first dump, if it was there.
    pub fn length_of(&self, key: u64, stamp: u64) -> Option<u64> {
        let at = self
            .lengths
            .partition_point(|&(k, s, _)| (k, s) < (key, stamp));
        self.lengths
            .get(at)
            .filter(|&&(k, s, _)| (k, s) == (key, stamp))
            .map(|&(_, _, length)| length)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the object (packed key, stamp) was already in the first dump.
    pub fn contains(&self, key: u64, stamp: u64) -> bool {
        self.entries.binary_search(&(key, stamp)).is_ok()
    }

    /// Reads every object line of a dump (whole lines: the stamp needs the class and the
    /// generation).
    pub fn read(path: &Path, opts: &ReadOptions) -> Result<Baseline> {
        let mut entries: Vec<(u64, u64)> = Vec::new();
        let mut lengths: Vec<(u64, u64, u64)> = Vec::new();
        let summary = read_lines_in_order(
            path,
            opts,
            |_| CollectStamped {
                entries: Vec::new(),
                lengths: Vec::new(),
            },
            |c| {
                entries.extend_from_slice(&c.visitor.entries);
                lengths.extend_from_slice(&c.visitor.lengths);
            },
        )?;
        if entries.is_empty() {
            return Err(nothing_read(path, &summary.diagnostics));
        }
        Ok(Baseline::from_unsorted(entries, lengths))
    }
}

struct CollectStamped {
    entries: Vec<(u64, u64)>,
    lengths: Vec<(u64, u64, u64)>,
}

impl LineVisitor for CollectStamped {
    fn visit(&mut self, line: LineRef<'_>, diag: &mut Diagnostics) {
        match parse_line(line.bytes) {
            Ok(rec) if rec.kind() == RecordKind::Object => {
                if let Some(address) = rec.address {
                    let key = pack_key(address, rec.obj_type());
                    let stamp = object_stamp(rec.class, rec.generation);
                    self.entries.push((key, stamp));
                    if matches!(rec.obj_type(), ObjType::Array | ObjType::Hash)
                        && let Some(length) = rec.length
                    {
                        self.lengths.push((key, stamp, length));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => report_bad_line(diag, &line, e),
        }
    }
}

/// Streams B: keeps the objects that pass the filter, grouped, plus every class record.
struct StreamB<'s> {
    a: &'s KeySet,
    c: Option<&'s KeySet>,
    hint_a: usize,
    hint_c: usize,
    groups: FastMap<SiteKey, (u64, u64)>,
    details: Interner,
    files: Interner,
    classes: Vec<ClassRecord>,
    objects: u64,
}

impl<'s> StreamB<'s> {
    fn new(a: &'s KeySet, c: Option<&'s KeySet>) -> Self {
        StreamB {
            a,
            c,
            hint_a: 0,
            hint_c: 0,
            groups: fast_map(),
            details: Interner::new(),
            files: Interner::new(),
            classes: Vec::new(),
            objects: 0,
        }
    }

    fn merge(&mut self, other: StreamB<'_>) {
        let details = other.details.remap_into(&mut self.details);
        let files = other.files.remap_into(&mut self.files);
        for (k, (count, bytes)) in other.groups {
            add_to(&mut self.groups, k.remapped(&details, &files), count, bytes);
        }
        self.classes.extend(other.classes);
        self.objects += other.objects;
    }

    /// Names the groups: (site groups, classes, objects, bytes).
    fn report(self) -> (Vec<SiteGroup>, Vec<ClassCount>, u64, u64) {
        let mut table = ClassTable::new();
        for c in self.classes {
            table.insert(c);
        }
        let mut labels: HashMap<LabelKey, String> = HashMap::new();
        let mut sites: HashMap<(ObjType, u32, u32), SiteTotals> = HashMap::new();
        let mut per_class: HashMap<String, (u64, u64)> = HashMap::new();
        let (mut objects, mut bytes) = (0u64, 0u64);
        for (k, (count, b)) in &self.groups {
            let label = labels
                .entry(k.label)
                .or_insert_with(|| table.label(k.label, &self.details))
                .clone();
            objects += count;
            bytes = bytes.saturating_add(*b);
            let site = sites.entry((k.label.obj_type, k.file, k.line)).or_default();
            site.count += count;
            site.bytes = site.bytes.saturating_add(*b);
            let cls = site.classes.entry(label.clone()).or_insert((0, 0));
            cls.0 += count;
            cls.1 = cls.1.saturating_add(*b);
            let pc = per_class.entry(label).or_insert((0, 0));
            pc.0 += count;
            pc.1 = pc.1.saturating_add(*b);
        }
        let mut groups: Vec<SiteGroup> = sites
            .into_iter()
            .map(|((ty, file, line), totals)| {
                let SiteTotals {
                    count,
                    bytes: b,
                    classes,
                } = totals;
                let mut classes = sorted_counts(classes);
                classes.truncate(CLASSES_PER_GROUP);
                SiteGroup {
                    obj_type: ty.as_str(),
                    file: (file != 0)
                        .then(|| String::from_utf8_lossy(self.files.get(file)).into_owned()),
                    line: (file != 0).then_some(line),
                    count,
                    bytes: b,
                    classes,
                }
            })
            .collect();
        groups.sort_by(|x, y| {
            (y.count, y.bytes)
                .cmp(&(x.count, x.bytes))
                .then_with(|| (x.obj_type, &x.file, x.line).cmp(&(y.obj_type, &y.file, y.line)))
        });
        (groups, sorted_counts(per_class), objects, bytes)
    }
}

/// Objects of one (type, site) while grouping, with their classes.
#[derive(Default)]
struct SiteTotals {
    count: u64,
    bytes: u64,
    classes: HashMap<String, (u64, u64)>,
}

fn sorted_counts(map: HashMap<String, (u64, u64)>) -> Vec<ClassCount> {
    let mut v: Vec<ClassCount> = map
        .into_iter()
        .map(|(class, (count, bytes))| ClassCount {
            class,
            count,
            bytes,
        })
        .collect();
    v.sort_by(|x, y| {
        (y.count, y.bytes)
            .cmp(&(x.count, x.bytes))
            .then_with(|| x.class.cmp(&y.class))
    });
    v
}

impl LineVisitor for StreamB<'_> {
    fn visit(&mut self, line: LineRef<'_>, diag: &mut Diagnostics) {
        let rec = match parse_line(line.bytes) {
            Ok(r) => r,
            Err(e) => return report_bad_line(diag, &line, e),
        };
        if rec.kind() != RecordKind::Object {
            return;
        }
        let Some(address) = rec.address else { return };
        self.objects += 1;
        if let Some(c) = ClassRecord::of(&rec) {
            self.classes.push(c);
        }
        let key = pack_key(address, rec.obj_type());
        if self.a.contains_near(key, &mut self.hint_a) {
            return;
        }
        if let Some(c) = self.c
            && !c.contains_near(key, &mut self.hint_c)
        {
            return;
        }
        let (file, line_no) = match (rec.file, rec.line) {
            (Some(f), Some(l)) => (self.files.intern(f), u32::try_from(l).unwrap_or(u32::MAX)),
            (Some(f), None) => (self.files.intern(f), 0),
            _ => (0, 0),
        };
        let group = SiteKey {
            label: LabelKey::of(&rec, &mut self.details),
            file,
            line: line_no,
        };
        add_to(&mut self.groups, group, 1, rec.memsize.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn galloping_lookup_agrees_with_binary_search() {
        let set = KeySet::from_unsorted((0..2000u64).map(|i| i * 7 + (i % 3)).collect());
        let mut hint = 0;
        // Forward, backward and random orders.
        let mut probes: Vec<u64> = (0..15000).collect();
        probes.extend((0..15000).rev());
        probes.extend((0..5000u64).map(|i| (i * 7919) % 15000));
        for p in probes {
            assert_eq!(
                set.contains_near(p, &mut hint),
                set.keys.binary_search(&p).is_ok(),
                "key {p}"
            );
        }
        assert!(!KeySet::default().contains_near(3, &mut hint));
    }

    #[test]
    fn keys_pack_address_and_type() {
        assert_ne!(
            pack_key(0x7f00, ObjType::String),
            pack_key(0x7f00, ObjType::Array)
        );
        assert!(pack_key(0x7f00, ObjType::Hash) < pack_key(0x7f08, ObjType::None));
    }

    fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    }

    fn obj(addr: u64, ty: &str, class: &str, site: Option<(&str, u32)>) -> String {
        let site = site.map_or(String::new(), |(f, l)| {
            format!(r#", "file":"{f}", "line":{l}"#)
        });
        format!(
            r#"{{"address":"0x{addr:x}", "type":"{ty}", "class":"{class}"{site}, "memsize":40}}"#
        )
    }

    #[test]
    fn three_dump_diff_keeps_retained_new_objects() {
        let dir = tempfile::tempdir().unwrap();
        let class = r#"{"address":"0x1000", "type":"CLASS", "class":"0x1001", "name":"Order", "memsize":500}"#.to_string();
        let a = write(
            dir.path(),
            "a",
            &[class.clone(), obj(0x10, "OBJECT", "0x1000", None)],
        );
        let mut b_lines = vec![class.clone(), obj(0x10, "OBJECT", "0x1000", None)];
        for i in 0..10 {
            b_lines.push(obj(0x100 + i * 40, "OBJECT", "0x1000", Some(("app.rb", 7))));
        }
        b_lines.push(obj(0x2000, "STRING", "0x1000", None));
        let b = write(dir.path(), "b", &b_lines);
        let mut c_lines = vec![class];
        for i in 0..4 {
            c_lines.push(obj(0x100 + i * 40, "OBJECT", "0x1000", Some(("app.rb", 7))));
        }
        // Same address, other type: a different object.
        c_lines.push(obj(0x100 + 5 * 40, "STRING", "0x1000", None));
        let c = write(dir.path(), "c", &c_lines);
        let opts = |_: &Path| ReadOptions {
            threads: 2,
            chunk_bytes: 64,
            buffer_bytes: 128,
            ..ReadOptions::default()
        };
        let d = diff_with(&a, &b, Some(&c), &opts).unwrap();
        assert_eq!(d.kind, DiffKind::Retained);
        assert_eq!((d.objects, d.bytes), (4, 160));
        assert_eq!(d.groups.len(), 1);
        assert_eq!(d.groups[0].file.as_deref(), Some("app.rb"));
        assert_eq!(d.groups[0].line, Some(7));
        assert_eq!(d.groups[0].classes[0].class, "Order");
        assert_eq!(
            (d.a.objects, d.b.objects, d.c.as_ref().unwrap().objects),
            (2, 13, 6)
        );
        let d2 = diff_with(&a, &b, None, &opts).unwrap();
        assert_eq!(d2.objects, 11);
        assert_eq!(d2.groups[1].file, None);
        assert_eq!(d2.groups[1].obj_type, "STRING");
    }
}
