//! Why objects stay alive: shortest paths from a GC root to the instances of a class (grouped)
//! or to one object, in a CRuby dump.
//!
//! Stage: parser → computed evidence. One parallel pass builds a compact graph: object
//! addresses become dense `u32` ids in file order, out-edges are stored CSR-style (`references`
//! plus the implicit object → class edge that `references` leaves out, FORMATS.md §2.4), and
//! ROOT lines give the sources. A breadth-first search from every root (in ROOT-line order)
//! gives each reachable object its parent on a shortest path.
//!
//! For a class, each instance's path is reduced to a signature — the chain of containers as
//! (class name, allocation site, edge kind), with runs of identical containers collapsed
//! (`Node ×500`) — and instances are grouped by signature. Signatures are hash-consed in a trie
//! memoized per object, so grouping costs O(objects) even for deep structures.
//!
//! The library API (used by `leakhunt retainers` and by the correlator): [`for_class`],
//! [`for_address`], and the result types [`ClassRetainers`], [`AddressRetainers`],
//! [`RetainerGroup`], [`RetainerStep`].

use crate::diag::Diagnostics;
use crate::error::{Error, Result};
use crate::heap::cruby::census::report_bad_line;
use crate::heap::cruby::classes::{ClassRecord, ClassTable, LabelKey};
use crate::heap::cruby::diff::{Baseline, object_stamp, pack_key};
use crate::heap::cruby::reader::{
    ChunkOutcome, LineRef, LineVisitor, ReadOptions, read_lines_in_order, run_workers,
};
use crate::heap::cruby::scan::{ObjType, RecordKind, parse_line, refs};
use crate::heap::cruby::tables::{FastMap, Interner, fast_map};
use crate::heap::cruby::{command_options, nothing_read};
use serde::{Serialize, Serializer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most container steps kept per path (nearest the target first); the rest are counted in
/// [`RetainerGroup::elided_steps`].
pub const MAX_STEPS: usize = 32;

/// An edge target that is not an object of the dump.
const NO_NODE: u32 = u32::MAX;
/// Parent of an object not reached from any root.
const UNSEEN: u32 = u32::MAX;
/// Parents at or above this value are ROOT categories: `ROOT_TAG + category index`.
const ROOT_TAG: u32 = u32::MAX - 1 - MAX_ROOT_CATEGORIES;
const MAX_ROOT_CATEGORIES: u32 = 1024;
/// No site / no length.
const NONE32: u32 = u32::MAX;

/// How a container holds the next object on the path toward the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// The next object is in the container's `references` (an element, an ivar, a value…).
    Reference,
    /// The next object is the container's class (the implicit edge `references` omits).
    Class,
}

/// Where an object was allocated (dumps made with allocation tracing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One container on a path: an object (or a run of alike objects) that holds the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetainerStep {
    /// The container's class, labelled as in the histogram (`Array`, `Hash (hidden)`, …).
    pub class: String,
    /// The container's dump type (`ARRAY`, `HASH`, `OBJECT`, …).
    pub obj_type: &'static str,
    /// For a container that is itself a class or module: its own name (`Gem`, `Object`).
    pub name: Option<String>,
    /// The container on the group's representative path (the first one of a run).
    #[serde(serialize_with = "hex")]
    pub address: u64,
    /// How many different objects fill this step over all of the group's paths (for a
    /// collapsed run: over the whole run). 1 when every instance sits in the same container.
    pub distinct: u64,
    /// The representative container's allocation site, when the dump traced it.
    pub site: Option<Site>,
    /// The representative container's `length` (ARRAY elements), `size` (HASH entries) or
    /// `bytesize` (STRING/SYMBOL).
    pub length: Option<u64>,
    /// How this container holds the next object toward the target.
    pub edge: EdgeKind,
    /// Consecutive alike containers (same class, site and edge kind) collapsed into this step.
    pub repeat: u64,
}

/// Instances that share one path shape from a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetainerGroup {
    /// Instances with this path.
    pub count: u64,
    /// Sum of the instances' `memsize`.
    pub bytes: u64,
    /// A representative instance.
    #[serde(serialize_with = "hex")]
    pub example: u64,
    /// Containers from the instance's immediate holder up toward the root. Empty when the
    /// instances are referenced by the root directly.
    pub steps: Vec<RetainerStep>,
    /// Containers between the last step shown and the root, left out (paths longer than
    /// [`MAX_STEPS`] steps).
    pub elided_steps: u64,
    /// The ROOT category the path starts from (`vm`, `machine_context`, `global_tbl`, …).
    pub root: String,
    /// With a baseline, for an Array or Hash holder that was already in it: the elements it
    /// gained since. A container that holds new instances without growing is turning its
    /// contents over (a steady cache), not piling them up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_growth: Option<i64>,
}

/// Why the instances of one class are alive.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRetainers {
    pub dump: PathBuf,
    pub class: String,
    /// Instances of the class in the dump.
    pub instances: u64,
    /// With a baseline: the instances absent from it (new since), the only ones grouped and
    /// counted as reachable or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_instances: Option<u64>,
    /// Instances (the new ones, with a baseline) with a path from a root.
    pub reachable: u64,
    /// Instances with no path from a root: garbage not yet collected, or held through
    /// references the dump does not record. Every instance, when the dump has no ROOT lines.
    pub unreachable: u64,
    /// Whether the dump has ROOT lines at all (a partial `since:` dump has none).
    pub has_roots: bool,
    /// The largest groups (by count, then bytes), at most `top`.
    pub groups: Vec<RetainerGroup>,
    /// How many groups there were in all.
    pub groups_total: usize,
    /// When no instance was found: class names of the dump that look alike.
    pub similar: Vec<String>,
    #[serde(skip)]
    pub diagnostics: Diagnostics,
}

/// Why one object is alive.
#[derive(Debug, Clone, Serialize)]
pub struct AddressRetainers {
    pub dump: PathBuf,
    #[serde(serialize_with = "hex")]
    pub address: u64,
    /// Whether the dump has an object at that address.
    pub found: bool,
    /// The object's class label and type, when found.
    pub class: Option<String>,
    pub obj_type: Option<&'static str>,
    pub site: Option<Site>,
    pub has_roots: bool,
    /// The shortest path from a root, if any (`count` is 1).
    pub path: Option<RetainerGroup>,
    #[serde(skip)]
    pub diagnostics: Diagnostics,
}

fn hex<S: Serializer>(v: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("0x{v:x}"))
}

