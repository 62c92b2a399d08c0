//! The terminal during `leakhunt run`. The program runs in its own process group (so leakhunt
//! can signal it and everything it starts at once); a background group that reads its terminal
//! is stopped with SIGTTIN. So when leakhunt's stdin is a terminal and leakhunt is in its
//! foreground, the program's group is made the terminal's foreground for the run (tcsetpgrp), and
//! leakhunt takes it back when the program has ended — on every path out: the child guard
//! releases it when the group is reaped and when it is dropped (errors, panics). A leakhunt killed
//! by SIGKILL cannot; the shell takes the terminal back then, as it does when any job ends.
//!
//! Stage: `run` (beside the child guard).
//!
//! # How leakhunt still hears Ctrl-C, and job control
//! The terminal now sends SIGINT and SIGTSTP to the program's group, not to leakhunt.
//! - **Ctrl-C**: leakhunt forks a *sentinel* into the program's group: a process that does
//!   nothing but wait, and relays to leakhunt (kill(2)) the SIGINT the terminal sends it; it
//!   relays nothing a process of leakhunt's session sent (leakhunt forwarding a signal to the
//!   group, the program signalling its own group), so nothing loops. Which SIGINT is the
//!   terminal's is decided by session, not by sender pid 0: the kernel raises a keyboard signal
//!   inside the write to the terminal's master side, and reports as its sender whatever process
//!   was writing — none on Linux (`si_pid` 0), the terminal emulator, sshd or tmux on macOS (XNU's
//!   `psignal_internal` in `bsd/kern/kern_sig.c` records `current_proc()` as `si_pid`, and
//!   `ptcwrite` in `bsd/kern/tty_dev.c` runs the line discipline in the writer's context). That
//!   writer is never in leakhunt's session; leakhunt, the program and everything it starts are
//!   ([`from_terminal_side`]). leakhunt's handler sees the sentinel as the sender (`si_pid`) and
//!   counts a terminal interrupt. The program got the same SIGINT, so leakhunt forwards nothing;
//!   the rest is as for any interrupt: a brief last snapshot (or the snapshot already under way,
//!   or the one the program's at_exit hook asks for), the program's grace period, then SIGTERM
//!   and SIGKILL; a second Ctrl-C stops it at once.
//! - **Ctrl-Z, and a program stopped for reading the terminal in the background**: leakhunt
//!   acts as the job the shell thinks it is. When the program stops (SIGCHLD, then waitid with
//!   WSTOPPED only, which never reaps), leakhunt takes the terminal back with its own settings
//!   and stops its own group with the same kind of signal, so the shell reports the job stopped.
//!   When the shell continues it (SIGCONT: `fg` or `bg`), leakhunt hands the terminal back with
//!   the program's settings if it is in the foreground again, and continues the program's group.
//!   With no shell to continue leakhunt (its group orphaned), the program is continued at once.
//!   Time spent stopped counts against a snapshot's deadline.
//!
//! SIGTTOU is ignored by leakhunt while the program holds the terminal, so that its own messages
//! (on a terminal with `tostop`) and taking the terminal back never stop it; the program gets the
//! disposition leakhunt had. The terminal's settings are restored when leakhunt takes it back, so
//! a program killed in raw mode does not leave the shell in it.

use crate::error::{Error, Result};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The sentinel's pid while it runs (0: none). Read by leakhunt's signal handlers.
static SENTINEL: AtomicI32 = AtomicI32::new(0);
/// leakhunt's pid, for the sentinel to relay to (set before the fork).
static LEAKHUNT: AtomicI32 = AtomicI32::new(0);
/// leakhunt's session, for the sentinel to tell the terminal's signals from its own session's
/// (set before the fork).
static SESSION: AtomicI32 = AtomicI32::new(0);
/// The socket end leakhunt's SIGCHLD and SIGCONT handlers write to, waking the job-control
/// thread (-1: none).
static WAKE: AtomicI32 = AtomicI32::new(-1);

/// Whether a signal leakhunt received came from the sentinel: the terminal sent it to the
/// program's group, so the program has it too. Async-signal-safe (one atomic load).
pub fn relayed_from_terminal(sender: libc::pid_t) -> bool {
    let sentinel = SENTINEL.load(Ordering::SeqCst);
    sentinel > 0 && sender == sentinel
}

/// The sentinel's pid while it runs: a member of the program's process group that is leakhunt's
/// own, not the program's.
pub fn sentinel_pid() -> Option<u32> {
    u32::try_from(SENTINEL.load(Ordering::SeqCst))
        .ok()
        .filter(|&p| p > 0)
}

