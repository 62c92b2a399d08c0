//! Loading: a bundle (following its manifest) or loose files (each detected by content) →
//! [`Evidence`], each input read by its reader; soft problems become warnings, and the rest of
//! the inputs still load.
//!
//! Stage: evidence (readers → evidence). What needs the machine that ran the program is
//! resolved afterwards ([`super::resolve`]), as are retainer paths ([`super::retainers`]).

use super::{Evidence, HeapSnapshot, NativeSnapshot, Origin, ProcessEvidence, settled_from};
use crate::bundle::{ExecEntry, Manifest, NativeRef, ProcessEntry, Sidecar, parse_footprint};
use crate::detect::Kind;
use crate::diag::{Diagnostics, Position};
use crate::error::{Error, Result};
use crate::heap::round_summary::RoundSummary;
use crate::native::symbolize::{ModuleMap, Symbolizer};
use crate::native::{NativeFormat, NativeReport};
use std::path::{Path, PathBuf};

/// `analyze`'s inputs: one bundle directory, or any mix of dumps and native reports.
pub fn load_inputs(paths: &[PathBuf]) -> Result<Evidence> {
    match paths {
        [] => Err(Error::Usage(
            "nothing to analyze: give a bundle or files".into(),
        )),
        [one] if one.is_dir() => {
            crate::detect::detect_path(one)?;
            load_bundle(one)
        }
        _ => {
            if let Some(dir) = paths.iter().find(|p| p.is_dir()) {
                return Err(Error::Usage(format!(
                    "{} is a directory: analyze a bundle on its own, or give files only",
                    dir.display()
                )));
            }
            load_files(paths)
        }
    }
}

fn diagnostics_into(warnings: &mut Vec<String>, diag: &Diagnostics) {
    warnings.extend(diag.lines());
}

/// Reads a bundle written by `leakhunt run`, following its manifest: the main process's
/// evidence, with every other process that has a heap snapshot in [`Evidence::processes`].
pub fn load_bundle(dir: &Path) -> Result<Evidence> {
    let manifest = crate::bundle::Manifest::load(dir)?;
    let captured = match &manifest.resolved {
        Some(name) => match bundle_file(dir, name).and_then(|p| super::resolve::read_capture(&p)) {
            Ok(captured) => Some(captured),
            Err(e) => {
                return load_with(
                    dir,
                    manifest,
                    None,
                    Some(format!(
                        "{e} (what the run resolved on its machine is looked up on this one instead)"
                    )),
                );
            }
        },
        None => None,
    };
    load_with(dir, manifest, captured, None)
}

fn load_with(
    dir: &Path,
    manifest: Manifest,
    captured: Option<super::resolve::Resolved>,
    capture_warning: Option<String>,
) -> Result<Evidence> {
    let main = manifest
        .main_process()
        .cloned()
        .unwrap_or_else(|| ProcessEntry {
            pid: manifest.pid.unwrap_or(0),
            ..ProcessEntry::default()
        });
    let mut ev = load_process(dir, &manifest, &main, captured.clone());
    ev.warnings.extend(capture_warning);
    for entry in manifest.examined().filter(|p| p.pid != main.pid) {
        let mut evidence = load_process(dir, &manifest, entry, captured.clone());
        ev.warnings.append(&mut evidence.warnings);
        ev.processes.push(ProcessEvidence {
            entry: entry.clone(),
            evidence,
        });
    }
    ev.manifest = Some(manifest);
    Ok(ev)
}

