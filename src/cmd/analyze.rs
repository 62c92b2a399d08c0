//! `leakhunt analyze BUNDLE | FILE…`: load the evidence, correlate, render, pick the exit code.
//! [`report`] is also how `leakhunt run` ends, so a run and `analyze` of its bundle print the
//! same report.

use crate::cli::{AnalyzeArgs, FailOn, ReportFormat};
use crate::correlate::{self, Options, correlate};
use crate::error::{Error, Result};
use crate::evidence::{self, Evidence};
use crate::report::paths::PathStyle;
use crate::report::{RenderOptions, exit_code, renderer, stdout_wants_color};
use std::io::Write;
use std::path::PathBuf;

/// How the report is to be written.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    pub format: ReportFormat,
    /// A file to write instead of stdout.
    pub output: Option<PathBuf>,
    pub fail_on: FailOn,
    pub include_strings: bool,
}

pub fn run(args: AnalyzeArgs) -> Result<i32> {
    let evidence = load_evidence(&args.inputs)?;
    report(
        &evidence,
        &ReportRequest {
            format: args.format,
            output: args.output,
            fail_on: args.fail_on,
            include_strings: args.include_strings,
        },
    )
}

/// Readers → evidence, completed once with what the correlator asks for: the retainer paths of
/// the classes it will judge, and the libraries whose exports it looks up (with the Ruby
/// sources the hints quote), from the bundle's capture or this machine — for every process of
/// a run of several.
pub fn load_evidence(inputs: &[PathBuf]) -> Result<Evidence> {
    let mut ev = evidence::load_inputs(inputs)?;
    ev.for_each_process_mut(|ev| {
        let classes = correlate::classes::retainer_classes(ev);
        evidence::retainers::add(ev, &classes);
        let libraries = correlate::sites::libraries_named(ev);
        evidence::resolve::resolve(ev, &libraries);
    });
    let mut others: Vec<String> = ev
        .processes
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.evidence.warnings))
        .collect();
    ev.warnings.append(&mut others);
    Ok(ev)
}

