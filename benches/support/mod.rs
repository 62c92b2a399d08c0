//! Measuring helpers shared by the benchmark harnesses: best-of-N timing, the `wc -l`
//! baseline run in the same invocation, and this process's memory figures from /proc.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The fastest of `n` runs (the input is in the page cache for all but maybe the first).
pub fn best_of(n: usize, mut run: impl FnMut()) -> Duration {
    (0..n.max(1))
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// The baseline every figure is compared with: `wc -l` on the same file, best of `n`.
pub fn wc_l(path: &Path, n: usize) -> Duration {
    best_of(n, || {
        let out = Command::new("wc").arg("-l").arg(path).output();
        assert!(out.is_ok_and(|o| o.status.success()), "wc -l failed");
    })
}

/// A `/proc/self/status` figure in KiB (`"VmHWM:"` = peak RSS, `"RssAnon:"` = own memory);
/// 0 where /proc is missing. `getrusage`'s `ru_maxrss` would also count the launching cargo.
pub fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
