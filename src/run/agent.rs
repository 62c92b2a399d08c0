//! The Ruby agent (`agent.rb`, embedded here as data) and leakhunt's side of its protocol.
//!
//! Stage: `run`. The agent is written into the run's private 0700 directory ([`private_dir`])
//! and loaded into the target through `RUBYOPT=-r<path>`. leakhunt listens on a Unix socket in the same directory
//! ([`AgentHub`]); every Ruby process of the program's tree connects to it — the program, the
//! processes it forks (the agent re-arms in the child) and the Ruby programs it starts (they
//! inherit `RUBYOPT`) — and says hello with its pid, parent and command line. The protocol is one
//! line per message (see the header of `agent.rb`); this module turns those lines into
//! [`AgentEvent`]s and sends commands without ever blocking on a slow agent.

use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const AGENT_SOURCE: &str = include_str!("agent.rb");
/// Protocol version the agent announces in its hello line.
pub const PROTOCOL: u32 = 2;
pub const AGENT_FILE: &str = "leakhunt_agent.rb";
pub const SOCKET_FILE: &str = "agent.sock";
/// Longest line accepted from the agent; longer ones are dropped.
const MAX_LINE: usize = 64 * 1024;

/// The run's private directory, for the agent and its socket: a new 0700 directory under
/// TMPDIR, or under /tmp when TMPDIR's path would not do — a space (RUBYOPT, which loads the
/// agent, splits on spaces) or a socket path too long for a Unix socket address (104 bytes
/// on macOS, where TMPDIR is a long per-user path under /var/folders, 108 on Linux, the NUL
/// included). Whether a path fits is what `SocketAddr::from_pathname` says, the check
/// leakhunt's own bind makes.
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

/// What a process says about itself when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    pub protocol: u32,
    pub pid: u32,
    pub ppid: u32,
    /// The agent re-armed after a fork (the process runs its parent's program).
    pub forked: bool,
    /// A forked process's GC count as it was forked (its parent's then): which of the parent's
    /// heap dumps were taken before the fork.
    pub gc_count_at_fork: Option<u64>,
    pub ruby: String,
    /// `$0` and `ARGV` when the agent loaded (a forked process: its parent's).
    pub command: Vec<String>,
}

/// One line from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// Sent first, on connecting.
    Hello(Hello),
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
    /// The process is ending; the agent's at_exit hook may wait for a final snapshot or `bye`.
    Exiting { detail: String },
    /// Anything else (kept for the warning).
    Unknown(String),
}

