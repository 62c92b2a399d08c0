//! The bundle: the directory `leakhunt run` writes and `leakhunt analyze BUNDLE` reads.
//!
//! Stage: the hand-off between `run` and the analysis. Everything the analysis needs is in
//! here, so `analyze BUNDLE` gives the same report as the run that made it. This module holds
//! the versioned schemas (the manifest, the agent's per-snapshot sidecar, the footprint
//! timeline) and the private-file helpers; it does not run or parse anything else.
//!
//! Layout (names are recorded in the manifest; readers follow the manifest, not the names).
//! Every file is a plain name in the bundle directory. The main process's files have the names
//! below; every other process's carry its pid (`heap-p4242-003.json`, `lsan-p4242.log`,
//! `footprint-p4242.tsv`): see [`ProcessFiles`]. `NNN` is the round.
//! ```text
//! manifest.json          Manifest (schema MANIFEST_SCHEMA)
//! heap-001.json.zst      ObjectSpace.dump_all after a full GC (0600), compressed after the
//!                        round (src/zst.rs); older bundles hold the plain heap-001.json
//! agent-001.json         Sidecar written by the Ruby agent with the dump
//! summary-001.json       The dump reduced to what the analysis reads from it (its format is
//!                        the heap reader's: src/heap/round_summary.rs), written with
//!                        --keep-dumps before a dump may be removed
//! native-001.txt         leaks(1) output or vgdb leak_check text for the same moment
//! maps-001.txt           /proc/PID/maps at the moment of the check (Linux)
//! lsan.log               every LeakSanitizer check of the process (byte ranges per snapshot)
//! valgrind.xml           memcheck XML written at exit
//! footprint.tsv          "# leakhunt footprint 1" header, then "t_seconds<TAB>bytes" lines
//! ```
//!
//! Schema 1 (one process) kept `native_logs` and `footprint` at the top level and had no
//! `processes`; [`Manifest::load`] reads it into the schema-2 shape.

use crate::diag::Position;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_SCHEMA: u32 = 2;
pub const SIDECAR_SCHEMA: u32 = 1;
pub const FOOTPRINT_HEADER: &str = "# leakhunt footprint 1";
/// The environment variable that tells the agent when to trace allocation sites (declared
/// here, where the manifest is read, and listed in `run::knobs`), and its value for tracing in
/// sampled windows only.
pub const ALLOC_SITES_ENV: &str = "LEAKHUNT_ALLOC_SITES";
pub const ALLOC_SITES_SAMPLED: &str = "sampled";

/// `manifest.json`: what was run, how, and where each piece of evidence is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    /// Always [`MANIFEST_SCHEMA`]; readers refuse newer majors.
    pub leakhunt_bundle: u32,
    pub leakhunt_version: String,
    /// The user's command as given (`PROGRAM ARGS…`).
    pub command: Vec<String>,
    /// What was actually executed (interpreter, backend wrapper, …).
    pub exec: Vec<String>,
    pub cwd: String,
    /// Environment variables leakhunt set or changed for the target (values as set).
    pub env: BTreeMap<String, String>,
    pub platform: Platform,
    pub ruby: Option<String>,
    pub backend: Backend,
    /// The main process: the first Ruby agent that said hello without being forked, else the
    /// child leakhunt started (for valgrind, both are the valgrind process).
    pub pid: Option<u32>,
    /// RFC 3339 start time.
    pub started_at: String,
    pub duration_seconds: f64,
    /// Every process's snapshots in the order they were taken; each names its process (`pid`)
    /// and its round (`index`).
    pub snapshots: Vec<Snapshot>,
    /// Every process of the program's tree that leakhunt saw, the main one first (past the
    /// first 100 that ended before any round, those are only counted: `unlisted_processes`).
    pub processes: Vec<ProcessEntry>,
    /// Processes that ended before any round and are not listed in `processes`.
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted_processes: u64,
    /// Schema 1 only (the main process's native logs); schema 2 keeps them per process.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub native_logs: Vec<String>,
    /// Schema 1 only (the main process's footprint); schema 2 keeps it per process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub footprint: Option<String>,
    /// What the analysis needed from the machine that ran the program (library exports,
    /// Ruby source files, real paths of modules), captured at the end of the run so that
    /// `analyze` of the bundle gives the same report anywhere. Absent in older bundles.
    pub resolved: Option<String>,
    pub outcome: Outcome,
    /// Everything that did not go as planned, one line each, telling the next step.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    /// `uname -r` on Linux, the product version on macOS.
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Backend {
    /// "leaks", "lsan", "valgrind" or "none".
    pub name: String,
    /// e.g. "valgrind-3.19.0", the liblsan path, the leaks binary path.
    pub tool: Option<String>,
    pub version: Option<String>,
    /// Backend options as passed (LSAN_OPTIONS, valgrind flags).
    pub options: Vec<String>,
}

