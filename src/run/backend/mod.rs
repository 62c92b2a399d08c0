//! Native backends behind one interface: how the target is started so native leaks can be seen,
//! and how the native evidence of one process's snapshot is taken once its agent has run its
//! full GC. A round asks every process at once, so captures of several processes run on
//! threads of their own: a backend is shared (`Send + Sync`) and keeps no per-snapshot state —
//! what it needs of the moment before a snapshot ([`Mark`]) is handed back to it.
//!
//! Stage: `run`. One module per backend: `lsan` (gcc's LeakSanitizer runtime preloaded, the
//! check run by the agent), `valgrind` (memcheck + `vgdb leak_check`), `leaks` (macOS
//! `MallocStackLogging` + `leaks PID`). `none` takes heap snapshots only.

pub mod leaks;
mod lsan;
mod valgrind;

use super::child::Launch;
use crate::bundle::{self, NativeRef, ProcessFiles};
use crate::cli::BackendChoice;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Native evidence taken for one snapshot.
#[derive(Debug, Default)]
pub struct NativeCapture {
    pub native: Option<NativeRef>,
    /// `/proc/PID/maps` copy, bundle-relative.
    pub maps: Option<String>,
    pub errors: Vec<String>,
}

/// What a backend noted just before a snapshot was asked for (LSan: the log's length, where
/// this snapshot's report will start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    pub log_offset: Option<u64>,
}

/// Files the backend leaves for one process once it has ended.
#[derive(Debug, Default)]
pub struct Finish {
    /// Bundle-relative files holding more than one snapshot (the process's `native_logs`).
    pub logs: Vec<String>,
    /// Files renamed to their final name: (old, new); snapshot references follow.
    pub renamed: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// Where the run keeps its files.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// The bundle (absolute).
    pub bundle: PathBuf,
    /// The run's private 0700 directory (removed at the end).
    pub private: PathBuf,
}

pub trait NativeBackend: Send + Sync {
    /// "lsan", "valgrind", "leaks", "none" (also the agent's `LEAKHUNT_BACKEND`).
    fn name(&self) -> &'static str;
    /// Tool, version and options, for the manifest.
    fn describe(&self) -> bundle::Backend;
    /// Adds the backend's environment and wrapper command to the launch.
    fn prepare(&mut self, launch: &mut Launch) -> Result<()>;
    /// Whether the backend's tool may examine `pid` (asked when the process says hello); why
    /// not otherwise. For the main process that stops the run (exit 3) instead of failing every
    /// snapshot; another process is only warned about.
    fn examinable(&self, _pid: u32) -> std::result::Result<(), String> {
        Ok(())
    }
    /// Just before the agent of `pid` is asked for a snapshot.
    fn before_snapshot(&self, _pid: u32) -> Mark {
        Mark::default()
    }
    /// Just after the agent of `pid` wrote its snapshot of round `round`: take or mark the
    /// native evidence, in files named by `files`.
    fn capture(
        &self,
        pid: u32,
        round: u32,
        files: &ProcessFiles,
        before: Mark,
        deadline: Duration,
    ) -> NativeCapture;
    /// Process `pid` replaced its program by exec, before round `round`: set aside the native
    /// log the new program's runtime would overwrite. (old, new) names when one was renamed.
    fn set_aside(&self, _pid: u32, _round: u32) -> Option<(String, String)> {
        None
    }
    /// Process `pid` has ended: put its logs in their final place, named by `files`.
    fn finish(&self, _pid: u32, _files: &ProcessFiles) -> Finish {
        Finish::default()
    }
    /// Whether the agent takes the native evidence inside its round (LeakSanitizer's check), so
    /// that a round whose parked steps overran has none for that snapshot.
    fn checks_inside_round(&self) -> bool {
        false
    }
    /// How long one snapshot (agent and native tool) may take.
    fn snapshot_deadline(&self) -> Duration {
        Duration::from_secs(60)
    }
    /// How long the target may take to exit after its final snapshot.
    fn exit_deadline(&self) -> Duration {
        Duration::from_secs(15)
    }
    /// How long the native tool of one snapshot may take, given what the agent's part left of
    /// the snapshot's deadline.
    fn native_deadline(&self, left: Duration) -> Duration {
        left.max(Duration::from_secs(10))
    }
}

/// Heap snapshots only.
struct NoBackend;

