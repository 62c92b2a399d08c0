//! The target process: how it is launched, the guard that never leaves it running, and the
//! signals leakhunt catches to forward to it.
//!
//! Stage: `run`. The target runs in its own process group so that leakhunt can signal it and
//! everything it started at once; stdin, stdout and stderr stay the user's, and when stdin is
//! leakhunt's terminal the group gets the terminal for the run ([`super::terminal`]).

use super::terminal::{Foreground, TerminalHandover};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What will be executed: the command line (interpreter and backend wrapper included) and the
/// environment variables set or changed for it (recorded in the manifest as set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Launch {
    /// Sets `name` to `value`, or to the user's value joined with ours when `join` is given
    /// (`RUBYOPT`, `LD_PRELOAD`, `LSAN_OPTIONS`): `ours_first` puts our part in front.
    pub fn set_env(&mut self, name: &str, value: &str, join: Option<(&str, bool)>) {
        let existing = self
            .env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty());
        let value = match (join, existing) {
            (Some((sep, true)), Some(old)) => format!("{value}{sep}{old}"),
            (Some((sep, false)), Some(old)) => format!("{old}{sep}{value}"),
            _ => value.to_owned(),
        };
        self.env.insert(name.to_owned(), value);
    }
}

/// The running target. Dropping the guard kills the whole process group and reaps the child,
/// whatever path leakhunt leaves by (errors and panics included).
pub struct ChildGuard {
    child: Child,
    pgid: i32,
    status: Option<ExitStatus>,
    /// The terminal, while the target's group holds it.
    terminal: Option<TerminalHandover>,
}

impl ChildGuard {
    /// Starts `launch` in a new process group; with `terminal`, that group becomes the
    /// terminal's foreground until the guard releases it (when the group is reaped, or dropped).
    pub fn spawn(launch: &Launch, terminal: Option<Foreground>) -> Result<ChildGuard> {
        let (program, args) = launch
            .argv
            .split_first()
            .ok_or_else(|| Error::Usage("no program to run".into()))?;
        let mut command = Command::new(program);
        command.args(args).envs(&launch.env).process_group(0);
        let for_child = terminal.as_ref().map(Foreground::for_child);
        // SAFETY: the closure runs between fork and exec (after the child made its own group)
        // and only calls prctl (Linux), tcsetpgrp, getpgrp and signal, all async-signal-safe;
        // it touches no memory shared with the parent.
        unsafe {
            command.pre_exec(move || {
                crate::platform::die_with_parent();
                if let Some((fd, default_ttou)) = for_child {
                    super::terminal::take_in_child(fd, default_ttou);
                }
                Ok(())
            });
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                if let Some(t) = terminal {
                    t.abandon();
                }
                return Err(Error::Run(format!("cannot start {program}: {e}")));
            }
        };
        let pgid = i32::try_from(child.id())
            .map_err(|_| Error::Run("the child's pid does not fit a pid_t".into()))?;
        let mut guard = ChildGuard {
            child,
            pgid,
            status: None,
            terminal: None,
        };
        if let Some(t) = terminal {
            guard.terminal = Some(TerminalHandover::start(t, pgid)?);
        }
        Ok(guard)
    }

    /// Takes the terminal back from the target's group and ends what watched it there.
    pub fn release_terminal(&mut self) {
        if let Some(mut t) = self.terminal.take() {
            t.release();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the child has ended (reaped here, at most once).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `limit` for the child to end.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the target's whole process group.
    pub fn signal_group(&self, signal: i32) {
        // SAFETY: kill(2) with a negative pid signals the process group we created; a group
        // that no longer exists only yields ESRCH.
        unsafe {
            libc::kill(-self.pgid, signal);
        }
    }

    /// Whether any process of the target's group is still alive.
    pub fn group_alive(&self) -> bool {
        // SAFETY: signal 0 only checks for existence and permission.
        unsafe { libc::kill(-self.pgid, 0) == 0 }
    }

    /// Ends the target: `first` to the group, then SIGKILL after `grace`. Returns the status.
    pub fn terminate(&mut self, first: i32, grace: Duration) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            self.signal_group(first);
            if self.wait_for(grace).is_none() {
                self.signal_group(libc::SIGKILL);
                self.wait_for(Duration::from_secs(5));
            }
        }
        self.reap_group();
        self.status
    }

    /// Kills whatever the target left behind in its group (after the child itself ended).
    /// The terminal comes back to leakhunt first (its sentinel is in the group).
    pub fn reap_group(&mut self) {
        self.release_terminal();
        if self.group_alive() {
            self.signal_group(libc::SIGTERM);
            let until = Instant::now() + Duration::from_millis(500);
            while self.group_alive() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.group_alive() {
                self.signal_group(libc::SIGKILL);
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.signal_group(libc::SIGKILL);
            let _ = self.child.wait();
        }
        self.release_terminal();
        if self.group_alive() {
            self.signal_group(libc::SIGKILL);
        }
    }
}