/// Groups the shortest root paths of every instance of `class` (a histogram label, e.g.
/// `ZMQ::Message` or `String (hidden)`); keeps the `top` largest groups.
pub fn for_class(path: &Path, class: &str, top: usize) -> Result<ClassRetainers> {
    for_class_with(path, class, top, &command_options(path))
}

pub fn for_class_with(
    path: &Path,
    class: &str,
    top: usize,
    opts: &ReadOptions,
) -> Result<ClassRetainers> {
    let mut heap = Heap::read(path, opts, false)?;
    heap.search();
    let diagnostics = std::mem::take(&mut heap.diagnostics);
    let mut marks = vec![0u32; heap.len() as usize];
    let mut report = heap.class_report(path, class, top, None, &mut marks);
    report.diagnostics = diagnostics;
    Ok(report)
}

/// Retainer groups of several classes from one read of the dump. With a `baseline` (the
/// objects of an earlier dump of the same process), only the instances absent from it are
/// grouped: the objects that appeared since, which is where a leak's growth is; the instances
/// that were already there say why the steady population lives, not why it grows.
pub fn for_classes_with(
    path: &Path,
    classes: &[String],
    top: usize,
    opts: &ReadOptions,
    baseline: Option<&Baseline>,
) -> Result<Vec<ClassRetainers>> {
    let mut heap = Heap::read(path, opts, baseline.is_some())?;
    heap.search();
    let diagnostics = std::mem::take(&mut heap.diagnostics);
    let mut marks = vec![0u32; heap.len() as usize];
    let mut out = Vec::new();
    for class in classes {
        let mut report = heap.class_report(path, class, top, baseline, &mut marks);
        report.diagnostics = diagnostics.clone();
        out.push(report);
    }
    Ok(out)
}

/// The shortest root path of the object at `address`.
pub fn for_address(path: &Path, address: u64) -> Result<AddressRetainers> {
    for_address_with(path, address, &command_options(path))
}

pub fn for_address_with(path: &Path, address: u64, opts: &ReadOptions) -> Result<AddressRetainers> {
    let mut heap = Heap::read(path, opts, false)?;
    heap.search();
    let mut report = AddressRetainers {
        dump: path.to_path_buf(),
        address,
        found: false,
        class: None,
        obj_type: None,
        site: None,
        has_roots: !heap.roots.is_empty(),
        path: None,
        diagnostics: std::mem::take(&mut heap.diagnostics),
    };
    let Some(id) = heap.id_of(address) else {
        return Ok(report);
    };
    report.found = true;
    report.class = Some(heap.label_of(id).to_string());
    report.obj_type = Some(heap.type_of(id).as_str());
    report.site = heap.site_of(id);
    if heap.parent[id as usize] != UNSEEN {
        let mut group = heap.path_of(id, &[]);
        group.count = 1;
        group.bytes = heap.memsize[id as usize];
        report.path = Some(group);
    }
    Ok(report)
}

/// Parses `0x7f3a…` or `7f3a…` (hex) into an address.
pub fn parse_address(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

// ---------------------------------------------------------------------------------------------
// Building the graph.

/// One chunk's objects, in line order, with edges still as addresses.
struct GraphChunk {
    addrs: Vec<u64>,
    /// [`object_stamp`] of each object (tells a reused address from the object a baseline saw);
    /// kept only when a baseline will be compared (8 bytes per object).
    stamps: Option<Vec<u64>>,
    labels: Vec<u32>,
    sites: Vec<u32>,
    lengths: Vec<u32>,
    memsize: Vec<u64>,
    /// Cumulative edge count after each object (local).
    edge_ends: Vec<u64>,
    edges: Vec<u64>,
    /// Objects whose last edge is their class.
    class_edge: Vec<u64>,
    label_ids: FastMap<LabelKey, u32>,
    label_keys: Vec<LabelKey>,
    details: Interner,
    site_ids: FastMap<(u32, u32), u32>,
    site_list: Vec<(u32, u32)>,
    files: Interner,
    classes: Vec<ClassRecord>,
    roots: Vec<(Box<[u8]>, Vec<u64>)>,
}

impl GraphChunk {
    fn new(stamps: bool) -> Self {
        GraphChunk {
            addrs: Vec::new(),
            stamps: stamps.then(Vec::new),
            labels: Vec::new(),
            sites: Vec::new(),
            lengths: Vec::new(),
            memsize: Vec::new(),
            edge_ends: Vec::new(),
            edges: Vec::new(),
            class_edge: Vec::new(),
            label_ids: fast_map(),
            label_keys: Vec::new(),
            details: Interner::new(),
            site_ids: fast_map(),
            site_list: Vec::new(),
            files: Interner::new(),
            classes: Vec::new(),
            roots: Vec::new(),
        }
    }
}

fn set_bit(bits: &mut Vec<u64>, i: usize) {
    let w = i / 64;
    if bits.len() <= w {
        bits.resize(w + 1, 0);
    }
    bits[w] |= 1 << (i % 64);
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

impl LineVisitor for GraphChunk {
    fn visit(&mut self, line: LineRef<'_>, diag: &mut Diagnostics) {
        let rec = match parse_line(line.bytes) {
            Ok(r) => r,
            Err(e) => return report_bad_line(diag, &line, e),
        };
        let lifted = line.lifted_refs.unwrap_or(&[]);
        match rec.kind() {
            RecordKind::Shape => return,
            RecordKind::Root => {
                let mut targets: Vec<u64> = refs(rec.references).collect();
                targets.extend_from_slice(lifted);
                let category = rec.root.unwrap_or(b"?");
                self.roots.push((category.into(), targets));
                return;
            }
            RecordKind::Object => {}
        }
        let Some(address) = rec.address else { return };
        let i = self.addrs.len();
        self.addrs.push(address);
        if let Some(stamps) = &mut self.stamps {
            stamps.push(object_stamp(rec.class, rec.generation));
        }
        let key = LabelKey::of(&rec, &mut self.details);
        let next_label = self.label_keys.len() as u32;
        let label = *self.label_ids.entry(key).or_insert(next_label);
        if label == next_label {
            self.label_keys.push(key);
        }
        self.labels.push(label);
        let site = match (rec.file, rec.line) {
            (Some(f), l) => {
                let k = (
                    self.files.intern(f),
                    l.map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX)),
                );
                let next = self.site_list.len() as u32;
                let id = *self.site_ids.entry(k).or_insert(next);
                if id == next {
                    self.site_list.push(k);
                }
                id
            }
            _ => NONE32,
        };
        self.sites.push(site);
        let length = match rec.obj_type() {
            ObjType::Array | ObjType::Hash | ObjType::String | ObjType::Symbol => rec
                .length
                .map_or(NONE32, |l| u32::try_from(l).unwrap_or(NONE32 - 1)),
            _ => NONE32,
        };
        self.lengths.push(length);
        self.memsize.push(rec.memsize.unwrap_or(0));
        self.edges.extend(refs(rec.references));
        self.edges.extend_from_slice(lifted);
        // The implicit edge to the class. IMEMO `class` words are not classes before 3.2.
        if rec.obj_type() != ObjType::Imemo
            && let Some(c) = rec.class
        {
            self.edges.push(c);
            set_bit(&mut self.class_edge, i);
        }
        self.edge_ends.push(self.edges.len() as u64);
        if let Some(c) = ClassRecord::of(&rec) {
            self.classes.push(c);
        }
    }
}

