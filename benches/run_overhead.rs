//! What `leakhunt run` costs the program: the seed's leak (messages received and never closed)
//! in `fixtures/run/roundtrips.rb`, which makes a fixed number of blocking round trips so every
//! line does the same work, run natively, under each backend alone, and under `leakhunt run`
//! with the same backend (allocation tracing on and off). Prints the program's own time for its
//! round trips (snapshot pauses included), the whole wall time and the CPU time of everything it
//! ran (the fairest figure on a shared machine), best of `LEAKHUNT_BENCH_RUNS` (default 3) rounds
//! by CPU time, each leakhunt line's CPU ratio to the backend alone, and how long a snapshot froze the program (the agent's GC, LSan check and dump, from
//! the sidecars). Needs ruby, ffi-rzmq, liblsan and valgrind (.ci/packages).
//!
//! `cargo bench --bench run_overhead` (`LEAKHUNT_BENCH_ONLY=native|lsan|valgrind` for one group)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

struct Figures {
    wall: f64,
    /// The program's own time for its round trips.
    program: f64,
    /// CPU seconds (user + system) of everything the scenario ran: the program, its threads,
    /// the backend, leakhunt.
    cpu: f64,
    snapshots: usize,
    /// Mean seconds per snapshot the program was frozen (GC, LSan check, dump).
    frozen: f64,
}

/// Builds the command for (endpoint, bundle dir).
type Build = Box<dyn Fn(&str, &Path) -> Command>;

/// One way of running the program.
struct Scenario {
    /// "native", "lsan" or "valgrind": `LEAKHUNT_BENCH_ONLY=GROUP` runs one group.
    group: &'static str,
    name: &'static str,
    iterations: &'static str,
    /// The backend alone: later lines of the same group compare against it.
    baseline: bool,
    command: Build,
}

const SNAPSHOTS: [&str; 6] = ["--after", "1s", "--every", "1.5s", "--snapshots", "2"];
const LSAN_OPTIONS: &str = "fast_unwind_on_malloc=0:leak_check_at_exit=0:detect_leaks=1";

