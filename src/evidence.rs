//! The evidence model: everything known about one investigation, from a bundle or from loose
//! files, in time order. The correlator reads only this.
//!
//! Stage: between parsers and the correlator. Loading (bundle → Evidence, files → Evidence)
//! lives here too, so `analyze BUNDLE` and `run` produce the same report from the same bytes.

use crate::bundle::{FootprintSample, Manifest, Sidecar};
use crate::heap::HeapSummary;
use crate::native::NativeReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A native report placed in time.
#[derive(Debug, Clone)]
pub struct NativeSnapshot {
    /// Seconds since the target started, when known (bundles).
    pub t: Option<f64>,
    /// The bundle snapshot it belongs to (1-based), when known.
    pub snapshot: Option<u32>,
    pub report: NativeReport,
}

/// A heap summary placed in time.
#[derive(Debug, Clone)]
pub struct HeapSnapshot {
    pub t: Option<f64>,
    pub snapshot: Option<u32>,
    pub summary: HeapSummary,
}

/// A line of Ruby source, as the dump or the agent names it (`leak.rb`, `/app/lib/x.rb`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceLine {
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for SourceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Instances of one class reached from a GC root through the same container object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetainerGroup {
    /// Instances of the class held through this container.
    pub count: u64,
    pub container_class: String,
    pub container_address: Option<u64>,
    /// Where the container itself was allocated (dumps made with allocation tracing).
    pub container_site: Option<SourceLine>,
    /// Elements of the container (Array length, Hash size), when the dump tells it.
    pub container_length: Option<u64>,
    /// The root the path starts from (`machine_context`, `vm`, `global_tbl`, …).
    pub root: String,
    /// The path from the root down to the container, one label per object.
    pub path: Vec<String>,
}

/// Why the instances of a class are alive, in one heap snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassRetainers {
    pub class: String,
    /// The heap snapshot the paths were computed on (1-based position in [`Evidence::heap`]).
    pub snapshot: usize,
    pub instances: u64,
    /// Instances with a path from a root; the rest is garbage the dump caught before a GC
    /// (or held by references the dump does not record).
    pub reachable: u64,
    /// Largest group first.
    pub groups: Vec<RetainerGroup>,
}

/// The exported functions of a native library found on this machine (bare-file analysis:
/// the release function of a family is looked up here when no agent sidecar names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LibraryExports {
    /// File name without directories (`libzmq.so.5`).
    pub library: String,
    pub path: PathBuf,
    pub symbols: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `leakhunt run` or `leakhunt analyze BUNDLE`.
    Bundle(PathBuf),
    /// `leakhunt analyze FILE…`: no agent sidecars, names are matched instead.
    Files(Vec<PathBuf>),
}

#[derive(Debug, Clone)]
pub struct Evidence {
    pub origin: Origin,
    /// Oldest first.
    pub heap: Vec<HeapSnapshot>,
    /// Index in `heap` of the first snapshot taken once the program had stopped loading code
    /// (bundles: its `$LOADED_FEATURES` was already the final one); class growth is judged from
    /// there, since objects made by `require` are not a leak. 0 when that cannot be told.
    pub settled: usize,
    /// Oldest first.
    pub native: Vec<NativeSnapshot>,
    /// The agent's sidecars, oldest first (bundles only).
    pub sidecars: Vec<Sidecar>,
    pub footprint: Vec<FootprintSample>,
    pub manifest: Option<Manifest>,
    /// Retainer paths of the classes that grow, on the newest heap snapshot that allows it.
    pub retainers: Vec<ClassRetainers>,
    /// Ruby source files named by container allocation sites, keyed by the name as the dump
    /// gives it (read so the correlator can tell where a container is filled).
    pub sources: BTreeMap<String, Vec<u8>>,
    /// Exported symbols of libraries named by native sites (bare files only).
    pub library_exports: Vec<LibraryExports>,
    /// Problems met while loading, one line each (soft errors of every input included).
    pub warnings: Vec<String>,
}

