//! A round: every live process of the program's tree is asked for a snapshot at the same moment,
//! and each one's native evidence is taken as soon as its agent has answered.
//!
//! Stage: `run`. Requests go out to all processes at once; answers are read as they come (one
//! poll over every connection); the backend's capture of a process runs on a thread of its own
//! from the moment that process answered. A round therefore lasts about as long as its slowest
//! process, not the sum, and a process that hangs holds up no other: at the deadline it is
//! recorded as not answering, and later rounds pass it over until it answers.

use super::INTERRUPT_SNAPSHOT;
use super::agent::AgentEvent;
use super::backend::{Mark, NativeBackend, NativeCapture};
use crate::bundle::{ProcessFiles, Snapshot};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

/// Where one process is in the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Asked; no answer yet.
    Asked,
    /// Its agent answered; the backend is taking the native evidence until `until`.
    Capturing { until: Instant },
    /// Finished, one way or another.
    Done,
}

/// One process asked in the round.
struct Asked {
    pid: u32,
    files: ProcessFiles,
    mark: Mark,
    stage: Stage,
    snapshot: Snapshot,
    /// A parked step of its agent overran, and the backend checks inside the agent's round
    /// (LSan): whatever the capture finds is not of this snapshot's moment.
    spoiled: bool,
}

/// A round under way.
pub struct Round {
    pub index: u32,
    /// When the round's deadline passes (a first interrupt brings it closer).
    until: Instant,
    asked: Vec<Asked>,
    /// Finished captures, by pid: the threads send, the round receives.
    done: Sender<(u32, NativeCapture)>,
    finished: Receiver<(u32, NativeCapture)>,
}

/// How long a capture may overrun its own deadline before the round stops waiting for it.
const CAPTURE_SLACK: Duration = Duration::from_secs(5);

impl Round {
    pub fn new(index: u32, until: Instant) -> Round {
        let (done, finished) = channel();
        Round {
            index,
            until,
            asked: Vec::new(),
            done,
            finished,
        }
    }

    /// Records that process `pid` was asked (its request went out, or failed to: `error`).
    pub fn ask(&mut self, pid: u32, files: ProcessFiles, mark: Mark, mut snapshot: Snapshot) {
        let stage = if snapshot.errors.is_empty() {
            Stage::Asked
        } else {
            Stage::Done
        };
        snapshot.pid = Some(pid);
        self.asked.push(Asked {
            pid,
            files,
            mark,
            stage,
            snapshot,
            spoiled: false,
        });
    }

    /// Brings the deadline closer (a first interrupt: the round is the last one, briefly).
    pub fn shorten(&mut self, until: Instant) {
        self.until = self.until.min(until);
    }

    /// When the round's deadline passes.
    pub fn until(&self) -> Instant {
        self.until
    }

    /// How many processes were asked.
    pub fn asked(&self) -> usize {
        self.asked.len()
    }

    /// Whether `pid` is asked in this round and has not answered yet.
    pub fn waits_for(&self, pid: u32) -> bool {
        self.asked
            .iter()
            .any(|a| a.pid == pid && a.stage == Stage::Asked)
    }

