//! LeakSanitizer without recompiling: gcc's standalone runtime is preloaded into the target, and
//! the agent calls `__lsan_do_recoverable_leak_check` after its full GC. Every check appends a
//! report to its process's log in the bundle (the runtime opens `lsan.PID.log` again in a forked
//! child, so each process has its own); a snapshot's native evidence is its byte range of that
//! log, plus `/proc/PID/maps` taken at the same moment (LSan prints `<unknown module>` for
//! libraries FFI has unloaded by the time a later report is read).

use super::{Dirs, Finish, Mark, NativeBackend, NativeCapture, save_maps};
use crate::bundle::{self, NativeRef, ProcessFiles};
use crate::error::{Error, Result};
use crate::run::child::Launch;
use std::path::PathBuf;
use std::time::Duration;

/// `log_path` prefix: LSan writes `lsan.<pid>.log` (`lsan.<pid>` without `log_suffix`).
const LOG_PREFIX: &str = "lsan";

pub struct Lsan {
    runtime: PathBuf,
    dirs: Dirs,
    options: String,
}

/// The runtime to preload, or the advice to get one.
pub fn runtime() -> std::result::Result<PathBuf, String> {
    let chosen = std::env::var_os(crate::run::knobs::LSAN_RUNTIME)
        .filter(|_| cfg!(target_os = "linux"))
        .map(PathBuf::from);
    let found = match chosen {
        Some(p) => p.is_file().then_some(p),
        None => crate::platform::lsan_runtime(),
    };
    found.ok_or_else(|| {
        if cfg!(target_os = "linux") {
            "the LeakSanitizer runtime liblsan.so.0 was not found: install it (Debian/Ubuntu: \
             apt-get install liblsan0; Fedora: dnf install liblsan) or set LEAKHUNT_LSAN_RUNTIME, \
             or use --backend valgrind"
                .to_owned()
        } else {
            "LeakSanitizer's standalone runtime is Linux-only: use --backend leaks on macOS"
                .to_owned()
        }
    })
}

/// Our `LSAN_OPTIONS`, which come after the user's and so win over them.
///
/// Full stacks (libzmq has no frame pointers); no exit-time check: Ruby < 3.4 does not free its
/// memory at exit, and the agent's final check runs before Ruby tears down.
///
/// `malloc_context_size` is left to the user (LSan's default, 30 frames): every malloc pays an
/// unwind of up to that many frames, but the diagnoses need deep ones. ruby-sqlite3's leaked
/// connections are allocated deep inside libsqlite3 (the extension's frame as deep as #20, the
/// Ruby frame that entered it at #21): with 16 frames they were set aside as noise instead of
/// blamed on `SQLite3::Statement#close`. A shorter stack saves much only where stacks are deep (a
/// Rails boot: 8.9 CPU s at 30 frames, 7.5 at 20, 6.1 at 12), so a default with a margin over
/// sqlite's 22 frames would save little (BENCHMARKS.md, "Shorter LSan stacks").
fn options(bundle: &std::path::Path) -> String {
    [
        "fast_unwind_on_malloc=0".to_owned(),
        "leak_check_at_exit=0".to_owned(),
        "detect_leaks=1".to_owned(),
        format!("log_path={}", bundle.join(LOG_PREFIX).display()),
        "log_suffix=.log".to_owned(),
    ]
    .join(":")
}

impl Lsan {
    pub fn new(dirs: &Dirs) -> Result<Lsan> {
        let runtime = runtime().map_err(Error::BackendUnavailable)?;
        Ok(Lsan {
            runtime,
            dirs: dirs.clone(),
            options: options(&dirs.bundle),
        })
    }

    /// The log of `pid`, whichever name this runtime gave it.
    fn log_of(&self, pid: u32) -> (String, u64) {
        for name in [
            format!("{LOG_PREFIX}.{pid}.log"),
            format!("{LOG_PREFIX}.{pid}"),
        ] {
            if let Ok(meta) = std::fs::metadata(self.dirs.bundle.join(&name)) {
                return (name, meta.len());
            }
        }
        (format!("{LOG_PREFIX}.{pid}.log"), 0)
    }
}

