//! What an analysis needs from the machine that ran the program, beyond the bundle's evidence:
//! the real paths of native modules, what naming native frames took from the modules' files
//! (their layout and the functions found; see [`crate::native::symbolize::ModuleCapture`]), the
//! Ruby source files the hints quote, and the exports of the libraries native sites name (when
//! no agent sidecar lists the FFI bindings). `run` reads
//! them on its machine and captures them into the bundle (`resolved.json`), so `analyze BUNDLE`
//! gives the same report anywhere; bare files, and bundles without a capture, are resolved on
//! this machine.
//!
//! Stage: evidence (resolved once, after loading). Which libraries is the correlator's choice
//! (`correlate::sites::libraries_named`); reading them is done here.

use super::{Evidence, LibraryExports, Origin};
use crate::diag::Position;
use crate::error::{Error, Result};
use crate::native::symbolize::ModuleCapture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The capture's file name in a bundle.
pub const FILE: &str = "resolved.json";
/// Version of [`Resolved`]'s layout; readers refuse newer ones.
pub const SCHEMA: u32 = 1;

/// Largest Ruby source file read for the "where is it filled" hint.
const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// `resolved.json`: what the run's machine said, kept with the bundle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resolved {
    pub leakhunt_resolved: u32,
    /// Module paths as the reports name them → their real path, where the two differ.
    pub modules: BTreeMap<String, String>,
    pub library_exports: Vec<LibraryExports>,
    /// Ruby source files by the name the evidence gives them (UTF-8, lossy).
    pub sources: BTreeMap<String, String>,
    /// What naming the native frames took from each module file, by the path the frames or
    /// module maps give it. Absent in captures written before it was kept: their frames are
    /// named from the files on the analysing machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbols: Option<BTreeMap<String, ModuleCapture>>,
}

/// A library whose exports the correlator wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Library {
    /// Named by path in a report's frames.
    Path(PathBuf),
    /// Known only by its stem (`zmq` for `libzmq.so.5`, or `zmq_msg_init` → `zmq`).
    Stem(String),
}

/// Fills [`Evidence::sources`] and [`Evidence::library_exports`]: from the bundle's capture
/// when it has one, else from this machine.
pub fn resolve(ev: &mut Evidence, libraries: &[Library]) {
    if let Some(captured) = &ev.captured {
        ev.sources = captured
            .sources
            .iter()
            .map(|(name, text)| (name.clone(), text.clone().into_bytes()))
            .collect();
        ev.library_exports = captured.library_exports.clone();
        return;
    }
    let bases = source_dirs(ev);
    sources_here(ev, &bases);
    ev.library_exports = library_exports_here(libraries);
}

/// Writes what was resolved into the bundle `dir` and names it in the manifest: one capture
/// for every process of the run (what any of them needed).
pub fn capture(ev: &Evidence, dir: &Path) -> Result<()> {
    let mut resolved = Resolved {
        leakhunt_resolved: SCHEMA,
        ..Resolved::default()
    };
    let mut symbols: BTreeMap<String, ModuleCapture> = BTreeMap::new();
    for ev in ev.each_process() {
        for (path, module) in &ev.module_symbols {
            symbols
                .entry(path.clone())
                .or_insert_with(|| module.clone())
                .functions
                .extend(module.functions.iter().map(|(k, v)| (*k, v.clone())));
        }
        resolved
            .modules
            .extend(ev.real_modules.iter().map(|(k, v)| (k.clone(), v.clone())));
        for exports in &ev.library_exports {
            if !resolved
                .library_exports
                .iter()
                .any(|e| e.path == exports.path)
            {
                resolved.library_exports.push(exports.clone());
            }
        }
        resolved.sources.extend(
            ev.sources
                .iter()
                .map(|(name, bytes)| (name.clone(), String::from_utf8_lossy(bytes).into_owned())),
        );
    }
    resolved.symbols = Some(symbols);
    let bytes = serde_json::to_vec(&resolved)
        .map_err(|e| Error::Run(format!("cannot encode {FILE}: {e}")))?;
    crate::bundle::write_private_atomic(&dir.join(FILE), &bytes)?;
    let mut manifest = crate::bundle::Manifest::load(dir)?;
    manifest.resolved = Some(FILE.to_owned());
    manifest.save(dir)
}

