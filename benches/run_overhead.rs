//! What `leakhunt run` costs the program, on two workloads: the seed's leak (messages received
//! and never closed) in `fixtures/run/roundtrips.rb`, which makes a fixed number of blocking round
//! trips, and an allocation-heavy program (`fixtures/run/allocs.rb`: small objects with a String
//! and an Array each, 1 % kept, the shape of a web request path). Each makes a fixed amount of
//! work so every line does the same; each runs natively, under each backend alone, and under
//! `leakhunt run` with the same backend (allocation sites: sampled, the default;
//! `--alloc-sites all`; off). Prints the program's own time for its
//! round trips (snapshot pauses included), the whole wall time and the CPU time of everything it
//! ran (the fairest figure on a shared machine), best of `LEAKHUNT_BENCH_RUNS` (default 3) rounds
//! by CPU time, each leakhunt line's CPU ratio to the backend alone, and how long a snapshot froze the program (the agent's GC, LSan check and dump, from
//! the sidecars). Needs ruby, ffi-rzmq, liblsan and valgrind (.ci/packages).
//!
//! `cargo bench --bench run_overhead` (`LEAKHUNT_BENCH_ONLY=native|lsan|valgrind` for one group,
//! `LEAKHUNT_BENCH_WORKLOAD=roundtrips|allocs` for one workload, `LEAKHUNT_BENCH_SCALE=N` for N
//! times the work, `LEAKHUNT_BENCH_SITES=sampled,off` for some of the leakhunt lines: `sampled`,
//! `all`, `off`)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

struct Figures {
    wall: f64,
    /// The program's own time for its work.
    program: f64,
    /// CPU seconds (user + system) of everything the scenario ran: the program, its threads,
    /// the backend, leakhunt.
    cpu: f64,
    snapshots: usize,
    /// Mean seconds per snapshot the program was frozen (GC, LSan check, dump).
    frozen: f64,
}

/// A program and the amount of work it does under each group of lines (a backend slows the
/// program down, so the slower groups do less of the same work).
struct Workload {
    name: &'static str,
    program: &'static str,
    /// What the counts count.
    unit: &'static str,
    /// Work for the native, lsan and valgrind groups.
    counts: [&'static str; 3],
    /// The program's arguments for (endpoint, count).
    args: fn(&str, &str) -> Vec<String>,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "roundtrips",
        program: "fixtures/run/roundtrips.rb",
        unit: "round trips",
        counts: ["100000", "20000", "4000"],
        args: |endpoint, n| vec![endpoint.to_owned(), "1024".to_owned(), n.to_owned()],
    },
    Workload {
        name: "allocs",
        program: "fixtures/run/allocs.rb",
        unit: "objects",
        counts: ["3000000", "1000000", "200000"],
        args: |_, n| vec![n.to_owned()],
    },
];

const GROUPS: [&str; 3] = ["native", "lsan", "valgrind"];

/// One way of running a program.
struct Scenario {
    workload: &'static str,
    /// "native", "lsan" or "valgrind": `LEAKHUNT_BENCH_ONLY=GROUP` runs one group.
    group: &'static str,
    name: String,
    count: String,
    /// The backend alone: later lines of the same group compare against it.
    baseline: bool,
    /// Program and arguments (the endpoint is made fresh for each run).
    program: PathBuf,
    args: fn(&str, &str) -> Vec<String>,
    /// How to run it: alone (None: the backend's own way), or `leakhunt run` with these options.
    leakhunt: Option<&'static [&'static str]>,
}

const SNAPSHOTS: [&str; 6] = ["--after", "1s", "--every", "1.5s", "--snapshots", "2"];
const LSAN_OPTIONS: &str = "fast_unwind_on_malloc=0:leak_check_at_exit=0:detect_leaks=1";

