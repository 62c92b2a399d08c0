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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
