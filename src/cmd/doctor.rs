//! `leakhunt doctor`: checks this machine for what `leakhunt run` needs — a Ruby (and whether
//! macOS protects it), the Ruby libraries the agent loads, the ffi gem, each native backend's
//! tools — and says what to fix. Exit 0 when `run` can work with the chosen (default: auto)
//! backend, 3 when it cannot.

use crate::cli::{BackendChoice, DoctorArgs};
use crate::error::{Result, exit};
use crate::run::backend;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    if crate::platform::is_system_protected(&ruby) {
        let status = if chosen == BackendChoice::Leaks {
            Status::Fail
        } else {
            Status::Warn
        };
        checks.push(check(
            status,
            "ruby (SIP)",
            format!(
                "{} is protected by System Integrity Protection: leaks cannot examine it; install \
                 a Ruby with Homebrew, rbenv or asdf and pass --ruby",
                ruby.display()
            ),
        ));
    }
    Some(ruby)
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

/// The run's private directory and socket go under TMPDIR.
fn check_tmpdir() -> Check {
    let dir = std::env::temp_dir();
    let text = dir.display().to_string();
    if text.contains(char::is_whitespace) {
        return check(
            Status::Fail,
            "TMPDIR",
            format!(
                "{text} has a space, which RUBYOPT cannot carry: set TMPDIR to a path without spaces"
            ),
        );
    }
    // A Unix socket path is limited to about 100 bytes.
    if text.len() > 80 {
        return check(
            Status::Fail,
            "TMPDIR",
            format!("{text} is too long for a Unix socket path: set TMPDIR to a shorter directory"),
        );
    }
    match tempfile::tempdir() {
        Ok(_) => check(Status::Ok, "TMPDIR", text),
        Err(e) => check(Status::Fail, "TMPDIR", format!("{text}: {e}")),
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
    fn versions_compare_by_major_and_minor() {
        assert_eq!(parse_version("3.1.2"), Some((3, 1)));
        assert_eq!(parse_version("3.4.0-preview1"), Some((3, 4)));
        assert_eq!(parse_version("ruby"), None);
    }
}
