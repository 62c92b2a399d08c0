//! Why `leaks` could not examine a process (FORMAT.md §5, §6): the messages it prints, what
//! each means and what to do. Used by the reader (a file holding only such a message is an
//! input error) and by the `run` backend (which sees leaks' stdout, stderr and exit status).
//!
//! Exit status: 0 means no leaks, 1 means leaks were found (a result, not an error), more
//! than 1 means leaks failed.

use super::find;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaksFailureKind {
    /// The process exited (or never started) before leaks looked at it.
    TargetGone,
    /// leaks may not read the process (SIP, hardened runtime, another user's process).
    Permission,
    /// The target uses AddressSanitizer, whose malloc zone leaks cannot analyse.
    AddressSanitizer,
    /// leaks is waiting for an administrator password to enable Developer Mode.
    AuthorizationPrompt,
    /// `-atExit`: dyld could not insert `libLeaksAtExit.dylib` into the target.
    AtExitLibraryMissing,
    /// Exit status above 1 with no message this reader knows.
    Other,
}

/// One failure of `leaks`, with the line it printed and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaksFailure {
    pub kind: LeaksFailureKind,
    /// The message as leaks printed it (without the `leaks[PID]: ` prefix).
    pub message: String,
    /// One line saying what to do next.
    pub advice: &'static str,
}

impl LeaksFailure {
    /// The message and the advice as one notice for a report that was still produced.
    pub fn notice(&self) -> String {
        format!("{} ({})", self.message, self.advice)
    }
}

impl fmt::Display for LeaksFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leaks failed: {} ({})", self.message, self.advice)
    }
}

const ADVICE_TARGET_GONE: &str = "the process had already exited: examine it while it runs \
     (stop it with SIGSTOP at the point of interest) or use `leaks --atExit -- PROGRAM`";
// leaks' own message says "try running with sudo"; that is wrong advice here: sudo does not
// get past System Integrity Protection, and `sudo leakhunt run` would run the program as root,
// with sudo's PATH (another Ruby), and leave a bundle owned by root.
const ADVICE_PERMISSION: &str = "leaks may not examine this process: when it is the \
     SIP-protected system Ruby (/usr/bin/ruby, also behind an rbenv or asdf shim), run a Ruby you \
     installed (Homebrew, rbenv, asdf) with --ruby; otherwise it must run as your own user, and \
     `leakhunt doctor` checks that the developer tools may examine your processes. sudo does \
     not get past SIP";
const ADVICE_ASAN: &str = "the target is built with AddressSanitizer, which leaks cannot \
     analyse: run it without ASan, or use the lsan backend";
const ADVICE_PROMPT: &str = "leaks is asking for an administrator's password to enter \
     Developer Mode, which it cannot get while the program holds the terminal: run \
     `sudo DevToolsSecurity -enable` once and use an account in the admin or _developer group \
     (`sudo dseditgroup -o edit -a $USER -t user _developer`), then retry";
const ADVICE_AT_EXIT: &str = "dyld could not insert libLeaksAtExit.dylib: use /usr/bin/leaks, \
     or link it with `ln -s $(xcode-select -p)/usr/lib/libLeaksAtExit.dylib /usr/local/lib`";
const ADVICE_OTHER: &str = "see leaks' own message; exit status 1 alone would only mean \
     that leaks were found";

