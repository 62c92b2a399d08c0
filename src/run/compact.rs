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

use crate::bundle::{Snapshot, member_path, write_private_atomic};
use crate::heap::round_summary::RoundSummary;
use crate::run::stale_sites::{PreviousDump, StaleSiteFilter, StaleSites};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What compressed heap dumps end with.
pub const COMPRESSED_SUFFIX: &str = ".zst";

/// Compresses the plain heap dump of every snapshot in `snapshots` (the dumps of one round, one
/// per process, on as many threads as there are cores) and names the compressed file in the
/// snapshot. A dump that cannot be compressed stays plain: the snapshot keeps it, and the
/// returned warnings say why.
///
/// With `previous` (sampled allocation sites), each dump also loses the sites its records kept
/// after their objects were freed ([`crate::run::stale_sites`]), judged against the process's
/// previous dump, which `previous` holds per process and this call moves on.
pub fn compress_heaps(
    dir: &Path,
    snapshots: &mut [&mut Snapshot],
    mut previous: Option<&mut StaleSites>,
) -> Vec<String> {
    let jobs: Vec<Job> = snapshots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let name = s.heap.as_ref()?;
            let pid = s.pid.unwrap_or(0);
            (!name.ends_with(COMPRESSED_SUFFIX)).then(|| Job {
                index: i,
                name: name.clone(),
                pid,
                previous: previous.as_mut().map(|p| p.take(pid)),
            })
        })
        .collect();
    let results: Mutex<Vec<(usize, Result<String, String>)>> = Mutex::new(Vec::new());
    let kept: Mutex<Vec<(u32, PreviousDump)>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, jobs.len().max(1));
    crate::heap::cruby::reader::run_workers(threads, || {
        while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            let (result, dump) = match &job.previous {
                Some(before) => {
                    let mut filter = StaleSiteFilter::new(before.as_deref());
                    let result = compress_one(
                        dir,
                        &job.name,
                        Some(&mut |piece, out| filter.filter(piece, out)),
                    );
                    // A dump that could not be compressed was not read through: the one before
                    // stays what the next is compared with (a looser, still sound test).
                    let dump = match result {
                        Ok(_) => Some(filter.finish()),
                        Err(_) => None,
                    };
                    (result, dump)
                }
                None => (compress_one(dir, &job.name, None), None),
            };
            if let Ok(mut r) = results.lock() {
                r.push((job.index, result));
            }
            if let Some(dump) = dump
                && let Ok(mut k) = kept.lock()
            {
                k.push((job.pid, dump));
            }
        }
    });
    if let Some(previous) = previous {
        // Each process's new dump, or its old one where the new one was not read through.
        for job in jobs {
            match job.previous {
                Some(Some(before)) => {
                    previous.dumps.insert(job.pid, before);
                }
                // A process's first dump was not read through: its next one has nothing to be
                // judged by, and keeps no site it may not own.
                Some(None) => {
                    previous
                        .dumps
                        .insert(job.pid, Arc::new(PreviousDump::unknown()));
                }
                None => {}
            }
        }
        for (pid, dump) in kept.into_inner().unwrap_or_default() {
            previous.dumps.insert(pid, Arc::new(dump));
        }
    }
    let mut warnings = Vec::new();
    for (i, result) in results.into_inner().unwrap_or_default() {
        match result {
            Ok(compressed) => snapshots[i].heap = Some(compressed),
            Err(why) => warnings.push(why),
        }
    }
    warnings
}

struct Job {
    index: usize,
    name: String,
    pid: u32,
    /// With stale sites filtered: the process's previous dump, if it had one.
    previous: Option<Option<Arc<PreviousDump>>>,
}

