//! Keeping the bundle small: the heap dumps a round leaves are compressed as soon as the round is
//! over.
//!
//! Stage: `run`. The agent writes `ObjectSpace.dump_all` to a plain file while the program's
//! threads are parked; leakhunt then compresses it into line-aligned zstd frames
//! (`heap-NNN.json.zst`, [`crate::zst`]) while the program runs again, and removes the plain
//! file. Compressing after the dump, rather than piping the dump through a compressor, keeps
//! the program's pause as short as the dump alone: a pipe would hold the parked program to the
//! compressor's pace. The cost is room for one plain dump per process for the moment it is
//! compressed.
//!
//! Before a round, [`RoomCheck`] compares what the round will write (each process's last plain
//! dump, or its footprint before its first one) with the space free on the bundle's disk; a round
//! that would not fit is skipped, so that the disk never fills up halfway through a dump.

use crate::bundle::{Snapshot, member_path};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What compressed heap dumps end with.
pub const COMPRESSED_SUFFIX: &str = ".zst";

/// Compresses the plain heap dump of every snapshot in `snapshots` (the dumps of one round, one
/// per process, on as many threads as there are cores) and names the compressed file in the
/// snapshot. A dump that cannot be compressed stays plain: the snapshot keeps it, and the
/// returned warnings say why.
pub fn compress_heaps(dir: &Path, snapshots: &mut [&mut Snapshot]) -> Vec<String> {
    let jobs: Vec<(usize, String)> = snapshots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let name = s.heap.as_ref()?;
            (!name.ends_with(COMPRESSED_SUFFIX)).then(|| (i, name.clone()))
        })
        .collect();
    let results: Mutex<Vec<(usize, Result<String, String>)>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, jobs.len().max(1));
    crate::heap::cruby::reader::run_workers(threads, || {
        while let Some((i, name)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            let result = compress_one(dir, name);
            if let Ok(mut r) = results.lock() {
                r.push((*i, result));
            }
        }
    });
    let mut warnings = Vec::new();
    for (i, result) in results.into_inner().unwrap_or_default() {
        match result {
            Ok(compressed) => snapshots[i].heap = Some(compressed),
            Err(why) => warnings.push(why),
        }
    }
    warnings
}

/// `name` → `name.zst` in `dir`, the plain file removed once the compressed one is complete.
fn compress_one(dir: &Path, name: &str) -> Result<String, String> {
    let compressed = format!("{name}{COMPRESSED_SUFFIX}");
    let (Some(src), Some(dst)) = (member_path(dir, name), member_path(dir, &compressed)) else {
        return Err(format!("{name}: not a file name inside the bundle"));
    };
    let tmp = dir.join(format!("{compressed}.tmp"));
    let done = crate::zst::compress_lines(&src, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &dst).map_err(|e| crate::error::Error::io(&dst, e)));
    match done {
        Ok(()) => {
            // The compressed file is complete and synced: the plain one is no longer needed.
            let _ = std::fs::remove_file(&src);
            Ok(compressed)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(format!(
                "heap dump {name} is kept uncompressed: {e} (free some disk space for the next rounds)"
            ))
        }
    }
}

/// Room kept free beyond a round's own needs (the sidecars, the manifest, native reports).
const ROOM_MARGIN: u64 = 16 << 20;

/// What a round needs on disk, from what its processes wrote before.
#[derive(Debug, Default)]
pub struct RoomCheck {
    /// Size of each process's last plain dump, by pid.
    last_dump: std::collections::BTreeMap<u32, u64>,
}

impl RoomCheck {
    /// Notes the plain size of the dumps a round wrote (before they are compressed).
    pub fn note_dumps(&mut self, dir: &Path, snapshots: &[Snapshot]) {
        for s in snapshots {
            let (Some(pid), Some(name)) = (s.pid, &s.heap) else {
                continue;
            };
            if let Some(len) = member_path(dir, name)
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
            {
                self.last_dump.insert(pid, len);
            }
        }
    }

    /// Bytes a round of processes `pids` needs: each one's last plain dump, or (never dumped
    /// yet) its footprint as `footprint` tells it, plus the compressed copy being written while
    /// the plain one still exists (an eighth, at the ratios seen), plus a margin.
    pub fn needs(&self, pids: &[u32], footprint: impl Fn(u32) -> Option<u64>) -> u64 {
        let dumps: u64 = pids
            .iter()
            .map(|pid| {
                self.last_dump
                    .get(pid)
                    .copied()
                    .or_else(|| footprint(*pid))
                    .unwrap_or(0)
            })
            .sum();
        dumps + dumps / 8 + ROOM_MARGIN
    }