/// The whole dump as a graph, plus what reports need about each object.
struct Heap {
    addrs: Vec<u64>,
    /// Per object, when read for a baseline comparison; empty otherwise.
    stamps: Vec<u64>,
    labels: Vec<u32>,
    sites: Vec<u32>,
    lengths: Vec<u32>,
    memsize: Vec<u64>,
    /// CSR: edges of object i are `edges[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u64>,
    edges: Vec<u32>,
    class_edge: Vec<u64>,
    label_keys: Vec<LabelKey>,
    /// Label id → name id; names merge labels by their text.
    label_names: Vec<u32>,
    names: Vec<String>,
    /// Class and module objects: their own names, and the name id their path steps use
    /// (`Module Gem`), so that paths through different classes do not merge.
    own_names: FastMap<u32, String>,
    own_name_ids: FastMap<u32, u32>,
    site_list: Vec<(u32, u32)>,
    files: Interner,
    root_names: Vec<String>,
    /// (category index, object id) in ROOT-line order.
    roots: Vec<(u32, u32)>,
    /// Address → id.
    index: AddressIndex,
    /// BFS result: parent id, `ROOT_TAG + category`, or `UNSEEN`.
    parent: Vec<u32>,
    /// Objects reached through their parent's class edge.
    via_class: Vec<u64>,
    diagnostics: Diagnostics,
}

/// Collects the chunks as they finish, in file order.
struct Builder {
    heap: Heap,
    edge_segments: Vec<Vec<u64>>,
    label_index: FastMap<LabelKey, u32>,
    details: Interner,
    site_index: FastMap<(u32, u32), u32>,
    classes: ClassTable,
    raw_roots: Vec<(String, Vec<u64>)>,
    edge_total: u64,
}

impl Builder {
    fn add(&mut self, c: ChunkOutcome<GraphChunk>) {
        let g = c.visitor;
        let h = &mut self.heap;
        let base = h.addrs.len();
        let detail_map = g.details.remap_into(&mut self.details);
        let label_map: Vec<u32> = g
            .label_keys
            .iter()
            .map(|k| {
                let k = k.remapped(&detail_map);
                let next = h.label_keys.len() as u32;
                let id = *self.label_index.entry(k).or_insert(next);
                if id == next {
                    h.label_keys.push(k);
                }
                id
            })
            .collect();
        let file_map = g.files.remap_into(&mut h.files);
        let site_map: Vec<u32> = g
            .site_list
            .iter()
            .map(|&(f, l)| {
                let k = (file_map.get(f as usize).copied().unwrap_or(0), l);
                let next = h.site_list.len() as u32;
                let id = *self.site_index.entry(k).or_insert(next);
                if id == next {
                    h.site_list.push(k);
                }
                id
            })
            .collect();
        h.addrs.extend_from_slice(&g.addrs);
        if let Some(stamps) = &g.stamps {
            h.stamps.extend_from_slice(stamps);
        }
        h.labels
            .extend(g.labels.iter().map(|&l| label_map[l as usize]));
        h.sites.extend(
            g.sites
                .iter()
                .map(|&s| site_map.get(s as usize).copied().unwrap_or(NONE32)),
        );
        h.lengths.extend_from_slice(&g.lengths);
        h.memsize.extend_from_slice(&g.memsize);
        let edge_base = self.edge_total;
        h.offsets.extend(g.edge_ends.iter().map(|&e| edge_base + e));
        self.edge_total += g.edges.len() as u64;
        self.edge_segments.push(g.edges);
        for i in 0..g.addrs.len() {
            if bit(&g.class_edge, i) {
                set_bit(&mut h.class_edge, base + i);
            }
        }
        for c in g.classes {
            self.classes.insert(c);
        }
        for (name, targets) in g.roots {
            self.raw_roots
                .push((String::from_utf8_lossy(&name).into_owned(), targets));
        }
    }
}

