//! What the correlator hands the renderers: the [`Analysis`] (verdict, ranked findings, the
//! class-growth table, the native sites, the timeline), serialized as is for `--format json`.
//!
//! Stage: correlator output, renderer input. Plain data: the rules fill it, the renderers read it.

use super::finding::Finding;
use crate::bundle::{Outcome, ProcessOutcome};
use crate::format::{quantity, signed};
use crate::heap::histogram::DiffRow;
use serde::Serialize;

/// Version of the JSON report (`schema` key); bumped on incompatible changes.
pub const REPORT_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At least one leak finding.
    Leak,
    /// Evidence over time, and nothing leaks.
    NoLeak,
    /// Not enough evidence to tell (no snapshot pair, no native report).
    Inconclusive,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    /// "bundle" or "files".
    pub kind: &'static str,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgramInfo {
    pub command: Vec<String>,
    pub ruby: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LeakRate {
    pub bytes_per_second: f64,
    /// "native growth" or "footprint slope".
    pub source: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassGrowthTable {
    /// 1-based heap snapshots compared (first and last).
    pub from: usize,
    pub to: usize,
    /// histo.rb diff rows: count and bytes deltas, descending.
    pub rows: Vec<DiffRow>,
    /// Rows left out of `rows` (and of the charts and the findings) because leakhunt's own
    /// agent made those objects: see [`classes::agent_classes`].
    pub agent_rows: Vec<DiffRow>,
}

/// Agent rows named one by one in the note; the rest are counted.
const AGENT_ROWS_NAMED: usize = 5;

impl ClassGrowthTable {
    /// The one line a report shows about the rows it left out, when it left any out.
    pub fn left_out_note(&self) -> Option<String> {
        if self.agent_rows.is_empty() {
            return None;
        }
        let mut named: Vec<String> = self
            .agent_rows
            .iter()
            .take(AGENT_ROWS_NAMED)
            .map(|r| format!("{} {}", r.name, signed(r.count)))
            .collect();
        if self.agent_rows.len() > AGENT_ROWS_NAMED {
            named.push(format!("{} more", self.agent_rows.len() - AGENT_ROWS_NAMED));
        }
        Some(format!(
            "{} left out: objects of leakhunt's own agent ({}), not the program's; the charts and findings leave them out too",
            quantity(self.agent_rows.len(), "row"),
            named.join(", ")
        ))
    }
}

/// What a native site turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteStatus {
    /// Part of a missing-release finding.
    MissingRelease,
    /// A native leak without a Ruby owner.
    Leak,
    /// A leak inside a C extension, with nothing the program could call to release it.
    ExtensionLeak,
    /// Owned by a wrapper whose finalizer releases it.
    Finalized,
    /// The Ruby runtime's own allocations.
    Runtime,
    /// Did not grow between snapshots.
    Static,
    /// Only reachable through another leaked block.
    Secondary,
    /// An unowned site past the ones shown as findings.
    Minor,
}

#[derive(Debug, Clone, Serialize)]
pub struct NativeSiteRow {
    pub function: String,
    pub library: Option<String>,
    pub status: SiteStatus,
    /// The class blamed for it, when there is one.
    pub owner: Option<String>,
    pub blocks: Vec<u64>,
    pub bytes: Vec<u64>,
    pub delta_blocks: i64,
    pub delta_bytes: i64,
    /// Site and frames outward, outermost first.
    pub stack: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FootprintPoint {
    pub t: f64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPoint {
    /// 1-based position.
    pub index: usize,
    pub t: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassLine {
    pub class: String,
    pub counts: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NativePoint {
    pub index: usize,
    pub t: Option<f64>,
    /// All leaked bytes the report counts (its own summary when it lists fewer).
    pub leaked_bytes: u64,
    /// Bytes of the sites that are leak findings.
    pub finding_bytes: u64,
}

/// Series over time, for charts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub footprint: Vec<FootprintPoint>,
    pub heap_snapshots: Vec<SnapshotPoint>,
    pub classes: Vec<ClassLine>,
    pub native: Vec<NativePoint>,
    /// One line per process of a run of several (its footprint and native bytes), for charts
    /// with one line per worker.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessLine>,
}

/// One process's series.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessLine {
    pub pid: u32,
    /// "pid 4242 (worker)", for a legend.
    pub label: String,
    pub footprint: Vec<FootprintPoint>,
    pub native: Vec<NativePoint>,
}

/// One process of a run of several, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// As the manifest has it: "main", "worker", "child", "no agent".
    pub role: String,
    /// The group findings count it in: "the master", "workers", "workers of 4242".
    pub group: String,
    pub command: Vec<String>,
    pub first_round: Option<u32>,
    pub last_round: Option<u32>,
    pub heap_snapshots: usize,
    pub native_snapshots: usize,
    /// Whether its growth was judged (two heap snapshots or more; the main process always).
    pub judged: bool,
    pub outcome: ProcessOutcome,
    /// Fingerprints of the leak findings that hold in it.
    pub findings: Vec<String>,
}

/// Everything the report shows; serialized as is for `--format json`.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub schema: u32,
    pub leakhunt_version: &'static str,
    pub verdict: Verdict,
    pub input: InputInfo,
    pub program: Option<ProgramInfo>,
    pub backend: Option<String>,
    pub heap_snapshots: usize,
    pub native_snapshots: usize,
    pub duration_seconds: Option<f64>,
    pub leak_rate: Option<LeakRate>,
    pub findings: Vec<Finding>,
    pub class_growth: Option<ClassGrowthTable>,
    pub native_sites: Vec<NativeSiteRow>,
    /// The process the class-growth and native-sites tables and the timeline describe, in a
    /// run of several: the one where the first leak finding grew most (else the main one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables_of: Option<ProcessRef>,
    pub timeline: Timeline,
    /// Every process of a run of several, the main one first. Empty for one process.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessSummary>,
    /// What was looked at and set aside (finalizer-released wrappers, …).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// A process named by the report.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub group: String,
}

impl Analysis {
    pub fn leak_findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.kind.is_leak())
    }
}
