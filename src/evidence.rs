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

    /// The newest sidecar: the most complete FFI inventory and lifecycle counts.
    pub fn latest_sidecar(&self) -> Option<&Sidecar> {
        self.sidecars.last()
    }
}