    /// The warning that skips a round, or `None` when `free` bytes are enough for `needs`.
    pub fn refusal(reason: &str, free: u64, needs: u64) -> Option<String> {
        (free < needs).then(|| {
            format!(
                "a round ({reason}) was skipped: the bundle's disk has {} free and the round needs about {} \
                 (the processes' last heap dumps, written plain, then compressed); free some space \
                 or give -o a directory on a larger disk",
                crate::format::human_bytes(free as f64),
                crate::format::human_bytes(needs as f64)
            )
        })
    }
}

/// Bytes an unprivileged writer may still write on the filesystem holding `dir`;
/// `None` when statvfs fails. [`crate::run::knobs::TEST_DISK_FREE`] replaces the figure.
pub fn disk_free(dir: &Path) -> Option<u64> {
    if let Some(v) = std::env::var(super::knobs::TEST_DISK_FREE)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(v);
    }
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid NUL-terminated string and `st` points to writable memory of
    // the right type; statvfs only writes into it, and we read it only when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between Linux and macOS
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_round_needs_the_last_dumps_or_the_footprint_and_is_refused_past_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("heap-001.json"), vec![b'x'; 8 << 20]).unwrap();
        let mut room = RoomCheck::default();
        room.note_dumps(
            dir.path(),
            &[Snapshot {
                pid: Some(10),
                heap: Some("heap-001.json".into()),
                ..Snapshot::default()
            }],
        );
        // Process 10 dumped 8 MiB; process 11 never dumped, its footprint is 4 MiB.
        let needs = room.needs(&[10, 11], |pid| (pid == 11).then_some(4 << 20));
        assert_eq!(needs, (12 << 20) + (12 << 20) / 8 + ROOM_MARGIN);
        assert_eq!(RoomCheck::refusal("interval", needs, needs), None);
        let warning = RoomCheck::refusal("interval", 10 << 20, needs).unwrap();
        assert!(
            warning.starts_with(
                "a round (interval) was skipped: the bundle's disk has 10.0 MiB free and the round needs about 29.5 MiB"
            ),
            "{warning}"
        );
        assert!(disk_free(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(disk_free(Path::new("/nonexistent/leakhunt")), None);
    }

    #[test]
    fn dumps_are_replaced_by_their_compressed_form_and_failures_keep_the_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let dump = b"{\"address\":\"0x1\", \"type\":\"STRING\"}\n".repeat(1000);
        std::fs::write(dir.path().join("heap-001.json"), &dump).unwrap();
        std::fs::write(dir.path().join("heap-p7-001.json"), &dump).unwrap();
        let mut a = Snapshot {
            heap: Some("heap-001.json".into()),
            ..Snapshot::default()
        };
        let mut b = Snapshot {
            heap: Some("heap-p7-001.json".into()),
            ..Snapshot::default()
        };
        // The agent failed: nothing to compress.
        let mut c = Snapshot::default();
        // Named but absent: it stays as named, with a warning.
        let mut d = Snapshot {
            heap: Some("heap-p8-001.json".into()),
            ..Snapshot::default()
        };
        let warnings = compress_heaps(dir.path(), &mut [&mut a, &mut b, &mut c, &mut d]);
        assert_eq!(a.heap.as_deref(), Some("heap-001.json.zst"));
        assert_eq!(b.heap.as_deref(), Some("heap-p7-001.json.zst"));
        assert_eq!(c.heap, None);
        assert_eq!(d.heap.as_deref(), Some("heap-p8-001.json"));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("heap dump heap-p8-001.json is kept uncompressed: "),
            "{warnings:?}"
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["heap-001.json.zst", "heap-p7-001.json.zst"]);
        let zst = dir.path().join("heap-001.json.zst");
        assert_eq!(&*crate::source::Input::open(&zst).unwrap(), &dump[..]);
        let mode = std::fs::metadata(&zst).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Already compressed: left alone.
        assert!(compress_heaps(dir.path(), &mut [&mut a]).is_empty());
        assert_eq!(a.heap.as_deref(), Some("heap-001.json.zst"));
    }
}
