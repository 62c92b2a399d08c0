//! `leakhunt analyze BUNDLE | FILE…`: load the evidence, correlate, render, pick the exit code.
//! [`report`] is also how `leakhunt run` ends, so a run and `analyze` of its bundle print the
//! same report.

use crate::cli::{AnalyzeArgs, FailOn, ReportFormat};
use crate::correlate::{Options, correlate};
use crate::error::{Error, Result};
use crate::evidence::Evidence;
use crate::report::paths::PathStyle;
use crate::report::{RenderOptions, exit_code, renderer, stdout_wants_color};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    let evidence = crate::evidence::load_inputs(&args.inputs)?;
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

/// The report of a bundle, as `leakhunt run` prints it at the end.
pub fn report_bundle(dir: &Path, request: &ReportRequest) -> Result<i32> {
    let evidence = crate::evidence::load_bundle(dir)?;
    report(&evidence, request)
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
