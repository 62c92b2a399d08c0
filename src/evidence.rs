//! The evidence model: everything known about one investigation, from a bundle or from loose
//! files, in time order. The correlator reads only this.
//!
//! Stage: between parsers and the correlator. Loading (bundle → Evidence, files → Evidence)
//! lives here too, so `analyze BUNDLE` and `run` produce the same report from the same bytes.

use crate::bundle::{FootprintSample, Manifest, Sidecar};
use crate::heap::HeapSummary;
use crate::native::NativeReport;
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
            warnings: Vec::new(),
        }
    }

    /// The newest sidecar: the most complete FFI inventory and lifecycle counts.
    pub fn latest_sidecar(&self) -> Option<&Sidecar> {
        self.sidecars.last()
    }
}
