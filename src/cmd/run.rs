//! `leakhunt run`. To be written.

use crate::cli::RunArgs;
use crate::error::{Error, Result};

pub fn run(args: RunArgs) -> Result<i32> {
    let _ = args;
    Err(Error::Usage("`leakhunt run` is not written yet".into()))
}