impl AgentEvent {
    pub fn parse(line: &[u8]) -> AgentEvent {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        let unknown = || AgentEvent::Unknown(text.chars().take(200).collect());
        if let Some(rest) = text.strip_prefix("hello ") {
            return parse_hello(rest).map_or_else(unknown, AgentEvent::Hello);
        }
        let mut words = text.splitn(4, ' ');
        match words.next().unwrap_or("") {
            "ok" => {
                let index = words.next().and_then(|w| w.parse().ok());
                match (index, words.next(), words.next()) {
                    (Some(index), Some(heap), Some(sidecar))
                        if crate::bundle::is_member_name(heap)
                            && crate::bundle::is_member_name(sidecar) =>
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
    /// The full GC, with the program's threads paused (as for every step below).
    Gc,
    /// glibc's malloc measure (`--backend none`).
    Malloc,
    Dump,
    /// A held round's dump written into its file (through write(2), the GVL kept).
    Write,
    /// LeakSanitizer's check.
    Lsan,
    /// Copying the lifecycle counts.
    Counts,
    /// Listing the containers held by constants, by address.
    Constants,
}

impl RoundStep {
    fn parse(word: &str) -> Option<RoundStep> {
        Some(match word {
            "scan" => RoundStep::Scan,
            "gc" => RoundStep::Gc,
            "malloc" => RoundStep::Malloc,
            "dump" => RoundStep::Dump,
            "write" => RoundStep::Write,
            "lsan" => RoundStep::Lsan,
            "counts" => RoundStep::Counts,
            "constants" => RoundStep::Constants,
            _ => return None,
        })
    }

    /// What the step does, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            RoundStep::Scan => "the wrapper scan",
            RoundStep::Gc => "the garbage collection",
            RoundStep::Malloc => "the malloc measure",
            RoundStep::Dump => "the heap dump",
            RoundStep::Write => "writing the heap dump",
            RoundStep::Lsan => "the LeakSanitizer check",
            RoundStep::Counts => "copying the lifecycle counts",
            RoundStep::Constants => "listing the constants' containers",
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
        matches!(
            self,
            RoundStep::Gc
                | RoundStep::Malloc
                | RoundStep::Dump
                | RoundStep::Write
                | RoundStep::Lsan
        )
    }
}

/// `PROTOCOL PID PPID started|forked[ GC_COUNT]<TAB>RUBY_DESCRIPTION<TAB>COMMAND_AS_JSON_ARRAY`.
/// A command or GC count that does not parse is left out: the hello still counts.
fn parse_hello(rest: &str) -> Option<Hello> {
    let mut fields = rest.splitn(3, '\t');
    let mut words = fields.next()?.split(' ');
    let protocol = words.next()?.parse().ok()?;
    let pid = words.next()?.parse().ok()?;
    let ppid = words.next()?.parse().ok()?;
    let forked = match words.next()? {
        "forked" => true,
        "started" => false,
        _ => return None,
    };
    let gc_count_at_fork = words.next().filter(|_| forked).and_then(|w| w.parse().ok());
    let ruby = fields.next().unwrap_or("").to_owned();
    let command = fields
        .next()
        .and_then(|json| serde_json::from_str::<Vec<String>>(json).ok())
        .unwrap_or_default();
    Some(Hello {
        protocol,
        pid,
        ppid,
        forked,
        gc_count_at_fork,
        ruby,
        command,
    })
}

/// Identifies one connection for as long as the run lasts (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// What the hub saw during one [`AgentHub::poll`].
#[derive(Debug, PartialEq, Eq)]
pub enum HubEvent {
    Line(LinkId, AgentEvent),
    /// The process closed its connection (it ended, exec'd, or its agent gave up).
    Closed(LinkId),
}

/// One agent's connection.
struct Link {
    id: LinkId,
    stream: UnixStream,
    pending: Vec<u8>,
}

/// leakhunt's end: the listening socket every agent connects to (0600, in the private 0700
/// directory; no network listener), and the open connections. All sockets are non-blocking and
/// watched together with poll(2), so a process that hangs holds up no other.
pub struct AgentHub {
    listener: UnixListener,
    links: Vec<Link>,
    next: u64,
}

impl AgentHub {
    /// Listens on `socket` (mode 0600).
    pub fn bind(socket: &Path) -> Result<AgentHub> {
        use std::os::unix::fs::PermissionsExt;
        let listener = UnixListener::bind(socket).map_err(|e| {
            Error::Run(format!(
                "cannot listen on {} for the agent: {e}",
                socket.display()
            ))
        })?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(socket, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(socket, e))?;
        Ok(AgentHub {
            listener,
            links: Vec::new(),
            next: 1,
        })
    }

    /// Waits up to `wait` for something to happen, then takes new connections and every
    /// complete line that arrived (events in arrival order per connection).
    pub fn poll(&mut self, wait: Duration) -> Vec<HubEvent> {
        let mut events = Vec::new();
        // Lines already buffered need no wait.
        for link in &mut self.links {
            while let Some(event) = take_line(&mut link.pending) {
                events.push(HubEvent::Line(link.id, event));
            }
        }
        let wait = if events.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.listener.as_raw_fd())
            .chain(self.links.iter().map(|l| l.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs that lives across the
        // call; poll(2) only writes their `revents`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready <= 0 {
            return events;
        }
        let readable: Vec<bool> = fds.iter().map(|p| p.revents != 0).collect();
        let mut closed = Vec::new();
        for (i, link) in self.links.iter_mut().enumerate() {
            if !readable[i + 1] {
                continue;
            }
            if read_available(link) {
                closed.push(link.id);
            }
            while let Some(event) = take_line(&mut link.pending) {
                events.push(HubEvent::Line(link.id, event));
            }
        }
        for id in closed {
            self.links.retain(|l| l.id != id);
            events.push(HubEvent::Closed(id));
        }
        if readable[0] {
            self.accept_all();
        }
        events
    }

    /// Takes every connection waiting on the listener. A new connection's first line (its
    /// hello) comes with a later poll.
    fn accept_all(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let id = LinkId(self.next);
            self.next += 1;
            self.links.push(Link {
                id,
                stream,
                pending: Vec::new(),
            });
        }
    }

    /// Sends one line. A command is a few dozen bytes: a socket whose buffer is full belongs to
    /// an agent that stopped reading, which is an error, not a reason to wait.
    pub fn send(&mut self, id: LinkId, line: &str) -> Result<()> {
        let link = self
            .links
            .iter_mut()
            .find(|l| l.id == id)
            .ok_or_else(|| Error::Run("the agent is not connected".into()))?;
        link.stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| Error::Run(format!("cannot talk to the agent: {e}")))
    }

    /// Whether connection `id` is still open.
    pub fn is_open(&self, id: LinkId) -> bool {
        self.links.iter().any(|l| l.id == id)
    }

    /// How many connections are open.
    pub fn open_links(&self) -> usize {
        self.links.len()
    }
}

/// Reads what the socket holds now; true when the peer closed it (or it failed).
fn read_available(link: &mut Link) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match link.stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                link.pending.extend_from_slice(&buf[..n]);
                if link.pending.len() > MAX_LINE && memchr::memchr(b'\n', &link.pending).is_none() {
                    link.pending.clear();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn take_line(pending: &mut Vec<u8>) -> Option<AgentEvent> {
    let end = memchr::memchr(b'\n', pending)?;
    let event = AgentEvent::parse(&pending[..end]);
    pending.drain(..=end);
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn lines_become_events() {
        assert_eq!(
            AgentEvent::parse(
                b"hello 2 4242 4200 forked 57\truby 3.1.2p20 (2022-04-12) [x86_64-linux-gnu]\t[\"puma\",\"-w\",\"2\"]\n"
            ),
            AgentEvent::Hello(Hello {
                protocol: 2,
                pid: 4242,
                ppid: 4200,
                forked: true,
                gc_count_at_fork: Some(57),
                ruby: "ruby 3.1.2p20 (2022-04-12) [x86_64-linux-gnu]".into(),
                command: vec!["puma".into(), "-w".into(), "2".into()],
            })
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

    /// The agent tells leakhunt which step overran by the name its round gives the step:
    /// every `round.step('NAME'` of agent.rb must parse, or the overrun is an unknown line and a
    /// snapshot whose LSan check was skipped would look checked.
    #[test]
    fn every_step_of_the_agent_s_round_is_known() {
        let mut rest = AGENT_SOURCE;
        let mut seen = 0;
        while let Some(at) = rest.find("round.step('") {
            rest = &rest[at + "round.step('".len()..];
            let name = &rest[..rest.find('\'').unwrap()];
            assert!(RoundStep::parse(name).is_some(), "step {name} of agent.rb");
            seen += 1;
        }
        assert!(seen >= 7, "{seen} steps found");
        assert_eq!(
            AgentEvent::parse(b"overran 2 write 0.3"),
            AgentEvent::Overran {
                index: 2,
                step: RoundStep::Write,
                budget_ms: 300
            }
        );
        assert!(RoundStep::Write.spoils_native_check() && RoundStep::Malloc.spoils_native_check());
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
    fn a_hello_whose_command_does_not_parse_still_counts() {
        match AgentEvent::parse(b"hello 2 7 1 started\truby\t[not json") {
            AgentEvent::Hello(h) => {
                assert_eq!((h.pid, h.ppid, h.forked), (7, 1, false));
                assert!(h.command.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // A forked process without its GC count (an agent of before it was sent), or a bad one.
        for line in [
            &b"hello 2 8 7 forked\truby\t[]"[..],
            b"hello 2 8 7 forked x\truby\t[]",
        ] {
            match AgentEvent::parse(line) {
                AgentEvent::Hello(h) => assert_eq!((h.forked, h.gc_count_at_fork), (true, None)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bad_lines_are_unknown_never_a_path_outside_the_bundle() {
        for line in [
            &b"ok 1 ../../etc/passwd agent-001.json"[..],
            b"ok x heap.json agent.json",
            b"hello one 2",
            b"hello 2 7 1 adopted\truby\t[]",
            b"hello 2 7\truby",
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

    /// Waits until the hub has produced `n` events.
    fn events(hub: &mut AgentHub, n: usize) -> Vec<HubEvent> {
        let until = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < until {
            out.extend(hub.poll(Duration::from_millis(50)));
        }
        out
    }

    #[test]
    fn the_hub_takes_several_agents_and_reads_lines_across_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(SOCKET_FILE);
        let mut hub = AgentHub::bind(&socket).unwrap();
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut a = UnixStream::connect(&socket).unwrap();
        let mut b = UnixStream::connect(&socket).unwrap();
        assert!(hub.poll(Duration::from_millis(200)).is_empty());
        a.write_all(b"hello 2 7 1 started\truby\t[]\nexit").unwrap();
        b.write_all(b"hello 2 8 7 forked\truby\t[]\n").unwrap();
        let got = events(&mut hub, 2);
        let pids: Vec<u32> = got
            .iter()
            .filter_map(|e| match e {
                HubEvent::Line(_, AgentEvent::Hello(h)) => Some(h.pid),
                _ => None,
            })
            .collect();
        assert_eq!(pids.len(), 2, "{got:?}");
        assert!(pids.contains(&7) && pids.contains(&8));
        assert_eq!(hub.open_links(), 2);
        a.write_all(b"ing end\n").unwrap();
        let got = events(&mut hub, 1);
        assert!(
            matches!(&got[..], [HubEvent::Line(_, AgentEvent::Exiting { detail })] if detail == "end"),
            "{got:?}"
        );
        drop(a);
        let got = events(&mut hub, 1);
        assert!(matches!(&got[..], [HubEvent::Closed(_)]), "{got:?}");
        assert_eq!(hub.open_links(), 1);
    }

    #[test]
    fn a_command_reaches_the_agent_and_a_closed_link_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(SOCKET_FILE);
        let mut hub = AgentHub::bind(&socket).unwrap();
        let mut agent = UnixStream::connect(&socket).unwrap();
        agent.write_all(b"hello 2 7 1 started\truby\t[]\n").unwrap();
        let got = events(&mut hub, 1);
        let HubEvent::Line(id, _) = got[0] else {
            panic!("{got:?}")
        };
        hub.send(id, "snapshot 1 interval 60.0 heap-001.json agent-001.json")
            .unwrap();
        let mut buf = [0u8; 128];
        agent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = agent.read(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"snapshot 1 interval 60.0 heap-001.json agent-001.json\n"
        );
        drop(agent);
        events(&mut hub, 1);
        assert!(!hub.is_open(id));
        assert!(hub.send(id, "bye").is_err());
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
