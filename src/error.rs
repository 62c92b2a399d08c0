//! Hard errors (nothing usable could be read, bad usage, a backend is missing) and exit codes.
//!
//! Soft problems inside an input are [`crate::diag::Diagnostics`], not errors. Every error
//! prints as one line naming the file and, where known, the line or byte offset.

use crate::diag::Position;
use std::fmt;
use std::path::{Path, PathBuf};

/// Exit codes shared by every command (documented in the README).
pub mod exit {
    /// Success; for `run`/`analyze`: no finding at or above `--fail-on`.
    pub const OK: i32 = 0;
    /// `run`/`analyze`: findings at or above `--fail-on`.
    pub const FINDINGS: i32 = 1;
    /// Usage error, or an input from which nothing usable was read.
    pub const INPUT: i32 = 2;
    /// The chosen native backend is not available on this machine.
    pub const BACKEND: i32 = 3;
}

#[derive(Debug)]
pub enum Error {
    /// Reading or writing a file failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The input is not what the command needs, or nothing usable could be read from it.
    Input {
        path: PathBuf,
        at: Position,
        message: String,
    },
    /// The command line makes no sense.
    Usage(String),
    /// The native backend (leaks, LSan runtime, valgrind) cannot be used; says what to install.
    BackendUnavailable(String),
    /// Something else went wrong while running the target.
    Run(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn input(path: impl AsRef<Path>, at: Position, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            at,
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BackendUnavailable(_) => exit::BACKEND,
            _ => exit::INPUT,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Input {
                path,
                at: Position::Whole,
                message,
            } => write!(f, "{}: {message}", path.display()),
            Error::Input { path, at, message } => {
                write!(f, "{}: {at}: {message}", path.display())
            }
            Error::Usage(m) => write!(f, "usage: {m}"),
            Error::BackendUnavailable(m) => write!(f, "backend unavailable: {m}"),
            Error::Run(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_and_position() {
        let e = Error::input("heap.json", Position::Line(3), "not a heap dump");
        assert_eq!(e.to_string(), "heap.json: line 3: not a heap dump");
        let e = Error::input("x.dump", Position::Offset(17), "bad tag 0x41");
        assert_eq!(e.to_string(), "x.dump: byte offset 17: bad tag 0x41");
        assert_eq!(e.exit_code(), exit::INPUT);
        assert_eq!(
            Error::BackendUnavailable("x".into()).exit_code(),
            exit::BACKEND
        );
    }
}
