//! Every `LEAKHUNT_*` environment variable, in one table.
//!
//! Stage: `run`. The agent (`agent.rb`) reads the ones marked [`Reader::Agent`] from its
//! environment; leakhunt sets them for the target and records them in the manifest. The ones
//! marked [`Reader::Leakhunt`] are read by leakhunt itself (overrides for tests and odd setups).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Set by leakhunt for the target; read by the Ruby agent.
    Agent,
    /// Read by leakhunt from its own environment.
    Leakhunt,
}

#[derive(Debug, Clone, Copy)]
pub struct Knob {
    pub name: &'static str,
    pub reader: Reader,
    pub meaning: &'static str,
}

pub const SOCKET: &str = "LEAKHUNT_SOCKET";
pub const BUNDLE: &str = "LEAKHUNT_BUNDLE";
pub const ALLOC_SITES: &str = crate::bundle::ALLOC_SITES_ENV;
pub const BACKEND: &str = "LEAKHUNT_BACKEND";
pub const EXIT_WAIT: &str = "LEAKHUNT_EXIT_WAIT";
pub const SNAPSHOT_DEADLINE: &str = "LEAKHUNT_SNAPSHOT_DEADLINE";
pub const HELD_DUMP_MAX: &str = "LEAKHUNT_HELD_DUMP_MAX";
pub const EXIT_DEADLINE: &str = "LEAKHUNT_EXIT_DEADLINE";
pub const LSAN_RUNTIME: &str = "LEAKHUNT_LSAN_RUNTIME";
pub const NO_PROGRESS: &str = "LEAKHUNT_NO_PROGRESS";
pub const LEAKS_DEADLINE: &str = "LEAKHUNT_LEAKS_DEADLINE";
pub const TEST_LEAKS_STAND_IN: &str = "LEAKHUNT_TEST_LEAKS_STAND_IN";
pub const TEST_DISK_FREE: &str = "LEAKHUNT_TEST_DISK_FREE";

pub const KNOBS: &[Knob] = &[
    Knob {
        name: SOCKET,
        reader: Reader::Agent,
        meaning: "Unix socket (in leakhunt's private 0700 directory) the agent listens on",
    },
    Knob {
        name: BUNDLE,
        reader: Reader::Agent,
        meaning: "bundle directory the agent writes heap dumps and sidecars into",
    },
    Knob {
        name: ALLOC_SITES,
        reader: Reader::Agent,
        meaning: "sampled (leakhunt's default): trace object allocations (file:line in dumps) \
                  while the program loads code (until its loading settles, or the first \
                  snapshot), in short windows and during snapshots; 1: trace every one; 0: off",
    },
    Knob {
        name: BACKEND,
        reader: Reader::Agent,
        meaning: "native backend of the run; `lsan` makes the agent run the LeakSanitizer check",
    },
    Knob {
        name: EXIT_WAIT,
        reader: Reader::Agent,
        meaning: "seconds the agent's at_exit hook waits for leakhunt's final snapshot (a \
                  snapshot's own deadline comes with each request)",
    },
    Knob {
        name: HELD_DUMP_MAX,
        reader: Reader::Agent,
        meaning: "MiB (default 256): a round whose heap dump is expected no bigger keeps the \
                  program's threads still by holding Ruby's GVL, the dump written into memory \
                  first; a bigger one parks them with a TracePoint, which leaves Ruby code up to \
                  1.6× slower for the rest of the process; 0: always park",
    },
    Knob {
        name: SNAPSHOT_DEADLINE,
        reader: Reader::Leakhunt,
        meaning: "seconds to wait for one snapshot (agent and native tool) before giving up; the \
                  agent never keeps the program parked for more than three quarters of it",
    },
    Knob {
        name: EXIT_DEADLINE,
        reader: Reader::Leakhunt,
        meaning: "seconds a program may take to exit after its final snapshot before it is killed",
    },
    Knob {
        name: LSAN_RUNTIME,
        reader: Reader::Leakhunt,
        meaning: "path of the LeakSanitizer runtime to preload instead of the one found",
    },
    Knob {
        name: NO_PROGRESS,
        reader: Reader::Leakhunt,
        meaning: "set: never draw progress on stderr",
    },
    Knob {
        name: LEAKS_DEADLINE,
        reader: Reader::Leakhunt,
        meaning: "seconds one run of leaks(1) may take (default 120), whatever the agent's part \
                  of the snapshot took; at most 15 s once Ctrl-C was pressed",
    },
    Knob {
        name: TEST_LEAKS_STAND_IN,
        reader: Reader::Leakhunt,
        meaning: "TEST ONLY: an executable run instead of leaks(1) (tests/support/leaks-stand-in), \
                  which makes `--backend leaks` usable where leaks(1) does not exist; leakhunt \
                  warns whenever it is set",
    },
    Knob {
        name: TEST_DISK_FREE,
        reader: Reader::Leakhunt,
        meaning: "TEST ONLY: bytes taken as free on the bundle's disk instead of what statvfs \
                  says, so that a test can make a round not fit; leakhunt warns whenever it is set",
    },
];

/// A duration in seconds from leakhunt's own environment, if set and sensible.
pub fn seconds(name: &str) -> Option<std::time::Duration> {
    let v: f64 = std::env::var(name).ok()?.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then(|| std::time::Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_knob_is_read_by_the_agent_and_no_other() {
        let agent = super::super::agent::AGENT_SOURCE;
        for knob in KNOBS {
            let read = agent.contains(&format!("'{}'", knob.name));
            match knob.reader {
                Reader::Agent => assert!(read, "agent.rb does not read {}", knob.name),
                Reader::Leakhunt => assert!(!read, "agent.rb reads leakhunt's {}", knob.name),
            }
        }
        // …and the agent reads nothing outside the table.
        let mut rest = agent;
        while let Some(at) = rest.find("'LEAKHUNT_") {
            let name: String = rest[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            assert!(
                KNOBS.iter().any(|k| k.name == name),
                "agent.rb reads {name}, which is not in the table"
            );
            rest = &rest[at + 1..];
        }
    }
}
