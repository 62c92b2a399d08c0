//! Linux: `/proc` for footprint and memory maps, gcc's LeakSanitizer runtime, parent-death signal.

use std::path::{Path, PathBuf};

pub const OS_NAME: &str = "linux";

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/PID/status`); `None` once it is gone.
pub fn footprint_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read(format!("/proc/{pid}/status")).ok()?;
    vm_rss_bytes(&status)
}

/// Reads the `VmRSS:   1234 kB` line.
fn vm_rss_bytes(status: &[u8]) -> Option<u64> {
    let line = status
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"VmRSS:"))?;
    let text = std::str::from_utf8(&line[6..]).ok()?;
    let kb: u64 = text.trim().trim_end_matches("kB").trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// `uname -r`.
pub fn os_version() -> Option<String> {
    // SAFETY: `uname` fills the zeroed struct we own; the fields are NUL-terminated C strings.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return None;
        }
        let release = std::ffi::CStr::from_ptr(u.release.as_ptr());
        Some(release.to_string_lossy().into_owned())
    }
}

/// Copies `/proc/PID/maps` to `dest` (0600). `Ok(false)` when the process is gone.
pub fn save_memory_map(pid: u32, dest: &Path) -> std::io::Result<bool> {
    let maps = match std::fs::read(format!("/proc/{pid}/maps")) {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    crate::bundle::write_private_atomic(dest, &maps)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(true)
}

/// gcc's standalone LeakSanitizer runtime (`liblsan.so.0`, Debian package `liblsan0`): what
/// gcc says, else the usual library directories. (The `LEAKHUNT_LSAN_RUNTIME` override is the
/// lsan backend's.)
pub fn lsan_runtime() -> Option<PathBuf> {
    if let Some(p) = gcc_says("liblsan.so.0") {
        return Some(p);
    }
    let triplet = format!("{}-linux-gnu", super::arch());
    [
        format!("/usr/lib/{triplet}"),
        format!("/lib/{triplet}"),
        "/usr/lib64".to_owned(),
        "/usr/lib".to_owned(),
        "/usr/local/lib".to_owned(),
    ]
    .iter()
    .map(|dir| Path::new(dir).join("liblsan.so.0"))
    .find(|p| p.is_file())
}

/// `gcc -print-file-name=NAME` answers a full path only when it knows the file.
fn gcc_says(name: &str) -> Option<PathBuf> {
    let gcc = super::find_in_path("gcc")?;
    let out = std::process::Command::new(gcc)
        .arg(format!("-print-file-name={name}"))
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(text.trim());
    (path.is_absolute() && path.is_file()).then(|| path.canonicalize().unwrap_or(path))
}

/// `leaks(1)` exists only on macOS.
pub fn leaks_tool() -> Option<PathBuf> {
    None
}

/// No Linux distribution hides its Ruby from these tools.
pub fn is_system_protected(_path: &Path) -> bool {
    false
}

/// The executable file of process `pid` (`/proc/PID/exe`).
pub fn executable_path(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Rosetta is macOS's.
pub fn translated() -> Option<bool> {
    None
}

/// Called in the child between fork and exec: the child gets SIGKILL if leakhunt dies without
/// cleaning up (for example killed with SIGKILL itself), so it is never left running.
pub fn die_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes an integer signal; it is async-signal-safe,
    // as required between fork and exec.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// The live processes of process group `pgid`, from `/proc/*/stat` (zombies left out).
pub fn group_members(pgid: u32) -> Vec<super::GroupMember> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read(entry.path().join("stat")) else {
            continue;
        };
        let Some((name, ppid, group)) = parse_stat(&stat) else {
            continue;
        };
        if group != pgid {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let mut command: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if command.is_empty() {
            command.push(name);
        }
        out.push(super::GroupMember { pid, ppid, command });
    }
    out.sort_by_key(|m| m.pid);
    out
}

/// (name, ppid, pgrp) of a live process from its `stat` line: `pid (comm) state ppid pgrp …`,
/// where comm may hold spaces and parentheses (so the fields follow the last ')').
fn parse_stat(stat: &[u8]) -> Option<(String, u32, u32)> {
    let open = memchr::memchr(b'(', stat)?;
    let close = memchr::memrchr(b')', stat)?;
    let name = String::from_utf8_lossy(stat.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((name, ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = b"Name:\truby\nVmPeak:\t  99 kB\nVmRSS:\t   13712 kB\nThreads:\t2\n";
        assert_eq!(vm_rss_bytes(status), Some(13712 * 1024));
        assert_eq!(vm_rss_bytes(b"Name:\tzombie\n"), None);
        assert_eq!(vm_rss_bytes(b"VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn stat_lines_give_name_parent_and_group() {
        assert_eq!(
            parse_stat(b"4242 (ruby: a (b) c) S 4200 4200 4200 0 -1 4194560"),
            Some(("ruby: a (b) c".into(), 4200, 4200))
        );
        assert_eq!(parse_stat(b"4242 (ruby) Z 4200 4200 4200"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn a_group_lists_its_members_with_their_command_lines() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        // Until both have exec'd (a fork not yet exec'd still shows its parent's command).
        let listed = |members: &[crate::platform::GroupMember]| {
            members
                .iter()
                .any(|m| m.pid == pgid && m.command[0] == "sh")
                && members
                    .iter()
                    .any(|m| m.ppid == pgid && m.command == ["sleep", "30"])
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut members = group_members(pgid);
        while !listed(&members) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
            members = group_members(pgid);
        }
        // SAFETY: kill(2) on the group this test created.
        unsafe {
            libc::kill(-(pgid as i32), libc::SIGKILL);
        }
        let _ = child.wait();
        assert!(listed(&members), "{members:?}");
    }

    #[test]
    fn the_executable_of_a_process_is_the_one_it_runs() {
        let me = executable_path(std::process::id()).unwrap();
        assert_eq!(me, std::env::current_exe().unwrap());
        assert_eq!(executable_path(u32::MAX), None);
    }

    #[test]
    fn own_process_has_a_footprint_and_a_map() {
        let me = std::process::id();
        assert!(footprint_bytes(me).unwrap() > 1024 * 1024);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("maps.txt");
        assert!(save_memory_map(me, &dest).unwrap());
        let text = std::fs::read_to_string(&dest).unwrap();
        assert!(text.contains("[stack]"), "{text}");
    }
}
