//! `leakhunt doctor`: checks this machine for what `leakhunt run` needs — a Ruby (and whether
//! macOS protects it), the Ruby libraries the agent loads, the ffi gem, each native backend's
//! tools, and for `leaks` whether it may examine a Ruby of doctor's own — and says what to fix.
//! Exit 0 when `run` can work with the chosen (default: auto) backend, 3 when it cannot.

use crate::cli::{BackendChoice, DoctorArgs};
use crate::error::{Result, exit};
use crate::run::backend;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    /// Works, with a caveat.
    Warn,
    /// `run` cannot work with the chosen backend until this is fixed.
    Fail,
    /// Not available, but not needed for the chosen backend.
    Absent,
}

struct Check {
    status: Status,
    what: &'static str,
    detail: String,
}

fn check(status: Status, what: &'static str, detail: impl Into<String>) -> Check {
    Check {
        status,
        what,
        detail: detail.into(),
    }
}

pub fn run(args: DoctorArgs) -> Result<i32> {
    let chosen = match args.backend {
        BackendChoice::Auto => backend::default_choice(),
        other => other,
    };
    let mut checks = Vec::new();
    let ruby = check_ruby(args.ruby.as_deref(), chosen, &mut checks);
    if let Some(ruby) = &ruby {
        check_ruby_libraries(ruby, chosen, &mut checks);
    }
    for (choice, what) in [
        (BackendChoice::Lsan, "backend lsan"),
        (BackendChoice::Valgrind, "backend valgrind"),
        (BackendChoice::Leaks, "backend leaks"),
    ] {
        let is_chosen = choice == chosen;
        checks.push(match backend::availability(choice) {
            Ok(tool) if is_chosen => check(Status::Ok, what, format!("{tool} (chosen)")),
            Ok(tool) => check(Status::Ok, what, tool),
            Err(advice) if is_chosen => check(Status::Fail, what, advice),
            Err(advice) => check(Status::Absent, what, advice),
        });
    }
    if chosen == BackendChoice::Leaks {
        checks.extend(check_developer_tools());
        if let (Some(ruby), Ok(tool)) = (&ruby, backend::leaks::tool()) {
            checks.push(trial_leaks(&tool, ruby));
        }
    }
    if crate::platform::translated() == Some(true) {
        checks.push(check(
            Status::Warn,
            "Rosetta",
            "this leakhunt is an x86_64 build translated by Rosetta on Apple silicon: the leaks \
             it starts runs translated too, against a native arm64 Ruby; use the universal \
             (or arm64) build",
        ));
    }
    checks.push(check_tmpdir());

    for c in &checks {
        let word = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Absent => "--",
        };
        println!("{word:<5} {:<17} {}", c.what, c.detail);
    }
    let name = backend_name(chosen);
    if checks.iter().any(|c| c.status == Status::Fail) {
        println!("`leakhunt run --backend {name}` cannot work here yet: fix the FAIL lines above.");
        Ok(exit::BACKEND)
    } else {
        println!("`leakhunt run --backend {name}` can work here.");
        Ok(exit::OK)
    }
}

fn backend_name(choice: BackendChoice) -> &'static str {
    match choice {
        BackendChoice::Auto => "auto",
        BackendChoice::Leaks => "leaks",
        BackendChoice::Lsan => "lsan",
        BackendChoice::Valgrind => "valgrind",
        BackendChoice::None => "none",
    }
}

