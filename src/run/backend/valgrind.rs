//! valgrind memcheck: the target runs under valgrind with its gdbserver on; each snapshot asks it
//! for a leak search with `vgdb --pid=N leak_check full definiteleak any` (every definite loss
//! record with its delta since the previous search), saved as text. memcheck's XML at exit goes
//! to `valgrind.xml` (other processes: `valgrind-pPID.xml`). The vgdb FIFOs live in the run's
//! private directory, not in /tmp.
//!
//! Every process of the tree is examined: `--trace-children=yes` follows programs the target
//! execs and, as valgrind 3.19's gdbserver does only then, gives a forked child a gdbserver of
//! its own (so `vgdb --pid=CHILD` answers); `%p` in `--xml-file` gives each process its XML.
//! The text log is one file for all: valgrind re-opens only the first of the two sinks whose
//! name changes at a fork, so a `%p` in `--log-file` would leave children writing into their
//! parent's XML.

use super::save_maps;
use super::{Dirs, Finish, Mark, NativeBackend, NativeCapture, first_line, run_tool};
use crate::bundle::{self, NativeRef, ProcessFiles};
use crate::error::{Error, Result};
use crate::run::child::Launch;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The text log of every process (little in it: the XML has the reports).
pub const LOG: &str = "valgrind.log";

pub struct Valgrind {
    valgrind: PathBuf,
    vgdb: PathBuf,
    version: Option<String>,
    dirs: Dirs,
    options: Vec<String>,
}

/// valgrind, vgdb and valgrind's version, or the advice to get them.
pub fn tools() -> std::result::Result<(PathBuf, PathBuf, Option<String>), String> {
    let advice = if cfg!(target_os = "macos") {
        "valgrind does not run on current macOS: use --backend leaks"
    } else {
        "valgrind was not found: install it (Debian/Ubuntu: apt-get install valgrind), \
         or use --backend lsan"
    };
    let valgrind = crate::platform::find_in_path("valgrind").ok_or(advice)?;
    let vgdb = crate::platform::find_in_path("vgdb").ok_or(
        "vgdb (valgrind's gdbserver relay) was not found next to valgrind: reinstall valgrind",
    )?;
    let version = Command::new(&valgrind)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    Ok((valgrind, vgdb, version))
}

impl Valgrind {
    pub fn new(dirs: &Dirs) -> Result<Valgrind> {
        let (valgrind, vgdb, version) = tools().map_err(Error::BackendUnavailable)?;
        let options = vec![
            "--tool=memcheck".to_owned(),
            "--leak-check=full".to_owned(),
            // The exit XML then lists the indirectly lost records: their blocks are how a leak's
            // record, which gives only its direct block count, is measured in blocks.
            "--show-leak-kinds=definite,indirect,possible".to_owned(),
            "--vgdb=yes".to_owned(),
            format!("--vgdb-prefix={}", dirs.private.join("vgdb").display()),
            // Leak searches do not need definedness tracking; without it memcheck is faster and
            // Ruby's conservative GC does not drown the log in uninitialised-value errors.
            "--undef-value-errors=no".to_owned(),
            // valgrind runs one thread at a time; without fair scheduling a busy Ruby thread
            // starves the library's I/O threads (libzmq managed ~10 round trips a second).
            "--fair-sched=yes".to_owned(),
            "--num-callers=40".to_owned(),
            "--trace-children=yes".to_owned(),
            "--xml=yes".to_owned(),
            format!(
                "--xml-file={}",
                dirs.bundle.join("valgrind.%p.xml").display()
            ),
            format!("--log-file={}", dirs.bundle.join(LOG).display()),
        ];
        Ok(Valgrind {
            valgrind,
            vgdb,
            version,
            dirs: dirs.clone(),
            options,
        })
    }
}

impl NativeBackend for Valgrind {
    fn name(&self) -> &'static str {
        "valgrind"
    }

    fn describe(&self) -> bundle::Backend {
        bundle::Backend {
            name: "valgrind".into(),
            tool: Some(self.valgrind.display().to_string()),
            version: self.version.clone(),
            options: self.options.clone(),
        }
    }

    fn prepare(&mut self, launch: &mut Launch) -> Result<()> {
        let mut argv = vec![self.valgrind.display().to_string()];
        argv.extend(self.options.iter().cloned());
        argv.append(&mut launch.argv);
        launch.argv = argv;
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
        capture.maps = save_maps(&self.dirs, pid, round, files, &mut capture.errors);
        let name = files.native(round);
        let mut command = Command::new(&self.vgdb);
        command
            .arg(format!(
                "--vgdb-prefix={}",
                self.dirs.private.join("vgdb").display()
            ))
            .arg(format!("--pid={pid}"))
            .args(["leak_check", "full", "definiteleak", "any"]);
        match run_tool(
            &mut command,
            &self.dirs.bundle.join(&name),
            &self.dirs.private,
            deadline,
        ) {
            Ok(run) => match run.status {
                Some(s) if s.success() => {
                    capture.native = Some(NativeRef {
                        file: name,
                        start: None,
                        end: None,
                    });
                }
                Some(s) => capture.errors.push(format!(
                    "vgdb leak_check failed ({s}): {}",
                    first_line(&run.stderr)
                )),
                None => capture.errors.push(format!(
                    "vgdb leak_check {}",
                    run.unfinished
                        .unwrap_or(super::Unfinished::Deadline(deadline))
                )),
            },
            Err(e) => capture.errors.push(e.to_string()),
        }
        capture
    }

    fn finish(&self, pid: u32, files: &ProcessFiles) -> Finish {
        let mut finish = Finish::default();
        let from = format!("valgrind.{pid}.xml");
        let path = self.dirs.bundle.join(&from);
        if !path.exists() {
            return finish;
        }
        let to = files.whole("valgrind", "xml");
        let name = if std::fs::rename(&path, self.dirs.bundle.join(&to)).is_ok() {
            finish.renamed.push((from, to.clone()));
            to
        } else {
            from
        };
        let complete = std::fs::read(self.dirs.bundle.join(&name))
            .map(|b| memchr::memmem::find(&b, b"</valgrindoutput>").is_some())
            .unwrap_or(false);
        if !complete {
            finish.warnings.push(format!(
                "{name} is incomplete: valgrind did not finish writing it (the process was killed)"
            ));
        }
        finish.logs.push(name);
        finish
    }

    fn snapshot_deadline(&self) -> Duration {
        Duration::from_secs(180)
    }

    fn exit_deadline(&self) -> Duration {
        // memcheck's own leak search and XML at exit take a while on a Ruby heap.
        Duration::from_secs(180)
    }
}
