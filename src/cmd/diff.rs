//! `leakhunt diff`. To be written.

use crate::cli::DiffArgs;
use crate::error::{Error, Result};

pub fn run(args: DiffArgs) -> Result<i32> {
    let _ = args;
    Err(Error::Usage("`leakhunt diff` is not written yet".into()))
}
