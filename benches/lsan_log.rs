//! Benchmark (not a test): reading a LeakSanitizer log at the seed's scale.
//!
//! Generates two logs in a temporary directory — ≈120 MB (`LEAKHUNT_BENCH_MB` to change) and a
//! quarter of it — with 12 reports each (one per leak check), the leak blocks of every report
//! going round the same 1,200 stacks of 8–30 frames in all of LSan's frame forms, the program's
//! output between reports. The small log differs only in how many times each stack repeats, so
//! its retained memory must equal the big one's: memory may grow with distinct stacks, not with
//! the number of leaks.
//!
//! For each log it prints `wc -l` on the same file (best of 3), leakhunt's parse (best of 3, in
//! a fresh child process so peak RSS is its own), MB/s, the ratio to `wc -l`, peak RSS (which
//! includes the memory-mapped log) and the anonymous memory still held after the parse.
//!
//! Run: `cargo bench --bench lsan_log`. Target: ≥ 500 MB/s.

mod support;

use leakhunt::native::lsan;
use leakhunt::source::Input;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "LEAKHUNT_BENCH_PARSE";
const REPORTS: usize = 12;
const DISTINCT_FRAMES: usize = 4_000;
const DISTINCT_STACKS: usize = 1_200;

fn main() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        parse_in_child(Path::new(&path));
        return;
    }
    let target_mb: usize = std::env::var("LEAKHUNT_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    // LEAKHUNT_BENCH_KEEP=DIR writes the logs there and keeps them (for profiling).
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("LEAKHUNT_BENCH_KEEP")
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    println!(
        "LSan log benchmark (leakhunt::native::lsan::parse), {REPORTS} reports per log, {DISTINCT_STACKS} distinct stacks"
    );
    for mb in [target_mb / 4, target_mb] {
        let path = dir.join(format!("lsan-{mb}mb.log"));
        let started = Instant::now();
        let blocks = generate(&path, mb * 1024 * 1024);
        let size = std::fs::metadata(&path).expect("log size").len();
        println!(
            "\n{}: {:.1} MB, {blocks} leak blocks, generated in {:.1} s",
            path.file_name().unwrap_or_default().to_string_lossy(),
            size as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        let wc = support::wc_l(&path, 3);
        let child = Command::new(std::env::current_exe().expect("own path"))
            .env(CHILD_ENV, &path)
            .output()
            .expect("run the parse child");
        let report = String::from_utf8_lossy(&child.stdout);
        let field = |name: &str| -> f64 {
            report
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f64::NAN)
        };
        let parse_s = field("parse_s=");
        let mbps = size as f64 / 1e6 / parse_s;
        println!(
            "  wc -l          {:>8.3} s  {:>7.0} MB/s",
            wc.as_secs_f64(),
            size as f64 / 1e6 / wc.as_secs_f64()
        );
        println!(
            "  leakhunt parse {parse_s:>8.3} s  {mbps:>7.0} MB/s  ({:.1}× wc -l's time)",
            parse_s / wc.as_secs_f64()
        );
        println!(
            "  peak RSS {:.1} MB (includes the mapped log), anonymous memory after parse {:.1} MB",
            field("peak_kb=") / 1024.0,
            field("anon_kb=") / 1024.0
        );
        println!(
            "  parsed: {} reports, {} leak records, {} frames, {} stacks, {} problems",
            field("reports="),
            field("records="),
            field("frames="),
            field("stacks="),
            field("problems=")
        );
        if !child.status.success() {
            println!("  child failed: {}", String::from_utf8_lossy(&child.stderr));
        }
    }
}