/// leakhunt's terminal, when its stdin is one and leakhunt's group is the terminal's foreground.
/// From [`Foreground::claim`] on, leakhunt ignores SIGTTOU; dropping it puts SIGTTOU back.
pub struct Foreground {
    fd: RawFd,
    own_group: libc::pid_t,
    /// The terminal's settings before the program ran.
    modes: Option<libc::termios>,
    ttou_before: libc::sigaction,
}

impl Foreground {
    /// `Some` when stdin is a terminal whose foreground group is leakhunt's.
    pub fn claim() -> Option<Foreground> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty, tcgetpgrp and getpgrp only read the state of this process and of
        // the terminal on fd 0.
        let (is_tty, foreground, own_group) =
            unsafe { (libc::isatty(fd) == 1, libc::tcgetpgrp(fd), libc::getpgrp()) };
        if !is_tty || foreground <= 0 || foreground != own_group {
            return None;
        }
        // SAFETY: termios and sigaction are plain C structs (all-zero is a valid value);
        // tcgetattr fills `modes`, sigaction installs SIG_IGN and returns the previous action.
        unsafe {
            let mut modes: libc::termios = std::mem::zeroed();
            let modes = (libc::tcgetattr(fd, &mut modes) == 0).then_some(modes);
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            libc::sigemptyset(&mut ignore.sa_mask);
            let mut ttou_before: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGTTOU, &ignore, &mut ttou_before) != 0 {
                return None;
            }
            Some(Foreground {
                fd,
                own_group,
                modes,
                ttou_before,
            })
        }
    }

    /// What the child's pre_exec needs: the terminal, and whether SIGTTOU goes back to its
    /// default (leakhunt did not ignore it before).
    pub fn for_child(&self) -> (RawFd, bool) {
        (self.fd, self.ttou_before.sa_sigaction != libc::SIG_IGN)
    }

    /// Takes the terminal back for leakhunt's group, with the settings it had, when the group
    /// `held_by` holds it (any group but leakhunt's, for `None`). Leaves it alone otherwise: the
    /// shell has it (leakhunt was put in the background).
    fn take_back(&self, held_by: Option<libc::pid_t>) {
        // SAFETY: tcgetpgrp/tcsetpgrp/tcsetattr on the terminal fd; SIGTTOU is ignored, so a
        // background leakhunt is not stopped by them.
        unsafe {
            let now = libc::tcgetpgrp(self.fd);
            let ours = match held_by {
                Some(group) => now == group,
                None => now > 0 && now != self.own_group,
            };
            if ours {
                libc::tcsetpgrp(self.fd, self.own_group);
                if let Some(modes) = &self.modes {
                    libc::tcsetattr(self.fd, libc::TCSADRAIN, modes);
                }
            }
        }
    }

    /// After a failed start: the child may have taken the terminal before exec failed.
    pub fn abandon(self) {
        self.take_back(None);
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // SAFETY: restores the exact action sigaction returned in `claim`.
        unsafe {
            libc::sigaction(libc::SIGTTOU, &self.ttou_before, std::ptr::null_mut());
        }
    }
}

/// In the child, between fork and exec (after it made its own group): takes the terminal for
/// that group — before the program can read it and stop — and gives SIGTTOU back the
/// disposition leakhunt had. Calls only async-signal-safe functions (tcsetpgrp, getpgrp,
/// signal).
pub fn take_in_child(fd: RawFd, default_ttou: bool) {
    // SAFETY: see above; SIGTTOU is still ignored (inherited), so tcsetpgrp from what is a
    // background group at this point does not stop the child.
    unsafe {
        libc::tcsetpgrp(fd, libc::getpgrp());
        if default_ttou {
            libc::signal(libc::SIGTTOU, libc::SIG_DFL);
        }
    }
}

/// The terminal as the program's group holds it, and what watches it.
struct Holder {
    foreground: Foreground,
    /// The program's group; its leader is the program, leakhunt's child.
    program_group: libc::pid_t,
    /// The terminal's settings as the program left them when it stopped.
    program_modes: Option<libc::termios>,
    /// False once leakhunt has taken the terminal back for good.
    active: bool,
}

/// The terminal handed to the program's group for the run, the sentinel in that group, and the
/// thread that does job control. [`TerminalHandover::release`] (or drop) ends all three.
pub struct TerminalHandover {
    holder: Arc<Mutex<Holder>>,
    sentinel: Option<libc::pid_t>,
    wake: Option<UnixStream>,
    job_control: Option<JoinHandle<()>>,
    /// (signal, action before ours) for SIGCHLD and SIGCONT.
    handlers_before: Vec<(i32, libc::sigaction)>,
}

