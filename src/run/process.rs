//! The processes of the program's tree, as the run sees them: who said hello, over which
//! connection, in which role, what each owes and how each ended.
//!
//! Stage: `run`. The orchestrator keeps one [`Tracked`] per process with an agent, and the
//! processes of the program's group that never said hello ([`crate::platform::GroupMember`]);
//! at the end both become the manifest's `processes`.

use super::agent::{Hello, LinkId};
use crate::bundle::{self, ExecEntry, ProcessEntry, ProcessFiles, ProcessOutcome};
use std::time::Instant;

/// One process with an agent.
#[derive(Debug)]
pub struct Tracked {
    pub pid: u32,
    pub ppid: u32,
    pub forked: bool,
    pub command: Vec<String>,
    pub ruby: String,
    /// `bundle::ROLE_MAIN`, `ROLE_WORKER` or `ROLE_CHILD`.
    pub role: &'static str,
    pub files: ProcessFiles,
    /// Its connection, while open.
    pub link: Option<LinkId>,
    pub hello_at: Instant,
    /// The latest round with a heap dump of this process.
    pub last_round: Option<u32>,
    /// It announced its end and waits for an answer (detail as sent).
    pub exiting: Option<String>,
    /// How it said it was ending ("end", "exit 3", "exception RuntimeError", …).
    pub exit_detail: Option<String>,
    /// A snapshot it was asked for and has not answered: rounds pass it over until it does.
    pub owes: Option<u32>,
    /// Its connection closed.
    pub gone: bool,
    /// It replaced its program by exec while the run watched.
    pub exec: Option<ExecEntry>,
}

impl Tracked {
    /// A process that just said hello. The first started process is the main one.
    pub fn new(hello: &Hello, link: LinkId, main: bool) -> Tracked {
        let role = if main {
            bundle::ROLE_MAIN
        } else if hello.forked {
            bundle::ROLE_WORKER
        } else {
            bundle::ROLE_CHILD
        };
        Tracked {
            pid: hello.pid,
            ppid: hello.ppid,
            forked: hello.forked,
            command: hello.command.clone(),
            ruby: hello.ruby.clone(),
            role,
            files: if main {
                ProcessFiles::main()
            } else {
                ProcessFiles::of(hello.pid)
            },
            link: Some(link),
            hello_at: Instant::now(),
            last_round: None,
            exiting: None,
            exit_detail: None,
            owes: None,
            gone: false,
            exec: None,
        }
    }

    pub fn is_main(&self) -> bool {
        self.role == bundle::ROLE_MAIN
    }

    /// Whether a round can ask it for a snapshot now.
    pub fn askable(&self) -> bool {
        self.link.is_some() && !self.gone && self.owes.is_none()
    }

    /// Its footprint timeline's file.
    pub fn footprint_file(&self) -> String {
        if self.is_main() {
            super::footprint::FILE.to_owned()
        } else {
            self.files.whole("footprint", "tsv")
        }
    }

    /// How it ended, as far as its connection tells (the main process gets the program's
    /// outcome instead).
    pub fn outcome(&self) -> ProcessOutcome {
        match (&self.exit_detail, self.gone) {
            (Some(detail), _) => ProcessOutcome {
                kind: "exited".into(),
                detail: ended(detail),
            },
            (None, true) => ProcessOutcome {
                kind: "vanished".into(),
                detail: "its connection closed without a word (a crash, SIGKILL or exit!)".into(),
            },
            (None, false) => ProcessOutcome {
                kind: "stopped".into(),
                detail: "still running when the run ended; ended with the program's group".into(),
            },
        }
    }

    /// Its manifest entry; rounds and files are filled in by the caller.
    pub fn entry(&self) -> ProcessEntry {
        ProcessEntry {
            pid: self.pid,
            ppid: Some(self.ppid),
            command: self.command.clone(),
            role: self.role.to_owned(),
            ruby: (!self.ruby.is_empty()).then(|| self.ruby.clone()),
            outcome: self.outcome(),
            exec: self.exec.clone(),
            ..ProcessEntry::default()
        }
    }
}

/// How a process ended, from what its agent's at_exit hook said ("end", "exit 3", "exception
/// RuntimeError", "signal SIGTERM", "interrupt").
fn ended(detail: &str) -> String {
    let (word, rest) = detail.split_once(' ').unwrap_or((detail, ""));
    match word {
        "end" => "it ended normally".to_owned(),
        "exit" => format!("it called exit {rest}"),
        "exception" => format!("an uncaught {rest} ended it"),
        "signal" => format!("{rest} ended it"),
        "interrupt" => "an interrupt (SIGINT) ended it".to_owned(),
        _ => format!("it ended ({detail})"),
    }
}

/// The manifest entry of a process of the program's group that never said hello.
pub fn unseen_entry(member: &crate::platform::GroupMember) -> ProcessEntry {
    ProcessEntry {
        pid: member.pid,
        ppid: Some(member.ppid),
        command: member.command.clone(),
        role: bundle::ROLE_NO_AGENT.to_owned(),
        outcome: ProcessOutcome {
            kind: "unseen".into(),
            detail: "never said hello: not a Ruby program, or RUBYOPT did not reach it".into(),
        },
        ..ProcessEntry::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_end_reads_as_a_sentence() {
        assert_eq!(ended("end"), "it ended normally");
        assert_eq!(ended("exit 3"), "it called exit 3");
        assert_eq!(
            ended("exception RuntimeError"),
            "an uncaught RuntimeError ended it"
        );
        assert_eq!(ended("signal SIGTERM"), "SIGTERM ended it");
        assert_eq!(ended("odd words"), "it ended (odd words)");
    }
}
