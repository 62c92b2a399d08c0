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
}