/// The evidence of one process of the bundle: its snapshots, native logs and footprint.
fn load_process(
    dir: &Path,
    manifest: &Manifest,
    process: &ProcessEntry,
    captured: Option<super::resolve::Resolved>,
) -> Evidence {
    let mut ev = Evidence::empty(Origin::Bundle(dir.to_path_buf()));
    ev.captured = captured;
    ev.alloc_sites_sampled = manifest.alloc_sites_sampled();
    let mut referenced_logs: Vec<&str> = Vec::new();
    // The module map taken with each native snapshot, to place and name its frames.
    let mut maps: Vec<Vec<ModuleMap>> = Vec::new();
    let mut snapshots: Vec<_> = manifest.snapshots_of(process.pid).cloned().collect();
    snapshots.sort_by_key(|s| s.index);
    if let Some(exec) = &process.exec {
        // Snapshots of the program the process replaced by exec are of another program.
        let replaced = snapshots.iter().filter(|s| !exec.covers(s.index)).count();
        if replaced > 0 {
            ev.warnings.push(replaced_note(process, exec, replaced));
        }
        snapshots.retain(|s| exec.covers(s.index));
    }
    for snap in &snapshots {
        // Worded as the run printed it: other processes' snapshots name their pid.
        ev.warnings
            .extend(snap.warning(process.role != crate::bundle::ROLE_MAIN));
        if let Some(name) = &snap.heap {
            match read_heap(dir, name, snap) {
                Ok((summary, warnings, dump)) => {
                    ev.warnings.extend(warnings);
                    ev.heap.push(HeapSnapshot {
                        t: Some(snap.t),
                        snapshot: Some(snap.index),
                        summary,
                        dump,
                    });
                }
                Err(e) => ev.warnings.push(e.to_string()),
            }
        }
        if let Some(name) = &snap.sidecar {
            match bundle_file(dir, name).and_then(|p| read_sidecar(&p)) {
                Ok(sc) => ev.sidecars.push(sc),
                Err(e) => ev.warnings.push(e.to_string()),
            }
        }
        if let Some(native) = &snap.native {
            if let Some(log) = process.native_logs.iter().find(|l| **l == native.file) {
                referenced_logs.push(log);
            }
            match read_native_ref(dir, native, &manifest.backend.name) {
                Ok(reports) => {
                    // A snapshot's byte range holds one check; should it hold more, the last
                    // one is the state at the snapshot.
                    if let Some(report) = reports.into_iter().last() {
                        diagnostics_into(&mut ev.warnings, &report.diagnostics);
                        ev.native.push(NativeSnapshot {
                            t: Some(snap.t),
                            snapshot: Some(snap.index),
                            at_exit: snap.reason == "exit",
                            report,
                        });
                        maps.push(read_maps(dir, snap.maps.as_deref(), &mut ev.warnings));
                    }
                }
                Err(e) => ev.warnings.push(e.to_string()),
            }
        }
    }
    // Logs no snapshot points into (valgrind's XML written at exit): one more, final snapshot.
    for log in &process.native_logs {
        if referenced_logs.contains(&log.as_str()) {
            continue;
        }
        match bundle_file(dir, log).and_then(|p| {
            crate::detect::detect_path(&p).and_then(|kind| crate::native::parse_file(&p, kind))
        }) {
            Ok(reports) => {
                if let Some(report) = reports.into_iter().last() {
                    diagnostics_into(&mut ev.warnings, &report.diagnostics);
                    ev.native.push(NativeSnapshot {
                        t: Some(manifest.duration_seconds),
                        snapshot: None,
                        at_exit: true,
                        report,
                    });
                    // Written at exit: the newest map is the closest.
                    maps.push(maps.last().cloned().unwrap_or_default());
                }
            }
            Err(e) => ev.warnings.push(e.to_string()),
        }
    }
    if let Some(name) = &process.footprint {
        let path = dir.join(name);
        match bundle_file(dir, name).and_then(|p| std::fs::read(&p).map_err(|e| Error::io(&p, e))) {
            Ok(bytes) => {
                let mut diag = Diagnostics::new(&path);
                ev.footprint = parse_footprint(&bytes, &mut diag);
                if let Some(exec) = &process.exec {
                    ev.footprint.retain(|sample| sample.t >= exec.t);
                }
                diagnostics_into(&mut ev.warnings, &diag);
            }
            Err(e) => ev.warnings.push(e.to_string()),
        }
    }
    symbolize(&mut ev, &maps);
    super::resolve::real_modules(&mut ev);
    ev.settled = settled_from(&ev.heap, &ev.sidecars);
    ev
}

