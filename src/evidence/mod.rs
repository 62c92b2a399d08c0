//! The evidence model: everything known about one investigation, from a bundle or from loose
//! files, in time order, as plain data. The correlator reads only this.
//!
//! Stage: evidence, between the readers and the correlator. [`load`] reads the inputs
//! (bundle → Evidence, files → Evidence); [`retainers`] and [`resolve`] complete it once, with
//! what the correlator asks for, so `analyze BUNDLE` and `run` produce the same report from the
//! same bytes.

pub mod load;
pub mod resolve;
pub mod retainers;

pub use load::{load_bundle, load_files, load_inputs};

use crate::bundle::{FootprintSample, Manifest, ProcessEntry, Sidecar};
use crate::heap::HeapSummary;
use crate::native::NativeReport;
use crate::native::symbolize::ModuleCapture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A native report placed in time.
#[derive(Debug, Clone)]
pub struct NativeSnapshot {
    /// Seconds since the target started, when known (bundles).
    pub t: Option<f64>,
    /// The bundle snapshot it belongs to (1-based), when known.
    pub snapshot: Option<u32>,
    /// Taken as the program exited: the bundle's exit snapshot, or a log the tool wrote at exit
    /// (valgrind's final leak check). Unknown for bare files (false).
    pub at_exit: bool,
    pub report: NativeReport,
}

/// A heap summary placed in time.
#[derive(Debug, Clone)]
pub struct HeapSnapshot {
    pub t: Option<f64>,
    pub snapshot: Option<u32>,
    pub summary: HeapSummary,
    /// The dump the summary was read from, when it is still there to read again (retainer
    /// paths); `None` once `--keep-dumps` removed it and its saved summary stands in.
    pub dump: Option<PathBuf>,
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
    /// Where the container itself was allocated (dumps made with allocation tracing), or, when
    /// the dump has no site for it and a constant holds it, where that constant was assigned.
    pub container_site: Option<SourceLine>,
    /// The constant holding the container (`AuditLog::ENTRIES`), as the agent listed it.
    pub container_constant: Option<String>,
    /// Elements of the container (Array length, Hash size), when the dump tells it.
    pub container_length: Option<u64>,
    /// Elements the container gained since the first judged heap snapshot, when it is an Array
    /// or Hash that was already there.
    pub container_growth: Option<i64>,
    /// How many different objects hold the group's instances directly (1: all in one container;
    /// many: each in its own, an `Order`'s `LineItem`s), when the paths tell it.
    pub container_objects: Option<u64>,
    /// The root the path starts from (`machine_context`, `vm`, `global_tbl`, …).
    pub root: String,
    /// The path from the root down to the container, one label per object.
    pub path: Vec<String>,
    /// The classes of the objects above the container, nearest first (`Hash`, `AuditEntry`,
    /// `Array`): which objects hold the container, by class.
    pub holders: Vec<String>,
}

/// Why the instances of a class are alive, in one heap snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassRetainers {
    pub class: String,
    /// The heap snapshot the paths were computed on (1-based position in [`Evidence::heap`]).
    pub snapshot: usize,
    pub instances: u64,
    /// The instances that appeared since the first judged heap snapshot (absent from it by
    /// address, type, class and allocation generation), when it could be read: the groups and
    /// `reachable` then count only these.
    pub new_instances: Option<u64>,
    /// Instances (the new ones, when known) with a path from a root; the rest is garbage the
    /// dump caught before a GC (or held by references the dump does not record).
    pub reachable: u64,
    /// Largest group first.
    pub groups: Vec<RetainerGroup>,
}

/// The exported functions of a native library (the release function of a family is looked up
/// here when no agent sidecar names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The evidence of one more process of a run (a worker, a child), besides the main one.
#[derive(Debug, Clone)]
pub struct ProcessEvidence {
    /// The process as the manifest lists it (pid, parent, role, command, outcome).
    pub entry: ProcessEntry,
    /// Its own heap and native snapshots, sidecars and footprint (no manifest, no further
    /// processes).
    pub evidence: Evidence,
}

/// Everything known about one process — for a bundle of several processes, the main one, with
/// the others in [`Evidence::processes`].
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
    /// The run traced allocation sites only in sampled windows: a dump's per-site counts are
    /// those of the traced objects, fewer than the class's growth (bundles only; every
    /// process of the run alike).
    pub alloc_sites_sampled: bool,
    /// Retainer paths of the classes that grow, on the newest heap snapshot that allows it.
    pub retainers: Vec<ClassRetainers>,
    /// Ruby source files named by container allocation sites, keyed by the name as the dump
    /// gives it (read so the correlator can tell where a container is filled).
    pub sources: BTreeMap<String, Vec<u8>>,
    /// Exported symbols of libraries named by native sites (when no sidecar lists the bindings).
    pub library_exports: Vec<LibraryExports>,
    /// Module paths as the reports named them → their real path, where the two differ.
    pub real_modules: BTreeMap<String, String>,
    /// What placing and naming the native frames took from each module file, by the path the
    /// frames or module maps give it (for the bundle's capture).
    pub module_symbols: BTreeMap<String, ModuleCapture>,
    /// What the run resolved on its machine, when the bundle captured it: resolution reads
    /// this instead of the machine doing the analysis.
    pub captured: Option<resolve::Resolved>,
    /// Problems met while loading, one line each (soft errors of every input included, every
    /// process's too).
    pub warnings: Vec<String>,
    /// The other processes of the run with at least one heap snapshot (bundles of servers,
    /// fork pools), in the manifest's order. Empty for one process and for files.
    pub processes: Vec<ProcessEvidence>,
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
            alloc_sites_sampled: false,
            retainers: Vec::new(),
            sources: BTreeMap::new(),
            library_exports: Vec::new(),
            real_modules: BTreeMap::new(),
            module_symbols: BTreeMap::new(),
            captured: None,
            warnings: Vec::new(),
            processes: Vec::new(),
        }
    }

    /// This evidence and that of every other process, the main one first.
    pub fn each_process(&self) -> impl Iterator<Item = &Evidence> {
        std::iter::once(self).chain(self.processes.iter().map(|p| &p.evidence))
    }

    /// Calls `f` on this evidence, then on that of every other process (to complete each one
    /// the same way).
    pub fn for_each_process_mut(&mut self, mut f: impl FnMut(&mut Evidence)) {
        f(self);
        for p in &mut self.processes {
            f(&mut p.evidence);
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
    let features = heap
        .iter()
        .map(|h| sidecar_of(sidecars, h).map(|s| &s.loaded_features));
    let settled = first_with_final_features(features, &&last.loaded_features).unwrap_or(0);
    if heap.len().saturating_sub(settled) >= 2 {
        settled
    } else {
        0
    }
}

/// Where loading settles in a series of snapshots: the position of the first whose loaded
/// features (`None`: not known) are `last`, the newest's. Judging growth (`settled_from`) and
/// choosing the dumps `--keep-dumps` keeps (`run::compact::DumpKeeper`) both follow this rule;
/// the keeper compares hashes of the features, so the features are any comparable key.
pub(crate) fn first_with_final_features<K: PartialEq>(
    features: impl IntoIterator<Item = Option<K>>,
    last: &K,
) -> Option<usize> {
    features
        .into_iter()
        .position(|f| f.is_some_and(|f| f == *last))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The rule itself, as the dump keeper uses it: unknown features never match.
        assert_eq!(
            first_with_final_features([None, Some(1), Some(2), Some(2)], &2),
            Some(2)
        );
        assert_eq!(first_with_final_features([None, Some(1)], &2), None);
    }
}
