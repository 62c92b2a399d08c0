//! macOS `leaks(1)`: the target starts with `MallocStackLogging=lite` (stacks of live
//! allocations, kept in memory), and each snapshot saves `leaks -noContent PID`. Exit status 0
//! means no leak, 1 means leaks were found (success with findings), anything above is a failure
//! whose message says why (target gone, not allowed to examine it, …); see macos/README.md.
//!
//! Everything here but the tool's location is portable, and runs on Linux in the tests with a
//! stand-in for leaks(1) that replays real reports (`LEAKHUNT_TEST_LEAKS_STAND_IN`,
//! `tests/support/leaks-stand-in`).

use super::{Dirs, Mark, NativeBackend, NativeCapture, Unfinished, first_line};
use crate::bundle::{self, NativeRef, ProcessFiles};
use crate::error::{Error, Result};
use crate::native::leaks::BinaryImage;
use crate::run::child::Launch;
use crate::run::knobs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The stack-logging setting the target starts with. `lite` records the stacks of live
/// allocations in memory, which is all `leaks` needs. libmalloc has parsed it since macOS 10.12
/// (libmalloc-116 `malloc.c`; MallocStackLogging.framework from 10.15 on, documented in
/// malloc(3) from Xcode 11.3.1); older systems take any unknown value as full on-disk logging,
/// which `leaks` reads as well. `1` would mean full on-disk logging on some of those eras
/// (malloc(3) up to Xcode 25) and lite on others.
pub const STACK_LOGGING: (&str, &str) = ("MallocStackLogging", "lite");

/// How long one `leaks` may take when `LEAKHUNT_LEAKS_DEADLINE` does not say.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

pub struct Leaks {
    leaks: PathBuf,
    dirs: Dirs,
    /// `leaks` is the test stand-in named by `LEAKHUNT_TEST_LEAKS_STAND_IN`.
    stand_in: bool,
    /// Options before the pid.
    options: Vec<&'static str>,
}

/// The `leaks` binary (or the test stand-in, when set), or the advice to get it.
pub fn tool() -> std::result::Result<PathBuf, String> {
    if let Some(stand_in) = stand_in()? {
        return Ok(stand_in);
    }
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

/// The executable `LEAKHUNT_TEST_LEAKS_STAND_IN` names, when it is set (tests only).
fn stand_in() -> std::result::Result<Option<PathBuf>, String> {
    let Some(value) = std::env::var_os(knobs::TEST_LEAKS_STAND_IN) else {
        return Ok(None);
    };
    let path = PathBuf::from(&value);
    match crate::platform::find_in_path(&path.to_string_lossy()) {
        Some(found) if path.is_absolute() => Ok(Some(found)),
        _ => Err(format!(
            "{} is set to {}, which is not an executable given by its absolute path: it is a \
             test setting (a stand-in for leaks(1)); unset it",
            knobs::TEST_LEAKS_STAND_IN,
            path.display()
        )),
    }
}

/// `leaks` options for this macOS version (`None`: unknown, taken as current).
/// `-noContent`: no descriptions of the leaked blocks' contents, which for a live process
/// leaks(1) prints in full by default — message bodies, tokens — and which would land in the
/// bundle; it is also faster on a large process. leaks(1) documents it from Xcode 11.4 on, so
/// it is passed from macOS 11 on; before that contents stay in the report (leakhunt's reports
/// still redact them unless `--include-strings`). `-nosources` is not passed: it would be faster
/// still with many debug symbols, but drops the file:line of C extension frames.
pub fn options_for(macos_version: Option<&str>) -> Vec<&'static str> {
    let major = macos_version.and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok());
    match major {
        Some(major) if major < 11 => Vec::new(),
        _ => vec!["-noContent"],
    }
}

/// The options for the `leaks` of this machine (the stand-in takes today's).
pub fn options() -> Vec<&'static str> {
    if std::env::var_os(knobs::TEST_LEAKS_STAND_IN).is_some() {
        return options_for(None);
    }
    options_for(crate::platform::os_version().as_deref())
}