/// Correlates, writes the report where asked, and returns the exit code for `--fail-on`.
/// Problems met while loading are also printed on stderr, one line each.
pub fn report(evidence: &Evidence, request: &ReportRequest) -> Result<i32> {
    for w in &evidence.warnings {
        eprintln!("leakhunt: warning: {w}");
    }
    let analysis = correlate(
        evidence,
        &Options {
            include_strings: request.include_strings,
        },
    );
    let color =
        request.output.is_none() && request.format == ReportFormat::Text && stdout_wants_color();
    let render = renderer(
        request.format,
        RenderOptions {
            color,
            paths: PathStyle::current_dir(),
        },
    );
    match &request.output {
        Some(path) => {
            let mut bytes = Vec::new();
            render
                .render(&analysis, &mut bytes)
                .map_err(|e| Error::io(path, e))?;
            crate::bundle::write_private_atomic(path, &bytes)?;
            eprintln!("leakhunt: report written to {}", path.display());
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            render
                .render(&analysis, &mut out)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("<stdout>", e))?;
        }
    }
    Ok(exit_code(&analysis, request.fail_on))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report whose frames name a module that is not a regular file (`/dev/zero`, a FIFO)
    /// would have `analyze` read it for its exports without end, or block: it is passed over.
    #[test]
    fn a_module_that_is_not_a_regular_file_is_not_read_for_exports() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("libfifo.so");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let log = dir.path().join("lsan.log");
        std::fs::write(
            &log,
            format!(
                "==1==ERROR: LeakSanitizer: detected memory leaks\n\n\
                 Direct leak of 64 byte(s) in 1 object(s) allocated from:\n\
                 \x20   #0 0x7f0000001000 in malloc (/usr/lib/liblsan.so.0+0x1000)\n\
                 \x20   #1 0x7f0000002000 in widget_create ({}+0x1139)\n\n\
                 SUMMARY: LeakSanitizer: 64 byte(s) leaked in 1 allocation(s).\n",
                fifo.display()
            ),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ev = load_evidence(&[log]).map(|ev| ev.library_exports.len());
            let _ = tx.send(ev.map_err(|e| e.to_string()));
        });
        let loaded = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("load_evidence blocked on a FIFO named by a frame");
        assert_eq!(loaded, Ok(0));
    }

    /// The text report of a bundle, as `analyze` prints it (no colour).
    fn text_report(bundle: &std::path::Path) -> String {
        let ev = load_evidence(&[bundle.to_path_buf()]).unwrap();
        let analysis = correlate(
            &ev,
            &Options {
                include_strings: false,
            },
        );
        let mut out = Vec::new();
        renderer(
            ReportFormat::Text,
            RenderOptions {
                color: false,
                paths: PathStyle::current_dir(),
            },
        )
        .render(&analysis, &mut out)
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Frames LSan left as `module+offset` or `<unknown module>` are placed and named from the
    /// module's file. The run captures what that took into the bundle, so `analyze` of the
    /// bundle gives the run's report after the file is gone or replaced by another build; a
    /// capture without it (an older leakhunt's) still names them from this machine's files.
    #[test]
    fn native_frames_are_named_as_the_run_named_them_when_the_module_is_gone_or_changed() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        let libs = dir.path().join("lib");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::create_dir_all(&libs).unwrap();
        let module = libs.join("libtiny.dylib");
        let tiny = crate::native::symbolize::tests::tiny_macho();
        std::fs::write(&module, &tiny).unwrap();
        // `second` at module offset 0x180; `first` at file offset 0x100, reached through the
        // map from an address LSan could not place (the library unloaded at exit).
        let log = format!(
            "==1==ERROR: LeakSanitizer: detected memory leaks\n\n\
             Direct leak of 64 byte(s) in 1 object(s) allocated from:\n\
             \x20   #0 0x7f0000009000  (/usr/lib/liblsan.so.0+0x1000)\n\
             \x20   #1 0x7f0000000100  (<unknown module>)\n\
             \x20   #2 0x7f0000000180  ({}+0x180)\n\n\
             SUMMARY: LeakSanitizer: 64 byte(s) leaked in 1 allocation(s).\n",
            module.display()
        );
        std::fs::write(bundle.join("lsan.log"), &log).unwrap();
        std::fs::write(
            bundle.join("maps-001.txt"),
            format!(
                "7f0000000000-7f0000001000 r-xp 00000000 fe:01 91 {}\n",
                module.display()
            ),
        )
        .unwrap();
        let manifest = crate::bundle::Manifest {
            leakhunt_bundle: crate::bundle::MANIFEST_SCHEMA,
            command: vec!["leak.rb".into()],
            pid: Some(10),
            snapshots: vec![crate::bundle::Snapshot {
                index: 1,
                pid: Some(10),
                reason: "interval".into(),
                t: 1.0,
                native: Some(crate::bundle::NativeRef {
                    file: "lsan.log".into(),
                    start: None,
                    end: None,
                }),
                maps: Some("maps-001.txt".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        manifest.save(&bundle).unwrap();

        // What `run` does once the program has ended.
        let ran = load_evidence(std::slice::from_ref(&bundle)).unwrap();
        assert_eq!(ran.native.len(), 1, "{:?}", ran.warnings);
        let names: Vec<Option<&str>> = ran.native[0]
            .report
            .frames
            .iter()
            .map(|f| f.function.as_deref())
            .collect();
        assert!(
            names.contains(&Some("first")) && names.contains(&Some("second")),
            "{names:?}"
        );
        evidence::resolve::capture(&ran, &bundle).unwrap();
        let report = text_report(&bundle);
        assert!(report.contains("second"), "{report}");

        std::fs::remove_file(&module).unwrap();
        assert_eq!(text_report(&bundle), report, "module gone");

        // Another build of the library: the same layout, other names.
        let mut other = tiny.clone();
        let at = other
            .windows(14)
            .position(|w| w == b"_first\0_second")
            .unwrap();
        other[at..at + 14].copy_from_slice(b"_alpha\0_omega_");
        std::fs::write(&module, &other).unwrap();
        assert_eq!(text_report(&bundle), report, "module changed");

        // A capture from before the symbols were kept: this machine's files name the frames.
        let path = bundle.join(evidence::resolve::FILE);
        let mut capture: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(capture.as_object_mut().unwrap().remove("symbols").is_some());
        std::fs::write(&path, serde_json::to_vec(&capture).unwrap()).unwrap();
        let here = text_report(&bundle);
        assert!(here.contains("omega_"), "{here}");
    }
}
