//! Benchmark (not a test): reading a macOS `leaks` report at the seed's scale.
//!
//! Generates the seed's 2.0 report with 171,502 leaks (each with a hex dump and a `Call stack:`
//! line, about 160 MB) into a temporary directory, then times, in this one invocation, `wc -l`
//! on the file (the baseline) and `leakhunt`'s reader (`native::parse_file`: map, detect,
//! parse). Prints MB/s, the ratio to `wc -l`, and peak RSS (which includes the mapped file's
//! pages). Best of three runs each.
//!
//! `cargo bench --bench leaks_report` (release profile). `LEAKHUNT_BENCH_LEAKS=N` changes the
//! number of leaks; `LEAKHUNT_BENCH_STACKS=N` the number of distinct stacks (default 1, as in
//! the seed, where one call site leaked every block).

mod leaks_report_gen;
mod support;

use leakhunt::native;
use std::io::BufWriter;
use std::path::Path;

const RUNS: usize = 3;

fn main() {
    let leaks = env_number("LEAKHUNT_BENCH_LEAKS").unwrap_or(leaks_report_gen::SEED_LEAKS);
    let stacks = env_number("LEAKHUNT_BENCH_STACKS").unwrap_or(1) as u32;
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return eprintln!("leaks_report: no temporary directory: {e}"),
    };
    let path = dir.path().join("seed-scale-leaks.txt");
    let size = match write_file(&path, leaks, stacks) {
        Ok(size) => size,
        Err(e) => return eprintln!("leaks_report: cannot write {}: {e}", path.display()),
    };
    let rss_before = support::proc_status_kib("VmHWM:");

    let wc = support::wc_l(&path, RUNS);
    let mut parsed = None;
    let parse = support::best_of(RUNS, || {
        parsed = Some(
            leakhunt::detect::detect_path(&path).and_then(|kind| native::parse_file(&path, kind)),
        )
    });
    let rss_after = support::proc_status_kib("VmHWM:");

    let reports = match parsed {
        Some(Ok(reports)) => reports,
        Some(Err(e)) => return eprintln!("leaks_report: {e}"),
        None => return,
    };
    let report = &reports[0];
    assert_eq!(report.total_blocks(), leaks, "every generated leak is read");
    assert_eq!(report.summary.map(|s| s.leaks), Some(leaks));

    let mb = size as f64 / 1e6;
    println!("leaks report, 2.0 layout: {leaks} leaks, {stacks} distinct stack(s), {mb:.1} MB");
    println!(
        "  wc -l:                 {:>8.3} s  {:>7.0} MB/s",
        wc.as_secs_f64(),
        mb / wc.as_secs_f64()
    );
    println!(
        "  leakhunt leaks reader: {:>8.3} s  {:>7.0} MB/s  ({:.1}x wc -l)",
        parse.as_secs_f64(),
        mb / parse.as_secs_f64(),
        parse.as_secs_f64() / wc.as_secs_f64()
    );
    println!(
        "  interned: {} frames, {} stacks, {} leak records",
        report.frames.len(),
        report.stacks.len(),
        report.leaks.len()
    );
    println!(
        "  peak RSS: {} MiB before reading, {} MiB after (includes the {:.0} MiB mapped file)",
        rss_before / 1024,
        rss_after / 1024,
        size as f64 / (1024.0 * 1024.0)
    );
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn write_file(path: &Path, leaks: u64, stacks: u32) -> std::io::Result<u64> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let size = leaks_report_gen::write_report(&mut out, leaks, stacks)?;
    std::io::Write::flush(&mut out)?;
    Ok(size)
}
