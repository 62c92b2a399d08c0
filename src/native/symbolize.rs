//! Symbols for `module+offset` frames from the module's own tables (object crate), and module maps. To be written (issue 3).
