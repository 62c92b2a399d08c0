//! The footprint timeline: the target's memory sampled a few times a second for the whole run,
//! written to `footprint.tsv` as it goes (so a crash of anything leaves the samples so far).
//!
//! Stage: `run`. What "footprint" means per OS is `platform::footprint_bytes`.

use crate::bundle::{self, FOOTPRINT_HEADER};
use crate::error::Result;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const FILE: &str = "footprint.tsv";
pub const INTERVAL: Duration = Duration::from_millis(250);

/// What the sampler shares with the orchestrator.
#[derive(Debug, Default)]
struct Shared {
    pid: AtomicU32,
    latest: AtomicU64,
    samples: AtomicU64,
    stop: AtomicBool,
}

pub struct FootprintSampler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FootprintSampler {
    /// Starts sampling `pid` into `bundle/footprint.tsv`; times are seconds since `started`.
    pub fn start(bundle: &Path, pid: u32, started: Instant) -> Result<FootprintSampler> {
        let mut file = std::io::BufWriter::new(bundle::create_private(&bundle.join(FILE))?);
        let shared = Arc::new(Shared::default());
        shared.pid.store(pid, Ordering::SeqCst);
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("footprint".into())
            .spawn(move || {
                let _ = writeln!(file, "{FOOTPRINT_HEADER}");
                while !worker.stop.load(Ordering::SeqCst) {
                    let pid = worker.pid.load(Ordering::SeqCst);
                    if let Some(bytes) = crate::platform::footprint_bytes(pid) {
                        let t = started.elapsed().as_secs_f64();
                        let _ = writeln!(file, "{t:.3}\t{bytes}");
                        let _ = file.flush();
                        worker.latest.store(bytes, Ordering::SeqCst);
                        worker.samples.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(INTERVAL);
                }
                let _ = file.flush();
            })
            .map_err(|e| crate::error::Error::Run(format!("cannot start the sampler: {e}")))?;
        Ok(FootprintSampler {
            shared,
            thread: Some(thread),
        })
    }

    /// Samples `pid` from now on (the agent's process once it said hello).
    pub fn follow(&self, pid: u32) {
        self.shared.pid.store(pid, Ordering::SeqCst);
    }

    /// The last sample, in bytes (0 before the first).
    pub fn latest(&self) -> u64 {
        self.shared.latest.load(Ordering::SeqCst)
    }

    /// Stops sampling; returns how many samples were written.
    pub fn stop(&mut self) -> u64 {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.samples.load(Ordering::SeqCst)
    }
}

impl Drop for FootprintSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn samples_own_process_into_a_valid_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let mut s =
            FootprintSampler::start(dir.path(), std::process::id(), Instant::now()).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while s.shared.samples.load(Ordering::SeqCst) < 2 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let n = s.stop();
        assert!(n >= 2, "{n} samples");
        let bytes = std::fs::read(dir.path().join(FILE)).unwrap();
        let mut diag = crate::diag::Diagnostics::new(FILE);
        let samples = bundle::parse_footprint(&bytes, &mut diag);
        assert_eq!(samples.len() as u64, n);
        assert!(diag.kinds.is_empty());
        assert!(samples.iter().all(|s| s.bytes > 1024 * 1024));
        assert!(samples.windows(2).all(|w| w[0].t < w[1].t));
    }
}