fn main() {
    let runs: usize = std::env::var("LEAKHUNT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/run/roundtrips.rb");
    let scratch = tempfile::tempdir().unwrap();
    let lsan = leakhunt::platform::lsan_runtime().expect("liblsan.so.0 (apt-get install liblsan0)");

    let ruby = |iterations: &'static str, env: Vec<(&'static str, String)>| {
        let program = program.clone();
        Box::new(move |endpoint: &str, _: &Path| {
            let mut c = Command::new("ruby");
            c.arg(&program).args([endpoint, "1024", iterations]);
            c.envs(env.iter().map(|(k, v)| (k, v)));
            c
        }) as Build
    };
    let under_leakhunt = |iterations: &'static str, options: &'static [&'static str]| {
        let program = program.clone();
        Box::new(move |endpoint: &str, bundle: &Path| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_leakhunt"));
            c.arg("run")
                .arg("-o")
                .arg(bundle)
                .args(options)
                .args(SNAPSHOTS);
            c.arg("--")
                .arg(&program)
                .args([endpoint, "1024", iterations]);
            c.env("LEAKHUNT_NO_PROGRESS", "1");
            c
        }) as Build
    };
    let valgrind_alone = {
        let program = program.clone();
        let dir: PathBuf = scratch.path().to_path_buf();
        Box::new(move |endpoint: &str, _: &Path| {
            let mut c = Command::new("valgrind");
            c.args([
                "--tool=memcheck",
                "--leak-check=full",
                "--vgdb=yes",
                "--undef-value-errors=no",
                "--fair-sched=yes",
                "--num-callers=40",
                "--xml=yes",
            ])
            .arg(format!("--xml-file={}", dir.join("vg.%p.xml").display()))
            .arg(format!("--log-file={}", dir.join("vg.%p.log").display()))
            .arg(format!("--vgdb-prefix={}", dir.join("vgdb").display()))
            .arg("ruby")
            .arg(&program)
            .args([endpoint, "1024", "4000"]);
            c
        }) as Build
    };

    let scenarios = [
        Scenario {
            group: "native",
            name: "ruby",
            iterations: "100000",
            baseline: true,
            command: ruby("100000", vec![]),
        },
        Scenario {
            group: "native",
            name: "leakhunt run --backend none",
            iterations: "100000",
            baseline: false,
            command: under_leakhunt("100000", &["--backend", "none"]),
        },
        Scenario {
            group: "native",
            name: "leakhunt run --backend none --no-alloc-sites",
            iterations: "100000",
            baseline: false,
            command: under_leakhunt("100000", &["--backend", "none", "--no-alloc-sites"]),
        },
        Scenario {
            group: "lsan",
            name: "ruby with LSan preloaded (full stacks)",
            iterations: "20000",
            baseline: true,
            command: ruby(
                "20000",
                vec![
                    ("LD_PRELOAD", lsan.display().to_string()),
                    ("LSAN_OPTIONS", LSAN_OPTIONS.to_owned()),
                ],
            ),
        },
        Scenario {
            group: "lsan",
            name: "leakhunt run --backend lsan",
            iterations: "20000",
            baseline: false,
            command: under_leakhunt("20000", &["--backend", "lsan"]),
        },
        Scenario {
            group: "lsan",
            name: "leakhunt run --backend lsan --no-alloc-sites",
            iterations: "20000",
            baseline: false,
            command: under_leakhunt("20000", &["--backend", "lsan", "--no-alloc-sites"]),
        },
        Scenario {
            group: "valgrind",
            name: "ruby under valgrind memcheck",
            iterations: "4000",
            baseline: true,
            command: valgrind_alone,
        },
        Scenario {
            group: "valgrind",
            name: "leakhunt run --backend valgrind",
            iterations: "4000",
            baseline: false,
            command: under_leakhunt("4000", &["--backend", "valgrind"]),
        },
        Scenario {
            group: "valgrind",
            name: "leakhunt run --backend valgrind --no-alloc-sites",
            iterations: "4000",
            baseline: false,
            command: under_leakhunt("4000", &["--backend", "valgrind", "--no-alloc-sites"]),
        },
    ];

    println!(
        "roundtrips.rb, 1 KiB messages, snapshots `{}`; best of {runs}",
        SNAPSHOTS.join(" ")
    );
    println!(
        "{:<50} {:>7} {:>7} {:>9} {:>7} {:>9} {:>9}  CPU ratio",
        "how", "trips", "CPU s", "program s", "wall s", "snapshots", "frozen s"
    );
    // Rounds go through every scenario in turn, so a burst of load from other work on the
    // machine hits one run of each rather than all runs of one; the best run of each is kept.
    let only = std::env::var("LEAKHUNT_BENCH_ONLY").ok();
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|g| g == s.group))
        .collect();
    let mut best: Vec<Option<Figures>> = scenarios.iter().map(|_| None).collect();
    for round in 0..runs.max(1) {
        for (n, s) in scenarios.iter().enumerate() {
            let bundle = scratch.path().join(format!("bundle-{round}-{n}"));
            let f = measure(&mut (s.command)(&endpoint(), &bundle), &bundle);
            if best[n].as_ref().is_none_or(|b| f.cpu < b.cpu) {
                best[n] = Some(f);
            }
        }
    }
    let mut baseline = 0.0;
    for (s, best) in scenarios.iter().zip(best.iter().flatten()) {
        let ratio = if s.baseline {
            baseline = best.cpu;
            "(baseline)".to_owned()
        } else {
            format!("{:.2}×", best.cpu / baseline)
        };
        let frozen = if best.snapshots == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}", best.frozen)
        };
        println!(
            "{:<50} {:>7} {:>7.2} {:>9.2} {:>7.2} {:>9} {:>9}  {ratio}",
            s.name, s.iterations, best.cpu, best.program, best.wall, best.snapshots, frozen
        );
    }
}

/// Runs one scenario; the program's last line is "received N messages in S seconds".
fn measure(cmd: &mut Command, bundle: &Path) -> Figures {
    let cpu_before = children_cpu();
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run the scenario");
    let wall = start.elapsed().as_secs_f64();
    let cpu = children_cpu() - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("received "))
        .unwrap_or_else(|| panic!("no 'received' line in:\n{text}"))
        .split_whitespace()
        .collect();
    let program: f64 = words[4].parse().unwrap();
    let sidecars: Vec<leakhunt::bundle::Sidecar> = leakhunt::bundle::Manifest::load(bundle)
        .map(|m| {
            m.snapshots
                .iter()
                .filter_map(|s| s.sidecar.as_ref())
                .filter_map(|name| std::fs::read(bundle.join(name)).ok())
                .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
                .collect()
        })
        .unwrap_or_default();
    let frozen: f64 = sidecars
        .iter()
        .map(|s| {
            ["gc", "lsan", "dump"]
                .iter()
                .filter_map(|k| s.timings.get(*k))
                .sum::<f64>()
        })
        .sum();
    Figures {
        wall,
        program,
        cpu,
        snapshots: sidecars.len(),
        frozen: frozen / sidecars.len().max(1) as f64,
    }
}

/// User + system CPU seconds of every waited-for child so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port())
}