/// `name` → `name.zst` in `dir`, the plain file removed once the compressed one is complete.
fn compress_one(
    dir: &Path,
    name: &str,
    rewrite: Option<crate::zst::Rewrite<'_>>,
) -> Result<String, String> {
    let compressed = format!("{name}{COMPRESSED_SUFFIX}");
    let (Some(src), Some(dst)) = (member_path(dir, name), member_path(dir, &compressed)) else {
        return Err(format!("{name}: not a file name inside the bundle"));
    };
    let tmp = dir.join(format!("{compressed}.tmp"));
    let done = match rewrite {
        Some(rewrite) => crate::zst::compress_lines_filtered(&src, &tmp, rewrite),
        None => crate::zst::compress_lines(&src, &tmp),
    }
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

/// Writes the [`RoundSummary`] of each snapshot's heap dump (`--keep-dumps`) under the name
/// `summary_name` gives it, and names it in the snapshot. The summary is read from the dump as
/// it stays in the bundle (compressed or not), with the reader the analysis uses, so that a
/// summary stands in for its dump exactly. A dump that cannot be read keeps no summary (and so
/// is never removed); the returned warnings say why.
pub fn write_summaries(
    dir: &Path,
    snapshots: &mut [&mut Snapshot],
    summary_name: impl Fn(&Snapshot) -> Option<String>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for s in snapshots.iter_mut() {
        let (Some(heap), Some(name)) = (s.heap.clone(), summary_name(s)) else {
            continue;
        };
        if s.summary.is_some() || s.heap_removed {
            continue;
        }
        let (Some(dump), Some(path)) = (member_path(dir, &heap), member_path(dir, &name)) else {
            continue;
        };
        let saved = crate::detect::detect_path(&dump)
            .and_then(|kind| crate::heap::summarize(&dump, kind))
            .and_then(|summary| RoundSummary::of(&heap, &summary).to_bytes())
            .and_then(|bytes| write_private_atomic(&path, &bytes));
        match saved {
            Ok(()) => s.summary = Some(name),
            Err(e) => warnings.push(format!(
                "heap dump {heap} has no summary and is kept whatever --keep-dumps says: {e}"
            )),
        }
    }
    warnings
}

/// Which heap dumps `--keep-dumps N` keeps: those the analysis reads again besides the
/// summaries, i.e. retainer paths on the newest dump over the instances new since the first
/// judged one. So, per process: the newest N dumps, the first dump of its current program
/// (judged from when its loaded features never settle), and the first one whose loaded features
/// are the newest's (where growth is judged from once they settle: the rule of
/// `evidence::settled_from`, followed round by round).
#[derive(Debug)]
pub struct DumpKeeper {
    newest: usize,
    /// A hash of each round's `$LOADED_FEATURES`, by (pid, round), from its sidecar.
    features: std::collections::BTreeMap<(u32, u32), u64>,
}

impl DumpKeeper {
    pub fn new(newest: u32) -> DumpKeeper {
        DumpKeeper {
            newest: newest.max(1) as usize,
            features: Default::default(),
        }
    }

    /// Notes the loaded features of a snapshot from its sidecar (an unreadable sidecar notes
    /// nothing: the loader skips it too).
    pub fn note(&mut self, dir: &Path, snapshot: &Snapshot) {
        use std::hash::{Hash, Hasher};
        let (Some(pid), Some(name)) = (snapshot.pid, &snapshot.sidecar) else {
            return;
        };
        let Some(sidecar) = member_path(dir, name)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<crate::bundle::Sidecar>(&b).ok())
        else {
            return;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sidecar.loaded_features.hash(&mut h);
        self.features.insert((pid, snapshot.index), h.finish());
    }

    /// Removes the dumps of process `pid` no longer needed (each with its summary written
    /// first), marking their snapshots; `from_round` is the first round of its current program
    /// (after an exec). Returns warnings for dumps that could not be removed.
    pub fn prune(
        &self,
        dir: &Path,
        snapshots: &mut [Snapshot],
        pid: u32,
        from_round: u32,
    ) -> Vec<String> {
        let series: Vec<u32> = snapshots
            .iter()
            .filter(|s| s.pid == Some(pid) && s.taken() && s.index >= from_round)
            .map(|s| s.index)
            .collect();
        let features = |round: &u32| self.features.get(&(pid, *round));
        let mut keep: Vec<u32> = series.iter().rev().take(self.newest).copied().collect();
        keep.extend(series.first());
        if let Some(last) = series.iter().rev().find_map(features) {
            let settled =
                crate::evidence::first_with_final_features(series.iter().map(features), &last);
            keep.extend(settled.map(|i| series[i]));
        }
        let mut warnings = Vec::new();
        for s in snapshots.iter_mut().filter(|s| {
            s.pid == Some(pid) && s.has_dump() && s.summary.is_some() && !keep.contains(&s.index)
        }) {
            let Some(path) = s.heap.as_deref().and_then(|name| member_path(dir, name)) else {
                continue;
            };
            match std::fs::remove_file(&path) {
                Ok(()) => s.heap_removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => s.heap_removed = true,
                Err(e) => warnings.push(format!(
                    "heap dump {} could not be removed (--keep-dumps): {e}",
                    path.display()
                )),
            }
        }
        warnings
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

    /// A CRuby dump with `n` Record instances, one line of it not understood.
    fn dump_with(n: usize) -> Vec<u8> {
        let mut d = br#"{"address":"0x1", "type":"CLASS", "name":"Record", "memsize":40}"#.to_vec();
        d.push(b'\n');
        for i in 0..n {
            d.extend(
                format!(
                    "{{\"address\":\"0x{:x}\", \"type\":\"OBJECT\", \"class\":\"0x1\", \"memsize\":40}}\n",
                    0x100 + i
                )
                .bytes(),
            );
        }
        d.extend(b"not json\n");
        d
    }

    /// Round `round` of process 10 (the main one): its dump (compressed, as a run leaves it)
    /// and its sidecar listing `features` loaded features.
    fn round_of(dir: &Path, round: u32, features: usize) -> Snapshot {
        let files = crate::bundle::ProcessFiles::main();
        std::fs::write(dir.join(files.heap(round)), dump_with(round as usize * 10)).unwrap();
        let sidecar = crate::bundle::Sidecar {
            leakhunt_agent: 1,
            snapshot: round,
            pid: 10,
            loaded_features: (0..features).map(|f| format!("f{f}.rb")).collect(),
            ..Default::default()
        };
        std::fs::write(
            dir.join(files.sidecar(round)),
            serde_json::to_vec(&sidecar).unwrap(),
        )
        .unwrap();
        let mut s = Snapshot {
            index: round,
            pid: Some(10),
            reason: "interval".into(),
            t: round as f64,
            heap: Some(files.heap(round)),
            sidecar: Some(files.sidecar(round)),
            ..Snapshot::default()
        };
        assert!(compress_heaps(dir, &mut [&mut s], None).is_empty());
        s
    }

    fn manifest_of(snapshots: &[Snapshot]) -> crate::bundle::Manifest {
        crate::bundle::Manifest {
            leakhunt_bundle: crate::bundle::MANIFEST_SCHEMA,
            pid: Some(10),
            snapshots: snapshots.to_vec(),
            processes: vec![crate::bundle::ProcessEntry {
                pid: 10,
                role: crate::bundle::ROLE_MAIN.into(),
                first_round: Some(1),
                last_round: snapshots.last().map(|s| s.index),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Of one heap snapshot: its round, histogram, objects, whether its dump is there.
    type HeapRow = (Option<u32>, String, u64, bool);

    /// What the correlator reads of each heap snapshot, the loader's warnings, and where growth
    /// is judged from.
    fn heap_view(ev: &crate::evidence::Evidence) -> (Vec<HeapRow>, Vec<String>, usize) {
        let heaps = ev
            .heap
            .iter()
            .map(|h| {
                (
                    h.snapshot,
                    format!("{:?}", h.summary.histogram),
                    h.summary.objects,
                    h.dump.is_some(),
                )
            })
            .collect();
        (heaps, ev.warnings.clone(), ev.settled)
    }

    #[test]
    fn keep_dumps_keeps_the_newest_and_the_judged_from_ones_and_summaries_stand_in_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let files = crate::bundle::ProcessFiles::main();
        let mut keeper = DumpKeeper::new(1);
        let mut snapshots: Vec<Snapshot> = Vec::new();
        // Round 1 still loading code (3 features), rounds 2-4 settled (5), round 5 loads more (6).
        let features = [3, 5, 5, 5, 6];
        let mut removed_after_round = Vec::new();
        for (i, &f) in features.iter().enumerate() {
            let round = i as u32 + 1;
            let mut s = round_of(d, round, f);
            assert!(write_summaries(d, &mut [&mut s], |s| Some(files.summary(s.index))).is_empty());
            assert_eq!(s.summary.as_deref(), Some(files.summary(round).as_str()));
            keeper.note(d, &s);
            snapshots.push(s);
            assert!(keeper.prune(d, &mut snapshots, 10, 0).is_empty());
            removed_after_round.push(
                snapshots
                    .iter()
                    .filter(|s| s.heap_removed)
                    .map(|s| s.index)
                    .collect::<Vec<_>>(),
            );
        }
        // Kept: the first, the first with the newest's features, the newest.
        assert_eq!(
            removed_after_round,
            [vec![], vec![], vec![], vec![3], vec![2, 3, 4]]
        );
        for s in &snapshots {
            let dump = d.join(s.heap.as_ref().unwrap());
            assert_eq!(dump.exists(), !s.heap_removed, "{dump:?}");
            assert!(d.join(s.summary.as_ref().unwrap()).exists());
        }
        let summary = d.join(files.summary(3));
        let mode = std::fs::metadata(&summary).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // The bundle loads the same heap evidence from summaries as from the dumps: load it
        // pruned, then again with every summary ignored on a copy that kept every dump.
        manifest_of(&snapshots).save(d).unwrap();
        let pruned = crate::evidence::load_bundle(d).unwrap();
        let full = tempfile::tempdir().unwrap();
        let mut whole = Vec::new();
        for (i, &f) in features.iter().enumerate() {
            whole.push(round_of(full.path(), i as u32 + 1, f));
        }
        manifest_of(&whole).save(full.path()).unwrap();
        let unpruned = crate::evidence::load_bundle(full.path()).unwrap();
        let (a, b) = (heap_view(&pruned), heap_view(&unpruned));
        assert_eq!(a.0.len(), 5);
        for (x, y) in a.0.iter().zip(&b.0) {
            assert_eq!((&x.0, &x.1, x.2), (&y.0, &y.1, y.2));
        }
        let kept: Vec<bool> = a.0.iter().map(|h| h.3).collect();
        assert_eq!(kept, [true, false, false, false, true]);
        // The soft problem of every dump is still reported, as the dump's own reading words it
        // (naming the dump where the bundle is now).
        let here = |lines: &[String], dir: &Path| -> Vec<String> {
            let dir = dir.display().to_string();
            lines.iter().map(|l| l.replace(&dir, "BUNDLE")).collect()
        };
        assert_eq!(here(&a.1, d), here(&b.1, full.path()));
        assert_eq!(a.1.len(), 5, "{:?}", a.1);
        assert_eq!(a.2, b.2);
    }

    #[test]
    fn a_removed_dump_without_a_summary_is_named_and_an_unreadable_dump_keeps_no_summary() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let files = crate::bundle::ProcessFiles::main();
        let mut s = round_of(d, 1, 1);
        std::fs::write(d.join(s.heap.as_ref().unwrap()), b"\x89PNG not a dump").unwrap();
        let warnings = write_summaries(d, &mut [&mut s], |s| Some(files.summary(s.index)));
        assert_eq!(s.summary, None);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("is kept whatever --keep-dumps says"),
            "{warnings:?}"
        );
        // Without a summary, a dump is never removed.
        let mut snapshots = vec![s.clone(), round_of(d, 2, 1), round_of(d, 3, 1)];
        DumpKeeper::new(1).prune(d, &mut snapshots, 10, 0);
        assert!(snapshots.iter().all(|s| !s.heap_removed));
        // A manifest saying a dump was removed, with no summary: the loader names it and goes on.
        snapshots[1].heap_removed = true;
        manifest_of(&snapshots).save(d).unwrap();
        let ev = crate::evidence::load_bundle(d).unwrap();
        assert!(
            ev.warnings
                .iter()
                .any(|w| w.contains("heap-002.json.zst") && w.contains("no summary stands in")),
            "{:?}",
            ev.warnings
        );
        assert_eq!(ev.heap.len(), 1);
    }

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
        let warnings = compress_heaps(dir.path(), &mut [&mut a, &mut b, &mut c, &mut d], None);
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
        assert!(compress_heaps(dir.path(), &mut [&mut a], None).is_empty());
        assert_eq!(a.heap.as_deref(), Some("heap-001.json.zst"));
    }
}
