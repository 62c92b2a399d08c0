//! Platform-specific pieces behind one interface (`linux.rs`, `macos.rs`). To be written (issue 4).
