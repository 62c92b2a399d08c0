//! Rubinius `RBXHEAPDUMP` version 1 reader (FORMATS.md §1).
//!
//! Stage: parser. To be written (issue 2).

use super::{HeapSummary, HistogramRead};
use crate::diag::Position;
use crate::error::{Error, Result};
use std::path::Path;

pub fn summarize(path: &Path) -> Result<HeapSummary> {
    Err(Error::input(
        path,
        Position::Whole,
        "Rubinius dump reader not written yet",
    ))
}

pub fn histogram(path: &Path) -> Result<HistogramRead> {
    Err(Error::input(
        path,
        Position::Whole,
        "Rubinius dump reader not written yet",
    ))
}