/// One snapshot's heap summary: read from its dump, or from its [`RoundSummary`] once the dump
/// was removed (`--keep-dumps`). Returns the summary, the reader's problems as lines, and the
/// dump's path when the dump is there.
fn read_heap(
    dir: &Path,
    name: &str,
    snap: &crate::bundle::Snapshot,
) -> Result<(crate::heap::HeapSummary, Vec<String>, Option<PathBuf>)> {
    let path = bundle_file(dir, name)?;
    match (&snap.summary, snap.heap_removed) {
        (Some(summary), true) => {
            let saved = RoundSummary::load(&bundle_file(dir, summary)?)?;
            let (summary, warnings) = saved.into_heap_summary(path);
            Ok((summary, warnings, None))
        }
        (None, true) => Err(Error::input(
            &path,
            Position::Whole,
            "removed from the bundle, and no summary stands in for it",
        )),
        (_, false) => {
            let kind = crate::detect::detect_path(&path)?;
            let summary = crate::heap::summarize(&path, kind)?;
            let warnings = summary.diagnostics.lines();
            Ok((summary, warnings, Some(path)))
        }
    }
}

/// Says that a process's first snapshots were of the program it replaced by exec.
fn replaced_note(process: &ProcessEntry, exec: &ExecEntry, replaced: usize) -> String {
    let who = if process.role == crate::bundle::ROLE_MAIN {
        format!("the program (pid {})", process.pid)
    } else {
        format!("process {}", process.pid)
    };
    format!(
        "{who} ran `{}` and exec'd `{}` {:.1} s into the run: its {replaced} snapshot(s) before \
         round {} are of the program it replaced; they stay in the bundle and are not compared \
         with the later ones",
        exec.before.join(" "),
        process.command.join(" "),
        exec.t,
        exec.first_round
    )
}

/// A file the manifest names, as a path in the bundle. Only a plain file name inside the bundle
/// ([`crate::bundle::member_path`]) is read: a manifest naming `../../etc/passwd` or
/// `/etc/shadow` is refused, naming the entry. Only a regular file (or a name that does not
/// exist, for the usual error) is opened: a manifest naming a FIFO would block the reader.
fn bundle_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let Some(path) = crate::bundle::member_path(dir, name) else {
        return Err(Error::input(
            dir.join(crate::bundle::MANIFEST),
            Position::Whole,
            format!("names {name:?}, which is not a file name inside the bundle: not read"),
        ));
    };
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => Err(Error::input(
            &path,
            Position::Whole,
            "named by the manifest but not a regular file",
        )),
        _ => Ok(path),
    }
}

fn read_maps(dir: &Path, name: Option<&str>, warnings: &mut Vec<String>) -> Vec<ModuleMap> {
    let Some(name) = name else {
        return Vec::new();
    };
    match bundle_file(dir, name).and_then(|p| ModuleMap::read(&p)) {
        Ok(map) => {
            diagnostics_into(warnings, &map.diagnostics);
            vec![map]
        }
        Err(e) => {
            warnings.push(e.to_string());
            Vec::new()
        }
    }
}

/// Places frames of unloaded libraries with the module maps and names `module+offset` frames
/// from the modules' own symbols, with one symbolizer so every snapshot names a frame alike.
/// The modules are the bundle's capture of them when it has one (the files on this machine may
/// be other builds, or gone), else the files here; what was taken from them is kept in
/// [`Evidence::module_symbols`] for the capture.
fn symbolize(ev: &mut Evidence, maps: &[Vec<ModuleMap>]) {
    let mut symbolizer = match ev.captured.as_ref().and_then(|c| c.symbols.as_ref()) {
        Some(modules) => Symbolizer::from_capture(modules),
        None => Symbolizer::new(),
    };
    for (i, snap) in ev.native.iter_mut().enumerate() {
        let maps = maps.get(i).map(Vec::as_slice).unwrap_or_default();
        symbolizer.resolve(&mut snap.report, maps);
    }
    ev.module_symbols = symbolizer.capture();
}

