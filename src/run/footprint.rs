//! The footprint timelines: the memory of every process of the program's tree, sampled a few
//! times a second for the whole run, one file per process (`footprint.tsv` for the main one),
//! written as it goes (so a crash of anything leaves the samples so far).
//!
//! Stage: `run`. What "footprint" means per OS is `platform::footprint_bytes`.

use crate::bundle::{self, FOOTPRINT_HEADER};
use crate::error::Result;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The main process's timeline.
pub const FILE: &str = "footprint.tsv";
pub const INTERVAL: Duration = Duration::from_millis(250);

/// One timeline: the process sampled and the file its samples go to, created with the first
/// sample (a fork that ends before it is sampled leaves no file behind).
struct Timeline {
    pid: u32,
    /// Sampled now (not once its process has ended).
    active: bool,
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    samples: u64,
}

impl Timeline {
    /// Appends one sample; false when the file cannot be written (sampling stops).
    fn write(&mut self, t: f64, bytes: u64) -> bool {
        if self.file.is_none() {
            let Ok(f) = bundle::create_private(&self.path) else {
                return false;
            };
            let mut out = std::io::BufWriter::new(f);
            let _ = writeln!(out, "{FOOTPRINT_HEADER}");
            self.file = Some(out);
        }
        if let Some(file) = self.file.as_mut() {
            let _ = writeln!(file, "{t:.3}\t{bytes}");
            let _ = file.flush();
        }
        self.samples += 1;
        true
    }
}

/// What the sampler shares with the orchestrator: timelines by file name.
#[derive(Default)]
struct Shared {
    timelines: Mutex<BTreeMap<String, Timeline>>,
    /// The main process's last sample, for the progress line.
    latest: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
}

pub struct FootprintSampler {
    bundle: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FootprintSampler {
    /// Starts sampling `pid` into `bundle/footprint.tsv`; times are seconds since `started`.
    pub fn start(bundle: &Path, pid: u32, started: Instant) -> Result<FootprintSampler> {
        let shared = Arc::new(Shared::default());
        let mut sampler = FootprintSampler {
            bundle: bundle.to_path_buf(),
            shared: Arc::clone(&shared),
            thread: None,
        };
        sampler.track(pid, FILE);
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("footprint".into())
            .spawn(move || {
                while !worker.stop.load(Ordering::SeqCst) {
                    let t = started.elapsed().as_secs_f64();
                    if let Ok(mut timelines) = worker.timelines.lock() {
                        for (name, line) in timelines.iter_mut() {
                            if !line.active {
                                continue;
                            }
                            let Some(bytes) = crate::platform::footprint_bytes(line.pid) else {
                                continue;
                            };
                            if !line.write(t, bytes) {
                                line.active = false;
                                continue;
                            }
                            if name == FILE {
                                worker.latest.store(bytes, Ordering::SeqCst);
                            }
                        }
                    }
                    std::thread::sleep(INTERVAL);
                }
            })
            .map_err(|e| crate::error::Error::Run(format!("cannot start the sampler: {e}")))?;
        sampler.thread = Some(thread);
        Ok(sampler)
    }

    /// Samples `pid` into `bundle/file` from now on; a file already sampled follows `pid`
    /// instead (the main process's, once its agent said hello).
    pub fn track(&self, pid: u32, file: &str) {
        let Ok(mut timelines) = self.shared.timelines.lock() else {
            return;
        };
        if let Some(line) = timelines.get_mut(file) {
            line.pid = pid;
            line.active = true;
            return;
        }
        timelines.insert(
            file.to_owned(),
            Timeline {
                pid,
                active: true,
                path: self.bundle.join(file),
                file: None,
                samples: 0,
            },
        );
    }

    /// Stops sampling the timeline in `file` (its process has ended).
    pub fn untrack(&self, file: &str) {
        if let Ok(mut timelines) = self.shared.timelines.lock() {
            if let Some(line) = timelines.get_mut(file) {
                line.active = false;
            }
        }
    }

    /// How many samples the timeline in `file` has so far.
    pub fn samples(&self, file: &str) -> u64 {
        self.shared
            .timelines
            .lock()
            .ok()
            .and_then(|t| t.get(file).map(|l| l.samples))
            .unwrap_or(0)
    }

    /// The main process's last sample, in bytes (0 before the first).
    pub fn latest(&self) -> u64 {
        self.shared.latest.load(Ordering::SeqCst)
    }

    /// Stops sampling; returns how many samples each file got.
    pub fn stop(&mut self) -> BTreeMap<String, u64> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let Ok(mut timelines) = self.shared.timelines.lock() else {
            return BTreeMap::new();
        };
        timelines
            .iter_mut()
            .map(|(name, line)| {
                if let Some(mut f) = line.file.take() {
                    let _ = f.flush();
                }
                (name.clone(), line.samples)
            })
            .collect()
    }
}

impl Drop for FootprintSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

// Footprints of real processes: Linux's /proc here (macOS is type-checked only).
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn samples_each_process_into_its_own_valid_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut s =
            FootprintSampler::start(dir.path(), std::process::id(), Instant::now()).unwrap();
        s.track(other.id(), "footprint-p1.tsv");
        let until = Instant::now() + Duration::from_secs(30);
        while [FILE, "footprint-p1.tsv"].iter().any(|f| s.samples(f) < 2) && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let counts = s.stop();
        let _ = other.kill();
        let _ = other.wait();
        for (file, floor) in [(FILE, 1024 * 1024), ("footprint-p1.tsv", 1)] {
            let n = counts[file];
            assert!(n >= 2, "{file}: {n} samples");
            let bytes = std::fs::read(dir.path().join(file)).unwrap();
            let mut diag = crate::diag::Diagnostics::new(file);
            let samples = bundle::parse_footprint(&bytes, &mut diag);
            assert_eq!(samples.len() as u64, n);
            assert!(diag.kinds.is_empty());
            assert!(samples.iter().all(|s| s.bytes >= floor));
            assert!(samples.windows(2).all(|w| w[0].t < w[1].t));
        }
    }
}
