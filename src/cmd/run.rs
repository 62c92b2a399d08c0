//! `leakhunt run`: record a bundle by running the program, then turn the bundle into output.
//!
//! The two steps are separate on purpose: the output comes from the bundle alone, so
//! `leakhunt analyze BUNDLE` can give the same report later.

use crate::cli::RunArgs;
use crate::error::{Result, exit};
use std::path::Path;

pub fn run(args: RunArgs) -> Result<i32> {
    let config = crate::run::RunConfig::from_args(&args);
    let recorded = crate::run::record(&config)?;
    report_bundle(&recorded.bundle, &args)
}

/// Bundle → output (stdout, or `--report PATH`). The correlator's report takes this place.
fn report_bundle(bundle: &Path, args: &RunArgs) -> Result<i32> {
    match &args.report {
        Some(path) => {
            let mut file = crate::bundle::create_private(path)?;
            crate::run::summary::write(bundle, &mut file)?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            crate::run::summary::write(bundle, &mut lock)?;
        }
    }
    eprintln!(
        "leakhunt: bundle {} (read it again with `leakhunt analyze {}`)",
        bundle.display(),
        bundle.display()
    );
    Ok(exit::OK)
}
