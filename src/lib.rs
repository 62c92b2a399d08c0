//! leakhunt: a leak investigator for programs that mix Ruby objects and native memory.
//!
//! Data flows one way (see STYLE.md):
//! `run` (agent, native backends, platform) → a bundle directory → parsers (`heap`, `native`)
//! → the evidence model (`evidence`) → the correlator (`correlate`) → renderers (`report`).
//! `analyze` enters the same flow from a bundle or from loose files.

pub mod bundle;
pub mod cli;
pub mod cmd;
pub mod correlate;
pub mod detect;
pub mod diag;
pub mod error;
pub mod evidence;
pub mod fasthash;
pub mod format;
pub mod heap;
pub mod native;
pub mod num;
pub mod platform;
pub mod progress;
pub mod report;
pub mod run;
pub mod source;
pub mod zst;
