//! `leakhunt run`: start the program under a native backend with the Ruby agent injected, take
//! heap and native snapshots at the same moments, and keep everything in a bundle.
//!
//! Stage: first of the flow. This module is the orchestrator: it makes the private directory
//! (agent + socket, removed at the end) and the bundle (0700, files 0600), starts the target in
//! its own process group (which gets the terminal for the run when leakhunt has it: [`terminal`]),
//! samples its footprint, asks the agent for snapshots on schedule (and at
//! exit, and on Ctrl-C), has the backend take the native evidence right after each one, and
//! rewrites the manifest after every step so that whatever happens leaves a valid bundle.
//!
//! Timeline of a run: the agent says hello when leakhunt connects (that is the program's start
//! for `--after`); the first snapshot follows `after` later and each next one `every` after the
//! previous one finished (a snapshot freezes Ruby, and under valgrind it takes seconds, so the
//! program gets `every` of its own time between two). When the program ends by itself the
//! agent's at_exit hook says `exiting`, gets a final snapshot and `bye`. Every wait has a deadline;
//! a target that does not answer or does not exit is reported in the manifest and killed.

pub mod agent;
pub mod backend;
pub mod child;
pub mod clock;
pub mod footprint;
pub mod knobs;
pub mod terminal;

use crate::bundle::{self, Manifest, Outcome, Snapshot};
use crate::cli::{BackendChoice, RunArgs};
use crate::error::{Error, Result};
use agent::{AgentEvent, AgentLink, LinkState};
use backend::{Dirs, NativeBackend};
use child::{CaughtSignals, ChildGuard, Launch};
use footprint::FootprintSampler;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
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
    pub output: Option<PathBuf>,
    pub alloc_sites: bool,
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
            output: args.output.clone(),
            alloc_sites: !args.no_alloc_sites,
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
/// Main-loop tick: how often the child, the signals and the schedule are looked at.
const TICK: Duration = Duration::from_millis(50);

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
        if config.alloc_sites { "1" } else { "0" },
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

    create_bundle_dir(&bundle_dir)?;
    let mut manifest = initial_manifest(config, &launch, backend.as_ref(), ruby.as_deref());
    manifest.save(&bundle_dir)?;

    let signals = CaughtSignals::install();
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
        socket,
        backend,
        manifest,
        child,
        signals,
        sampler,
        started,
        link: None,
        agent_pid: None,
        hello_at: None,
        exiting: None,
        exit_detail: None,
        interrupted: false,
        snapshot_after_interrupt: false,
        killed_because: None,
        spinner: crate::progress::spinner("starting"),
        snapshot_deadline: knobs::seconds(knobs::SNAPSHOT_DEADLINE),
        exit_deadline: knobs::seconds(knobs::EXIT_DEADLINE),
        refused: None,
    };
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

/// Why a snapshot request ended without an answer.
enum Unanswered {
    /// The agent answered with an error (already recorded).
    Failed,
    Timeout,
    ConnectionClosed,
    ProgramEnded,
    Interrupted,
}