/// How long one `leaks` may take: its own deadline, not what the agent left of a snapshot's.
pub fn deadline() -> Duration {
    knobs::seconds(knobs::LEAKS_DEADLINE).unwrap_or(DEFAULT_DEADLINE)
}

impl Leaks {
    pub fn new(dirs: &Dirs) -> Result<Leaks> {
        let leaks = tool().map_err(Error::BackendUnavailable)?;
        let stand_in = std::env::var_os(knobs::TEST_LEAKS_STAND_IN).is_some();
        if stand_in {
            eprintln!(
                "leakhunt: warning: {} is set: {} runs instead of leaks(1) (a test setting)",
                knobs::TEST_LEAKS_STAND_IN,
                leaks.display()
            );
        }
        Ok(Leaks {
            leaks,
            dirs: dirs.clone(),
            stand_in,
            options: options(),
        })
    }
}

/// One `leaks OPTIONS PID`, its report saved to `report`: the exit status when it wrote one
/// (0: no leaks, 1: leaks found), or what went wrong and what to do, as one line. leaks itself
/// does not log its own mallocs (nor print stack-logging lines).
pub fn run_leaks(
    tool: &Path,
    options: &[&str],
    pid: u32,
    report: &Path,
    scratch: &Path,
    deadline: Duration,
) -> std::result::Result<i32, String> {
    let mut command = Command::new(tool);
    command
        .args(options)
        .arg(pid.to_string())
        .env_remove(STACK_LOGGING.0)
        .env_remove("MallocStackLoggingNoCompact");
    let run =
        super::run_tool(&mut command, report, scratch, deadline).map_err(|e| e.to_string())?;
    let code = run.status.map(|s| s.code());
    let failure = match run.unfinished {
        Some(Unfinished::Stopped(signal)) => crate::native::leaks::stopped_for_input(
            crate::platform::signal_name(signal).unwrap_or("a signal"),
        ),
        Some(Unfinished::Deadline(_)) => {
            crate::native::leaks::timed_out(deadline.as_secs(), knobs::LEAKS_DEADLINE)
        }
        Some(unfinished @ Unfinished::Interrupted) => return Err(format!("leaks {unfinished}")),
        None => match code {
            Some(Some(code @ (0 | 1))) => return Ok(code),
            Some(code) => {
                let stdout = std::fs::read(report).unwrap_or_default();
                match crate::native::leaks::classify_failure(&stdout, run.stderr.as_bytes(), code) {
                    Some(f) => f,
                    None => return Err(format!("leaks failed: {}", first_line(&run.stderr))),
                }
            }
            None => return Err("leaks failed".to_owned()),
        },
    };
    Err(failure.to_string())
}

impl NativeBackend for Leaks {
    fn name(&self) -> &'static str {
        "leaks"
    }

    fn describe(&self) -> bundle::Backend {
        let mut options = vec![format!("{}={}", STACK_LOGGING.0, STACK_LOGGING.1)];
        options.extend(self.options.iter().map(|o| (*o).to_owned()));
        bundle::Backend {
            name: "leaks".into(),
            tool: Some(self.leaks.display().to_string()),
            version: if self.stand_in {
                Some("test stand-in for leaks(1)".to_owned())
            } else {
                crate::platform::os_version().map(|v| format!("macOS {v}"))
            },
            options,
        }
    }

    fn prepare(&mut self, launch: &mut Launch) -> Result<()> {
        launch.set_env(STACK_LOGGING.0, STACK_LOGGING.1, None);
        Ok(())
    }

    fn examinable(&self, pid: u32) -> std::result::Result<(), String> {
        refusal(
            crate::platform::executable_path(pid).as_deref(),
            crate::platform::is_system_protected,
        )
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
        let report = self.dirs.bundle.join(&name);
        let ran = run_leaks(
            &self.leaks,
            &self.options,
            pid,
            &report,
            &self.dirs.private,
            deadline,
        );
        match ran {
            // 0: no leaks, 1: leaks found. Both are reports.
            Ok(_) => {
                capture.native = Some(NativeRef {
                    file: name,
                    start: None,
                    end: None,
                });
                let images = std::fs::read(&report)
                    .map(|bytes| crate::native::leaks::binary_images(&bytes))
                    .unwrap_or_default();
                if let Err(e) =
                    complete_library_paths(&self.dirs.bundle, &files.sidecar(round), &images)
                {
                    capture.errors.push(e);
                }
            }
            Err(why) => capture.errors.push(why),
        }
        capture
    }

    fn snapshot_deadline(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn native_deadline(&self, _left: Duration) -> Duration {
        deadline()
    }
}