impl Heap {
    /// Reads the dump into a graph; `stamps`: also each object's [`object_stamp`], to compare
    /// with a baseline.
    fn read(path: &Path, opts: &ReadOptions, stamps: bool) -> Result<Heap> {
        let opts = ReadOptions {
            keep_long_refs: true,
            ..opts.clone()
        };
        let heap = Heap {
            addrs: Vec::new(),
            stamps: Vec::new(),
            labels: Vec::new(),
            sites: Vec::new(),
            lengths: Vec::new(),
            memsize: Vec::new(),
            offsets: vec![0],
            edges: Vec::new(),
            class_edge: Vec::new(),
            label_keys: Vec::new(),
            label_names: Vec::new(),
            names: Vec::new(),
            own_names: fast_map(),
            own_name_ids: fast_map(),
            site_list: Vec::new(),
            files: Interner::new(),
            root_names: Vec::new(),
            roots: Vec::new(),
            index: AddressIndex::default(),
            parent: Vec::new(),
            via_class: Vec::new(),
            diagnostics: Diagnostics::default(),
        };
        let mut b = Builder {
            heap,
            edge_segments: Vec::new(),
            label_index: fast_map(),
            details: Interner::new(),
            site_index: fast_map(),
            classes: ClassTable::new(),
            raw_roots: Vec::new(),
            edge_total: 0,
        };
        let summary = read_lines_in_order(path, &opts, |_| GraphChunk::new(stamps), |c| b.add(c))?;
        if b.heap.addrs.is_empty() {
            return Err(nothing_read(path, &summary.diagnostics));
        }
        if b.heap.addrs.len() as u64 >= u64::from(ROOT_TAG) {
            return Err(Error::input(
                path,
                crate::diag::Position::Whole,
                "too many objects for the retainer graph (more than 4 billion)",
            ));
        }
        let mut heap = b.heap;
        heap.diagnostics = summary.diagnostics;
        heap.index_addresses();
        heap.edges = heap.resolve_edges(b.edge_segments, b.edge_total, opts.threads);
        // Names.
        let mut name_index: HashMap<String, u32> = HashMap::new();
        heap.label_names = heap
            .label_keys
            .iter()
            .map(|k| {
                let name = b.classes.label(*k, &b.details);
                let next = heap.names.len() as u32;
                *name_index.entry(name.clone()).or_insert_with(|| {
                    heap.names.push(name);
                    next
                })
            })
            .collect();
        for id in 0..heap.len() {
            if !matches!(heap.type_of(id), ObjType::Class | ObjType::Module) {
                continue;
            }
            if let Some(own) = b.classes.own_name(heap.addrs[id as usize]) {
                let step_name = format!("{} {own}", heap.label_of(id));
                let next = heap.names.len() as u32;
                let name_id = *name_index.entry(step_name.clone()).or_insert_with(|| {
                    heap.names.push(step_name);
                    next
                });
                heap.own_name_ids.insert(id, name_id);
                heap.own_names.insert(id, own);
            }
        }
        // Roots.
        let mut categories: HashMap<String, u32> = HashMap::new();
        for (name, targets) in b.raw_roots {
            let next = heap.root_names.len() as u32;
            let cat = *categories.entry(name.clone()).or_insert(next);
            if cat == next {
                if next >= MAX_ROOT_CATEGORIES {
                    continue;
                }
                heap.root_names.push(name);
            }
            for t in targets {
                if let Some(id) = heap.id_of(t) {
                    heap.roots.push((cat, id));
                }
            }
        }
        Ok(heap)
    }

    /// The grouped root paths of the instances of `class` (the new ones, with a baseline).
    /// `marks` is scratch space of one `u32` per object, shared by the calls on one heap.
    fn class_report(
        &self,
        path: &Path,
        class: &str,
        top: usize,
        baseline: Option<&Baseline>,
        marks: &mut [u32],
    ) -> ClassRetainers {
        let targets = self.name_ids(class);
        let mut report = ClassRetainers {
            dump: path.to_path_buf(),
            class: class.to_string(),
            instances: 0,
            new_instances: None,
            reachable: 0,
            unreachable: 0,
            has_roots: !self.roots.is_empty(),
            groups: Vec::new(),
            groups_total: 0,
            similar: Vec::new(),
            diagnostics: Diagnostics::default(),
        };
        if targets.is_empty() {
            report.similar = self.similar_names(class);
            return report;
        }
        let mut new_instances = 0u64;
        let mut grouping = Grouping::default();
        // (group id → count, bytes, first instance)
        let mut groups: Vec<(u64, u64, u32)> = Vec::new();
        let mut group_of_target: Vec<(u32, u32)> = Vec::new();
        for id in 0..self.len() {
            if !targets.contains(&self.name_of(id)) {
                continue;
            }
            report.instances += 1;
            if let Some(b) = baseline {
                let key = pack_key(self.addrs[id as usize], self.type_of(id));
                if b.contains(key, self.stamp(id)) {
                    continue;
                }
                new_instances += 1;
            }
            if self.parent[id as usize] == UNSEEN {
                report.unreachable += 1;
                continue;
            }
            report.reachable += 1;
            let g = self.group_of(id, &mut grouping);
            if g as usize == groups.len() {
                groups.push((0, 0, id));
            }
            let e = &mut groups[g as usize];
            e.0 += 1;
            e.1 = e.1.saturating_add(self.memsize[id as usize]);
            group_of_target.push((g, id));
        }
        if baseline.is_some() {
            report.new_instances = Some(new_instances);
        }
        let mut order: Vec<u32> = (0..groups.len() as u32).collect();
        order.sort_by(|&x, &y| {
            let (a, b) = (groups[x as usize], groups[y as usize]);
            (b.0, b.1).cmp(&(a.0, a.1)).then(a.2.cmp(&b.2))
        });
        order.truncate(top);
        report.groups_total = groups.len();
        let mut members: HashMap<u32, Vec<u32>> = order.iter().map(|&g| (g, Vec::new())).collect();
        for (g, id) in group_of_target {
            if let Some(m) = members.get_mut(&g) {
                m.push(id);
            }
        }
        // Marks are told apart per group; a fresh run of values per call keeps them apart
        // from an earlier class's.
        let base = marks.iter().copied().max().unwrap_or(0);
        for (rank, &g) in order.iter().enumerate() {
            let (count, bytes, example) = groups[g as usize];
            let instances = members.get(&g).map_or(&[][..], Vec::as_slice);
            let distinct = self.distinct_by_depth(instances, marks, base + rank as u32 + 1);
            let mut group = self.path_of(example, &distinct);
            group.count = count;
            group.bytes = bytes;
            group.holder_growth = baseline.and_then(|b| self.growth_since(b, example));
            report.groups.push(group);
        }
        report
    }

    fn len(&self) -> u32 {
        self.addrs.len() as u32
    }

    /// The object's stamp (0 when the graph was read without them).
    fn stamp(&self, id: u32) -> u64 {
        self.stamps.get(id as usize).copied().unwrap_or(0)
    }

    /// Elements the holder of `target` gained since the baseline, if it is an Array or Hash
    /// the baseline has.
    fn growth_since(&self, baseline: &Baseline, target: u32) -> Option<i64> {
        let holder = self.parent[target as usize];
        if holder >= ROOT_TAG {
            return None;
        }
        let now = match self.lengths[holder as usize] {
            NONE32 => return None,
            l => i64::from(l),
        };
        let key = pack_key(self.addrs[holder as usize], self.type_of(holder));
        if !matches!(self.type_of(holder), ObjType::Array | ObjType::Hash) {
            return None;
        }
        let then = baseline.length_of(key, self.stamp(holder))?;
        Some(now - i64::try_from(then).unwrap_or(i64::MAX))
    }

    fn index_addresses(&mut self) {
        self.index = AddressIndex::new(&self.addrs);
    }

    fn id_of(&self, address: u64) -> Option<u32> {
        self.index.id_of(&self.addrs, address)
    }