    /// An event of process `pid`: its answer to this round starts its capture (on a thread of its
    /// own, with what the backend allows of the time left, at most [`INTERRUPT_SNAPSHOT`] once
    /// Ctrl-C was pressed). Returns the event back when it is not about this round.
    pub fn on_event(
        &mut self,
        pid: u32,
        event: AgentEvent,
        backend: &Arc<dyn NativeBackend>,
    ) -> Option<AgentEvent> {
        let index = self.index;
        let left = self.until.saturating_duration_since(Instant::now());
        let mut deadline = backend.native_deadline(left);
        if crate::run::child::interrupts() > 0 {
            deadline = deadline.min(INTERRUPT_SNAPSHOT);
        }
        let Some(asked) = self
            .asked
            .iter_mut()
            .find(|a| a.pid == pid && a.stage == Stage::Asked)
        else {
            return Some(event);
        };
        match event {
            AgentEvent::Done {
                index: i,
                heap,
                sidecar,
            } if i == index => {
                asked.snapshot.heap = Some(heap);
                asked.snapshot.sidecar = Some(sidecar);
                asked.stage = Stage::Capturing {
                    until: Instant::now() + deadline + CAPTURE_SLACK,
                };
                let backend = Arc::clone(backend);
                let files = asked.files.clone();
                let mark = asked.mark;
                let done = self.done.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("capture-{pid}"))
                    .spawn(move || {
                        let capture = backend.capture(pid, index, &files, mark, deadline);
                        let _ = done.send((pid, capture));
                    });
                if let Err(e) = spawned {
                    asked
                        .snapshot
                        .errors
                        .push(format!("cannot start the native capture: {e}"));
                    asked.stage = Stage::Done;
                }
                None
            }
            AgentEvent::Overran {
                index: i,
                step,
                budget_ms,
            } if i == index => {
                asked.snapshot.errors.push(step.overran(budget_ms));
                asked.spoiled |= step.spoils_native_check() && backend.checks_inside_round();
                None
            }
            AgentEvent::Failed { index: i, message } if i == index => {
                asked
                    .snapshot
                    .errors
                    .push(format!("the agent failed: {message}"));
                asked.stage = Stage::Done;
                None
            }
            other => Some(other),
        }
    }

    /// Process `pid` closed its connection: whatever it had not answered stays unanswered.
    pub fn on_closed(&mut self, pid: u32) {
        for a in self
            .asked
            .iter_mut()
            .filter(|a| a.pid == pid && a.stage == Stage::Asked)
        {
            a.snapshot
                .errors
                .push("the process ended during the snapshot".into());
            a.stage = Stage::Done;
        }
    }

    /// Takes the captures that finished.
    pub fn collect_captures(&mut self) {
        while let Ok((pid, capture)) = self.finished.try_recv() {
            if let Some(a) = self
                .asked
                .iter_mut()
                .find(|a| a.pid == pid && matches!(a.stage, Stage::Capturing { .. }))
            {
                if a.spoiled {
                    a.snapshot
                        .errors
                        .push("no native evidence for this snapshot".into());
                } else {
                    a.snapshot.native = capture.native;
                }
                a.snapshot.maps = capture.maps;
                a.snapshot.errors.extend(capture.errors);
                a.stage = Stage::Done;
            }
        }
        let now = Instant::now();
        for a in &mut self.asked {
            if let Stage::Capturing { until } = a.stage
                && now > until
            {
                a.snapshot
                    .errors
                    .push("the native capture did not finish in time".into());
                a.stage = Stage::Done;
            }
        }
    }

    /// Whether every process asked has answered (or failed).
    pub fn answered(&self) -> bool {
        self.asked.iter().all(|a| a.stage != Stage::Asked)
    }

    /// Whether every process asked is done, captures included.
    pub fn finished(&self) -> bool {
        self.asked.iter().all(|a| a.stage == Stage::Done)
    }

    /// Ends the round: the processes that never answered get `why` (and are returned, to be
    /// passed over by later rounds); a capture still running is waited for, within its own
    /// deadline. Returns (the snapshots, the pids that never answered).
    pub fn close(mut self, why: &str) -> (Vec<Snapshot>, Vec<u32>) {
        let mut silent = Vec::new();
        for a in &mut self.asked {
            if a.stage == Stage::Asked {
                a.snapshot.errors.push(why.to_owned());
                a.stage = Stage::Done;
                silent.push(a.pid);
            }
        }
        while !self.finished() {
            self.collect_captures();
            std::thread::sleep(Duration::from_millis(10));
        }
        (self.asked.into_iter().map(|a| a.snapshot).collect(), silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::NativeRef;

    /// A backend whose capture takes `delay`, notes when it ran, and names its file after the
    /// process.
    struct Slow {
        delay: Duration,
        ran: std::sync::Mutex<Vec<(Instant, Instant)>>,
    }

    fn slow(delay: Duration) -> Arc<Slow> {
        Arc::new(Slow {
            delay,
            ran: std::sync::Mutex::new(Vec::new()),
        })
    }

    impl NativeBackend for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn describe(&self) -> crate::bundle::Backend {
            crate::bundle::Backend::default()
        }
        fn prepare(&mut self, _: &mut crate::run::child::Launch) -> crate::error::Result<()> {
            Ok(())
        }
        fn capture(
            &self,
            _pid: u32,
            round: u32,
            files: &ProcessFiles,
            _before: Mark,
            _deadline: Duration,
        ) -> NativeCapture {
            let started = Instant::now();
            std::thread::sleep(self.delay);
            self.ran.lock().unwrap().push((started, Instant::now()));
            NativeCapture {
                native: Some(NativeRef {
                    file: files.native(round),
                    ..NativeRef::default()
                }),
                ..NativeCapture::default()
            }
        }
    }

    fn done(index: u32, pid: u32) -> AgentEvent {
        AgentEvent::Done {
            index,
            heap: format!("heap-p{pid}-{index:03}.json"),
            sidecar: format!("agent-p{pid}-{index:03}.json"),
        }
    }

    #[test]
    fn captures_of_several_processes_overlap_and_a_silent_one_is_named() {
        let slow = slow(Duration::from_millis(400));
        let backend: Arc<dyn NativeBackend> = slow.clone();
        let mut round = Round::new(2, Instant::now() + Duration::from_secs(30));
        for pid in [10, 11, 12, 13] {
            round.ask(
                pid,
                ProcessFiles::of(pid),
                Mark::default(),
                Snapshot::default(),
            );
        }
        for pid in [10, 11, 12] {
            assert!(round.on_event(pid, done(2, pid), &backend).is_none());
        }
        // Another round's answer is not this round's.
        assert!(round.on_event(13, done(1, 13), &backend).is_some());
        assert!(round.waits_for(13) && !round.answered());
        let (snapshots, silent) = round.close("did not answer");
        // The three captures ran at the same time: each one started before any one ended.
        let ran = slow.ran.lock().unwrap().clone();
        assert_eq!(ran.len(), 3);
        let last_start = ran.iter().map(|r| r.0).max().unwrap();
        let first_end = ran.iter().map(|r| r.1).min().unwrap();
        assert!(last_start < first_end, "captures ran one after another");
        assert_eq!(silent, [13]);
        let natives: Vec<Option<String>> = snapshots
            .iter()
            .map(|s| s.native.as_ref().map(|n| n.file.clone()))
            .collect();
        assert_eq!(
            natives,
            [
                Some("native-p10-002.txt".into()),
                Some("native-p11-002.txt".into()),
                Some("native-p12-002.txt".into()),
                None
            ]
        );
        assert!(snapshots.iter().all(|s| s.index == 0 || s.pid.is_some()));
        assert_eq!(snapshots[3].errors, ["did not answer"]);
    }

    #[test]
    fn a_failure_and_a_closed_connection_end_a_process_s_part() {
        let backend: Arc<dyn NativeBackend> = slow(Duration::ZERO);
        let mut round = Round::new(1, Instant::now() + Duration::from_secs(30));
        round.ask(
            1,
            ProcessFiles::main(),
            Mark::default(),
            Snapshot::default(),
        );
        round.ask(2, ProcessFiles::of(2), Mark::default(), Snapshot::default());
        let failed = AgentEvent::Failed {
            index: 1,
            message: "Errno::ENOSPC".into(),
        };
        assert!(round.on_event(1, failed, &backend).is_none());
        round.on_closed(2);
        assert!(round.answered());
        let (snapshots, silent) = round.close("unused");
        assert!(silent.is_empty());
        assert_eq!(snapshots[0].errors, ["the agent failed: Errno::ENOSPC"]);
        assert_eq!(
            snapshots[1].errors,
            ["the process ended during the snapshot"]
        );
    }
}
