//! One module per subcommand: read the inputs, call the library, render, pick the exit code.
//!
//! Commands print their report on stdout and problems on stderr; they never call
//! `process::exit` (main.rs does, with the code returned here).

pub mod analyze;
pub mod diff;
pub mod doctor;
pub mod histo;
pub mod leaks;
pub mod retainers;
pub mod run;

use crate::cli::{Cli, Command};
use crate::error::Result;

/// Runs the command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Analyze(a) => analyze::run(a),
        Command::Histo(a) => histo::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Retainers(a) => retainers::run(a),
        Command::Leaks(a) => leaks::run(a),
        Command::Doctor(a) => doctor::run(a),
    }
}

/// Prints soft problems of an input on stderr, one line each.
pub fn warn_diagnostics(diag: &crate::diag::Diagnostics) {
    for line in diag.lines() {
        eprintln!("leakhunt: warning: {line}");
    }
}