impl Evidence {
    pub fn empty(origin: Origin) -> Evidence {
        Evidence {
            origin,
            heap: Vec::new(),
            settled: 0,
            native: Vec::new(),
            sidecars: Vec::new(),
            footprint: Vec::new(),
            manifest: None,
            retainers: Vec::new(),
            sources: BTreeMap::new(),
            library_exports: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The heap snapshots class growth is judged on: from [`Evidence::settled`] on.
    pub fn judged_heap(&self) -> &[HeapSnapshot] {
        &self.heap[self.settled.min(self.heap.len())..]
    }

    /// The loaded-feature counts of the first heap snapshot and of the settled one, when the
    /// program was still loading code at the first (for the report's note).
    pub fn loading_at_start(&self) -> Option<(usize, usize)> {
        if self.settled == 0 {
            return None;
        }
        let features =
            |h: &HeapSnapshot| sidecar_of(&self.sidecars, h).map(|s| s.loaded_features.len());
        Some((
            features(self.heap.first()?)?,
            features(self.heap.get(self.settled)?)?,
        ))
    }

    /// The newest sidecar: the most complete FFI inventory and lifecycle counts.
    pub fn latest_sidecar(&self) -> Option<&Sidecar> {
        self.sidecars.last()
    }
}

// ---------------------------------------------------------------------------------------------
// Loading: bundle → Evidence, files → Evidence.

use crate::bundle::{NativeRef, parse_footprint};
use crate::detect::Kind;
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use crate::native::symbolize::{ModuleMap, Symbolizer};
use std::path::Path;

/// Largest Ruby source file read for the "where is it filled" hint.
const MAX_SOURCE_BYTES: u64 = 4 << 20;
/// Growing classes whose retainer paths are computed (each is a pass over the newest dump).
const MAX_RETAINER_CLASSES: usize = 4;

/// `analyze`'s inputs: one bundle directory, or any mix of dumps and native reports.
pub fn load_inputs(paths: &[PathBuf]) -> Result<Evidence> {
    match paths {
        [] => Err(Error::Usage(
            "nothing to analyze: give a bundle or files".into(),
        )),
        [one] if one.is_dir() => {
            crate::detect::detect_path(one)?;
            load_bundle(one)
        }
        _ => {
            if let Some(dir) = paths.iter().find(|p| p.is_dir()) {
                return Err(Error::Usage(format!(
                    "{} is a directory: analyze a bundle on its own, or give files only",
                    dir.display()
                )));
            }
            load_files(paths)
        }
    }
}

fn diagnostics_into(warnings: &mut Vec<String>, diag: &Diagnostics) {
    warnings.extend(diag.lines());
}

/// Reads a bundle written by `leakhunt run`, following its manifest.
pub fn load_bundle(dir: &Path) -> Result<Evidence> {
    let manifest = crate::bundle::Manifest::load(dir)?;
    let mut ev = Evidence::empty(Origin::Bundle(dir.to_path_buf()));
    let mut referenced_logs: Vec<&str> = Vec::new();
    // The module map taken with each native snapshot, to place and name its frames.
    let mut maps: Vec<Vec<ModuleMap>> = Vec::new();
    let main = manifest.main_process().cloned().unwrap_or_default();
    let mut snapshots: Vec<_> = manifest.snapshots_of(main.pid).cloned().collect();
    snapshots.sort_by_key(|s| s.index);
    for snap in &snapshots {
        ev.warnings
            .extend(snap.warning(manifest.processes.len() > 1));
        if let Some(name) = &snap.heap {
            match bundle_file(dir, name).and_then(|p| crate::heap::summarize(&p)) {
                Ok(summary) => {
                    diagnostics_into(&mut ev.warnings, &summary.diagnostics);
                    ev.heap.push(HeapSnapshot {
                        t: Some(snap.t),
                        snapshot: Some(snap.index),
                        summary,
                    });
                }
                Err(e) => ev.warnings.push(e.to_string()),
            }
        }
        if let Some(name) = &snap.sidecar {
            match bundle_file(dir, name).and_then(|p| read_sidecar(&p)) {
                Ok(sc) => ev.sidecars.push(sc),
                Err(e) => ev.warnings.push(e.to_string()),
            }
        }
        if let Some(native) = &snap.native {
            if let Some(log) = main.native_logs.iter().find(|l| **l == native.file) {
                referenced_logs.push(log);
            }
            match read_native_ref(dir, native) {
                Ok(reports) => {
                    // A snapshot's byte range holds one check; should it hold more, the last
                    // one is the state at the snapshot.
                    if let Some(report) = reports.into_iter().last() {
                        diagnostics_into(&mut ev.warnings, &report.diagnostics);
                        ev.native.push(NativeSnapshot {
                            t: Some(snap.t),
                            snapshot: Some(snap.index),
                            report,
                        });
                        maps.push(read_maps(dir, snap.maps.as_deref(), &mut ev.warnings));
                    }
                }
                Err(e) => ev.warnings.push(e.to_string()),
            }
        }
    }
    // Logs no snapshot points into (valgrind's XML written at exit): one more, final snapshot.
    for log in &main.native_logs {
        if referenced_logs.contains(&log.as_str()) {
            continue;
        }
        match bundle_file(dir, log).and_then(|p| crate::native::parse_file(&p)) {
            Ok(reports) => {
                if let Some(report) = reports.into_iter().last() {
                    diagnostics_into(&mut ev.warnings, &report.diagnostics);
                    ev.native.push(NativeSnapshot {
                        t: Some(manifest.duration_seconds),
                        snapshot: None,
                        report,
                    });
                    // Written at exit: the newest map is the closest.
                    maps.push(maps.last().cloned().unwrap_or_default());
                }
            }
            Err(e) => ev.warnings.push(e.to_string()),
        }
    }
    if let Some(name) = &main.footprint {
        let path = dir.join(name);
        match bundle_file(dir, name).and_then(|p| std::fs::read(&p).map_err(|e| Error::io(&p, e))) {
            Ok(bytes) => {
                let mut diag = Diagnostics::new(&path);
                ev.footprint = parse_footprint(&bytes, &mut diag);
                diagnostics_into(&mut ev.warnings, &diag);
            }
            Err(e) => ev.warnings.push(e.to_string()),
        }
    }
    symbolize(&mut ev, &maps);
    canonical_modules(&mut ev.native);
    let base = PathBuf::from(&manifest.cwd);
    ev.manifest = Some(manifest);
    ev.settled = settled_from(&ev.heap, &ev.sidecars);
    add_retainers(&mut ev);
    add_sources(&mut ev, &[base, dir.to_path_buf()]);
    add_library_exports(&mut ev);
    Ok(ev)
}

/// Names each module by its real path when it exists here (`/lib/…/libzmq.so.5` and the
/// maps' `/usr/lib/…/libzmq.so.5.2.4` are one library), so a site keeps one key across
/// reports whichever way a tool or a module map named its library.
fn canonical_modules(reports: &mut [NativeSnapshot]) {
    let mut known: BTreeMap<String, Option<String>> = BTreeMap::new();
    for snap in reports {
        for frame in &mut snap.report.frames {
            let Some(module) = frame.module.as_deref().filter(|m| m.starts_with('/')) else {
                continue;
            };
            let real = known.entry(module.to_owned()).or_insert_with(|| {
                std::fs::canonicalize(module)
                    .ok()
                    .map(|p| p.display().to_string())
                    .filter(|p| p != module)
            });
            if let Some(real) = real {
                frame.module = Some(real.clone());
            }
        }
    }
}

/// A file the manifest names, as a path in the bundle. Only a regular file (or a name that
/// does not exist, for the usual error) is opened: a manifest naming `/dev/zero` or a FIFO would
/// have the reader go on without end or block.
fn bundle_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => Err(Error::input(
            &path,
            Position::Whole,
            "named by the manifest but not a regular file",
        )),
        _ => Ok(path),
    }
}