/// Finds the Ruby, reports its version, and whether `leaks` may examine it.
fn check_ruby(
    given: Option<&Path>,
    chosen: BackendChoice,
    checks: &mut Vec<Check>,
) -> Option<PathBuf> {
    let found = match given {
        Some(p) => crate::platform::find_in_path(&p.to_string_lossy()),
        None => crate::platform::find_in_path("ruby"),
    };
    let Some(ruby) = found else {
        checks.push(check(
            Status::Fail,
            "ruby",
            match given {
                Some(p) => format!("{} is not an executable", p.display()),
                None => "no ruby on PATH: install Ruby 3.1 or later (or pass --ruby PATH)".into(),
            },
        ));
        return None;
    };
    let version = ruby_eval(&ruby, "print RUBY_VERSION");
    let description = ruby_eval(&ruby, "print RUBY_DESCRIPTION").unwrap_or_default();
    match version.as_deref().map(parse_version) {
        None => checks.push(check(
            Status::Fail,
            "ruby",
            format!("{} does not run", ruby.display()),
        )),
        Some(Some((major, minor))) if (major, minor) < (3, 1) => checks.push(check(
            Status::Fail,
            "ruby",
            format!(
                "{} is Ruby {major}.{minor}: the agent needs 3.1 or later",
                ruby.display()
            ),
        )),
        Some(Some((major, minor))) if (major, minor) > (3, 4) => checks.push(check(
            Status::Warn,
            "ruby",
            format!(
                "{} — {description}: newer than the 3.4 the agent was tested with",
                ruby.display()
            ),
        )),
        _ => checks.push(check(
            Status::Ok,
            "ruby",
            format!("{} — {description}", ruby.display()),
        )),
    }
    // A shim (rbenv, asdf) or wrapper is not the interpreter: ask Ruby where it lives.
    let interpreter = ruby_eval(&ruby, "print RbConfig.ruby")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let protected = [Some(ruby.as_path()), interpreter.as_deref()]
        .into_iter()
        .flatten()
        .find(|p| crate::platform::is_system_protected(p));
    if let Some(protected) = protected {
        let status = if chosen == BackendChoice::Leaks {
            Status::Fail
        } else {
            Status::Warn
        };
        let via = if protected == ruby {
            String::new()
        } else {
            format!(" (what {} runs)", ruby.display())
        };
        checks.push(check(
            status,
            "ruby (SIP)",
            format!(
                "{}{via} is protected by System Integrity Protection: leaks cannot examine it, \
                 even with sudo; install a Ruby with Homebrew, rbenv or asdf and pass --ruby",
                protected.display()
            ),
        ));
    }
    Some(ruby)
}

/// Developer Mode (DevToolsSecurity(8)): unless it is enabled and the user is in the admin or
/// _developer group, the first `leaks` of a login session asks for an administrator's
/// password — which leaks, in leakhunt's background process group, cannot read. Nothing to
/// check where DevToolsSecurity does not exist (not macOS).
fn check_developer_tools() -> Option<Check> {
    let tool = Path::new("/usr/sbin/DevToolsSecurity");
    if !tool.is_file() {
        return None;
    }
    let output = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let status = output(tool, &["-status"]);
    let groups = output(Path::new("/usr/bin/id"), &["-Gn"]);
    Some(developer_tools(status.as_deref(), groups.as_deref()))
}

/// The Developer Mode check from `DevToolsSecurity -status` and `id -Gn` outputs.
fn developer_tools(status: Option<&str>, groups: Option<&str>) -> Check {
    let enabled = status.and_then(|s| {
        let s = s.to_ascii_lowercase();
        if s.contains("disabled") {
            Some(false)
        } else if s.contains("enabled") {
            Some(true)
        } else {
            None
        }
    });
    let member = groups.map(|g| {
        g.split_whitespace()
            .any(|group| group == "admin" || group == "_developer")
    });
    let fix = "run `sudo DevToolsSecurity -enable` once, as a user in the admin or _developer \
               group (`sudo dseditgroup -o edit -a $USER -t user _developer`)";
    match (enabled, member) {
        (Some(true), Some(true)) => check(
            Status::Ok,
            "developer mode",
            "enabled, and you are in the admin or _developer group: leaks asks for no password",
        ),
        (Some(false), _) | (_, Some(false)) => check(
            Status::Warn,
            "developer mode",
            format!(
                "the first leaks of each login session will ask for an administrator's password, \
                 which it cannot read during a run (the snapshot fails after waiting): {fix}"
            ),
        ),
        _ => check(
            Status::Warn,
            "developer mode",
            format!("cannot tell whether leaks will ask for a password: {fix}"),
        ),
    }
}

/// Runs `leaks` on a Ruby child of doctor's own (not `/bin/sleep`: SIP protects it), as `run`
/// does at a snapshot: in doctor's process group with stdin on /dev/null, so a password prompt
/// stops it, and with the same deadline.
fn trial_leaks(tool: &Path, ruby: &Path) -> Check {
    const WHAT: &str = "leaks trial";
    let mut target = match Command::new(ruby)
        .args(["-e", "$stdout.puts(:ready); $stdout.flush; sleep 120"])
        .env_remove("RUBYOPT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return check(
                Status::Fail,
                WHAT,
                format!("cannot start {}: {e}", ruby.display()),
            );
        }
    };
    // The Ruby is examinable once it runs its own code.
    let mut line = String::new();
    if let Some(out) = target.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let result = run_leaks_once(tool, target.id());
    let _ = target.kill();
    let _ = target.wait();
    match result {
        Ok(detail) => check(Status::Ok, WHAT, detail),
        Err(why) => check(Status::Fail, WHAT, why),
    }
}

