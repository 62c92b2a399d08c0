//! What the correlator concludes: [`Finding`]s with a kind, a confidence, the evidence for each
//! claim, a suggested change and a stable fingerprint, and the order they are shown in.
//!
//! Stage: correlator output model; renderers read it, serde writes it as the JSON report.

use crate::evidence::SourceLine;
use serde::Serialize;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Instances of a Ruby class pile up across heap snapshots, kept by a container.
    RubyRetention,
    /// Native memory behind an FFI wrapper grows because its release method is not called.
    MissingRelease,
    /// Native memory grows (or is reported leaked) with no Ruby object to blame.
    NativeLeak,
    /// Native memory grows inside a C extension with nothing the program could call to
    /// release it: the gem leaks on its own.
    ExtensionLeak,
    /// The Ruby runtime's own allocations, folded into one counted line.
    RuntimeNoise,
}

impl FindingKind {
    /// Whether the finding is a leak (counts for `--fail-on leak`).
    pub fn is_leak(self) -> bool {
        !matches!(self, FindingKind::RuntimeNoise)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::RubyRetention => "ruby_retention",
            FindingKind::MissingRelease => "missing_release",
            FindingKind::NativeLeak => "native_leak",
            FindingKind::ExtensionLeak => "extension_leak",
            FindingKind::RuntimeNoise => "runtime_noise",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            FindingKind::RubyRetention => "Ruby retention",
            FindingKind::MissingRelease => "Missing release",
            FindingKind::NativeLeak => "Native leak without a Ruby owner",
            FindingKind::ExtensionLeak => "Leak in a C extension",
            FindingKind::RuntimeNoise => "Runtime noise",
        }
    }

    /// Among findings of equal confidence, the ones that name a change to the program first.
    fn precedence(self) -> u8 {
        match self {
            FindingKind::MissingRelease | FindingKind::RubyRetention => 2,
            FindingKind::NativeLeak | FindingKind::ExtensionLeak => 1,
            FindingKind::RuntimeNoise => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }

    /// One step lower (bare files, missing pieces); `Low` stays `Low`.
    pub fn lowered(self) -> Confidence {
        match self {
            Confidence::High => Confidence::Medium,
            _ => Confidence::Low,
        }
    }
}

/// Which evidence source an [`EvidenceItem`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Class counts of heap snapshots.
    Heap,
    /// Retainer paths of a heap snapshot.
    Retainers,
    /// Ruby source read at a line the heap or the agent named (a labelled heuristic).
    RubySource,
    /// Native leak reports.
    Native,
    /// The agent's FFI inventory.
    Ffi,
    /// The agent's wrapper classes and the functions their methods call.
    Wrapper,
    /// The agent's lifecycle counts.
    Lifecycle,
    /// Names matched without agent data (bare files).
    Names,
    /// A library's exported symbols read on this machine.
    Symbols,
    /// The agent's record of C extensions: what each defined, their calls.
    Extension,
    /// Where a finding holds among the processes of a run (servers, fork pools).
    Processes,
}

/// One claim a finding rests on, in words, with the data behind it when it has a location.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceItem {
    pub source: Source,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLine>,
    /// Set when the claim is a guess from names or source text, not a measurement.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub heuristic: bool,
}

impl EvidenceItem {
    pub fn new(source: Source, text: impl Into<String>) -> EvidenceItem {
        EvidenceItem {
            source,
            text: text.into(),
            location: None,
            heuristic: false,
        }
    }

    pub fn at(mut self, location: SourceLine) -> EvidenceItem {
        self.location = Some(location);
        self
    }

    pub fn heuristic(mut self) -> EvidenceItem {
        self.heuristic = true;
        self
    }
}

/// What a location in a suggestion is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationRole {
    /// Instances of the wrapper class are created here: the site whose unreleased instances
    /// best explain the native growth, the one the fix names.
    Created,
    /// Other sites creating unreleased instances of the same class (evidence, not the fix).
    AlsoCreated,
    /// The container that keeps the instances is allocated here.
    ContainerAllocated,
    /// The constant that holds the container is assigned here (the dump had no allocation site
    /// for the container; the value may have been made elsewhere).
    ContainerAssigned,
    /// The container is filled here (read from the source: a heuristic).
    ContainerFilled,
    /// Instances of the growing class are allocated here.
    Allocated,
    /// A method of a C extension that leaks on its own is called here.
    Called,
}

impl LocationRole {
    /// How a report introduces the location: "created at leak.rb:37".
    pub fn label(self) -> &'static str {
        match self {
            LocationRole::Created => "created at",
            LocationRole::AlsoCreated => "also created at",
            LocationRole::ContainerAllocated => "container allocated at",
            LocationRole::ContainerAssigned => "container's constant assigned at",
            LocationRole::ContainerFilled => "container filled at",
            LocationRole::Allocated => "allocated at",
            LocationRole::Called => "called at",
        }
    }
}

/// Said after the counts of allocation sites when the run traced them only in sampled windows:
/// those counts are of the traced objects, fewer than the objects made.
pub const SITES_SAMPLED: &str = "allocation sites sampled";

