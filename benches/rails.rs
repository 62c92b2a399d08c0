//! What `leakhunt run` costs a real application (issue 11): the one-file Rails 6.1 app of the
//! end-to-end tests (`fixtures/apps/audit.ru`, its fixed version: `AUDIT_FIXED=1`, no leak)
//! served by puma (one process, 2 threads) on 127.0.0.1 (a port free when the line starts; load
//! goes nowhere else). Each line starts the server, sends requests one after the other, and
//! reports
//! - boot: wall and CPU seconds from the start until the first answer (Rails loads, the agent's
//!   warm-up: with the default sampled sites every allocation of the boot is traced);
//! - per request: CPU ms of the whole tree (puma, the backend, leakhunt) per request over
//!   `LEAKHUNT_BENCH_REQUESTS` requests (default 1,000; 200 under LSan; 20 under valgrind), sent
//!   after 20 warm-up requests and, under leakhunt, after a first round (which ends the warm-up
//!   tracing); a line that takes longer than `LEAKHUNT_BENCH_LIMIT` seconds (default 600) stops
//!   the benchmark;
//! - round: under leakhunt, the wall time of a `leakhunt snapshot` taken after the measured
//!   requests, and how long it kept puma's threads parked (its sidecar's GC, LSan check, dump).
//!
//! CPU is user + system time of the whole process tree (puma, valgrind, leakhunt and their
//! children), read from /proc. Each backend runs alone first (puma plain; puma with LSan
//! preloaded and leakhunt's LSan options; puma under valgrind memcheck with leakhunt's options),
//! then under `leakhunt run` with the default allocation sites, `--alloc-sites all` and
//! `--no-alloc-sites`. Best of `LEAKHUNT_BENCH_RUNS` (default 3) for each figure; runs go
//! through every line in turn. Needs Debian's ruby-railties, ruby-actionpack, puma, liblsan0,
//! valgrind. Every server a line starts is interrupted and waited for before the next line.
//!
//! `cargo bench --bench rails` (`LEAKHUNT_BENCH_ONLY=native|lsan|valgrind` for one group)

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LSAN_OPTIONS: &str = "fast_unwind_on_malloc=0:leak_check_at_exit=0:detect_leaks=1";
/// leakhunt's valgrind options (src/run/backend/valgrind.rs) less the files, which each line
/// places in its own directory.
const VALGRIND_OPTIONS: [&str; 8] = [
    "--tool=memcheck",
    "--leak-check=full",
    "--show-leak-kinds=definite,indirect,possible",
    "--vgdb=yes",
    "--undef-value-errors=no",
    "--fair-sched=yes",
    "--num-callers=40",
    "--trace-children=yes",
];
const WARM_UP_REQUESTS: usize = 20;

struct Line {
    group: &'static str,
    name: String,
    /// `leakhunt run` options, or None: the backend alone.
    leakhunt: Option<Vec<&'static str>>,
}

#[derive(Clone, Copy)]
struct Figures {
    boot_wall: f64,
    boot_cpu: f64,
    request_cpu_ms: f64,
    request_wall_ms: f64,
    round_wall: f64,
    frozen: f64,
}