    /// Turns edge addresses into ids (`NO_NODE` when the target is not in the dump), segments
    /// in parallel, freeing each address segment as it goes.
    fn resolve_edges(&self, segments: Vec<Vec<u64>>, total: u64, threads: usize) -> Vec<u32> {
        let count = segments.len();
        let slots: Vec<Mutex<Option<Vec<u64>>>> =
            segments.into_iter().map(|s| Mutex::new(Some(s))).collect();
        let done: Vec<Mutex<Option<Vec<u32>>>> = (0..count).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let work = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let Some(seg) = slots[i].lock().ok().and_then(|mut s| s.take()) else {
                    continue;
                };
                let ids: Vec<u32> = seg
                    .iter()
                    .map(|&a| self.id_of(a).unwrap_or(NO_NODE))
                    .collect();
                drop(seg);
                if let Ok(mut d) = done[i].lock() {
                    *d = Some(ids);
                }
            }
        };
        run_workers(threads.clamp(1, count.max(1)), work);
        let mut edges = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for d in done {
            if let Some(ids) = d.into_inner().ok().flatten() {
                edges.extend_from_slice(&ids);
            }
        }
        edges
    }

    /// Breadth-first search from every root, in ROOT-line order.
    fn search(&mut self) {
        let n = self.addrs.len();
        self.parent = vec![UNSEEN; n];
        self.via_class = vec![0; n.div_ceil(64)];
        let mut queue: Vec<u32> = Vec::with_capacity(n);
        for &(cat, id) in &self.roots {
            if self.parent[id as usize] == UNSEEN {
                self.parent[id as usize] = ROOT_TAG + cat;
                queue.push(id);
            }
        }
        let mut head = 0;
        while head < queue.len() {
            let u = queue[head] as usize;
            head += 1;
            let (start, end) = (self.offsets[u] as usize, self.offsets[u + 1] as usize);
            let class_slot = bit(&self.class_edge, u).then(|| end - 1);
            for e in start..end {
                let v = self.edges[e];
                if v == NO_NODE || self.parent[v as usize] != UNSEEN {
                    continue;
                }
                self.parent[v as usize] = u as u32;
                if class_slot == Some(e) {
                    set_bit(&mut self.via_class, v as usize);
                }
                queue.push(v);
            }
        }
    }

    fn name_of(&self, id: u32) -> u32 {
        self.label_names[self.labels[id as usize] as usize]
    }

    fn type_of(&self, id: u32) -> ObjType {
        self.label_keys[self.labels[id as usize] as usize].obj_type
    }

    fn label_of(&self, id: u32) -> &str {
        &self.names[self.name_of(id) as usize]
    }

    fn name_ids(&self, class: &str) -> Vec<u32> {
        (0..self.names.len() as u32)
            .filter(|&i| self.names[i as usize] == class)
            .collect()
    }

    fn similar_names(&self, class: &str) -> Vec<String> {
        let want = class.to_lowercase();
        let mut v: Vec<String> = self
            .label_names
            .iter()
            .map(|&n| &self.names[n as usize])
            .filter(|n| {
                let n = n.to_lowercase();
                n.contains(&want) || want.contains(&n)
            })
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v.truncate(10);
        v
    }

    fn site_of(&self, id: u32) -> Option<Site> {
        let s = self.sites[id as usize];
        let &(file, line) = self.site_list.get(s as usize)?;
        Some(Site {
            file: String::from_utf8_lossy(self.files.get(file)).into_owned(),
            line,
        })
    }

    fn step_key(&self, id: u32) -> StepKey {
        StepKey {
            name: self
                .own_name_ids
                .get(&id)
                .copied()
                .unwrap_or_else(|| self.name_of(id)),
            site: self.sites[id as usize],
            via_class: bit(&self.via_class, id as usize),
        }
    }

    /// The group of a reachable target: its holder's signature and how it is held.
    fn group_of(&self, target: u32, g: &mut Grouping) -> u32 {
        let p = self.parent[target as usize];
        let sig = if p >= ROOT_TAG {
            g.root_sig(p - ROOT_TAG)
        } else {
            self.signature(p, g)
        };
        let key = (sig, bit(&self.via_class, target as usize));
        let next = g.groups.len() as u32;
        *g.groups.entry(key).or_insert(next)
    }

    /// The signature of the path root → … → `node` (memoized per node).
    fn signature(&self, node: u32, g: &mut Grouping) -> u32 {
        if g.memo.is_empty() {
            g.memo = vec![UNSEEN; self.addrs.len()];
        }
        let mut stack = Vec::new();
        let mut cur = node;
        loop {
            if g.memo[cur as usize] != UNSEEN {
                break;
            }
            stack.push(cur);
            let p = self.parent[cur as usize];
            if p >= ROOT_TAG {
                break;
            }
            cur = p;
        }
        while let Some(n) = stack.pop() {
            let p = self.parent[n as usize];
            let above = if p >= ROOT_TAG {
                g.root_sig(p - ROOT_TAG)
            } else {
                g.memo[p as usize]
            };
            let sig = g.extend(above, self.step_key(n));
            g.memo[n as usize] = sig;
        }
        g.memo[node as usize]
    }

    /// For the instances of one group: how many distinct objects sit at each depth of their
    /// paths (depth 0 = the immediate holder). `mark` must hold no `group_mark` values.
    fn distinct_by_depth(&self, instances: &[u32], mark: &mut [u32], group_mark: u32) -> Vec<u64> {
        let mut by_depth: Vec<u64> = Vec::new();
        for &t in instances {
            let mut cur = self.parent[t as usize];
            let mut depth = 0;
            while cur < ROOT_TAG && mark[cur as usize] != group_mark {
                mark[cur as usize] = group_mark;
                if by_depth.len() <= depth {
                    by_depth.push(0);
                }
                by_depth[depth] += 1;
                depth += 1;
                cur = self.parent[cur as usize];
            }
        }
        by_depth
    }

    /// The path from `target` up to its root, collapsed into steps.
    fn path_of(&self, target: u32, distinct_by_depth: &[u64]) -> RetainerGroup {
        let mut steps: Vec<RetainerStep> = Vec::new();
        let mut last_key: Option<StepKey> = None;
        let mut elided = 0u64;
        let mut edge = if bit(&self.via_class, target as usize) {
            EdgeKind::Class
        } else {
            EdgeKind::Reference
        };
        let mut cur = self.parent[target as usize];
        let mut depth = 0usize;
        while cur < ROOT_TAG {
            let key = self.step_key(cur);
            let distinct = distinct_by_depth.get(depth).copied().unwrap_or(1);
            // A run continues when the container is alike and holds the next one the same way.
            let same_run = last_key == Some(key)
                && steps.last().is_some_and(|s| s.edge == edge && elided == 0);
            if same_run && let Some(s) = steps.last_mut() {
                s.repeat += 1;
                s.distinct += distinct;
            } else if steps.len() < MAX_STEPS && elided == 0 {
                steps.push(RetainerStep {
                    class: self.label_of(cur).to_string(),
                    obj_type: self.type_of(cur).as_str(),
                    name: self.own_names.get(&cur).cloned(),
                    address: self.addrs[cur as usize],
                    distinct,
                    site: self.site_of(cur),
                    length: match self.lengths[cur as usize] {
                        NONE32 => None,
                        l => Some(u64::from(l)),
                    },
                    edge,
                    repeat: 1,
                });
            } else {
                elided += 1;
            }
            last_key = Some(key);
            edge = if key.via_class {
                EdgeKind::Class
            } else {
                EdgeKind::Reference
            };
            depth += 1;
            cur = self.parent[cur as usize];
        }
        let root = cur
            .checked_sub(ROOT_TAG)
            .and_then(|c| self.root_names.get(c as usize))
            .cloned()
            .unwrap_or_else(|| "?".to_string());
        RetainerGroup {
            count: 0,
            bytes: 0,
            example: self.addrs[target as usize],
            steps,
            elided_steps: elided,
            root,
            holder_growth: None,
        }
    }
}