/// Why leaks may not examine a process running `executable` (as the kernel reports it, after
/// any shim or wrapper exec'ed), if `protected` says SIP keeps it.
fn refusal(
    executable: Option<&Path>,
    protected: impl Fn(&Path) -> bool,
) -> std::result::Result<(), String> {
    match executable {
        Some(exe) if protected(exe) => Err(format!(
            "the program runs {}, which System Integrity Protection protects: leaks cannot \
             examine it (sudo does not change that). Run a Ruby you installed (Homebrew, rbenv, \
             asdf): `--ruby PATH` for a .rb program, or that Ruby first on PATH for `bundle \
             exec`, a shim or a `#!/usr/bin/env ruby` script",
            exe.display()
        )),
        _ => Ok(()),
    }
}

/// Fills in, in the snapshot's sidecar, the file each FFI library was loaded from when the
/// agent could not tell (on macOS it has no `/proc/self/maps`): from the images the `leaks`
/// report lists. Left alone when every path is known or no image matches.
fn complete_library_paths(
    bundle_dir: &Path,
    sidecar: &str,
    images: &[BinaryImage],
) -> std::result::Result<(), String> {
    if images.is_empty() {
        return Ok(());
    }
    let path = bundle_dir.join(sidecar);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(());
    };
    let mut sidecar: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: line {}: {e}", path.display(), e.line()))?;
    let mut changed = false;
    let libraries = sidecar
        .get_mut("ffi")
        .and_then(serde_json::Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|module| module.get_mut("libraries")?.as_array_mut())
        .flatten();
    for library in libraries {
        if library.get("path").is_some_and(|p| !p.is_null()) {
            continue;
        }
        let Some(name) = library.get("name").and_then(serde_json::Value::as_str) else {
            continue;
        };
        if let Some(image) = image_of_library(name, images) {
            library["path"] = serde_json::Value::String(image.path.clone());
            changed = true;
        }
    }
    if !changed {
        return Ok(());
    }
    let text = serde_json::to_vec(&sidecar).map_err(|e| e.to_string())?;
    bundle::write_private_atomic(&path, &text).map_err(|e| e.to_string())
}

/// The loaded image an FFI library name stands for: the same file name
/// (`libzmq.5.dylib`), else the same library under another version or suffix (`zmq`,
/// `libzmq.dylib` and `libzmq.5.dylib` are one library).
fn image_of_library<'a>(name: &str, images: &'a [BinaryImage]) -> Option<&'a BinaryImage> {
    let base = file_name(name);
    let stem = library_stem(base);
    let usable = || images.iter().filter(|i| !i.path.is_empty());
    usable()
        .find(|i| file_name(&i.path) == base)
        .or_else(|| usable().find(|i| !stem.is_empty() && library_stem(file_name(&i.path)) == stem))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `libzmq.5.dylib` → `zmq`.
