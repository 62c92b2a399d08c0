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
    /// A step of snapshot `index` ran past its budget (milliseconds it had); the steps after it
    /// were skipped and the program's threads resumed. Sent before the answer.
    Overran {
        index: u32,
        step: RoundStep,
        budget_ms: u64,
    },
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
            "overran" => {
                let index = words.next().and_then(|w| w.parse().ok());
                let step = words.next().and_then(RoundStep::parse);
                let seconds = words.next().and_then(|w| w.trim().parse::<f64>().ok());
                match (index, step, seconds) {
                    (Some(index), Some(step), Some(s)) if s.is_finite() => AgentEvent::Overran {
                        index,
                        step,
                        budget_ms: (s.max(0.0) * 1000.0) as u64,
                    },
                    _ => unknown(),
                }
            }
            "exiting" => AgentEvent::Exiting {
                detail: words.collect::<Vec<_>>().join(" "),
            },
            _ => unknown(),
        }
    }
}

/// The steps of a snapshot round in the agent, in order (`agent.rb`, `snapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundStep {
    /// Finding wrapper classes; the program runs meanwhile.
    Scan,
    /// The full GC, with the program's threads parked (as for every step below).
    Gc,
    Dump,
    /// LeakSanitizer's check.
    Lsan,
    /// Copying the lifecycle counts.
    Counts,
}

impl RoundStep {
    fn parse(word: &str) -> Option<RoundStep> {
        Some(match word {
            "scan" => RoundStep::Scan,
            "gc" => RoundStep::Gc,
            "dump" => RoundStep::Dump,
            "lsan" => RoundStep::Lsan,
            "counts" => RoundStep::Counts,
            _ => return None,
        })
    }

    /// What the step does, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            RoundStep::Scan => "the wrapper scan",
            RoundStep::Gc => "the garbage collection",
            RoundStep::Dump => "the heap dump",
            RoundStep::Lsan => "the LeakSanitizer check",
            RoundStep::Counts => "copying the lifecycle counts",
        }
    }

    /// The message for this step having run past the `budget_ms` it had.
    pub fn overran(self, budget_ms: u64) -> String {
        let then = match self {
            // The program runs during the scan: it is only cut short.
            RoundStep::Scan => "it stopped early",
            _ => "the program was resumed",
        };
        format!(
            "{} overran its {} s budget; {then}",
            self.describe(),
            budget_ms.saturating_add(500) / 1000
        )
    }

    /// Whether the native check that follows the GC inside the round could not run on time
    /// when this step overran (the LeakSanitizer check comes after the GC and the dump).
    pub fn spoils_native_check(self) -> bool {
        matches!(self, RoundStep::Gc | RoundStep::Dump | RoundStep::Lsan)
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
            AgentEvent::parse(b"overran 2 lsan 40.5"),
            AgentEvent::Overran {
                index: 2,
                step: RoundStep::Lsan,
                budget_ms: 40_500
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
    fn an_overrun_says_what_became_of_the_program() {
        assert_eq!(
            RoundStep::Lsan.overran(40_400),
            "the LeakSanitizer check overran its 40 s budget; the program was resumed"
        );
        assert_eq!(
            RoundStep::Scan.overran(14_600),
            "the wrapper scan overran its 15 s budget; it stopped early"
        );
        assert!(RoundStep::Dump.spoils_native_check() && !RoundStep::Counts.spoils_native_check());
    }

    #[test]
    fn bad_lines_are_unknown_never_a_path_outside_the_bundle() {
        for line in [
            &b"ok 1 ../../etc/passwd agent-001.json"[..],
            b"ok x heap.json agent.json",
            b"hello one 2",
            b"overran 2 nap 1.0",
            b"overran 2 gc NaN",
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