/// Wake-up bytes: a child changed state (SIGCHLD); leakhunt was continued (SIGCONT).
const CHILD_CHANGED: u8 = b'c';
const CONTINUED: u8 = b'r';

impl TerminalHandover {
    /// Hands the terminal to `program_group` (the child did the same before exec; whichever runs
    /// second changes nothing), starts the sentinel in that group and the job-control thread.
    pub fn start(foreground: Foreground, program_group: libc::pid_t) -> Result<TerminalHandover> {
        // SAFETY: tcsetpgrp on the terminal fd, SIGTTOU ignored; getpid reads our pid.
        unsafe {
            libc::tcsetpgrp(foreground.fd, program_group);
            LEAKHUNT.store(libc::getpid(), Ordering::SeqCst);
            SESSION.store(libc::getsid(0), Ordering::SeqCst);
        }
        let holder = Arc::new(Mutex::new(Holder {
            foreground,
            program_group,
            program_modes: None,
            active: true,
        }));
        let mut handover = TerminalHandover {
            holder: holder.clone(),
            sentinel: None,
            wake: None,
            job_control: None,
            handlers_before: Vec::new(),
        };
        handover.sentinel = fork_sentinel(program_group);
        if let Some(pid) = handover.sentinel {
            SENTINEL.store(pid, Ordering::SeqCst);
        }
        // The handlers' end never blocks: a full buffer only drops a wake-up the thread does
        // not need (it has bytes to read already).
        let (wake, woken) = UnixStream::pair()
            .and_then(|(wake, woken)| wake.set_nonblocking(true).map(|()| (wake, woken)))
            .map_err(|e| Error::Run(format!("cannot make a socket pair: {e}")))?;
        WAKE.store(wake.as_raw_fd(), Ordering::SeqCst);
        handover.wake = Some(wake);
        for (signal, handler) in [
            (libc::SIGCHLD, on_child as *const () as usize),
            (libc::SIGCONT, on_continued as *const () as usize),
        ] {
            if let Some(before) = install(signal, handler) {
                handover.handlers_before.push((signal, before));
            }
        }
        let thread = std::thread::Builder::new()
            .name("leakhunt-job-control".into())
            .spawn(move || job_control(&holder, woken))
            .map_err(|e| Error::Run(format!("cannot start a thread: {e}")))?;
        handover.job_control = Some(thread);
        Ok(handover)
    }

    /// Takes the terminal back (once the program has ended, or is being given up), ends the
    /// sentinel and the job-control thread. Idempotent.
    pub fn release(&mut self) {
        if let Ok(mut h) = self.holder.lock()
            && h.active
        {
            h.active = false;
            h.foreground.take_back(Some(h.program_group));
        }
        for (signal, before) in self.handlers_before.drain(..) {
            // SAFETY: restores the exact action sigaction returned when ours was installed.
            unsafe {
                libc::sigaction(signal, &before, std::ptr::null_mut());
            }
        }
        if let Some(pid) = self.sentinel.take() {
            SENTINEL.store(0, Ordering::SeqCst);
            // SAFETY: `pid` is our own child (the sentinel), signalled and reaped here once.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        WAKE.store(-1, Ordering::SeqCst);
        // Shutting our end down wakes the thread with end-of-file; it is closed once the thread
        // has ended.
        if let Some(wake) = &self.wake {
            let _ = wake.shutdown(std::net::Shutdown::Write);
        }
        if let Some(thread) = self.job_control.take() {
            let _ = thread.join();
        }
        drop(self.wake.take());
    }
}

impl Drop for TerminalHandover {
    fn drop(&mut self) {
        self.release();
    }
}

/// Installs `handler` (an `extern "C"` function's address) for `signal`; the previous action.
fn install(signal: i32, handler: usize) -> Option<libc::sigaction> {
    // SAFETY: sigaction structs are plain data; the handlers installed here only load an
    // atomic and call write(2), which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        let mut before: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(signal, &action, &mut before) == 0).then_some(before)
    }
}

