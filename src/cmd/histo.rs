//! `leakhunt histo`. To be written.

use crate::cli::HistoArgs;
use crate::error::{Error, Result};

pub fn run(args: HistoArgs) -> Result<i32> {
    let _ = args;
    Err(Error::Usage("`leakhunt histo` is not written yet".into()))
}
