//! valgrind memcheck XML (protocol 4) and text (`vgdb … leak_check` output). To be written (issue 3).

use super::NativeReport;
use crate::error::Result;
use std::path::Path;

pub fn parse_xml(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let _ = bytes;
    Err(crate::error::Error::input(
        path,
        crate::diag::Position::Whole,
        "valgrind XML reader not written yet",
    ))
}

pub fn parse_text(path: &Path, bytes: &[u8]) -> Result<Vec<NativeReport>> {
    let _ = bytes;
    Err(crate::error::Error::input(
        path,
        crate::diag::Position::Whole,
        "valgrind text reader not written yet",
    ))
}
