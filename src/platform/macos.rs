//! macOS: libproc for the footprint, `leaks(1)`, System Integrity Protection.
//!
//! Written from the libc crate's documentation of the Apple bindings; it cannot run on the Linux
//! machines leakhunt is developed on (only type-checked there, with
//! `cargo clippy --target x86_64-apple-darwin`), so it stays this small. The footprint comes from
//! libproc's `proc_pid_rusage` (`ri_phys_footprint`, the number Activity Monitor shows) rather than
//! mach `task_info(TASK_VM_INFO)`: `task_info` needs a task port from `task_for_pid`, which macOS
//! refuses without the debugger entitlement or root even for our own child, while
//! `proc_pid_rusage` works for any process of the same user.

use std::path::{Path, PathBuf};

pub const OS_NAME: &str = "macos";

/// Physical footprint of `pid` in bytes; `None` once it is gone.
pub fn footprint_bytes(pid: u32) -> Option<u64> {
    let pid = libc::c_int::try_from(pid).ok()?;
    // SAFETY: rusage_info_v2 is plain data (integers and a byte array), so all-zero is valid.
    let mut info: libc::rusage_info_v2 = unsafe { std::mem::zeroed() };
    // SAFETY: for flavor RUSAGE_INFO_V2 the kernel writes one rusage_info_v2 into the buffer,
    // which is that struct, owned by us and alive for the call.
    let rc = unsafe {
        libc::proc_pid_rusage(
            pid,
            libc::RUSAGE_INFO_V2,
            &mut info as *mut libc::rusage_info_v2 as *mut libc::rusage_info_t,
        )
    };
    (rc == 0).then_some(info.ri_phys_footprint)
}

/// The product version (`sw_vers -productVersion`, e.g. "14.5").
pub fn os_version() -> Option<String> {
    let out = std::process::Command::new("sw_vers")
        .arg("-productVersion")
        .output()
        .ok()?;
    let v = String::from_utf8(out.stdout).ok()?;
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// macOS has no `/proc/PID/maps`; `leaks` reports carry their own Binary Images.
pub fn save_memory_map(_pid: u32, _dest: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// The standalone LeakSanitizer runtime is not shipped for macOS.
pub fn lsan_runtime() -> Option<PathBuf> {
    None
}

/// `/usr/bin/leaks` (installed with the Command Line Tools).
pub fn leaks_tool() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/leaks");
    p.is_file().then_some(p)
}

/// Whether `path` is a binary under System Integrity Protection (`/usr/bin/ruby` is): such a
/// process cannot be examined by `leaks`, and DYLD_* variables are stripped when it starts.
pub fn is_system_protected(path: &Path) -> bool {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    super::under_sip_directory(&real)
}

/// The executable file of process `pid`, as the kernel knows it (libproc's `proc_pidpath`,
/// which xnu answers for any process, `bsd/kern/proc_info.c` `PROC_PIDPATHINFO`): a shim or
/// wrapper that exec'ed Ruby is gone by then, so this is the Ruby that runs the agent.
pub fn executable_path(pid: u32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let pid = libc::c_int::try_from(pid).ok()?;
    let mut buffer = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
    // SAFETY: the buffer is ours, writable and PROC_PIDPATHINFO_MAXSIZE bytes long, the size
    // passed; proc_pidpath writes a NUL-terminated path into it and returns its length (0 on
    // failure).
    let len = unsafe {
        libc::proc_pidpath(
            pid,
            buffer.as_mut_ptr().cast(),
            libc::PROC_PIDPATHINFO_MAXSIZE as u32,
        )
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n > 0 && n <= buffer.len())?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&buffer[..len])))
}

/// Whether leakhunt itself runs translated by Rosetta (`sysctl.proc_translated` is 1): an
/// x86_64 build on Apple silicon, whose `leaks` would examine a native arm64 Ruby from a
/// translated process. `Some(false)` on Intel Macs, where the name does not exist (ENOENT).
pub fn translated() -> Option<bool> {
    let mut value: libc::c_int = 0;
    let mut size = std::mem::size_of::<libc::c_int>();
    // SAFETY: the name is a NUL-terminated literal; `value` and `size` are ours and describe
    // an int-sized buffer, which is what this sysctl returns; nothing is written to the kernel.
    let rc = unsafe {
        libc::sysctlbyname(
            c"sysctl.proc_translated".as_ptr(),
            (&mut value as *mut libc::c_int).cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc == 0 {
        Some(value == 1)
    } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
        Some(false)
    } else {
        None
    }
}

/// macOS has no parent-death signal; leakhunt's guard kills the process group instead.
pub fn die_with_parent() {}

/// The live processes of process group `pgid`, from libproc (`proc_listallpids`, then
/// `proc_pidinfo(PROC_PIDTBSDINFO)` for each: group, parent and name).
pub fn group_members(pgid: u32) -> Vec<super::GroupMember> {
    // SAFETY: a null buffer asks proc_listallpids for the number of processes only.
    let count = unsafe { libc::proc_listallpids(std::ptr::null_mut(), 0) };
    let Ok(count) = usize::try_from(count) else {
        return Vec::new();
    };
    let mut pids: Vec<libc::c_int> = vec![0; count + 16];
    let bytes = libc::c_int::try_from(pids.len() * std::mem::size_of::<libc::c_int>())
        .unwrap_or(libc::c_int::MAX);
    // SAFETY: `pids` is a buffer of `bytes` bytes that lives across the call; libproc writes
    // at most that many and returns how many pids it wrote.
    let written = unsafe { libc::proc_listallpids(pids.as_mut_ptr().cast(), bytes) };
    pids.truncate(usize::try_from(written).unwrap_or(0));
    let mut out = Vec::new();
    for pid in pids {
        // SAFETY: proc_bsdinfo is plain data; all-zero is a valid value.
        let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
        // SAFETY: for PROC_PIDTBSDINFO the kernel writes one proc_bsdinfo into the buffer we
        // own, of the size given.
        let got = unsafe {
            libc::proc_pidinfo(
                pid,
                libc::PROC_PIDTBSDINFO,
                0,
                (&mut info as *mut libc::proc_bsdinfo).cast(),
                size,
            )
        };
        // SZOMB (5): a zombie is not running.
        if got != size || info.pbi_pgid != pgid || info.pbi_status == 5 {
            continue;
        }
        let name: Vec<u8> = info
            .pbi_comm
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        out.push(super::GroupMember {
            pid: pid as u32,
            ppid: info.pbi_ppid,
            command: vec![String::from_utf8_lossy(&name).into_owned()],
        });
    }
    out.sort_by_key(|m| m.pid);
    out
}
