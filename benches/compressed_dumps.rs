//! Benchmark of CRuby dumps stored compressed, as bundles hold them (`heap-NNN.json.zst`, line-aligned
//! zstd frames, src/zst.rs), side by side with the same dumps plain.
//!
//! Uses the dumps of `benches/heap.sh` (`benches/data/big-1350000.json` and the
//! `triple-550000-{a,b,c}.json` before/after/retained triple; made with `ruby benches/heap_gen.rb`
//! when absent), compresses each with leakhunt's own writer (timed: what a round costs leakhunt
//! after the dump), then times in the same invocation, each in a child process so that its peak
//! RSS is its own, the histogram of the big dump and `diff A B C`, plain and compressed, best of
//! 3. MB/s always counts the dump's content (the plain size). Not a test: nothing is asserted.
//!
//! `cargo bench --bench compressed_dumps` (`LEAKHUNT_BENCH_DUMPS=DIR` to use other dumps of the
//! same names).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_FLAG: &str = "--child";
const RUNS: usize = 3;
const BIG: &str = "big-1350000.json";
const TRIPLE: [&str; 3] = [
    "triple-550000-a.json",
    "triple-550000-b.json",
    "triple-550000-c.json",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD_FLAG) {
        child(&args[i + 1..]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("compressed_dumps bench: run it with `cargo bench --bench compressed_dumps`");
        return;
    }
    let dir = std::env::var_os("LEAKHUNT_BENCH_DUMPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data"));
    ensure_dumps(&dir);
    let big = dir.join(BIG);
    let triple: Vec<PathBuf> = TRIPLE.iter().map(|n| dir.join(n)).collect();

    println!("compressing with leakhunt::zst::compress_lines (zstd level 1, ~8 MiB frames):");
    println!(
        "{:<26} {:>10} {:>10} {:>7} {:>9} {:>9}",
        "dump", "plain MB", "zst MB", "ratio", "seconds", "MB/s"
    );
    for plain in std::iter::once(&big).chain(&triple) {
        let zst = zst_of(plain);
        let started = Instant::now();
        let size = leakhunt::zst::compress_lines(plain, &zst).expect("compress");
        let t = started.elapsed();
        let len = std::fs::metadata(plain).unwrap().len();
        println!(
            "{:<26} {:>10.1} {:>10.1} {:>6.1}x {:>9.3} {:>9.0}",
            plain.file_name().unwrap().to_string_lossy(),
            mb(len),
            mb(size),
            len as f64 / size as f64,
            t.as_secs_f64(),
            mb(len) / t.as_secs_f64()
        );
    }

    println!();
    println!(
        "{:<26} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "operation", "content MB", "plain s", "MB/s", "zst s", "MB/s"
    );
    let big_zst = zst_of(&big);
    let content = std::fs::metadata(&big).unwrap().len();
    let (plain_t, plain_rss) = timed_child(&["histo", big.to_str().unwrap()]);
    let (zst_t, zst_rss) = timed_child(&["histo", big_zst.to_str().unwrap()]);
    row("histo big", content, plain_t, zst_t);
    let mut rss = vec![("histo big", plain_rss, zst_rss)];

    let content: u64 = triple
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let plain_args: Vec<&str> = triple.iter().map(|p| p.to_str().unwrap()).collect();
    let zst_paths: Vec<PathBuf> = triple.iter().map(|p| zst_of(p)).collect();
    let zst_args: Vec<&str> = zst_paths.iter().map(|p| p.to_str().unwrap()).collect();
    let (plain_t, plain_rss) = timed_child(&[&["diff"], &plain_args[..]].concat());
    let (zst_t, zst_rss) = timed_child(&[&["diff"], &zst_args[..]].concat());
    row("diff A B C", content, plain_t, zst_t);
    rss.push(("diff A B C", plain_rss, zst_rss));

    println!();
    println!(
        "{:<26} {:>14} {:>14}",
        "peak RSS (child)", "plain MiB", "zst MiB"
    );
    for (name, p, z) in rss {
        println!(
            "{name:<26} {:>14.1} {:>14.1}",
            p as f64 / 1024.0,
            z as f64 / 1024.0
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\nmachine: {cores} cores; best of {RUNS}; inputs in the page cache");
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn row(name: &str, content: u64, plain: Duration, zst: Duration) {
    println!(
        "{name:<26} {:>10.1} {:>9.3} {:>9.0} {:>9.3} {:>9.0}",
        mb(content),
        plain.as_secs_f64(),
        mb(content) / plain.as_secs_f64(),
        zst.as_secs_f64(),
        mb(content) / zst.as_secs_f64()
    );
}

fn zst_of(plain: &Path) -> PathBuf {
    let mut name = plain.file_name().unwrap().to_os_string();
    name.push(".zst");
    plain.with_file_name(name)
}

/// Best wall time over [`RUNS`] child runs of `op`, and the largest peak RSS (KiB) they had.
fn timed_child(op: &[&str]) -> (Duration, u64) {
    let exe = std::env::current_exe().unwrap();
    let mut best = Duration::MAX;
    let mut rss = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = Command::new(&exe)
            .arg(CHILD_FLAG)
            .args(op)
            .output()
            .expect("child");
        best = best.min(started.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kib: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        rss = rss.max(kib);
    }
    (best, rss)
}

/// In the child: runs one operation and prints its peak RSS in KiB.
fn child(op: &[String]) {
    use leakhunt::heap::cruby;
    let opts = cruby::reader::ReadOptions::default();
    match op[0].as_str() {
        "histo" => {
            let h = cruby::histogram_with(Path::new(&op[1]), &opts).expect("histogram");
            assert!(h.objects > 0);
        }
        "diff" => {
            let paths: Vec<&Path> = op[1..].iter().map(Path::new).collect();
            let d = cruby::diff::diff(paths[0], paths[1], paths.get(2).copied()).expect("diff");
            std::hint::black_box(&d);
        }
        other => panic!("unknown operation {other}"),
    }
    println!("{}", support::proc_status_kib("VmHWM:"));
}

/// Makes the dumps with `benches/heap_gen.rb` where they are missing (as benches/heap.sh does).
fn ensure_dumps(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let gen_rb = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/heap_gen.rb");
    if !dir.join(BIG).is_file() {
        eprintln!("generating {} ...", dir.join(BIG).display());
        let tmp = dir.join(format!("{BIG}.tmp"));
        let ok = Command::new("ruby")
            .arg(&gen_rb)
            .args(["big", tmp.to_str().unwrap(), "1350000"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ruby benches/heap_gen.rb big failed");
        std::fs::rename(&tmp, dir.join(BIG)).unwrap();
    }
    if !dir.join(TRIPLE[2]).is_file() {
        eprintln!(
            "generating {}/triple-550000-{{a,b,c}}.json ...",
            dir.display()
        );
        let ok = Command::new("ruby")
            .arg(&gen_rb)
            .args([
                "triple",
                dir.join("triple-550000").to_str().unwrap(),
                "550000",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ruby benches/heap_gen.rb triple failed");
    }
}
