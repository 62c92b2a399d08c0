//! `leakhunt run`: start the program under a native backend with the Ruby agent injected, take
//! heap and native snapshots of every Ruby process of its tree at the same moments, and keep
//! everything in a bundle.
//!
//! Stage: first of the flow. This module is the orchestrator: it makes the private directory
//! (agent + socket, removed at the end) and the bundle (0700, files 0600), listens for the
//! agents, starts the target in its own process group (which gets the terminal for the run when
//! leakhunt has it: [`terminal`]), samples the footprint of each process, takes rounds on
//! schedule, on demand ([`control`]), at exit and on Ctrl-C ([`round`]: every live process at
//! once, each with the backend's native evidence right after its answer), and rewrites the
//! manifest after every step so that whatever happens leaves a valid bundle.
//!
//! Timeline of a run: each Ruby process's agent connects and says hello (the program's own
//! hello is its start for `--after`); processes the program forks say hello as they are
//! forked, and join the next round. The first round follows `after` later and each next one
//! `every` after the previous one finished (a snapshot freezes Ruby, and under valgrind it takes
//! seconds, so the program gets `every` of its own time between two). A process that ends by
//! itself says `exiting` from its at_exit hook and gets a final snapshot (the main process: a
//! final round of every process) and `bye`. With `--duration` the run ends on its own: a last
//! round, then SIGTERM to the program's group and SIGKILL after a grace period. Every wait has
//! a deadline; a target that does not answer or does not exit is reported in the manifest and
//! killed.

pub mod agent;
pub mod backend;
pub mod child;
pub mod clock;
pub mod compact;
pub mod control;
pub mod footprint;
pub mod knobs;
pub mod process;
pub mod round;
pub mod stale_sites;
pub mod terminal;

use crate::bundle::{self, Manifest, Outcome, Snapshot};
use crate::cli::{AllocSites, BackendChoice, RunArgs};
use crate::error::{Error, Result};
use agent::{AgentEvent, AgentHub, HubEvent, LinkId};
use backend::{Dirs, NativeBackend};
use child::{CaughtSignals, ChildGuard, Launch};
use control::{ControlSocket, RoundSignal};
use footprint::FootprintSampler;
use process::Tracked;
use round::Round;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What to run and how, from the command line.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub program: Vec<String>,
    pub ruby: Option<PathBuf>,
    pub backend: BackendChoice,
    pub snapshots: u32,
    pub every: Duration,
    pub after: Duration,
    /// End the run this long after the program started (a last round, then SIGTERM).
    pub duration: Option<Duration>,
    pub output: Option<PathBuf>,
    /// None: no allocation tracing.
    pub alloc_sites: Option<AllocSites>,
    /// Keep the dumps of this many newest rounds (besides the ones growth is judged from);
    /// every round keeps a summary (`--keep-dumps`).
    pub keep_dumps: Option<u32>,
}

impl RunConfig {
    pub fn from_args(args: &RunArgs) -> RunConfig {
        RunConfig {
            program: args.program.clone(),
            ruby: args.ruby.clone(),
            backend: args.backend,
            snapshots: args.snapshots,
            every: args.every,
            after: args.after,
            duration: args.duration,
            output: args.output.clone(),
            alloc_sites: (!args.no_alloc_sites).then_some(args.alloc_sites),
            keep_dumps: args.keep_dumps,
        }
    }
}

/// A finished run: where its bundle is and what its manifest says.
#[derive(Debug)]
pub struct Recorded {
    pub bundle: PathBuf,
    pub manifest: Manifest,
}

/// How long a last snapshot may take after Ctrl-C.
pub(crate) const INTERRUPT_SNAPSHOT: Duration = Duration::from_secs(15);
/// How long the program gets to end after the forwarded Ctrl-C before SIGTERM, then SIGKILL.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);
/// How long the program gets to stop after `--duration`'s SIGTERM before SIGKILL (servers
/// finish the requests under way first).
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Main-loop tick: how often the child, the signals and the schedule are looked at.
const TICK: Duration = Duration::from_millis(50);
/// Processes that came or went reach the manifest within this (rounds write it at once).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Processes that ended before any round, listed one by one in the manifest; the others are
/// only counted (a pool forking a child per job makes thousands).
const UNEXAMINED_LISTED: usize = 100;

