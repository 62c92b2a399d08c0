//! What examining every process of a tree costs, measured two ways (BENCHMARKS.md, "Servers"):
//!
//! - A fork that never allocates must not slow down: `benches/fork_loop.rb` forks children
//!   that exit at once, plain and under `leakhunt run --backend none --snapshots 0` (the agent
//!   re-arms in every child: a connection, a hello, a thread, and a word at exit). Prints the
//!   program's own wall time for its forks and the CPU time they cost it (the program and its
//!   children, not leakhunt), best of `LEAKHUNT_BENCH_RUNS` (default 3), and the ratios.
//! - A round over N processes takes about the slowest process's time, not the sum:
//!   `benches/idle_pool.rb` with N idle workers (200,000 strings each) under `leakhunt run
//!   --snapshots 0`; rounds are taken with `leakhunt snapshot` and timed from outside. Prints
//!   the round's wall time, the slowest process's own snapshot time and the sum of all of them
//!   (each from its sidecar's timings), for N = 1, 2, 4, 8, with `--backend none` and `lsan`.
//!   The machine has 2 cores: past two processes the snapshots share them.
//!
//! `cargo bench --bench servers` (`LEAKHUNT_BENCH_ONLY=forks|rounds` for one half).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let runs: usize = std::env::var("LEAKHUNT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("LEAKHUNT_BENCH_ONLY").ok();
    let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    let scratch = tempfile::tempdir().unwrap();
    if only.as_deref().is_none_or(|o| o == "forks") {
        forks(&benches.join("fork_loop.rb"), scratch.path(), runs);
    }
    if only.as_deref().is_none_or(|o| o == "rounds") {
        rounds(&benches.join("idle_pool.rb"), scratch.path(), runs);
    }
}

fn leakhunt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leakhunt"));
    c.env("LEAKHUNT_NO_PROGRESS", "1");
    c
}

/// The program's "forked N in S seconds, cpu C seconds" line: (wall, cpu).
fn forked_seconds(stdout: &[u8]) -> (f64, f64) {
    let text = String::from_utf8_lossy(stdout);
    let words: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("forked "))
        .unwrap_or_else(|| panic!("no 'forked' line in:\n{text}"))
        .split_whitespace()
        .collect();
    let number = |i: usize| -> f64 {
        words
            .get(i)
            .and_then(|w| w.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("not a number at word {i} in {words:?}"))
    };
    (number(3), number(6))
}

/// One way of running the fork loop: run number → (wall, CPU) seconds.
type Scenario<'a> = dyn Fn(usize) -> (f64, f64) + 'a;

fn forks(program: &Path, scratch: &Path, runs: usize) {
    const COUNT: &str = "300";
    let plain = |_: usize| {
        let out = Command::new("ruby")
            .arg(program)
            .arg(COUNT)
            .output()
            .unwrap();
        forked_seconds(&out.stdout)
    };
    let under = |options: &'static [&'static str]| {
        move |n: usize| {
            let bundle = scratch.join(format!("forks-{n}-{}", options.len()));
            let out = leakhunt()
                .arg("run")
                .arg("-o")
                .arg(&bundle)
                .args([
                    "--backend",
                    "none",
                    "--snapshots",
                    "0",
                    "--fail-on",
                    "never",
                ])
                .args(options)
                .arg("--")
                .arg("ruby")
                .arg(program)
                .arg(COUNT)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .unwrap();
            let seconds = forked_seconds(&out.stdout);
            let processes = leakhunt::bundle::Manifest::load(&bundle)
                .map(|m| m.processes.len() as u64 + m.unlisted_processes)
                .unwrap_or(0);
            assert!(
                processes > 300,
                "every fork says hello: {processes} processes listed or counted"
            );
            seconds
        }
    };
    let scenarios: [(&str, Box<Scenario>); 3] = [
        ("ruby (no agent)", Box::new(plain)),
        (
            "leakhunt run --backend none --snapshots 0",
            Box::new(under(&[])),
        ),
        (
            "  … --no-alloc-sites",
            Box::new(under(&["--no-alloc-sites"])),
        ),
    ];
    let mut best = [(f64::MAX, f64::MAX); 3];
    for n in 0..runs.max(1) {
        for (i, (_, run)) in scenarios.iter().enumerate() {
            let (wall, cpu) = run(n);
            best[i] = (best[i].0.min(wall), best[i].1.min(cpu));
        }
    }
    println!(
        "fork_loop.rb: {COUNT} forks of an empty child, one after the other; best of {runs} (wall and CPU each)"
    );
    println!(
        "{:<45} {:>12} {:>8} {:>12} {:>8}",
        "how", "wall ms/fork", "ratio", "CPU ms/fork", "ratio"
    );
    for (i, (name, _)) in scenarios.iter().enumerate() {
        println!(
            "{name:<45} {:>12.2} {:>7.2}× {:>12.2} {:>7.2}×",
            best[i].0 * 1000.0 / 300.0,
            best[i].0 / best[0].0,
            best[i].1 * 1000.0 / 300.0,
            best[i].1 / best[0].1
        );
    }
    println!();
}