/// Finds the id of an address through a directory of 16 KiB pages: one small hash probe, then a
/// binary search within one page. Ruby heap pages are aligned to 16 KiB (2.x–3.1) or 64 KiB
/// (3.2+; four directory pages each) and each lists its
/// slots in ascending order, but dumps list the pages themselves in no useful order; so when
/// every page's objects are contiguous and ascending in file order (the usual case), the
/// directory points straight into the file-order addresses. Otherwise a sorted copy is made.
#[derive(Default)]
struct AddressIndex {
    /// Addresses in ascending order, only when file order does not suit the directory.
    sorted: Option<Vec<u64>>,
    /// Id of each entry of `sorted`.
    ids: Vec<u32>,
    /// `address >> PAGE_SHIFT` → range of positions in the searched addresses.
    pages: FastMap<u64, (u32, u32)>,
}

const PAGE_SHIFT: u32 = 14;

impl AddressIndex {
    fn new(addrs: &[u64]) -> AddressIndex {
        if let Some(pages) = Self::directory(addrs, true) {
            return AddressIndex {
                sorted: None,
                ids: Vec::new(),
                pages,
            };
        }
        let mut pairs: Vec<(u64, u32)> = addrs
            .iter()
            .enumerate()
            .map(|(i, &a)| (a, i as u32))
            .collect();
        // Ascending runs (one per heap page): the stable sort merges runs quickly.
        pairs.sort();
        let ids = pairs.iter().map(|p| p.1).collect();
        let sorted: Vec<u64> = pairs.into_iter().map(|p| p.0).collect();
        // Sorted keys always make a directory; repeated addresses (a damaged dump) are allowed.
        let pages = Self::directory(&sorted, false).unwrap_or_default();
        AddressIndex {
            sorted: Some(sorted),
            ids,
            pages,
        }
    }

    /// Page → range, if every page's addresses form one ascending run in `keys` (`strict`:
    /// no address twice).
    fn directory(keys: &[u64], strict: bool) -> Option<FastMap<u64, (u32, u32)>> {
        let mut pages = fast_map();
        let mut start = 0usize;
        for i in 1..=keys.len() {
            if i < keys.len() && keys[i] >> PAGE_SHIFT == keys[start] >> PAGE_SHIFT {
                if keys[i] < keys[i - 1] || (strict && keys[i] == keys[i - 1]) {
                    return None;
                }
                continue;
            }
            if start < keys.len()
                && pages
                    .insert(keys[start] >> PAGE_SHIFT, (start as u32, i as u32))
                    .is_some()
            {
                return None;
            }
            start = i;
        }
        Some(pages)
    }

    fn id_of(&self, addrs: &[u64], address: u64) -> Option<u32> {
        let keys = self.sorted.as_deref().unwrap_or(addrs);
        let &(lo, hi) = self.pages.get(&(address >> PAGE_SHIFT))?;
        let pos = lo as usize
            + keys[lo as usize..hi as usize]
                .binary_search(&address)
                .ok()?;
        Some(match &self.sorted {
            Some(_) => self.ids[pos],
            None => pos as u32,
        })
    }
}

/// What a container contributes to a path signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StepKey {
    name: u32,
    site: u32,
    /// Whether this container is held by its own parent through the class edge.
    via_class: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SigStep {
    Root(u32),
    Step(StepKey),
}

/// A node of the signature trie: the signature above, this step, and how many times in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SigNode {
    above: u32,
    step: SigStep,
    repeat: u64,
}

/// Hash-consed path signatures and the groups of one query.
#[derive(Default)]
struct Grouping {
    nodes: Vec<SigNode>,
    index: HashMap<SigNode, u32>,
    roots: HashMap<u32, u32>,
    groups: HashMap<(u32, bool), u32>,
    memo: Vec<u32>,
}

impl Grouping {
    fn intern(&mut self, node: SigNode) -> u32 {
        let next = self.nodes.len() as u32;
        let id = *self.index.entry(node).or_insert(next);
        if id == next {
            self.nodes.push(node);
        }
        id
    }

    fn root_sig(&mut self, category: u32) -> u32 {
        if let Some(&s) = self.roots.get(&category) {
            return s;
        }
        let s = self.intern(SigNode {
            above: UNSEEN,
            step: SigStep::Root(category),
            repeat: 1,
        });
        self.roots.insert(category, s);
        s
    }