/// Runs the program and writes the bundle. Errors before the program starts leave no bundle
/// behind; once it has started, every path ends with a valid manifest.
pub fn record(config: &RunConfig) -> Result<Recorded> {
    let bundle_dir = bundle_path(config.output.as_deref())?;
    let private = agent::private_dir()?;
    make_owner_only(private.path())?;
    let dirs = Dirs {
        bundle: bundle_dir.clone(),
        private: private.path().to_path_buf(),
    };
    let mut backend = backend::select(config.backend, &dirs)?;
    let private_dir = dirs.private.clone();
    let (argv, ruby) = resolve_program(config)?;
    if let Some(ruby) = &ruby {
        if backend.name() == "leaks" && crate::platform::is_system_protected(ruby) {
            return Err(Error::BackendUnavailable(format!(
                "{} is protected by System Integrity Protection: leaks cannot examine it; use a \
                 Homebrew, rbenv or asdf Ruby (--ruby PATH)",
                ruby.display()
            )));
        }
    }
    let agent_path = agent::install(private.path())?;
    let socket = private.path().join(agent::SOCKET_FILE);
    let hub = AgentHub::bind(&socket)?;

    let mut launch = Launch {
        argv,
        env: Default::default(),
    };
    // The at_exit hook waits for a whole final snapshot: the agent's part, then the native tool's.
    let exit_wait = backend.snapshot_deadline()
        + backend.native_deadline(backend.snapshot_deadline())
        + Duration::from_secs(10);
    launch.set_env(knobs::SOCKET, &socket.display().to_string(), None);
    launch.set_env(knobs::BUNDLE, &bundle_dir.display().to_string(), None);
    launch.set_env(
        knobs::ALLOC_SITES,
        match config.alloc_sites {
            None => "0",
            Some(AllocSites::All) => "1",
            Some(AllocSites::Sampled) => crate::bundle::ALLOC_SITES_SAMPLED,
        },
        None,
    );
    launch.set_env(knobs::BACKEND, backend.name(), None);
    launch.set_env(knobs::EXIT_WAIT, &exit_wait.as_secs().to_string(), None);
    launch.set_env(
        "RUBYOPT",
        &format!("-r{}", agent_path.display()),
        Some((" ", false)),
    );
    backend.prepare(&mut launch)?;
    let backend: Arc<dyn NativeBackend> = Arc::from(backend);

    create_bundle_dir(&bundle_dir)?;
    let mut manifest = initial_manifest(config, &launch, backend.as_ref(), ruby.as_deref());
    manifest.save(&bundle_dir)?;
    let control = match ControlSocket::bind(&bundle_dir) {
        Ok(c) => Some(c),
        Err(why) => {
            manifest.warnings.push(why);
            None
        }
    };
    if config.snapshots == 0 {
        eprintln!(
            "leakhunt: rounds on demand: `leakhunt snapshot {}` (or kill -USR1 {})",
            bundle_dir.display(),
            std::process::id()
        );
    }

    let signals = CaughtSignals::install();
    let round_signal = RoundSignal::install();
    let started = Instant::now();
    let child = match ChildGuard::spawn(&launch, terminal::Foreground::claim()) {
        Ok(c) => c,
        Err(e) => {
            manifest.outcome = Outcome {
                kind: "failed_to_start".into(),
                detail: e.to_string(),
                ..Outcome::default()
            };
            manifest.save(&bundle_dir)?;
            eprintln!(
                "leakhunt: bundle {} (its manifest records that the program did not start)",
                bundle_dir.display()
            );
            return Err(e);
        }
    };
    manifest.pid = Some(child.pid());
    let sampler = FootprintSampler::start(&bundle_dir, child.pid(), started)?;
    let mut session = Session {
        config,
        dirs,
        hub,
        backend,
        manifest,
        child,
        signals,
        round_signal,
        control,
        sampler,
        started,
        processes: Vec::new(),
        links: BTreeMap::new(),
        unseen: BTreeMap::new(),
        hello_at: None,
        main_exec: false,
        rounds: 0,
        round: None,
        ending: false,
        interrupted: false,
        snapshot_after_interrupt: false,
        stopped_after: None,
        killed_because: None,
        dirty: false,
        saved_at: Instant::now(),
        spinner: crate::progress::spinner("starting"),
        snapshot_deadline: knobs::seconds(knobs::SNAPSHOT_DEADLINE),
        exit_deadline: knobs::seconds(knobs::EXIT_DEADLINE),
        refused: None,
        room: compact::RoomCheck::default(),
        keeper: config.keep_dumps.map(compact::DumpKeeper::new),
        previous_dumps: matches!(config.alloc_sites, Some(AllocSites::Sampled))
            .then(|| stale_sites::StaleSites::with_warmup_dir(&private_dir)),
    };
    if std::env::var_os(knobs::TEST_DISK_FREE).is_some() {
        session.warn(format!(
            "{} is set: the free space of the bundle's disk is taken from it (a test setting)",
            knobs::TEST_DISK_FREE
        ));
    }
    let result = session.drive();
    let refused = session.refused.take();
    let recorded = session.finish(result);
    drop(private);
    if let (Some(why), Ok(recorded)) = (refused, &recorded) {
        eprintln!(
            "leakhunt: bundle {} (its manifest records why the run stopped)",
            recorded.bundle.display()
        );
        return Err(Error::BackendUnavailable(why));
    }
    recorded
}

/// The bundle directory to use: `-o DIR`, or a new `leakhunt-YYYYmmdd-HHMMSS` here.
fn bundle_path(output: Option<&Path>) -> Result<PathBuf> {
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    if let Some(dir) = output {
        let dir = cwd.join(dir);
        if dir.exists() {
            let empty = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .next()
                .is_none();
            if !empty || !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "{} exists and is not an empty directory: choose another -o",
                    dir.display()
                )));
            }
        }
        return Ok(dir);
    }
    let base = clock::bundle_name(SystemTime::now());
    let mut dir = cwd.join(&base);
    let mut n = 2;
    while dir.exists() {
        dir = cwd.join(format!("{base}-{n}"));
        n += 1;
    }
    Ok(dir)
}

fn create_bundle_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return make_owner_only(dir);
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    bundle::create_private_dir(dir)
}

fn make_owner_only(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir, e))
}