fn read_maps(dir: &Path, name: Option<&str>, warnings: &mut Vec<String>) -> Vec<ModuleMap> {
    let Some(name) = name else {
        return Vec::new();
    };
    match bundle_file(dir, name).and_then(|p| ModuleMap::read(&p)) {
        Ok(map) => {
            diagnostics_into(warnings, &map.diagnostics);
            vec![map]
        }
        Err(e) => {
            warnings.push(e.to_string());
            Vec::new()
        }
    }
}

/// Places frames of unloaded libraries with the module maps and names `module+offset` frames
/// from the modules' own symbols, with one symbolizer so every snapshot names a frame alike.
fn symbolize(ev: &mut Evidence, maps: &[Vec<ModuleMap>]) {
    let mut symbolizer = Symbolizer::new();
    for (i, snap) in ev.native.iter_mut().enumerate() {
        let maps = maps.get(i).map(Vec::as_slice).unwrap_or_default();
        symbolizer.resolve(&mut snap.report, maps);
    }
}

fn read_sidecar(path: &Path) -> Result<Sidecar> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sc: Sidecar = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(path, Position::Line(e.line() as u64), e.to_string()))?;
    if sc.leakhunt_agent > crate::bundle::SIDECAR_SCHEMA {
        return Err(Error::input(
            path,
            Position::Whole,
            format!(
                "agent sidecar schema {} is newer than this leakhunt understands; upgrade leakhunt",
                sc.leakhunt_agent
            ),
        ));
    }
    Ok(sc)
}

