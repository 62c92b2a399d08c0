//! LeakSanitizer text logs. To be written (issue 3).

use super::NativeReport;
use crate::error::Result;
use std::path::Path;

/// Parses a LeakSanitizer log: one report per leak check found in it.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let _ = bytes;
    Err(crate::error::Error::input(
        path,
        crate::diag::Position::Whole,
        "LSan reader not written yet",
    ))
}
