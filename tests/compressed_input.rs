//! Compressed inputs are inflated under a cap (`source::MAX_INFLATED`): a gzip bomb — a few MB
//! that inflate to 1.5 GB — gets a clear error naming the file and the limit, and leakhunt's
//! peak resident set (the child's VmHWM, read from `wait4`'s rusage) stays under 256 MB.
//!
//! The bombs are made here, never committed: one gzip member holds the format's header, then the
//! same compressed 1 MiB member of records repeats (gzip allows any number of members).

use crate::common::leakhunt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Stdio;

/// Inflated size of every bomb.
const BOMB_BYTES: u64 = 1536 << 20;
/// The bound on leakhunt's peak resident set for any input size.
const MAX_RSS_BYTES: u64 = 256 << 20;

fn gzip_member(content: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(content).unwrap();
    enc.finish().unwrap()
}

/// `header` then `record` repeated until the content is [`BOMB_BYTES`] long.
fn write_bomb(path: &Path, header: &[u8], record: &[u8]) {
    let mut block = Vec::with_capacity(1 << 20);
    while block.len() + record.len() <= 1 << 20 {
        block.extend_from_slice(record);
    }
    let block_member = gzip_member(&block);
    let mut out = BufWriter::new(File::create(path).unwrap());
    out.write_all(&gzip_member(header)).unwrap();
    let mut inflated = header.len() as u64;
    while inflated < BOMB_BYTES {
        out.write_all(&block_member).unwrap();
        inflated += block.len() as u64;
    }
    out.flush().unwrap();
}

/// Runs leakhunt with `args`; returns its exit code, its stderr and its peak resident set in
/// bytes (`ru_maxrss`, which Linux fills from the process's VmHWM).
fn run_measured(args: &[&std::ffi::OsStr]) -> (i32, String, u64) {
    let stderr_path = tempfile::NamedTempFile::new().unwrap();
    // Reaped by wait4 below, which also gives its rusage (Child::wait does not).
    #[allow(clippy::zombie_processes)]
    let child = leakhunt()
        .args(args)
        .stdout(Stdio::null())
        .stderr(File::create(stderr_path.path()).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the pid is our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for that one child, so other tests' children are left alone; the pointers
    // are to locals that outlive the call.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let stderr = std::fs::read_to_string(stderr_path.path()).unwrap();
    (code, stderr, usage.ru_maxrss as u64 * 1024)
}

fn assert_refused_and_small(command: &str, file_name: &str, header: &[u8], record: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join(file_name);
    write_bomb(&bomb, header, record);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 16 << 20);
    let (code, stderr, peak) = run_measured(&[command.as_ref(), bomb.as_os_str()]);
    let message = format!(
        "{}: decompresses to more than 64 MiB, the most leakhunt inflates in memory; \
         decompress it (gunzip -k) and give the plain file, which is read without that limit",
        bomb.display()
    );
    assert!(stderr.contains(&message), "{command} {file_name}: {stderr}");
    assert_eq!(
        code, 2,
        "{command} {file_name}: nothing usable was read: {stderr}"
    );
    assert!(
        peak <= MAX_RSS_BYTES,
        "{command} {file_name}: peak RSS {} MiB",
        peak >> 20
    );
}

#[test]
fn leaks_report_bomb_is_refused_within_the_memory_bound() {
    assert_refused_and_small(
        "leaks",
        "leaks.txt.gz",
        b"leaks Report Version: 2.0\nProcess 4242: 5120 nodes malloced for 812 KB\n\
          Process 4242: 2 leaks for 96 total leaked bytes.\n",
        b"Leak: 0x7f9a8bc04a30  size=64  zone: DefaultMallocZone_0x10a1b6000   WidgetState  C++  widget\n\
          \tCall stack: [thread 0x7fff7c9a3300]: | start | main main.cpp:42 | malloc | malloc_zone_malloc \n",
    );
}

#[test]
fn lsan_log_bomb_is_refused_within_the_memory_bound() {
    assert_refused_and_small(
        "analyze",
        "lsan.log.gz",
        b"=================================================================\n\
          ==42==ERROR: LeakSanitizer: detected memory leaks\n\n",
        b"Direct leak of 64 byte(s) in 1 object(s) allocated from:\n\
          \x20   #0 0x7f0000001000 in malloc (/usr/lib/x86_64-linux-gnu/liblsan.so.0+0x1000)\n\
          \x20   #1 0x7f0000002000 in widget_create /tmp/widget.c:12\n\n",
    );
}

#[test]
fn rubinius_dump_bomb_is_refused_within_the_memory_bound() {
    assert_refused_and_small(
        "histo",
        "heap.dump.gz",
        b"RBXHEAPDUMP\0\0\0\0\x01",
        &[b'-'; 64],
    );
}
