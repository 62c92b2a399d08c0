//! `leakhunt analyze`. To be written.

use crate::cli::AnalyzeArgs;
use crate::error::{Error, Result};

pub fn run(args: AnalyzeArgs) -> Result<i32> {
    let _ = args;
    Err(Error::Usage("`leakhunt analyze` is not written yet".into()))
}
