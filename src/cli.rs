//! The command line (clap). One struct per subcommand; `cmd::dispatch` runs them.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "leakhunt",
    version,
    about = "Find what leaks in programs that mix Ruby objects and native memory",
    long_about = "Find what leaks in programs that mix Ruby objects and native memory.\n\n\
        `leakhunt run prog.rb ARGS…` runs a program with native stack logging and a heap-snapshot \
        agent, then says what leaks, why, and what to change. The other commands analyze files you \
        already have: CRuby ObjectSpace.dump_all dumps, Rubinius RBXHEAPDUMP dumps, macOS `leaks` \
        output, LeakSanitizer logs and valgrind XML.",
    after_help = "Exit codes: 0 nothing found (or success), 1 findings at or above --fail-on, \
        2 usage or input error, 3 the chosen backend is unavailable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a program under native leak detection with heap snapshots, then report.
    Run(RunArgs),
    /// Report on a bundle from `run`, or on any mix of dumps and native reports.
    Analyze(AnalyzeArgs),
    /// Class histogram of a heap dump, or the difference between two (histo.rb format).
    Histo(HistoArgs),
    /// Objects present in B but not in A (and, with C, still alive in C), by allocation site.
    Diff(DiffArgs),
    /// Why objects are alive: shortest paths from GC roots.
    Retainers(RetainersArgs),
    /// Native leak sites from `leaks`, LeakSanitizer or valgrind reports, and their growth.
    Leaks(LeaksArgs),
    /// Check this machine for what `run` needs and say what to fix.
    Doctor(DoctorArgs),
    /// Take a round now in a running `leakhunt run -o BUNDLE` (from another terminal).
    Snapshot(SnapshotArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum BackendChoice {
    /// `leaks` on macOS, `lsan` on Linux.
    #[default]
    Auto,
    Leaks,
    Lsan,
    Valgrind,
    /// Heap snapshots only.
    None,
}

/// Which allocations the agent traces for file:line sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AllocSites {
    /// While the program loads its code (until its loading settles, or the first snapshot), then
    /// in short windows and during snapshots.
    #[default]
    Sampled,
    /// Every allocation, for the whole run.
    All,
}

pub use crate::report::{FailOn, ReportFormat};

// The report's own choices, offered on the command line (the report layer knows no clap).
impl ValueEnum for ReportFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[ReportFormat::Text, ReportFormat::Json, ReportFormat::Html]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            ReportFormat::Text => "text",
            ReportFormat::Json => "json",
            ReportFormat::Html => "html",
        }))
    }
}

impl ValueEnum for FailOn {
    fn value_variants<'a>() -> &'a [Self] {
        &[FailOn::Leak, FailOn::High, FailOn::Never]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            FailOn::Leak => PossibleValue::new("leak").help(
                "Any leak finding (Ruby retention, missing release, native leak without owner)",
            ),
            FailOn::High => PossibleValue::new("high").help("Only findings of high confidence"),
            FailOn::Never => PossibleValue::new("never").help("Never: exit 0 whatever is found"),
        })
    }
}

#[derive(Debug, Args)]
pub struct HistoArgs {
    /// A heap dump (CRuby or Rubinius, detected by content; .gz accepted).
    pub dump: PathBuf,
    /// A later dump: print AFTER − DUMP by class, histo.rb's diff semantics.
    pub after: Option<PathBuf>,
    /// In a diff, leave out classes that vanished entirely, exactly like histo.rb.
    #[arg(long)]
    pub histo_rb: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The baseline dump.
    pub a: PathBuf,
    /// The later dump: objects in B but not in A are "allocated".
    pub b: PathBuf,
    /// An even later dump: only objects of B-not-A still alive here ("retained").
    pub c: Option<PathBuf>,
    /// How many allocation sites to print.
    #[arg(long, default_value_t = 50)]
    pub top: usize,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["class", "address"])))]