fn main() {
    let runs: usize = std::env::var("LEAKHUNT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("LEAKHUNT_BENCH_ONLY").ok();
    let only_workload = std::env::var("LEAKHUNT_BENCH_WORKLOAD").ok();
    // A longer run of the same work: what a program pays per second once warm-up is over.
    let scale: u64 = std::env::var("LEAKHUNT_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // Which leakhunt lines run (the backend alone always does).
    let sites: Vec<String> = std::env::var("LEAKHUNT_BENCH_SITES")
        .unwrap_or_else(|_| "sampled,all,off".to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let lsan = leakhunt::platform::lsan_runtime().expect("liblsan.so.0 (apt-get install liblsan0)");

    let mut scenarios = Vec::new();
    for w in &WORKLOADS {
        if only_workload.as_deref().is_some_and(|o| o != w.name) {
            continue;
        }
        for (g, group) in GROUPS.iter().enumerate() {
            if only.as_deref().is_some_and(|o| o != *group) {
                continue;
            }
            let alone = match *group {
                "native" => "ruby".to_owned(),
                "lsan" => "ruby with LSan preloaded (full stacks)".to_owned(),
                _ => "ruby under valgrind memcheck".to_owned(),
            };
            let backend: &'static [&'static str] = match *group {
                "native" => &["--backend", "none"],
                "lsan" => &["--backend", "lsan"],
                _ => &["--backend", "valgrind"],
            };
            let all_sites: &'static [&'static str] = match *group {
                "native" => &["--backend", "none", "--alloc-sites", "all"],
                "lsan" => &["--backend", "lsan", "--alloc-sites", "all"],
                _ => &["--backend", "valgrind", "--alloc-sites", "all"],
            };
            let no_sites: &'static [&'static str] = match *group {
                "native" => &["--backend", "none", "--no-alloc-sites"],
                "lsan" => &["--backend", "lsan", "--no-alloc-sites"],
                _ => &["--backend", "valgrind", "--no-alloc-sites"],
            };
            for (name, baseline, leakhunt) in [
                ("", true, None),
                ("sampled", false, Some(backend)),
                ("all", false, Some(all_sites)),
                ("off", false, Some(no_sites)),
            ] {
                if !baseline && !sites.iter().any(|s| s == name) {
                    continue;
                }
                let name = match leakhunt {
                    Some(options) => format!("leakhunt run {}", options.join(" ")),
                    None => alone.clone(),
                };
                scenarios.push(Scenario {
                    workload: w.name,
                    group,
                    name,
                    count: scaled(w.counts[g], scale),
                    baseline,
                    program: Path::new(env!("CARGO_MANIFEST_DIR")).join(w.program),
                    args: w.args,
                    leakhunt,
                });
            }
        }
    }

    let command = |s: &Scenario, bundle: &Path| -> Command {
        let args = (s.args)(&endpoint(), &s.count);
        if let Some(options) = s.leakhunt {
            let mut c = Command::new(env!("CARGO_BIN_EXE_leakhunt"));
            c.arg("run")
                .arg("-o")
                .arg(bundle)
                .args(options)
                .args(SNAPSHOTS)
                .arg("--")
                .arg(&s.program)
                .args(&args);
            c.env("LEAKHUNT_NO_PROGRESS", "1");
            return c;
        }
        match s.group {
            "lsan" => {
                let mut c = Command::new("ruby");
                c.arg(&s.program).args(&args);
                c.env("LD_PRELOAD", &lsan).env("LSAN_OPTIONS", LSAN_OPTIONS);
                c
            }
            "valgrind" => {
                let dir = scratch.path();
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
                .arg(&s.program)
                .args(&args);
                c
            }
            _ => {
                let mut c = Command::new("ruby");
                c.arg(&s.program).args(&args);
                c
            }
        }
    };

    println!(
        "snapshots `{}`; best of {runs}; roundtrips.rb with 1 KiB messages",
        SNAPSHOTS.join(" ")
    );
    // Rounds go through every scenario in turn, so a burst of load from other work on the
    // machine hits one run of each rather than all runs of one; the best run of each is kept.
    let mut best: Vec<Option<Figures>> = scenarios.iter().map(|_| None).collect();
    for round in 0..runs.max(1) {
        for (n, s) in scenarios.iter().enumerate() {
            let bundle = scratch.path().join(format!("bundle-{round}-{n}"));
            let f = measure(&mut command(s, &bundle), &bundle);
            if best[n].as_ref().is_none_or(|b| f.cpu < b.cpu) {
                best[n] = Some(f);
            }
        }
    }
    let mut baseline = 0.0;
    let mut workload = "";
    for (s, best) in scenarios.iter().zip(best.iter().flatten()) {
        if s.workload != workload {
            workload = s.workload;
            let unit = WORKLOADS
                .iter()
                .find(|w| w.name == workload)
                .map_or("", |w| w.unit);
            println!(
                "\n{workload}\n{:<64} {:>8} {:>7} {:>9} {:>7} {:>9} {:>9}  CPU ratio",
                "how", unit, "CPU s", "program s", "wall s", "snapshots", "frozen s"
            );
        }
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
            "{:<64} {:>8} {:>7.2} {:>9.2} {:>7.2} {:>9} {:>9}  {ratio}",
            s.name, s.count, best.cpu, best.program, best.wall, best.snapshots, frozen
        );
    }
}

/// Runs one scenario; the program's last line ends "in S seconds" (its own time for its work).
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
        .rfind(|l| l.ends_with(" seconds"))
        .unwrap_or_else(|| panic!("no '… in S seconds' line in:\n{text}"))
        .split_whitespace()
        .collect();
    let program: f64 = words[words.len() - 2].parse().unwrap();
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

/// `count` times `scale`.
fn scaled(count: &str, scale: u64) -> String {
    (count.parse::<u64>().unwrap() * scale).to_string()
}

fn endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port())
}
