//! The Ruby agent (`agent.rb`, embedded here as data) and leakhunt's side of its protocol.
//!
//! Stage: `run`. The agent is written into the run's private 0700 directory and loaded into the
//! target through `RUBYOPT=-r<path>`; it listens on a Unix socket in the same directory. The
//! protocol is one line per message (see the header of `agent.rb`); this module turns those lines
//! into [`AgentEvent`]s and sends commands with a bounded wait.

use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const AGENT_SOURCE: &str = include_str!("agent.rb");
/// Protocol version the agent announces in its hello line.
pub const PROTOCOL: u32 = 1;
pub const AGENT_FILE: &str = "leakhunt_agent.rb";
pub const SOCKET_FILE: &str = "agent.sock";
/// Longest line accepted from the agent; longer ones are dropped.
const MAX_LINE: usize = 64 * 1024;

/// The run's private directory, for the agent and its socket: a new 0700 directory under
/// TMPDIR, or under /tmp when TMPDIR's path would not do — a space (RUBYOPT, which loads the
/// agent, splits on spaces) or a socket path too long for a Unix socket address (104 bytes
/// on macOS, where TMPDIR is a long per-user path under /var/folders, 108 on Linux, the NUL
/// included). Whether a path fits is what `SocketAddr::from_pathname` says, the check
/// leakhunt's own connect makes.
pub fn private_dir() -> Result<tempfile::TempDir> {
    let tmpdir = std::env::temp_dir();
    let mut why_not = Vec::new();
    for base in [tmpdir.as_path(), Path::new("/tmp")] {
        match tempfile::Builder::new()
            .prefix("leakhunt-")
            .tempdir_in(base)
        {
            Ok(dir) => match unusable(dir.path()) {
                None => return Ok(dir),
                Some(why) => why_not.push(why),
            },
            Err(e) => why_not.push(format!(
                "cannot create a directory in {}: {e}",
                base.display()
            )),
        }
    }
    Err(Error::Run(format!(
        "no usable private directory: {}; set TMPDIR to a short path without spaces",
        why_not.join("; ")
    )))
}

/// Why `dir` cannot hold the agent and its socket, if it cannot.
pub fn unusable(dir: &Path) -> Option<String> {
    let text = dir.to_string_lossy();
    if text.contains(char::is_whitespace) {
        return Some(format!("{text} has a space, which RUBYOPT cannot carry"));
    }
    let socket = dir.join(SOCKET_FILE);
    if std::os::unix::net::SocketAddr::from_pathname(&socket).is_err() {
        return Some(format!(
            "{} ({} bytes) is too long for a Unix socket path",
            socket.display(),
            socket.as_os_str().len()
        ));
    }
    None
}

/// Writes the agent into `private_dir` (0600) and returns its path.
pub fn install(private_dir: &Path) -> Result<PathBuf> {
    let path = private_dir.join(AGENT_FILE);
    crate::bundle::write_private_atomic(&path, AGENT_SOURCE.as_bytes())?;
    Ok(path)
}

/// One line from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// Sent when leakhunt connects.
    Hello {
        protocol: u32,
        pid: u32,
        ruby: String,
    },
    /// Snapshot `index` is written: the heap dump and sidecar file names (bundle-relative).
    Done {
        index: u32,
        heap: String,
        sidecar: String,
    },
    /// Snapshot `index` failed inside the target.
    Failed { index: u32, message: String },
    /// The program is ending; the agent's at_exit hook waits for a final snapshot or `bye`.
    Exiting { detail: String },
    /// Anything else (kept for the warning).
    Unknown(String),
}

impl AgentEvent {
    pub fn parse(line: &[u8]) -> AgentEvent {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        let mut words = text.splitn(4, ' ');
        let unknown = || AgentEvent::Unknown(text.chars().take(200).collect());
        match words.next().unwrap_or("") {
            "hello" => {
                let protocol = words.next().and_then(|w| w.parse().ok());
                let pid = words.next().and_then(|w| w.parse().ok());
                match (protocol, pid) {
                    (Some(protocol), Some(pid)) => AgentEvent::Hello {
                        protocol,
                        pid,
                        ruby: words.next().unwrap_or("").to_owned(),
                    },
                    _ => unknown(),
                }
            }
            "ok" => {
                let index = words.next().and_then(|w| w.parse().ok());
                match (index, words.next(), words.next()) {
                    (Some(index), Some(heap), Some(sidecar))
                        if is_bundle_name(heap) && is_bundle_name(sidecar) =>
                    {
                        AgentEvent::Done {
                            index,
                            heap: heap.to_owned(),
                            sidecar: sidecar.to_owned(),
                        }
                    }
                    _ => unknown(),
                }
            }
            "error" => match words.next().and_then(|w| w.parse().ok()) {
                Some(index) => {
                    let rest: Vec<&str> = words.collect();
                    AgentEvent::Failed {
                        index,
                        message: rest.join(" "),
                    }
                }
                None => unknown(),
            },
            "exiting" => AgentEvent::Exiting {
                detail: words.collect::<Vec<_>>().join(" "),
            },
            _ => unknown(),
        }
    }
}

