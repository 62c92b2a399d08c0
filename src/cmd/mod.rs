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
pub mod snapshot;

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
        Command::Snapshot(a) => snapshot::run(a),
    }
}

/// Prints soft problems of an input on stderr, one line each.
pub fn warn_diagnostics(diag: &crate::diag::Diagnostics) {
    for line in diag.lines() {
        eprintln!("leakhunt: warning: {line}");
    }
}

/// Writes a report to stdout through a buffer. A reader that stops early (`| head`) is not an
/// error.
pub fn emit_report(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::error::Error::io("stdout", e)),
        Ok(()) => Ok(()),
    }
}

/// Writes a serde value as pretty JSON on stdout, followed by a newline.
pub fn emit_json(value: &impl serde::Serialize) -> Result<()> {
    emit_report(|out| {
        serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
        writeln!(out)
    })
}

/// Fails unless `path` holds a CRuby dump (for commands that read only that format).
pub fn require_cruby_dump(path: &std::path::Path, command: &str) -> Result<()> {
    use crate::detect::Kind;
    match crate::detect::detect_path(path)? {
        Kind::CrubyDump => Ok(()),
        Kind::RubiniusDump => Err(crate::error::Error::input(
            path,
            crate::diag::Position::Whole,
            format!(
                "a Rubinius heap dump: `leakhunt {command}` reads CRuby ObjectSpace.dump_all \
                 dumps only (`leakhunt histo` reads both)"
            ),
        )),
        other => Err(crate::error::Error::input(
            path,
            crate::diag::Position::Whole,
            format!("a {}, not a CRuby heap dump", other.describe()),
        )),
    }
}