/// Message fragments and what they mean, checked in order (first match wins).
const PATTERNS: &[(&[&[u8]], LeaksFailureKind)] = &[
    (
        &[
            b"cannot examine process",
            b"no longer appears to be running",
        ],
        LeaksFailureKind::TargetGone,
    ),
    (
        &[b"[fatal] process ", b"has not started"],
        LeaksFailureKind::TargetGone,
    ),
    (&[b"process does not exist"], LeaksFailureKind::TargetGone),
    (&[b"cannot examine process"], LeaksFailureKind::Permission),
    (
        &[b"Failed to get DYLD info for task"],
        LeaksFailureKind::Permission,
    ),
    (
        &[b"mach port for process", b"not valid"],
        LeaksFailureKind::Permission,
    ),
    (
        &[b"Can't examine target process's malloc zone"],
        LeaksFailureKind::AddressSanitizer,
    ),
    (
        &[b"target process is using Address Sanitizer"],
        LeaksFailureKind::AddressSanitizer,
    ),
    (
        &[b"admin user name and password is required"],
        LeaksFailureKind::AuthorizationPrompt,
    ),
    (
        &[b"could not load inserted library", b"libLeaksAtExit"],
        LeaksFailureKind::AtExitLibraryMissing,
    ),
];

fn advice(kind: LeaksFailureKind) -> &'static str {
    match kind {
        LeaksFailureKind::TargetGone => ADVICE_TARGET_GONE,
        LeaksFailureKind::Permission => ADVICE_PERMISSION,
        LeaksFailureKind::AddressSanitizer => ADVICE_ASAN,
        LeaksFailureKind::AuthorizationPrompt => ADVICE_PROMPT,
        LeaksFailureKind::AtExitLibraryMissing => ADVICE_AT_EXIT,
        LeaksFailureKind::Other => ADVICE_OTHER,
    }
}

/// Removes the `leaks[PID]: ` prefix leaks puts on its own messages.
pub(super) fn strip_leaks_prefix(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"leaks[")?;
    let close = rest.iter().position(|&b| b == b']')?;
    if close == 0 || !rest[..close].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(rest[close + 1..].strip_prefix(b":")?.trim_ascii_start())
}

/// The failure one line reports, if any.
pub(super) fn failure_line(line: &[u8]) -> Option<LeaksFailure> {
    let text = strip_leaks_prefix(line).unwrap_or(line).trim_ascii();
    let kind = PATTERNS.iter().find_map(|(fragments, kind)| {
        fragments
            .iter()
            .all(|f| find(text, f).is_some())
            .then_some(*kind)
    })?;
    Some(LeaksFailure {
        kind,
        message: String::from_utf8_lossy(text).into_owned(),
        advice: advice(kind),
    })
}

/// leaks stopped (SIGTTIN) reading the terminal from leakhunt's background process group:
/// the Developer Mode password prompt of DevToolsSecurity(8), the only input leaks asks for.
pub fn stopped_for_input(signal: &str) -> LeaksFailure {
    LeaksFailure {
        kind: LeaksFailureKind::AuthorizationPrompt,
        message: format!("leaks stopped ({signal}) waiting for input from the terminal"),
        advice: ADVICE_PROMPT,
    }
}

/// leaks still ran at its deadline. A large process takes long; so does a Developer Mode
/// authorization dialog nobody answers (in a graphical session the prompt is a dialog, not
/// the terminal). `knob` is the setting that allows more time.
pub fn timed_out(seconds: u64, knob: &str) -> LeaksFailure {
    LeaksFailure {
        kind: LeaksFailureKind::Other,
        message: format!("leaks did not finish within {seconds} s ({knob} allows more)"),
        advice: ADVICE_SLOW,
    }
}

const ADVICE_SLOW: &str = "leaks takes long on a large process; if an authorization dialog \
     for Developer Mode appeared meanwhile, enable it once with `sudo DevToolsSecurity -enable` \
     (`leakhunt doctor` checks)";

/// A message of leaks' own (`leaks[PID]: …`) that this reader does not know.
pub(super) fn other(message: &[u8]) -> LeaksFailure {
    LeaksFailure {
        kind: LeaksFailureKind::Other,
        message: String::from_utf8_lossy(message.trim_ascii()).into_owned(),
        advice: ADVICE_OTHER,
    }
}