/// One process of the program's tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessEntry {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// The command line the process started with (a forked process: its parent's).
    pub command: Vec<String>,
    /// "main" (the program leakhunt started), "worker" (forked by a process of the tree),
    /// "child" (another Ruby program the tree started), "no agent" (a process of the program's
    /// group that never said hello: not Ruby, or its environment dropped RUBYOPT).
    pub role: String,
    /// `RUBY_DESCRIPTION` as the agent gave it.
    pub ruby: Option<String>,
    /// First and last round with a heap snapshot of this process.
    pub first_round: Option<u32>,
    pub last_round: Option<u32>,
    /// Native evidence files of this process that hold more than one snapshot (lsan.log,
    /// valgrind.xml).
    pub native_logs: Vec<String>,
    /// Its footprint timeline file, if sampling worked.
    pub footprint: Option<String>,
    pub outcome: ProcessOutcome,
    /// The process replaced its program by exec (`bundle exec ruby app.rb`, a binstub, a
    /// wrapper script): what it ran before, when, and from which round on its snapshots are of
    /// the program it runs now. Earlier rounds stay in the bundle and are not compared with
    /// later ones: they are of another program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecEntry>,
}

/// The last exec of a process (see [`ProcessEntry::exec`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecEntry {
    /// The command line before the first exec.
    pub before: Vec<String>,
    /// Seconds since the run started, when the new program's agent said hello.
    pub t: f64,
    /// The first round after the exec.
    pub first_round: u32,
    /// Native logs of the programs it replaced, set aside so the new program's runtime does not
    /// overwrite them (LeakSanitizer truncates its log when it opens it again after an exec).
    pub logs: Vec<String>,
}

impl ExecEntry {
    /// Whether snapshot `index` was taken of the program the process runs now.
    pub fn covers(&self, index: u32) -> bool {
        index >= self.first_round
    }
}

impl ProcessEntry {
    /// Whether this is a process the program forked from another one of its tree.
    pub fn is_worker(&self) -> bool {
        self.role == ROLE_WORKER
    }
}

pub const ROLE_MAIN: &str = "main";
pub const ROLE_WORKER: &str = "worker";
pub const ROLE_CHILD: &str = "child";
pub const ROLE_NO_AGENT: &str = "no agent";

/// How one process of the tree ended, as far as leakhunt can tell (it is the parent of the main
/// process only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessOutcome {
    /// "exited" (its agent announced the end), "vanished" (its connection closed without a
    /// word: a crash, SIGKILL or `exit!`), "stopped" (still running when the run ended; ended
    /// with the program's group), "unseen" (never said hello), or the main process's
    /// [`Outcome`] kind.
    pub kind: String,
    pub detail: String,
}

