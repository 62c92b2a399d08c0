//! valgrind memcheck: the target runs under valgrind with its gdbserver on; each snapshot asks it
//! for a leak search with `vgdb --pid=N leak_check full definiteleak any` (every definite loss
//! record with its delta since the previous search), saved as text. memcheck's XML at exit goes
//! to `valgrind.xml`. The vgdb FIFOs live in the run's private directory, not in /tmp.

use super::save_maps;
use super::{Dirs, Finish, NativeBackend, NativeCapture, first_line, native_file_name, run_tool};
use crate::bundle::{self, NativeRef};
use crate::error::{Error, Result};
use crate::run::child::Launch;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const FINAL_XML: &str = "valgrind.xml";
pub const FINAL_LOG: &str = "valgrind.log";

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
            "--vgdb=yes".to_owned(),
            format!("--vgdb-prefix={}", dirs.private.join("vgdb").display()),
            // Leak searches do not need definedness tracking; without it memcheck is faster and
            // Ruby's conservative GC does not drown the log in uninitialised-value errors.
            "--undef-value-errors=no".to_owned(),
            // valgrind runs one thread at a time; without fair scheduling a busy Ruby thread
            // starves the library's I/O threads (libzmq managed ~10 round trips a second).
            "--fair-sched=yes".to_owned(),
            "--num-callers=40".to_owned(),
            // A child the program forks would otherwise write its own XML document, leak
            // search included, into the middle of the program's (valgrind's manual says so).
            "--child-silent-after-fork=yes".to_owned(),
            "--xml=yes".to_owned(),
            format!(
                "--xml-file={}",
                dirs.bundle.join("valgrind.%p.xml").display()
            ),
            format!(
                "--log-file={}",
                dirs.bundle.join("valgrind.%p.log").display()
            ),
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
        // A wrapper (`bundle exec ruby app.rb`) execs the real Ruby: follow it.
        let direct_ruby = launch
            .argv
            .first()
            .and_then(|p| std::path::Path::new(p).file_name())
            .is_some_and(|n| n.to_string_lossy().starts_with("ruby"));
        if !direct_ruby {
            argv.push("--trace-children=yes".to_owned());
        }
        argv.append(&mut launch.argv);
        launch.argv = argv;
        Ok(())
    }

    fn capture(&mut self, pid: u32, index: u32, deadline: Duration) -> NativeCapture {
        let mut capture = NativeCapture::default();
        capture.maps = save_maps(&self.dirs, pid, index, &mut capture.errors);
        let name = native_file_name(index);
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

    fn finish(&mut self, pid: Option<u32>) -> Finish {
        let mut finish = Finish::default();
        let Some(pid) = pid else {
            return finish;
        };
        for (from, to) in [
            (format!("valgrind.{pid}.xml"), FINAL_XML),
            (format!("valgrind.{pid}.log"), FINAL_LOG),
        ] {
            let path = self.dirs.bundle.join(&from);
            if !path.exists() {
                continue;
            }
            let name = if std::fs::rename(&path, self.dirs.bundle.join(to)).is_ok() {
                finish.renamed.push((from, to.to_owned()));
                to.to_owned()
            } else {
                from
            };
            if to == FINAL_XML {
                let complete = std::fs::read(self.dirs.bundle.join(&name))
                    .map(|b| memchr::memmem::find(&b, b"</valgrindoutput>").is_some())
                    .unwrap_or(false);
                if !complete {
                    finish.warnings.push(format!(
                        "{name} is incomplete: valgrind did not finish writing it (the program was killed)"
                    ));
                }
                finish.logs.push(name);
            }
        }
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