struct Session<'a> {
    config: &'a RunConfig,
    dirs: Dirs,
    socket: PathBuf,
    backend: Box<dyn NativeBackend>,
    manifest: Manifest,
    child: ChildGuard,
    signals: CaughtSignals,
    sampler: FootprintSampler,
    started: Instant,
    link: Option<AgentLink>,
    agent_pid: Option<u32>,
    hello_at: Option<Instant>,
    /// The agent's at_exit hook has announced the end (detail as sent).
    exiting: Option<String>,
    /// How the program said it was ending ("end", "exit 3", "exception RuntimeError", …).
    exit_detail: Option<String>,
    interrupted: bool,
    /// A snapshot went on after the first interrupt arrived: it stands as the last one.
    snapshot_after_interrupt: bool,
    /// Set when leakhunt killed the target, with the reason.
    killed_because: Option<String>,
    spinner: indicatif::ProgressBar,
    snapshot_deadline: Option<Duration>,
    exit_deadline: Option<Duration>,
    /// Why the backend's tool may not examine the program, found when it said hello: the run
    /// stops (exit 3) rather than fail every snapshot.
    refused: Option<String>,
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

    /// The process to examine: the agent's, once it said hello.
    fn target_pid(&self) -> u32 {
        self.agent_pid.unwrap_or_else(|| self.child.pid())
    }

    /// Runs until the program has ended (or been ended). Returns its status.
    fn drive(&mut self) -> Option<ExitStatus> {
        let mut taken = 0u32;
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
            if self.exiting.is_some() {
                return self.on_exit_announced();
            }
            self.poll_agent(TICK);
            if let Some(hello) = self.hello_at {
                let due = *next_due.get_or_insert(hello + self.config.after);
                if taken < self.config.snapshots
                    && Instant::now() >= due
                    && self.exiting.is_none()
                    && self.refused.is_none()
                {
                    taken += 1;
                    self.take_snapshot("interval", self.snapshot_deadline());
                    // `every` of the program's own time between snapshots, however long one took.
                    next_due = Some(Instant::now() + self.config.every);
                }
            }
            self.show(if self.hello_at.is_none() {
                "starting"
            } else if taken < self.config.snapshots {
                "running"
            } else {
                "waiting for the program to end (Ctrl-C to stop it)"
            });
        }
    }

    fn show(&self, phase: &str) {
        self.spinner.set_message(format!(
            "{phase} · {} snapshot(s) · footprint {}",
            self.manifest.snapshots.len(),
            crate::format::human_bytes(self.sampler.latest() as f64)
        ));
    }

    /// Connects when the agent listens, and handles what it says for up to `wait`.
    fn poll_agent(&mut self, wait: Duration) {
        if self.link.is_none() {
            if self.socket.exists() {
                self.link = AgentLink::connect(&self.socket);
            }
            if self.link.is_none() {
                std::thread::sleep(wait);
                return;
            }
        }
        if let Some(link) = self.link.as_mut() {
            match link.next_event(wait) {
                Ok(event) => self.on_event(event),
                Err(LinkState::Quiet) => {}
                Err(LinkState::Closed) => self.link = None,
            }
        }
    }

    /// Picks up what the agent sent before the program ended (a late answer, `exiting`).
    fn drain_events(&mut self) {
        for _ in 0..32 {
            let Some(link) = self.link.as_mut() else {
                return;
            };
            match link.next_event(Duration::from_millis(20)) {
                Ok(event) => self.on_event(event),
                Err(_) => return,
            }
        }
    }

    fn on_event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::Hello {
                protocol,
                pid,
                ruby,
            } => {
                if protocol != agent::PROTOCOL {
                    self.warn(format!(
                        "the agent speaks protocol {protocol}, this leakhunt {}: results may be incomplete",
                        agent::PROTOCOL
                    ));
                }
                self.agent_pid = Some(pid);
                self.manifest.pid = Some(pid);
                self.hello_at.get_or_insert_with(Instant::now);
                if !ruby.is_empty() {
                    self.manifest.ruby = Some(ruby);
                }
                self.sampler.follow(pid);
                self.backend.on_hello(pid);
                if let Err(why) = self.backend.examinable(pid) {
                    self.refused = Some(why);
                }
                self.save();
            }
            AgentEvent::Exiting { detail } => {
                self.exit_detail = Some(detail.clone());
                self.exiting = Some(detail);
            }
            AgentEvent::Done {
                index,
                heap,
                sidecar,
            } => {
                // An answer that came after its deadline: the files are there now.
                if let Some(s) = self
                    .manifest
                    .snapshots
                    .iter_mut()
                    .find(|s| s.index == index && s.heap.is_none())
                {
                    s.heap = Some(heap);
                    s.sidecar = Some(sidecar);
                    s.errors
                        .push("the agent answered after the deadline; no native evidence".into());
                    self.save();
                }
            }
            AgentEvent::Failed { index, message } => {
                self.warn(format!("snapshot {index}: {message}"));
            }
            AgentEvent::Overran {
                index,
                step,
                budget_ms,
            } => {
                self.warn(format!("snapshot {index}: {}", step.overran(budget_ms)));
            }
            AgentEvent::Unknown(line) => {
                self.warn(format!("unexpected line from the agent: {line}"))
            }
        }
    }

    /// Asks for snapshot N, waits for the answer within `deadline`, has the backend take the
    /// native evidence, and records the snapshot.
    fn take_snapshot(&mut self, reason: &str, deadline: Duration) {
        let index = self.manifest.snapshots.len() as u32 + 1;
        let pid = self.target_pid();
        let mut snapshot = Snapshot {
            index,
            reason: reason.to_owned(),
            t: self.started.elapsed().as_secs_f64(),
            ..Snapshot::default()
        };
        self.show(&format!("snapshot {index} ({reason})"));
        self.backend.before_snapshot(pid, index);
        // The agent splits the deadline between its steps and never keeps the program parked
        // past it.
        let sent = match self.link.as_mut() {
            Some(link) => link.send(&format!(
                "snapshot {index} {reason} {:.1}",
                deadline.as_secs_f64()
            )),
            None => Err(Error::Run("the agent is not connected".into())),
        };
        if let Err(e) = sent {
            snapshot.errors.push(e.to_string());
            self.record_snapshot(snapshot);
            return;
        }
        let signals_before = self.signals.count();
        let mut until = Instant::now() + deadline;
        let mut native_spoiled = false;
        let answer = loop {
            match self.signals.count() {
                // A first interrupt lets the snapshot under way finish, briefly: it is the last
                // one (and the agent answers requests in order anyway). A second stops now.
                n if n > signals_before && n >= 2 => break Err(Unanswered::Interrupted),
                n if n > signals_before => {
                    until = until.min(Instant::now() + INTERRUPT_SNAPSHOT);
                    self.snapshot_after_interrupt = true;
                }
                _ => {}
            }
            let Some(link) = self.link.as_mut() else {
                break Err(Unanswered::ConnectionClosed);
            };
            match link.next_event(TICK) {
                Ok(AgentEvent::Done {
                    index: i,
                    heap,
                    sidecar,
                }) if i == index => break Ok((heap, sidecar)),
                Ok(AgentEvent::Failed { index: i, message }) if i == index => {
                    snapshot.errors.push(format!("the agent failed: {message}"));
                    break Err(Unanswered::Failed);
                }
                Ok(AgentEvent::Overran {
                    index: i,
                    step,
                    budget_ms,
                }) if i == index => {
                    snapshot.errors.push(step.overran(budget_ms));
                    native_spoiled |=
                        step.spoils_native_check() && self.backend.checks_inside_round();
                }
                Ok(other) => self.on_event(other),
                Err(LinkState::Quiet) => {}
                Err(LinkState::Closed) => {
                    self.link = None;
                    break Err(Unanswered::ConnectionClosed);
                }
            }
            if self.child.try_wait().is_some() {
                // The answer may still be in the socket.
                if let Some(link) = self.link.as_mut() {
                    if let Ok(AgentEvent::Done {
                        index: i,
                        heap,
                        sidecar,
                    }) = link.next_event(Duration::from_millis(100))
                    {
                        if i == index {
                            break Ok((heap, sidecar));
                        }
                    }
                }
                break Err(Unanswered::ProgramEnded);
            }
            if Instant::now() >= until {
                break Err(Unanswered::Timeout);
            }
        };
        match answer {
            Ok((heap, sidecar)) => {
                snapshot.heap = Some(heap);
                snapshot.sidecar = Some(sidecar);
                let left = until.saturating_duration_since(Instant::now());
                let mut native_deadline = self.backend.native_deadline(left);
                if self.signals.count() > 0 {
                    native_deadline = native_deadline.min(INTERRUPT_SNAPSHOT);
                }
                let capture = self.backend.capture(pid, index, native_deadline);
                if native_spoiled {
                    snapshot
                        .errors
                        .push("no native evidence for this snapshot".into());
                } else {
                    snapshot.native = capture.native;
                }
                snapshot.maps = capture.maps;
                snapshot.errors.extend(capture.errors);
            }
            Err(why) if snapshot.errors.is_empty() => snapshot.errors.push(match why {
                Unanswered::Timeout => format!(
                    "the agent did not answer within {} s (the program may be stuck, e.g. in a \
                     finalizer run by the snapshot's GC); set {} to wait longer",
                    deadline.as_secs(),
                    knobs::SNAPSHOT_DEADLINE
                ),
                Unanswered::ConnectionClosed => "the agent closed the connection".into(),
                Unanswered::ProgramEnded => "the program ended during the snapshot".into(),
                Unanswered::Interrupted => "interrupted".into(),
                Unanswered::Failed => "the agent failed".into(),
            }),
            Err(_) => {}
        }
        self.record_snapshot(snapshot);
    }

    fn record_snapshot(&mut self, snapshot: Snapshot) {
        if let Some(line) = snapshot.warning() {
            self.warn(line);
        }
        self.manifest.snapshots.push(snapshot);
        self.save();
    }

    /// The program ends by itself: final snapshot, `bye`, then it must exit within the deadline.
    fn on_exit_announced(&mut self) -> Option<ExitStatus> {
        self.take_snapshot("exit", self.snapshot_deadline());
        self.say_bye();
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

    /// Ctrl-C (or SIGTERM/SIGHUP to leakhunt): a brief last snapshot, the signal forwarded to
    /// the program, a short wait, then SIGTERM and SIGKILL. A second signal skips the waits.
    ///
    /// When the program's group holds the terminal, Ctrl-C reaches the program directly and
    /// leakhunt hears of it from the sentinel ([`terminal`]): it is not forwarded again (a second
    /// SIGINT would cut short the program's own at_exit work, the agent's last snapshot
    /// included). A snapshot under way when the signal came is the last one.
    fn on_interrupt(&mut self) -> Option<ExitStatus> {
        self.interrupted = true;
        let signal = self.signals.last();
        let from_terminal = self.signals.last_from_terminal();
        let name = crate::platform::signal_name(signal).unwrap_or("a signal");
        eprintln!(
            "\nleakhunt: {name}: taking a last snapshot, then stopping the program (again to stop now)"
        );
        if self.link.is_some()
            && self.hello_at.is_some()
            && self.signals.count() == 1
            && !self.snapshot_after_interrupt
        {
            let deadline = self.snapshot_deadline().min(INTERRUPT_SNAPSHOT);
            self.take_snapshot("interrupt", deadline);
        }
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

    /// Waits for the program to end, answering `bye` to its at_exit hook.
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
            self.poll_agent(TICK);
            if self.exiting.take().is_some() {
                self.say_bye();
            }
        }
    }

    fn say_bye(&mut self) {
        self.exiting = None;
        if let Some(link) = self.link.as_mut() {
            let _ = link.send("bye");
        }
    }

    fn warn(&mut self, message: String) {
        self.spinner
            .suspend(|| eprintln!("leakhunt: warning: {message}"));
        self.manifest.warnings.push(message);
    }

    /// Writes the manifest; a failure to write is reported once, never fatal mid-run.
    fn save(&mut self) {
        self.manifest.duration_seconds = self.started.elapsed().as_secs_f64();
        fix_modes(&self.dirs.bundle);
        if let Err(e) = self.manifest.save(&self.dirs.bundle) {
            self.spinner
                .suspend(|| eprintln!("leakhunt: warning: cannot write the manifest: {e}"));
        }
    }

    /// Ends the run: the group is gone, the backend's logs are in place, the outcome is written.
    fn finish(mut self, status: Option<ExitStatus>) -> Result<Recorded> {
        let status = status.or_else(|| self.child.terminate(libc::SIGKILL, Duration::ZERO));
        self.child.reap_group();
        let samples = self.sampler.stop();
        self.spinner.finish_and_clear();
        let pid = Some(self.target_pid());
        let finish = self.backend.finish(pid);
        for (from, to) in &finish.renamed {
            for s in &mut self.manifest.snapshots {
                if let Some(native) = s.native.as_mut().filter(|n| &n.file == from) {
                    native.file = to.clone();
                }
            }
        }
        self.manifest.native_logs = finish.logs;
        for w in finish.warnings {
            self.warn(w);
        }
        self.manifest.footprint = (samples > 0).then(|| footprint::FILE.to_owned());
        if self.hello_at.is_none() {
            self.warn(
                "the Ruby agent never answered, so there are no heap snapshots: is the program a \
                 Ruby program that honours RUBYOPT?"
                    .into(),
            );
        }
        self.manifest.outcome = self.outcome(status);
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
            .exit_detail
            .as_deref()
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
        let taken = self.manifest.snapshots.iter().filter(|s| s.taken()).count();
        let (kind, detail) = if let Some(why) = &self.killed_because {
            ("killed", format!("killed by leakhunt: {why}; {how}"))
        } else if self.interrupted || self.signals.count() > 0 {
            let name = crate::platform::signal_name(self.signals.last()).unwrap_or("a signal");
            (
                "interrupted",
                format!("interrupted ({name}) after {taken} snapshot(s); the program {how}"),
            )
        } else if code.is_some() {
            ("exited", format!("{how} after {taken} snapshot(s)"))
        } else if signal.is_some() {
            ("signaled", format!("{how} after {taken} snapshot(s)"))
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