/// A file name the agent may report: plain, inside the bundle.
fn is_bundle_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

/// An open connection to the agent.
pub struct AgentLink {
    stream: UnixStream,
    pending: Vec<u8>,
}

/// Why no event came.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Nothing within the wait.
    Quiet,
    /// The agent closed the connection (the process ended or exec'd).
    Closed,
}

impl AgentLink {
    /// Connects to the agent's socket; `None` while it is not listening yet.
    pub fn connect(socket: &Path) -> Option<AgentLink> {
        let stream = UnixStream::connect(socket).ok()?;
        Some(AgentLink {
            stream,
            pending: Vec::new(),
        })
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        self.stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .and_then(|_| self.stream.write_all(format!("{line}\n").as_bytes()))
            .map_err(|e| Error::Run(format!("cannot talk to the agent: {e}")))
    }

    /// The next line from the agent, waiting at most `wait`.
    pub fn next_event(&mut self, wait: Duration) -> std::result::Result<AgentEvent, LinkState> {
        if let Some(event) = self.take_line() {
            return Ok(event);
        }
        let wait = wait.max(Duration::from_millis(1));
        if self.stream.set_read_timeout(Some(wait)).is_err() {
            return Err(LinkState::Closed);
        }
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) => Err(LinkState::Closed),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                if self.pending.len() > MAX_LINE && memchr::memchr(b'\n', &self.pending).is_none() {
                    self.pending.clear();
                }
                self.take_line().ok_or(LinkState::Quiet)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Err(LinkState::Quiet)
            }
            Err(_) => Err(LinkState::Closed),
        }
    }

    fn take_line(&mut self) -> Option<AgentEvent> {
        let end = memchr::memchr(b'\n', &self.pending)?;
        let event = AgentEvent::parse(&self.pending[..end]);
        self.pending.drain(..=end);
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_events() {
        assert_eq!(
            AgentEvent::parse(b"hello 1 4242 ruby 3.1.2p20 (2022-04-12) [x86_64-linux-gnu]\n"),
            AgentEvent::Hello {
                protocol: 1,
                pid: 4242,
                ruby: "ruby 3.1.2p20 (2022-04-12) [x86_64-linux-gnu]".into()
            }
        );
        assert_eq!(
            AgentEvent::parse(b"ok 2 heap-002.json agent-002.json"),
            AgentEvent::Done {
                index: 2,
                heap: "heap-002.json".into(),
                sidecar: "agent-002.json".into()
            }
        );
        assert_eq!(
            AgentEvent::parse(b"error 3 Errno::ENOSPC: No space left on device"),
            AgentEvent::Failed {
                index: 3,
                message: "Errno::ENOSPC: No space left on device".into()
            }
        );
        assert_eq!(
            AgentEvent::parse(b"exiting exit 3"),
            AgentEvent::Exiting {
                detail: "exit 3".into()
            }
        );
    }

    #[test]
    fn bad_lines_are_unknown_never_a_path_outside_the_bundle() {
        for line in [
            &b"ok 1 ../../etc/passwd agent-001.json"[..],
            b"ok x heap.json agent.json",
            b"hello one 2",
            b"\xff\xfe garbage",
            b"",
        ] {
            assert!(
                matches!(AgentEvent::parse(line), AgentEvent::Unknown(_)),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_link_reads_lines_across_reads_and_reports_close() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut link = AgentLink {
            stream: a,
            pending: Vec::new(),
        };
        b.write_all(b"hello 1 7 ruby\nexit").unwrap();
        assert!(matches!(
            link.next_event(Duration::from_millis(200)),
            Ok(AgentEvent::Hello { pid: 7, .. })
        ));
        assert_eq!(
            link.next_event(Duration::from_millis(20)),
            Err(LinkState::Quiet)
        );
        b.write_all(b"ing end\n").unwrap();
        assert_eq!(
            link.next_event(Duration::from_millis(200)),
            Ok(AgentEvent::Exiting {
                detail: "end".into()
            })
        );
        drop(b);
        assert_eq!(
            link.next_event(Duration::from_millis(200)),
            Err(LinkState::Closed)
        );
    }

    #[test]
    fn the_agent_schema_matches_the_bundle_schema() {
        assert!(AGENT_SOURCE.contains(&format!(
            "SIDECAR_SCHEMA = {}",
            crate::bundle::SIDECAR_SCHEMA
        )));
        assert!(AGENT_SOURCE.contains(&format!("PROTOCOL = {PROTOCOL}")));
    }
}