/// One moment at which heap and native evidence of one process were taken together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// The round (1-based): snapshots of several processes taken at the same moment share it.
    pub index: u32,
    /// The process (schema 1: absent, the manifest's `pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// "interval", "exit", "interrupt", "request", "duration".
    pub reason: String,
    /// Seconds since the target started.
    pub t: f64,
    pub heap: Option<String>,
    /// The round's heap summary file (`summary-NNN.json`, `--keep-dumps`), written before the
    /// dump may be removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The dump named by `heap` was removed (`--keep-dumps`): its summary stands in for it.
    #[serde(skip_serializing_if = "is_false")]
    pub heap_removed: bool,
    pub sidecar: Option<String>,
    pub native: Option<NativeRef>,
    pub maps: Option<String>,
    /// Why a piece is missing (e.g. "leaks exited with status 2: …").
    pub errors: Vec<String>,
}

impl Snapshot {
    /// The one warning line about this snapshot's missing pieces, as `run` prints it and the
    /// report repeats it (the same text, so the two are shown once). `of_process` names the
    /// process: every one but the main one.
    pub fn warning(&self, of_process: bool) -> Option<String> {
        let whose = match (of_process, self.pid) {
            (true, Some(pid)) => format!(" of process {pid}"),
            _ => String::new(),
        };
        (!self.errors.is_empty()).then(|| {
            format!(
                "snapshot {}{whose} ({}): {}",
                self.index,
                self.reason,
                self.errors.join("; ")
            )
        })
    }

    /// Whether the heap dump was written: the snapshot counts as taken (even once the dump
    /// was removed for its summary).
    pub fn taken(&self) -> bool {
        self.heap.is_some()
    }

    /// Whether the heap dump is still in the bundle.
    pub fn has_dump(&self) -> bool {
        self.heap.is_some() && !self.heap_removed
    }
}

/// Where the native evidence of one snapshot is: a whole file or a byte range of a log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NativeRef {
    pub file: String,
    /// Byte range `[start, end)` inside `file`; absent = the whole file.
    pub start: Option<u64>,
    pub end: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcome {
    /// "exited", "signaled", "interrupted" (Ctrl-C), "stopped" (by leakhunt at the end of
    /// `--duration`), "killed" (by leakhunt after a deadline), "failed_to_start", "running" (the
    /// manifest was written before the end).
    pub kind: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub signal_name: Option<String>,
    /// Human summary, e.g. "killed by SIGSEGV after 2 snapshots".
    pub detail: String,
    /// Class of the exception that ended the program (`ArgumentError`, `SyntaxError`), when
    /// the agent saw one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
}

/// The agent's per-snapshot sidecar (`agent-NNN.json`), written next to the heap dump.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sidecar {
    /// Always [`SIDECAR_SCHEMA`]; first key of the file.
    pub leakhunt_agent: u32,
    pub snapshot: u32,
    pub reason: String,
    /// Seconds since the agent started (process clock of the target).
    pub t: f64,
    pub pid: u32,
    pub ruby: RubyInfo,
    /// `GC.stat` right after the full GC.
    pub gc_stat: BTreeMap<String, serde_json::Value>,
    /// File name of the heap dump in the bundle.
    pub heap_dump: Option<String>,
    /// Every module extended with `FFI::Library`.
    pub ffi: Vec<FfiModule>,
    /// Classes whose methods call attached functions.
    pub wrappers: Vec<WrapperClass>,
    /// Instances created and release calls counted since the wrapper was discovered.
    pub lifecycle: Vec<Lifecycle>,
    /// C extensions the program loaded once the agent was running, with what each defined.
    pub extensions: Vec<Extension>,
    pub loaded_features: Vec<String>,
    /// The parent process when the agent started or re-armed after a fork.
    pub ppid: Option<u32>,
    /// Whether this process was forked from another one of the run (its agent re-armed).
    pub forked: bool,
    /// Under `--backend none` on Linux/glibc: what malloc held in use right after the full GC
    /// ([`MallocMeasure`]); absent elsewhere, or when it could not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malloc: Option<MallocMeasure>,
    /// How the agent kept the program's other Ruby threads still from the second GC to the end
    /// of the counts: "held" (the agent kept Ruby's GVL and wrote the dump into memory first)
    /// or "parked" (a TracePoint stopped the threads; used for dumps too big to hold in
    /// memory). Absent in sidecars of agents before it, or when the round never paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<String>,
    /// Seconds the agent spent on each step of this snapshot: "scan" (finding wrappers, when a
    /// method was defined since the last scan; the program runs meanwhile), then "gc", "malloc", "dump", "write" (a held round's dump written
    /// into its file through write(2)), "lsan", "counts" and "constants" (the program's threads
    /// are paused for these, from the second GC on), then "sidecar". Without Fiddle a held round's "write"
    /// comes after "counts", the program running again. A step skipped because an earlier one
    /// overran its budget has no entry.
    pub timings: BTreeMap<String, f64>,
    /// Problems inside the agent (e.g. "InstructionSequence.of failed for Foo#bar").
    pub errors: Vec<String>,
    /// The unfrozen Arrays and Hashes held by constants when the dump was taken (Ruby 2.7+ with
    /// Fiddle): the line of a growing container the dump has no allocation site for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constants: Vec<ConstantContainer>,
    /// Under `--backend lsan`: how the agent read creation sites ([`FrameSites`]). Absent
    /// elsewhere, and where Fiddle or `rb_profile_frames` is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_sites: Option<FrameSites>,
}