impl NativeBackend for NoBackend {
    fn name(&self) -> &'static str {
        "none"
    }
    fn describe(&self) -> bundle::Backend {
        bundle::Backend {
            name: "none".into(),
            ..bundle::Backend::default()
        }
    }
    fn prepare(&mut self, _launch: &mut Launch) -> Result<()> {
        Ok(())
    }
    fn capture(
        &self,
        _pid: u32,
        _round: u32,
        _files: &ProcessFiles,
        _before: Mark,
        _deadline: Duration,
    ) -> NativeCapture {
        NativeCapture::default()
    }
}

/// What `--backend auto` means here.
pub fn default_choice() -> BackendChoice {
    if cfg!(target_os = "macos") {
        BackendChoice::Leaks
    } else {
        BackendChoice::Lsan
    }
}

/// The backend for `choice`, or why it cannot be used on this machine (exit 3).
pub fn select(choice: BackendChoice, dirs: &Dirs) -> Result<Box<dyn NativeBackend>> {
    let choice = match choice {
        BackendChoice::Auto => default_choice(),
        other => other,
    };
    match choice {
        BackendChoice::None => Ok(Box::new(NoBackend)),
        BackendChoice::Lsan => Ok(Box::new(lsan::Lsan::new(dirs)?)),
        BackendChoice::Valgrind => Ok(Box::new(valgrind::Valgrind::new(dirs)?)),
        BackendChoice::Leaks => Ok(Box::new(leaks::Leaks::new(dirs)?)),
        BackendChoice::Auto => Err(Error::BackendUnavailable("no default backend".into())),
    }
}

/// Whether `choice` can run here; the advice when not (used by `doctor`).
pub fn availability(choice: BackendChoice) -> std::result::Result<String, String> {
    let choice = match choice {
        BackendChoice::Auto => default_choice(),
        other => other,
    };
    match choice {
        BackendChoice::None | BackendChoice::Auto => Ok("heap snapshots only".into()),
        BackendChoice::Lsan => lsan::runtime().map(|p| p.display().to_string()),
        BackendChoice::Valgrind => valgrind::tools()
            .map(|(v, _, version)| format!("{} ({})", v.display(), version.unwrap_or_default())),
        BackendChoice::Leaks => leaks::tool().map(|p| p.display().to_string()),
    }
}

/// Result of running a backend tool with a deadline.
pub struct ToolRun {
    /// `None` when it did not finish: [`ToolRun::unfinished`] says why.
    pub status: Option<std::process::ExitStatus>,
    pub unfinished: Option<Unfinished>,
    pub stderr: String,
}

/// Why a tool was killed before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// Still running at its deadline.
    Deadline(Duration),
    /// It stopped itself or was stopped by this signal: SIGTTIN when it read the terminal from
    /// leakhunt's process group, which is in the background while the program holds the
    /// terminal. Waiting on would wait for the deadline.
    Stopped(i32),
    /// A second Ctrl-C (or SIGTERM, SIGHUP) arrived while it ran.
    Interrupted,
}

impl std::fmt::Display for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfinished::Deadline(d) => write!(f, "did not finish within {} s", d.as_secs()),
            Unfinished::Stopped(signal) => write!(
                f,
                "stopped ({}) before it finished",
                crate::platform::signal_name(*signal).unwrap_or("a signal")
            ),
            Unfinished::Interrupted => write!(f, "was cut short by a second interrupt"),
        }
    }
}