/// The command line to execute and, for `.rb` programs, the Ruby that runs them.
fn resolve_program(config: &RunConfig) -> Result<(Vec<String>, Option<PathBuf>)> {
    let first = config
        .program
        .first()
        .ok_or_else(|| Error::Usage("no program given".into()))?;
    if !first.ends_with(".rb") {
        if config.ruby.is_some() {
            eprintln!(
                "leakhunt: warning: --ruby applies to .rb programs; {first} runs as given (the agent is injected through RUBYOPT)"
            );
        }
        return Ok((config.program.clone(), None));
    }
    if !Path::new(first).is_file() {
        return Err(Error::Usage(format!("{first}: no such file")));
    }
    let ruby = match &config.ruby {
        Some(r) => crate::platform::find_in_path(&r.to_string_lossy())
            .ok_or_else(|| Error::Usage(format!("--ruby {}: not an executable", r.display())))?,
        None => crate::platform::find_in_path("ruby").ok_or_else(|| {
            Error::Run(
                "ruby was not found on PATH: install Ruby or pass --ruby PATH (leakhunt doctor \
                 checks the setup)"
                    .into(),
            )
        })?,
    };
    let mut argv = vec![ruby.display().to_string()];
    argv.extend(config.program.iter().cloned());
    Ok((argv, Some(ruby)))
}

fn initial_manifest(
    config: &RunConfig,
    launch: &Launch,
    backend: &dyn NativeBackend,
    ruby: Option<&Path>,
) -> Manifest {
    Manifest {
        leakhunt_bundle: bundle::MANIFEST_SCHEMA,
        leakhunt_version: env!("CARGO_PKG_VERSION").to_owned(),
        command: config.program.clone(),
        exec: launch.argv.clone(),
        cwd: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        env: launch.env.clone(),
        platform: bundle::Platform {
            os: crate::platform::OS_NAME.to_owned(),
            arch: crate::platform::arch().to_owned(),
            version: crate::platform::os_version(),
        },
        ruby: ruby.map(|r| r.display().to_string()),
        backend: backend.describe(),
        started_at: clock::rfc3339_utc(SystemTime::now()),
        outcome: Outcome {
            kind: "running".into(),
            detail: "the run has not finished (leakhunt itself was stopped?)".into(),
            ..Outcome::default()
        },
        ..Manifest::default()
    }
}

struct Session<'a> {
    config: &'a RunConfig,
    dirs: Dirs,
    hub: AgentHub,
    backend: Arc<dyn NativeBackend>,
    manifest: Manifest,
    child: ChildGuard,
    signals: CaughtSignals,
    round_signal: RoundSignal,
    control: Option<ControlSocket>,
    sampler: FootprintSampler,
    started: Instant,
    /// Every process that said hello, in that order.
    processes: Vec<Tracked>,
    /// Open connections → position in `processes`.
    links: BTreeMap<LinkId, usize>,
    /// Processes of the program's group seen without an agent, by pid.
    unseen: BTreeMap<u32, crate::platform::GroupMember>,
    /// When the main process said hello: the program's start for `--after`.
    hello_at: Option<Instant>,
    /// The main process exec'd its real program (`bundle exec`): `--after` and `--snapshots`
    /// count again from the new program's hello.
    main_exec: bool,
    /// The last round number given out.
    rounds: u32,
    /// The round under way, while one is.
    round: Option<Round>,
    /// The last round is taken: processes that announce their end get `bye` at once.
    ending: bool,
    interrupted: bool,
    /// A round went on after the first interrupt arrived: it stands as the last one.
    snapshot_after_interrupt: bool,
    /// Set when `--duration` ended the run.
    stopped_after: Option<Duration>,
    /// Set when leakhunt killed the target, with the reason.
    killed_because: Option<String>,
    /// Processes came or went since the manifest was written.
    dirty: bool,
    saved_at: Instant,
    spinner: indicatif::ProgressBar,
    snapshot_deadline: Option<Duration>,
    exit_deadline: Option<Duration>,
    /// Why the backend's tool may not examine the program, found when it said hello: the run
    /// stops (exit 3) rather than fail every snapshot.
    refused: Option<String>,
    /// What the last dumps of each process took, to tell whether the next round fits.
    room: compact::RoomCheck,
    /// `--keep-dumps`: which dumps stay once each round's summary is written.
    keeper: Option<compact::DumpKeeper>,
    /// Sampled allocation sites: each process's last dump, to drop the sites of the next one
    /// whose records outlived their objects (`stale_sites`).
    previous_dumps: Option<stale_sites::StaleSites>,
}

/// Which processes a round asks.
enum Whom {
    /// Every live process.
    All,
    /// One process (its final snapshot), by position.
    One(usize),
}