/// The native reports of one snapshot: a whole file or a byte range of a log.
fn read_native_ref(dir: &Path, native: &NativeRef) -> Result<Vec<NativeReport>> {
    let path = bundle_file(dir, &native.file)?;
    let input = crate::source::Input::open(&path)?;
    let len = input.len() as u64;
    let start = native.start.unwrap_or(0).min(len) as usize;
    let end = native.end.unwrap_or(len).clamp(start as u64, len) as usize;
    let bytes = &input[start..end];
    let head = &bytes[..bytes.len().min(crate::source::SNIFF_LEN)];
    let kind = crate::detect::detect_bytes(head)
        .filter(|k| k.is_native())
        .ok_or_else(|| {
            Error::input(
                &path,
                Position::Offset(start as u64),
                format!("bytes {start}..{end} are not a native leak report"),
            )
        })?;
    crate::native::parse_bytes(&path, kind, bytes)
}

/// Heap dumps, native reports and module maps given as files, auto-detected by content.
/// Heap snapshots keep the order given; native reports are ordered by the date in their
/// header when every one has it, else by the order given (and their order inside a log).
pub fn load_files(paths: &[PathBuf]) -> Result<Evidence> {
    let mut ev = Evidence::empty(Origin::Files(paths.to_vec()));
    let mut first_error: Option<Error> = None;
    let mut native: Vec<NativeReport> = Vec::new();
    let mut module_maps: Vec<ModuleMap> = Vec::new();
    let mut used = 0usize;
    for path in paths {
        let kind = match crate::detect::detect_path(path) {
            Ok(k) => k,
            Err(e) => {
                ev.warnings.push(e.to_string());
                first_error.get_or_insert(e);
                continue;
            }
        };
        let loaded: Result<()> = match kind {
            k if k.is_heap() => crate::heap::summarize(path).map(|summary| {
                diagnostics_into(&mut ev.warnings, &summary.diagnostics);
                ev.heap.push(HeapSnapshot {
                    t: None,
                    snapshot: None,
                    summary,
                });
            }),
            k if k.is_native() => crate::native::parse_file(path).map(|reports| {
                for r in &reports {
                    diagnostics_into(&mut ev.warnings, &r.diagnostics);
                }
                native.extend(reports);
            }),
            Kind::ModuleMap => ModuleMap::read(path).map(|map| {
                diagnostics_into(&mut ev.warnings, &map.diagnostics);
                module_maps.push(map);
            }),
            other => Err(Error::input(
                path,
                Position::Whole,
                format!("a {} cannot be analyzed with other files", other.describe()),
            )),
        };
        match loaded {
            Ok(()) => used += 1,
            Err(e) => {
                ev.warnings.push(e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    if used == 0 {
        return Err(first_error.unwrap_or_else(|| Error::Usage("nothing to analyze".into())));
    }
    if native.iter().all(|r| r.header.date.is_some()) {
        native.sort_by(|a, b| a.header.date.cmp(&b.header.date));
    }
    ev.native = native
        .into_iter()
        .map(|report| NativeSnapshot {
            t: None,
            snapshot: None,
            report,
        })
        .collect();
    let maps = vec![module_maps; ev.native.len()];
    symbolize(&mut ev, &maps);
    canonical_modules(&mut ev.native);
    add_retainers(&mut ev);
    let mut bases: Vec<PathBuf> = vec![PathBuf::from(".")];
    for p in paths {
        if let Some(parent) = p.parent()
            && !bases.contains(&parent.to_path_buf())
        {
            bases.push(parent.to_path_buf());
        }
    }
    add_sources(&mut ev, &bases);
    add_library_exports(&mut ev);
    Ok(ev)
}

/// The agent's sidecar written with heap snapshot `h`.
fn sidecar_of<'a>(
    sidecars: &'a [crate::bundle::Sidecar],
    h: &HeapSnapshot,
) -> Option<&'a crate::bundle::Sidecar> {
    sidecars.iter().find(|s| Some(s.snapshot) == h.snapshot)
}

/// The first heap snapshot whose sidecar lists the same loaded features as the newest sidecar:
/// before it, the program was still running `require`, and what loading code allocates (gem
/// specs, constants, method caches) grows like a leak. Kept at 0 unless at least two heap
/// snapshots remain to compare, or when sidecars are missing.
pub(crate) fn settled_from(heap: &[HeapSnapshot], sidecars: &[crate::bundle::Sidecar]) -> usize {
    let Some(last) = sidecars.last() else {
        return 0;
    };
    let features = |h: &HeapSnapshot| sidecar_of(sidecars, h).map(|s| &s.loaded_features);
    let settled = heap
        .iter()
        .position(|h| features(h).is_some_and(|f| *f == last.loaded_features))
        .unwrap_or(0);
    if heap.len().saturating_sub(settled) >= 2 {
        settled
    } else {
        0
    }
}

/// Retainer paths of the growing classes, on the newest heap snapshot whose format allows it.
fn add_retainers(ev: &mut Evidence) {
    if ev.heap.len() < 2 {
        return;
    }
    let series = crate::correlate::classes::class_series(ev.judged_heap());
    let groups = crate::correlate::classes::growth_groups(&series, &|_| None);
    let classes: Vec<String> = groups
        .iter()
        .map(|g| g.head.class.clone())
        .take(MAX_RETAINER_CLASSES)
        .collect();
    let Some((index, newest)) = ev
        .heap
        .iter()
        .enumerate()
        .rev()
        .find(|(_, h)| h.summary.format == crate::heap::HeapFormat::Cruby)
    else {
        return;
    };
    match retainer_paths(&newest.summary.path, &classes) {
        Ok(found) => {
            for r in found {
                ev.retainers.push(ClassRetainers {
                    snapshot: index + 1,
                    ..r
                });
            }
        }
        Err(e) => ev
            .warnings
            .push(format!("retainer paths not computed: {e}")),
    }
}

/// Retainer paths of `classes` in a CRuby dump, grouped by container (one pass per class).
fn retainer_paths(dump: &Path, classes: &[String]) -> Result<Vec<ClassRetainers>> {
    let mut out = Vec::new();
    for class in classes {
        let found = crate::heap::retainers::for_class(dump, class, 5)?;
        let groups = found
            .groups
            .into_iter()
            .map(|g| {
                let holder = g.steps.first();
                RetainerGroup {
                    count: g.count,
                    container_class: holder
                        .map(|s| s.class.clone())
                        .unwrap_or_else(|| format!("ROOT {}", g.root)),
                    container_address: holder.map(|s| s.address),
                    container_site: holder.and_then(|s| s.site.as_ref()).map(|s| SourceLine {
                        file: s.file.clone(),
                        line: s.line,
                    }),
                    container_length: holder.and_then(|s| s.length),
                    path: g
                        .steps
                        .iter()
                        .skip(1)
                        .rev()
                        .map(|s| match &s.name {
                            Some(name) => format!("{} {name}", s.class),
                            None => format!("{} {:#x}", s.class, s.address),
                        })
                        .collect(),
                    root: g.root,
                }
            })
            .collect();
        out.push(ClassRetainers {
            class: found.class,
            snapshot: 0,
            instances: found.instances,
            reachable: found.reachable,
            groups,
        });
    }
    Ok(out)
}

/// Reads the Ruby files that allocation sites and lifecycle counts name, for the source hints.
fn add_sources(ev: &mut Evidence, bases: &[PathBuf]) {
    let mut wanted: Vec<String> = Vec::new();
    for r in &ev.retainers {
        for g in &r.groups {
            if let Some(site) = &g.container_site {
                wanted.push(site.file.clone());
            }
        }
    }
    for sc in &ev.sidecars {
        for l in &sc.lifecycle {
            wanted.extend(l.created_at.iter().map(|s| s.file.clone()));
        }
    }
    for h in &ev.heap {
        wanted.extend(
            h.summary
                .alloc_sites
                .iter()
                .take(20)
                .map(|s| s.file.clone()),
        );
    }
    wanted.sort();
    wanted.dedup();
    for name in wanted {
        let candidates: Vec<PathBuf> = if Path::new(&name).is_absolute() {
            vec![PathBuf::from(&name)]
        } else {
            bases.iter().map(|b| b.join(&name)).collect()
        };
        for path in candidates {
            let small = std::fs::metadata(&path)
                .map(|m| m.is_file() && m.len() <= MAX_SOURCE_BYTES)
                .unwrap_or(false);
            if small && let Ok(bytes) = std::fs::read(&path) {
                ev.sources.insert(name.clone(), bytes);
                break;
            }
        }
    }
}

/// Directories searched for a library that a report names only by function (`zmq_msg_…` →
/// `libzmq.so*`), on this machine.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib",
    "/lib",
    "/usr/lib64",
    "/opt/homebrew/lib",
];

/// Exported symbols of the libraries the native sites name, when no agent sidecar lists the FFI
/// bindings (bare files, or a run whose agent failed): the release function of a family is
/// looked up there. Libraries named by path are read where they are; functions
/// without a library send us looking for `lib<first word>` in the usual directories.
fn add_library_exports(ev: &mut Evidence) {
    if !ev.sidecars.is_empty() {
        return;
    }
    let sites = crate::correlate::sites::site_series(&ev.native);
    let mut paths: Vec<PathBuf> = Vec::new();
    for s in sites.iter().take(50) {
        match s.frame.module.as_deref() {
            Some(m) if m.contains('/') => paths.push(PathBuf::from(m)),
            _ => {
                let stem = s
                    .frame
                    .library()
                    .map(crate::correlate::names::library_stem)
                    .or_else(|| {
                        s.key
                            .function
                            .split_once('_')
                            .map(|(w, _)| w.to_ascii_lowercase())
                    });
                if let Some(stem) = stem.filter(|s| s.len() >= 2) {
                    paths.extend(find_library(&stem));
                }
            }
        }
    }
    paths.sort();
    paths.dedup();
    for path in paths {
        if let Some(exports) = read_exports(&path) {
            ev.library_exports.push(exports);
        }
    }
}

fn library_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for base in ["/usr/lib", "/lib"] {
        if let Ok(entries) = std::fs::read_dir(base) {
            for e in entries.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().ends_with("-linux-gnu") {
                    dirs.push(e.path());
                }
            }
        }
    }
    dirs.extend(LIBRARY_DIRS.iter().map(PathBuf::from));
    dirs
}

