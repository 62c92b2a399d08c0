//! The `leakhunt histo` JSON layouts: one dump's class histogram, or the difference between
//! two (the text is histo.rb's `%10d %30s %d` table, written by `heap::histogram`).
//!
//! Stage: renderer.

use crate::heap::histogram::{ClassRow, DiffRow};
use serde::Serialize;
use std::path::Path;

/// Version of the JSON layouts below.
pub const SCHEMA: u32 = 1;

#[derive(Serialize)]
pub struct HistogramJson<'a> {
    pub schema: u32,
    pub dump: &'a Path,
    pub objects: u64,
    pub total_count: i64,
    pub total_bytes: i64,
    /// Sorted as the text table: descending count, ties in first-seen order.
    pub rows: Vec<&'a ClassRow>,
}

#[derive(Serialize)]
pub struct DiffJson<'a> {
    pub schema: u32,
    pub before: &'a Path,
    pub after: &'a Path,
    pub before_objects: u64,
    pub after_objects: u64,
    /// AFTER − BEFORE by class name, descending count delta; `status` says how the row came
    /// about (`changed`, `new`, `vanished`).
    pub rows: Vec<&'a DiffRow>,
}
