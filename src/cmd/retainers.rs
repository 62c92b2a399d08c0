//! `leakhunt retainers`. To be written.

use crate::cli::RetainersArgs;
use crate::error::{Error, Result};

pub fn run(args: RetainersArgs) -> Result<i32> {
    let _ = args;
    Err(Error::Usage(
        "`leakhunt retainers` is not written yet".into(),
    ))
}
