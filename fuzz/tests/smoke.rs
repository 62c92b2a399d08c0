//! The CI side of fuzzing: every target runs its seeds, the minimized inputs of past findings
//! (`fuzz/regressions/TARGET/`) and a few seconds of inputs made by a simple mutator, in an
//! ordinary test build (no libFuzzer, no instrumentation: nothing to install). The campaign
//! with the real fuzzer is `fuzz/campaign` (FUZZING.md).
//!
//! The same properties as under libFuzzer: a panic fails the test, an input that runs past
//! [`TIME_BOUND`] aborts it, and the counting allocator aborts past its bound. Before each run
//! the input is written to `smoke-TARGET.input` in the test's temporary directory, so the one
//! that failed can be replayed.

use leakhunt_fuzz::{SEPARATOR, TARGETS, Target, alloc, seeds};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest one input may run (debug build, two cores shared with other work).
const TIME_BOUND: Duration = Duration::from_secs(30);
/// Mutated inputs per target, at most…
const MUTATED_INPUTS: u32 = 3000;
/// …and for at most this long (`FUZZ_SMOKE_SECONDS` overrides it).
const SECONDS_PER_TARGET: u64 = 4;

#[test]
fn every_target_survives_its_seeds_regressions_and_mutations() {
    let seconds = std::env::var("FUZZ_SMOKE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SECONDS_PER_TARGET);
    let watchdog = Watchdog::start();
    let mut summary = Vec::new();
    for &(name, target) in TARGETS {
        let mut corpus: Vec<Vec<u8>> = seeds::for_target(name)
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert!(!corpus.is_empty(), "{name}: no seeds");
        let regressions = regression_inputs(name);
        let replayed = corpus.len() + regressions.len();
        for input in corpus.iter().chain(&regressions) {
            run_one(&watchdog, name, target, input);
        }
        corpus.extend(regressions);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut mutated = 0;
        while mutated < MUTATED_INPUTS && Instant::now() < until {
            let input = mutate(&mut rng, &corpus);
            run_one(&watchdog, name, target, &input);
            mutated += 1;
        }
        summary.push(format!("{name}: {replayed} replayed, {mutated} mutated"));
    }
    eprintln!("{}", summary.join("\n"));
}

/// The bound itself: holding more than [`alloc::LIMIT`] aborts the process with a message (the
/// test runs itself as a child that does so).
#[test]
fn holding_more_than_the_bound_aborts_with_a_message() {
    if std::env::var_os("FUZZ_SMOKE_ALLOCATE_PAST_BOUND").is_some() {
        let held = vec![1u8; alloc::LIMIT / 2];
        let more = vec![2u8; alloc::LIMIT / 2 + 1];
        std::hint::black_box((held, more));
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "holding_more_than_the_bound_aborts_with_a_message",
        ])
        .env("FUZZ_SMOKE_ALLOCATE_PAST_BOUND", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr
            .contains("one input made leakhunt hold more heap than the bound (alloc::LIMIT): 134"),
        "{stderr}"
    );
}

/// Minimized inputs of earlier findings, committed next to the fix's unit test.
fn regression_inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("regression input"))
        .collect()
}

fn run_one(watchdog: &Watchdog, name: &str, target: Target, input: &[u8]) {
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("smoke-{name}.input"));
    std::fs::write(&saved, input).expect("save the input");
    watchdog.arm(&saved);
    alloc::start_input();
    let outcome = catch_unwind(AssertUnwindSafe(|| target(input)));
    watchdog.disarm();
    if outcome.is_err() {
        panic!("{name} panicked on the input saved as {}", saved.display());
    }
}

/// Aborts the process when an input runs past [`TIME_BOUND`], naming the saved input.
struct Watchdog {
    epoch: Instant,
    /// Milliseconds since `epoch` (plus one) when the running input started; 0 when idle.
    started_ms: Arc<AtomicU64>,
    input: Arc<Mutex<PathBuf>>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let watchdog = Watchdog {
            epoch: Instant::now(),
            started_ms: Arc::new(AtomicU64::new(0)),
            input: Arc::new(Mutex::new(PathBuf::new())),
        };
        let (epoch, started_ms, input) = (
            watchdog.epoch,
            watchdog.started_ms.clone(),
            watchdog.input.clone(),
        );
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let started = started_ms.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64 + 1;
                if started != 0 && now.saturating_sub(started) > TIME_BOUND.as_millis() as u64 {
                    let path = input.lock().map(|p| p.clone()).unwrap_or_default();
                    eprintln!(
                        "fuzz smoke: an input ran past {TIME_BOUND:?}: {}",
                        path.display()
                    );
                    std::process::abort();
                }
            }
        });
        watchdog
    }

    fn arm(&self, input: &Path) {
        if let Ok(mut p) = self.input.lock() {
            *p = input.to_path_buf();
        }
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.started_ms.store(now, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.started_ms.store(0, Ordering::Relaxed);
    }
}

/// xorshift64: deterministic, so a smoke failure happens again on the same build.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Byte values and tokens that reach edge cases: huge and signed numbers, separators, format
/// markers.
const TOKENS: &[&[u8]] = &[
    b"18446744073709551615",
    b"9223372036854775808",
    b"-1",
    b"0x",
    b"\n",
    b"\"",
    b"Direct leak of ",
    b" in loss record ",
    b"Leak: 0x",
    b"\"references\":[",
    b"<error>",
    SEPARATOR,
];

/// One input from the corpus, changed by one to four byte-level mutations (libFuzzer's usual
/// kinds: flip, set, insert, erase, duplicate, splice, token, truncate).
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        let at = rng.below(len + 1);
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = [0, 0xff, b'9', b'\n', b'"', b' '][rng.below(6)];
            }
            2 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let end = (at + 1 + rng.below(64)).min(len);
                data.drain(at.min(end)..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(256)).min(len);
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len());
                let end = (start + rng.below(1024)).min(other.len());
                data.splice(at..at, other[start..end].iter().copied());
            }
            6 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            _ => data.truncate(at),
        }
    }
    data
}
