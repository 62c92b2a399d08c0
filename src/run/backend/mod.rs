//! Native backends behind one interface: how the target is started so native leaks can be seen,
//! and how the native evidence of one snapshot is taken once the agent has run its full GC.
//!
//! Stage: `run`. One module per backend: `lsan` (gcc's LeakSanitizer runtime preloaded, the
//! check run by the agent), `valgrind` (memcheck + `vgdb leak_check`), `leaks` (macOS
//! `MallocStackLogging` + `leaks PID`). `none` takes heap snapshots only.

mod leaks;
mod lsan;
mod valgrind;

use super::child::Launch;
use crate::bundle::{self, NativeRef};
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

/// Files the backend leaves once the target has ended.
#[derive(Debug, Default)]
pub struct Finish {
    /// Bundle-relative files holding more than one snapshot (manifest `native_logs`).
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

pub trait NativeBackend {
    /// "lsan", "valgrind", "leaks", "none" (also the agent's `LEAKHUNT_BACKEND`).
    fn name(&self) -> &'static str;
    /// Tool, version and options, for the manifest.
    fn describe(&self) -> bundle::Backend;
    /// Adds the backend's environment and wrapper command to the launch.
    fn prepare(&mut self, launch: &mut Launch) -> Result<()>;
    /// The agent said hello from `pid` (the process to examine).
    fn on_hello(&mut self, _pid: u32) {}
    /// Just before the agent is asked for snapshot `index`.
    fn before_snapshot(&mut self, _pid: u32, _index: u32) {}
    /// Just after the agent wrote snapshot `index`: take or mark the native evidence.
    fn capture(&mut self, pid: u32, index: u32, deadline: Duration) -> NativeCapture;
    /// The target has ended: put the logs in their final place.
    fn finish(&mut self, _pid: Option<u32>) -> Finish {
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
    fn capture(&mut self, _pid: u32, _index: u32, _deadline: Duration) -> NativeCapture {
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
/// kills it at `deadline`.
pub fn run_tool(
    command: &mut Command,
    stdout_to: &Path,
    scratch: &Path,
    deadline: Duration,
) -> Result<ToolRun> {
    let out = bundle::create_private(stdout_to)?;
    let err_path = scratch.join("tool-stderr.txt");
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

/// `native-003.txt` for snapshot 3.
pub fn native_file_name(index: u32) -> String {
    format!("native-{index:03}.txt")
}

/// `maps-003.txt` for snapshot 3.
pub fn maps_file_name(index: u32) -> String {
    format!("maps-{index:03}.txt")
}

/// Saves `/proc/PID/maps` for snapshot `index` where the platform has it.
pub fn save_maps(dirs: &Dirs, pid: u32, index: u32, errors: &mut Vec<String>) -> Option<String> {
    let name = maps_file_name(index);
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
        // The tool stops itself once it has written and never ends: only the deadline ends it,
        // and 2 s leave a loaded machine time to start sh.
        let run = run_tool(
            Command::new("sh").args(["-c", "echo partial; echo oops >&2; kill -STOP $$"]),
            &dir.path().join("out.txt"),
            dir.path(),
            Duration::from_secs(2),
        )
        .unwrap();
        assert!(run.status.is_none());
        assert_eq!(run.stderr, "oops");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
            "partial\n"
        );
        assert!(!dir.path().join("tool-stderr.txt").exists());
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