fn read_sidecar(path: &Path) -> Result<Sidecar> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sc: Sidecar = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(path, Position::Line(e.line() as u64), e.to_string()))?;
    if sc.leakhunt_agent > crate::bundle::SIDECAR_SCHEMA {
        return Err(Error::input(
            path,
            Position::Whole,
            format!(
                "agent sidecar schema {} is newer than this leakhunt understands; upgrade leakhunt",
                sc.leakhunt_agent
            ),
        ));
    }
    Ok(sc)
}

/// The native reports of one snapshot: a whole file or a byte range of a log. An LSan check
/// that finds no leak writes nothing: its empty range is a report with no leak, not bad input.
fn read_native_ref(dir: &Path, native: &NativeRef, backend: &str) -> Result<Vec<NativeReport>> {
    let path = bundle_file(dir, &native.file)?;
    let input = crate::source::Input::open(&path)?;
    let len = input.len() as u64;
    let start = native.start.unwrap_or(0).min(len) as usize;
    let end = native.end.unwrap_or(len).clamp(start as u64, len) as usize;
    let bytes = &input[start..end];
    if backend == "lsan" && native.start.is_some() && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![NativeReport::empty(path, NativeFormat::Lsan)]);
    }
    let head = &bytes[..bytes.len().min(crate::source::SNIFF_LEN)];
    let kind = crate::detect::detect_bytes(head)
        .filter(|k| k.is_native())
        .ok_or_else(|| {
            Error::input(
                &path,
                Position::Offset(start as u64),
                format!("bytes {start}..{end} are not a native leak report"),
            )
        })?;
    crate::native::parse_bytes(&path, kind, bytes)
}