impl NativeBackend for Lsan {
    fn name(&self) -> &'static str {
        "lsan"
    }

    fn describe(&self) -> bundle::Backend {
        bundle::Backend {
            name: "lsan".into(),
            tool: Some(self.runtime.display().to_string()),
            version: std::fs::canonicalize(&self.runtime)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
            options: vec![format!("LSAN_OPTIONS={}", self.options)],
        }
    }

    fn checks_inside_round(&self) -> bool {
        true
    }

    fn prepare(&mut self, launch: &mut Launch) -> Result<()> {
        launch.set_env(
            "LD_PRELOAD",
            &self.runtime.display().to_string(),
            Some((":", true)),
        );
        // Ours last: later flags win, so the log always goes into the bundle.
        launch.set_env("LSAN_OPTIONS", &self.options, Some((":", false)));
        Ok(())
    }

    fn before_snapshot(&self, pid: u32) -> Mark {
        // LSan writes nothing when a check finds no leak: an empty log says "none" better than
        // a missing one. Creating it first is safe: LSan truncates it when it opens it. (Not
        // at hello: a short-lived fork is never checked and needs no log.)
        let (name, size) = self.log_of(pid);
        let path = self.dirs.bundle.join(name);
        if !path.exists() {
            let _ = bundle::create_private(&path);
        }
        Mark {
            log_offset: Some(size),
        }
    }

    fn capture(
        &self,
        pid: u32,
        round: u32,
        files: &ProcessFiles,
        before: Mark,
        _deadline: Duration,
    ) -> NativeCapture {
        let mut capture = NativeCapture::default();
        capture.maps = save_maps(&self.dirs, pid, round, files, &mut capture.errors);
        let (file, end) = self.log_of(pid);
        let start = before.log_offset.unwrap_or(0);
        if end < start {
            capture
                .errors
                .push(format!("{file} shrank during the check"));
            return capture;
        }
        capture.native = Some(NativeRef {
            file,
            start: Some(start),
            end: Some(end),
        });
        capture
    }

    fn set_aside(&self, pid: u32, round: u32) -> Option<(String, String)> {
        // The runtime of the program exec'd opens the same `lsan.PID.log` afresh at its first
        // check and truncates it (`bundle exec ruby app.rb`: the log shrank mid-round): what the
        // replaced program's checks wrote moves aside first.
        let (name, _) = self.log_of(pid);
        let to = format!("{LOG_PREFIX}.{pid}.before-round-{round}.log");
        std::fs::rename(self.dirs.bundle.join(&name), self.dirs.bundle.join(&to))
            .ok()
            .map(|()| (name, to))
    }

    fn finish(&self, pid: u32, files: &ProcessFiles) -> Finish {
        let mut finish = Finish::default();
        let (name, _) = self.log_of(pid);
        let from = self.dirs.bundle.join(&name);
        if !from.exists() {
            return finish;
        }
        let to = files.whole(LOG_PREFIX, "log");
        if std::fs::rename(&from, self.dirs.bundle.join(&to)).is_ok() {
            finish.renamed.push((name, to.clone()));
            finish.logs.push(to);
        } else {
            finish.logs.push(name);
        }
        finish
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The user's `LSAN_OPTIONS` reach the target ahead of ours, and ours set no stack depth, so
    /// a user's `malloc_context_size` is the one LSan uses (README: backends).
    #[test]
    fn a_user_s_stack_depth_reaches_the_target_and_ours_wins_the_log_path() {
        let dirs = Dirs {
            bundle: PathBuf::from("/b"),
            private: PathBuf::from("/p"),
        };
        let mut lsan = Lsan {
            runtime: PathBuf::from("/lib/liblsan.so.0"),
            options: options(&dirs.bundle),
            dirs,
        };
        let mut launch = Launch {
            argv: vec!["ruby".to_owned()],
            env: BTreeMap::from([(
                "LSAN_OPTIONS".to_owned(),
                "malloc_context_size=64:log_path=/elsewhere".to_owned(),
            )]),
        };
        lsan.prepare(&mut launch).unwrap();
        let flags: Vec<&str> = launch.env["LSAN_OPTIONS"].split(':').collect();
        let last = |name: &str| {
            flags
                .iter()
                .rev()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        };
        assert_eq!(last("malloc_context_size"), Some("64"), "{flags:?}");
        assert_eq!(last("log_path"), Some("/b/lsan"), "{flags:?}");
        assert_eq!(last("fast_unwind_on_malloc"), Some("0"), "{flags:?}");
    }
}
