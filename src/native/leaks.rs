//! macOS `leaks(1)` reports of every era (reference/leaks/FORMAT.md). To be written (issue 3).

use super::NativeReport;
use crate::error::Result;
use std::path::Path;

/// Parses one `leaks` output into its report(s).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let _ = bytes;
    Err(crate::error::Error::input(
        path,
        crate::diag::Position::Whole,
        "leaks reader not written yet",
    ))
}
