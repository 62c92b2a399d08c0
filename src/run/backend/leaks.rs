//! macOS `leaks(1)`: the target starts with `MallocStackLogging=1` (stacks of live allocations,
//! "lite" on current systems), and each snapshot saves `leaks PID`. Exit status 0 means no leak,
//! 1 means leaks were found (success with findings), anything above is a failure whose message
//! says why (target gone, not allowed to examine it, …); see macos/README.md.

use super::{Dirs, Mark, NativeBackend, NativeCapture, first_line, run_tool};
use crate::bundle::{self, NativeRef, ProcessFiles};
use crate::error::{Error, Result};
use crate::run::child::Launch;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct Leaks {
    leaks: PathBuf,
    dirs: Dirs,
}

/// The `leaks` binary, or the advice to get it.
pub fn tool() -> std::result::Result<PathBuf, String> {
    crate::platform::leaks_tool().ok_or_else(|| {
        if cfg!(target_os = "macos") {
            "leaks(1) was not found: install the Command Line Tools (xcode-select --install)"
                .to_owned()
        } else {
            "leaks(1) exists only on macOS: use --backend lsan or --backend valgrind here"
                .to_owned()
        }
    })
}

impl Leaks {
    pub fn new(dirs: &Dirs) -> Result<Leaks> {
        Ok(Leaks {
            leaks: tool().map_err(Error::BackendUnavailable)?,
            dirs: dirs.clone(),
        })
    }
}

impl NativeBackend for Leaks {
    fn name(&self) -> &'static str {
        "leaks"
    }

    fn describe(&self) -> bundle::Backend {
        bundle::Backend {
            name: "leaks".into(),
            tool: Some(self.leaks.display().to_string()),
            version: crate::platform::os_version().map(|v| format!("macOS {v}")),
            options: vec!["MallocStackLogging=1".into()],
        }
    }

    fn prepare(&mut self, launch: &mut Launch) -> Result<()> {
        launch.set_env("MallocStackLogging", "1", None);
        Ok(())
    }

    fn capture(
        &self,
        pid: u32,
        round: u32,
        files: &ProcessFiles,
        _before: Mark,
        deadline: Duration,
    ) -> NativeCapture {
        let mut capture = NativeCapture::default();
        let name = files.native(round);
        let mut command = Command::new(&self.leaks);
        // leaks itself must not log its own mallocs.
        command
            .arg(pid.to_string())
            .env_remove("MallocStackLogging")
            .env_remove("MallocStackLoggingNoCompact");
        match run_tool(
            &mut command,
            &self.dirs.bundle.join(&name),
            &self.dirs.private,
            deadline,
        ) {
            Ok(run) => match run.status.map(|s| s.code()) {
                // 0: no leaks, 1: leaks found. Both are reports.
                Some(Some(0 | 1)) => {
                    capture.native = Some(NativeRef {
                        file: name,
                        start: None,
                        end: None,
                    });
                }
                // Above 1: leaks could not examine the process; its message says why.
                Some(code) => {
                    let stdout = std::fs::read(self.dirs.bundle.join(&name)).unwrap_or_default();
                    let failure = crate::native::leaks::classify_failure(
                        &stdout,
                        run.stderr.as_bytes(),
                        code,
                    );
                    capture.errors.push(match failure {
                        Some(f) => f.to_string(),
                        None => format!("leaks failed: {}", first_line(&run.stderr)),
                    });
                }
                None => capture.errors.push(format!(
                    "leaks did not finish within {} s",
                    deadline.as_secs()
                )),
            },
            Err(e) => capture.errors.push(e.to_string()),
        }
        capture
    }

    fn snapshot_deadline(&self) -> Duration {
        Duration::from_secs(180)
    }
}