/// Reads a bundle's capture.
pub(crate) fn read_capture(path: &Path) -> Result<Resolved> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let r: Resolved = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(path, Position::Line(e.line() as u64), e.to_string()))?;
    if r.leakhunt_resolved > SCHEMA {
        return Err(Error::input(
            path,
            Position::Whole,
            format!(
                "schema {} is newer than this leakhunt understands; upgrade leakhunt",
                r.leakhunt_resolved
            ),
        ));
    }
    Ok(r)
}

/// Where relative source file names are looked for: the program's working directory and the
/// bundle (bundles), or the current directory and the inputs' directories (files).
fn source_dirs(ev: &Evidence) -> Vec<PathBuf> {
    match &ev.origin {
        Origin::Bundle(dir) => {
            let cwd = ev.manifest.as_ref().map(|m| PathBuf::from(&m.cwd));
            cwd.into_iter().chain([dir.clone()]).collect()
        }
        Origin::Files(paths) => {
            let mut bases: Vec<PathBuf> = vec![PathBuf::from(".")];
            for p in paths {
                if let Some(parent) = p.parent()
                    && !bases.contains(&parent.to_path_buf())
                {
                    bases.push(parent.to_path_buf());
                }
            }
            bases
        }
    }
}

/// Names each module by its real path (`/lib/…/libzmq.so.5` and the maps'
/// `/usr/lib/…/libzmq.so.5.2.4` are one library), so a site keeps one key across reports
/// whichever way a tool or a module map named its library. The real paths come from the
/// bundle's capture when it has one, else from this machine; the ones that differ are kept in
/// [`Evidence::real_modules`] for the capture.
pub(crate) fn real_modules(ev: &mut Evidence) {
    let captured = ev.captured.as_ref().map(|c| &c.modules);
    let mut known: BTreeMap<String, Option<String>> = BTreeMap::new();
    for snap in &mut ev.native {
        for frame in &mut snap.report.frames {
            let Some(module) = frame.module.as_deref().filter(|m| m.starts_with('/')) else {
                continue;
            };
            let real = known
                .entry(module.to_owned())
                .or_insert_with(|| match captured {
                    Some(modules) => modules.get(module).cloned(),
                    None => std::fs::canonicalize(module)
                        .ok()
                        .map(|p| p.display().to_string())
                        .filter(|p| p != module),
                });
            if let Some(real) = real {
                frame.module = Some(real.clone());
            }
        }
    }
    ev.real_modules = known
        .into_iter()
        .filter_map(|(module, real)| Some((module, real?)))
        .collect();
}

/// Reads the Ruby files that allocation sites and lifecycle counts name, for the source hints,
/// from this machine.
fn sources_here(ev: &mut Evidence, bases: &[PathBuf]) {
    let mut wanted: Vec<String> = Vec::new();
    for r in &ev.retainers {
        for g in &r.groups {
            if let Some(site) = &g.container_site {
                wanted.push(site.file.clone());
            }
        }
    }
    for sc in &ev.sidecars {
        for l in &sc.lifecycle {
            wanted.extend(l.created_at.iter().map(|s| s.file.clone()));
        }
    }
    for h in &ev.heap {
        wanted.extend(
            h.summary
                .alloc_sites
                .iter()
                .take(20)
                .map(|s| s.file.clone()),
        );
    }
    wanted.sort();
    wanted.dedup();
    for name in wanted {
        let candidates: Vec<PathBuf> = if Path::new(&name).is_absolute() {
            vec![PathBuf::from(&name)]
        } else {
            bases.iter().map(|b| b.join(&name)).collect()
        };
        for path in candidates {
            let small = std::fs::metadata(&path)
                .map(|m| m.is_file() && m.len() <= MAX_SOURCE_BYTES)
                .unwrap_or(false);
            if small && let Ok(bytes) = std::fs::read(&path) {
                ev.sources.insert(name.clone(), bytes);
                break;
            }
        }
    }
}