/// One `leaks PID` with `run`'s options and deadline: what it found, or why it failed.
fn run_leaks_once(tool: &Path, pid: u32) -> std::result::Result<String, String> {
    let scratch =
        tempfile::tempdir().map_err(|e| format!("cannot make a scratch directory: {e}"))?;
    let code = backend::leaks::run_leaks(
        tool,
        &backend::leaks::options(),
        pid,
        &scratch.path().join("leaks.txt"),
        scratch.path(),
        backend::leaks::deadline(),
    )?;
    Ok(format!(
        "{} examined a Ruby of doctor's own (pid {pid}; exit status {code})",
        tool.display()
    ))
}

/// The libraries the agent loads, the ffi gem, and fiddle for the LSan check.
fn check_ruby_libraries(ruby: &Path, chosen: BackendChoice, checks: &mut Vec<Check>) {
    checks.push(
        match ruby_eval(ruby, "require 'objspace'; require 'socket'; print 'ok'") {
            Some(_) => check(Status::Ok, "agent libraries", "objspace, socket"),
            None => check(
                Status::Fail,
                "agent libraries",
                "this Ruby cannot load objspace and socket, which the agent needs: reinstall Ruby",
            ),
        },
    );
    let lsan = chosen == BackendChoice::Lsan;
    checks.push(match ruby_eval(ruby, "require 'fiddle'; print 'ok'") {
        Some(_) => check(Status::Ok, "fiddle", "loads (the agent calls LSan through it)"),
        None => check(
            if lsan { Status::Fail } else { Status::Absent },
            "fiddle",
            "this Ruby cannot load fiddle, which the lsan backend needs: install libffi and rebuild Ruby",
        ),
    });
    checks.push(match ruby_eval(ruby, "require 'ffi'; print FFI::VERSION") {
        Some(v) => check(Status::Ok, "ffi gem", v),
        None => check(
            Status::Warn,
            "ffi gem",
            "not installed: fine for programs without FFI; programs using it need `gem install ffi` \
             (Debian: apt-get install ruby-ffi)",
        ),
    });
}

/// The run's private directory and socket go under TMPDIR, or /tmp when TMPDIR's path would
/// not do: made here as `run` makes it (and removed).
fn check_tmpdir() -> Check {
    let tmpdir = std::env::temp_dir();
    let text = tmpdir.display().to_string();
    match crate::run::agent::private_dir() {
        Ok(dir) if dir.path().starts_with(&tmpdir) => check(Status::Ok, "TMPDIR", text),
        Ok(dir) => check(
            Status::Ok,
            "TMPDIR",
            format!(
                "{text} would not do for the agent's socket ({}): runs use {} instead",
                crate::run::agent::unusable(&tmpdir.join("leakhunt-XXXXXX"))
                    .unwrap_or_else(|| "not usable".into()),
                dir.path().parent().unwrap_or(Path::new("/tmp")).display()
            ),
        ),
        Err(e) => check(Status::Fail, "TMPDIR", e.to_string()),
    }
}

/// Runs `ruby -e CODE` (without RUBYOPT); its stdout when it succeeds.
fn ruby_eval(ruby: &Path, code: &str) -> Option<String> {
    let out = Command::new(ruby)
        .args(["-e", code])
        .env_remove("RUBYOPT")
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// "3.1.2" → (3, 1).
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn developer_mode_needs_the_setting_and_the_group() {
        let enabled = Some("Developer mode is currently enabled.\n");
        let disabled = Some("Developer mode is currently disabled.\n");
        let admin = Some("staff everyone localaccounts _appserverusr admin _lpadmin\n");
        let developer = Some("staff everyone _developer\n");
        let neither = Some("staff everyone localaccounts\n");
        assert_eq!(developer_tools(enabled, admin).status, Status::Ok);
        assert_eq!(developer_tools(enabled, developer).status, Status::Ok);
        let c = developer_tools(disabled, admin);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("DevToolsSecurity -enable"),
            "{}",
            c.detail
        );
        assert_eq!(developer_tools(enabled, neither).status, Status::Warn);
        let c = developer_tools(None, admin);
        assert!(c.detail.starts_with("cannot tell"), "{}", c.detail);
        // "_developers" is not "_developer".
        assert_eq!(
            developer_tools(enabled, Some("_developers staff")).status,
            Status::Warn
        );
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(parse_version("3.1.2"), Some((3, 1)));
        assert_eq!(parse_version("3.4.0-preview1"), Some((3, 4)));
        assert_eq!(parse_version("ruby"), None);
    }
}
