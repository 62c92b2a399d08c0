//! Native backends behind one interface: how the target is started so native leaks can be seen,
//! and how the native evidence of one process's snapshot is taken once its agent has run its
//! full GC. A round asks every process at once, so captures of several processes run on
//! threads of their own: a backend is shared (`Send + Sync`) and keeps no per-snapshot state —
//! what it needs of the moment before a snapshot ([`Mark`]) is handed back to it.
//!
//! Stage: `run`. One module per backend: `lsan` (gcc's LeakSanitizer runtime preloaded, the
//! check run by the agent), `valgrind` (memcheck + `vgdb leak_check`), `leaks` (macOS
//! `MallocStackLogging` + `leaks PID`). `none` takes heap snapshots only.

mod leaks;
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
    /// Process `pid` has ended: put its logs in their final place, named by `files`.
    fn finish(&self, _pid: u32, _files: &ProcessFiles) -> Finish {
        Finish::default()
    }
    /// How long one snapshot (agent and native tool) may take.
    fn snapshot_deadline(&self) -> Duration {
        Duration::from_secs(60)
    }
    /// How long the target may take to exit after its final snapshot.
    fn exit_deadline(&self) -> Duration {
        Duration::from_secs(15)
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
    /// `None` when it was killed at the deadline.
    pub status: Option<std::process::ExitStatus>,
    pub stderr: String,
}

/// Runs `command` with stdout into the private file `stdout_to`, stderr kept (first 4 KiB), and
/// kills it at `deadline`. Several may run at once (one per process of a round): each keeps its
/// stderr in a scratch file named after it.
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
    let until = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut stderr = std::fs::read(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    stderr.truncate(4096);
    Ok(ToolRun {
        status,
        stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
    })
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
        let run = run_tool(
            Command::new("sh").args(["-c", "echo partial; echo oops >&2; sleep 30"]),
            &dir.path().join("out.txt"),
            dir.path(),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(run.status.is_none());
        assert_eq!(run.stderr, "oops");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
            "partial\n"
        );
        assert!(!dir.path().join("out.txt.stderr").exists());
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