fn library_stem(file: &str) -> String {
    let bare = file.strip_prefix("lib").unwrap_or(file);
    bare.split('.').next().unwrap_or(bare).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(path: &str) -> BinaryImage {
        BinaryImage {
            start: 0x1000,
            end: 0x1fff,
            name: file_name(path).to_owned(),
            path: path.to_owned(),
        }
    }

    #[test]
    fn lite_stack_logging_and_no_content_from_macos_11() {
        assert_eq!(STACK_LOGGING, ("MallocStackLogging", "lite"));
        assert_eq!(options_for(Some("14.5")), ["-noContent"]);
        assert_eq!(options_for(Some("11.0.1")), ["-noContent"]);
        assert_eq!(options_for(None), ["-noContent"]);
        assert!(options_for(Some("10.15.7")).is_empty());
    }

    #[test]
    fn a_protected_interpreter_is_refused_whatever_started_it() {
        let sip = |p: &Path| crate::platform::under_sip_directory(p);
        // `bundle exec`, an rbenv shim or `#!/usr/bin/env ruby` all end in the system Ruby.
        let system =
            Path::new("/System/Library/Frameworks/Ruby.framework/Versions/2.6/usr/bin/ruby");
        let why = refusal(Some(system), sip).unwrap_err();
        assert!(why.contains(&system.display().to_string()), "{why}");
        assert!(why.contains("--ruby PATH"), "{why}");
        assert!(why.contains("sudo does not change that"), "{why}");
        assert_eq!(
            refusal(
                Some(Path::new("/opt/homebrew/Cellar/ruby/3.4.1/bin/ruby")),
                sip
            ),
            Ok(())
        );
        // The kernel could not say (the process is gone): nothing to refuse.
        assert_eq!(refusal(None, sip), Ok(()));
    }

    #[test]
    fn ffi_library_names_find_their_loaded_image() {
        let images = [
            image("/usr/lib/libSystem.B.dylib"),
            image("/opt/homebrew/Cellar/zeromq/4.3.5_1/lib/libzmq.5.dylib"),
            image("/Users/USER/*/libwidget.dylib"),
        ];
        let found = |name| image_of_library(name, &images).map(|i| i.path.as_str());
        assert_eq!(
            found("libzmq.5.dylib"),
            Some("/opt/homebrew/Cellar/zeromq/4.3.5_1/lib/libzmq.5.dylib")
        );
        assert_eq!(
            found("zmq"),
            Some("/opt/homebrew/Cellar/zeromq/4.3.5_1/lib/libzmq.5.dylib")
        );
        assert_eq!(
            found("libzmq.dylib"),
            Some("/opt/homebrew/Cellar/zeromq/4.3.5_1/lib/libzmq.5.dylib")
        );
        assert_eq!(found("widget"), Some("/Users/USER/*/libwidget.dylib"));
        assert_eq!(found("libffi.8.dylib"), None);
        assert_eq!(found(""), None);
    }

    #[test]
    fn the_sidecar_gets_the_paths_the_agent_could_not_find() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = dir.path().join("agent-002.json");
        std::fs::write(
            &sidecar,
            r#"{"leakhunt_agent":1,"snapshot":2,"ffi":[{"name":"LibZMQ","libraries":[
                {"name":"libzmq","path":null},{"name":"libc","path":"/usr/lib/libc.so.6"}],
                "functions":[]}],"other":{"kept":true}}"#,
        )
        .unwrap();
        let images = [
            image("/opt/homebrew/lib/libzmq.5.dylib"),
            image("/x/libc.dylib"),
        ];
        complete_library_paths(dir.path(), "agent-002.json", &images).unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
        let libraries = &value["ffi"][0]["libraries"];
        assert_eq!(libraries[0]["path"], "/opt/homebrew/lib/libzmq.5.dylib");
        // What the agent found stays; so does everything else in the file.
        assert_eq!(libraries[1]["path"], "/usr/lib/libc.so.6");
        assert_eq!(value["other"]["kept"], true);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sidecar).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No sidecar for that snapshot, or no images: nothing to do.
        complete_library_paths(dir.path(), "agent-003.json", &images).unwrap();
        complete_library_paths(dir.path(), "agent-002.json", &[]).unwrap();
        // A sidecar that is not JSON is named in the error.
        std::fs::write(dir.path().join("agent-004.json"), b"{oops").unwrap();
        let err = complete_library_paths(dir.path(), "agent-004.json", &images).unwrap_err();
        assert!(err.contains("agent-004.json: line 1"), "{err}");
    }
}
