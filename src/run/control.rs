//! Rounds on demand while a run goes on: `leakhunt snapshot BUNDLE` from another terminal talks
//! to the running leakhunt over `BUNDLE/control.sock` (a Unix socket, 0600, in the 0700 bundle
//! directory; no network listener), or the user sends leakhunt SIGUSR1.
//!
//! Stage: `run`. The protocol is one line each way: the client sends `round`; leakhunt answers
//! once the round is over with `ok ROUND PROCESSES TAKEN` (the round, how many processes were
//! asked, how many answered) or `error MESSAGE`. The socket is removed when the run ends.

use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The control socket's name in the bundle.
pub const SOCKET_FILE: &str = "control.sock";

/// A request waiting for its round.
pub struct Request {
    stream: UnixStream,
}

impl Request {
    /// Tells the client how the round went.
    pub fn answer(mut self, line: &str) {
        let _ = self.stream.write_all(format!("{line}\n").as_bytes());
    }
}

/// leakhunt's end of the control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Listens on `BUNDLE/control.sock` (0600). `None`, with the reason, when it cannot (a
    /// bundle path too long for a socket address): rounds on demand then come from SIGUSR1 only.
    pub fn bind(bundle: &Path) -> std::result::Result<ControlSocket, String> {
        use std::os::unix::fs::PermissionsExt;
        let path = bundle.join(SOCKET_FILE);
        let listener = UnixListener::bind(&path).map_err(|e| {
            format!(
                "no `leakhunt snapshot` for this run ({}: {e}); send leakhunt SIGUSR1 instead",
                path.display()
            )
        })?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(ControlSocket { listener, path })
    }

    /// Requests that arrived since the last call. A client that does not send its line within a
    /// second is dropped.
    pub fn requests(&self) -> Vec<Request> {
        let mut out = Vec::new();
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(false).is_err()
                || stream
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .is_err()
            {
                continue;
            }
            let mut line = String::new();
            let mut reader = BufReader::new(stream.take(256));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let stream = reader.into_inner().into_inner();
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let request = Request { stream };
            match line.trim() {
                "round" => out.push(request),
                other => request.answer(&format!(
                    "error unknown request {:?}",
                    other.chars().take(40).collect::<String>()
                )),
            }
        }
        out
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static USR1_CAUGHT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_usr1(_signal: libc::c_int) {
    USR1_CAUGHT.fetch_add(1, Ordering::SeqCst);
}

/// SIGUSR1 asks for a round, for the length of a run; the previous handler comes back on drop.
pub struct RoundSignal {
    previous: Option<libc::sigaction>,
    seen: u32,
}

impl RoundSignal {
    pub fn install() -> RoundSignal {
        // SAFETY: sigaction structs are plain data; the handler only touches an atomic, which
        // is async-signal-safe; `old` receives the handler restored on drop.
        let previous = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_usr1 as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            (libc::sigaction(libc::SIGUSR1, &action, &mut old) == 0).then_some(old)
        };
        RoundSignal {
            previous,
            seen: USR1_CAUGHT.load(Ordering::SeqCst),
        }
    }

    /// Whether SIGUSR1 arrived since the last call.
    pub fn take(&mut self) -> bool {
        let now = USR1_CAUGHT.load(Ordering::SeqCst);
        let new = now != self.seen;
        self.seen = now;
        new
    }
}

impl Drop for RoundSignal {
    fn drop(&mut self) {
        if let Some(old) = &self.previous {
            // SAFETY: restores the exact handler sigaction returned when ours was installed.
            unsafe {
                libc::sigaction(libc::SIGUSR1, old, std::ptr::null_mut());
            }
        }
    }
}

/// What `leakhunt snapshot BUNDLE` got back.
#[derive(Debug, PartialEq, Eq)]
pub struct RoundTaken {
    pub round: u32,
    pub asked: u32,
    pub taken: u32,
}

/// The client: asks the leakhunt recording `bundle` for a round now and waits for it (at most
/// `wait`).
pub fn request_round(bundle: &Path, wait: Duration) -> Result<RoundTaken> {
    let path = bundle.join(SOCKET_FILE);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        Error::Usage(format!(
            "no leakhunt run is recording {} ({}: {e}): `leakhunt snapshot` talks to a running \
             `leakhunt run -o {}`",
            bundle.display(),
            path.display(),
            bundle.display()
        ))
    })?;
    let io = |e: std::io::Error| Error::Run(format!("the running leakhunt did not answer: {e}"));
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    stream.write_all(b"round\n").map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream.take(4096))
        .read_line(&mut line)
        .map_err(io)?;
    parse_answer(line.trim())
}

fn parse_answer(line: &str) -> Result<RoundTaken> {
    let mut words = line.split(' ');
    match words.next() {
        Some("ok") => {
            let mut number = || words.next().and_then(|w| w.parse::<u32>().ok());
            match (number(), number(), number()) {
                (Some(round), Some(asked), Some(taken)) => Ok(RoundTaken {
                    round,
                    asked,
                    taken,
                }),
                _ => Err(Error::Run(format!(
                    "unexpected answer from leakhunt: {line}"
                ))),
            }
        }
        Some("error") => Err(Error::Run(
            line.strip_prefix("error ").unwrap_or("").to_owned(),
        )),
        _ if line.is_empty() => Err(Error::Run(
            "the running leakhunt ended before the round was taken".into(),
        )),
        _ => Err(Error::Run(format!(
            "unexpected answer from leakhunt: {line}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_once_its_round_is_over() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let control = ControlSocket::bind(dir.path()).unwrap();
        let socket = dir.path().join(SOCKET_FILE);
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let bundle = dir.path().to_path_buf();
        let client = std::thread::spawn(move || request_round(&bundle, Duration::from_secs(10)));
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut requests = Vec::new();
        while requests.is_empty() && std::time::Instant::now() < until {
            requests = control.requests();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(requests.len(), 1);
        requests.pop().unwrap().answer("ok 4 3 2");
        assert_eq!(
            client.join().unwrap().unwrap(),
            RoundTaken {
                round: 4,
                asked: 3,
                taken: 2
            }
        );
        drop(control);
        assert!(!socket.exists(), "the socket goes with the run");
    }

    #[test]
    fn without_a_running_leakhunt_the_client_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = request_round(dir.path(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert!(
            err.to_string().contains("no leakhunt run is recording"),
            "{err}"
        );
    }

    #[test]
    fn answers_parse() {
        assert!(parse_answer("error no process to examine").is_err());
        assert!(parse_answer("").is_err());
        assert!(parse_answer("ok x").is_err());
        assert_eq!(
            parse_answer("ok 1 2 2").unwrap(),
            RoundTaken {
                round: 1,
                asked: 2,
                taken: 2
            }
        );
    }
}
