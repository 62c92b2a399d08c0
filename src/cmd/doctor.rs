//! `leakhunt doctor`. To be written.

use crate::cli::DoctorArgs;
use crate::error::{Error, Result};

pub fn run(args: DoctorArgs) -> Result<i32> {
    let _ = args;
    Err(Error::Usage("`leakhunt doctor` is not written yet".into()))
}