/// Parses the log three times (keeping the last result alive) and prints key=value lines.
fn parse_in_child(path: &Path) {
    let input = Input::open(path).expect("open log");
    let mut best = Duration::MAX;
    let mut reports = Vec::new();
    for _ in 0..3 {
        drop(std::mem::take(&mut reports));
        let started = Instant::now();
        reports = lsan::parse(path, &input).expect("parse");
        best = best.min(started.elapsed());
    }
    println!("parse_s={}", best.as_secs_f64());
    println!("peak_kb={}", support::proc_status_kib("VmHWM:"));
    println!("anon_kb={}", support::proc_status_kib("RssAnon:"));
    println!("reports={}", reports.len());
    println!(
        "records={}",
        reports.iter().map(|r| r.leaks.len()).sum::<usize>()
    );
    println!(
        "frames={}",
        reports.iter().map(|r| r.frames.len()).sum::<usize>()
    );
    println!(
        "stacks={}",
        reports.iter().map(|r| r.stacks.len()).sum::<usize>()
    );
    println!(
        "problems={}",
        reports.iter().map(|r| r.diagnostics.total()).sum::<u64>()
    );
}

/// xorshift64*: a fixed sequence, so every run writes the same logs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One frame's text after `#N `, in the forms LSan prints.
fn frame_text(i: usize, rng: &mut Rng) -> String {
    let address = 0x7f00_0000_0000u64 + (i as u64) * 0x1_3579;
    let offset = 0x1000 + (i as u64) * 0x2b;
    match rng.below(20) {
        0..=5 => format!(
            "{address:#x} in app_function_{i} /home/dev/src/module_{}/file_{}.c:{}",
            i % 17,
            i % 97,
            10 + i % 900
        ),
        6..=13 => format!(
            "{address:#x} in rb_function_{i} (/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1+{offset:#x})"
        ),
        14..=18 => format!("{address:#x}  (/usr/lib/x86_64-linux-gnu/libzmq.so.5+{offset:#x})"),
        _ => format!("{address:#x}  (<unknown module>)"),
    }
}

/// Writes a log of about `target` bytes; returns the number of leak blocks written.
fn generate(path: &PathBuf, target: usize) -> usize {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let frames: Vec<String> = (0..DISTINCT_FRAMES)
        .map(|i| frame_text(i, &mut rng))
        .collect();
    let stacks: Vec<Vec<usize>> = (0..DISTINCT_STACKS)
        .map(|_| {
            let depth = 8 + rng.below(23);
            (0..depth).map(|_| rng.below(DISTINCT_FRAMES)).collect()
        })
        .collect();
    let average_block: usize =
        stacks.iter().map(|s| s.len()).sum::<usize>() / stacks.len() * 95 + 60;
    let per_report = target / REPORTS / average_block;
    let file = std::fs::File::create(path).expect("create log");
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut blocks = 0;
    for report in 0..REPORTS {
        writeln!(
            out,
            "program: round {report} done, {} items in flight",
            rng.below(100_000)
        )
        .unwrap();
        writeln!(
            out,
            "\n================================================================="
        )
        .unwrap();
        writeln!(out, "==4242==ERROR: LeakSanitizer: detected memory leaks\n").unwrap();
        let (mut total_bytes, mut total_objects) = (0u64, 0u64);
        let first_stack = rng.below(DISTINCT_STACKS);
        for block in 0..per_report {
            // Round robin: every report of either log holds every stack at least once.
            let index = (first_stack + block) % DISTINCT_STACKS;
            let kind = if index % 3 == 0 { "Indirect" } else { "Direct" };
            let objects = 1 + rng.below(200) as u64;
            let bytes = objects * (16 + rng.below(4096) as u64);
            writeln!(
                out,
                "{kind} leak of {bytes} byte(s) in {objects} object(s) allocated from:"
            )
            .unwrap();
            writeln!(
                out,
                "    #0 0x7f06cfe13545 in __interceptor_malloc ../../../../src/libsanitizer/lsan/lsan_interceptors.cpp:75"
            )
            .unwrap();
            for (n, &f) in stacks[index].iter().enumerate() {
                writeln!(out, "    #{} {}", n + 1, frames[f]).unwrap();
            }
            writeln!(out).unwrap();
            total_bytes += bytes;
            total_objects += objects;
            blocks += 1;
        }
        writeln!(
            out,
            "SUMMARY: LeakSanitizer: {total_bytes} byte(s) leaked in {total_objects} allocation(s)."
        )
        .unwrap();
    }
    out.flush().unwrap();
    blocks
}
