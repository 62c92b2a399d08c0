//! `leakhunt run`: record a bundle by running the program, then turn the bundle into output.
//!
//! The two steps are separate on purpose: the output comes from the bundle alone, so
//! `leakhunt analyze BUNDLE` can give the same report later.

use crate::cli::RunArgs;
use crate::error::Result;
use std::path::Path;

pub fn run(args: RunArgs) -> Result<i32> {
    let config = crate::run::RunConfig::from_args(&args);
    let recorded = crate::run::record(&config)?;
    let code = report_bundle(&recorded.bundle, &args);
    // Named once, after the report (or its error), where the user looks last.
    eprintln!(
        "leakhunt: bundle {} (read it again with `leakhunt analyze {}`)",
        recorded.bundle.display(),
        recorded.bundle.display()
    );
    code
}

/// Bundle → output: the report `leakhunt analyze BUNDLE` prints, from the bundle alone
/// (stdout, or `--report PATH`), and its exit code.
///
/// What the analysis needs from this machine (library exports, Ruby sources, real module
/// paths) is captured into the bundle first, so that `analyze` gives this report anywhere.
fn report_bundle(bundle: &Path, args: &RunArgs) -> Result<i32> {
    let evidence = crate::cmd::analyze::load_evidence(&[bundle.to_path_buf()])?;
    if let Err(e) = crate::evidence::resolve::capture(&evidence, bundle) {
        eprintln!(
            "leakhunt: warning: {e} (`leakhunt analyze` of this bundle elsewhere may differ)"
        );
    }
    let code = crate::cmd::analyze::report(
        &evidence,
        &crate::cmd::analyze::ReportRequest {
            format: args.format,
            output: args.report.clone(),
            fail_on: args.fail_on,
            include_strings: args.include_strings,
        },
    )?;
    Ok(code)
}