pub struct RetainersArgs {
    /// A CRuby heap dump.
    pub dump: PathBuf,
    /// Explain every instance of this class (paths grouped).
    #[arg(long)]
    pub class: Option<String>,
    /// Explain one object.
    #[arg(long)]
    pub address: Option<String>,
    /// How many path groups to print.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct LeaksArgs {
    /// Native reports, oldest first; with two or more, growth is shown.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// /proc/PID/maps text, to place addresses of libraries unloaded before the report.
    #[arg(long = "maps")]
    pub maps: Vec<PathBuf>,
    /// How many sites to print.
    #[arg(long, default_value_t = 30)]
    pub top: usize,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Rounds of heap and native snapshots (of every process) to take while the program runs;
    /// a last one is taken at exit. 0: rounds on demand only (`leakhunt snapshot BUNDLE`).
    #[arg(long, default_value_t = 3)]
    pub snapshots: u32,
    /// Time between snapshots, e.g. 2s, 500ms, 1m.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub every: std::time::Duration,
    /// Warm-up before the first snapshot.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub after: std::time::Duration,
    /// End the run this long after the program started: a last round, then SIGTERM to the
    /// program (SIGKILL after a grace period). For servers, which never end by themselves.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    #[arg(long, value_enum, default_value_t)]
    pub backend: BackendChoice,
    /// Bundle directory (default: a new leakhunt-YYYYmmdd-HHMMSS directory here).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Ruby interpreter for .rb programs (default: `ruby` on PATH).
    #[arg(long)]
    pub ruby: Option<PathBuf>,
    /// Turn off allocation tracing (faster, but findings lose their file:line).
    #[arg(long, conflicts_with = "alloc_sites")]
    pub no_alloc_sites: bool,
    /// Which allocations get a file:line: those made while the program loads its code (until its
    /// loading settles, or the first snapshot), in short windows afterwards and during snapshots
    /// (`sampled`, the default: objects made outside them have no site), or every one (`all`:
    /// several times the CPU of allocation-heavy programs).
    #[arg(long, value_enum, default_value_t)]
    pub alloc_sites: AllocSites,
    /// Long runs: keep the heap dumps of the newest N rounds (and the ones growth is judged
    /// from) and remove the others once each round's summary is written; every round still
    /// counts in the report.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_dumps: Option<u32>,
    /// Report format printed at the end.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
    /// Write the report here instead of stdout.
    #[arg(long = "report")]
    pub report: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub fail_on: FailOn,
    /// Show string contents from dumps in reports (redacted by default).
    #[arg(long)]
    pub include_strings: bool,
    /// The program and its arguments (`leak.rb ARGS…`, or any command that runs ruby).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub program: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A bundle directory, or files of any supported kind (detected by content).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
    /// Write the report here instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub fail_on: FailOn,
    /// Show string contents from dumps in reports (redacted by default).
    #[arg(long)]
    pub include_strings: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The bundle directory of the running `leakhunt run` (its `-o`).
    pub bundle: PathBuf,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check for this backend only.
    #[arg(long, value_enum, default_value_t)]
    pub backend: BackendChoice,
    /// Ruby interpreter to check (default: `ruby` on PATH).
    #[arg(long)]
    pub ruby: Option<PathBuf>,
}

/// `250ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 2s, 1m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}` is not a duration (try 500ms, 2s, 1m)"));
    }
    std::time::Duration::try_from_secs_f64(v * scale)
        .map_err(|_| format!("`{s}` is too long a duration (try 500ms, 2s, 1m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        // Too large for a Duration: refused, not a panic.
        assert!(parse_duration("1e300s").is_err());
        assert!(parse_duration("1e307h").is_err());
    }

    #[test]
    fn run_takes_program_args_verbatim() {
        let cli = Cli::try_parse_from([
            "leakhunt",
            "run",
            "--snapshots",
            "2",
            "leak.rb",
            "tcp://127.0.0.1:5549",
            "-x",
        ])
        .unwrap();
        match cli.command {
            Command::Run(r) => {
                assert_eq!(r.snapshots, 2);
                assert_eq!(r.program, ["leak.rb", "tcp://127.0.0.1:5549", "-x"]);
            }
            _ => panic!("not run"),
        }
    }
}