fn main() {
    let runs: usize = env_number("LEAKHUNT_BENCH_RUNS").unwrap_or(3);
    let only = std::env::var("LEAKHUNT_BENCH_ONLY").ok();
    let scratch = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for group in ["native", "lsan", "valgrind"] {
        if only.as_deref().is_some_and(|o| o != group) {
            continue;
        }
        let (backend, alone) = match group {
            "native" => ("none", "puma"),
            "lsan" => ("lsan", "puma with LSan preloaded (full stacks)"),
            _ => (
                "valgrind",
                "puma under valgrind memcheck (leakhunt's options)",
            ),
        };
        lines.push(Line {
            group,
            name: alone.to_owned(),
            leakhunt: None,
        });
        for extra in [&[][..], &["--alloc-sites", "all"], &["--no-alloc-sites"]] {
            let mut options = vec!["--backend", backend];
            options.extend_from_slice(extra);
            lines.push(Line {
                group,
                name: format!("leakhunt run {}", options.join(" ")),
                leakhunt: Some(options),
            });
        }
    }
    let mut best: Vec<Option<Figures>> = vec![None; lines.len()];
    for round in 0..runs.max(1) {
        for (n, line) in lines.iter().enumerate() {
            let dir = scratch.path().join(format!("run-{round}-{n}"));
            std::fs::create_dir(&dir).unwrap();
            let f = measure(line, &dir);
            // Every run's figures, for the spread behind the best ones.
            eprintln!(
                "run {round}: {}: boot {:.2} s, {:.2} CPU s; {:.2} CPU ms/request; frozen {:.2} s",
                line.name, f.boot_wall, f.boot_cpu, f.request_cpu_ms, f.frozen
            );
            best[n] = Some(match best[n] {
                None => f,
                Some(b) => Figures {
                    boot_wall: b.boot_wall.min(f.boot_wall),
                    boot_cpu: b.boot_cpu.min(f.boot_cpu),
                    request_cpu_ms: b.request_cpu_ms.min(f.request_cpu_ms),
                    request_wall_ms: b.request_wall_ms.min(f.request_wall_ms),
                    round_wall: b.round_wall.min(f.round_wall),
                    frozen: b.frozen.min(f.frozen),
                },
            });
        }
    }
    println!(
        "fixtures/apps/audit.ru (AUDIT_FIXED=1) under puma -t 2:2 on 127.0.0.1; best of {runs} per figure"
    );
    let mut baseline: Option<Figures> = None;
    let mut group = "";
    for (line, f) in lines.iter().zip(best.iter().flatten()) {
        if line.group != group {
            group = line.group;
            println!(
                "\n{:<52} {:>8} {:>10} {:>7} {:>12} {:>7} {:>11} {:>8} {:>8}",
                format!("{group} ({} requests)", requests(group)),
                "boot s",
                "boot CPU s",
                "ratio",
                "CPU ms/req",
                "ratio",
                "wall ms/req",
                "round s",
                "frozen s"
            );
        }
        let (boot_ratio, request_ratio) = match (&line.leakhunt, baseline) {
            (None, _) => {
                baseline = Some(*f);
                ("base".to_owned(), "base".to_owned())
            }
            (Some(_), Some(b)) => (
                format!("{:.2}×", f.boot_cpu / b.boot_cpu),
                format!("{:.2}×", f.request_cpu_ms / b.request_cpu_ms),
            ),
            (Some(_), None) => ("?".to_owned(), "?".to_owned()),
        };
        let (round, frozen) = if line.leakhunt.is_some() {
            (format!("{:.2}", f.round_wall), format!("{:.2}", f.frozen))
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        println!(
            "{:<52} {:>8.2} {:>10.2} {:>7} {:>12.2} {:>7} {:>11.2} {:>8} {:>8}",
            line.name,
            f.boot_wall,
            f.boot_cpu,
            boot_ratio,
            f.request_cpu_ms,
            request_ratio,
            f.request_wall_ms,
            round,
            frozen
        );
    }
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn requests(group: &str) -> usize {
    env_number("LEAKHUNT_BENCH_REQUESTS").unwrap_or(match group {
        "native" => 1000,
        "lsan" => 200,
        _ => 20,
    })
}

/// A port on 127.0.0.1 that nothing listens on now (the kernel's pick, released for puma).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port on 127.0.0.1");
    listener.local_addr().expect("its address").port()
}

fn measure(line: &Line, dir: &Path) -> Figures {
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apps/audit.ru");
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let bundle = dir.join("bundle");
    let puma = [
        "puma".to_owned(),
        "-t".to_owned(),
        "2:2".to_owned(),
        "--bind".to_owned(),
        format!("tcp://{address}"),
        app.display().to_string(),
    ];
    let mut command = match &line.leakhunt {
        Some(options) => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_leakhunt"));
            c.arg("run")
                .arg("-o")
                .arg(&bundle)
                .args(options)
                .args(["--snapshots", "0", "--fail-on", "never", "--"])
                .args(&puma);
            c.env("LEAKHUNT_NO_PROGRESS", "1");
            c
        }
        None if line.group == "valgrind" => {
            let mut c = Command::new("valgrind");
            c.args(VALGRIND_OPTIONS)
                .arg("--xml=yes")
                .arg(format!("--xml-file={}", dir.join("vg.%p.xml").display()))
                .arg(format!("--log-file={}", dir.join("vg.%p.log").display()))
                .arg(format!("--vgdb-prefix={}", dir.join("vgdb").display()))
                .args(&puma);
            c
        }
        None => {
            let mut c = Command::new(&puma[0]);
            c.args(&puma[1..]);
            if line.group == "lsan" {
                let lsan = leakhunt::platform::lsan_runtime()
                    .expect("liblsan.so.0 (apt-get install liblsan0)");
                c.env("LD_PRELOAD", lsan).env("LSAN_OPTIONS", LSAN_OPTIONS);
            }
            c
        }
    };
    command
        .env("AUDIT_FIXED", "1")
        .env("TMPDIR", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut server = Server(command.spawn().expect("start the server"));
    let root = server.0.id();
    let limit = env_number("LEAKHUNT_BENCH_LIMIT").unwrap_or(600) as u64;
    let until = started + Duration::from_secs(limit);
    let in_time = || {
        assert!(
            Instant::now() < until,
            "{}: not done within {limit} s (LEAKHUNT_BENCH_LIMIT; fewer LEAKHUNT_BENCH_REQUESTS?)",
            line.name
        )
    };
    while !request(address) {
        in_time();
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "{}: ended",
            line.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let boot_wall = started.elapsed().as_secs_f64();
    let boot_cpu = tree_cpu(root);
    for _ in 0..WARM_UP_REQUESTS {
        in_time();
        assert!(request(address), "{}: a warm-up request failed", line.name);
    }
    if line.leakhunt.is_some() {
        snapshot(&bundle);
    }
    let n = requests(line.group);
    let cpu_before = tree_cpu(root);
    let wall_before = Instant::now();
    for _ in 0..n {
        in_time();
        assert!(request(address), "{}: a request failed", line.name);
    }
    let request_wall_ms = wall_before.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let request_cpu_ms = (tree_cpu(root) - cpu_before) * 1000.0 / n as f64;
    let (round_wall, frozen) = if line.leakhunt.is_some() {
        let at = Instant::now();
        let round = snapshot(&bundle);
        (at.elapsed().as_secs_f64(), frozen(&bundle, round))
    } else {
        (0.0, 0.0)
    };
    drop(server);
    Figures {
        boot_wall,
        boot_cpu,
        request_cpu_ms,
        request_wall_ms,
        round_wall,
        frozen,
    }
}

/// The server this benchmark started: interrupted and waited for when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signals the process this benchmark started.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGINT);
        }
        let _ = self.0.wait();
    }
}