/// How the target ended, in the manifest's terms.
pub fn describe_status(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    (status.code(), status.signal())
}

static SIGNALS_CAUGHT: AtomicU32 = AtomicU32::new(0);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
static LAST_FROM_TERMINAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo; reading it and the atomics
    // below is async-signal-safe.
    let sender = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_pid() }
    };
    LAST_FROM_TERMINAL.store(
        super::terminal::relayed_from_terminal(sender),
        Ordering::SeqCst,
    );
    LAST_SIGNAL.store(signal, Ordering::SeqCst);
    SIGNALS_CAUGHT.fetch_add(1, Ordering::SeqCst);
}

/// How many of the watched signals arrived since the run's [`CaughtSignals`] were installed
/// (0 outside a run): a tool that runs during a snapshot reads it to give up at a second one.
pub fn interrupts() -> u32 {
    SIGNALS_CAUGHT.load(Ordering::SeqCst)
}

/// SIGINT, SIGTERM and SIGHUP caught for the length of a run — sent to leakhunt, or relayed
/// from the terminal by the sentinel when the target's group holds the terminal
/// ([`super::terminal`]); the previous handlers come back on drop.
pub struct CaughtSignals {
    previous: Vec<(i32, libc::sigaction)>,
}

impl CaughtSignals {
    pub const WATCHED: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    pub fn install() -> CaughtSignals {
        SIGNALS_CAUGHT.store(0, Ordering::SeqCst);
        LAST_FROM_TERMINAL.store(false, Ordering::SeqCst);
        let mut previous = Vec::new();
        for signal in Self::WATCHED {
            // SAFETY: sigaction structs are plain data; the handler only touches atomics,
            // which is async-signal-safe; `old` receives the handler we restore on drop.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) == 0 {
                    previous.push((signal, old));
                }
            }
        }
        CaughtSignals { previous }
    }

    /// How many of the watched signals arrived so far.
    pub fn count(&self) -> u32 {
        SIGNALS_CAUGHT.load(Ordering::SeqCst)
    }

    /// The last one that arrived.
    pub fn last(&self) -> i32 {
        LAST_SIGNAL.load(Ordering::SeqCst)
    }

    /// Whether the last one came from the terminal through the sentinel: the target's group
    /// got it too, so it is not to be forwarded.
    pub fn last_from_terminal(&self) -> bool {
        LAST_FROM_TERMINAL.load(Ordering::SeqCst)
    }
}

impl Drop for CaughtSignals {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restores the exact handler sigaction returned when we installed ours.
            unsafe {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_variables_keep_the_users_part() {
        let mut l = Launch::default();
        l.env.insert("RUBYOPT".into(), "-w".into());
        l.set_env("RUBYOPT", "-r/tmp/x/agent.rb", Some((" ", false)));
        assert_eq!(l.env["RUBYOPT"], "-w -r/tmp/x/agent.rb");
        l.set_env("LD_PRELOAD", "/lib/liblsan.so.0", Some((":", true)));
        // Not set by the user (in this test process) → ours alone.
        if std::env::var_os("LD_PRELOAD").is_none() {
            assert_eq!(l.env["LD_PRELOAD"], "/lib/liblsan.so.0");
        }
        l.set_env("LD_PRELOAD", "/lib/first.so", Some((":", true)));
        assert!(l.env["LD_PRELOAD"].starts_with("/lib/first.so:"));
    }

    /// Live (not zombie) processes of group `pgid`, from /proc.
    #[cfg(target_os = "linux")]
    fn live_members(pgid: i32) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid pgrp …; comm may hold spaces, so split after ')'.
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
            })
            .count()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_guard_kills_the_whole_group_when_dropped() {
        let launch = Launch {
            argv: vec!["sh".into(), "-c".into(), "sleep 30 & sleep 30".into()],
            env: BTreeMap::new(),
        };
        let guard = ChildGuard::spawn(&launch, None).unwrap();
        let pgid = guard.pgid;
        let until = Instant::now() + Duration::from_secs(10);
        while live_members(pgid) < 3 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(live_members(pgid) >= 3, "sh and its two sleeps");
        drop(guard);
        let until = Instant::now() + Duration::from_secs(3);
        while live_members(pgid) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(live_members(pgid), 0, "group survived the guard");
    }

    #[test]
    fn terminate_reports_the_signal() {
        let launch = Launch {
            argv: vec!["sleep".into(), "30".into()],
            env: BTreeMap::new(),
        };
        let mut guard = ChildGuard::spawn(&launch, None).unwrap();
        let status = guard
            .terminate(libc::SIGTERM, Duration::from_secs(5))
            .unwrap();
        assert_eq!(describe_status(status), (None, Some(libc::SIGTERM)));
    }
}