/// Runs `command` with stdout into the private file `stdout_to`, stderr kept (first 4 KiB), and
/// kills it at `deadline`, as soon as it stops (a tool waiting for terminal input), or at a
/// second interrupt; a first interrupt shortens its deadline to what a last snapshot gets.
/// Several may run at once (one per process of a round): each keeps its stderr in a scratch
/// file named after it.
pub fn run_tool(
    command: &mut Command,
    stdout_to: &Path,
    scratch: &Path,
    deadline: Duration,
) -> Result<ToolRun> {
    let out = bundle::create_private(stdout_to)?;
    let err_path = scratch.join(format!(
        "{}.stderr",
        stdout_to
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let err = bundle::create_private(&err_path)?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::Run(format!("cannot run {:?}: {e}", command.get_program())))?;
    let interrupts_before = super::child::interrupts();
    let mut until = Instant::now() + deadline;
    let mut unfinished = None;
    let status = loop {
        // An error here (the child could not be waited for) ends the wait as a deadline would.
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => unfinished = Some(Unfinished::Deadline(deadline)),
        }
        let interrupts = super::child::interrupts();
        if interrupts >= 2 && interrupts > interrupts_before {
            unfinished = Some(Unfinished::Interrupted);
        } else if interrupts > interrupts_before {
            until = until.min(Instant::now() + super::INTERRUPT_SNAPSHOT);
        }
        if let Some(signal) = stopped(child.id()) {
            unfinished = Some(Unfinished::Stopped(signal));
        }
        if unfinished.is_none() && Instant::now() >= until {
            unfinished = Some(Unfinished::Deadline(deadline));
        }
        if unfinished.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = std::fs::read(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    stderr.truncate(4096);
    Ok(ToolRun {
        status,
        unfinished,
        stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
    })
}

/// The signal that stopped child `pid`, if it is stopped now. Never reaps: waitid with
/// WSTOPPED alone reports stops only, and the exit stays for `Child::try_wait`.
fn stopped(pid: u32) -> Option<i32> {
    let id = libc::id_t::try_from(pid).ok()?;
    // SAFETY: siginfo_t is plain data (all-zero is valid); waitid on our own child with
    // WSTOPPED | WNOHANG fills it only when the child has stopped.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(libc::P_PID, id, &mut info, libc::WSTOPPED | libc::WNOHANG);
        (rc == 0 && info.si_pid() == pid as libc::pid_t).then(|| info.si_status())
    }
}

/// Saves `/proc/PID/maps` for the snapshot of `round` where the platform has it.
pub fn save_maps(
    dirs: &Dirs,
    pid: u32,
    round: u32,
    files: &ProcessFiles,
    errors: &mut Vec<String>,
) -> Option<String> {
    let name = files.maps(round);
    match crate::platform::save_memory_map(pid, &dirs.bundle.join(&name)) {
        Ok(true) => Some(name),
        Ok(false) => None,
        Err(e) => {
            errors.push(format!("cannot save the memory map of {pid}: {e}"));
            None
        }
    }
}

/// First line of a tool's stderr, for one-line messages.
pub fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_past_its_deadline_is_killed_and_its_stderr_kept() {
        let dir = tempfile::tempdir().unwrap();
        // The tool writes, then blocks far past its deadline without stopping (a stopped tool
        // is told apart: see the next test): only the deadline ends it, and 2 s leave a loaded
        // machine time to start sh.
        let run = run_tool(
            Command::new("sh").args(["-c", "echo partial; echo oops >&2; exec sleep 600"]),
            &dir.path().join("out.txt"),
            dir.path(),
            Duration::from_secs(2),
        )
        .unwrap();
        assert!(run.status.is_none());
        assert_eq!(
            run.unfinished,
            Some(Unfinished::Deadline(Duration::from_secs(2)))
        );
        assert_eq!(run.stderr, "oops");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
            "partial\n"
        );
        assert!(!dir.path().join("out.txt.stderr").exists());
    }

    #[test]
    fn a_tool_that_stops_for_terminal_input_is_not_waited_for() {
        // What leaks does when it asks for a password from leakhunt's background group:
        // reading the terminal stops it with SIGTTIN.
        // The shell gets a process group of its own whose parent (this test) is in the same
        // session: the kernel discards stop signals sent to an orphaned group, which the test's
        // own group may be when the suite runs detached (CI, a background job).
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let run = run_tool(
            Command::new("sh")
                .args(["-c", "echo 'Password:' >&2; kill -TTIN $$; sleep 30"])
                .process_group(0),
            &dir.path().join("out.txt"),
            dir.path(),
            Duration::from_secs(30),
        )
        .unwrap();
        // Stopped, not Deadline: with a 30 s deadline, a wait to the end would say Deadline.
        assert!(run.status.is_none());
        assert_eq!(run.unfinished, Some(Unfinished::Stopped(libc::SIGTTIN)));
        assert_eq!(
            run.unfinished.unwrap().to_string(),
            "stopped (SIGTTIN) before it finished"
        );
        assert_eq!(run.stderr, "Password:");
        // A tool that finishes is not mistaken for one that stopped.
        let run = run_tool(
            Command::new("sh").args(["-c", "exit 1"]),
            &dir.path().join("out.txt"),
            dir.path(),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(run.status.and_then(|s| s.code()), Some(1));
        assert_eq!(run.unfinished, None);
    }

    #[test]
    fn none_is_always_available_and_unknown_tools_give_advice() {
        assert!(availability(BackendChoice::None).is_ok());
        if cfg!(target_os = "linux") {
            let advice = availability(BackendChoice::Leaks).unwrap_err();
            assert!(advice.contains("macOS"), "{advice}");
        }
    }
}