/// What went wrong with one run of `leaks`, from its two streams and its exit status (`None`
/// when it was killed by a signal). `None` means it worked: exit 0 (no leaks) or 1 (leaks
/// found) with no failure message. A run whose analysis is unreliable (ASan) is a failure
/// whatever its status.
pub fn classify_failure(stdout: &[u8], stderr: &[u8], status: Option<i32>) -> Option<LeaksFailure> {
    let recognised = [stderr, stdout]
        .into_iter()
        .flat_map(|stream| stream.split(|&b| b == b'\n'))
        .find_map(failure_line);
    if recognised.is_some() {
        return recognised;
    }
    let message = match status {
        Some(0 | 1) => return None,
        Some(code) => {
            let last = last_line(stderr).or_else(|| last_line(stdout));
            match last {
                Some(line) => format!(
                    "exit status {code}: {}",
                    String::from_utf8_lossy(strip_leaks_prefix(line).unwrap_or(line))
                ),
                None => format!("exit status {code} and no message"),
            }
        }
        None => "leaks was killed by a signal".to_owned(),
    };
    Some(LeaksFailure {
        kind: LeaksFailureKind::Other,
        message,
        advice: ADVICE_OTHER,
    })
}

fn last_line(stream: &[u8]) -> Option<&[u8]> {
    stream
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .rfind(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_of_format_md_section_6() {
        let cases: [(&[u8], LeaksFailureKind); 9] = [
            (b"leaks[123]: leaks cannot examine process 55555 (with name like '55555') because it no longer appears to be running.", LeaksFailureKind::TargetGone),
            (b"[fatal] process 4812 has not started", LeaksFailureKind::TargetGone),
            (b"leaks cannot examine process (minishell) for unknown reasons; try running with `sudo`.", LeaksFailureKind::Permission),
            (b"leaks cannot examine process 613 because you do not have appropriate privileges", LeaksFailureKind::Permission),
            (b"Failed to get DYLD info for task from parent 77: (os/kern) failure (5)", LeaksFailureKind::Permission),
            (b"Can't examine target process's malloc zone asan_0x10e4c4000, so memory analysis will be incomplete or incorrect.", LeaksFailureKind::AddressSanitizer),
            (b"An admin user name and password is required to enter Developer Mode.", LeaksFailureKind::AuthorizationPrompt),
            (b"dyld[555]: could not load inserted library '/usr/local/lib/libLeaksAtExit.dylib' because no suitable image found.", LeaksFailureKind::AtExitLibraryMissing),
            (b"mach port for process 0 not valid", LeaksFailureKind::Permission),
        ];
        for (line, kind) in cases {
            let failure = classify_failure(b"", line, Some(2)).unwrap();
            assert_eq!(failure.kind, kind, "{}", String::from_utf8_lossy(line));
            assert!(!failure.advice.is_empty());
        }
        let f = failure_line(b"leaks[8]: leaks cannot examine process 1 (launchd) because you do not have appropriate privileges").unwrap();
        assert!(
            f.message.starts_with("leaks cannot examine process 1"),
            "{}",
            f.message
        );
    }

    #[test]
    fn exit_status_one_means_leaks_found() {
        let report = b"Process 1: 1 leak for 16 total leaked bytes.\n";
        assert_eq!(classify_failure(report, b"", Some(1)), None);
        assert_eq!(classify_failure(report, b"", Some(0)), None);
        let f = classify_failure(b"", b"leaks: something odd\n\n", Some(3)).unwrap();
        assert_eq!(f.kind, LeaksFailureKind::Other);
        assert_eq!(f.message, "exit status 3: leaks: something odd");
        let f = classify_failure(b"", b"", None).unwrap();
        assert_eq!(f.message, "leaks was killed by a signal");
        // ASan makes the analysis unreliable even when leaks exits 0.
        let asan = b"Reason: target process is using Address Sanitizer which doesn't work with memory analysis tools\n";
        assert_eq!(
            classify_failure(b"", asan, Some(0)).map(|f| f.kind),
            Some(LeaksFailureKind::AddressSanitizer)
        );
    }
}