/// A Ruby source location a suggestion points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub role: LocationRole,
    /// Objects it accounts for, when counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Of those, how many were released, when the agent counted releases per site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<u64>,
    /// `count` is of the objects traced while allocation sites were sampled (fewer than made).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sampled: bool,
    /// The source line itself, when it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Location {
    pub fn new(at: &SourceLine, role: LocationRole) -> Location {
        Location {
            file: at.file.clone(),
            line: at.line,
            role,
            count: None,
            released: None,
            sampled: false,
            code: None,
        }
    }

    pub fn site(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// How a report gives `count` after the site: "1,204", or "1,204 traced; allocation sites
    /// sampled" when the count is of sampled objects. None without a count.
    pub fn count_text(&self) -> Option<String> {
        let c = crate::format::count(self.count?);
        Some(if self.sampled {
            format!("{c} traced; {SITES_SAMPLED}")
        } else {
            c
        })
    }

    /// Whether a renderer shows it under the fix: the sites the change is made at, not the
    /// further creation sites listed as evidence.
    pub fn is_fix_site(&self) -> bool {
        self.role != LocationRole::AlsoCreated
    }
}

/// The change the finding points to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// One sentence: what to change.
    pub text: String,
    /// `W#R` for a missing release, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Where the objects concerned are created (missing release) or the container is
    /// allocated and filled (retention).
    pub locations: Vec<Location>,
    /// Shapes the fix can take, one line each.
    pub shapes: Vec<String>,
}

/// The native site a finding is about, as it appears in every table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NativeOwner {
    pub function: String,
    pub library: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub confidence: Confidence,
    pub fingerprint: String,
    /// One line naming what leaks.
    pub title: String,
    /// The title without the measurement: what a finding merged over several processes
    /// starts with (`Widget#close is not called: libwidget.so memory from widget_create`).
    #[serde(skip)]
    pub headline: String,
    /// The Ruby class concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The native site concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeOwner>,
    /// Bytes the finding accounts for: growth between the first and last snapshot when
    /// measured, otherwise the reported total (used for ranking and the leak rate).
    pub bytes: i64,
    /// Objects or blocks the finding accounts for, measured like `bytes`.
    pub count: i64,
    pub evidence: Vec<EvidenceItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<Suggestion>,
    /// Where the finding holds, one entry per process, when the run examined several
    /// (servers, fork pools): each one's share and its series over the rounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<FindingProcess>,
}

/// One process a finding holds in (runs of several processes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingProcess {
    pub pid: u32,
    /// The group it belongs to, as the report names it ("the master", "workers").
    pub role: String,
    /// Its share of the finding's `bytes` and `count`.
    pub bytes: i64,
    pub count: i64,
    /// The finding's measure in that process at each of its snapshots: leaked bytes of the
    /// native site (missing release, native leak) or instances of the class (retention).
    pub series: Vec<SeriesPoint>,
}

/// A value at a moment of the run (seconds since the start, when known).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub t: Option<f64>,
    pub value: i64,
}

impl Finding {
    pub fn new(kind: FindingKind, confidence: Confidence, title: impl Into<String>) -> Finding {
        let title = title.into();
        Finding {
            kind,
            confidence,
            fingerprint: String::new(),
            headline: title.clone(),
            title,
            class: None,
            native: None,
            bytes: 0,
            count: 0,
            evidence: Vec::new(),
            suggestion: None,
            processes: Vec::new(),
        }
    }

    /// Sets the headline (the title without its measurement).
    pub fn headline(mut self, headline: impl Into<String>) -> Finding {
        self.headline = headline.into();
        self
    }

    /// Sets the fingerprint from the kind and the finding's identity.
    pub fn identify(mut self, identity: &[&str]) -> Finding {
        self.fingerprint = super::fingerprint::fingerprint(self.kind.as_str(), identity);
        self
    }
}

/// The order findings are shown in: leaks before noise (always), then confidence, then
/// findings that name a change before those that do not, then bytes, then the fingerprint
/// (so equal findings keep a stable order).
pub fn rank(a: &Finding, b: &Finding) -> Ordering {
    b.kind
        .is_leak()
        .cmp(&a.kind.is_leak())
        .then_with(|| b.confidence.cmp(&a.confidence))
        .then_with(|| b.kind.precedence().cmp(&a.kind.precedence()))
        .then_with(|| b.bytes.cmp(&a.bytes))
        .then_with(|| a.fingerprint.cmp(&b.fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(kind: FindingKind, confidence: Confidence, bytes: i64) -> Finding {
        let mut f = Finding::new(kind, confidence, "x").identify(&[&bytes.to_string()]);
        f.bytes = bytes;
        f
    }

    #[test]
    fn noise_never_outranks_a_leak_whatever_its_size() {
        let mut v = [
            f(FindingKind::RuntimeNoise, Confidence::High, 1 << 40),
            f(FindingKind::NativeLeak, Confidence::Low, 10),
        ];
        v.sort_by(rank);
        assert_eq!(v[0].kind, FindingKind::NativeLeak);
    }

    #[test]
    fn confidence_then_precedence_then_bytes() {
        let mut v = [
            f(FindingKind::NativeLeak, Confidence::Medium, 500),
            f(FindingKind::MissingRelease, Confidence::Medium, 100),
            f(FindingKind::RubyRetention, Confidence::High, 1),
            f(FindingKind::MissingRelease, Confidence::Medium, 200),
        ];
        v.sort_by(rank);
        let got: Vec<(FindingKind, i64)> = v.iter().map(|x| (x.kind, x.bytes)).collect();
        assert_eq!(
            got,
            vec![
                (FindingKind::RubyRetention, 1),
                (FindingKind::MissingRelease, 200),
                (FindingKind::MissingRelease, 100),
                (FindingKind::NativeLeak, 500),
            ]
        );
    }
}