/// Heap dumps, native reports and module maps given as files, auto-detected by content.
/// Heap snapshots keep the order given; native reports are ordered by the date in their
/// header when every one has it, else by the order given (and their order inside a log).
pub fn load_files(paths: &[PathBuf]) -> Result<Evidence> {
    let mut ev = Evidence::empty(Origin::Files(paths.to_vec()));
    let mut first_error: Option<Error> = None;
    let mut native: Vec<NativeReport> = Vec::new();
    let mut module_maps: Vec<ModuleMap> = Vec::new();
    let mut used = 0usize;
    for path in paths {
        let kind = match crate::detect::detect_path(path) {
            Ok(k) => k,
            Err(e) => {
                ev.warnings.push(e.to_string());
                first_error.get_or_insert(e);
                continue;
            }
        };
        let loaded: Result<()> = match kind {
            k if k.is_heap() => crate::heap::summarize(path, k).map(|summary| {
                diagnostics_into(&mut ev.warnings, &summary.diagnostics);
                ev.heap.push(HeapSnapshot {
                    t: None,
                    snapshot: None,
                    summary,
                    dump: Some(path.clone()),
                });
            }),
            k if k.is_native() => crate::native::parse_file(path, k).map(|reports| {
                for r in &reports {
                    diagnostics_into(&mut ev.warnings, &r.diagnostics);
                }
                native.extend(reports);
            }),
            Kind::ModuleMap => ModuleMap::read(path).map(|map| {
                diagnostics_into(&mut ev.warnings, &map.diagnostics);
                module_maps.push(map);
            }),
            other => Err(Error::input(
                path,
                Position::Whole,
                format!("a {} cannot be analyzed with other files", other.describe()),
            )),
        };
        match loaded {
            Ok(()) => used += 1,
            Err(e) => {
                ev.warnings.push(e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    if used == 0 {
        return Err(first_error.unwrap_or_else(|| Error::Usage("nothing to analyze".into())));
    }
    if native.iter().all(|r| r.header.date.is_some()) {
        native.sort_by(|a, b| a.header.date.cmp(&b.header.date));
    }
    ev.native = native
        .into_iter()
        .map(|report| NativeSnapshot {
            t: None,
            snapshot: None,
            at_exit: false,
            report,
        })
        .collect();
    let maps = vec![module_maps; ev.native.len()];
    symbolize(&mut ev, &maps);
    super::resolve::real_modules(&mut ev);
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Manifest, Outcome, Snapshot};

    /// Round 1's LSan check found a leak; round 2's found none and wrote nothing. Round 2 is a
    /// native snapshot with no leak, not a damaged report. An empty range of another backend
    /// (none writes ranges) is still named as bad input.
    #[test]
    fn an_lsan_check_that_wrote_nothing_is_a_report_without_leaks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let report = "=================================================================\n\
            ==77==ERROR: LeakSanitizer: detected memory leaks\n\n\
            Direct leak of 16 byte(s) in 1 object(s) allocated from:\n\
            \x20   #0 0x7f0000001000 in malloc (/usr/lib/x86_64-linux-gnu/liblsan.so.0+0x1000)\n\
            \x20   #1 0x7f0000002000 in make_widget (/usr/lib/libwidget.so+0x2000)\n\n\
            SUMMARY: LeakSanitizer: 16 byte(s) leaked in 1 allocation(s).\n";
        std::fs::write(d.join("lsan.log"), report).unwrap();
        let len = report.len() as u64;
        let snapshot = |index: u32, start: u64| Snapshot {
            index,
            pid: Some(77),
            reason: "interval".into(),
            t: f64::from(index),
            native: Some(NativeRef {
                file: "lsan.log".into(),
                start: Some(start),
                end: Some(len),
            }),
            ..Snapshot::default()
        };
        let load = |backend: &str| {
            let mut manifest = Manifest {
                leakhunt_bundle: crate::bundle::MANIFEST_SCHEMA,
                pid: Some(77),
                snapshots: vec![snapshot(1, 0), snapshot(2, len)],
                ..Manifest::default()
            };
            manifest.backend.name = backend.into();
            manifest.save(d).unwrap();
            load_inputs(&[d.to_path_buf()]).unwrap()
        };
        let ev = load("lsan");
        let leaks: Vec<(Option<u32>, usize)> = ev
            .native
            .iter()
            .map(|n| (n.snapshot, n.report.leaks.len()))
            .collect();
        assert_eq!(leaks, [(Some(1), 1), (Some(2), 0)]);
        assert!(ev.warnings.is_empty(), "{:?}", ev.warnings);
        let ev = load("leaks");
        assert_eq!(ev.native.len(), 1);
        assert!(
            ev.warnings
                .iter()
                .any(|w| w.contains("are not a native leak report")),
            "{:?}",
            ev.warnings
        );
    }

    #[test]
    fn every_process_of_a_bundle_loads_its_own_snapshots_and_footprint() {
        use crate::bundle::{ProcessEntry, ProcessFiles, ROLE_MAIN, ROLE_WORKER};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let files = |pid: u32| {
            if pid == 10 {
                ProcessFiles::main()
            } else {
                ProcessFiles::of(pid)
            }
        };
        let mut snapshots = Vec::new();
        for (pid, rounds) in [(10u32, 1..=2u32), (11, 1..=2), (12, 2..=2)] {
            for round in rounds {
                let sidecar = files(pid).sidecar(round);
                std::fs::write(
                    d.join(&sidecar),
                    format!(
                        r#"{{"leakhunt_agent":1,"snapshot":{round},"pid":{pid},"lifecycle":[{{"class":"Widget","created":{}}}]}}"#,
                        pid * 100 + round
                    ),
                )
                .unwrap();
                snapshots.push(Snapshot {
                    index: round,
                    pid: Some(pid),
                    reason: "interval".into(),
                    t: round as f64,
                    sidecar: Some(sidecar),
                    ..Snapshot::default()
                });
            }
        }
        let footprint = files(11).whole("footprint", "tsv");
        std::fs::write(d.join(&footprint), b"# leakhunt footprint 1\n0.5\t4096\n").unwrap();
        let entry = |pid: u32, role: &str, first: u32| ProcessEntry {
            pid,
            ppid: Some(if pid == 10 { 1 } else { 10 }),
            role: role.into(),
            first_round: Some(first),
            last_round: Some(2),
            footprint: (pid == 11).then(|| footprint.clone()),
            ..ProcessEntry::default()
        };
        let manifest = Manifest {
            leakhunt_bundle: crate::bundle::MANIFEST_SCHEMA,
            pid: Some(10),
            snapshots,
            processes: vec![
                entry(10, ROLE_MAIN, 1),
                entry(11, ROLE_WORKER, 1),
                entry(12, ROLE_WORKER, 2),
                // Never said hello: listed, nothing to load.
                ProcessEntry {
                    pid: 13,
                    role: "no agent".into(),
                    ..ProcessEntry::default()
                },
            ],
            ..Manifest::default()
        };
        manifest.save(d).unwrap();
        let ev = load_inputs(&[d.to_path_buf()]).unwrap();
        let created = |ev: &Evidence| -> Vec<u64> {
            ev.sidecars.iter().map(|s| s.lifecycle[0].created).collect()
        };
        assert_eq!(created(&ev), [1001, 1002]);
        let others: Vec<(u32, Vec<u64>)> = ev
            .processes
            .iter()
            .map(|p| (p.entry.pid, created(&p.evidence)))
            .collect();
        assert_eq!(others, [(11, vec![1101, 1102]), (12, vec![1202])]);
        assert_eq!(ev.processes[0].evidence.footprint.len(), 1);
        assert!(ev.footprint.is_empty() && ev.processes[1].evidence.footprint.is_empty());
        assert!(ev.processes.iter().all(|p| p.evidence.manifest.is_none()));
        assert!(ev.warnings.is_empty(), "{:?}", ev.warnings);
        // No `LEAKHUNT_ALLOC_SITES` (an older bundle): sites were not sampled. Sampled, every
        // process's evidence says so.
        assert!(ev.each_process().all(|e| !e.alloc_sites_sampled));
        for (value, sampled) in [("1", false), ("0", false), ("sampled", true)] {
            let mut manifest = manifest.clone();
            manifest
                .env
                .insert(crate::bundle::ALLOC_SITES_ENV.into(), value.into());
            manifest.save(d).unwrap();
            let ev = load_inputs(&[d.to_path_buf()]).unwrap();
            assert_eq!(ev.processes.len(), 2);
            assert!(
                ev.each_process().all(|e| e.alloc_sites_sampled == sampled),
                "{value}"
            );
        }
    }

    #[test]
    fn a_bundle_loads_sidecars_footprint_and_outcome_and_keeps_going_past_bad_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Schema 1: the one process's footprint at the top level.
        let manifest = Manifest {
            leakhunt_bundle: 1,
            command: vec!["leak.rb".into()],
            snapshots: (1..=2)
                .map(|i| Snapshot {
                    index: i,
                    reason: "interval".into(),
                    t: i as f64,
                    sidecar: Some(format!("agent-00{i}.json")),
                    errors: if i == 2 {
                        vec!["leaks exited with status 2".into()]
                    } else {
                        vec![]
                    },
                    ..Snapshot::default()
                })
                .collect(),
            footprint: Some("footprint.tsv".into()),
            outcome: Outcome {
                kind: "signaled".into(),
                signal: Some(11),
                signal_name: Some("SIGSEGV".into()),
                ..Outcome::default()
            },
            ..Manifest::default()
        };
        manifest.save(d).unwrap();
        std::fs::write(
            d.join("agent-001.json"),
            br#"{"leakhunt_agent":1,"snapshot":1,"lifecycle":[{"class":"Widget","created":5,"released":0}]}"#,
        )
        .unwrap();
        std::fs::write(d.join("agent-002.json"), b"{not json").unwrap();
        std::fs::write(
            d.join("footprint.tsv"),
            b"# leakhunt footprint 1\n0.0\t1000\n0.5\t2000\n",
        )
        .unwrap();
        let ev = load_inputs(&[d.to_path_buf()]).unwrap();
        assert_eq!(ev.origin, Origin::Bundle(d.to_path_buf()));
        assert_eq!(ev.sidecars.len(), 1);
        assert_eq!(ev.sidecars[0].lifecycle[0].created, 5);
        assert_eq!(ev.footprint.len(), 2);
        assert_eq!(
            ev.manifest.as_ref().unwrap().outcome.signal_name.as_deref(),
            Some("SIGSEGV")
        );
        assert!(
            ev.warnings
                .iter()
                .any(|w| w == "snapshot 2 (interval): leaks exited with status 2")
        );
        assert!(
            ev.warnings
                .iter()
                .any(|w| w.contains("agent-002.json: line 1")),
            "{:?}",
            ev.warnings
        );
    }

    #[test]
    fn files_that_cannot_be_read_are_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("x.json");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\n").unwrap();
        let err = load_inputs(&[png]).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::INPUT);
        assert!(err.to_string().contains("x.json"), "{err}");
        let err = load_inputs(&[dir.path().to_path_buf(), dir.path().join("x.json")]).unwrap_err();
        assert!(matches!(err, Error::Usage(_)));
    }

    /// A manifest naming something other than a regular file for a sidecar or the footprint (a
    /// FIFO here) would block the reader: each is a warning naming the file, and the rest of the
    /// bundle still loads.
    #[test]
    fn bundle_files_that_are_not_regular_files_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["agent-001.json", "footprint.tsv"] {
            let c_path = std::ffi::CString::new(d.join(name).to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
            assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        }
        std::fs::write(
            d.join("manifest.json"),
            br#"{"leakhunt_bundle": 1, "command": ["leak.rb"], "footprint": "footprint.tsv",
                "snapshots": [{"index": 1, "reason": "interval", "t": 1.0,
                               "sidecar": "agent-001.json", "heap": "/dev/null"}]}"#,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let bundle = d.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(load_bundle(&bundle).map(|ev| ev.warnings));
        });
        let warnings = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("load_bundle blocked on a FIFO named by the manifest")
            .unwrap();
        let not_regular: Vec<&String> = warnings
            .iter()
            .filter(|w| w.ends_with("named by the manifest but not a regular file"))
            .collect();
        assert_eq!(not_regular.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w
                    .contains(r#"names "/dev/null", which is not a file name inside the bundle"#)),
            "{warnings:?}"
        );
    }

    /// A manifest may name files outside the bundle (`../../../etc/passwd`, `/etc/shadow`),
    /// which `analyze` must not open. Only plain file names inside the bundle are read; the
    /// others are warnings naming the entry, and the rest of the bundle still loads.
    #[test]
    fn manifest_names_outside_the_bundle_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let bundle = outer.path().join("a").join("b").join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        // A real sidecar outside the bundle, which a `..` name would reach.
        std::fs::write(
            outer.path().join("a").join("agent-001.json"),
            br#"{"leakhunt_agent":1,"snapshot":1}"#,
        )
        .unwrap();
        std::fs::write(
            bundle.join("agent-002.json"),
            br#"{"leakhunt_agent":1,"snapshot":2}"#,
        )
        .unwrap();
        std::fs::write(
            bundle.join("manifest.json"),
            br#"{"leakhunt_bundle": 1, "command": ["leak.rb"],
                "footprint": "/etc/shadow", "native_logs": ["../../../etc/passwd"],
                "snapshots": [
                  {"index": 1, "reason": "interval", "t": 1.0, "sidecar": "../../agent-001.json",
                   "heap": "..", "maps": "/proc/self/maps"},
                  {"index": 2, "reason": "interval", "t": 2.0, "sidecar": "agent-002.json"}]}"#,
        )
        .unwrap();
        let ev = load_bundle(&bundle).unwrap();
        assert_eq!(ev.sidecars.len(), 1, "{:?}", ev.warnings);
        assert_eq!(ev.sidecars[0].snapshot, 2);
        assert!(ev.footprint.is_empty());
        assert!(ev.native.is_empty());
        for name in [
            "/etc/shadow",
            "../../../etc/passwd",
            "../../agent-001.json",
            "..",
        ] {
            let refusal = format!("names {name:?}, which is not a file name inside the bundle");
            assert!(
                ev.warnings.iter().any(|w| w.contains(&refusal)),
                "{name}: {:?}",
                ev.warnings
            );
        }
        assert!(
            ev.warnings.iter().all(|w| !w.contains("root:")),
            "{:?}",
            ev.warnings
        );
    }
}