/// One GET to the app at `address` (127.0.0.1); true when the app answered it (200, its body).
fn request(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let limit = Some(Duration::from_secs(60));
    let _ = stream.set_read_timeout(limit);
    let _ = stream.set_write_timeout(limit);
    if stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.")
        && response.contains(" 200 ")
        && response.contains("\naudited\n")
}

/// `leakhunt snapshot BUNDLE`: a round now; returns its number.
fn snapshot(bundle: &Path) -> u32 {
    let out = Command::new(env!("CARGO_BIN_EXE_leakhunt"))
        .arg("snapshot")
        .arg(bundle)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.strip_prefix("round ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("leakhunt snapshot said {text:?}"))
}

/// Seconds round `round` kept the program's threads parked (GC, LSan check, dump).
fn frozen(bundle: &Path, round: u32) -> f64 {
    let Ok(m) = leakhunt::bundle::Manifest::load(bundle) else {
        return f64::NAN;
    };
    m.snapshots
        .iter()
        .filter(|s| s.index == round)
        .filter_map(|s| s.sidecar.as_ref())
        .filter_map(|name| std::fs::read(bundle.join(name)).ok())
        .filter_map(|b| serde_json::from_slice::<leakhunt::bundle::Sidecar>(&b).ok())
        .map(|s| {
            ["gc", "lsan", "dump"]
                .iter()
                .filter_map(|k| s.timings.get(*k))
                .sum::<f64>()
        })
        .sum()
}

/// CPU seconds (user + system) so far of `root` and every process below it, from /proc
/// (reaped children included through their parents' cutime/cstime).
fn tree_cpu(root: u32) -> f64 {
    let mut stats: Vec<(u32, u32, f64)> = Vec::new(); // (pid, ppid, ticks)
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state, ppid, … utime is the 12th,
        // stime, cutime, cstime follow.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        let (Some(ppid), Some(u), Some(s), Some(cu), Some(cs)) =
            (number(1), number(11), number(12), number(13), number(14))
        else {
            continue;
        };
        stats.push((pid, ppid as u32, u + s + cu + cs));
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(stats.iter().filter(|s| s.1 == parent).map(|s| s.0));
        i += 1;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    stats
        .iter()
        .filter(|s| tree.contains(&s.0))
        .map(|s| s.2)
        .sum::<f64>()
        / hz
}