/// Directories searched for a library that a report names only by function (`zmq_msg_…` →
/// `libzmq.so*`), on this machine.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib",
    "/lib",
    "/usr/lib64",
    "/opt/homebrew/lib",
];

/// Exported symbols of the libraries the native sites name, read on this machine: libraries
/// named by path are read where they are; a stem sends us looking for `lib<stem>` in the usual
/// directories.
fn library_exports_here(libraries: &[Library]) -> Vec<LibraryExports> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for library in libraries {
        match library {
            Library::Path(p) => paths.push(p.clone()),
            Library::Stem(stem) => paths.extend(find_library(stem)),
        }
    }
    paths.sort();
    paths.dedup();
    paths.iter().filter_map(|p| read_exports(p)).collect()
}

fn library_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for base in ["/usr/lib", "/lib"] {
        if let Ok(entries) = std::fs::read_dir(base) {
            for e in entries.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().ends_with("-linux-gnu") {
                    dirs.push(e.path());
                }
            }
        }
    }
    dirs.extend(LIBRARY_DIRS.iter().map(PathBuf::from));
    dirs
}

/// `lib<stem>.so…` or `lib<stem>….dylib` in the usual directories: the first found.
fn find_library(stem: &str) -> Option<PathBuf> {
    let so = format!("lib{stem}.so");
    let dylib = format!("lib{stem}.");
    for dir in library_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&so) || (n.starts_with(&dylib) && n.ends_with(".dylib"))
                })
            })
            .collect();
        names.sort();
        if let Some(p) = names.into_iter().next() {
            return Some(p);
        }
    }
    None
}

