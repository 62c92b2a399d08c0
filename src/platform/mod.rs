//! What differs between operating systems for `leakhunt run` and `leakhunt doctor`: how to read a
//! process's memory footprint, where the LeakSanitizer runtime lives, which Ruby binaries the
//! system protects, and how a child is tied to leakhunt's life.
//!
//! Stage: `run` (the platform layer under the orchestrator). `linux.rs` and `macos.rs` expose the
//! same function names; this file re-exports the one for the OS being built and holds what is
//! the same on every Unix (finding a program on PATH, signal names).
//!
//! # Platform specific behavior
//! - Footprint: Linux reads `VmRSS` from `/proc/PID/status`; macOS asks libproc's
//!   `proc_pid_rusage` for `ri_phys_footprint` (works for a same-user child without entitlements).
//! - Memory maps per snapshot (to place addresses of libraries unloaded later): Linux only.
//! - LSan runtime (`liblsan.so.0`): Linux only. `leaks`: macOS only.
//! - The members of a process group (to list processes of the program that never said hello):
//!   Linux reads `/proc/*/stat`; macOS asks libproc (`proc_listallpids`, `proc_pidinfo`).
//! - A process's executable (to see the Ruby a shim or `bundle exec` ended in): Linux reads
//!   `/proc/PID/exe`, macOS asks libproc's `proc_pidpath`.
//! - Rosetta (`sysctl.proc_translated`) and System Integrity Protection: macOS only; the SIP
//!   directories are a pure path rule tested everywhere.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::*;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod other {
    //! Any other Unix: no footprint, no backend but `none` and `valgrind`.
    use std::path::{Path, PathBuf};

    pub const OS_NAME: &str = std::env::consts::OS;
    pub fn footprint_bytes(_pid: u32) -> Option<u64> {
        None
    }
    pub fn os_version() -> Option<String> {
        None
    }
    pub fn save_memory_map(_pid: u32, _dest: &Path) -> std::io::Result<bool> {
        Ok(false)
    }
    pub fn lsan_runtime() -> Option<PathBuf> {
        None
    }
    pub fn leaks_tool() -> Option<PathBuf> {
        None
    }
    pub fn is_system_protected(_path: &Path) -> bool {
        false
    }
    pub fn executable_path(_pid: u32) -> Option<PathBuf> {
        None
    }
    pub fn translated() -> Option<bool> {
        None
    }
    pub fn die_with_parent() {}
    pub fn group_members(_pgid: u32) -> Vec<super::GroupMember> {
        Vec::new()
    }
}
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub use other::*;

use std::path::{Path, PathBuf};

/// A process seen in the program's process group (for the ones that never said hello).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub pid: u32,
    pub ppid: u32,
    /// Its command line, or its name when the line cannot be read.
    pub command: Vec<String>,
}

/// The first executable called `name` on PATH (or `name` itself when it contains a slash and is
/// executable).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `SIGSEGV` for 11, and so on; `None` for numbers this table does not know.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    let names: &[(i32, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    names.iter().find(|(n, _)| *n == signal).map(|(_, s)| *s)
}

/// Whether `path` (already resolved: no symbolic link left) lies where macOS's System Integrity
/// Protection keeps its own binaries (csrutil(8); `/usr/local` is the one exception under
/// `/usr`). Pure path logic, so it is the same and tested everywhere; `is_system_protected`
/// applies it on macOS only.
pub fn under_sip_directory(path: &Path) -> bool {
    if path.starts_with("/usr/local") {
        return false;
    }
    ["/usr", "/bin", "/sbin", "/System"]
        .iter()
        .any(|dir| path.starts_with(dir))
}

/// The machine's architecture as Rust names it (`x86_64`, `aarch64`).
pub fn arch() -> &'static str {
    std::env::consts::ARCH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_follow_the_platform_numbers() {
        assert_eq!(signal_name(libc::SIGSEGV), Some("SIGSEGV"));
        assert_eq!(signal_name(libc::SIGINT), Some("SIGINT"));
        assert_eq!(signal_name(12345), None);
    }

    #[test]
    fn sip_directories_are_the_systems_own() {
        for protected in [
            "/usr/bin/ruby",
            "/bin/sh",
            "/usr/sbin/DevToolsSecurity",
            "/usr/libexec/ruby",
            "/System/Library/Frameworks/Ruby.framework/Versions/2.6/usr/bin/ruby",
        ] {
            assert!(under_sip_directory(Path::new(protected)), "{protected}");
        }
        for free in [
            "/usr/local/bin/ruby",
            "/opt/homebrew/opt/ruby/bin/ruby",
            "/Users/me/.rbenv/versions/3.3.0/bin/ruby",
            "/usrx/bin/ruby",
            "/Systemic/ruby",
        ] {
            assert!(!under_sip_directory(Path::new(free)), "{free}");
        }
    }

    #[test]
    fn finds_sh_on_path_and_refuses_directories() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("/").is_none());
        assert!(find_in_path("no-such-program-leakhunt").is_none());
    }
}