/// Creation sites under LSan, where caller_locations' mallocs each pay a full unwind: read
/// from `rb_profile_frames` and a table of frame paths (`fast`), or through caller_locations
/// (`slow`: a frame the table lacked, which every GC empties). `off` once stacks whose frames
/// and locations did not match (at least 32) outnumber an eighth of the fast reads:
/// caller_locations only from then on. Counts since the process started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrameSites {
    pub fast: u64,
    pub slow: u64,
    pub off: bool,
}

/// A container a constant held, as the agent listed it right after the dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConstantContainer {
    /// The object's address in the heap dump.
    pub address: u64,
    /// `AuditLog::ENTRIES`; a top-level constant by its own name.
    pub name: String,
    /// Where the constant was assigned (`Module#const_source_location`).
    pub file: String,
    pub line: u32,
}

/// Malloc's bytes in use as the agent measured them: how, and the tool's own output
/// (glibc's `malloc_info` XML, read by [`crate::native::malloc_info`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MallocMeasure {
    /// "glibc malloc_info(0, FILE*) after the round's full GC".
    pub how: String,
    pub xml: String,
    /// Bytes the agent had malloc'd for a held round's heap dump (requested, before malloc's
    /// own rounding) when it measured: not the program's, and not in the dump either (objspace
    /// leaves its output String out). 0 when the round parked the program.
    #[serde(skip_serializing_if = "is_zero")]
    pub held_buffer: u64,
    /// objspace's allocation records when the agent measured (counted under `--backend none`
    /// with its free hook off between phases), and malloc's bytes for each: leakhunt's own
    /// memory, in no Ruby object's memsize. 0 when not counted.
    #[serde(skip_serializing_if = "is_zero")]
    pub records: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub record_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RubyInfo {
    pub version: String,
    pub engine: String,
    pub platform: String,
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FfiModule {
    pub name: String,
    pub libraries: Vec<FfiLibrary>,
    pub functions: Vec<FfiFunction>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FfiLibrary {
    /// As given to `ffi_lib` (e.g. "libzmq.so.5", "zmq").
    pub name: String,
    /// Resolved path of the loaded library, when it could be found: by the agent from
    /// `/proc/self/maps` (Linux), else by leakhunt from the `leaks` report's Binary Images.
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FfiFunction {
    /// Ruby method name (`attach_function :ruby_name, :c_name, …`).
    pub name: String,
    /// C symbol.
    pub symbol: String,
    pub params: Vec<String>,
    pub returns: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodRole {
    Allocate,
    Release,
    #[default]
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WrapperClass {
    pub class: String,
    /// Where the class is defined (first method's source location).
    pub file: Option<String>,
    pub line: Option<u32>,
    pub methods: Vec<WrapperMethod>,
    /// Native memory is released by a finalizer (FFI::AutoPointer, ManagedStruct,
    /// ObjectSpace.define_finalizer): not a missing-release candidate.
    pub finalizer: bool,
    pub finalizer_detail: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WrapperMethod {
    pub name: String,
    /// A class method (`def self.x`).
    pub singleton: bool,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub calls: Vec<FfiCall>,
    pub role: MethodRole,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FfiCall {
    /// FFI module name (`LibZMQ`).
    pub module: String,
    /// C symbol called (`zmq_msg_close`).
    pub function: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lifecycle {
    pub class: String,
    pub created: u64,
    pub released: u64,
    /// The methods whose calls count as releases (`close`).
    pub release_methods: Vec<String>,
    /// Where instances were created, most first (first frame outside gems and stdlib).
    pub created_at: Vec<SiteCount>,
    /// Agent time at which counting started for this class.
    pub since: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiteCount {
    pub file: String,
    pub line: u32,
    pub count: u64,
    /// Release-method calls on instances created at this site. Present only when allocation
    /// tracing was on: the agent finds an instance's site through Ruby's allocation record.
    pub released: Option<u64>,
}

/// A C extension (`.so`, `.bundle`) and the classes and modules its code defined while it
/// was being required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Extension {
    /// The loaded file, as `$LOADED_FEATURES` names it.
    pub path: String,
    /// `"sqlite3 1.4.2"`, when a loaded gem holds the file.
    pub gem: Option<String>,
    pub modules: Vec<ExtensionModule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtensionModule {
    pub name: String,
    /// A class (instances can be made), not a module.
    pub class: bool,
    /// Its own methods written in C (private ones included: `initialize`).
    pub methods: Vec<String>,
    pub singleton_methods: Vec<String>,
    /// Methods that release what an instance holds (`close`, `finish`, …), own or inherited;
    /// the lifecycle of a class that has any is counted in [`Sidecar::lifecycle`].
    pub release_methods: Vec<String>,
    /// Calls of its C methods by call site (third-party extensions only).
    pub calls: Vec<MethodCalls>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodCalls {
    pub method: String,
    pub singleton: bool,
    /// Every call since the agent wrapped the method.
    pub count: u64,
    /// Past the first calls only one in several records its site: `called_at` counts those.
    pub sampled: bool,
    /// Where it was called from (first frame outside gems and Ruby's library), most first.
    pub called_at: Vec<SiteCount>,
}

/// One footprint sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FootprintSample {
    pub t: f64,
    pub bytes: u64,
}

impl Manifest {
    /// Reads `DIR/manifest.json`; a schema-1 manifest comes back in the schema-2 shape.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let mut m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(&path, Position::Line(e.line() as u64), e.to_string()))?;
        if m.leakhunt_bundle > MANIFEST_SCHEMA {
            return Err(Error::input(
                &path,
                Position::Whole,
                format!(
                    "bundle schema {} is newer than this leakhunt understands ({MANIFEST_SCHEMA}); upgrade leakhunt",
                    m.leakhunt_bundle
                ),
            ));
        }
        m.upgrade();
        Ok(m)
    }

    /// Schema 1 → 2: the one process (the manifest's `pid`) gets the top-level native logs,
    /// footprint and snapshots.
    fn upgrade(&mut self) {
        if self.leakhunt_bundle >= 2 {
            return;
        }
        let pid = self.pid.unwrap_or(0);
        for s in &mut self.snapshots {
            s.pid.get_or_insert(pid);
        }
        let taken = || self.snapshots.iter().filter(|s| s.taken()).map(|s| s.index);
        let (first_round, last_round) = (taken().min(), taken().max());
        if self.processes.is_empty() {
            self.processes.push(ProcessEntry {
                pid,
                command: self.command.clone(),
                role: ROLE_MAIN.to_owned(),
                ruby: self.ruby.clone(),
                first_round,
                last_round,
                native_logs: std::mem::take(&mut self.native_logs),
                footprint: self.footprint.take(),
                outcome: ProcessOutcome {
                    kind: self.outcome.kind.clone(),
                    detail: self.outcome.detail.clone(),
                },
                ..ProcessEntry::default()
            });
        }
    }

    /// The main process's entry.
    pub fn main_process(&self) -> Option<&ProcessEntry> {
        self.processes.iter().find(|p| p.role == ROLE_MAIN)
    }

    /// The snapshots of process `pid`, oldest first.
    pub fn snapshots_of(&self, pid: u32) -> impl Iterator<Item = &Snapshot> {
        self.snapshots.iter().filter(move |s| s.pid == Some(pid))
    }

    /// Whether the run traced allocation sites only in sampled windows (so a dump's per-site
    /// counts cover only the objects made while tracing was on). False for bundles older than
    /// sampling: they traced every allocation or none.
    pub fn alloc_sites_sampled(&self) -> bool {
        self.env.get(ALLOC_SITES_ENV).map(String::as_str) == Some(ALLOC_SITES_SAMPLED)
    }

    /// The processes that have at least one heap snapshot: the ones with evidence to read.
    pub fn examined(&self) -> impl Iterator<Item = &ProcessEntry> {
        self.processes.iter().filter(|p| p.first_round.is_some())
    }
    /// Writes `DIR/manifest.json` atomically (temp file + rename), mode 0600.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Run(format!("cannot encode manifest: {e}")))?;
        write_private_atomic(&dir.join(MANIFEST), &bytes)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The names of one process's files in the bundle: the main process keeps the names a
/// one-process bundle always had; every other one carries its pid, so that names stay plain
/// and never clash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFiles {
    /// "" for the main process, "-p4242" for the others.
    tag: String,
}

impl ProcessFiles {
    pub fn main() -> ProcessFiles {
        ProcessFiles { tag: String::new() }
    }

    pub fn of(pid: u32) -> ProcessFiles {
        ProcessFiles {
            tag: format!("-p{pid}"),
        }
    }

    /// `heap-003.json` / `heap-p4242-003.json` for round 3.
    pub fn heap(&self, round: u32) -> String {
        self.per_round("heap", round, "json")
    }

    /// The heap dump of `round` reduced to its summary (`--keep-dumps`).
    pub fn summary(&self, round: u32) -> String {
        self.per_round("summary", round, "json")
    }

    /// The agent's sidecar written with the heap dump of `round`.
    pub fn sidecar(&self, round: u32) -> String {
        self.per_round("agent", round, "json")
    }

    /// `/proc/PID/maps` at the moment of the check of `round`.
    pub fn maps(&self, round: u32) -> String {
        self.per_round("maps", round, "txt")
    }

    /// A native tool's report for `round` (leaks, vgdb).
    pub fn native(&self, round: u32) -> String {
        self.per_round("native", round, "txt")
    }

    /// A file of the whole process: `lsan.log` / `lsan-p4242.log`.
    pub fn whole(&self, stem: &str, ext: &str) -> String {
        format!("{stem}{}.{ext}", self.tag)
    }

    fn per_round(&self, stem: &str, round: u32, ext: &str) -> String {
        format!("{stem}{}-{round:03}.{ext}", self.tag)
    }
}

/// The path of a file the manifest names, when the name is a plain file name inside the bundle:
/// not empty, no `/` or `\`, not `.` or `..`, not absolute. Anything else (`../../etc/passwd`,
/// `/etc/shadow`) would have `analyze` read outside the bundle, so it is refused. The one place
/// that says which names a bundle may hold.
pub fn member_path(dir: &Path, name: &str) -> Option<PathBuf> {
    is_member_name(name).then(|| dir.join(name))
}

/// Whether `name` is a plain file name inside a bundle (see [`member_path`]).
pub fn is_member_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !Path::new(name).is_absolute()
}

/// Parses `footprint.tsv`; bad lines are skipped and counted into `diag`.
pub fn parse_footprint(bytes: &[u8], diag: &mut crate::diag::Diagnostics) -> Vec<FootprintSample> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let mut parts = text.split('\t');
        let t = parts.next().and_then(|s| s.trim().parse::<f64>().ok());
        let b = parts.next().and_then(|s| s.trim().parse::<u64>().ok());
        match (t, b) {
            (Some(t), Some(bytes)) => out.push(FootprintSample { t, bytes }),
            _ => diag.report(
                "footprint lines not understood",
                Position::Line(i as u64 + 1),
                || text.chars().take(60).collect(),
            ),
        }
    }
    out
}

/// Creates (or truncates) a file readable and writable by the owner only.
pub fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Writes a whole private file via a temporary name and a rename, so a reader never sees half.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    };
    let mut f = create_private(&tmp)?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Creates a directory only the owner can enter (0700).
pub fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn manifest_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            leakhunt_bundle: MANIFEST_SCHEMA,
            command: vec!["leak.rb".into()],
            snapshots: vec![Snapshot {
                index: 1,
                reason: "interval".into(),
                native: Some(NativeRef {
                    file: "lsan.log".into(),
                    start: Some(0),
                    end: Some(10),
                }),
                ..Snapshot::default()
            }],
            ..Manifest::default()
        };
        m.save(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(MANIFEST))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
    }

    #[test]
    fn a_schema_1_manifest_reads_as_one_main_process() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST),
            br#"{"leakhunt_bundle": 1, "command": ["leak.rb"], "pid": 4242,
                "snapshots": [
                  {"index": 1, "reason": "interval", "t": 1.0, "heap": "heap-001.json",
                   "native": {"file": "lsan.log", "start": 0, "end": 10}},
                  {"index": 2, "reason": "exit", "t": 2.0, "heap": "heap-002.json"}],
                "native_logs": ["lsan.log"], "footprint": "footprint.tsv",
                "outcome": {"kind": "exited", "code": 0, "detail": "exited with status 0"}}"#,
        )
        .unwrap();
        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.processes.len(), 1);
        let main = m.main_process().unwrap();
        assert_eq!(main.pid, 4242);
        assert_eq!(main.native_logs, ["lsan.log"]);
        assert_eq!(main.footprint.as_deref(), Some("footprint.tsv"));
        assert_eq!((main.first_round, main.last_round), (Some(1), Some(2)));
        assert_eq!(main.outcome.kind, "exited");
        assert_eq!(m.snapshots_of(4242).count(), 2);
        assert!(m.native_logs.is_empty() && m.footprint.is_none());
    }

    #[test]
    fn files_of_other_processes_carry_their_pid() {
        let main = ProcessFiles::main();
        let worker = ProcessFiles::of(4242);
        assert_eq!(main.heap(3), "heap-003.json");
        assert_eq!(worker.heap(3), "heap-p4242-003.json");
        assert_eq!(worker.sidecar(12), "agent-p4242-012.json");
        assert_eq!(worker.maps(1), "maps-p4242-001.txt");
        assert_eq!(worker.native(1), "native-p4242-001.txt");
        assert_eq!(main.whole("lsan", "log"), "lsan.log");
        assert_eq!(worker.whole("footprint", "tsv"), "footprint-p4242.tsv");
    }

    #[test]
    fn newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST), br#"{"leakhunt_bundle": 99}"#).unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("upgrade leakhunt"), "{err}");
    }

    #[test]
    fn footprint_lines_parse_and_bad_ones_count() {
        let mut d = crate::diag::Diagnostics::new("footprint.tsv");
        let s = parse_footprint(
            b"# leakhunt footprint 1\n0.25\t1048576\nbad\n0.5\t2097152\n",
            &mut d,
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].bytes, 2097152);
        assert_eq!(d.count_of("footprint lines not understood"), 1);
    }
}