/// `lib<stem>.so…` or `lib<stem>….dylib` in the usual directories: the first found.
fn find_library(stem: &str) -> Option<PathBuf> {
    let so = format!("lib{stem}.so");
    let dylib = format!("lib{stem}.");
    for dir in library_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&so) || (n.starts_with(&dylib) && n.ends_with(".dylib"))
                })
            })
            .collect();
        names.sort();
        if let Some(p) = names.into_iter().next() {
            return Some(p);
        }
    }
    None
}

/// The exported function names of a shared library, read with the `object` crate. The path
/// comes from a report's frames, so only a regular file is opened: `/dev/zero` would be read
/// without end and a FIFO would block.
pub fn read_exports(path: &Path) -> Option<LibraryExports> {
    use object::{Object, ObjectSymbol};
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let input = crate::source::Input::open(path).ok()?;
    let file = object::File::parse(&*input).ok()?;
    let exported: Vec<String> = file
        .exports()
        .map(|it| {
            it.filter_map(|e| match e.ok()?.name() {
                object::NameOrOrdinal::Name(n) => Some(String::from_utf8_lossy(n).into_owned()),
                object::NameOrOrdinal::Ordinal(_) => None,
            })
            .collect()
        })
        .unwrap_or_default();
    let mut symbols: Vec<String> = match exported {
        names if !names.is_empty() => names,
        _ => file
            .dynamic_symbols()
            .filter(|s| s.is_definition() && s.is_global())
            .filter_map(|s| s.name().ok().map(str::to_owned))
            .collect(),
    };
    for s in &mut symbols {
        // Mach-O exports carry a leading underscore.
        if let Some(rest) = s.strip_prefix('_')
            && matches!(file.format(), object::BinaryFormat::MachO)
        {
            *s = rest.to_owned();
        }
    }
    symbols.sort();
    symbols.dedup();
    Some(LibraryExports {
        library: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        symbols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Manifest, Outcome, Snapshot};

    #[test]
    fn a_bundle_loads_sidecars_footprint_and_outcome_and_keeps_going_past_bad_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Schema 1: the one process's footprint at the top level.
        let manifest = Manifest {
            leakhunt_bundle: 1,
            command: vec!["leak.rb".into()],
            snapshots: (1..=2)
                .map(|i| Snapshot {
                    index: i,
                    reason: "interval".into(),
                    t: i as f64,
                    sidecar: Some(format!("agent-00{i}.json")),
                    errors: if i == 2 {
                        vec!["leaks exited with status 2".into()]
                    } else {
                        vec![]
                    },
                    ..Snapshot::default()
                })
                .collect(),
            footprint: Some("footprint.tsv".into()),
            outcome: Outcome {
                kind: "signaled".into(),
                signal: Some(11),
                signal_name: Some("SIGSEGV".into()),
                ..Outcome::default()
            },
            ..Manifest::default()
        };
        manifest.save(d).unwrap();
        std::fs::write(
            d.join("agent-001.json"),
            br#"{"leakhunt_agent":1,"snapshot":1,"lifecycle":[{"class":"Widget","created":5,"released":0}]}"#,
        )
        .unwrap();
        std::fs::write(d.join("agent-002.json"), b"{not json").unwrap();
        std::fs::write(
            d.join("footprint.tsv"),
            b"# leakhunt footprint 1\n0.0\t1000\n0.5\t2000\n",
        )
        .unwrap();
        let ev = load_inputs(&[d.to_path_buf()]).unwrap();
        assert_eq!(ev.origin, Origin::Bundle(d.to_path_buf()));
        assert_eq!(ev.sidecars.len(), 1);
        assert_eq!(ev.sidecars[0].lifecycle[0].created, 5);
        assert_eq!(ev.footprint.len(), 2);
        assert_eq!(
            ev.manifest.as_ref().unwrap().outcome.signal_name.as_deref(),
            Some("SIGSEGV")
        );
        assert!(
            ev.warnings
                .iter()
                .any(|w| w == "snapshot 2 (interval): leaks exited with status 2")
        );
        assert!(
            ev.warnings
                .iter()
                .any(|w| w.contains("agent-002.json: line 1")),
            "{:?}",
            ev.warnings
        );
    }

    #[test]
    fn one_library_named_two_ways_becomes_one_module() {
        use crate::native::{Frame, LeakKind, NativeFormat, ReportBuilder};
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("libthing.so.5.2.4");
        std::fs::write(&real, b"").unwrap();
        let link = dir.path().join("libthing.so.5");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut snaps: Vec<NativeSnapshot> = [&link, &real]
            .iter()
            .map(|module| {
                let mut b = ReportBuilder::new("x", NativeFormat::Lsan, 0);
                let f = b.intern_frame(Frame {
                    module: Some(module.display().to_string()),
                    module_offset: Some(0x83a3f),
                    ..Frame::default()
                });
                let s = b.intern_stack(vec![f]);
                b.add_leak(Some(s), LeakKind::Direct, None, 1, 16, None);
                NativeSnapshot {
                    t: None,
                    snapshot: None,
                    report: b.finish(),
                }
            })
            .collect();
        canonical_modules(&mut snaps);
        let labels: Vec<String> = snaps.iter().map(|s| s.report.frames[0].label()).collect();
        assert_eq!(
            labels,
            ["libthing.so.5.2.4+0x83a3f", "libthing.so.5.2.4+0x83a3f"]
        );
    }

    #[test]
    fn files_that_cannot_be_read_are_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("x.json");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\n").unwrap();
        let err = load_inputs(&[png]).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::INPUT);
        assert!(err.to_string().contains("x.json"), "{err}");
        let err = load_inputs(&[dir.path().to_path_buf(), dir.path().join("x.json")]).unwrap_err();
        assert!(matches!(err, Error::Usage(_)));
    }

    #[test]
    fn exported_release_functions_of_an_installed_library() {
        // libzmq5 is in .ci/packages: the seed's library, stripped but with its exports.
        let lib = find_library("zmq").expect("libzmq installed (.ci/packages)");
        let exports = read_exports(&lib).unwrap();
        assert!(
            exports.library.starts_with("libzmq.so"),
            "{}",
            exports.library
        );
        for sym in ["zmq_msg_init_size", "zmq_msg_close", "zmq_ctx_term"] {
            assert!(exports.symbols.iter().any(|s| s == sym), "{sym}");
        }
        assert!(find_library("no-such-library-here").is_none());
    }

    #[test]
    fn growth_is_judged_from_the_first_snapshot_with_the_final_loaded_features() {
        let heap = |n: u32| HeapSnapshot {
            snapshot: Some(n),
            ..crate::correlate::retention::tests::heap(&[], &[])
        };
        let sidecar = |n: u32, features: usize| crate::bundle::Sidecar {
            snapshot: n,
            loaded_features: (0..features).map(|f| f.to_string()).collect(),
            ..Default::default()
        };
        let heaps: Vec<_> = (1..=4).map(heap).collect();
        let at = |features: &[usize]| {
            let sidecars: Vec<_> = features
                .iter()
                .enumerate()
                .map(|(i, &f)| sidecar(i as u32 + 1, f))
                .collect();
            settled_from(&heaps, &sidecars)
        };
        assert_eq!(at(&[111, 111, 111, 111]), 0);
        assert_eq!(at(&[93, 111, 111, 111]), 1);
        assert_eq!(at(&[93, 100, 111, 111]), 2);
        // Loading until the end leaves fewer than two snapshots to compare: judge them all.
        assert_eq!(at(&[93, 100, 105, 111]), 0);
        // Without sidecars nothing can be told.
        assert_eq!(settled_from(&heaps, &[]), 0);
    }

    /// Review find while fuzzing: a report whose frames name a module that is not a regular
    /// file (`/dev/zero`, a FIFO) had `analyze` open it for its exports, reading without end or
    /// blocking. Such a module is passed over.
    #[test]
    fn a_module_that_is_not_a_regular_file_is_not_read_for_exports() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("libfifo.so");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let log = dir.path().join("lsan.log");
        std::fs::write(
            &log,
            format!(
                "==1==ERROR: LeakSanitizer: detected memory leaks\n\n\
                 Direct leak of 64 byte(s) in 1 object(s) allocated from:\n\
                 \x20   #0 0x7f0000001000 in malloc (/usr/lib/liblsan.so.0+0x1000)\n\
                 \x20   #1 0x7f0000002000 in widget_create ({}+0x1139)\n\n\
                 SUMMARY: LeakSanitizer: 64 byte(s) leaked in 1 allocation(s).\n",
                fifo.display()
            ),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ev = load_files(&[log]).map(|ev| ev.library_exports.len());
            let _ = tx.send(ev.map_err(|e| e.to_string()));
        });
        let loaded = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("load_files blocked on a FIFO named by a frame");
        assert_eq!(loaded, Ok(0));
    }

    /// Review find while fuzzing: a manifest naming something other than a regular file for a
    /// sidecar or the footprint (a FIFO here; `/dev/zero` alike) blocked or read without end.
    /// Each is a warning naming the file, and the rest of the bundle still loads.
    #[test]
    fn bundle_files_that_are_not_regular_files_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["agent-001.json", "footprint.tsv"] {
            let c_path = std::ffi::CString::new(d.join(name).to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
            assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        }
        std::fs::write(
            d.join("manifest.json"),
            br#"{"leakhunt_bundle": 1, "command": ["leak.rb"], "footprint": "footprint.tsv",
                "snapshots": [{"index": 1, "reason": "interval", "t": 1.0,
                               "sidecar": "agent-001.json", "heap": "/dev/null"}]}"#,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let bundle = d.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(load_bundle(&bundle).map(|ev| ev.warnings));
        });
        let warnings = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("load_bundle blocked on a FIFO named by the manifest")
            .unwrap();
        let not_regular: Vec<&String> = warnings
            .iter()
            .filter(|w| w.ends_with("named by the manifest but not a regular file"))
            .collect();
        assert_eq!(not_regular.len(), 3, "{warnings:?}");
        assert!(not_regular[0].starts_with("/dev/null: "), "{warnings:?}");
    }
}