fn wake(byte: u8) {
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a local to a non-blocking socket, async-signal-safe.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// leakhunt's SIGCHLD handler during the handover: the program may have stopped.
extern "C" fn on_child(_signal: libc::c_int) {
    wake(CHILD_CHANGED);
}

/// leakhunt's SIGCONT handler during the handover: the shell continued the job.
extern "C" fn on_continued(_signal: libc::c_int) {
    wake(CONTINUED);
}

fn job_control(holder: &Mutex<Holder>, mut woken: UnixStream) {
    let mut byte = [0u8; 1];
    loop {
        match woken.read(&mut byte) {
            Ok(1) if byte[0] == CHILD_CHANGED => {
                if let Some(signal) = program_stopped(holder) {
                    suspend(holder, signal);
                }
            }
            Ok(1) if byte[0] == CONTINUED => resume(holder, true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => return,
        }
    }
}

/// The signal that stopped the program, if it is stopped (and the stop not yet handled).
fn program_stopped(holder: &Mutex<Holder>) -> Option<i32> {
    let program = holder.lock().ok().filter(|h| h.active)?.program_group;
    // SAFETY: waitid on our own child with WSTOPPED alone reports (and consumes) a stop and
    // never reaps: the exit status stays for the child guard's waitpid.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let id = libc::id_t::try_from(program).ok()?;
        let rc = libc::waitid(libc::P_PID, id, &mut info, libc::WSTOPPED | libc::WNOHANG);
        (rc == 0 && info.si_pid() == program).then(|| info.si_status())
    }
}

/// The program stopped: the terminal back to leakhunt with its settings, leakhunt's own job
/// stopped the same way so that the shell sees it; the SIGCONT that continues it leads to
/// [`resume`].
fn suspend(holder: &Mutex<Holder>, signal: i32) {
    {
        let Ok(mut h) = holder.lock() else { return };
        if !h.active {
            return;
        }
        let fd = h.foreground.fd;
        // SAFETY: termios is plain data; tcgetattr fills it.
        h.program_modes = unsafe {
            let mut modes: libc::termios = std::mem::zeroed();
            (libc::tcgetattr(fd, &mut modes) == 0).then_some(modes)
        };
        h.foreground.take_back(Some(h.program_group));
    }
    // Without a shell to continue it (leakhunt's group is orphaned: the kernel would discard
    // the stop anyway), there is no job to stop: the program goes on at once.
    if own_group_is_orphaned() {
        resume(holder, false);
        return;
    }
    // SIGTTIN shows as "Stopped (tty input)"; SIGTTOU is ignored here, so Ctrl-Z's SIGTSTP
    // stands for it. The whole group gets it, pipeline partners included, as they would have
    // from the terminal. Resuming waits for the SIGCONT the shell sends with `fg` or `bg`.
    let mirror = match signal {
        libc::SIGTTIN | libc::SIGSTOP => signal,
        _ => libc::SIGTSTP,
    };
    // SAFETY: kill(0, …) signals leakhunt's own process group, its job.
    unsafe {
        libc::kill(0, mirror);
    }
}

/// Whether leakhunt's process group is orphaned — no parent of it in another group of the same
/// session (a shell) that could continue it — judged by leakhunt's own parent.
fn own_group_is_orphaned() -> bool {
    // SAFETY: getppid, getsid, getpgid and getpgrp only read process state.
    unsafe {
        let parent = libc::getppid();
        let parent_group = libc::getpgid(parent);
        !(libc::getsid(parent) == libc::getsid(0)
            && parent_group > 0
            && parent_group != libc::getpgrp())
    }
}

/// leakhunt runs again: in the terminal's foreground, the terminal goes back to the program
/// (with its settings) and the program's group continues. In the background, the program
/// continues only when the shell continued leakhunt (`bg`): it stops again if it reads the
/// terminal, and so does leakhunt.
fn resume(holder: &Mutex<Holder>, continued_by_shell: bool) {
    let Ok(mut h) = holder.lock() else { return };
    if !h.active {
        return;
    }
    let (fd, own_group, program_group) = (h.foreground.fd, h.foreground.own_group, h.program_group);
    // SAFETY: terminal calls on the fd (SIGTTOU ignored); kill(-group, SIGCONT) continues the
    // program's group, which leakhunt created.
    unsafe {
        let foreground = libc::tcgetpgrp(fd) == own_group;
        if foreground {
            if let Some(modes) = h.program_modes.take() {
                libc::tcsetattr(fd, libc::TCSADRAIN, &modes);
            }
            libc::tcsetpgrp(fd, program_group);
        }
        if foreground || continued_by_shell {
            libc::kill(-program_group, libc::SIGCONT);
        }
    }
}

/// Forks the sentinel into `group`. `None` when fork fails: the run goes on, without hearing
/// the terminal's signals (the program still gets them).
fn fork_sentinel(group: libc::pid_t) -> Option<libc::pid_t> {
    // SAFETY: the child runs only `sentinel`, which calls async-signal-safe functions until it
    // exits with _exit, as required after fork in a process that may have threads.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => sentinel(group),
        pid if pid > 0 => {
            // Shells set a job member's group from both sides: whichever runs first, it is in
            // the group before either goes on.
            // SAFETY: setpgid on our own child, into a group of our session.
            unsafe {
                libc::setpgid(pid, group);
            }
            Some(pid)
        }
        _ => None,
    }
}