    /// The signature `above` followed by one more container `step` (runs collapse).
    fn extend(&mut self, above: u32, step: StepKey) -> u32 {
        let top = self.nodes[above as usize];
        if top.step == SigStep::Step(step) {
            self.intern(SigNode {
                repeat: top.repeat + 1,
                ..top
            })
        } else {
            self.intern(SigNode {
                above,
                step: SigStep::Step(step),
                repeat: 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump's `references` list of these addresses.
    fn refs(addresses: &[u64]) -> String {
        addresses
            .iter()
            .map(|a| format!("\"0x{a:x}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn write(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("heap.json");
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        (dir, p)
    }

    fn small() -> ReadOptions {
        ReadOptions {
            threads: 2,
            chunk_bytes: 100,
            buffer_bytes: 64,
            keep_long_refs: true,
            progress_label: None,
        }
    }

    /// A global Array (0x100, allocated at leak.rb:28) holding 5 Messages; a Hash holding two
    /// Messages inside an Array held by the machine context; one Message held by nothing.
    fn dump() -> Vec<String> {
        let msg = |a: u64| {
            format!(
                r#"{{"address":"0x{a:x}", "type":"OBJECT", "class":"0x10", "ivars":3, "memsize":40}}"#
            )
        };
        let mut v = vec![
            r#"{"type":"ROOT", "root":"vm", "references":["0x10", "0x20"]}"#.to_string(),
            r#"{"type":"ROOT", "root":"global_tbl", "references":["0x100"]}"#.to_string(),
            r#"{"type":"ROOT", "root":"machine_context", "references":["0x300"]}"#.to_string(),
            r#"{"address":"0x10", "type":"CLASS", "class":"0x11", "superclass":"0x20", "name":"ZMQ::Message", "memsize":500}"#.to_string(),
            r#"{"address":"0x20", "type":"CLASS", "class":"0x21", "name":"Array", "memsize":500}"#.to_string(),
            r#"{"address":"0x30", "type":"CLASS", "class":"0x21", "name":"Hash", "memsize":500}"#.to_string(),
            format!(
                r#"{{"address":"0x100", "type":"ARRAY", "class":"0x20", "length":5, "references":[{}], "file":"leak.rb", "line":28, "memsize":80}}"#,
                (0..5).map(|i| format!("\"0x{:x}\"", 0x1000 + i * 40)).collect::<Vec<_>>().join(", ")
            ),
            r#"{"address":"0x300", "type":"ARRAY", "class":"0x20", "length":1, "references":["0x310"], "memsize":40}"#.to_string(),
            r#"{"address":"0x310", "type":"HASH", "class":"0x30", "size":2, "references":["0x2000", "0x2028"], "memsize":160}"#.to_string(),
        ];
        for i in 0..5 {
            v.push(msg(0x1000 + i * 40));
        }
        v.push(msg(0x2000));
        v.push(msg(0x2028));
        v.push(msg(0x3000));
        v
    }

    #[test]
    fn groups_instances_by_path() {
        let (_d, p) = write(&dump());
        let r = for_class_with(&p, "ZMQ::Message", 10, &small()).unwrap();
        assert_eq!((r.instances, r.reachable, r.unreachable), (8, 7, 1));
        assert_eq!(r.groups.len(), 2);
        let g = &r.groups[0];
        assert_eq!((g.count, g.bytes, g.root.as_str()), (5, 200, "global_tbl"));
        assert_eq!(g.steps.len(), 1);
        let s = &g.steps[0];
        assert_eq!(
            (s.class.as_str(), s.address, s.distinct),
            ("Array", 0x100, 1)
        );
        assert_eq!(s.site.as_ref().unwrap().to_string(), "leak.rb:28");
        assert_eq!(s.length, Some(5));
        assert_eq!(s.edge, EdgeKind::Reference);
        let g = &r.groups[1];
        assert_eq!((g.count, g.root.as_str()), (2, "machine_context"));
        let classes: Vec<&str> = g.steps.iter().map(|s| s.class.as_str()).collect();
        assert_eq!(classes, ["Hash", "Array"]);
        assert_eq!(g.steps[0].length, Some(2));
    }

    #[test]
    fn class_edges_make_classes_reachable_from_instances() {
        let (_d, p) = write(&dump());
        // The Hash class 0x30 is in no `references`: only its instance holds it.
        let r = for_address_with(&p, 0x30, &small()).unwrap();
        let path = r.path.unwrap();
        assert_eq!(path.steps[0].class, "Hash");
        assert_eq!(path.steps[0].address, 0x310);
        assert_eq!(path.steps[0].edge, EdgeKind::Class);
        assert_eq!(path.root, "machine_context");
        let r = for_address_with(&p, 0x3000, &small()).unwrap();
        assert!(r.found && r.path.is_none());
        assert_eq!(r.class.as_deref(), Some("ZMQ::Message"));
        assert!(!for_address_with(&p, 0x4242, &small()).unwrap().found);
    }

    #[test]
    fn runs_of_alike_containers_collapse() {
        // A linked list: ROOT → n0 → n1 → … → n9 → target.
        let mut v = vec![
            r#"{"type":"ROOT", "root":"vm", "references":["0x100"]}"#.to_string(),
            r#"{"address":"0x10", "type":"CLASS", "class":"0x11", "name":"Node"}"#.to_string(),
            r#"{"address":"0x20", "type":"CLASS", "class":"0x11", "name":"Leaf"}"#.to_string(),
        ];
        for i in 0..10u64 {
            v.push(format!(
                r#"{{"address":"0x{:x}", "type":"OBJECT", "class":"0x10", "references":["0x{:x}"]}}"#,
                0x100 + i * 8,
                0x100 + (i + 1) * 8
            ));
        }
        v.push(r#"{"address":"0x150", "type":"OBJECT", "class":"0x20"}"#.to_string());
        let (_d, p) = write(&v);
        let r = for_class_with(&p, "Leaf", 10, &small()).unwrap();
        let g = &r.groups[0];
        assert_eq!(g.steps.len(), 1);
        assert_eq!((g.steps[0].class.as_str(), g.steps[0].repeat), ("Node", 10));
        assert_eq!(g.steps[0].address, 0x148);
        assert_eq!(g.root, "vm");
        let r = for_class_with(&p, "Nope", 10, &small()).unwrap();
        assert_eq!(r.instances, 0);
        let r = for_class_with(&p, "node", 10, &small()).unwrap();
        assert_eq!(r.similar, ["Node"]);
    }

    /// The runtime's hidden Array holds many Strings from the start; later, a Hash held by a
    /// record holds a few new ones. One new String sits at the address of an old one (a freed
    /// slot reused): its later allocation generation tells it apart.
    fn strings_old_and_new(with_new: bool) -> Vec<String> {
        let string = |a: u64, generation: u64| {
            format!(
                r#"{{"address":"0x{a:x}", "type":"STRING", "class":"0x40", "bytesize":3, "value":"abc", "file":"x.rb", "line":1, "generation":{generation}, "memsize":40}}"#
            )
        };
        let old: Vec<u64> = (0..6).map(|i| 0x1000 + i * 40).collect();
        // 0x1000 held the old String of generation 1 that was freed; generation 9 reuses it.
        let new: Vec<u64> = vec![0x1000, 0x2000, 0x2028, 0x2050];
        let held_by_hidden: Vec<u64> = if with_new {
            old[1..].to_vec()
        } else {
            old.clone()
        };
        let mut v = vec![
            r#"{"type":"ROOT", "root":"vm", "references":["0x100", "0x300"]}"#.to_string(),
            r#"{"address":"0x40", "type":"CLASS", "class":"0x41", "name":"String"}"#.to_string(),
            r#"{"address":"0x50", "type":"CLASS", "class":"0x41", "name":"AuditEntry"}"#
                .to_string(),
            r#"{"address":"0x60", "type":"CLASS", "class":"0x41", "name":"Hash"}"#.to_string(),
            r#"{"address":"0x70", "type":"CLASS", "class":"0x41", "name":"Array"}"#.to_string(),
            format!(
                r#"{{"address":"0x100", "type":"ARRAY", "length":{}, "references":[{}]}}"#,
                held_by_hidden.len(),
                refs(&held_by_hidden)
            ),
        ];
        for (i, &a) in old.iter().enumerate() {
            if !(with_new && i == 0) {
                v.push(string(a, 1));
            }
        }
        if with_new {
            v.push(r#"{"address":"0x300", "type":"ARRAY", "class":"0x70", "length":1, "references":["0x310"], "file":"app.rb", "line":5}"#.to_string());
            v.push(r#"{"address":"0x310", "type":"OBJECT", "class":"0x50", "references":["0x320"], "file":"app.rb", "line":9}"#.to_string());
            v.push(format!(
                r#"{{"address":"0x320", "type":"HASH", "class":"0x60", "size":4, "references":[{}], "file":"app.rb", "line":9}}"#,
                refs(&new)
            ));
            for &a in &new {
                v.push(string(a, 9));
            }
        }
        v
    }

    #[test]
    fn with_a_baseline_only_the_new_instances_are_grouped() {
        let (_d1, first) = write(&strings_old_and_new(false));
        let (_d2, last) = write(&strings_old_and_new(true));
        let classes = ["String".to_string()];
        // Over every instance, the runtime's hidden Array leads.
        let all = for_classes_with(&last, &classes, 5, &small(), None).unwrap();
        assert_eq!(all[0].instances, 9);
        assert_eq!(all[0].new_instances, None);
        assert_eq!(all[0].groups[0].steps[0].class, "Array (hidden)");
        // Over the new ones, the Hash the record holds is the only group, and the String at a
        // reused address counts as new.
        let baseline = Baseline::read(&first, &small()).unwrap();
        assert_eq!(baseline.len(), 11);
        let new = for_classes_with(&last, &classes, 5, &small(), Some(&baseline)).unwrap();
        let r = &new[0];
        assert_eq!((r.instances, r.new_instances, r.reachable), (9, Some(4), 4));
        assert_eq!(r.groups.len(), 1);
        let classes: Vec<&str> = r.groups[0].steps.iter().map(|s| s.class.as_str()).collect();
        assert_eq!(classes, ["Hash", "AuditEntry", "Array"]);
        assert_eq!(r.groups[0].count, 4);
    }

    #[test]
    fn a_holder_in_the_baseline_tells_how_much_it_grew() {
        // A steady Array of two Records whose contents are replaced, and a growing one.
        let dump = |steady: [u64; 2], piled: &[u64]| {
            let mut v = vec![
                r#"{"type":"ROOT", "root":"vm", "references":["0x100", "0x200"]}"#.to_string(),
                r#"{"address":"0x50", "type":"CLASS", "class":"0x41", "name":"Record"}"#
                    .to_string(),
                format!(
                    r#"{{"address":"0x100", "type":"ARRAY", "class":"0x70", "length":2, "references":[{}], "file":"s.rb", "line":1, "generation":1}}"#,
                    refs(&steady)
                ),
                format!(
                    r#"{{"address":"0x200", "type":"ARRAY", "class":"0x70", "length":{}, "references":[{}], "file":"s.rb", "line":2, "generation":1}}"#,
                    piled.len(),
                    refs(piled)
                ),
            ];
            for a in steady.iter().chain(piled) {
                v.push(format!(
                    r#"{{"address":"0x{a:x}", "type":"OBJECT", "class":"0x50", "generation":{}}}"#,
                    a >> 12
                ));
            }
            v
        };
        let (_d1, first) = write(&dump([0x1000, 0x1028], &[0x2000]));
        let (_d2, last) = write(&dump([0x3000, 0x3028], &[0x2000, 0x4000]));
        let baseline = Baseline::read(&first, &small()).unwrap();
        let r = for_classes_with(&last, &["Record".into()], 5, &small(), Some(&baseline)).unwrap();
        let growth: Vec<(u64, u64, Option<i64>)> = r[0]
            .groups
            .iter()
            .map(|g| (g.steps[0].address, g.count, g.holder_growth))
            .collect();
        assert_eq!(growth, [(0x100, 2, Some(0)), (0x200, 1, Some(1))]);
    }

    #[test]
    fn address_index_with_and_without_sorting() {
        // Pages in descending order, slots ascending within each page: no copy needed.
        let paged: Vec<u64> = [0x8000u64, 0x4000]
            .iter()
            .flat_map(|&page| (0..5).map(move |i| page + i * 40))
            .collect();
        let idx = AddressIndex::new(&paged);
        assert!(idx.sorted.is_none());
        assert_eq!(idx.id_of(&paged, 0x4000 + 80), Some(7));
        assert_eq!(idx.id_of(&paged, 0x8000), Some(0));
        assert_eq!(idx.id_of(&paged, 0x4000 + 81), None);
        assert_eq!(idx.id_of(&paged, 0x9_0000), None);
        // A page split in two places: sorted copy.
        let split = vec![0x1_0000, 0x2_0000, 0x1_0028];
        let idx = AddressIndex::new(&split);
        assert!(idx.sorted.is_some());
        assert_eq!(idx.id_of(&split, 0x1_0028), Some(2));
        assert_eq!(idx.id_of(&split, 0x2_0000), Some(1));
        // An address twice (a damaged dump) still leaves the others findable.
        let dup = vec![0x4000, 0x4028, 0x4000];
        let idx = AddressIndex::new(&dup);
        assert_eq!(idx.id_of(&dup, 0x4028), Some(1));
        assert!(idx.id_of(&dup, 0x4000).is_some());
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_address("0x7f3a"), Some(0x7f3a));
        assert_eq!(parse_address("7F3A"), Some(0x7f3a));
        assert_eq!(parse_address("0x"), None);
        assert_eq!(parse_address("zz"), None);
    }
}