/// The exported function names of a shared library, read with the `object` crate. The path
/// comes from a report's frames, so only a regular file is opened: `/dev/zero` would be read
/// without end and a FIFO would block.
pub fn read_exports(path: &Path) -> Option<LibraryExports> {
    use object::{Object, ObjectSymbol};
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let input = crate::source::Input::open(path).ok()?;
    let file = object::File::parse(&*input).ok()?;
    let exported: Vec<String> = file
        .exports()
        .map(|it| {
            it.filter_map(|e| match e.ok()?.name() {
                object::NameOrOrdinal::Name(n) => Some(String::from_utf8_lossy(n).into_owned()),
                object::NameOrOrdinal::Ordinal(_) => None,
            })
            .collect()
        })
        .unwrap_or_default();
    let mut symbols: Vec<String> = match exported {
        names if !names.is_empty() => names,
        _ => file
            .dynamic_symbols()
            .filter(|s| s.is_definition() && s.is_global())
            .filter_map(|s| s.name().ok().map(str::to_owned))
            .collect(),
    };
    for s in &mut symbols {
        // Mach-O exports carry a leading underscore.
        if let Some(rest) = s.strip_prefix('_')
            && matches!(file.format(), object::BinaryFormat::MachO)
        {
            *s = rest.to_owned();
        }
    }
    symbols.sort();
    symbols.dedup();
    Some(LibraryExports {
        library: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        symbols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::NativeSnapshot;

    #[test]
    fn one_library_named_two_ways_becomes_one_module() {
        use crate::native::{Frame, LeakKind, NativeFormat, ReportBuilder};
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("libthing.so.5.2.4");
        std::fs::write(&real, b"").unwrap();
        let link = dir.path().join("libthing.so.5");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut ev = Evidence::empty(Origin::Files(Vec::new()));
        ev.native = [&link, &real]
            .iter()
            .map(|module| {
                let mut b = ReportBuilder::new("x", NativeFormat::Lsan, 0);
                let f = b.intern_frame(Frame {
                    module: Some(module.display().to_string()),
                    module_offset: Some(0x83a3f),
                    ..Frame::default()
                });
                let s = b.intern_stack(vec![f]);
                b.add_leak(Some(s), LeakKind::Direct, None, 1, 16, None);
                NativeSnapshot {
                    t: None,
                    snapshot: None,
                    at_exit: false,
                    report: b.finish(),
                }
            })
            .collect();
        real_modules(&mut ev);
        let labels: Vec<String> = ev
            .native
            .iter()
            .map(|s| s.report.frames[0].label())
            .collect();
        assert_eq!(
            labels,
            ["libthing.so.5.2.4+0x83a3f", "libthing.so.5.2.4+0x83a3f"]
        );
    }

    #[test]
    fn exported_release_functions_of_an_installed_library() {
        // libzmq5 is in .ci/packages: the seed's library, stripped but with its exports.
        let lib = find_library("zmq").expect("libzmq installed (.ci/packages)");
        let exports = read_exports(&lib).unwrap();
        assert!(
            exports.library.starts_with("libzmq.so"),
            "{}",
            exports.library
        );
        for sym in ["zmq_msg_init_size", "zmq_msg_close", "zmq_ctx_term"] {
            assert!(exports.symbols.iter().any(|s| s == sym), "{sym}");
        }
        assert!(find_library("no-such-library-here").is_none());
    }

    /// What the run resolved travels with the bundle: `analyze` of it reads the capture, not
    /// this machine (the module below does not exist here, the source is not on disk).
    #[test]
    fn a_capture_is_what_analyze_resolves_with() {
        use crate::native::{Frame, LeakKind, NativeFormat, ReportBuilder};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("lsan.log"), b"").unwrap();
        let manifest = crate::bundle::Manifest {
            leakhunt_bundle: crate::bundle::MANIFEST_SCHEMA,
            command: vec!["leak.rb".into()],
            ..Default::default()
        };
        manifest.save(d).unwrap();
        let mut ran = Evidence::empty(Origin::Bundle(d.to_path_buf()));
        ran.real_modules.insert(
            "/gone/libthing.so.5".into(),
            "/gone/libthing.so.5.2.4".into(),
        );
        ran.sources
            .insert("app/leak.rb".into(), b"@items << Item.new\n".to_vec());
        ran.library_exports.push(LibraryExports {
            library: "libthing.so.5.2.4".into(),
            path: "/gone/libthing.so.5.2.4".into(),
            symbols: vec!["thing_free".into(), "thing_new".into()],
        });
        capture(&ran, d).unwrap();
        let mode = std::fs::metadata(d.join(FILE)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let mut ev = crate::evidence::load_bundle(d).unwrap();
        assert_eq!(
            ev.manifest.as_ref().unwrap().resolved.as_deref(),
            Some(FILE)
        );
        let mut b = ReportBuilder::new("x", NativeFormat::Lsan, 0);
        let f = b.intern_frame(Frame {
            module: Some("/gone/libthing.so.5".into()),
            module_offset: Some(0x10),
            ..Frame::default()
        });
        let s = b.intern_stack(vec![f]);
        b.add_leak(Some(s), LeakKind::Direct, None, 1, 16, None);
        ev.native.push(NativeSnapshot {
            t: None,
            snapshot: None,
            at_exit: false,
            report: b.finish(),
        });
        real_modules(&mut ev);
        assert_eq!(
            ev.native[0].report.frames[0].label(),
            "libthing.so.5.2.4+0x10"
        );
        resolve(&mut ev, &[Library::Stem("zmq".into())]);
        assert_eq!(ev.sources, ran.sources);
        assert_eq!(ev.library_exports, ran.library_exports);
    }

    /// A bundle written before captures existed resolves on this machine, as it always did.
    #[test]
    fn a_bundle_without_a_capture_resolves_here() {
        let mut ev = Evidence::empty(Origin::Files(Vec::new()));
        resolve(&mut ev, &[Library::Stem("zmq".into())]);
        assert!(
            ev.library_exports
                .iter()
                .any(|e| e.symbols.iter().any(|s| s == "zmq_msg_close")),
            "libzmq5 is in .ci/packages"
        );
    }
}