/// The sentinel's whole life, in the forked child: join the program's group, relay the
/// terminal's SIGINT to leakhunt, end when leakhunt does. Async-signal-safe calls
/// only; never returns.
fn sentinel(group: libc::pid_t) -> ! {
    crate::platform::die_with_parent();
    // SAFETY: every call below is async-signal-safe (setpgid, close, sigaction, sigprocmask,
    // sleep, getppid, _exit); the handler only loads an atomic and calls kill.
    unsafe {
        if libc::setpgid(0, group) != 0 {
            libc::_exit(0);
        }
        // Hold no end of leakhunt's stdio (a pipe into `tee` would wait for us).
        for fd in 0..=2 {
            libc::close(fd);
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = relay as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        // Ctrl-Z stops the program, not the sentinel: leakhunt may need it again after `fg`.
        for (signal, disposition) in [
            (libc::SIGTSTP, libc::SIG_IGN),
            (libc::SIGQUIT, libc::SIG_IGN),
            (libc::SIGTTIN, libc::SIG_IGN),
            (libc::SIGTTOU, libc::SIG_IGN),
            (libc::SIGTERM, libc::SIG_DFL),
            (libc::SIGHUP, libc::SIG_DFL),
        ] {
            libc::signal(signal, disposition);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let parent = LEAKHUNT.load(Ordering::SeqCst);
        loop {
            libc::sleep(1);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
        }
    }
}

/// The sentinel's handler: relays what the terminal sent, nothing a process of leakhunt's
/// session sent.
extern "C" fn relay(signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO. kill is async-signal-safe;
    // getsid is not on POSIX's list but is a bare system call on Linux and macOS (no lock, no
    // allocation), as safe here as getppid.
    unsafe {
        if info.is_null() {
            return;
        }
        let sender = (*info).si_pid();
        let sender_session = if sender > 0 { libc::getsid(sender) } else { 0 };
        if from_terminal_side(sender, sender_session, SESSION.load(Ordering::SeqCst)) {
            libc::kill(LEAKHUNT.load(Ordering::SeqCst), signal);
        }
    }
}

/// Whether a signal sent by `sender` (`si_pid`; 0 when no process sent it), whose session is
/// `sender_session` (-1 when it could not be read: the sender is gone), came from the
/// terminal's side rather than from leakhunt's session (`own_session`): leakhunt, the program,
/// its children. A sender that vanished before it could be asked counts as the terminal's: a
/// terminal emulator, sshd or tmux outlives its keystroke, and a Ctrl-C leakhunt never hears
/// is the worse mistake (the program would have to be stopped by hand).
pub fn from_terminal_side(
    sender: libc::pid_t,
    sender_session: libc::pid_t,
    own_session: libc::pid_t,
) -> bool {
    sender == 0 || sender_session != own_session
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sentinel_counts_as_the_terminal() {
        assert!(!relayed_from_terminal(0));
        SENTINEL.store(4242, Ordering::SeqCst);
        assert!(relayed_from_terminal(4242));
        assert!(!relayed_from_terminal(4243));
        SENTINEL.store(0, Ordering::SeqCst);
        assert!(!relayed_from_terminal(4242));
    }

    #[test]
    fn the_terminal_side_is_anything_outside_leakhunts_session() {
        let own = 500;
        // Linux: a keyboard signal has no sending process.
        assert!(from_terminal_side(0, 0, own));
        // macOS: the process writing to the terminal's master side (Terminal, sshd, tmux) is
        // named as the sender; it lives in a session of its own.
        assert!(from_terminal_side(731, 731, own));
        assert!(from_terminal_side(88, 1, own));
        // leakhunt forwarding to the group, the program signalling its group, a child of the
        // program, the user's shell (`kill -INT %1`): all in leakhunt's session.
        assert!(!from_terminal_side(500, own, own));
        assert!(!from_terminal_side(4242, own, own));
        // A sender gone before it could be asked.
        assert!(from_terminal_side(4243, -1, own));
    }

    #[test]
    fn without_a_terminal_on_stdin_nothing_is_claimed() {
        // cargo test runs with stdin not a terminal, or in a terminal's background: either way
        // leakhunt is not its foreground, except when a person runs the tests by hand.
        // SAFETY: isatty only reads.
        if unsafe { libc::isatty(0) } == 1 {
            return;
        }
        assert!(Foreground::claim().is_none());
    }
}
