//! `leakhunt leaks`. To be written.

use crate::cli::LeaksArgs;
use crate::error::{Error, Result};

pub fn run(args: LeaksArgs) -> Result<i32> {
    let _ = args;
    Err(Error::Usage("`leakhunt leaks` is not written yet".into()))
}