impl Session<'_> {
    fn snapshot_deadline(&self) -> Duration {
        self.snapshot_deadline
            .unwrap_or_else(|| self.backend.snapshot_deadline())
    }

    fn exit_deadline(&self) -> Duration {
        self.exit_deadline
            .unwrap_or_else(|| self.backend.exit_deadline())
    }

    fn main(&self) -> Option<&Tracked> {
        self.processes.iter().find(|p| p.is_main())
    }

    /// Whether the main process announced its end.
    fn main_exiting(&self) -> bool {
        self.main().is_some_and(|p| p.exiting.is_some())
    }

    /// Runs until the program has ended (or been ended). Returns its status.
    fn drive(&mut self) -> Option<ExitStatus> {
        let mut interval_rounds = 0u32;
        let mut next_due: Option<Instant> = None;
        loop {
            if let Some(status) = self.child.try_wait() {
                self.drain_events();
                return Some(status);
            }
            if let Some(why) = &self.refused {
                self.warn(why.clone());
                self.killed_because = Some(format!(
                    "the {} backend cannot examine it",
                    self.backend.name()
                ));
                return self.child.terminate(libc::SIGTERM, Duration::from_secs(2));
            }
            if self.signals.count() > 0 {
                return self.on_interrupt();
            }
            if let Some(d) = self.config.duration
                && self.started.elapsed() >= d
            {
                return self.on_duration(d);
            }
            if self.main_exiting() {
                return self.on_exit_announced();
            }
            self.poll(TICK);
            self.answer_exits();
            self.rounds_on_demand();
            self.save_if_due();
            if std::mem::take(&mut self.main_exec) {
                interval_rounds = 0;
                next_due = None;
            }
            if let Some(hello) = self.hello_at {
                let due = *next_due.get_or_insert(hello + self.config.after);
                if interval_rounds < self.config.snapshots
                    && Instant::now() >= due
                    && !self.main_exiting()
                    && self.refused.is_none()
                {
                    interval_rounds += 1;
                    self.take_round("interval", Whom::All, self.snapshot_deadline());
                    // `every` of the program's own time between rounds, however long one took.
                    next_due = Some(Instant::now() + self.config.every);
                }
            }
            self.show(if self.hello_at.is_none() {
                "starting"
            } else if interval_rounds < self.config.snapshots {
                "running"
            } else if self.config.duration.is_some() {
                "running until --duration is over (Ctrl-C to stop it now)"
            } else {
                "waiting for the program to end (Ctrl-C to stop it)"
            });
        }
    }

    fn show(&self, phase: &str) {
        let live = self
            .processes
            .iter()
            .filter(|p| p.link.is_some() && !p.gone)
            .count();
        self.spinner.set_message(format!(
            "{phase} · {} round(s) · {} process(es) · footprint {}",
            self.rounds,
            live,
            crate::format::human_bytes(self.sampler.latest() as f64)
        ));
    }

    /// Handles what the agents say for up to `wait`.
    fn poll(&mut self, wait: Duration) {
        for event in self.hub.poll(wait) {
            match event {
                HubEvent::Line(link, event) => self.on_event(link, event),
                HubEvent::Closed(link) => self.on_closed(link),
            }
        }
    }

    /// Picks up what the agents sent before the program ended (a late answer, `exiting`).
    fn drain_events(&mut self) {
        for _ in 0..8 {
            self.poll(Duration::from_millis(20));
        }
    }

    fn on_event(&mut self, link: LinkId, event: AgentEvent) {
        if let AgentEvent::Hello(hello) = event {
            self.on_hello(link, hello);
            return;
        }
        let Some(&at) = self.links.get(&link) else {
            // Anything before a hello is not from an agent of this protocol.
            if let AgentEvent::Unknown(line) = event {
                self.warn(format!("unexpected line from an agent: {line}"));
            }
            return;
        };
        let pid = self.processes[at].pid;
        let event = match self.round.as_mut() {
            Some(round) => match round.on_event(pid, event, &self.backend) {
                Some(other) => other,
                None => return,
            },
            None => event,
        };
        match event {
            AgentEvent::Hello(_) => {}
            AgentEvent::Exiting { detail } => {
                let p = &mut self.processes[at];
                p.exit_detail = Some(detail.clone());
                p.exiting = Some(detail);
            }
            AgentEvent::Done {
                index,
                heap,
                sidecar,
            } => self.late_answer(pid, index, heap, sidecar),
            AgentEvent::Failed { index, message } => {
                self.processes[at].owes = None;
                self.warn(format!("snapshot {index} of process {pid}: {message}"));
            }
            AgentEvent::Overran {
                index,
                step,
                budget_ms,
            } => {
                self.warn(format!(
                    "snapshot {index} of process {pid}: {}",
                    step.overran(budget_ms)
                ));
            }
            AgentEvent::Unknown(line) => {
                self.warn(format!("unexpected line from the agent of {pid}: {line}"))
            }
        }
    }

    /// An answer that came after its round's deadline: the files are there now, and the
    /// process is asked again from the next round on.
    fn late_answer(&mut self, pid: u32, index: u32, heap: String, sidecar: String) {
        if let Some(p) = self.processes.iter_mut().find(|p| p.pid == pid) {
            p.owes = None;
            p.last_round = Some(p.last_round.map_or(index, |r| r.max(index)));
        }
        if let Some(s) = self
            .manifest
            .snapshots
            .iter_mut()
            .find(|s| s.index == index && s.pid == Some(pid) && s.heap.is_none())
        {
            s.heap = Some(heap);
            s.sidecar = Some(sidecar);
            s.errors
                .push("the agent answered after the deadline; no native evidence".into());
            let mut warnings =
                compact::compress_heaps(&self.dirs.bundle, &mut [s], self.previous_dumps.as_mut());
            if let Some(keeper) = self.keeper.as_mut() {
                let files = self
                    .processes
                    .iter()
                    .find(|p| p.pid == pid)
                    .map(|p| p.files.clone());
                warnings.extend(compact::write_summaries(&self.dirs.bundle, &mut [s], |s| {
                    files.as_ref().map(|f| f.summary(s.index))
                }));
                keeper.note(&self.dirs.bundle, s);
            }
            for w in warnings {
                self.warn(w);
            }
            self.save();
        }
    }

    fn on_hello(&mut self, link: LinkId, hello: agent::Hello) {
        if hello.protocol != agent::PROTOCOL {
            self.warn(format!(
                "the agent of process {} speaks protocol {}, this leakhunt {}: results may be incomplete",
                hello.pid,
                hello.protocol,
                agent::PROTOCOL
            ));
        }
        // The same pid again: the process exec'd another Ruby program (`bundle exec`).
        let at = match self.processes.iter().position(|p| p.pid == hello.pid) {
            Some(at) => {
                if !hello.forked {
                    self.on_exec(at, &hello);
                }
                let p = &mut self.processes[at];
                p.link = Some(link);
                p.gone = false;
                p.owes = None;
                p.command = hello.command.clone();
                p.ruby = hello.ruby.clone();
                at
            }
            None => {
                let main = !hello.forked && self.main().is_none();
                self.processes.push(Tracked::new(&hello, link, main));
                self.processes.len() - 1
            }
        };
        self.links.insert(link, at);
        self.unseen.remove(&hello.pid);
        if let Some(previous) = self.previous_dumps.as_mut() {
            let parent = hello
                .gc_count_at_fork
                .filter(|_| hello.forked)
                .map(|gc_count| (hello.ppid, gc_count));
            previous.process_started(hello.pid, parent);
        }
        let p = &self.processes[at];
        let (pid, is_main, footprint) = (p.pid, p.is_main(), p.footprint_file());
        if is_main {
            self.hello_at.get_or_insert_with(Instant::now);
            self.manifest.pid = Some(pid);
            if !hello.ruby.is_empty() {
                self.manifest.ruby = Some(hello.ruby.clone());
            }
        }
        self.sampler.track(pid, &footprint);
        // The executable that said hello (after any shim or `bundle exec`): the main process's
        // refusal stops the run; another process's is warned about once.
        if let Err(why) = self.backend.examinable(pid) {
            if is_main {
                self.refused = Some(why);
            } else {
                self.warn(format!("process {pid}: {why}"));
            }
        }
        // Saved with the next round, or within a second: a pool forking a child per job must
        // not rewrite the manifest for every one.
        self.dirty = true;
    }

    /// Process `at` replaced its program by exec (its pid said hello again, as a started
    /// process): its later snapshots are of the new program, and the backend sets aside the
    /// native log the new program's runtime would overwrite; earlier snapshots follow it there.
    fn on_exec(&mut self, at: usize, hello: &agent::Hello) {
        let first_round = self.rounds + 1;
        let t = self.started.elapsed().as_secs_f64();
        let pid = hello.pid;
        let set_aside = self.backend.set_aside(pid, first_round);
        if let Some((from, to)) = &set_aside {
            for s in self
                .manifest
                .snapshots
                .iter_mut()
                .filter(|s| s.pid == Some(pid))
            {
                if let Some(native) = s.native.as_mut().filter(|n| &n.file == from) {
                    native.file = to.clone();
                }
            }
        }
        let p = &mut self.processes[at];
        let before = p.command.clone();
        let exec = p.exec.get_or_insert_with(|| bundle::ExecEntry {
            before,
            ..bundle::ExecEntry::default()
        });
        exec.t = t;
        exec.first_round = first_round;
        exec.logs.extend(set_aside.map(|(_, to)| to));
        if p.is_main() {
            self.hello_at = Some(Instant::now());
            self.main_exec = true;
        }
        self.show(&format!(
            "process {pid} exec'd {}: its snapshots from round {first_round} on are of that program",
            hello.command.join(" ")
        ));
    }

    fn on_closed(&mut self, link: LinkId) {
        let Some(at) = self.links.remove(&link) else {
            return;
        };
        let p = &mut self.processes[at];
        if p.link != Some(link) {
            return;
        }
        p.link = None;
        p.gone = true;
        let (pid, is_main, footprint) = (p.pid, p.is_main(), p.footprint_file());
        if let Some(previous) = self.previous_dumps.as_mut() {
            previous.process_ended(pid);
        }
        if let Some(round) = self.round.as_mut() {
            round.on_closed(pid);
        }
        if !is_main {
            self.sampler.untrack(&footprint);
        }
    }

    /// Processes other than the main one that announced their end: a final snapshot for one
    /// that has been in a round since its last one (unless the run is ending), then `bye`.
    fn answer_exits(&mut self) {
        for at in 0..self.processes.len() {
            let p = &self.processes[at];
            if p.exiting.is_none() || (p.is_main() && !self.ending) {
                continue;
            }
            let wants_final = !self.ending && p.last_round.is_some_and(|r| r < self.rounds);
            if wants_final {
                self.take_round("exit", Whom::One(at), self.snapshot_deadline());
            }
            self.say_bye(at);
        }
    }

    /// Rounds asked for from another terminal (`leakhunt snapshot`, SIGUSR1).
    fn rounds_on_demand(&mut self) {
        let requests = self
            .control
            .as_ref()
            .map(ControlSocket::requests)
            .unwrap_or_default();
        let signalled = self.round_signal.take();
        if requests.is_empty() && !signalled {
            return;
        }
        let answer = match self.take_round("request", Whom::All, self.snapshot_deadline()) {
            Some((index, asked, taken)) => format!("ok {index} {asked} {taken}"),
            None => "error no process to examine: no agent is connected (yet)".to_owned(),
        };
        for r in requests {
            r.answer(&answer);
        }
    }

    /// Asks the processes `whom` for a snapshot, waits for their answers within `deadline`, has
    /// the backend take each one's native evidence as it answers, and records the snapshots.
    /// Returns (round, processes asked, snapshots taken), or `None` when no process could be
    /// asked.
    fn take_round(
        &mut self,
        reason: &str,
        whom: Whom,
        deadline: Duration,
    ) -> Option<(u32, usize, usize)> {
        let targets: Vec<usize> = match whom {
            Whom::All => (0..self.processes.len())
                .filter(|&i| self.processes[i].askable())
                .collect(),
            Whom::One(at) => vec![at]
                .into_iter()
                .filter(|&i| self.processes[i].askable())
                .collect(),
        };
        self.note_unseen();
        if targets.is_empty() {
            return None;
        }
        let pids: Vec<u32> = targets.iter().map(|&at| self.processes[at].pid).collect();
        let needs = self.room.needs(&pids, crate::platform::footprint_bytes);
        if let Some(free) = compact::disk_free(&self.dirs.bundle)
            && let Some(skipped) = compact::RoomCheck::refusal(reason, free, needs)
        {
            self.warn(skipped);
            return None;
        }
        self.rounds += 1;
        let index = self.rounds;
        self.show(&format!(
            "round {index} ({reason}) of {} process(es)",
            targets.len()
        ));
        let t = self.started.elapsed().as_secs_f64();
        let mut round = Round::new(index, Instant::now() + deadline);
        for &at in &targets {
            let p = &self.processes[at];
            let (pid, files, link) = (p.pid, p.files.clone(), p.link);
            let mark = self.backend.before_snapshot(pid);
            let mut snapshot = Snapshot {
                index,
                reason: reason.to_owned(),
                t,
                ..Snapshot::default()
            };
            // The agent splits the deadline between its steps and never keeps the program
            // parked past it.
            let request = format!(
                "snapshot {index} {reason} {:.1} {} {}",
                deadline.as_secs_f64(),
                files.heap(index),
                files.sidecar(index)
            );
            let sent = match link {
                Some(link) => self.hub.send(link, &request),
                None => Err(Error::Run("the agent is not connected".into())),
            };
            if let Err(e) = sent {
                snapshot.errors.push(e.to_string());
            }
            round.ask(pid, files, mark, snapshot);
        }
        self.round = Some(round);
        let why = self.wait_for_round(deadline);
        let round = self.round.take()?;
        let asked = round.asked();
        let (mut snapshots, silent) = round.close(&why);
        self.room.note_dumps(&self.dirs.bundle, &snapshots);
        if snapshots.iter().any(|s| s.taken()) {
            self.show(&format!("round {index}: compressing the heap dumps"));
            let mut refs: Vec<&mut Snapshot> = snapshots.iter_mut().collect();
            let mut warnings =
                compact::compress_heaps(&self.dirs.bundle, &mut refs, self.previous_dumps.as_mut());
            if let Some(keeper) = self.keeper.as_mut() {
                let files: BTreeMap<u32, bundle::ProcessFiles> = self
                    .processes
                    .iter()
                    .map(|p| (p.pid, p.files.clone()))
                    .collect();
                warnings.extend(compact::write_summaries(
                    &self.dirs.bundle,
                    &mut refs,
                    |s| Some(files.get(&s.pid?)?.summary(s.index)),
                ));
                for s in &refs {
                    keeper.note(&self.dirs.bundle, s);
                }
            }
            for w in warnings {
                self.warn(w);
            }
        }
        for pid in silent {
            if let Some(p) = self.processes.iter_mut().find(|p| p.pid == pid) {
                p.owes = Some(index);
            }
        }
        let mut taken = 0;
        for snapshot in snapshots {
            if snapshot.taken() {
                taken += 1;
                if let Some(p) = self
                    .processes
                    .iter_mut()
                    .find(|p| Some(p.pid) == snapshot.pid)
                {
                    p.last_round = Some(index);
                }
            }
            let is_main = self.main().map(|m| m.pid) == snapshot.pid;
            if let Some(line) = snapshot.warning(!is_main) {
                self.warn(line);
            }
            self.manifest.snapshots.push(snapshot);
        }
        self.prune_dumps(&pids);
        self.update_processes();
        self.save();
        Some((index, asked, taken))
    }

    /// `--keep-dumps`: removes the dumps of processes `pids` that growth analysis no longer
    /// needs (their summaries stand in for them).
    fn prune_dumps(&mut self, pids: &[u32]) {
        let Some(keeper) = &self.keeper else {
            return;
        };
        let mut warnings = Vec::new();
        for &pid in pids {
            let from_round = self
                .processes
                .iter()
                .find(|p| p.pid == pid)
                .and_then(|p| p.exec.as_ref())
                .map_or(0, |e| e.first_round);
            warnings.extend(keeper.prune(
                &self.dirs.bundle,
                &mut self.manifest.snapshots,
                pid,
                from_round,
            ));
        }
        for w in warnings {
            self.warn(w);
        }
    }

    /// Waits for the round under way until every process answered and its capture is done,
    /// or the deadline. Returns what to say of the processes that did not answer.
    fn wait_for_round(&mut self, deadline: Duration) -> String {
        let signals_before = self.signals.count();
        let mut until = Instant::now() + deadline;
        loop {
            match self.signals.count() {
                // A first interrupt lets the round under way finish, briefly: it is the last
                // one. A second stops now.
                n if n > signals_before && n >= 2 => return "interrupted".into(),
                n if n > signals_before => {
                    until = until.min(Instant::now() + INTERRUPT_SNAPSHOT);
                    if let Some(round) = self.round.as_mut() {
                        round.shorten(until);
                    }
                    self.snapshot_after_interrupt = true;
                }
                _ => {}
            }
            self.poll(TICK);
            let Some(round) = self.round.as_mut() else {
                return String::new();
            };
            round.collect_captures();
            if round.finished() {
                return String::new();
            }
            if round.answered() {
                // Captures finish within their own deadlines.
                continue;
            }
            if self.child.try_wait().is_some() {
                // Answers may still be in the sockets.
                self.drain_events();
                return "the program ended during the snapshot".into();
            }
            if Instant::now() >= until {
                return format!(
                    "the agent did not answer within {} s (the process may be stuck, e.g. in a \
                     finalizer run by the snapshot's GC); set {} to wait longer",
                    deadline.as_secs(),
                    knobs::SNAPSHOT_DEADLINE
                );
            }
        }
    }

    /// Notes the processes of the program's group that have not said hello (listed in the
    /// manifest, never waited for).
    fn note_unseen(&mut self) {
        let sentinel = terminal::sentinel_pid();
        for member in crate::platform::group_members(self.child.pid()) {
            if Some(member.pid) == sentinel || self.processes.iter().any(|p| p.pid == member.pid) {
                continue;
            }
            self.unseen.entry(member.pid).or_insert(member);
        }
    }

    /// The main process announced its end: a final round of every live process, `bye`, then
    /// it must exit within the deadline.
    fn on_exit_announced(&mut self) -> Option<ExitStatus> {
        self.take_round("exit", Whom::All, self.snapshot_deadline());
        self.ending = true;
        self.answer_exits();
        self.show("waiting for the program to exit");
        let limit = self.exit_deadline();
        if let Some(status) = self.wait_answering(limit) {
            return Some(status);
        }
        self.killed_because = Some(format!(
            "still running {} s after its final snapshot (hung at exit? a finalizer blocking in a \
             C library, such as ZMQ::Context's zmq_ctx_term with sockets open, does this)",
            limit.as_secs()
        ));
        self.child.terminate(libc::SIGTERM, Duration::from_secs(2))
    }

    /// `--duration` is over: a last round, then SIGTERM to the program's group and SIGKILL after
    /// a grace period.
    fn on_duration(&mut self, duration: Duration) -> Option<ExitStatus> {
        self.stopped_after = Some(duration);
        if self.hello_at.is_some() {
            self.take_round("duration", Whom::All, self.snapshot_deadline());
        }
        self.ending = true;
        self.answer_exits();
        self.show("stopping the program (--duration is over)");
        self.child.signal_group(libc::SIGTERM);
        if let Some(status) = self.wait_answering(STOP_GRACE) {
            return Some(status);
        }
        self.child.terminate(libc::SIGKILL, Duration::ZERO)
    }

    /// Ctrl-C (or SIGTERM/SIGHUP to leakhunt): a brief last round, the signal forwarded to the
    /// program, a short wait, then SIGTERM and SIGKILL. A second signal skips the waits.
    ///
    /// When the program's group holds the terminal, Ctrl-C reaches the program directly and
    /// leakhunt hears of it from the sentinel ([`terminal`]): it is not forwarded again (a second
    /// SIGINT would cut short the program's own at_exit work, the agent's last snapshot
    /// included). A round under way when the signal came is the last one.
    fn on_interrupt(&mut self) -> Option<ExitStatus> {
        self.interrupted = true;
        let signal = self.signals.last();
        let from_terminal = self.signals.last_from_terminal();
        let name = crate::platform::signal_name(signal).unwrap_or("a signal");
        eprintln!(
            "\nleakhunt: {name}: taking a last snapshot, then stopping the program (again to stop now)"
        );
        if self.hello_at.is_some() && self.signals.count() == 1 && !self.snapshot_after_interrupt {
            let deadline = self.snapshot_deadline().min(INTERRUPT_SNAPSHOT);
            self.take_round("interrupt", Whom::All, deadline);
        }
        self.ending = true;
        self.answer_exits();
        if !from_terminal {
            self.child.signal_group(signal);
        }
        let grace = if self.signals.count() > 1 {
            Duration::ZERO
        } else {
            INTERRUPT_GRACE
        };
        if let Some(status) = self.wait_answering(grace) {
            return Some(status);
        }
        self.child.terminate(libc::SIGTERM, Duration::from_secs(2))
    }

    /// Waits for the program to end, answering `bye` to every process that announces its end.
    fn wait_answering(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        let signals_before = self.signals.count();
        loop {
            if let Some(status) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until || self.signals.count() > signals_before {
                return None;
            }
            self.poll(TICK);
            self.answer_exits();
        }
    }

    fn say_bye(&mut self, at: usize) {
        let p = &mut self.processes[at];
        p.exiting = None;
        if let Some(link) = p.link {
            let _ = self.hub.send(link, "bye");
        }
    }

    fn warn(&mut self, message: String) {
        self.spinner
            .suspend(|| eprintln!("leakhunt: warning: {message}"));
        self.manifest.warnings.push(message);
    }

    /// The manifest's `processes`: every process with an agent (the main one first), then
    /// those of the program's group that never said hello.
    fn update_processes(&mut self) {
        let mut entries: Vec<bundle::ProcessEntry> = Vec::new();
        let mut order: Vec<&Tracked> = self.processes.iter().collect();
        order.sort_by_key(|p| !p.is_main());
        let mut unexamined = 0usize;
        self.manifest.unlisted_processes = 0;
        for p in order {
            if !p.is_main() && p.gone && p.last_round.is_none() {
                unexamined += 1;
                if unexamined > UNEXAMINED_LISTED {
                    self.manifest.unlisted_processes += 1;
                    continue;
                }
            }
            let mut entry = p.entry();
            let rounds: Vec<u32> = self
                .manifest
                .snapshots_of(p.pid)
                .filter(|s| s.taken())
                .map(|s| s.index)
                .collect();
            entry.first_round = rounds.iter().min().copied();
            entry.last_round = rounds.iter().max().copied();
            // Files the backend already gave this process (kept from an earlier save).
            if let Some(old) = self.manifest.processes.iter().find(|e| e.pid == p.pid) {
                entry.native_logs = old.native_logs.clone();
                entry.footprint = old.footprint.clone();
            }
            if p.is_main() {
                entry.outcome = bundle::ProcessOutcome {
                    kind: self.manifest.outcome.kind.clone(),
                    detail: self.manifest.outcome.detail.clone(),
                };
            }
            entries.push(entry);
        }
        entries.extend(self.unseen.values().map(process::unseen_entry));
        self.manifest.processes = entries;
    }

    /// Writes the manifest when processes came or went since it was last written, at most
    /// once a [`SAVE_EVERY`].
    fn save_if_due(&mut self) {
        if self.dirty && self.saved_at.elapsed() >= SAVE_EVERY {
            self.update_processes();
            self.save();
        }
    }

    /// Writes the manifest; a failure to write is reported once, never fatal mid-run.
    fn save(&mut self) {
        self.dirty = false;
        self.saved_at = Instant::now();
        self.manifest.duration_seconds = self.started.elapsed().as_secs_f64();
        fix_modes(&self.dirs.bundle);
        if let Err(e) = self.manifest.save(&self.dirs.bundle) {
            self.spinner
                .suspend(|| eprintln!("leakhunt: warning: cannot write the manifest: {e}"));
        }
    }

    /// Ends the run: the group is gone, the backend's logs are in place, the outcome is written.
    fn finish(mut self, status: Option<ExitStatus>) -> Result<Recorded> {
        // No more rounds on demand: the socket leaves the bundle.
        self.control = None;
        let status = status.or_else(|| self.child.terminate(libc::SIGKILL, Duration::ZERO));
        self.note_unseen();
        self.child.reap_group();
        self.drain_events();
        let samples = self.sampler.stop();
        self.spinner.finish_and_clear();
        self.manifest.outcome = self.outcome(status);
        self.update_processes();
        let mut warnings = Vec::new();
        for entry in &mut self.manifest.processes {
            let files = if entry.role == bundle::ROLE_MAIN {
                bundle::ProcessFiles::main()
            } else {
                bundle::ProcessFiles::of(entry.pid)
            };
            let finish = self.backend.finish(entry.pid, &files);
            for (from, to) in &finish.renamed {
                for s in self
                    .manifest
                    .snapshots
                    .iter_mut()
                    .filter(|s| s.pid == Some(entry.pid))
                {
                    if let Some(native) = s.native.as_mut().filter(|n| &n.file == from) {
                        native.file = to.clone();
                    }
                }
            }
            entry.native_logs = finish.logs;
            warnings.extend(finish.warnings);
            let footprint = if entry.role == bundle::ROLE_MAIN {
                footprint::FILE.to_owned()
            } else {
                files.whole("footprint", "tsv")
            };
            entry.footprint = samples
                .get(&footprint)
                .is_some_and(|&n| n > 0)
                .then_some(footprint);
        }
        for w in warnings {
            self.warn(w);
        }
        // A footprint file whose process never said hello as the main one (a wrapper that
        // ran no Ruby) holds samples of the wrapper: it stays, named by no entry.
        if self.hello_at.is_none() {
            self.warn(
                "the Ruby agent never answered, so there are no heap snapshots: is the program a \
                 Ruby program that honours RUBYOPT?"
                    .into(),
            );
        }
        self.save();
        Ok(Recorded {
            bundle: self.dirs.bundle.clone(),
            manifest: self.manifest.clone(),
        })
    }

    fn outcome(&self, status: Option<ExitStatus>) -> Outcome {
        let (code, signal) = status.map(child::describe_status).unwrap_or((None, None));
        let signal_name = signal
            .and_then(crate::platform::signal_name)
            .map(str::to_owned);
        let exception = self
            .main()
            .and_then(|m| m.exit_detail.as_deref())
            .and_then(|d| d.strip_prefix("exception "))
            .map(str::to_owned);
        let raised = exception
            .as_deref()
            .map(|class| format!(" (uncaught {class})"))
            .unwrap_or_default();
        let how = match (code, &signal_name, signal) {
            (Some(c), _, _) => format!("exited with status {c}{raised}"),
            (_, Some(n), _) => format!("killed by {n}"),
            (_, None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended in an unknown way".to_owned(),
        };
        let taken = self
            .manifest
            .snapshots
            .iter()
            .filter(|s| s.taken())
            .map(|s| s.index)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let (kind, detail) = if let Some(why) = &self.killed_because {
            ("killed", format!("killed by leakhunt: {why}; {how}"))
        } else if self.interrupted || self.signals.count() > 0 {
            let name = crate::platform::signal_name(self.signals.last()).unwrap_or("a signal");
            (
                "interrupted",
                format!("interrupted ({name}) after {taken} round(s); the program {how}"),
            )
        } else if let Some(d) = self.stopped_after {
            (
                "stopped",
                format!(
                    "stopped by leakhunt after --duration {} (SIGTERM) and {taken} round(s); the program {how}",
                    human_duration(d)
                ),
            )
        } else if code.is_some() {
            ("exited", format!("{how} after {taken} round(s)"))
        } else if signal.is_some() {
            ("signaled", format!("{how} after {taken} round(s)"))
        } else {
            ("killed", how)
        };
        Outcome {
            kind: kind.to_owned(),
            code,
            signal,
            signal_name,
            detail,
            exception,
        }
    }
}

/// `90s`, `1.5s`, `10m`: a duration as the user would have typed it.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{secs}s")
    }
}

/// Makes every file of the bundle 0600 (tools like LSan and valgrind create theirs 0644).
fn fix_modes(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && meta.permissions().mode() & 0o777 != 0o600 {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_typed() {
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(600)), "10m");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
    }
}