/// A `leakhunt run` of the idle pool, ready once every worker said hello.
struct Pool {
    child: Child,
    bundle: PathBuf,
}

impl Pool {
    fn start(program: &Path, bundle: PathBuf, workers: usize, backend: &str) -> Pool {
        let child = leakhunt()
            .arg("run")
            .arg("-o")
            .arg(&bundle)
            .args([
                "--backend",
                backend,
                "--snapshots",
                "0",
                "--fail-on",
                "never",
            ])
            .arg("--")
            .arg("ruby")
            .arg(program)
            .arg(workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pool = Pool { child, bundle };
        let until = Instant::now() + Duration::from_secs(120);
        while pool.workers() < workers {
            assert!(Instant::now() < until, "the pool never started");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Each worker fills its array before it idles.
        std::thread::sleep(Duration::from_secs(2));
        pool
    }

    fn workers(&self) -> usize {
        leakhunt::bundle::Manifest::load(&self.bundle)
            .map(|m| m.processes.iter().filter(|p| p.role == "worker").count())
            .unwrap_or(0)
    }

    /// Takes a round with `leakhunt snapshot`; returns (wall, slowest process, sum over the
    /// processes), each process's time being its sidecar's snapshot steps.
    fn round(&self) -> (f64, f64, f64) {
        let started = Instant::now();
        let out = leakhunt()
            .arg("snapshot")
            .arg(&self.bundle)
            .output()
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout);
        let round: u32 = text
            .strip_prefix("round ")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("leakhunt snapshot said {text:?}"));
        let m = leakhunt::bundle::Manifest::load(&self.bundle).unwrap();
        let times: Vec<f64> = m
            .snapshots
            .iter()
            .filter(|s| s.index == round)
            .filter_map(|s| s.sidecar.as_ref())
            .filter_map(|name| std::fs::read(self.bundle.join(name)).ok())
            .filter_map(|b| serde_json::from_slice::<leakhunt::bundle::Sidecar>(&b).ok())
            .map(|s| s.timings.values().sum())
            .collect();
        let slowest = times.iter().copied().fold(0.0, f64::max);
        (wall, slowest, times.iter().sum())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: signals the leakhunt process this benchmark started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}

fn rounds(program: &Path, scratch: &Path, runs: usize) {
    println!(
        "idle_pool.rb: a master and N idle workers (200,000 strings each); rounds by `leakhunt snapshot`, after a first one; best of {runs} rounds by wall time"
    );
    println!(
        "{:<9} {:>3} {:>10} {:>10} {:>13} {:>14} {:>10}",
        "backend", "N", "round s", "slowest s", "sum s", "round/slowest", "round/sum"
    );
    for backend in ["none", "lsan"] {
        for workers in [1usize, 2, 4, 8] {
            let pool = Pool::start(
                program,
                scratch.join(format!("pool-{backend}-{workers}")),
                workers,
                backend,
            );
            // The first round reads every class's methods once (cached for the next ones).
            pool.round();
            let best = (0..runs.max(1))
                .map(|_| pool.round())
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap_or_default();
            let (wall, slowest, sum) = best;
            println!(
                "{backend:<9} {:>3} {wall:>10.2} {slowest:>10.2} {sum:>13.2} {:>13.2}× {:>9.2}×",
                workers + 1,
                wall / slowest,
                wall / sum
            );
        }
    }
}
