//! Files for readers that take a path: one private directory per process, on tmpfs when the
//! machine has one, reused by every input and removed when the process exits.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_dir() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The process's scratch directory, emptied of the previous input's files.
pub fn dir() -> &'static Path {
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("leakhunt-fuzz-")
            .tempdir_in(base)
            .expect("a scratch directory for fuzz inputs")
            .keep();
        // SAFETY: registers a plain function with no captured state; libFuzzer leaves through
        // exit(), which runs it, so the directory does not outlive the campaign.
        unsafe {
            libc::atexit(remove_dir);
        }
        dir
    })
}

/// A fresh, empty directory for one multi-file input (a bundle, or files to analyze).
pub fn fresh_subdir(name: &str) -> PathBuf {
    let sub = dir().join(name);
    let _ = std::fs::remove_dir_all(&sub);
    std::fs::create_dir(&sub).expect("scratch subdirectory");
    sub
}

/// Writes `bytes` to `name` in the scratch directory and returns its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    write_in(dir(), name, bytes)
}

/// Writes `bytes` to `name` in `dir` and returns its path.
pub fn write_in(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}
